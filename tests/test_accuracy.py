"""The workstation gate (edge_resnet/accuracy.py): its verdict is about the model files a user ships (issue 17, point 7)."""

from __future__ import annotations

import numpy as np

from edge_resnet.accuracy import ModelForm, compare


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
    assert not report.passed and report.warnings == []
    assert report.failures == ["onnxruntime cpu, model.int8.cpu.onnx, lost 2.00 top-1 points (tolerance 1.00)"]
    # exactly at the tolerance passes
    backends[3].logits = [_logits(_wrong(1))]
    assert compare(backends, LABELS, reference="pytorch_fp32", tolerance=1.0, dataset="d", split="test").passed
