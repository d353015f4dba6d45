"""Where the INT8 error comes from, layer by layer: the simulation with one layer quantized or one left float.

For every quantizable layer (conv, linear, residual add; named by module path) two INT8 models are
simulated on the same held-out images: only that layer quantized (its error on its own) and only that
layer left in float (what keeping it float would win back). Each is scored against the FP32 model by
logit SQNR and by the change in top-1. The second column orders the mixed-precision fallback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from edge_resnet.contract.metrics import agreement, db_to_json, sqnr_db
from edge_resnet.torch_settings import exact_fp32
from edge_resnet.models.graph import Graph
from edge_resnet.quant.plan import QuantPlan, make_plan, unit_name, units
from edge_resnet.quant.sim import QuantSim

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    sqnr_db: float  # logits against FP32; inf when identical
    top1: float  # percent
    agreement: float  # percent of images whose top-1 equals FP32's


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # module path
    op: str  # conv, linear or add
    only_quantized: Score  # this layer alone in INT8
    only_float: Score  # everything in INT8 but this layer


@dataclass
class SensitivityReport:
    target: str
    images: int
    data: str
    fp32_top1: float
    all_int8: Score  # every layer quantized, the classifier included
    layers: list[LayerSensitivity] = field(default_factory=list)

    def ranking(self) -> list[str]:
        """Layers by what leaving them in float wins back (logit SQNR), best first."""
        return [s.layer for s in sorted(self.layers, key=lambda s: -_finite(s.only_float.sqnr_db))]

    def to_dict(self) -> dict:
        def clean(v: object) -> object:
            if isinstance(v, float) and math.isinf(v):
                return db_to_json(v)  # identical logits: null, as every file writes them
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean(asdict(self)) | {"ranking": self.ranking()}  # type: ignore[operator]

    def table(self) -> tuple[list[str], list[list[str]]]:
        header = ["layer", "op", "only this INT8: SQNR dB", "top-1 change", "only this float: SQNR dB",
                  "top-1 change"]
        rows = [[s.layer, s.op, _db(s.only_quantized.sqnr_db), f"{s.only_quantized.top1 - self.fp32_top1:+.2f}",
                 _db(s.only_float.sqnr_db), f"{s.only_float.top1 - self.fp32_top1:+.2f}"] for s in self.layers]
        return header, rows

    def to_markdown(self) -> str:
        header, rows = self.table()
        lines = [f"Per-layer INT8 sensitivity ({self.target} placement, {self.images} held-out images of "
                 f"{self.data}; FP32 top-1 {self.fp32_top1:.2f}%, all layers INT8: {_db(self.all_int8.sqnr_db)} dB, "
                 f"top-1 {self.all_int8.top1 - self.fp32_top1:+.2f} points)", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"


def _finite(v: float) -> float:
    return 999.0 if math.isinf(v) and v > 0 else v


def _db(v: float) -> str:
    return "identical" if math.isinf(v) and v > 0 else f"{v:.2f}"


def logits(model: nn.Module, batches: Sequence[Tensor], device: torch.device | str = "cpu") -> np.ndarray:
    model = model.eval().to(device)
    with torch.inference_mode(), exact_fp32():
        return np.concatenate([model(x.to(device)).float().cpu().numpy() for x in batches])


def score(ref: np.ndarray, out: np.ndarray, labels: np.ndarray) -> Score:
    return Score(sqnr_db(ref, out), 100 * float(np.mean(out.argmax(1) == labels)), 100 * agreement(ref, out))


def plan_score(folded: nn.Module, plan: QuantPlan, batches: Sequence[Tensor], ref: np.ndarray, labels: np.ndarray,
               device: torch.device | str = "cpu") -> Score:
    return score(ref, logits(QuantSim(folded, plan), batches, device), labels)


def sensitivity(folded: nn.Module, graph: Graph, amax: Mapping[str, float], batches: Sequence[Tensor],
                labels: np.ndarray, *, target: str = "tensorrt",
                channel_mean: Mapping[str, Sequence[float]] | None = None, data: str = "",
                device: torch.device | str = "cpu",
                on_layer: Callable[[str], None] | None = None) -> SensitivityReport:
    """Score every layer of ``graph`` (the folded model's) quantized alone and left float alone.

    ``batches`` (preprocessed images) and ``labels`` are held-out data; the ranges are ``amax``
    (a calibration's), with bias correction when ``channel_mean`` is given, as the export does.
    """
    ref = logits(folded, batches, device)
    labels = np.asarray(labels)
    fp32_top1 = 100 * float(np.mean(ref.argmax(1) == labels))
    all_units = units(graph)
    kinds = {unit_name(n): n.op for n in graph if unit_name(n) in all_units}

    def run(float_layers: frozenset[str]) -> Score:
        return plan_score(folded, make_plan(graph, amax, target, channel_mean, float_layers), batches, ref, labels,
                          device)

    report = SensitivityReport(target, len(labels), data, fp32_top1, run(frozenset()))
    for layer in all_units:
        alone = run(frozenset(all_units) - {layer})
        without = run(frozenset({layer}))
        report.layers.append(LayerSensitivity(layer, kinds[layer], alone, without))
        log.debug("%s: only INT8 %.2f dB, only float %.2f dB", layer, alone.sqnr_db, without.sqnr_db)
        if on_layer is not None:
            on_layer(layer)
    return report


def plot(report: SensitivityReport, path: str) -> bool:
    """A bar chart of both SQNR columns per layer; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from edge_resnet import atomic

    names = [s.layer for s in report.layers]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.6))
    alone = [min(_finite(s.only_quantized.sqnr_db), 80) for s in report.layers]
    without = [_finite(s.only_float.sqnr_db) for s in report.layers]
    ax.barh(y - 0.2, alone, 0.4, label="only this layer INT8")
    ax.barh(y + 0.2, without, 0.4, label="all INT8 but this layer")
    ax.axvline(_finite(report.all_int8.sqnr_db), color="k", lw=0.8, ls="--", label="all layers INT8")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("logit SQNR vs FP32 (dB, higher is better; capped at 80)")
    ax.set_title(f"INT8 sensitivity per layer ({report.target}, {report.images} images of {report.data})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return True
