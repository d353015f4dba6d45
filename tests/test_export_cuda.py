"""The export job with the PyTorch side on CUDA (calibration, simulation, verification)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_resnet.pipeline import ExportOptions, export_run
from edge_resnet.training import TrainConfig, train


@pytest.mark.cuda
def test_export_int8_on_cuda_matches_cpu(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # a trained model: near-tied predictions of an untrained one flip under any float rounding
    train(TrainConfig(model="resnet20", epochs=15, output=str(run), device="cuda"))
    results = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        results[device] = export_run(ExportOptions(model=str(run / "model.pt"), int8=True, num_calib=128,
                                                   calib_method="entropy", output=str(out), device=device))
    cpu, cuda = results["cpu"], results["cuda"]
    assert cuda.report.passed, cuda.report.failures
    # the same histograms up to float summation order: ranges within a bin or two
    for name, a in cpu.calibration.amax.items():
        assert cuda.calibration.amax[name] == pytest.approx(a, rel=0.02, abs=1e-4), name
    # ONNX Runtime rows are the same files' results whichever device calibrated
    rows = {r["key"]: r for r in json.loads((tmp_path / "cuda" / "report.json").read_text())["backends"]}
    assert rows["onnxruntime_fp32"]["agreement"] == 1.0
    assert rows["sim_int8"]["agreement"] >= 0.99
