"""Real TensorRT engines from the tiny model's bundle (needs `tensorrt`, cuda-python and a GPU).

Marked ``tensorrt`` and ``cuda``: tests/conftest.py skips them where `import tensorrt` fails or no GPU
exists (every development machine here). On a machine that has both they build int8, fp16 and fp32
engines with ``build_and_check`` / `edge-resnet build-engine`, compare the engines' logits with ONNX
Runtime on the ONNX they were built from, and exercise reuse, rebuild after the sidecar changes, and
--no-rebuild naming the differing field.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_resnet.deploy import REPORT, build_and_check, verify_engine
from edge_resnet.runtime.backends import OnnxRuntimeBackend
from edge_resnet.runtime.manifest import load_manifest
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.contract.metrics import sqnr_db
from edge_resnet.runtime.validate import ValidationSet
from edge_resnet.export.build_plan import BuildOptions
from edge_resnet.export.engine_key import probe_system, read_sidecar, sidecar_path, strongly_typed_only
from edge_resnet.export.trtexec import TRTEXEC_JETPACK
from tests.export.util import one_line_error, run_cli, sha256

pytestmark = [pytest.mark.tensorrt, pytest.mark.cuda]

# engine vs ONNX Runtime on the same ONNX: (min top-1 agreement, min logit SQNR in dB)
AGREEMENT = {"int8": (0.97, 20.0), "fp16": (0.99, 30.0), "fp32": (0.99, 35.0)}


def _inputs(bundle: Path, n: int | None = None) -> np.ndarray:
    manifest = load_manifest(bundle)
    vs = ValidationSet.load(bundle / "validation.npz")
    return Preprocessor(manifest.preprocessing).normalize(vs.pixels[:n])


def _compare_with_onnxruntime(bundle: Path, engine: Path, precision: str) -> None:
    from edge_resnet.runtime.tensorrt_backend import TensorRTBackend

    key = read_sidecar(engine)
    x = _inputs(bundle)
    reference = OnnxRuntimeBackend(bundle / key.onnx, providers=["CPUExecutionProvider"]).run(x)
    backend = TensorRTBackend(engine)
    try:
        # batches below, inside and above the profile (1..32): padded, direct, split
        outs = [backend.run(x[:1]), backend.run(x[1:8]), backend.run(x[8:40]), backend.run(x[40:])]
    finally:
        backend.close()
    logits = np.concatenate(outs)
    assert logits.shape == reference.shape and logits.dtype == np.float32
    min_agreement, min_sqnr = AGREEMENT[precision]
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    assert agreement >= min_agreement, (precision, agreement)
    assert sqnr_db(reference, logits) >= min_sqnr, (precision, sqnr_db(reference, logits))


@pytest.mark.parametrize("precision", ["int8", "fp16", "fp32"])
def test_build_check_reuse_and_rebuild(precision: str, bundle_src: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(bundle_src, tmp_path / "bundle"))
    options = BuildOptions(precision=precision, batch=(1, 8, 32))
    system = probe_system()
    first = build_and_check(bundle, options)
    assert first.action == "build" and first.result.passed, first.result.failures
    engine = first.engine
    assert engine.parent == bundle and engine.is_file() and not engine.read_bytes().startswith(b"{")
    key = read_sidecar(engine)
    assert key is not None and key.filename() == engine.name
    assert (key.gpu, key.tensorrt, key.precision, key.batch) == (system.gpu, system.tensorrt, precision, (1, 8, 32))
    assert key.onnx_sha256 == sha256(bundle / key.onnx)
    if strongly_typed_only(system.tensorrt):
        assert key.onnx == {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "fp32": "model.fp32.onnx"}[precision]
    report = json.loads((bundle / REPORT).read_text())
    assert report["passed"] is True and report["engine"]["action"] == "build"
    assert report["engine"]["key"]["onnx_sha256"] == key.onnx_sha256
    assert report["engine"]["settings"]["data_transfers"] is True
    assert (bundle / "timing.cache").is_file()
    _compare_with_onnxruntime(bundle, engine, precision)

    # the same request again: the engine is reused, not rebuilt
    mtime = engine.stat().st_mtime_ns
    second = build_and_check(bundle, options)
    assert second.action == "reuse" and second.engine == engine and engine.stat().st_mtime_ns == mtime

    # the sidecar says another TensorRT built it: --no-rebuild refuses naming the field, default rebuilds
    raw = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**raw, "tensorrt": "7.0.0"}))
    one_line_error(*run_cli("build-engine", str(bundle), "--precision", precision, "--batch", "1", "8", "32",
                            "--no-rebuild"), engine.name, f"tensorrt {system.tensorrt} here, 7.0.0 in the engine")
    one_line_error(*run_cli("verify", "--bundle", str(bundle), "--engine", engine.name, "--no-rebuild"),
                   f"tensorrt {system.tensorrt} here, 7.0.0 in the engine")
    third = build_and_check(bundle, options)
    assert third.action == "rebuild" and third.result.passed
    assert read_sidecar(engine).tensorrt == system.tensorrt

    # verify --engine on the rebuilt engine: its key matches, accuracy checked again
    rc, out, err = run_cli("verify", "--bundle", str(bundle), "--engine", engine.name)
    assert rc == 0, err
    assert "PASS" in out and verify_engine(bundle, engine).action == "reuse"


def test_build_engine_cli_from_the_archive(bundle_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-resnet build-engine <bundle>.tar.gz`: unpacked safely, built, checked, exit 0."""
    monkeypatch.chdir(tmp_path)
    archive = Path(shutil.copy2(bundle_src.with_name(bundle_src.name + ".tar.gz"), tmp_path / "b.tar.gz"))
    rc, out, err = run_cli("build-engine", str(archive), "--batch", "1", "1", "8")
    assert rc == 0, err
    assert out.splitlines()[0].startswith(f"engine {tmp_path / bundle_src.name}/model.int8.b1-1-8.") and "(build)" in out
    assert json.loads((tmp_path / bundle_src.name / REPORT).read_text())["passed"] is True


def test_implicit_int8_from_the_calibration_cache(bundle_src: Path, tmp_path: Path) -> None:
    """8.5-10.x: INT8 from calib.cache on the FP32 graph (the DLA path, here on the GPU)."""
    system = probe_system()
    if strongly_typed_only(system.tensorrt):
        pytest.skip(f"TensorRT {system.tensorrt} has no implicit INT8")
    bundle = Path(shutil.copytree(bundle_src, tmp_path / "bundle"))
    check = build_and_check(bundle, BuildOptions(implicit=True, batch=(1, 8, 32)))
    assert check.result.passed, check.result.failures
    key = read_sidecar(check.engine)
    assert (key.int8_mode, key.onnx) == ("implicit", "model.fp32.onnx") and "int8-implicit" in check.engine.name
    _compare_with_onnxruntime(bundle, check.engine, "int8")


def test_build_engine_sh_with_the_real_trtexec(bundle_src: Path, tmp_path: Path) -> None:
    """The bundle's script with the installed trtexec; edge-resnet then reuses and verifies its engine."""
    trtexec = shutil.which("trtexec") or (TRTEXEC_JETPACK if os.access(TRTEXEC_JETPACK, os.X_OK) else None)
    if trtexec is None:
        pytest.skip("no trtexec on PATH or at /usr/src/tensorrt/bin/trtexec")
    bundle = Path(shutil.copytree(bundle_src, tmp_path / "bundle"))
    done = subprocess.run(["bash", str(bundle / "build_engine.sh"), "int8"], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TRTEXEC": trtexec})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    engines = sorted(bundle.glob("*.engine"))
    assert len(engines) == 1 and read_sidecar(engines[0]) is not None
    rc, out, err = run_cli("verify", "--bundle", str(bundle), "--engine", engines[0].name, "--no-rebuild")
    assert rc == 0, err
    check = build_and_check(bundle, BuildOptions(), rebuild=False)
    assert check.action == "reuse" and check.engine == engines[0]
