"""build_engine.sh, executed: the bundle's script run with bash against stand-in executables.

TensorRT cannot be installed here, so ``trtexec`` is the per-version stand-in of
tests/fixtures/tensorrt/trtexec_standin.py: it prints trtexec's banner for the version it plays, knows
that version's option set (from its sampleOptions.cpp) and fails with "Unknown option" on anything
else, checks the DLA core against the device's count, records its argv and writes the
``--saveEngine`` file. A stand-in ``nvidia-smi`` names the GPU. What is tested is our script's logic:
that for each TensorRT version (8.5, 8.6, 10.3, 10.7, 10.13, 10.16, 11.1) it runs exactly the arguments
``edge_resnet.export.trtexec.trtexec_args`` gives for the same plan and trtexec accepts them, names the
engine as ``EngineKey`` does, refuses DLA where the plan does, and writes a sidecar the Python side
reads and accepts (``decide`` -> reuse). The bundle is the committed one (tests/fixtures/bundle).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from edge_resnet.calibration.files import read_trt_cache
from edge_resnet.errors import ConfigError
from edge_resnet.runtime.manifest import load_manifest
from edge_resnet.export.build_plan import BuildOptions, plan_build
from edge_resnet.export.bundle import SCRIPT
from edge_resnet.export.engine import engine_key
from edge_resnet.contract.engine import System, decide, engine_filename, read_sidecar, version_from_code
from edge_resnet.export.trtexec import TRTEXEC_JETPACK, build_script, retag_cache, retagged_cache_name, trtexec_args
from tests.export.conftest import PREBUILT
from tests.export.util import install_trtexec_stand_in, sha256

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

GPU = "NVIDIA GeForce RTX 4090 (Lab #2)"
CC = "8.9"
# the versions whose trtexec option sets are recorded: 8.5 (JetPack 5.1), 8.6, 10.3 (JetPack 6.1/6.2),
# 10.7 (the last 10.x with DLA), 10.13 (JetPack 7.0), 10.16.2 (JetPack 7.2, played by the v10.16 table), 11.1 (11.x)
CODES = [8502, 8601, 100300, 100700, 101303, 101602, 110100]
SYSTEM_PATH = f"/usr/bin{os.pathsep}/bin"
DLA_CORES = 2  # the device the stand-in plays has two DLA cores (an AGX Orin): refusals are the script's


def _nvidia_smi(gpu: str) -> str:
    return f"""#!/usr/bin/env bash
case "$*" in
  *compute_cap*) echo "{CC}" ;;
  *name*) echo {shlex.quote(gpu)} ;;
  *) exit 9 ;;
esac
"""


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin folder with the stand-in trtexec and nvidia-smi."""
    bin_dir = tmp_path_factory.mktemp("stand_ins")
    install_trtexec_stand_in(bin_dir)
    (bin_dir / "nvidia-smi").write_text(_nvidia_smi(GPU))
    (bin_dir / "nvidia-smi").chmod(0o755)
    return bin_dir


@pytest.fixture
def fresh_bundle(prebuilt_bundle: Path) -> Path:
    return prebuilt_bundle


@pytest.fixture(scope="module")
def bundle_files() -> tuple[set[str], str, tuple[int, ...]]:
    manifest = load_manifest(PREBUILT)
    return set(manifest.files), manifest.input_name, tuple(int(d) for d in manifest.input_shape[1:])


def _run_script(folder: Path, args: list[str], path: str, code: int | None, argv_file: Path,
                dla_cores: int = DLA_CORES) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(folder), "LC_ALL": "C", "FAKE_TRT_ARGV": str(argv_file),
           "FAKE_DLA_CORES": str(dla_cores)}
    if code is not None:
        env["FAKE_TRT_CODE"] = str(code)
    return subprocess.run(["bash", str(folder / SCRIPT), *args], cwd=folder.parent, env=env, capture_output=True,
                          text=True, timeout=60)


def _expected(options: BuildOptions, available: set[str], input_name: str, chw: tuple[int, ...], code: int,
              precision: str, dla: int | None, gpu: str | None) -> tuple[list[str], str, object]:
    """(trtexec argv, engine name, plan) the Python side gives for this build (ConfigError: it refuses)."""
    opts = replace(options, precision=precision, dla_core=dla,
                   implicit=options.implicit and precision == "int8" and code < 110000)
    plan = plan_build(version_from_code(code), opts, available)
    engine = engine_filename("model", plan.precision, plan.batch, plan.dla_core, plan.int8_mode, plan.tensorrt, gpu)
    cache = retagged_cache_name(code) if plan.calib_cache else None
    return trtexec_args(plan, input_name, chw, engine, cache), engine, plan


OPTION_SETS = {
    "defaults": BuildOptions(),
    "tuned": BuildOptions(batch=(2, 8, 16), workspace_mib=512, opt_level=4, timing_cache="trt.timing"),
    "implicit": BuildOptions(implicit=True, batch=(1, 4, 8)),
}
CASES = [(p, d) for p in ("int8", "fp16", "fp32") for d in (None, 1) if not (p == "fp32" and d is not None)]


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
def test_script_runs_what_python_plans(code: int, option_set: str, fresh_bundle: Path, tools: Path,
                                       bundle_files: tuple[set[str], str, tuple[int, ...]], tmp_path: Path) -> None:
    """For every precision, with and without DLA: the argv trtexec receives equals ``trtexec_args`` for the
    same plan; the engine is named as ``engine_filename`` names it for the GPU nvidia-smi reported; the
    sidecar parses with ``read_sidecar``, records the ONNX's real sha256, and ``decide`` reuses the engine
    for the system the script ran on."""
    available, input_name, chw = bundle_files
    options = OPTION_SETS[option_set]
    (fresh_bundle / SCRIPT).write_text(build_script(options, available, input_name, chw, "resnet8"))
    argv_file = tmp_path / "argv"
    path = f"{tools}{os.pathsep}{SYSTEM_PATH}"
    for precision, dla in CASES:
        args = [precision] + ([str(dla)] if dla is not None else [])
        done = _run_script(fresh_bundle, args, path, code, argv_file)
        try:
            expected_argv, engine, plan = _expected(options, available, input_name, chw, code, precision, dla, GPU)
        except ConfigError as e:  # the plan refuses (DLA in a TensorRT without it): so does the script, first
            assert done.returncode == 1, (code, args, done.stdout)
            said = str(e).replace("drop --dla", "drop the DLA core argument")
            assert done.stderr.strip() == f"build_engine.sh: {said}", (code, args)
            assert not argv_file.exists()
            continue
        assert done.returncode == 0, (code, args, done.stdout, done.stderr)
        got = argv_file.read_bytes().split(b"\0")[:-1]
        assert [a.decode() for a in got] == expected_argv, (code, precision, dla)
        assert f"&&&& PASSED TensorRT.trtexec [TensorRT v{code}]" in done.stdout  # trtexec took every argument
        assert (fresh_bundle / engine).read_bytes() == b"stand-in engine bytes"
        assert f"trtexec: {tools / 'trtexec'}" in done.stdout
        assert f"building {engine} with TensorRT {version_from_code(code)}" in done.stdout
        key = read_sidecar(fresh_bundle / engine)
        assert key is not None, (fresh_bundle / (engine + ".json")).read_text()
        assert key.filename() == engine
        assert (key.gpu, key.compute_capability, key.tensorrt, key.jetpack, key.l4t) == (
            GPU, CC, version_from_code(code), None, None)
        assert (key.precision, key.batch, key.dla_core, key.int8_mode, key.onnx) == (
            plan.precision, plan.batch, plan.dla_core, plan.int8_mode, plan.onnx)
        assert key.onnx_sha256 == sha256(fresh_bundle / plan.onnx)
        # the Python side (build-engine) would reuse this engine on the same machine, not rebuild it
        system = System(gpu=GPU, compute_capability=CC, tensorrt=version_from_code(code))
        wanted = engine_key(fresh_bundle, plan, system)
        assert decide(fresh_bundle / wanted.filename(), wanted).action == "reuse"
        if plan.calib_cache:
            cache = fresh_bundle / retagged_cache_name(code)
            assert cache.read_text() == retag_cache((fresh_bundle / "calib.cache").read_text(), code)
            header, scales = read_trt_cache(cache.read_text())
            assert header == f"TRT-{code}-EntropyCalibration2"
            assert scales == read_trt_cache((fresh_bundle / "calib.cache").read_text())[1]
        argv_file.unlink()


def test_dla_build_of_the_bundle_script(fresh_bundle: Path, tools: Path, tmp_path: Path) -> None:
    """The script the bundle ships (defaults: int8, batch 1/1/32), on TensorRT 10.3 with DLA core 1:
    implicit INT8 from model.int8.implicit.onnx with the cache retagged for 10.3 (the bundle's own copy
    for 10.3, byte for byte), a fixed batch, GPU fallback."""
    shipped = (fresh_bundle / "calib.trt100300.cache").read_bytes()
    argv_file = tmp_path / "argv"
    done = _run_script(fresh_bundle, ["int8", "1"], f"{tools}{os.pathsep}{SYSTEM_PATH}", 100300, argv_file)
    assert done.returncode == 0, done.stderr
    argv = [a.decode() for a in argv_file.read_bytes().split(b"\0")[:-1]]
    engine = "model.int8-implicit.dla1.b1-1-1.trt10.3.0.nvidia-geforce-rtx-4090-lab-2.engine"
    assert argv == ["--onnx=model.int8.implicit.onnx", f"--saveEngine={engine}", "--minShapes=input:1x3x32x32",
                    "--optShapes=input:1x3x32x32", "--maxShapes=input:1x3x32x32", "--int8", "--fp16",
                    "--calib=calib.trt100300.cache", "--useDLACore=1", "--allowGPUFallback",
                    "--timingCacheFile=timing.cache", "--skipInference"]
    assert (fresh_bundle / "calib.trt100300.cache").read_bytes() == shipped
    assert shipped.startswith(b"TRT-100300-EntropyCalibration2\n")
    assert (fresh_bundle / "calib.cache").read_text().startswith("TRT-8502-EntropyCalibration2\n")  # untouched
    key = read_sidecar(fresh_bundle / engine)
    assert key is not None and key.batch == (1, 1, 1) and key.dla_core == 1 and key.int8_mode == "implicit"
    # no precision/DLA arguments: the bundle's defaults (int8 on the GPU)
    done = _run_script(fresh_bundle, [], f"{tools}{os.pathsep}{SYSTEM_PATH}", 100300, argv_file)
    assert done.returncode == 0, done.stderr
    assert (fresh_bundle / "model.int8.b1-1-32.trt10.3.0.nvidia-geforce-rtx-4090-lab-2.engine").is_file()


def test_without_nvidia_smi_the_engine_is_for_an_unknown_gpu(fresh_bundle: Path, tools: Path, tmp_path: Path) -> None:
    """No nvidia-smi (and no Jetson files): the name says unknown-gpu, the sidecar holds null for the GPU
    and compute capability, and those nulls are not held against the engine on a machine that knows them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(tools / "trtexec", bin_dir / "trtexec")
    if shutil.which("nvidia-smi", path=SYSTEM_PATH) or Path("/etc/nv_tegra_release").exists():
        pytest.skip("this machine has its own nvidia-smi or is a Jetson")
    done = _run_script(fresh_bundle, ["fp16"], f"{bin_dir}{os.pathsep}{SYSTEM_PATH}", 110100, tmp_path / "argv")
    assert done.returncode == 0, done.stderr
    engine = fresh_bundle / "model.fp16.b1-1-32.trt11.1.0.unknown-gpu.engine"
    key = read_sidecar(engine)
    assert key is not None and (key.gpu, key.compute_capability, key.onnx) == (None, None, "model.fp16.onnx")
    plan = plan_build("11.1.0", BuildOptions(precision="fp16"), {p.name for p in fresh_bundle.iterdir()})
    knows_more = engine_key(fresh_bundle, plan, System(gpu="NVIDIA A2", compute_capability="8.6", tensorrt="11.1.0"))
    assert decide(engine, knows_more).action == "reuse"
    # but another TensorRT is a rebuild, whatever the GPU
    other = engine_key(fresh_bundle, plan, System(gpu="NVIDIA A2", tensorrt="11.5.0"))
    assert decide(engine, other).reasons == ("tensorrt 11.5.0 here, 11.1.0 in the engine",)


def test_trtexec_missing(fresh_bundle: Path, tmp_path: Path) -> None:
    """Neither on PATH nor at /usr/src/tensorrt/bin/trtexec: non-zero exit and a message naming both."""
    if shutil.which("trtexec", path=SYSTEM_PATH) or Path(TRTEXEC_JETPACK).exists():
        pytest.skip("this machine has a real trtexec")
    before = sorted(p.name for p in fresh_bundle.iterdir())
    done = _run_script(fresh_bundle, [], SYSTEM_PATH, None, tmp_path / "argv")
    assert done.returncode != 0
    assert "trtexec is neither on PATH nor at /usr/src/tensorrt/bin/trtexec" in done.stderr
    assert sorted(p.name for p in fresh_bundle.iterdir()) == before


@pytest.mark.parametrize(("code", "message"), [
    (8401, "TensorRT 8.4.1 is older than 8.5"), (7103, "TensorRT 7.1.3 is older than 8.5"),
    (90300, "TensorRT 9 is not supported"),
])
def test_old_tensorrt_is_refused(code: int, message: str, fresh_bundle: Path, tools: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in fresh_bundle.iterdir())
    done = _run_script(fresh_bundle, [], f"{tools}{os.pathsep}{SYSTEM_PATH}", code, tmp_path / "argv")
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "argv").exists()  # trtexec never ran a build
    assert sorted(p.name for p in fresh_bundle.iterdir()) == before


def test_unreadable_banner_and_bad_arguments(fresh_bundle: Path, tools: Path, tmp_path: Path) -> None:
    path = f"{tools}{os.pathsep}{SYSTEM_PATH}"
    done = _run_script(fresh_bundle, [], path, None, tmp_path / "argv")  # banner without a version
    assert done.returncode != 0 and "cannot read the TensorRT version" in done.stderr
    done = _run_script(fresh_bundle, ["int4"], path, 100300, tmp_path / "argv")
    assert done.returncode != 0 and "unknown precision 'int4'" in done.stderr
    done = _run_script(fresh_bundle, ["fp32", "0"], path, 100300, tmp_path / "argv")
    assert done.returncode != 0 and "DLA runs FP16 and INT8 only" in done.stderr
    assert not (tmp_path / "argv").exists()


def test_a_file_the_bundle_lacks_is_named(fresh_bundle: Path, tools: Path, bundle_files, tmp_path: Path) -> None:
    """A bundle without model.fp16.onnx: fp16 on TensorRT 11 fails with the re-export hint; 10.x still
    builds fp16 from the FP32 graph."""
    available, input_name, chw = bundle_files
    (fresh_bundle / SCRIPT).write_text(build_script(BuildOptions(), available - {"model.fp16.onnx"}, input_name, chw,
                                                    "resnet8"))
    path = f"{tools}{os.pathsep}{SYSTEM_PATH}"
    done = _run_script(fresh_bundle, ["fp16"], path, 110100, tmp_path / "argv")
    assert done.returncode != 0
    assert "needs model.fp16.onnx, which the run does not have; re-export with `edge-resnet export --fp16`" in done.stderr
    assert _run_script(fresh_bundle, ["fp16"], path, 100300, tmp_path / "argv").returncode == 0


def test_script_l4t_parse_matches_python(tmp_path: Path) -> None:
    """build_engine.sh reads /etc/nv_tegra_release with sed; run that same sed line on a sample release
    file and compare with ``parse_tegra_release`` (the Jetson branch cannot run here otherwise)."""
    from edge_resnet.environment import parse_tegra_release

    script = build_script(BuildOptions(), {"model.int8.onnx"}, "input", (3, 32, 32), "m")
    line = next(ln for ln in script.splitlines() if "L4T=" in ln and "nv_tegra_release" in ln)
    command = line.split('L4T="$(', 1)[1].rsplit(')"', 1)[0]
    for text in ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n",
                 "# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref, EABI: aarch64\n"):
        release = tmp_path / "nv_tegra_release"
        release.write_text(text)
        out = subprocess.run(["bash", "-c", command.replace("/etc/nv_tegra_release", str(release))],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == parse_tegra_release(text)


def test_failing_trtexec_help_still_explains(fresh_bundle: Path, tmp_path: Path) -> None:
    """A trtexec that cannot even print its help (broken libraries: exit 127) must not end the script
    silently under `set -euo pipefail`: the version message comes out."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text("#!/usr/bin/env bash\necho 'libnvinfer.so.10: cannot open' >&2\nexit 127\n")
    (bin_dir / "trtexec").chmod(0o755)
    done = _run_script(fresh_bundle, [], f"{bin_dir}{os.pathsep}{SYSTEM_PATH}", None, tmp_path / "argv")
    assert done.returncode == 1
    assert "cannot read the TensorRT version" in done.stderr, done.stderr


def test_rebuild_drops_the_old_key_before_trtexec_writes(fresh_bundle: Path, tools: Path, tmp_path: Path) -> None:
    """trtexec writes the engine in place: if it dies half-way, no key from the last build may vouch
    for the truncated file."""
    path = f"{tools}{os.pathsep}{SYSTEM_PATH}"
    done = _run_script(fresh_bundle, [], path, 100300, tmp_path / "argv")
    assert done.returncode == 0, done.stderr
    engine = next(fresh_bundle.glob("*.engine"))
    assert (fresh_bundle / (engine.name + ".json")).is_file()
    dying = tmp_path / "dying"
    dying.mkdir()
    # the stand-in answers --help; the build writes half an engine and the process dies (kill -9)
    (dying / "trtexec").write_text(f"""#!/usr/bin/env bash
if [ "${{1:-}}" = --help ]; then exec {shlex.quote(str(tools / "trtexec"))} "$@"; fi
for a in "$@"; do case "$a" in --saveEngine=*) printf 'half' > "${{a#--saveEngine=}}" ;; esac; done
kill -9 $$
""")
    (dying / "trtexec").chmod(0o755)
    done = _run_script(fresh_bundle, [], f"{dying}{os.pathsep}{path}", 100300, tmp_path / "argv")
    assert done.returncode != 0
    assert engine.read_bytes() == b"half"
    assert not (fresh_bundle / (engine.name + ".json")).exists()


def test_dla_refusals_of_the_script(fresh_bundle: Path, tools: Path, tmp_path: Path) -> None:
    """Before trtexec runs: no DLA in TensorRT 10.8+ or 11.0-11.3, none on Orin Nano or Thor (the board
    name from nvidia-smi here, /proc/device-tree/model on a Jetson); a core the device lacks is trtexec's
    own "Cannot create DLA engine" (the stand-in plays a device with no DLA), and no key is written."""
    path = f"{tools}{os.pathsep}{SYSTEM_PATH}"
    for code, version in ((100800, "10.8.0"), (101303, "10.13.3"), (110100, "11.1.0"), (110300, "11.3.0")):
        done = _run_script(fresh_bundle, ["int8", "0"], path, code, tmp_path / "argv")
        assert done.returncode == 1, done.stdout
        assert f"build_engine.sh: TensorRT {version} has no DLA support" in done.stderr
    for board in ("NVIDIA Jetson Orin Nano Developer Kit", "NVIDIA Jetson AGX Thor Developer Kit"):
        bin_dir = tmp_path / board.replace(" ", "_")
        bin_dir.mkdir()
        (bin_dir / "nvidia-smi").write_text(_nvidia_smi(board))
        (bin_dir / "nvidia-smi").chmod(0o755)
        done = _run_script(fresh_bundle, ["fp16", "0"], f"{bin_dir}{os.pathsep}{path}", 100300, tmp_path / "argv")
        assert done.returncode == 1
        assert "has no DLA; drop the DLA core argument to build for the GPU" in done.stderr, done.stderr
        # the GPU build on the same board goes ahead
        assert _run_script(fresh_bundle, ["fp16"], f"{bin_dir}{os.pathsep}{path}", 100300,
                           tmp_path / "argv").returncode == 0
    assert not (tmp_path / "argv").read_bytes().count(b"--useDLACore")
    (tmp_path / "argv").unlink()
    done = _run_script(fresh_bundle, ["int8", "1"], path, 100700, tmp_path / "argv", dla_cores=0)
    assert done.returncode != 0 and "Cannot create DLA engine, 1 not available" in done.stderr
    assert not list(fresh_bundle.glob("*dla1*.json"))


def test_the_script_of_8_5_runs_only_what_8_5_parses(fresh_bundle: Path, tools: Path, bundle_files,
                                                      tmp_path: Path) -> None:
    """JetPack 5.1's trtexec (8.5.2) has --buildOnly, not --skipInference, and no optimization level: the
    family-8 lines are written for 8.6 and adapted at run time. Before the fix every 8.5 build ended in
    "Unknown option: --skipInference" under set -e."""
    available, input_name, chw = bundle_files
    (fresh_bundle / SCRIPT).write_text(build_script(BuildOptions(opt_level=2), available, input_name, chw, "m"))
    for precision in ("int8", "fp16", "fp32"):
        done = _run_script(fresh_bundle, [precision], f"{tools}{os.pathsep}{SYSTEM_PATH}", 8502, tmp_path / "argv")
        assert done.returncode == 0, done.stderr
        argv = (tmp_path / "argv").read_bytes().split(b"\0")[:-1]
        assert argv[-1] == b"--buildOnly" and b"--skipInference" not in argv
        assert not [a for a in argv if a.startswith(b"--builderOptimizationLevel")]


def _jetson(root: Path, model: str, l4t: str, jetpack: str) -> Path:
    """A recorded Jetson for the script: its device-tree model and nv_tegra_release under ``root``, and a
    dpkg-query that reports nvidia-jetpack's version, as on the board."""
    (root / "etc").mkdir(parents=True)
    major, revision = l4t.split(".", 1)
    (root / "etc" / "nv_tegra_release").write_text(
        f"# R{major} (release), REVISION: {revision}, GCID: 38727000, BOARD: generic, EABI: aarch64, "
        "DATE: Mon Jun  1 00:00:00 UTC 2026\n")
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text(f"#!/usr/bin/env bash\n[ \"${{@: -1}}\" = nvidia-jetpack ] && "
                                        f"printf '%s' '{jetpack}-b100' || exit 1\n")
    (bin_dir / "dpkg-query").chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(("model", "l4t", "jetpack", "code", "message"), [
    # NVIDIA (TensorRT 11.4.1 "Working with DLA"): DLA on Jetson AGX Orin only, and only with JetPack 7.2.2+
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "39.2.2", "7.2.2", 110401,
     "TensorRT 11.4.1 runs DLA on Jetson AGX Orin only"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "38.4.0", "7.1", 110401,
     "TensorRT 11.4.1 runs DLA only with JetPack 7.2.2 or later; this device has JetPack 7.1"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "39.2.2", "7.2.2", 110400, "TensorRT 11.4.0 has no DLA support on Jetson"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "39.2.2", "7.2.2", 110500,
     "TensorRT 11.5.0 does not support JetPack, so it has no Jetson DLA"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "39.2.0", "7.2", 101602, "TensorRT 10.16.2 has no DLA support"),
])
def test_the_script_refuses_dla_as_the_plan_does_on_a_jetson(model: str, l4t: str, jetpack: str, code: int,
                                                              message: str, fresh_bundle: Path, tools: Path,
                                                              tmp_path: Path) -> None:
    """On a recorded board (its files under EDGE_RESNET_SYSROOT): the script's refusal is the plan's, word for
    word, before trtexec builds anything."""
    bin_dir = _jetson(tmp_path / "board", model, l4t, jetpack)
    env = {"PATH": f"{bin_dir}{os.pathsep}{tools}{os.pathsep}{SYSTEM_PATH}", "HOME": str(tmp_path), "LC_ALL": "C",
           "FAKE_TRT_ARGV": str(tmp_path / "argv"), "FAKE_DLA_CORES": "2", "FAKE_TRT_CODE": str(code),
           "EDGE_RESNET_SYSROOT": str(tmp_path / "board")}
    done = subprocess.run(["bash", str(fresh_bundle / SCRIPT), "int8", "0"], cwd=fresh_bundle.parent, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"build_engine.sh: {message}" in done.stderr, done.stderr
    with pytest.raises(ConfigError) as planned:
        plan_build(version_from_code(code), BuildOptions(dla_core=0), {"model.int8.onnx", "model.fp32.onnx",
                                                                        "model.int8.implicit.onnx", "calib.cache"},
                   device=model, jetpack=jetpack)
    assert str(planned.value).replace("drop --dla", "drop the DLA core argument") in done.stderr
    assert not (tmp_path / "argv").exists()  # trtexec never built


def test_the_script_lets_agx_orin_with_jetpack_7_2_2_build_on_dla_with_11_4_1(fresh_bundle: Path, tools: Path,
                                                                             tmp_path: Path) -> None:
    """The one Jetson DLA of TensorRT 11.x passes the script's checks and reaches trtexec (whose 11.4.1 option set
    the stand-in does not hold: that refusal is the stand-in's, not the script's)."""
    bin_dir = _jetson(tmp_path / "board", "NVIDIA Jetson AGX Orin Developer Kit", "39.2.2", "7.2.2")
    env = {"PATH": f"{bin_dir}{os.pathsep}{tools}{os.pathsep}{SYSTEM_PATH}", "HOME": str(tmp_path), "LC_ALL": "C",
           "FAKE_DLA_CORES": "2", "FAKE_TRT_CODE": "110401", "EDGE_RESNET_SYSROOT": str(tmp_path / "board")}
    done = subprocess.run(["bash", str(fresh_bundle / SCRIPT), "int8", "0"], cwd=fresh_bundle.parent, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "building model.int8.dla0" in done.stdout and "nvidia-jetson-agx-orin-developer-kit" in done.stdout
    assert "build_engine.sh:" not in done.stderr and "has no option set for TensorRT code '110401'" in done.stderr
