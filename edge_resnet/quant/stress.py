"""A function-preserving stress transform: outlier channels, as real pretrained networks have them.

ReLU is positively homogeneous, relu(s * x) = s * relu(x) for s > 0. So where a conv (with its
BatchNorm, or folded) feeds a ReLU that feeds only the next conv, scaling output channel c of
the first by s and input channel c of the second by 1/s computes the same function. The
per-tensor range of that ReLU output grows about s times, while most of its channels keep
their small values: per-tensor INT8 then spends its 255 levels on one channel, exactly the
failure of real networks with outlier channels. It is a benchmark and test tool (never a
default); cross-layer equalization (``edge_resnet.quant.equalize``) is its inverse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edge_resnet.models.graph import Graph, Node, trace


@dataclass(frozen=True)
class ScalablePair:
    """A producer (conv, or the BatchNorm after it) whose ReLU output feeds only ``consumer`` (a conv)."""

    producer: str  # module path of the conv or BatchNorm whose output channels scale
    consumer: str  # module path of the conv whose input channels scale inversely
    relu: str  # the tensor between them


def scalable_pairs(graph: Graph) -> list[ScalablePair]:
    """Every producer -> ReLU -> conv chain where channel scaling is exact (no other consumer,
    no grouped conv, no residual in between), in graph order."""
    pairs = []
    for relu in graph.of_op("relu"):
        producer = graph[relu.inputs[0]]
        consumers = graph.consumers(relu.name)
        if producer.op not in ("conv", "batchnorm") or len(graph.consumers(producer.name)) != 1:
            continue
        if len(consumers) != 1 or consumers[0].op != "conv" or consumers[0].module.groups != 1:
            continue
        if producer.op == "conv" and producer.module.groups != 1:
            continue
        pairs.append(ScalablePair(producer.target, consumers[0].target, relu.name))
    return pairs


def _scale_output_channels(node: Node, s: torch.Tensor) -> None:
    m = node.module
    if node.op == "batchnorm":
        # y = gamma * xhat + beta: scaling gamma and beta scales y
        m.weight.mul_(s.to(m.weight.dtype))
        m.bias.mul_(s.to(m.bias.dtype))
        return
    m.weight.mul_(s.view(-1, 1, 1, 1).to(m.weight.dtype))
    if m.bias is not None:
        m.bias.mul_(s.to(m.bias.dtype))


def channel_scales(channels: int, *, scale: float, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` random channels get ``scale``, the others 1."""
    s = torch.ones(channels, dtype=torch.float64)
    s[torch.randperm(channels, generator=gen)[:count]] = scale
    return s


def stress(model: nn.Module, *, scale: float = 16.0, channels: int = 2, seed: int = 0) -> tuple[nn.Module, dict]:
    """A copy of ``model`` (folded or not) computing the same function with outlier channels.

    In every scalable pair (see ``scalable_pairs``) ``channels`` random output channels are
    multiplied by ``scale`` and the next conv's matching input channels divided by it.

    Returns:
        The new model, and a record {relu tensor: [scaled channel indices]} for the report.

    Raises:
        ValueError: ``scale`` <= 0 (ReLU is only positively homogeneous) or no scalable pair.
    """
    if not scale > 0:
        raise ValueError(f"the stress scale must be > 0 (ReLU commutes only with positive scales), got {scale}")
    out = copy.deepcopy(model).eval()
    graph = trace(out)
    pairs = scalable_pairs(graph)
    if not pairs:
        raise ValueError("the model has no conv -> ReLU -> conv chain whose channels can be rescaled")
    gen = torch.Generator().manual_seed(seed)
    record: dict[str, list[int]] = {}
    by_target = {n.target: n for n in graph if n.target is not None}
    with torch.no_grad():
        for pair in pairs:
            consumer = by_target[pair.consumer].module
            s = channel_scales(consumer.in_channels, scale=scale, count=min(channels, consumer.in_channels), gen=gen)
            _scale_output_channels(by_target[pair.producer], s)
            consumer.weight.div_(s.view(1, -1, 1, 1).to(consumer.weight.dtype))
            record[pair.relu] = torch.nonzero(s != 1).flatten().tolist()
    return out, record
