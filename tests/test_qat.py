"""Quantization-aware training: the library (``quant.qat``) and the job (`edge-resnet qat RUN`).

The job test starts from a deliberately bad calibration (every range cut to 1/8, pinned with
``--calib``): QAT must bring the written files' logits closer to FP32 (measured by ONNX Runtime on
the test split, not by the training's own numbers), and the files must pass the lint and load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edge_resnet.calibration.files import load_calibration, save_calibration
from edge_resnet.export.lint import errors, lint_model, manifest_float_layers
from edge_resnet.fold import fold_batchnorm
from edge_resnet.models.graph import trace
from edge_resnet.pipeline import ExportOptions, ExportResult, export_run
from edge_resnet.qat import QATOptions, qat_run
from edge_resnet.quant import QuantSim, make_plan
from edge_resnet.quant.qat import QATModel
from edge_resnet.training.checkpoint import load_checkpoint
from tests.export.util import run_cli
from tests.tiny_model import copy_checkpoint, listing, tiny_checkpoint

FAST = {"num_calib": 64, "batch_size": 32, "calib_method": "max", "fallback_max": 0, "equalize": "off"}


def _main(argv: list) -> tuple[int, str, str]:
    return run_cli(*map(str, argv))


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """An INT8 export whose calibration has every range cut to 1/8 (heavy clipping everywhere)."""
    base = tmp_path_factory.mktemp("qat")
    model = copy_checkpoint(tiny_checkpoint(tmp_path_factory), base / "clean")
    clean = export_run(ExportOptions(model=str(model), int8=True, **FAST))
    calib = load_calibration(clean.run_dir / "calib.json")
    calib.amax = {k: v / 8 for k, v in calib.amax.items()}
    save_calibration(base / "bad.json", calib)
    return export_run(ExportOptions(model=str(model), int8=True, calib=str(base / "bad.json"),
                                    output=str(base / "bad"), **FAST))


@pytest.fixture(scope="module")
def qat(bad_run: ExportResult) -> tuple[ExportResult, dict[str, int]]:
    before = listing(bad_run.run_dir)
    result = qat_run(QATOptions(run=str(bad_run.run_dir), epochs=3, scale_lr=0.1, batch_size=32))
    return result, before


def test_qat_model_starts_as_the_ptq_simulation(tmp_path_factory: pytest.TempPathFactory) -> None:
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path_factory))
    folded = fold_batchnorm(ckpt.build_model())
    graph = trace(folded)
    x = torch.randn(16, 3, ckpt.preprocessing.input_size, ckpt.preprocessing.input_size,
                    generator=torch.Generator().manual_seed(0))
    amax = {n.name: 1.0 + i / 10 for i, n in enumerate(graph)}  # any ranges: the arithmetic must match
    plan = make_plan(graph, amax, "tensorrt", float_layers={"fc"})
    with torch.no_grad():
        sim = QuantSim(folded, plan)(x)
        start = QATModel(folded, amax, float_layers=frozenset({"fc"}), learn_scales=True)(x)
    torch.testing.assert_close(start, sim, rtol=1e-4, atol=1e-4)
    # and gradients reach the weights and the ranges through the rounding (straight-through)
    model = QATModel(folded, amax, float_layers=frozenset({"fc"})).train()
    model(x).square().sum().backward()
    assert model.log_amax.grad is not None and float(model.log_amax.grad.abs().sum()) > 0
    conv = model.model.layer1[0].conv1
    assert float(conv.parametrizations.weight.original.grad.abs().sum()) > 0


def test_qat_starts_from_the_bias_corrected_ptq_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    """docs/int8.md: "the biases start from the PTQ plan's bias-corrected ones, so epoch 0 is the PTQ model".
    With channel means the plan's biases differ from the folded model's (the correction is not a no-op here);
    QAT given them computes the corrected simulation exactly, and without them it would not."""
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path_factory))
    folded = fold_batchnorm(ckpt.build_model())
    graph = trace(folded)
    size = ckpt.preprocessing.input_size
    x = torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(1))
    amax = {n.name: 1.0 + i / 10 for i, n in enumerate(graph)}
    gen = np.random.default_rng(0)
    # per-channel means of each conv/linear input, keyed by the input tensor as calibration records them
    means = {n.inputs[0]: list(gen.normal(0.5, 0.3, n.module.weight.shape[1]))
             for n in graph.of_op("conv", "linear") if getattr(n.module, "groups", 1) == 1}
    plan = make_plan(graph, amax, "tensorrt", channel_mean=means, float_layers={"fc"})
    assert plan.biases, "the plan corrected no bias"
    moved = max(float(np.abs(b - _folded_bias(graph, name)).max()) for name, b in plan.biases.items())
    assert moved > 1e-4  # the correction really moves the biases
    biases = {k: torch.from_numpy(v) for k, v in plan.biases.items()}
    with torch.no_grad():
        sim = QuantSim(folded, plan)(x)
        start = QATModel(folded, amax, float_layers=frozenset({"fc"}), biases=biases)(x)
        uncorrected = QATModel(folded, amax, float_layers=frozenset({"fc"}))(x)
    torch.testing.assert_close(start, sim, rtol=1e-4, atol=1e-4)
    assert float((uncorrected - sim).abs().max()) > 1e-3


def _folded_bias(graph, name: str) -> np.ndarray:
    module = graph[name].module
    if module.bias is None:
        return np.zeros(module.weight.shape[0], np.float32)
    return module.bias.detach().numpy()


def test_qat_improves_the_badly_calibrated_files(qat: tuple[ExportResult, dict[str, int]],
                                                 bad_run: ExportResult) -> None:
    result, _ = qat
    for key in ("onnxruntime_tensorrt", "onnxruntime_cpu"):
        bad, good = bad_run.report.row(key).sqnr_db, result.report.row(key).sqnr_db
        assert good > bad + 3, (key, bad, good)  # ONNX Runtime on the test split, the shipped files
    q = result.calibration.qat
    assert q["sqnr_db_after"] > q["sqnr_db_before"] and q["best_epoch"] >= 1
    # the top-1 of the written TensorRT file recovers too (the gate itself may still fail after 3 epochs)
    assert result.report.row("onnxruntime_tensorrt").top1 > bad_run.report.row("onnxruntime_tensorrt").top1


def test_qat_files_lint_clean_load_and_name_their_origin(qat: tuple[ExportResult, dict[str, int]],
                                                         bad_run: ExportResult) -> None:
    result, _ = qat
    run = result.run_dir
    assert run == bad_run.run_dir.with_name("bad-qat")
    model = onnx.load(str(run / "model.int8.onnx"))
    onnx.checker.check_model(model)
    assert not errors(lint_model(model, manifest_float_layers(run / "model.int8.onnx")))
    assert result.lint["tensorrt"] == []
    manifest = json.loads((run / "manifest.json").read_text())
    origin = manifest["int8"]["qat"]["started_from"]
    assert origin["run"] == str(bad_run.run_dir)
    assert origin["calib_sha256"] == _sha(bad_run.run_dir / "calib.json")
    assert origin["int8_sha256"]["model.int8.onnx"] == _sha(bad_run.run_dir / "model.int8.onnx")
    assert manifest["files"]["model.int8.onnx"]["sha256"] == _sha(run / "model.int8.onnx")
    assert manifest["int8"]["calibration"]["bias_correction"] is False  # QAT trained the biases
    assert "## Quantization-aware training" in (run / "report.md").read_text()
    # the runtime loads the run and classifies with it (ONNX Runtime, no torch needed there)
    from edge_resnet.runtime import Classifier

    img = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    for which in ("int8", "int8-cpu"):
        preds = Classifier.from_run(run, model=which, providers=["CPUExecutionProvider"]).predict(img, top_k=3)
        assert len(preds) == 1 and len(preds[0].labels) == 3 and preds[0].label in load_checkpoint(run / "model.pt").classes


def test_the_ptq_run_is_left_as_it_was(qat: tuple[ExportResult, dict[str, int]], bad_run: ExportResult) -> None:
    _, before = qat
    assert listing(bad_run.run_dir) == before


def test_sensitivity_refuses_the_qat_run(qat: tuple[ExportResult, dict[str, int]]) -> None:
    rc, _out, err = _main(["sensitivity", qat[0].run_dir])
    assert rc == 1 and "fine-tuned weights" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_qat_of_a_qat_run_and_bad_inputs_are_one_line_errors(qat: tuple[ExportResult, dict[str, int]],
                                                            tmp_path: Path) -> None:
    cases = [
        ([qat[0].run_dir], "already a QAT run"),
        ([tmp_path / "missing"], "no run directory"),
        ([qat[0].run_dir.with_name("bad"), "--epochs", "0"], "--epochs must be >= 1"),
        ([qat[0].run_dir.with_name("bad"), "--output", qat[0].run_dir.with_name("bad")], "the PTQ run itself"),
    ]
    for args, fragment in cases:
        rc, _out, err = _main(["qat", *args])
        assert rc == 1 and fragment in err and "Traceback" not in err, (args, err)
    empty = tmp_path / "fp32only"
    model = copy_checkpoint(qat[0].run_dir / "model.pt", empty)  # a checkpoint, never exported
    rc, _out, err = _main(["qat", model.parent])
    assert rc == 1 and "export --int8" in err
    assert not empty.with_name("fp32only-qat").exists()


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
