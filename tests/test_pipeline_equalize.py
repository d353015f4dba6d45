"""`export --equalize`: the INT8 files quantize the equalized model, the FP32 file is the model as trained.

The model is the tiny resnet8 with the stress transform applied (outlier channels that leave the
FP32 function unchanged), so equalization clearly wins and ``auto`` must pick it; the same
checkpoint exported with ``--equalize off`` is the control.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edge_resnet.calibration.files import load_calibration
from edge_resnet.errors import ConfigError
from edge_resnet.fold import fold_batchnorm
from edge_resnet.pipeline import ExportOptions, ExportResult, export_run
from edge_resnet.quant.equalize import equalize
from edge_resnet.quant.plan import quantize_weight
from edge_resnet.quant.stress import stress
from edge_resnet.training.checkpoint import load_checkpoint, save_checkpoint
from tests.tiny_model import tiny_checkpoint

FAST = {"num_calib": 64, "batch_size": 32, "calib_method": "max", "fallback_max": 0, "target": "tensorrt"}
LAYER = "layer1.0.conv2"  # equalization scales its input channels (per-channel int8 absorbs output scaling)


@pytest.fixture(scope="module")
def stressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path_factory))
    model, _ = stress(ckpt.build_model(), scale=32.0, channels=2)
    path = tmp_path_factory.mktemp("stressed") / "model.pt"
    save_checkpoint(path, dataclasses.replace(ckpt, state_dict=model.state_dict()))
    return path


@pytest.fixture(scope="module")
def runs(stressed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    base = tmp_path_factory.mktemp("eq")
    return {choice: export_run(ExportOptions(model=str(stressed), int8=True, output=str(base / choice),
                                             equalize=choice, **FAST))
            for choice in ("auto", "off")}


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _weight(inits: dict[str, np.ndarray], layer: str) -> np.ndarray:
    """The float weight of ``layer`` in an FP32 file, or its int8 weight in a Q/DQ file."""
    names = [n for n, a in inits.items() if n.startswith(layer + ".weight") and a.ndim == 4]
    assert len(names) == 1, names
    return inits[names[0]]


def test_auto_chooses_equalization_on_the_stressed_model(runs: dict[str, ExportResult]) -> None:
    eq = runs["auto"].calibration.equalization
    assert eq["requested"] == "auto" and eq["applied"] is True and eq["pairs"] >= 3
    assert eq["selection"]["on"] > eq["selection"]["off"] + 3  # outliers undone: several dB better
    assert "val" in eq["judged_on"]
    off = runs["off"].calibration.equalization
    assert off == {"requested": "off", "applied": False}
    manifest = json.loads((runs["auto"].run_dir / "manifest.json").read_text())
    assert manifest["int8"]["equalization"]["applied"] is True
    assert "## Cross-layer equalization" in (runs["auto"].run_dir / "report.md").read_text()
    assert load_calibration(runs["auto"].run_dir / "calib.json").equalized


def test_int8_is_closer_to_fp32_with_equalization(runs: dict[str, ExportResult]) -> None:
    on = runs["auto"].report.row("onnxruntime_tensorrt").sqnr_db
    off = runs["off"].report.row("onnxruntime_tensorrt").sqnr_db
    assert on > off + 3, (on, off)
    assert runs["auto"].passed, runs["auto"].report.failures


def test_fp32_file_is_the_trained_model_and_int8_the_equalized_one(runs: dict[str, ExportResult],
                                                                     stressed: Path) -> None:
    # model.fp32.onnx is byte-identical with and without equalization: the model as trained (folded)
    assert (runs["auto"].run_dir / "model.fp32.onnx").read_bytes() == (runs["off"].run_dir / "model.fp32.onnx").read_bytes()
    folded = fold_batchnorm(load_checkpoint(stressed).build_model())
    fp32 = _weight(_initializers(runs["auto"].run_dir / "model.fp32.onnx"), LAYER)
    np.testing.assert_array_equal(fp32, dict(folded.named_modules())[LAYER].weight.detach().numpy())
    # the Q/DQ file holds the int8 weights of the equalized model; with --equalize off those of the folded one
    eq_module = dict(equalize(folded).model.named_modules())[LAYER]
    int8_on = _weight(_initializers(runs["auto"].run_dir / "model.int8.onnx"), LAYER)
    int8_off = _weight(_initializers(runs["off"].run_dir / "model.int8.onnx"), LAYER)
    np.testing.assert_array_equal(int8_on, quantize_weight(eq_module.weight).q)
    np.testing.assert_array_equal(int8_off, quantize_weight(dict(folded.named_modules())[LAYER].weight).q)
    assert not np.array_equal(int8_on, int8_off)
    # and the FP32 file still computes what the checkpoint computes
    assert runs["auto"].report.row("onnxruntime_fp32").agreement == pytest.approx(1.0)


def test_identical_auto_export_reuses_the_equalized_calibration(runs: dict[str, ExportResult], stressed: Path) -> None:
    run = runs["auto"].run_dir
    stamp = (run / "calib.json").stat().st_mtime_ns
    again = export_run(ExportOptions(model=str(stressed), int8=True, output=str(run), equalize="auto", **FAST))
    assert again.calibration_reused is True and again.calibration.equalized
    assert (run / "calib.json").stat().st_mtime_ns == stamp
    assert again.report.row("onnxruntime_tensorrt").sqnr_db == pytest.approx(
        runs["auto"].report.row("onnxruntime_tensorrt").sqnr_db, abs=1e-6)


def test_pinned_equalized_calibration_against_equalize_off_is_refused(runs: dict[str, ExportResult], stressed: Path,
                                                                       tmp_path: Path) -> None:
    pinned = runs["auto"].run_dir / "calib.json"
    with pytest.raises(ConfigError, match="--calib .*with equalization.*--equalize off"):
        export_run(ExportOptions(model=str(stressed), int8=True, calib=str(pinned), equalize="off",
                                 output=str(tmp_path / "out"), **{k: v for k, v in FAST.items() if k != "num_calib"}))
    assert not (tmp_path / "out").exists()
    # without --equalize the file's choice is followed
    result = export_run(ExportOptions(model=str(stressed), int8=True, calib=str(pinned), output=str(tmp_path / "ok"),
                                      **{k: v for k, v in FAST.items() if k != "num_calib"}))
    assert result.calibration_reused and result.calibration.equalized
    torch.testing.assert_close(torch.tensor(result.report.row("onnxruntime_tensorrt").sqnr_db),
                               torch.tensor(runs["auto"].report.row("onnxruntime_tensorrt").sqnr_db))


def test_unknown_equalize_choice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--equalize must be one of auto, on, off"):
        ExportOptions(int8=True, equalize="yes").validate()
