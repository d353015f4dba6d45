"""The gate (edge_resnet/accuracy.py), shared by export and quantize: its verdict is about the model files a user
ships (issue 17, point 7), with one-sided 95% bounds on the drop, and it says when the set is too small to judge
(issue 23, point 3). The bounds are checked against scipy's beta quantiles (the Clopper-Pearson identity) and
against exact binomial sums in rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edge_resnet.accuracy import (CANNOT_JUDGE, FAILED, PASSED, ModelForm, binomial_lower, binomial_upper, compare,
                                  drop_bounds, images_needed)


def _backend(key: str, logits: np.ndarray, file: str | None) -> ModelForm:
    b = ModelForm(key, key.replace("_", " "), run=lambda x: x, file=file)
    b.logits = [logits]
    return b


def _logits(pred: np.ndarray, classes: int = 4) -> np.ndarray:
    out = np.zeros((len(pred), classes), np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


LABELS = np.arange(100) % 4


def _wrong(n: int) -> np.ndarray:
    """Predictions that miss the first ``n`` labels."""
    pred = LABELS.copy()
    pred[:n] = (pred[:n] + 1) % 4
    return pred


def test_a_missing_simulation_warns_but_shipped_files_decide() -> None:
    backends = [_backend("pytorch_fp32", _logits(LABELS), "model.pt"),
                _backend("sim_int8", _logits(_wrong(5)), None),  # 5 points lost, 95% agreement with ONNX Runtime
                _backend("onnxruntime_fp32", _logits(LABELS), "run/model.fp32.onnx"),
                _backend("onnxruntime_tensorrt", _logits(LABELS), "run/model.int8.onnx")]
    report = compare(backends, LABELS, reference="pytorch_fp32", tolerance=1.0, dataset="d", split="test",
                     sim_pair=("sim_int8", "onnxruntime_tensorrt"))
    assert report.passed and report.failures == []
    assert report.sim_agreement == 0.95
    assert len(report.warnings) == 2
    assert report.warnings[0].startswith("sim int8 lost 5.00 top-1 points") and "not a file that ships" in report.warnings[0]
    assert report.warnings[1].startswith("the simulation agrees with ONNX Runtime INT8 on only 95.00%")
    assert report.to_dict()["passed"] is True and report.to_dict()["warnings"] == report.warnings
    assert "Warning (not part of the verdict)" in report.to_markdown()


def test_a_shipped_file_out_of_tolerance_fails_the_gate_by_name() -> None:
    backends = [_backend("pytorch_fp32", _logits(LABELS), "model.pt"),
                _backend("sim_int8", _logits(LABELS), None),
                _backend("onnxruntime_tensorrt", _logits(LABELS), "run/model.int8.onnx"),
                _backend("onnxruntime_cpu", _logits(_wrong(2)), "run/model.int8.cpu.onnx")]
    report = compare(backends, LABELS, reference="pytorch_fp32", tolerance=1.0, dataset="d", split="test",
                     sim_pair=("sim_int8", "onnxruntime_tensorrt"))
    assert not report.passed and report.warnings == [] and report.verdict == FAILED
    assert len(report.failures) == 1
    assert report.failures[0].startswith("onnxruntime cpu, model.int8.cpu.onnx, lost 2.00 top-1 points against "
                                         "pytorch fp32 on 100 images (2 newly wrong, 0 newly right; 95% bounds ")
    # one image is 1 point: the set resolves the tolerance, so the observed drop decides although the lower
    # bound is within the tolerance, and the line says so
    assert "a larger set might pass" in report.failures[0]
    assert report.verdict_line() == "accuracy gate failed: " + report.failures[0]
    # exactly at the tolerance passes
    backends[3].logits = [_logits(_wrong(1))]
    assert compare(backends, LABELS, reference="pytorch_fp32", tolerance=1.0, dataset="d", split="test").passed


# ---------------------------------------------------------------- the bounds: known answers


@pytest.mark.parametrize("k, n", [(0, 16), (1, 16), (2, 16), (5, 16), (16, 16), (3, 360), (40, 1000), (0, 1)])
def test_clopper_pearson_bounds_are_scipys_beta_quantiles(k: int, n: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    upper = 1.0 if k == n else stats.beta.ppf(0.95, k + 1, n - k)
    lower = 0.0 if k == 0 else stats.beta.ppf(0.05, k, n - k + 1)
    assert binomial_upper(k, n) == pytest.approx(upper, abs=1e-10)
    assert binomial_lower(k, n) == pytest.approx(lower, abs=1e-10)


def _tail_at_most(k: int, n: int, p: Fraction) -> Fraction:
    return sum(Fraction(math.comb(n, i)) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("k, n", [(1, 16), (2, 16), (4, 30)])
def test_the_bounds_are_where_the_exact_binomial_tails_are_five_percent(k: int, n: int) -> None:
    """Without scipy: at the upper bound P(X <= k) is 5%, at the lower P(X >= k) is 5% (exact rational sums)."""
    upper = Fraction(binomial_upper(k, n))
    lower = Fraction(binomial_lower(k, n))
    assert abs(float(_tail_at_most(k, n, upper)) - 0.05) < 1e-9
    assert abs(float(1 - _tail_at_most(k - 1, n, lower)) - 0.05) < 1e-9


def test_known_values_and_the_size_a_tolerance_needs() -> None:
    # none of n: the upper bound is 1 - 0.05^(1/n) ("rule of three": about 3/n)
    assert binomial_upper(0, 16) == pytest.approx(1 - 0.05 ** (1 / 16))
    assert 100 * binomial_upper(0, 16) == pytest.approx(17.07, abs=0.01)
    # 1 of 16: 0.32% to 26.40% (the quantize run of issue 23 says these figures)
    assert (round(100 * binomial_lower(1, 16), 2), round(100 * binomial_upper(1, 16), 2)) == (0.32, 26.4)
    # a flawless result bounds the drop within 1 point from 299 images on (ln 0.05 / ln 0.99 = 298.07)
    assert images_needed(1.0) == 299
    assert binomial_upper(0, 299) <= 0.01 < binomial_upper(0, 298)
    assert images_needed(0.5) == 598 and images_needed(100) == 1 and images_needed(0) is None


def test_drop_bounds_with_and_without_labels() -> None:
    # no labels: nothing can be gained, the bounds are the disagreement's own
    assert drop_bounds(2, 0, 16, labelled=False) == pytest.approx((100 * binomial_lower(2, 16),
                                                                   100 * binomial_upper(2, 16)))
    # labels: the upper bound is the share lost (the drop is at most that); the lower one is the 97.5% lower
    # bound on the share lost minus the 97.5% upper bound on the share gained
    lo, hi = drop_bounds(5, 2, 200, labelled=True)
    assert hi == pytest.approx(100 * binomial_upper(5, 200))
    assert lo == pytest.approx(100 * (binomial_lower(5, 200, 0.975) - binomial_upper(2, 200, 0.975)))
    assert lo < 100 * (5 - 2) / 200 < hi


# ---------------------------------------------------------------- the verdict rule


def _agreement_report(n: int, flips: int, tolerance: float = 1.0):
    """An INT8 file that disagrees with the reference on ``flips`` of ``n`` images; no labels."""
    ref = np.arange(n) % 4
    int8 = ref.copy()
    int8[:flips] = (int8[:flips] + 1) % 4
    backends = [_backend("onnx_source", _logits(ref), "m.onnx"), _backend("onnxruntime_tensorrt", _logits(int8),
                                                                          "run/model.int8.onnx")]
    return compare(backends, ref, reference="onnx_source", tolerance=tolerance, dataset="frames", split="held-out",
                   reference_name="the FP32 ONNX source (m.onnx)", labelled=False,
                   more=lambda k: f"--num-verify {2 * k}")


def test_one_flip_in_16_cannot_be_judged_against_a_1_point_tolerance() -> None:
    """Issue 23: 16 held-out images, one disagreement = 6.25 points. The lower bound (0.32%) is within the
    tolerance: no failure, and the line says why and how many images would judge."""
    report = _agreement_report(16, 1)
    assert report.passed and report.verdict == CANNOT_JUDGE and report.failures == []
    line = report.verdict_line()
    assert line.startswith("accuracy gate cannot judge: onnxruntime tensorrt, model.int8.onnx, disagrees with the "
                           "FP32 ONNX source (m.onnx) on 1 of 16 images (6.25%; 95% bounds 0.32 to 26.40%)")
    assert "one image is 6.25 points against a 1.00-point tolerance" in line and "--num-verify 598 would" in line
    assert report.to_dict()["verdict"] == "cannot judge" and report.to_dict()["cannot_judge"] == [line.split(": ", 1)[1]]


def test_a_loss_established_at_the_lower_bound_fails_even_on_a_small_set() -> None:
    """2 of 16: the disagreement is over 1% with 95% confidence (lower bound 2.27%): a real failure, exit 3."""
    report = _agreement_report(16, 2)
    assert not report.passed and report.verdict == FAILED
    assert "95% bounds 2.27 to 34.38%" in report.failures[0] and "even at its 95% lower bound" in report.failures[0]


def test_a_pass_says_whether_its_bound_confirms_it() -> None:
    small, large = _agreement_report(100, 0), _agreement_report(400, 0)
    assert small.verdict == PASSED and not small.checks[0].confirmed
    assert "not confirmed" in small.verdict_line() and "--num-verify 598 would confirm" in small.verdict_line()
    assert large.verdict == PASSED and large.checks[0].confirmed and "not confirmed" not in large.verdict_line()
    assert large.verdict_line().startswith("accuracy gate passed: every shipped file agrees within 1.00 points "
                                           "with the FP32 ONNX source (m.onnx) on 400 held-out images; worst: ")


def test_a_zero_tolerance_is_judged_on_the_count() -> None:
    """No set can confirm a drop of exactly 0, so tolerance 0 is the strict rule: one image lost fails."""
    assert _agreement_report(16, 1, tolerance=0).verdict == FAILED
    assert _agreement_report(16, 0, tolerance=0).verdict == PASSED


def test_the_report_names_its_reference_and_what_the_gate_judges() -> None:
    report = _agreement_report(16, 1)
    md = report.to_markdown()
    assert "Reference: the FP32 ONNX source (m.onnx)." in md and "PyTorch" not in md
    assert "the gate judges agreement, not accuracy" in md
    assert "CANNOT JUDGE: onnxruntime tensorrt" in md
    d = report.to_dict()
    assert d["reference"] == "the FP32 ONNX source (m.onnx)" and d["labelled"] is False
    assert d["gate"][0]["lost"] == 1 and d["gate"][0]["upper"] == pytest.approx(26.40, abs=0.01)
