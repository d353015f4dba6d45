"""What an engine is specific to (edge_resnet/contract/engine.py; the system probe in edge_resnet/environment.py): TensorRT version codes, the system probe, the
key's file name and sidecar, and the reuse/build/rebuild decision.

No TensorRT here: the decision is exercised with real engine-sized files and sidecars written by
``write_sidecar`` (and, in test_build_script.py, by build_engine.sh itself).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from edge_resnet.calibration.files import read_trt_cache, trt_cache_header, trt_cache_text
from edge_resnet.errors import EdgeResNetError
from edge_resnet import environment as env
from edge_resnet.contract.engine import (
    KEY_FORMAT,
    Decision,
    EngineKey,
    System,
    decide,
    engine_filename,
    gpu_slug,
    read_sidecar,
    short_version,
    sidecar_path,
    strongly_typed_only,
    version_code,
    version_from_code,
    version_tuple,
    write_sidecar,
)
from edge_resnet.environment import parse_jetpack_version, parse_tegra_release
from edge_resnet.export.trtexec import retag_cache

SHA = "ab" * 32
ORIN = System(gpu="NVIDIA Jetson AGX Orin Developer Kit", compute_capability="8.7", tensorrt="10.3.0",
              jetpack="6.2", l4t="36.4.3")


def _key(**changes) -> EngineKey:
    base = EngineKey.for_system(ORIN, precision="int8", batch=(1, 1, 32), dla_core=None, int8_mode="qdq",
                                onnx="model.int8.onnx", onnx_sha256=SHA)
    return replace(base, **changes)


# ---------------------------------------------------------------- TensorRT version numbers


@pytest.mark.parametrize(("version", "code"), [
    ("8.5.2", 8502), ("8.5.2.2", 8502), ("8.6.1", 8601), ("10.3.0", 100300), ("10.3.0.30", 100300),
    ("10.13.2", 101302), ("11.4.1", 110401), ("11.0", 110000), ("8.5", 8500),
])
def test_version_code_is_nv_tensorrt_version(version: str, code: int) -> None:
    """major*1000+minor*100+patch before 10, major*10000+... from 10 (NV_TENSORRT_VERSION, as trtexec's
    banner and calibration-cache headers print it); the build number is dropped."""
    assert version_code(version) == code
    assert version_from_code(code) == short_version(version)
    assert version_code(version_from_code(code)) == code


def test_version_round_trip_over_the_supported_range() -> None:
    for major in (8, 10, 11, 12):
        for minor in range(0, 16):
            for patch in (0, 1, 9, 30):
                if major == 8 and minor > 9 or patch > 99:
                    continue
                v = f"{major}.{minor}.{patch}"
                assert version_from_code(version_code(v)) == v


def test_version_parsing() -> None:
    assert version_tuple("10.3.0.30") == (10, 3, 0)
    assert version_tuple(" 8.5 ") == (8, 5, 0)
    assert version_tuple("11") == (11, 0, 0)
    assert short_version("10.3.0.30") == "10.3.0"
    for bad in ("", "ten", "v10.3", "10.x", "10..3"):
        with pytest.raises(EdgeResNetError, match="is not a TensorRT version"):
            version_tuple(bad)
    assert not strongly_typed_only("8.5.2") and not strongly_typed_only("10.13.0")
    assert strongly_typed_only("11.0") and strongly_typed_only("11.4.1")


@pytest.mark.parametrize("code", [8502, 8601, 100300, 110401])
def test_calibration_cache_retag_changes_only_the_header(code: int) -> None:
    """The cache our export writes (calibration/files.py) retagged for another TensorRT: the header names
    ``code``, every range is bit-identical (read back with calibration.files.read_trt_cache)."""
    amax = {"input": 2.6, "conv1.out": 7.25, "layer1.0.add": 11.0, "fc.in": 0.031}
    for written_for in ("8.5.2", "8.6.2", "10.3.0", "10.13.3"):
        text = trt_cache_text(amax, written_for)
        header, scales = read_trt_cache(text)
        new_header, new_scales = read_trt_cache(retag_cache(text, code))
        assert header == trt_cache_header(written_for) == f"TRT-{version_code(written_for)}-EntropyCalibration2"
        assert new_header == f"TRT-{code}-EntropyCalibration2"
        assert new_scales == scales and list(new_scales) == list(amax)
        assert retag_cache(text, code).splitlines()[1:] == text.splitlines()[1:]
    with pytest.raises(ValueError, match="not a TensorRT calibration cache"):
        retag_cache("input: 3c6df690\n", code)


# ---------------------------------------------------------------- the running system


def test_parse_tegra_release_and_jetpack() -> None:
    assert parse_tegra_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                               "DATE: Wed Jan  8 01:49:37 UTC 2025") == "36.4.3"
    assert parse_tegra_release("# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref") == "35.2.1"
    assert parse_tegra_release("garbage") is None
    assert parse_jetpack_version("6.2+b77") == "6.2"
    assert parse_jetpack_version("5.1.1-b56") == "5.1.1"
    assert parse_jetpack_version("") is None


def test_gpu_slug() -> None:
    assert gpu_slug("NVIDIA Jetson AGX Orin Developer Kit") == "nvidia-jetson-agx-orin-developer-kit"
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_slug("  Orin (nvgpu)  ") == "orin-nvgpu"
    assert gpu_slug(None) == gpu_slug("") == gpu_slug("---") == "unknown-gpu"


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_probe_system_on_a_jetson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L4T from nv_tegra_release, the board from the device tree (NUL-terminated, as the kernel writes
    it), JetPack from dpkg-query and the compute capability from nvidia-smi (stand-ins on PATH)."""
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n")
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir, "dpkg-query", 'echo -n "6.2+b77"\n')
    _stand_in(bin_dir, "nvidia-smi", 'case "$*" in *compute_cap*) echo 8.7 ;; *name*) echo Orin ;; esac\n')
    monkeypatch.setattr(env, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    monkeypatch.setattr(env, "DEVICE_TREE_MODEL", tmp_path / "model")
    monkeypatch.setattr(env, "_cuda_device", lambda: (None, None))  # no cuda-python here
    monkeypatch.setattr(env, "installed_tensorrt", lambda: "10.3.0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    system = env.probe_system()
    assert system == System(gpu="NVIDIA Jetson AGX Orin Developer Kit", compute_capability="8.7",
                            tensorrt="10.3.0", jetpack="6.2", l4t="36.4.3")


def test_probe_system_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Jetson files: the GPU is nvidia-smi's name; without nvidia-smi everything is None."""
    monkeypatch.setattr(env, "TEGRA_RELEASE", tmp_path / "absent")
    monkeypatch.setattr(env, "DEVICE_TREE_MODEL", tmp_path / "absent-too")
    monkeypatch.setattr(env, "_cuda_device", lambda: (None, None))
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir, "nvidia-smi", 'case "$*" in *compute_cap*) echo 9.0 ;; *name*) echo "NVIDIA H100 80GB HBM3" ;; esac\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    system = env.probe_system()
    assert (system.gpu, system.compute_capability, system.jetpack, system.l4t) == (
        "NVIDIA H100 80GB HBM3", "9.0", None, None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    system = env.probe_system()
    assert (system.gpu, system.compute_capability, system.jetpack, system.l4t) == (None, None, None, None)


def test_key_needs_tensorrt() -> None:
    with pytest.raises(EdgeResNetError, match="TensorRT is not installed here"):
        EngineKey.for_system(System(gpu="x"), precision="int8", batch=(1, 1, 1), dla_core=None, int8_mode="qdq",
                             onnx="model.int8.onnx", onnx_sha256=SHA)


# ---------------------------------------------------------------- names and sidecars


def test_engine_file_names() -> None:
    assert _key().filename() == "model.int8.b1-1-32.trt10.3.0.nvidia-jetson-agx-orin-developer-kit.engine"
    assert _key(int8_mode="implicit", dla_core=1, batch=(4, 4, 4), onnx="model.fp32.onnx").filename() == (
        "model.int8-implicit.dla1.b4-4-4.trt10.3.0.nvidia-jetson-agx-orin-developer-kit.engine")
    assert _key(precision="fp16", int8_mode=None, tensorrt="11.4.1.5", gpu=None).filename("resnet8") == (
        "resnet8.fp16.b1-1-32.trt11.4.1.unknown-gpu.engine")
    # every field of the name changes it
    names = {_key().filename(), _key(precision="fp32").filename(), _key(batch=(1, 8, 32)).filename(),
             _key(dla_core=0).filename(), _key(int8_mode="implicit").filename(), _key(tensorrt="10.4.0").filename(),
             _key(gpu="Orin NX").filename()}
    assert len(names) == 7
    assert engine_filename("model", "int8", (1, 1, 32), None, "qdq", "10.3", "A") == "model.int8.b1-1-32.trt10.3.0.a.engine"
    assert sidecar_path("/x/model.int8.engine") == Path("/x/model.int8.engine.json")


def test_sidecar_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / _key().filename()
    engine.write_bytes(b"\x00plan")
    path = write_sidecar(engine, _key(), {"built_by": "test", "build_seconds": 1.5})
    assert path == tmp_path / (engine.name + ".json")
    raw = json.loads(path.read_text())
    assert raw["format"] == KEY_FORMAT and raw["batch"] == [1, 1, 32] and raw["built_by"] == "test"
    assert read_sidecar(engine) == _key()
    assert engine.read_bytes() == b"\x00plan"  # the engine stays plain: nothing prepended


# ---------------------------------------------------------------- reuse, build or rebuild


def test_differences_name_each_field() -> None:
    saved = _key()
    assert saved.differences(_key()) == []
    diffs = saved.differences(_key(tensorrt="10.4.0", precision="fp16", batch=(1, 8, 32)))
    assert diffs == ["tensorrt 10.4.0 here, 10.3.0 in the engine", "precision fp16 here, int8 in the engine",
                     "batch 1-8-32 here, 1-1-32 in the engine"]
    other = "cd" * 32
    assert saved.differences(_key(onnx_sha256=other)) == [f"onnx sha256 {other[:12]} here, {SHA[:12]} in the engine"]
    assert saved.differences(_key(gpu="NVIDIA Jetson Orin NX", compute_capability="8.6", l4t="35.4.1",
                                  jetpack="5.1.2", dla_core=0)) == [
        "gpu NVIDIA Jetson Orin NX here, NVIDIA Jetson AGX Orin Developer Kit in the engine",
        "compute capability 8.6 here, 8.7 in the engine", "jetpack 5.1.2 here, 6.2 in the engine",
        "l4t 35.4.1 here, 36.4.3 in the engine", "dla core 0 here, None in the engine"]


def test_fields_a_script_could_not_read_are_not_held_against_it() -> None:
    """build_engine.sh writes null where it could not read the GPU, compute capability or JetPack;
    those are not differences. What the build itself decided always is."""
    script_written = _key(gpu=None, compute_capability=None, jetpack=None, l4t=None)
    assert script_written.differences(_key()) == []
    assert script_written.differences(_key(tensorrt="8.6.1")) == ["tensorrt 8.6.1 here, 10.3.0 in the engine"]
    # the other way round (the running system lacks what the engine recorded) is a difference
    assert _key().differences(_key(compute_capability=None)) == ["compute capability None here, 8.7 in the engine"]
    # a missing int8 mode or DLA core is a build setting, not an unknown: it counts
    assert _key(int8_mode=None).differences(_key()) == ["int8 mode qdq here, None in the engine"]


def _engine(tmp_path: Path, key: EngineKey) -> Path:
    engine = tmp_path / key.filename()
    engine.write_bytes(os.urandom(64))
    write_sidecar(engine, key)
    return engine


def test_decide_reuse_build_rebuild(tmp_path: Path) -> None:
    wanted = _key()
    engine = tmp_path / wanted.filename()
    assert decide(engine, wanted) == Decision("build", engine)  # nothing there yet
    _engine(tmp_path, wanted)
    assert decide(engine, wanted) == Decision("reuse", engine)
    # the running system moved on (a JetPack upgrade brings a new TensorRT): same file, other key wanted
    upgraded = _key(tensorrt="10.4.0", jetpack="6.3", l4t="36.5.0")
    d = decide(engine, upgraded)
    assert d.action == "rebuild" and d.reasons == ("tensorrt 10.4.0 here, 10.3.0 in the engine",
                                                   "jetpack 6.3 here, 6.2 in the engine",
                                                   "l4t 36.5.0 here, 36.4.3 in the engine")
    # the ONNX was re-exported: its sha256 differs, the engine is rebuilt although every name matches
    d = decide(engine, _key(onnx_sha256="ef" * 32))
    assert d.action == "rebuild" and d.reasons == (f"onnx sha256 {'ef' * 6} here, {SHA[:12]} in the engine",)


@pytest.mark.parametrize("damage", ["missing", "not json", "empty", "wrong format", "no batch", "batch of words",
                                    "a list", "null"])
def test_missing_or_corrupt_sidecar_means_rebuild(tmp_path: Path, damage: str) -> None:
    """Never reuse an engine just because the file exists."""
    wanted = _key()
    engine = _engine(tmp_path, wanted)
    side = sidecar_path(engine)
    raw = json.loads(side.read_text())
    if damage == "missing":
        side.unlink()
    elif damage == "not json":
        side.write_text(side.read_text()[:40])
    elif damage == "empty":
        side.write_text("")
    elif damage == "wrong format":
        side.write_text(json.dumps({**raw, "format": "someone-else/key-9"}))
    elif damage == "no batch":
        del raw["batch"]
        side.write_text(json.dumps(raw))
    elif damage == "batch of words":
        side.write_text(json.dumps({**raw, "batch": ["one", "two", "three"]}))
    elif damage == "a list":
        side.write_text(json.dumps([raw]))
    else:
        side.write_text("null")
    assert read_sidecar(engine) is None
    d = decide(engine, wanted)
    assert d.action == "rebuild"
    assert d.reasons == (f"{side.name} is missing or unreadable, so nothing says what the engine was built for",)


def test_sidecar_with_an_edited_field_is_rebuilt(tmp_path: Path) -> None:
    wanted = _key()
    engine = _engine(tmp_path, wanted)
    raw = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**raw, "precision": "fp16"}))
    d = decide(engine, wanted)
    assert d.action == "rebuild" and d.reasons == ("precision int8 here, fp16 in the engine",)
