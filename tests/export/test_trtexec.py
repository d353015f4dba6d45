"""The trtexec recipe (export/trtexec.py): exact arguments per TensorRT version and DLA setting, the
printed command lines, and `edge-resnet trtexec-cmd` on a real run directory."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from edge_resnet.export.build_plan import CALIB_CACHE, ONNX_FILES, BuildOptions, plan_build
from edge_resnet.contract.engine import engine_filename
from edge_resnet.export.trtexec import command_line, retagged_cache_name, trtexec_args
from tests.export.util import one_line_error, run_cli

ALL = frozenset({*ONNX_FILES.values(), CALIB_CACHE})
CHW = (3, 32, 32)
PRECISION_FLAGS = {"--int8", "--fp16", "--best", "--noTF32", "--stronglyTyped"}
REMOVED_IN_11 = ("--int8", "--fp16", "--best", "--calib")


def _args(trt: str, **options) -> list[str]:
    plan = plan_build(trt, BuildOptions(**options), ALL)
    return trtexec_args(plan, "input", CHW, "E.engine")


SHAPES = ["--minShapes=input:1x3x32x32", "--optShapes=input:1x3x32x32", "--maxShapes=input:32x3x32x32"]


def _stop(trt: str) -> str:
    """8.5's trtexec has only --buildOnly (sampleOptions.cpp at 8.5.2), 10+ only --skipInference."""
    return "--buildOnly" if trt.startswith("8.5") else "--skipInference"


@pytest.mark.parametrize("trt", ["8.5.2", "8.6.1", "10.3.0", "10.13.0"])
def test_weakly_typed_int8_is_the_qdq_graph_with_int8_and_fp16(trt: str) -> None:
    stop = _stop(trt)
    assert _args(trt) == ["--onnx=model.int8.onnx", "--saveEngine=E.engine", *SHAPES, "--int8", "--fp16",
                          "--timingCacheFile=timing.cache", stop]
    assert _args(trt, precision="fp16") == ["--onnx=model.fp32.onnx", "--saveEngine=E.engine", *SHAPES, "--fp16",
                                            "--timingCacheFile=timing.cache", stop]
    assert _args(trt, precision="fp32") == ["--onnx=model.fp32.onnx", "--saveEngine=E.engine", *SHAPES,
                                            "--timingCacheFile=timing.cache", stop]


@pytest.mark.parametrize("trt", ["8.5.2", "8.6.1", "10.3.0", "10.7.0"])
def test_weakly_typed_dla_int8_is_implicit_from_the_cache(trt: str) -> None:
    """DLA on 8.x/10.x (up to 10.7): model.int8.implicit.onnx, --int8 --calib=<cache>, --useDLACore=N
    --allowGPUFallback, a fixed batch (the profile's opt)."""
    stop = _stop(trt)
    assert _args(trt, dla_core=1, batch=(1, 2, 8)) == [
        "--onnx=model.int8.implicit.onnx", "--saveEngine=E.engine", "--minShapes=input:2x3x32x32",
        "--optShapes=input:2x3x32x32", "--maxShapes=input:2x3x32x32", "--int8", "--fp16", "--calib=calib.cache",
        "--useDLACore=1", "--allowGPUFallback", "--timingCacheFile=timing.cache", stop]
    assert _args(trt, precision="fp16", dla_core=0, batch=(1, 1, 1)) == [
        "--onnx=model.fp32.onnx", "--saveEngine=E.engine", "--minShapes=input:1x3x32x32",
        "--optShapes=input:1x3x32x32", "--maxShapes=input:1x3x32x32", "--fp16", "--useDLACore=0",
        "--allowGPUFallback", "--timingCacheFile=timing.cache", stop]
    # implicit INT8 on the GPU
    plan = plan_build(trt, BuildOptions(implicit=True), ALL)
    assert trtexec_args(plan, "input", CHW, "E.engine", calib_cache="calib.trt8502.cache")[:7] == [
        "--onnx=model.int8.implicit.onnx", "--saveEngine=E.engine", *SHAPES, "--int8", "--fp16"]
    assert "--calib=calib.trt8502.cache" in trtexec_args(plan, "input", CHW, "E.engine", "calib.trt8502.cache")


@pytest.mark.parametrize("trt", ["11.0.0", "11.4.1"])
def test_strongly_typed_versions_take_no_precision_flags(trt: str) -> None:
    assert _args(trt) == ["--onnx=model.int8.onnx", "--saveEngine=E.engine", *SHAPES,
                          "--timingCacheFile=timing.cache", "--skipInference"]
    assert _args(trt, precision="fp16")[0] == "--onnx=model.fp16.onnx"
    assert _args(trt, precision="fp32")[0] == "--onnx=model.fp32.onnx"
    # DLA (11.4.1+): a fixed batch (the profile's opt), the Q/DQ graph, no calibration cache
    if trt == "11.4.1":
        assert _args(trt, dla_core=0, batch=(1, 4, 8)) == [
            "--onnx=model.int8.onnx", "--saveEngine=E.engine", "--minShapes=input:4x3x32x32",
            "--optShapes=input:4x3x32x32", "--maxShapes=input:4x3x32x32", "--useDLACore=0", "--allowGPUFallback",
            "--timingCacheFile=timing.cache", "--skipInference"]
    # never, in any combination the plan accepts
    for precision in ("int8", "fp16", "fp32"):
        for dla in (None, 0, 1) if trt == "11.4.1" else (None,):
            if dla is not None and precision == "fp32":
                continue
            for extra in ({}, {"workspace_mib": 64, "opt_level": 2, "batch": (2, 4, 8)}):
                args = _args(trt, precision=precision, dla_core=dla, **extra)
                assert not [a for a in args if a.split("=")[0] in REMOVED_IN_11 or a in PRECISION_FLAGS], args


def test_workspace_opt_level_and_timing_cache() -> None:
    args = _args("10.3", workspace_mib=1024, opt_level=4, batch=(1, 8, 64), timing_cache="cache/t.bin")
    assert args == ["--onnx=model.int8.onnx", "--saveEngine=E.engine", "--minShapes=input:1x3x32x32",
                    "--optShapes=input:8x3x32x32", "--maxShapes=input:64x3x32x32", "--int8", "--fp16",
                    "--memPoolSize=workspace:1024", "--timingCacheFile=cache/t.bin", "--builderOptimizationLevel=4",
                    "--skipInference"]
    assert _args("8.5.2", opt_level=4)[-1] == "--buildOnly"
    # 8.5 has no builder optimization level: the flag is dropped, not passed to a trtexec that rejects it
    assert not any(a.startswith("--builderOptimizationLevel") for a in _args("8.5.2", opt_level=4))
    assert "--builderOptimizationLevel=4" in _args("8.6.1", opt_level=4)
    assert not any(a.startswith("--timingCacheFile") for a in _args("10.3", timing_cache=None))


def test_command_line_names_the_engine_by_its_key() -> None:
    plan = plan_build("10.3.0", BuildOptions(), ALL)
    line = command_line(plan, "input", CHW, "NVIDIA Jetson AGX Orin Developer Kit", trtexec="/usr/src/tensorrt/bin/trtexec")
    engine = engine_filename("model", "int8", (1, 1, 32), None, "qdq", "10.3.0", "NVIDIA Jetson AGX Orin Developer Kit")
    assert engine == "model.int8.b1-1-32.trt10.3.0.nvidia-jetson-agx-orin-developer-kit.engine"
    assert shlex.split(line) == ["/usr/src/tensorrt/bin/trtexec", *trtexec_args(plan, "input", CHW, engine)]
    # implicit INT8: first the cache retagged for this TensorRT, then trtexec reading the retagged copy
    plan = plan_build("8.5.2", BuildOptions(dla_core=0), ALL)
    sed, trt = command_line(plan, "input", CHW, "Orin").splitlines()
    assert sed == "sed '1s/^TRT-[0-9]*-/TRT-8502-/' calib.cache > calib.trt8502.cache"
    assert retagged_cache_name(8502) == "calib.trt8502.cache"
    engine = engine_filename("model", "int8", (1, 1, 1), 0, "implicit", "8.5.2", "Orin")
    assert engine == "model.int8-implicit.dla0.b1-1-1.trt8.5.2.orin.engine"
    assert shlex.split(trt) == ["trtexec", *trtexec_args(plan, "input", CHW, engine, "calib.trt8502.cache")]


# ---------------------------------------------------------------- edge-resnet trtexec-cmd


def _printed_command(stdout: str) -> list[str]:
    lines = [ln for ln in stdout.splitlines() if not ln.startswith(("#", "cd ", "sed "))]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0])


@pytest.mark.parametrize(("trt", "extra", "onnx", "flags"), [
    ("8.5", [], "model.int8.onnx", ["--int8", "--fp16"]),
    ("8.6", ["--opt-level", "2"], "model.int8.onnx", ["--int8", "--fp16"]),
    ("10.3", [], "model.int8.onnx", ["--int8", "--fp16"]),
    ("10.3", ["--precision", "fp16"], "model.fp32.onnx", ["--fp16"]),
    ("10.3", ["--dla", "0"], "model.int8.implicit.onnx", ["--int8", "--fp16", "--calib=calib.trt100300.cache",
                                                          "--useDLACore=0", "--allowGPUFallback"]),
    ("11.4", [], "model.int8.onnx", []),
    ("11.4", ["--precision", "fp16"], "model.fp16.onnx", []),
    ("11.4.1", ["--dla", "1"], "model.int8.onnx", ["--useDLACore=1", "--allowGPUFallback"]),
])
def test_trtexec_cmd_prints_the_recipe(engine_run: Path, trt: str, extra: list[str], onnx: str, flags: list[str],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli("trtexec-cmd", str(engine_run), "--trt", trt, "--gpu", "Jetson AGX Orin", *extra)
    assert rc == 0, err
    argv = _printed_command(out)
    assert argv[0] == "trtexec" and argv[1] == f"--onnx={onnx}"
    assert [a for a in argv if not a.startswith(("--onnx", "--saveEngine", "--min", "--opt", "--max", "--timing",
                                                 "--skip", "--build"))] == ["trtexec", *flags]
    assert argv[-1] == ("--buildOnly" if trt == "8.5" else "--skipInference")
    assert argv[2].startswith("--saveEngine=model.") and argv[2].endswith(".jetson-agx-orin.engine")
    assert f"cd {engine_run}" in out.splitlines()
    assert ("strongly typed (no precision flags)" in out) == trt.startswith("11")
    if "--dla" in extra and not trt.startswith("11"):
        assert "sed '1s/^TRT-[0-9]*-/TRT-100300-/' calib.cache > calib.trt100300.cache" in out
        assert "# DLA INT8 builds from calib.cache (implicit quantization), as DLA requires" in out
    if "--opt-level" in extra:
        assert "--builderOptimizationLevel=2" in argv
    assert tmp_path.exists() and not any(tmp_path.iterdir())  # prints, writes nothing


def test_trtexec_cmd_errors(engine_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "11.4", "--implicit"), "no implicit INT8")
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "10.3", "--precision", "fp32", "--dla", "0"),
                   "DLA runs FP16 and INT8 only")
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "ten"), "'ten' is not a TensorRT version")
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "8.2"), "older than this tool supports")
    # no DLA on the board, or none in that TensorRT: refused before any line is printed
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "10.3", "--dla", "0", "--gpu",
                            "NVIDIA Jetson Orin Nano Developer Kit"), "Jetson Orin Nano has no DLA", "drop --dla")
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "10.13.3", "--dla", "0", "--gpu",
                            "Jetson AGX Thor"), "TensorRT 10.13.3 has no DLA support")
    one_line_error(*run_cli("trtexec-cmd", str(engine_run), "--trt", "11.4", "--dla", "0"),
                   "TensorRT 11.4.0 has no DLA support on Jetson")
    one_line_error(*run_cli("trtexec-cmd", str(tmp_path / "nope"), "--trt", "10.3"), "no manifest.json")
    assert not any(tmp_path.iterdir())
