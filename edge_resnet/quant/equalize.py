"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"), on the folded model.

Where a conv feeds a ReLU that feeds only the next conv (the chains ``stress.scalable_pairs``
finds), output channel i of the first can be divided by s_i > 0 and input channel i of the second
multiplied by it without changing the function (ReLU is positively homogeneous). Choosing
s_i = sqrt(r1_i / r2_i), with r1_i the range of the first conv's output channel i and r2_i that of
the second conv's input channel i, gives both the same range: a channel that one layer blew up (an
outlier channel, or the stress transform) is brought back in line, so the per-tensor activation
range between them shrinks. Exact in FP32 up to rounding; applied before calibration.

Bias absorption (the paper's companion step) is not applied: it moves a constant c out of the
ReLU (ReLU(h) = ReLU(h - c) + c) into the next conv's bias, which is exact only where the
pre-activation never falls below c, which a folded model cannot promise, and never at the
borders of a zero-padded 3x3 conv (the padding would have to become c). The INT8 files must
compute the FP32 function the report compares them with, so only the exact step is applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edge_resnet.models.graph import trace
from edge_resnet.quant.stress import scalable_pairs

# --equalize: auto calibrates with and without and keeps the better on held-out images (edge_resnet.pipeline)
EQUALIZE_CHOICES: tuple[str, ...] = ("auto", "on", "off")

# channels whose weights are (nearly) zero on either side keep scale 1: nothing to balance
_EPS = 1e-12


@dataclass(frozen=True)
class Equalized:
    model: nn.Module
    pairs: list[tuple[str, str]]  # (producer conv, consumer conv) module paths
    max_scale: float  # the largest |log| correction applied, as a factor (1.0: nothing moved)


def equalize(folded: nn.Module, *, iterations: int = 1) -> Equalized:
    """A copy of ``folded`` (BatchNorm folded) with every conv -> ReLU -> conv pair equalized.

    Raises:
        ValueError: the model still has BatchNorm layers (fold them first).
    """
    model = copy.deepcopy(folded).eval()
    graph = trace(model)
    if graph.of_op("batchnorm"):
        raise ValueError("equalize the folded model: fold BatchNorm first (edge_resnet.fold.fold_batchnorm)")
    pairs = [p for p in scalable_pairs(graph) if graph[p.relu].inputs and graph[graph[p.relu].inputs[0]].op == "conv"]
    modules = dict(model.named_modules())
    worst = 1.0
    with torch.no_grad():
        for _ in range(iterations):
            for p in pairs:
                first, second = modules[p.producer], modules[p.consumer]
                s = _scales(first.weight, second.weight)
                worst = max(worst, float(torch.maximum(s, 1 / s).max()))
                first.weight.div_(s.view(-1, 1, 1, 1).to(first.weight.dtype))
                if first.bias is not None:
                    first.bias.div_(s.to(first.bias.dtype))
                second.weight.mul_(s.view(1, -1, 1, 1).to(second.weight.dtype))
    return Equalized(model, [(p.producer, p.consumer) for p in pairs], worst)


def _scales(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """s_i = sqrt(r1_i / r2_i) in float64; 1 where either range is (nearly) zero."""
    r1 = w1.detach().double().abs().amax(dim=(1, 2, 3))
    r2 = w2.detach().double().abs().amax(dim=(0, 2, 3))
    ok = (r1 > _EPS) & (r2 > _EPS)
    return torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, 1.0)), torch.ones_like(r1))
