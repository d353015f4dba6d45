"""Real TensorRT engines from the committed bundle (needs `tensorrt`, cuda-python and a GPU; no torch).

Marked ``tensorrt`` and ``cuda``: tests/conftest.py skips them where `import tensorrt` fails or no GPU
exists (every development machine here), deciding both without torch. They use the prebuilt bundle
of tests/fixtures/bundle, so a Jetson with only JetPack's TensorRT, numpy and ONNX Runtime runs them:
``python -m pytest tests/export/test_tensorrt_engine.py`` (tests/export/test_torch_free.py runs this
module with torch blocked to keep it so). On such a machine they build int8, fp16 and fp32 engines
with ``build_and_check`` / `edge-resnet build-engine`, compare the engines' logits with ONNX Runtime
on the ONNX they were built from, exercise reuse, rebuild after the sidecar changes and --no-rebuild
naming the differing field, check calib.cache against the tensors TensorRT's parser really creates,
and the DLA and timing-cache guards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
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
from edge_resnet.contract.engine import read_sidecar, sidecar_path, strongly_typed_only
from edge_resnet.environment import probe_system
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
    backend = TensorRTBackend(engine, dla_core=key.dla_core)
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
def test_build_check_reuse_and_rebuild(precision: str, prebuilt_bundle: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(prebuilt_bundle, tmp_path / "bundle"))
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


def test_build_engine_cli_from_the_archive(prebuilt_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-resnet build-engine <bundle>.tar.gz`: unpacked safely, built, checked, exit 0."""
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(prebuilt_bundle, arcname=prebuilt_bundle.name)
    shutil.rmtree(prebuilt_bundle)
    rc, out, err = run_cli("build-engine", str(archive), "--batch", "1", "1", "8")
    assert rc == 0, err
    unpacked = tmp_path / prebuilt_bundle.name
    assert out.splitlines()[0].startswith(f"engine {unpacked}/model.int8.b1-1-8.") and "(build)" in out
    assert json.loads((unpacked / REPORT).read_text())["passed"] is True


def test_implicit_int8_from_the_calibration_cache(prebuilt_bundle: Path, tmp_path: Path) -> None:
    """8.5-10.x: INT8 from calib.cache on the FP32 graph (the DLA path, here on the GPU)."""
    system = probe_system()
    if strongly_typed_only(system.tensorrt):
        pytest.skip(f"TensorRT {system.tensorrt} has no implicit INT8")
    bundle = Path(shutil.copytree(prebuilt_bundle, tmp_path / "bundle"))
    check = build_and_check(bundle, BuildOptions(implicit=True, batch=(1, 8, 32)))
    assert check.result.passed, check.result.failures
    key = read_sidecar(check.engine)
    assert (key.int8_mode, key.onnx) == ("implicit", "model.int8.implicit.onnx") and "int8-implicit" in check.engine.name
    _compare_with_onnxruntime(bundle, check.engine, "int8")


def test_build_engine_sh_with_the_real_trtexec(prebuilt_bundle: Path, tmp_path: Path) -> None:
    """The bundle's script with the installed trtexec; edge-resnet then reuses and verifies its engine."""
    trtexec = shutil.which("trtexec") or (TRTEXEC_JETPACK if os.access(TRTEXEC_JETPACK, os.X_OK) else None)
    if trtexec is None:
        pytest.skip("no trtexec on PATH or at /usr/src/tensorrt/bin/trtexec")
    bundle = Path(shutil.copytree(prebuilt_bundle, tmp_path / "bundle"))
    done = subprocess.run(["bash", str(bundle / "build_engine.sh"), "int8"], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TRTEXEC": trtexec})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    engines = sorted(bundle.glob("*.engine"))
    assert len(engines) == 1 and read_sidecar(engines[0]) is not None
    rc, out, err = run_cli("verify", "--bundle", str(bundle), "--engine", engines[0].name, "--no-rebuild")
    assert rc == 0, err
    check = build_and_check(bundle, BuildOptions(), rebuild=False)
    assert check.action == "reuse" and check.engine == engines[0]


def test_calib_cache_names_every_tensor_the_parser_creates(prebuilt_bundle: Path) -> None:
    """The real ONNX parser on model.int8.implicit.onnx: every FP32 activation it creates has a range in
    calib.cache, so no layer is left outside INT8 for want of one. On model.fp32.onnx (a Gemm) the
    parser's own tensors, which no cache written beforehand can name, show why the implicit file exists."""
    import tensorrt as trt

    from edge_resnet.calibration.files import read_trt_cache

    _, scales = read_trt_cache((prebuilt_bundle / "calib.cache").read_text())

    def float_tensors(onnx_file: str) -> set[str]:
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        major = int(trt.__version__.split(".")[0])
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse_from_file(str(prebuilt_bundle / onnx_file))
        names = {network.get_input(i).name for i in range(network.num_inputs)}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.CONSTANT:
                continue  # weights and shape constants (a Gemm's weight constant is caught by its matmul)
            for j in range(layer.num_outputs):
                out = layer.get_output(j)
                if out.dtype == trt.DataType.FLOAT and not out.is_shape_tensor:
                    names.add(out.name)
        return names

    implicit = float_tensors("model.int8.implicit.onnx")
    assert implicit <= set(scales), implicit - set(scales)
    unnamed = [n for n in float_tensors("model.fp32.onnx") - set(scales) if n.startswith("(Unnamed Layer")]
    assert unnamed  # the Gemm's matrix multiply output: a name TensorRT makes up while parsing


def test_dla_on_a_device_without_one_is_refused_early(prebuilt_bundle: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No DLA here (a discrete GPU; Orin Nano; Thor): one error line naming it, before any build."""
    import tensorrt as trt

    cores = trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores
    if cores > 0:
        pytest.skip(f"this device has {cores} DLA cores")
    monkeypatch.chdir(tmp_path)
    one_line_error(*run_cli("build-engine", str(prebuilt_bundle), "--dla", "0"), "no DLA", "drop --dla")
    assert not list(prebuilt_bundle.glob("*.engine"))


def test_a_corrupt_timing_cache_does_not_stop_the_build(prebuilt_bundle: Path) -> None:
    """create_timing_cache returns None for bytes it cannot read; the build goes on from an empty cache
    and writes a valid one (as trtexec does, samples/utils/timingCache.cpp)."""
    (prebuilt_bundle / "timing.cache").write_bytes(b"not a timing cache" * 64)
    check = build_and_check(prebuilt_bundle, BuildOptions(precision="fp16", batch=(1, 1, 8)))
    assert check.result.passed
    assert (prebuilt_bundle / "timing.cache").read_bytes()[:18] != b"not a timing cache"
