"""Cross-backend verification: run every form of the model on the held-out split, compare, gate.

Each backend produces logits for the same images. Against the PyTorch FP32 model we report
top-1/top-5, top-1 agreement (the share of images whose predicted class is unchanged) and the
logit SQNR in dB, 10 log10(sum ref^2 / sum (x - ref)^2): accuracy on an easy dataset hides
quantization error, SQNR does not. The gate is about the files a user ships: it fails when the
top-1 of a written model file (on ONNX Runtime) drops by more than the tolerance. Rows that are not
files (the PyTorch simulation) and the simulation's agreement with the deployed INT8 model are
reported, and a miss is a warning, never the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from edge_resnet.contract.metrics import agreement, db_to_json, sqnr_db

if TYPE_CHECKING:
    import torch
    from torch import nn

# the simulation must predict ONNX Runtime's INT8 (TensorRT target) to this top-1 agreement
MIN_SIM_AGREEMENT = 0.995


@dataclass
class ModelForm:
    """One form of the model: ``run`` maps a float32 NCHW batch to logits."""

    key: str
    name: str
    run: Callable[[np.ndarray], np.ndarray]
    file: str | None = None
    size_bytes: int | None = None
    logits: list[np.ndarray] = field(default_factory=list, repr=False)


def torch_form(key: str, name: str, model: nn.Module, *, device: str = "cpu", **kw: Any) -> ModelForm:
    import torch

    from edge_resnet.torch_settings import exact_fp32

    model = model.eval().to(device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), exact_fp32():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return ModelForm(key, name, run, **kw)


def onnx_form(key: str, name: str, path: str, *, threads: int = 0, **kw: Any) -> ModelForm:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {input_name: x})[0].astype(np.float32)

    return ModelForm(key, name, run, file=path, **kw)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1))) if len(labels) else 0.0


@dataclass
class Row:
    key: str
    name: str
    top1: float
    top5: float
    agreement: float | None  # top-1 agreement with the reference (None for the reference itself)
    sqnr_db: float | None
    drop: float | None  # top-1 points lost against the reference
    file: str | None
    size_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["sqnr_db"] = db_to_json(d["sqnr_db"])
        return d


@dataclass
class Report:
    dataset: str
    split: str
    images: int
    tolerance: float
    rows: list[Row]
    sim_agreement: float | None = None  # simulated vs ONNX Runtime INT8 (TensorRT target)
    sim_sqnr_db: float | None = None  # the same pair's logits, ONNX Runtime as the reference
    failures: list[str] = field(default_factory=list)  # the gate: shipped files out of tolerance
    warnings: list[str] = field(default_factory=list)  # misses of what is not shipped (the simulation)

    @property
    def passed(self) -> bool:
        return not self.failures

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "split": self.split, "images": self.images,
            "tolerance_top1_points": self.tolerance, "passed": self.passed, "failures": list(self.failures),
            "warnings": list(self.warnings),
            "sim_vs_onnxruntime_int8_agreement": self.sim_agreement,
            "sim_vs_onnxruntime_int8_sqnr_db": db_to_json(self.sim_sqnr_db),
            "min_sim_agreement": MIN_SIM_AGREEMENT,
            "backends": [r.to_dict() for r in self.rows],
        }

    def table(self) -> list[tuple[str, ...]]:
        out = []
        for r in self.rows:
            out.append((
                r.name, f"{100 * r.top1:.2f}%", f"{100 * r.top5:.2f}%",
                "-" if r.agreement is None else f"{100 * r.agreement:.2f}%",
                "-" if r.sqnr_db is None else ("exact" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}"),
                "-" if r.drop is None else f"{r.drop:+.2f}",
                "-" if r.size_bytes is None else _size(r.size_bytes),
            ))
        return out

    HEADER = ("backend", "top-1", "top-5", "agree", "SQNR dB", "drop pts", "size")

    def to_markdown(self) -> str:
        lines = [f"# Accuracy report: {self.dataset} {self.split} split ({self.images} images)", "",
                 "| " + " | ".join(self.HEADER) + " |", "|" + "---|" * len(self.HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in self.table()]
        lines.append("")
        lines.append("agree: top-1 agreement with PyTorch FP32; SQNR: logit signal-to-noise ratio vs PyTorch FP32; "
                     "drop: top-1 points lost vs PyTorch FP32.")
        if self.sim_agreement is not None:
            lines.append(f"Simulated INT8 vs ONNX Runtime INT8 (TensorRT target): {100 * self.sim_agreement:.2f}% "
                         f"top-1 agreement (required >= {100 * MIN_SIM_AGREEMENT:.1f}%), "
                         f"logit SQNR {self.sim_sqnr_db:.1f} dB.")
        lines.append("")
        lines.append(f"Tolerance: {self.tolerance:.2f} top-1 points, checked on the written model files. "
                     + ("PASSED." if self.passed else "FAILED: " + "; ".join(self.failures)))
        lines += [f"Warning (not part of the verdict): {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run_forms(backends: Sequence[ModelForm], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Feed every batch to every backend (one pass over the data); returns the labels."""
    labels = []
    for x, y in batches:
        xn = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        for b in backends:
            b.logits.append(b.run(xn))
        labels.append(y.numpy())
        if on_batch is not None:
            on_batch(len(y))
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def compare(backends: Sequence[ModelForm], labels: np.ndarray, *, reference: str, tolerance: float,
            dataset: str, split: str, sim_pair: tuple[str, str] | None = None,
            shipped: Collection[str] | None = None) -> Report:
    """The report over logits already gathered by ``run_forms``; the gate is applied here.

    Args:
        shipped: keys of the backends that run a written model file, the only ones the gate judges
            (default: every backend with a ``file`` other than the reference).
    """
    if shipped is None:
        shipped = {b.key for b in backends if b.file is not None and b.key != reference}
    logits = {b.key: np.concatenate(b.logits) if b.logits else np.zeros((0, 0), np.float32) for b in backends}
    ref = logits[reference]
    ref_top1 = topk_accuracy(ref, labels, 1)
    rows = []
    for b in backends:
        lg = logits[b.key]
        is_ref = b.key == reference
        top1 = topk_accuracy(lg, labels, 1)
        rows.append(Row(
            key=b.key, name=b.name, top1=top1, top5=topk_accuracy(lg, labels, 5),
            agreement=None if is_ref else agreement(ref, lg),
            sqnr_db=None if is_ref else sqnr_db(ref, lg),
            drop=None if is_ref else 100 * (ref_top1 - top1),
            file=b.file, size_bytes=b.size_bytes,
        ))
    report = Report(dataset, split, len(labels), tolerance, rows)
    for r in rows:
        if r.drop is not None and r.drop > tolerance + 1e-9:  # 100 * (1.0 - 0.99) is 1.0000000000000009
            if r.file is not None and r.key in shipped:
                report.failures.append(f"{r.name}, {Path(r.file).name}, lost {r.drop:.2f} top-1 points "
                                       f"(tolerance {tolerance:.2f})")
            else:
                report.warnings.append(f"{r.name} lost {r.drop:.2f} top-1 points (tolerance {tolerance:.2f}); "
                                       "it is not a file that ships")
    if sim_pair is not None and all(k in logits for k in sim_pair):
        sim, deployed = (logits[k] for k in sim_pair)
        report.sim_agreement = agreement(deployed, sim) if len(sim) else 1.0
        report.sim_sqnr_db = sqnr_db(deployed, sim)
        if report.sim_agreement < MIN_SIM_AGREEMENT:
            report.warnings.append(
                f"the simulation agrees with ONNX Runtime INT8 on only {100 * report.sim_agreement:.2f}% "
                f"of top-1 predictions (expected >= {100 * MIN_SIM_AGREEMENT:.1f}%; logits {report.sim_sqnr_db:.1f} dB "
                "apart: where the FP32 top-2 classes nearly tie, float rounding flips INT8 roundings and "
                "the prediction; a better-trained model decides by larger margins), so the simulation's figures "
                "(the calibrator choice) describe the written INT8 model less exactly")
    return report
