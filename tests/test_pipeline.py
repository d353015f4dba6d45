"""The export job at library level (``edge_resnet.pipeline.export_run``) on a tiny trained resnet8.

Each check reads the files the job wrote and compares them with a second source: hashes computed
here, the checkpoint itself, the ONNX graph, an evaluation run through another code path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest

from edge_resnet.calibration.files import load_calibration, read_trt_cache, save_calibration
from edge_resnet.calibration.calibrate import calibrate
from edge_resnet.calibration.calibrators import CALIBRATORS
from edge_resnet.calibration.readers import open_calibration_data
from edge_resnet.errors import EdgeResNetError
from edge_resnet.fold import fold_batchnorm
from edge_resnet.models.graph import trace
from edge_resnet.contract.files import EXPORTED
from edge_resnet.pipeline import ExportOptions, ExportResult, export_run
from edge_resnet.training import load_checkpoint
from edge_resnet.training.evaluate import evaluate_checkpoint
from edge_resnet.export.lint import errors, lint_model, manifest_float_layers
from tests.tiny_model import copy_checkpoint, listing, other_checkpoint, tiny_checkpoint

FAST = {"num_calib": 64, "batch_size": 32}
ROW_KEYS = ["pytorch_fp32", "sim_int8", "onnxruntime_fp32", "onnxruntime_fp16", "onnxruntime_tensorrt",
            "onnxruntime_cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def full(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """--int8 --fp16 with every default but the calibration size (auto calibrator, both targets)."""
    out = tmp_path_factory.mktemp("full") / "run"
    return export_run(ExportOptions(model=str(ckpt), int8=True, fp16=True, output=str(out), **FAST))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the run directory


def test_every_file_of_the_run_directory(full: ExportResult) -> None:
    assert full.passed, full.report.failures
    files = set(os.listdir(full.run_dir))
    assert set(EXPORTED.values()) <= files
    assert not [f for f in files if f.endswith(".tmp")], files  # every write was renamed into place
    # the manifest lists every file of the run directory but itself
    assert files - {"manifest.json"} == set(json.loads((full.run_dir / "manifest.json").read_text())["files"])
    assert {k: p.name for k, p in full.files.items()} == EXPORTED
    assert full.calibration_reused is False and full.trained is False


def test_manifest_checksums_input_labels_preprocessing(full: ExportResult, ckpt: Path) -> None:
    manifest = json.loads((full.run_dir / "manifest.json").read_text())
    listed = manifest["files"]
    assert set(listed) == set(EXPORTED.values()) - {"manifest.json"}
    for name, entry in listed.items():
        path = full.run_dir / name
        assert entry["sha256"] == _sha256(path), name
        assert entry["bytes"] == path.stat().st_size, name
    assert listed["model.int8.onnx"]["lint"] == "clean"
    checkpoint = load_checkpoint(ckpt)
    assert _sha256(ckpt) == listed["model.pt"]["sha256"]  # the checkpoint was copied byte for byte
    assert manifest["input"]["name"] == "input"
    assert manifest["input"]["shape"] == ["batch", 3, 32, 32]
    assert manifest["labels"] == list(checkpoint.classes)
    assert manifest["preprocessing"] == checkpoint.preprocessing.to_dict()
    assert manifest["model"]["arch"] == "resnet8"
    assert manifest["accuracy"] == json.loads((full.run_dir / "report.json").read_text())
    # the ONNX input really is what the manifest says
    onnx_input = onnx.load(str(full.run_dir / "model.fp32.onnx")).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in onnx_input.type.tensor_type.shape.dim]
    assert onnx_input.name == "input" and dims[1:] == [3, 32, 32]


def test_report_rows(full: ExportResult, ckpt: Path) -> None:
    report = json.loads((full.run_dir / "report.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    rows = {r["key"]: r for r in report["backends"]}
    assert list(rows) == ROW_KEYS
    for key, r in rows.items():
        assert {"top1", "top5", "agreement", "sqnr_db"} <= set(r), key
        assert 0 <= r["top1"] <= r["top5"] <= 1, key
    assert rows["pytorch_fp32"]["agreement"] is None  # the reference
    fp32 = rows["onnxruntime_fp32"]
    assert fp32["agreement"] == 1.0
    assert fp32["sqnr_db"] is None or fp32["sqnr_db"] > 80  # None: identical logits
    assert rows["onnxruntime_fp16"]["agreement"] >= 0.99
    for key in ("sim_int8", "onnxruntime_tensorrt", "onnxruntime_cpu"):
        assert rows[key]["sqnr_db"] > 20, key
    assert report["sim_vs_onnxruntime_int8_agreement"] >= 0.995
    # the reference row against an evaluation done by another code path (training's evaluator)
    evaluated, _, _ = evaluate_checkpoint(ckpt, split="test")
    assert report["images"] == evaluated.n == 360
    assert rows["pytorch_fp32"]["top1"] == pytest.approx(evaluated.top1, abs=1e-12)
    md = (full.run_dir / "report.md").read_text()
    assert "PASSED" in md and all(r["name"] in md for r in rows.values())


def test_int8_model_is_lint_clean(full: ExportResult) -> None:
    path = full.run_dir / "model.int8.onnx"
    # the classifier is left in float (as ModelOpt does): a warning, accepted because the manifest lists it
    assert [(v.node, v.rule, v.severity) for v in lint_model(path, manifest_float_layers(path))] == [
        ("fc", "float-layer", "warning")]
    assert errors(lint_model(path)) == []
    assert full.lint == {"tensorrt": []} and full.float_layers == {"fc": "classifier"}
    manifest = json.loads((full.run_dir / "manifest.json").read_text())
    entry = manifest["int8"]["models"]["model.int8.onnx"]["float_layers"]
    assert entry == {"fc": {"reason": "classifier", "precision": {"8.5": "fp16", "10.x": "fp16", "11.x": "fp32"}}}
    assert manifest["int8"]["models"]["model.int8.cpu.onnx"]["float_layers"]["fc"]["precision"] == {
        "onnxruntime": "fp32"}
    assert manifest["int8"]["fallback"]["passed"] is True


def test_calib_cache_covers_every_tensor_of_the_implicit_onnx(full: ExportResult) -> None:
    """calib.cache names every float tensor TensorRT's parser makes for model.int8.implicit.onnx (the input
    and each node's output: it has no Gemm, whose parser-made tensors no cache could name), with the
    calibrated range of the graph tensor holding the same values; the manifest records the cover."""
    model = onnx.load(str(full.run_dir / "model.int8.implicit.onnx"))
    values = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    assert not [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    header, scales = read_trt_cache((full.run_dir / "calib.cache").read_text())
    assert header == "TRT-8502-EntropyCalibration2"  # JetPack 5.1.x's TensorRT 8.5.2
    assert list(scales) == values
    amax = load_calibration(full.run_dir / "calib.json").amax
    for name, scale in scales.items():
        source = name if name in amax else "logits" if name == "logits_nchw" else None
        if source is not None:
            assert scale == pytest.approx(amax[source] / 127, rel=1e-6), name
    info = json.loads((full.run_dir / "manifest.json").read_text())["int8"]
    assert info["calib_cache"]["uncovered"] == [] and info["calib_cache"]["tensors"] == len(values)
    assert info["engines"] == {"qdq": {"model": "model.int8.onnx", "definition": "tensorrt"},
                               "implicit": {"model": "model.int8.implicit.onnx", "definition": "implicit"}}


def test_calib_json_records_the_auto_choice(full: ExportResult) -> None:
    calib = load_calibration(full.run_dir / "calib.json")
    assert calib == full.calibration
    assert calib.requested == "auto" and calib.method in CALIBRATORS
    assert set(calib.selection) == set(CALIBRATORS)
    assert calib.selection[calib.method] == max(calib.selection.values())
    assert calib.images == 64 and calib.data == "digits (train split)"


# ---------------------------------------------------------------- calibration reuse


def test_identical_run_reuses_calib_json_and_changes_recalibrate(ckpt: Path, tmp_path: Path) -> None:
    model = copy_checkpoint(ckpt, tmp_path / "run")  # no --output: the checkpoint's folder is the run
    calib_json = tmp_path / "run" / "calib.json"

    first = export_run(ExportOptions(model=str(model), int8=True, calib_method="max", **FAST))
    assert first.run_dir == tmp_path / "run" and first.calibration_reused is False
    stamp, content = calib_json.stat().st_mtime_ns, calib_json.read_bytes()

    again = export_run(ExportOptions(model=str(model), int8=True, calib_method="max", **FAST))
    assert again.calibration_reused is True
    assert calib_json.stat().st_mtime_ns == stamp and calib_json.read_bytes() == content
    assert again.calibration.amax == first.calibration.amax

    fewer = export_run(ExportOptions(model=str(model), int8=True, calib_method="max", num_calib=32, batch_size=32))
    assert fewer.calibration_reused is False
    assert load_calibration(calib_json).images == 32

    other = export_run(ExportOptions(model=str(model), int8=True, calib_method="percentile", num_calib=32,
                                     batch_size=32))
    assert other.calibration_reused is False
    assert load_calibration(calib_json).method == "percentile"


def test_identical_auto_run_reuses_calib_json(full: ExportResult, ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(full.run_dir, run)
    stamp = (run / "calib.json").stat().st_mtime_ns
    again = export_run(ExportOptions(model=str(ckpt), int8=True, fp16=True, output=str(run), **FAST))
    assert again.calibration_reused is True
    assert (run / "calib.json").stat().st_mtime_ns == stamp


# ---------------------------------------------------------------- a pinned calibration (--calib)


def _calibration_of(checkpoint: Path, path: Path, method: str = "max") -> Path:
    ckpt = load_checkpoint(checkpoint)
    graph = trace(fold_batchnorm(ckpt.build_model()))
    data = open_calibration_data(None, ckpt.preprocessing, num=32)
    save_calibration(path, calibrate(graph, data, method=method, batch_size=32))
    return path


def test_pinned_calibration_of_this_model_is_used(ckpt: Path, tmp_path: Path) -> None:
    pinned = _calibration_of(ckpt, tmp_path / "pinned.json")
    out = tmp_path / "out"
    result = export_run(ExportOptions(model=str(ckpt), int8=True, calib=str(pinned), output=str(out),
                                      batch_size=32))
    assert result.passed, result.report.failures
    assert result.calibration_reused is True
    assert load_calibration(out / "calib.json") == load_calibration(pinned)
    assert read_trt_cache((out / "calib.cache").read_text())[1]["input"] == pytest.approx(
        load_calibration(pinned).amax["input"] / 127, rel=1e-6)


def test_pinned_auto_calibration_of_this_model_is_used(full: ExportResult, ckpt: Path, tmp_path: Path) -> None:
    result = export_run(ExportOptions(model=str(ckpt), int8=True, calib=str(full.run_dir / "calib.json"),
                                      output=str(tmp_path / "out"), batch_size=32))
    assert result.calibration_reused is True


def test_pinned_calibration_of_another_model_is_refused(ckpt: Path, tmp_path_factory: pytest.TempPathFactory,
                                                        tmp_path: Path) -> None:
    pinned = _calibration_of(other_checkpoint(tmp_path_factory), tmp_path / "other.json")
    out = tmp_path / "out"
    with pytest.raises(EdgeResNetError, match="--calib .*other model weights.*leave out --calib"):
        export_run(ExportOptions(model=str(ckpt), int8=True, calib=str(pinned), output=str(out)))
    assert not out.exists()


# ---------------------------------------------------------------- without --int8


def test_fp32_only_export(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export_run(ExportOptions(model=str(ckpt), output=str(out), batch_size=64))
    assert result.passed and result.calibration is None
    assert sorted(os.listdir(out)) == sorted(["model.pt", "model.fp32.onnx", "report.json", "report.md",
                                             "manifest.json"])
    report = json.loads((out / "report.json").read_text())
    assert [r["key"] for r in report["backends"]] == ["pytorch_fp32", "onnxruntime_fp32"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["int8"] is None
    assert listing(out).keys() == {*manifest["files"], "manifest.json"}


def test_a_new_export_removes_the_sensitivity_report_of_the_files_it_replaces(ckpt: Path, tmp_path: Path) -> None:
    """sensitivity.json/.md/.png describe one calibration of one set of weights (contract RUN_FILES): an export
    rewrites the run's models, so it removes them rather than leave a report about files that are gone."""
    out = tmp_path / "out"
    export_run(ExportOptions(model=str(ckpt), output=str(out), batch_size=64))
    for name in ("sensitivity.json", "sensitivity.md", "sensitivity.png"):
        (out / name).write_text("from an earlier calibration")
    export_run(ExportOptions(model=str(ckpt), output=str(out), batch_size=64))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(os.listdir(out)) == sorted([*manifest["files"], "manifest.json"])
