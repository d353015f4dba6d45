"""Cross-backend verification: run every form of the model on held-out data, compare, gate.

Each backend produces logits for the same images. Against the reference (PyTorch FP32 for the export,
the FP32 ONNX source for ``quantize``) we report top-1/top-5, top-1 agreement (the share of images whose
predicted class is unchanged) and the logit SQNR in dB, 10 log10(sum ref^2 / sum (x - ref)^2): accuracy
on an easy dataset hides quantization error, SQNR does not.

The gate is about the files a user ships, and it is here once for both commands (``judge``). For each
written model file it counts, on the same images, those the reference gets right and the file wrong
(``lost``) and the reverse (``gained``): the top-1 drop is (lost - gained) / n. Without labels the
reference's own predictions are the labels, nothing can be gained, and the drop is the file's
disagreement with the reference. With it come one-sided 95% bounds (Clopper-Pearson, exact binomial):

- upper: the bound on the share of images lost (the drop is at most that share);
- lower: without labels the bound on the disagreement; with labels the 97.5% lower bound on the share
  lost minus the 97.5% upper bound on the share gained (Bonferroni: both hold at once with >= 95%).

The verdict is the observed drop against the tolerance, as NVIDIA Model Optimizer and MLPerf judge a
fixed set, except where the set cannot express the tolerance (one image weighs more than it): there a
drop over the tolerance fails only when its lower bound is over it too, and otherwise the gate says it
cannot judge (not a failure) and how many images would. A pass whose upper bound is over the tolerance
says the set is too small to confirm it. Rows that are not files (the PyTorch simulation) and the
simulation's agreement with the deployed INT8 model are reported, and a miss is a warning, never the
verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from edge_resnet.sessions import open_session

    sess = open_session(path, threads=threads)
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


# ---------------------------------------------------------------- the gate: counts, bounds, verdict

CONFIDENCE = 0.95  # of each one-sided bound
PASSED, FAILED, CANNOT_JUDGE = "passed", "failed", "cannot judge"
_EPS = 1e-9  # 100 * (1.0 - 0.99) is 1.0000000000000009


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact to float rounding)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq, top = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    logs = [top - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    peak = max(logs)
    return min(1.0, math.exp(peak) * math.fsum(math.exp(t - peak) for t in logs))


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The p in [lo, hi] where the decreasing ``f`` crosses 0."""
    for _ in range(80):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def binomial_upper(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on p after ``k`` successes in ``n``: P(X <= k; p) = 1 - confidence."""
    if n == 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    return _bisect(lambda p: _binom_cdf(k, n, p) - alpha, k / n, 1.0)


def binomial_lower(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound: P(X >= k; p) = 1 - confidence."""
    if n == 0 or k <= 0:
        return 0.0
    alpha = 1.0 - confidence
    if k == n:
        return alpha ** (1.0 / n)
    return _bisect(lambda p: alpha - (1.0 - _binom_cdf(k - 1, n, p)), 0.0, k / n)


def drop_bounds(lost: int, gained: int, n: int, *, labelled: bool) -> tuple[float, float]:
    """One-sided 95% (lower, upper) bounds on the top-1 drop in points; see the module docstring."""
    upper = 100 * binomial_upper(lost, n)
    if not labelled:
        return 100 * binomial_lower(lost, n), upper
    half = 1 - (1 - CONFIDENCE) / 2
    return 100 * (binomial_lower(lost, n, half) - binomial_upper(gained, n, half)), upper


def images_needed(tolerance: float) -> int | None:
    """The fewest images on which a flawless result (none lost) bounds the drop within ``tolerance`` points;
    None for a tolerance of 0, which no finite set can confirm."""
    t = tolerance / 100
    if t <= 0:
        return None
    if t >= 1:
        return 1
    n = max(1, math.ceil(math.log(1 - CONFIDENCE) / math.log1p(-t)))
    while binomial_upper(0, n) > t + _EPS:  # float rounding of the closed form
        n += 1
    return n


@dataclass
class Check:
    """The gate's judgement of one shipped file."""

    key: str
    name: str
    file: str
    images: int
    lost: int  # images the reference gets right and this file wrong
    gained: int  # the reverse (always 0 without labels)
    drop: float  # top-1 points, (lost - gained) / images
    lower: float  # one-sided 95% bounds on the drop, points
    upper: float
    sqnr_db: float | None
    verdict: str  # PASSED, FAILED or CANNOT_JUDGE
    reason: str  # one sentence: what was measured and why this verdict
    tolerance: float

    @property
    def confirmed(self) -> bool:
        """A pass whose upper bound is within the tolerance too."""
        return self.verdict == PASSED and self.upper <= self.tolerance + _EPS

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "sqnr_db": db_to_json(self.sqnr_db), "confirmed": self.confirmed,
                "confidence": CONFIDENCE}


def judge(row: Row, ref_pred: np.ndarray, pred: np.ndarray, labels: np.ndarray, *, tolerance: float,
          labelled: bool, reference: str, more: Callable[[int], str]) -> Check:
    """The verdict on one shipped file (the rule of the module docstring), with its reason in one sentence."""
    n = len(labels)
    ref_ok, ok = ref_pred == labels, pred == labels
    lost, gained = int(np.sum(ref_ok & ~ok)), int(np.sum(~ref_ok & ok))
    drop = 100 * (lost - gained) / n if n else 0.0
    lower, upper = drop_bounds(lost, gained, n, labelled=labelled)
    sqnr = "identical logits" if row.sqnr_db is not None and math.isinf(row.sqnr_db) else (
        "-" if row.sqnr_db is None else f"{row.sqnr_db:.1f} dB")
    if labelled:
        measured = (f"{row.name}, {Path(row.file or '').name}, lost {drop:.2f} top-1 points against {reference} on "
                    f"{n} images ({lost} newly wrong, {gained} newly right; 95% bounds {lower:.2f} to {upper:.2f})")
    else:
        measured = (f"{row.name}, {Path(row.file or '').name}, disagrees with {reference} on {lost} of {n} images "
                    f"({drop:.2f}%; 95% bounds {lower:.2f} to {upper:.2f}%)")
    measured += f", logit SQNR {sqnr}"
    step = 100 / n if n else math.inf  # points one image is worth
    needed = images_needed(tolerance)
    if n and drop <= tolerance + _EPS:
        verdict = PASSED
        if upper > tolerance + _EPS and needed is not None:
            measured += (f"; within the {tolerance:.2f}-point tolerance but not confirmed: the upper bound is over it "
                         f"({more(needed)} would confirm a flawless result)")
    elif n and lower > tolerance + _EPS:
        verdict = FAILED
        measured += f", over the {tolerance:.2f}-point tolerance even at its 95% lower bound"
    elif tolerance > 0 and step > tolerance + _EPS:
        verdict = CANNOT_JUDGE
        measured += (f"; one image is {step:.2f} points against a {tolerance:.2f}-point tolerance and the lower bound "
                     f"is within it, so {n} images cannot judge ({more(needed or 1)} would)")
    else:
        verdict = FAILED
        measured += (f", over the {tolerance:.2f}-point tolerance (the lower bound is within it: a larger set might "
                     "pass)")
    return Check(row.key, row.name, row.file or "", n, lost, gained, drop, lower, upper, row.sqnr_db, verdict,
                 measured, tolerance)


def _default_more(n: int) -> str:
    return f"{n} images"


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
    reference: str = "PyTorch FP32"  # what every row is compared with, as sentences name it
    labelled: bool = True  # False: the labels are the reference's predictions, the gate judges agreement
    checks: list[Check] = field(default_factory=list)  # the gate's judgement of each shipped file
    undecided: list[str] = field(default_factory=list)  # files the set is too small to judge

    @property
    def passed(self) -> bool:
        """No shipped file failed (a file the set cannot judge is not a failure)."""
        return not self.failures

    @property
    def verdict(self) -> str:
        return FAILED if self.failures else CANNOT_JUDGE if self.undecided else PASSED

    @property
    def judged(self) -> str:
        return ("top-1 drop against the labels" if self.labelled else
                f"top-1 agreement with {self.reference} (no labels: its predictions stand in)")

    def verdict_line(self) -> str:
        """The verdict and its reason in one line (the CLI prints it last on stderr, after ``edge-resnet: ``)."""
        if self.failures:
            return "accuracy gate failed: " + "; ".join(self.failures)
        if self.undecided:
            return "accuracy gate cannot judge: " + "; ".join(self.undecided)
        head = (f"accuracy gate passed: every shipped file within {self.tolerance:.2f} top-1 points of "
                if self.labelled else f"accuracy gate passed: every shipped file agrees within {self.tolerance:.2f} "
                "points with ") + f"{self.reference} on {self.images} {self.split} images"
        if not self.checks:
            return head
        # the largest drop; among equal drops the widest bound, then the lowest SQNR (an INT8 file, not FP32)
        worst = max(self.checks, key=lambda c: (c.drop, c.upper, -(math.inf if c.sqnr_db is None else c.sqnr_db)))
        return f"{head}; worst: {worst.reason}"

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "split": self.split, "images": self.images,
            "tolerance_top1_points": self.tolerance, "passed": self.passed, "verdict": self.verdict,
            "verdict_line": self.verdict_line(), "reference": self.reference, "labelled": self.labelled,
            "judged": self.judged, "confidence": CONFIDENCE, "images_needed": images_needed(self.tolerance),
            "failures": list(self.failures), "cannot_judge": list(self.undecided),
            "gate": [c.to_dict() for c in self.checks],
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
        lines.append(f"Reference: {self.reference}. agree: top-1 agreement with it; SQNR: logit signal-to-noise "
                     f"ratio against it; drop: top-1 points lost against it.")
        if not self.labelled:
            lines.append(f"No labels: {self.reference}'s own predictions are the labels, so top-1 is agreement with "
                         "it and the gate judges agreement, not accuracy.")
        if self.sim_agreement is not None:
            lines.append(f"Simulated INT8 vs ONNX Runtime INT8 (TensorRT target): {100 * self.sim_agreement:.2f}% "
                         f"top-1 agreement (required >= {100 * MIN_SIM_AGREEMENT:.1f}%), "
                         f"logit SQNR {self.sim_sqnr_db:.1f} dB.")
        lines.append("")
        lines.append(f"Gate: {self.judged}, tolerance {self.tolerance:.2f} points, checked on the written model "
                     f"files with one-sided {100 * CONFIDENCE:.0f}% bounds.")
        lines += [f"- {c.verdict.upper()}: {c.reason}" for c in self.checks]
        lines.append("")
        lines.append({PASSED: "PASSED", FAILED: "FAILED", CANNOT_JUDGE: "CANNOT JUDGE"}[self.verdict] + ": "
                     + self.verdict_line().split(": ", 1)[1])
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
            shipped: Collection[str] | None = None, reference_name: str | None = None, labelled: bool = True,
            more: Callable[[int], str] | None = None) -> Report:
    """The report over logits already gathered by ``run_forms``; the gate is applied here (``judge``).

    Args:
        shipped: keys of the backends that run a written model file, the only ones the gate judges
            (default: every backend with a ``file`` other than the reference).
        reference_name: the reference as sentences name it (default: its backend's name).
        labelled: False when ``labels`` are the reference's own predictions (the gate judges agreement).
        more: how to get ``n`` images to judge on, for the advice of a set too small (default "n images").
    """
    if shipped is None:
        shipped = {b.key for b in backends if b.file is not None and b.key != reference}
    logits = {b.key: np.concatenate(b.logits) if b.logits else np.zeros((0, 0), np.float32) for b in backends}
    ref = logits[reference]
    ref_top1 = topk_accuracy(ref, labels, 1)
    ref_name = reference_name or next(b.name for b in backends if b.key == reference)
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
    report = Report(dataset, split, len(labels), tolerance, rows, reference=ref_name, labelled=labelled)
    ref_pred = ref.argmax(1) if len(ref) else np.zeros(0, np.int64)
    for r in rows:
        if r.drop is None:
            continue
        if r.file is not None and r.key in shipped:
            pred = logits[r.key].argmax(1) if len(labels) else np.zeros(0, np.int64)
            check = judge(r, ref_pred, pred, labels, tolerance=tolerance, labelled=labelled, reference=ref_name,
                          more=more or _default_more)
            report.checks.append(check)
            if check.verdict == FAILED:
                report.failures.append(check.reason)
            elif check.verdict == CANNOT_JUDGE:
                report.undecided.append(check.reason)
        elif r.drop > tolerance + _EPS:
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
