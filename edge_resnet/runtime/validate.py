"""The device checks itself: a bundle's validation set through a backend, against the stored FP32 logits.

A bundle carries a few hundred held-out samples (their resized, centre-cropped pixels), their
labels, and the FP32 model's logits for them, computed on the workstation. On the device the
pixels are normalised exactly as the training pipeline does (``Preprocessor.normalize``), run
through the backend under test (a TensorRT engine, or ONNX Runtime standing in for it) and
compared with the FP32 results: top-1 accuracy drop in points and top-1 agreement, each against
the bundle's tolerance. Storing pixels instead of float inputs keeps the file 4x smaller and
loses nothing: normalisation is deterministic float32 arithmetic.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet.contract.metrics import agreement, db_to_json, sqnr_db
from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.backends import Backend
from edge_resnet.runtime.preprocess import Preprocessor

# what a device result must reach, by the precision under test, unless the bundle says otherwise:
# FP32 engines use TF32 on Ampere+ GPUs, FP16/INT8 move a few borderline samples
DEFAULT_MIN_AGREEMENT = {"fp32": 0.99, "fp16": 0.99, "int8": 0.98}
DEFAULT_MAX_DROP_POINTS = 1.0


@dataclass(frozen=True)
class ValidationSet:
    pixels: np.ndarray  # (N, S, S, 3) uint8, RGB, resized and centre-cropped
    labels: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, classes) float32, the FP32 model's

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: str | Path) -> None:
        """Write as .npz (callers make it atomic: ``edge_resnet.atomic.atomic_open``)."""
        np.savez_compressed(path, pixels=self.pixels, labels=self.labels, logits=self.logits)

    @classmethod
    def load(cls, path: str | Path) -> ValidationSet:
        try:
            with np.load(path, allow_pickle=False) as z:
                vs = cls(pixels=z["pixels"], labels=z["labels"], logits=z["logits"])
        except FileNotFoundError:
            raise EdgeResNetError(f"no validation set at {path}; make the bundle with `edge-resnet bundle`") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise EdgeResNetError(f"cannot read the validation set {path} ({e}); make the bundle again") from None
        n = len(vs.labels)
        if (vs.pixels.dtype != np.uint8 or vs.pixels.ndim != 4 or vs.pixels.shape[-1] != 3 or len(vs.pixels) != n
                or vs.logits.ndim != 2 or len(vs.logits) != n or n == 0):
            raise EdgeResNetError(f"{path} is not a validation set (pixels {vs.pixels.shape} {vs.pixels.dtype}, "
                                  f"labels {vs.labels.shape}, logits {vs.logits.shape}); make the bundle again")
        return vs


@dataclass
class ValidationResult:
    backend: str
    model: str
    precision: str
    samples: int
    top1: float
    fp32_top1: float
    drop_points: float
    agreement: float
    sqnr_db: float
    max_abs_diff: float
    max_drop_points: float
    min_agreement: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"] = db_to_json(d["sqnr_db"])
        return {**d, "passed": self.passed}

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        return (f"{self.model} on {self.backend}: top-1 {100 * self.top1:.2f}% vs FP32 {100 * self.fp32_top1:.2f}% "
                f"(drop {self.drop_points:+.2f} points, limit {self.max_drop_points:g}), agreement "
                f"{100 * self.agreement:.2f}% (min {100 * self.min_agreement:.1f}%), logit SQNR "
                f"{self.sqnr_db:.1f} dB over {self.samples} samples: {verdict}")


def check_backend(backend: Backend, validation: ValidationSet, preprocess: Preprocessor, *, model: str,
                  precision: str, max_drop_points: float = DEFAULT_MAX_DROP_POINTS,
                  min_agreement: float | None = None, batch_size: int = 32) -> ValidationResult:
    """Run the validation set through ``backend`` and judge it against the stored FP32 logits."""
    if tuple(validation.pixels.shape[1:3]) != (preprocess.input_size, preprocess.input_size):
        raise EdgeResNetError(f"the validation set holds {validation.pixels.shape[1]}x{validation.pixels.shape[2]} "
                              f"pixels but the model takes {preprocess.input_size}; the bundle is inconsistent")
    outs = []
    for start in range(0, len(validation), batch_size):
        outs.append(backend.run(preprocess.normalize(validation.pixels[start:start + batch_size])))
    logits = np.concatenate(outs)
    if logits.shape != validation.logits.shape:
        raise EdgeResNetError(f"{model} returns logits {list(logits.shape)}, the validation set holds "
                              f"{list(validation.logits.shape)}; the bundle and the model do not belong together")
    pred, ref = logits.argmax(1), validation.logits.argmax(1)
    top1, fp32_top1 = float(np.mean(pred == validation.labels)), float(np.mean(ref == validation.labels))
    agree = agreement(validation.logits, logits)
    min_agreement = DEFAULT_MIN_AGREEMENT.get(precision, 0.98) if min_agreement is None else min_agreement
    drop = 100 * (fp32_top1 - top1)
    failures = []
    if drop > max_drop_points + 1e-9:
        failures.append(f"top-1 drops {drop:.2f} points (limit {max_drop_points:g})")
    if agree < min_agreement:
        failures.append(f"top-1 agrees with FP32 on {100 * agree:.2f}% (needs {100 * min_agreement:.1f}%)")
    return ValidationResult(backend=backend.name, model=model, precision=precision, samples=len(validation),
                            top1=top1, fp32_top1=fp32_top1, drop_points=drop, agreement=agree,
                            sqnr_db=sqnr_db(validation.logits, logits),
                            max_abs_diff=float(np.max(np.abs(logits - validation.logits))),
                            max_drop_points=max_drop_points, min_agreement=min_agreement, failures=failures)
