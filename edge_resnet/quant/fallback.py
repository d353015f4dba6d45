"""Mixed-precision fallback: leave the most sensitive layers in float until INT8 meets the tolerance.

The gate is the export's own: top-1 may drop by at most ``tolerance`` points against FP32. It is
judged on held-out images (the dataset's validation split; the test split stays for the report)
with the simulation, which computes what the TensorRT file computes. When INT8 misses it, the
layers are ranked by what leaving each alone in float wins back in logit SQNR (the
"only this layer float" column of the sensitivity analysis), and taken out of INT8 one at a time,
best first, re-checking the gate after each, until it passes or ``max_layers`` are float.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from edge_resnet.contract.metrics import db_to_json
from edge_resnet.models.graph import Graph
from edge_resnet.quant.plan import make_plan, units
from edge_resnet.quant.sensitivity import Score, logits, plan_score

log = logging.getLogger(__name__)

# images of the held-out set that rank the layers (SQNR is a smooth measure: a few hundred suffice)
RANKING_IMAGES = 256


@dataclass(frozen=True)
class Step:
    float_layers: tuple[str, ...]
    score: Score
    top1_drop: float  # points against FP32 on the held-out images


@dataclass
class FallbackResult:
    float_layers: tuple[str, ...]  # the chosen ones, beyond those kept float from the start
    passed: bool
    reason: str  # why it stopped, in words
    fp32_top1: float
    images: int
    steps: list[Step] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # (layer, SQNR dB with it alone float)
    data: str = ""  # which held-out images, for people

    def to_dict(self) -> dict:
        return {"float_layers": list(self.float_layers), "passed": self.passed, "reason": self.reason,
                "fp32_top1": self.fp32_top1, "images": self.images, "data": self.data,
                "steps": [{"float_layers": list(s.float_layers), "top1_drop": round(s.top1_drop, 4),
                           "sqnr_db": _db(s.score.sqnr_db), "top1": s.score.top1} for s in self.steps],
                "ranking": [{"layer": name, "sqnr_db": _db(db)} for name, db in self.ranking]}


def _db(v: float) -> float | None:
    return None if db_to_json(v) is None else round(v, 3)


def rank_layers(folded: nn.Module, graph: Graph, amax: Mapping[str, float], batches: Sequence[Tensor],
                ref: np.ndarray, labels: np.ndarray, *, base: frozenset[str], target: str,
                channel_mean: Mapping[str, Sequence[float]] | None, device: torch.device | str) -> list[tuple[str, float]]:
    """Every layer outside ``base``, with the logit SQNR of INT8 when it alone joins ``base`` in float;
    best (highest SQNR) first, ties in graph order."""
    scored = []
    for layer in units(graph):
        if layer in base:
            continue
        plan = make_plan(graph, amax, target, channel_mean, base | {layer})
        scored.append((layer, plan_score(folded, plan, batches, ref, labels, device).sqnr_db))
    return sorted(scored, key=lambda t: -t[1])


def _subset(batches: Sequence[Tensor], n: int) -> list[Tensor]:
    out, total = [], 0
    for x in batches:
        if total >= n:
            break
        out.append(x[: n - total])
        total += len(out[-1])
    return out


def fallback(folded: nn.Module, graph: Graph, amax: Mapping[str, float], batches: Sequence[Tensor],
             labels: np.ndarray, *, tolerance: float, max_layers: int, base: frozenset[str] = frozenset(),
             target: str = "tensorrt", channel_mean: Mapping[str, Sequence[float]] | None = None,
             device: torch.device | str = "cpu", on_step: Callable[[Step], None] | None = None) -> FallbackResult:
    """The float layers (beyond ``base``) that bring INT8 within ``tolerance`` top-1 points of FP32.

    Args:
        batches, labels: held-out images (preprocessed) and their classes.
        max_layers: the cap; at most this many layers join ``base`` in float.
    """
    labels = np.asarray(labels)
    ref = logits(folded, batches, device)
    fp32_top1 = 100 * float(np.mean(ref.argmax(1) == labels))

    def check(layers: tuple[str, ...]) -> Step:
        plan = make_plan(graph, amax, target, channel_mean, base | set(layers))
        s = plan_score(folded, plan, batches, ref, labels, device)
        step = Step(layers, s, fp32_top1 - s.top1)
        log.info("fallback: float %s: top-1 drop %.2f points, %.2f dB", ", ".join(base | set(layers)) or "none",
                 step.top1_drop, s.sqnr_db)
        if on_step is not None:
            on_step(step)
        return step

    first = check(())
    result = FallbackResult((), first.top1_drop <= tolerance, "", fp32_top1, len(labels), [first])
    if result.passed:
        result.reason = f"INT8 is within {tolerance:g} top-1 points without fallback"
        return result
    if max_layers < 1:
        result.reason = "fallback is off (cap 0)"
        return result
    small = _subset(batches, RANKING_IMAGES)
    result.ranking = rank_layers(folded, graph, amax, small, ref[:sum(len(x) for x in small)], labels, base=base,
                                 target=target, channel_mean=channel_mean, device=device)
    chosen: list[str] = []
    for layer, _ in result.ranking[:max_layers]:
        chosen.append(layer)
        step = check(tuple(chosen))
        result.steps.append(step)
        if step.top1_drop <= tolerance:
            result.float_layers, result.passed = tuple(chosen), True
            result.reason = f"within {tolerance:g} top-1 points with {len(chosen)} layer(s) in float"
            return result
    best = min(result.steps, key=lambda s: (s.top1_drop, -s.score.sqnr_db))
    result.float_layers = best.float_layers
    result.reason = (f"cap reached: {max_layers} layer(s) in float still lose {result.steps[-1].top1_drop:.2f} "
                     f"top-1 points (tolerance {tolerance:g}); kept the best step ({len(best.float_layers)} float)")
    return result
