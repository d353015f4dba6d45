"""How each TensorRT version builds each precision (export/build_plan.py), the one decision the Python
builder and build_engine.sh both follow; and the combinations it refuses."""

from __future__ import annotations

import pytest

from edge_resnet.errors import ConfigError
from edge_resnet.export.build_plan import CALIB_CACHE, ONNX_FILES, TIMING_CACHE, BuildOptions, plan_build

ALL = frozenset({*ONNX_FILES.values(), CALIB_CACHE, "model.int8.cpu.onnx", "manifest.json"})
WEAK = ["8.5.2", "8.6.1", "10.3.0", "10.13.2"]
STRONG = ["11.0.0", "11.4.1"]


@pytest.mark.parametrize("trt", WEAK)
def test_weakly_typed_versions(trt: str) -> None:
    """8.5/8.6/10.x: INT8 = the Q/DQ graph + INT8 (+FP16 for layers without INT8 kernels); FP16 = the
    FP32 graph + FP16; FP32 = the FP32 graph, no flags."""
    p = plan_build(trt, BuildOptions(), ALL)
    assert (p.onnx, p.flags, p.int8_mode, p.calib_cache, p.strongly_typed) == (
        "model.int8.onnx", ("INT8", "FP16"), "qdq", None, False)
    assert p.explicit_batch_flag == trt.startswith("8.")
    assert p.batch == (1, 1, 32) and p.timing_cache == TIMING_CACHE and p.dla_core is None
    p = plan_build(trt, BuildOptions(precision="fp16"), ALL)
    assert (p.onnx, p.flags, p.int8_mode) == ("model.fp32.onnx", ("FP16",), None)
    p = plan_build(trt, BuildOptions(precision="fp32"), ALL)
    assert (p.onnx, p.flags, p.int8_mode) == ("model.fp32.onnx", (), None)
    # implicit INT8: the bias-corrected FP32 graph made for it, and calib.cache
    p = plan_build(trt, BuildOptions(implicit=True), ALL)
    assert (p.onnx, p.flags, p.int8_mode, p.calib_cache) == ("model.int8.implicit.onnx", ("INT8", "FP16"),
                                                             "implicit", "calib.cache")


@pytest.mark.parametrize("trt", STRONG)
def test_strongly_typed_versions_never_ask_for_removed_flags(trt: str) -> None:
    """11.x: precision comes from the graph; no builder precision flags, no calibration cache."""
    for precision, onnx in (("int8", "model.int8.onnx"), ("fp16", "model.fp16.onnx"), ("fp32", "model.fp32.onnx")):
        p = plan_build(trt, BuildOptions(precision=precision), ALL)
        assert (p.onnx, p.flags, p.calib_cache, p.strongly_typed, p.explicit_batch_flag) == (
            onnx, (), None, True, False)
        assert p.int8_mode == ("qdq" if precision == "int8" else None)
    if trt != "11.4.1":
        return  # DLA returned in 11.4.1 (test_dla_exists_only_where_nvidia_ships_it)
    for precision in ("int8", "fp16"):
        p = plan_build(trt, BuildOptions(precision=precision, dla_core=1), ALL)
        assert p.flags == ("GPU_FALLBACK",) and p.calib_cache is None and p.dla_core == 1
        assert p.onnx == ONNX_FILES[precision]


@pytest.mark.parametrize("trt", ["8.5.2", "8.6.1", "10.3.0", "10.7.0"])
def test_dla_on_weakly_typed_versions(trt: str) -> None:
    """DLA INT8 needs the calibration cache (implicit quantization) on 8.x/10.x, with GPU fallback, and a
    fixed batch (the profile's opt)."""
    p = plan_build(trt, BuildOptions(dla_core=0, batch=(1, 4, 16)), ALL)
    assert (p.onnx, p.flags, p.int8_mode, p.calib_cache, p.dla_core, p.batch) == (
        "model.int8.implicit.onnx", ("INT8", "FP16", "GPU_FALLBACK"), "implicit", "calib.cache", 0, (4, 4, 4))
    assert any("calib.cache" in n for n in p.notes) and any("fixed batch" in n for n in p.notes)
    p = plan_build(trt, BuildOptions(precision="fp16", dla_core=1, batch=(2, 2, 2)), ALL)
    assert (p.onnx, p.flags, p.batch, p.notes) == ("model.fp32.onnx", ("FP16", "GPU_FALLBACK"), (2, 2, 2), ())


@pytest.mark.parametrize(("trt", "message"), [
    ("10.8.0", "TensorRT 10.8.0 has no DLA support (10.7 was the last 10.x with DLA)"),
    ("10.13.3", "TensorRT 10.13.3 has no DLA support"),
    ("11.0", "TensorRT 11.0.0 has no DLA support on Jetson (it returned in 11.4.1"),
    ("11.3.1", "TensorRT 11.3.1 has no DLA support on Jetson"),
    ("11.4.0", "TensorRT 11.4.0 has no DLA support on Jetson"),  # 11.4.0: DLA on Windows on ARM only
    # 11.5.0 "does not support JetPack"; its DLA is a Windows-on-ARM beta (TensorRT 11.5.0, Working with DLA)
    ("11.5.0", "TensorRT 11.5.0 does not support JetPack, so it has no Jetson DLA"),
    ("12.0.1", "TensorRT 12.0.1 does not support JetPack"),
    ("10.16.2", "TensorRT 10.16.2 has no DLA support"),  # JetPack 7.2's
])
def test_dla_exists_only_where_nvidia_ships_it(trt: str, message: str) -> None:
    """NVIDIA's "Working with DLA" (TensorRT 11.4.1): 10.7 was the last 10.x with DLA, 11.0-11.3 have none,
    11.4.1 has it on Jetson AGX Orin with JetPack 7.2.2+. Refused before anything is built, GPU builds
    of those versions unaffected."""
    for precision in ("int8", "fp16"):
        with pytest.raises(ConfigError) as e:
            plan_build(trt, BuildOptions(precision=precision, dla_core=0), ALL)
        assert message in str(e.value) and "drop --dla to build for the GPU" in str(e.value)
        assert plan_build(trt, BuildOptions(precision=precision), ALL).dla_core is None
    assert plan_build("10.7.0", BuildOptions(dla_core=1), ALL).dla_core == 1
    assert plan_build("11.4.1", BuildOptions(dla_core=1), ALL).dla_core == 1


@pytest.mark.parametrize(("device", "trt", "jetpack", "message"), [
    ("NVIDIA Jetson Orin Nano Developer Kit", "10.3.0", "6.2", "Jetson Orin Nano has no DLA"),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "8.5.2", None, "Orin Nano has no DLA"),
    ("NVIDIA Jetson AGX Thor Developer Kit", "10.7.0", None, "Jetson Thor has no DLA"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "11.4.1", "7.1", "runs DLA only with JetPack 7.2.2 or later; this "
                                                               "device has JetPack 7.1"),
    ("NVIDIA Jetson Orin NX Engine", "11.4.1", "7.2.2", "runs DLA on Jetson AGX Orin only"),
])
def test_dla_refused_for_boards_without_one(device: str, trt: str, jetpack: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_build(trt, BuildOptions(dla_core=0), ALL, device=device, jetpack=jetpack)
    assert plan_build(trt, BuildOptions(), ALL, device=device, jetpack=jetpack).dla_core is None


def test_dla_allowed_where_it_exists() -> None:
    for device, trt, jetpack in (("NVIDIA Jetson AGX Orin Developer Kit", "10.3.0", "6.2"),
                                 ("NVIDIA Jetson Xavier NX Developer Kit", "8.5.2", "5.1.2"),
                                 ("NVIDIA Jetson AGX Orin Developer Kit", "11.4.1", "7.2.2"),
                                 ("a custom carrier board", "10.3.0", None), (None, "8.6.2", None)):
        assert plan_build(trt, BuildOptions(dla_core=0), ALL, device=device, jetpack=jetpack).dla_core == 0


def test_builder_optimization_level_exists_from_8_6() -> None:
    opts = BuildOptions(opt_level=5, workspace_mib=256)
    p = plan_build("8.5.2", opts, ALL)
    assert p.opt_level is None and p.notes == ("TensorRT 8.5.2 has no builder optimization level; ignoring 5",)
    assert p.workspace_mib == 256
    for trt in ("8.6.1", "10.3.0", "11.4.1"):
        assert plan_build(trt, opts, ALL).opt_level == 5
    assert plan_build("10.3", BuildOptions(timing_cache=None), ALL).timing_cache is None


def test_version_strings() -> None:
    assert plan_build("10.3.0.30", BuildOptions(), ALL).tensorrt == "10.3.0"
    assert plan_build("8.5", BuildOptions(), ALL).tensorrt == "8.5.0"


@pytest.mark.parametrize(("trt", "options", "available", "message"), [
    ("11.4.1", BuildOptions(implicit=True), ALL, "TensorRT 11.4.1 has no implicit INT8"),
    ("11.0", BuildOptions(precision="fp16"), ALL - {"model.fp16.onnx"},
     "building fp16 with TensorRT 11.0.0 needs model.fp16.onnx, which the run does not have; re-export with "
     "`edge-resnet export --fp16`"),
    ("10.3", BuildOptions(), ALL - {"model.int8.onnx"}, "needs model.int8.onnx"),
    ("10.3", BuildOptions(implicit=True), ALL - {"calib.cache"}, "needs calib.cache"),
    ("8.5", BuildOptions(dla_core=0), ALL - {"calib.cache"}, "`edge-resnet export --int8`"),
    ("10.3", BuildOptions(precision="fp32"), ALL - {"model.fp32.onnx"}, "needs model.fp32.onnx"),
    ("10.3", BuildOptions(precision="fp32", dla_core=0), ALL, "DLA runs FP16 and INT8 only"),
    ("11.4", BuildOptions(precision="fp32", dla_core=1), ALL, "DLA runs FP16 and INT8 only"),
    ("10.3", BuildOptions(batch=(0, 1, 1)), ALL, "1 <= min <= opt <= max, got 0/1/1"),
    ("10.3", BuildOptions(batch=(2, 1, 4)), ALL, "got 2/1/4"),
    ("10.3", BuildOptions(batch=(1, 8, 4)), ALL, "got 1/8/4"),
    ("10.3", BuildOptions(precision="int4"), ALL, "precision 'int4' is not one of fp32, fp16, int8"),
    ("10.3", BuildOptions(precision="fp16", implicit=True), ALL, "--implicit is an INT8 mode"),
    ("10.3", BuildOptions(workspace_mib=0), ALL, "workspace must be at least 1 MiB"),
    ("10.3", BuildOptions(dla_core=-1), ALL, "DLA core must be"),
    ("10.3", BuildOptions(opt_level=6), ALL, "optimization level must be 0-5"),
    ("8.4.3", BuildOptions(), ALL, "TensorRT 8.4.3 is older than this tool supports"),
    ("7.1", BuildOptions(), ALL, "older than this tool supports"),
])
def test_refused_combinations(trt: str, options: BuildOptions, available: frozenset[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        plan_build(trt, options, available)
    assert message in str(e.value)
