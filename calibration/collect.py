"""Run the FP32 model over calibration images and stream statistics for every tensor it computes.

One ``TensorStats`` per tensor of the traced graph, updated batch by batch: the memory is the
histograms (a few KB per tensor), whatever the number of images. A ReLU output needs no pass of
its own: its histogram is the positive half of its input's signed histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from edge_resnet.calibration.stats import Histogram, TensorStats
from edge_resnet.fp32 import exact_fp32
from edge_resnet.models.graph import Graph, Node


@dataclass
class Statistics:
    """Streamed statistics of one graph; ``histogram(name)`` serves every tensor, ReLUs included."""

    graph: Graph
    stats: dict[str, TensorStats] = field(default_factory=dict)
    images: int = 0
    # per-channel sums (and element counts per channel) of every conv/linear input, for bias correction
    channel_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    channel_counts: dict[str, int] = field(default_factory=dict)

    def channel_means(self) -> dict[str, list[float]]:
        return {k: (v / max(self.channel_counts[k], 1)).tolist() for k, v in self.channel_sums.items()}

    def histogram(self, name: str) -> Histogram:
        node = self.graph[name]
        if node.op == "relu":
            return self.stats[node.inputs[0]].histogram("relu")
        return self.stats[name].histogram("abs")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.graph]


def collect(
    graph: Graph,
    batches: Iterable[Tensor],
    *,
    bins: int = 2048,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> Statistics:
    """Statistics of every tensor of ``graph`` (an FP32, folded model) over ``batches``.

    ``on_batch(n)`` is called after each batch of n images (progress bars).
    """
    observed = [n for n in graph if n.op != "relu"]
    result = Statistics(graph, {n.name: TensorStats(bins) for n in observed})
    weighted_inputs = {n.inputs[0] for n in graph.of_op("conv", "linear")}

    def visit(node: Node, out: Tensor) -> Tensor:
        stats = result.stats.get(node.name)
        if stats is not None and result.images == 0 and out.shape[0] > 1:
            # the histogram's range starts at its first update's max and only doubles: start it on
            # the first image alone, so the ranges do not depend on the batch size
            stats.update(out[:1])
            stats.update(out[1:])
        elif stats is not None:
            stats.update(out)
        if node.name in weighted_inputs:
            dims = (0, 2, 3) if out.dim() == 4 else (0,)
            s = out.sum(dim=dims, dtype=torch.float64).cpu()
            result.channel_sums[node.name] = result.channel_sums.get(node.name, 0) + s
            result.channel_counts[node.name] = result.channel_counts.get(node.name, 0) + out.numel() // s.numel()
        return out

    device = torch.device(device)
    with torch.inference_mode(), exact_fp32():
        for batch in batches:
            graph.run(batch.to(device), visit)
            result.images += int(batch.shape[0])
            if on_batch is not None:
                on_batch(int(batch.shape[0]))
    return result
