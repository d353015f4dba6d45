"""trtexec's real option set per version (tests/fixtures/tensorrt/trtexec, from each tag's
samples/common/sampleOptions.cpp): every argument our recipe emits exists in the version it is emitted
for, and the stand-in that the build_engine.sh tests run refuses everything else as trtexec does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_resnet.errors import ConfigError
from edge_resnet.export.build_plan import BuildOptions, plan_build
from edge_resnet.contract.engine import version_code
from edge_resnet.export.trtexec import REMOVED_IN_11_TRTEXEC, build_only_flag, trtexec_args
from edge_resnet.runtime.manifest import load_manifest
from tests.export.conftest import PREBUILT
from tests.export.tensorrt_api import plans, tables, trtexec_options
from tests.export.util import STAND_IN, install_trtexec_stand_in, one_line_error, run_cli

VERSIONS = list(trtexec_options())


def test_the_recorded_versions() -> None:
    """8.5 (JetPack 5.1), 8.6, 10.3 (JetPack 6.1/6.2), 10.7 (the last 10.x with DLA), 10.13 (JetPack 7.0),
    10.16 (JetPack 7.2 ships 10.16.2; the tag is 10.16.0), 11.x; each option set is trtexec's own (a few
    names every version has, one each lacks)."""
    assert VERSIONS == ["8.5.2", "8.6.1", "10.3.0", "10.7.0", "10.13.3", "10.16.0", "11.1.0"]
    for options in trtexec_options().values():
        assert {"--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--useDLACore",
                "--allowGPUFallback", "--memPoolSize", "--timingCacheFile", "--help"} <= options
        assert "--noSuchOption" not in options


def _load_stand_in():
    import importlib.util

    spec = importlib.util.spec_from_file_location("trtexec_standin", STAND_IN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", VERSIONS)
def test_every_argument_we_emit_exists_in_that_trtexec(version: str, prebuilt_bundle: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """All builds ``plan_build`` accepts for the version (precision x DLA x implicit x optimization level x
    workspace x timing cache): each trtexec argument's name is one that version's parser consumes, and the
    whole command line runs on that version's stand-in (values parsed as sampleOptions.cpp parses them, the
    shapes checked against the bundle's real ONNX inputs, the calibration cache present) and builds."""
    options = trtexec_options()[version]
    built = plans(version)
    assert len(built) > 20
    manifest = load_manifest(prebuilt_bundle)
    input_name, chw = manifest.input_name, tuple(int(d) for d in manifest.input_shape[1:])
    stand_in = _load_stand_in()
    monkeypatch.chdir(prebuilt_bundle)
    monkeypatch.setenv("FAKE_TRT_CODE", str(version_code(version)))
    monkeypatch.setenv("FAKE_DLA_CORES", "2")
    monkeypatch.delenv("FAKE_TRT_ARGV", raising=False)
    monkeypatch.delenv("FAKE_ENGINE_BYTES", raising=False)
    for plan in built:
        argv = trtexec_args(plan, input_name, chw, "E.engine", "calib.cache")
        for arg in argv:
            assert arg.split("=", 1)[0] in options, (version, plan, arg)
        rc = stand_in.main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, (version, plan, argv, err)
        assert out.splitlines()[-1].startswith(f"&&&& PASSED TensorRT.trtexec [TensorRT v{version_code(version)}]")
        assert (prebuilt_bundle / "E.engine").read_bytes() == b"stand-in engine bytes", (plan, err)
        (prebuilt_bundle / "E.engine").unlink()


def test_stop_after_build_is_spelled_per_version() -> None:
    """sampleOptions.cpp: 8.5.2 parses --buildOnly only, 8.6.1 both, 10.x and 11.x --skipInference only."""
    opts = trtexec_options()
    assert "--buildOnly" in opts["8.5.2"] and "--skipInference" not in opts["8.5.2"]
    assert {"--buildOnly", "--skipInference"} <= opts["8.6.1"]
    for v in ("10.3.0", "10.7.0", "10.13.3", "10.16.0", "11.1.0"):
        assert "--skipInference" in opts[v] and "--buildOnly" not in opts[v]
    for v in VERSIONS:
        assert build_only_flag(v) in opts[v]
    assert "--builderOptimizationLevel" not in opts["8.5.2"] and "--builderOptimizationLevel" in opts["8.6.1"]


def test_what_11_removed_is_gone_from_its_trtexec() -> None:
    """REMOVED_IN_11_TRTEXEC (what the recipe never emits for 11.x) is absent in 11.x and present in 10.x,
    so the list is neither stale nor empty."""
    opts = trtexec_options()
    assert REMOVED_IN_11_TRTEXEC
    for flag in REMOVED_IN_11_TRTEXEC:
        assert flag not in opts["11.1.0"], flag
        assert all(flag in opts[v] for v in ("8.5.2", "8.6.1", "10.3.0", "10.7.0", "10.13.3", "10.16.0")), flag


def _standin(tmp_path: Path, code: int, *args: str, dla_cores: int = 0) -> subprocess.CompletedProcess[str]:
    trtexec = install_trtexec_stand_in(tmp_path / "bin")
    env = {"PATH": "/usr/bin:/bin", "FAKE_TRT_CODE": str(code), "FAKE_DLA_CORES": str(dla_cores),
           "FAKE_TRT_ARGV": str(tmp_path / "argv")}
    return subprocess.run([str(trtexec), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("version", "flag"), [
    ("8.5.2", "--skipInference"), ("8.5.2", "--builderOptimizationLevel=3"), ("10.3.0", "--buildOnly"),
    ("11.1.0", "--int8"), ("11.1.0", "--fp16"), ("11.1.0", "--calib=calib.cache"), ("10.13.3", "--noSuchOption=1"),
])
def test_stand_in_refuses_unknown_options_as_trtexec_does(version: str, flag: str, tmp_path: Path) -> None:
    shutil.copy2(PREBUILT / "model.fp32.onnx", tmp_path / "m.onnx")
    done = _standin(tmp_path, version_code(version), "--onnx=m.onnx", "--saveEngine=e.engine", flag)
    name, _, value = flag.partition("=")
    assert done.returncode == 1
    assert f"Unknown option: {name} {value}" in done.stderr
    assert done.stdout.splitlines()[0].startswith(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{version_code(version)}]")
    # 11.x's parseArgs returns EXIT_FAILURE without reporting the test as failed (trtexec.cpp at v11.1)
    assert done.stdout.splitlines()[-1].startswith("&&&& FAILED") == (version_code(version) < 110000)
    assert not (tmp_path / "e.engine").exists() and not (tmp_path / "argv").exists()


def test_stand_in_builds_and_checks_dla_and_files(tmp_path: Path) -> None:
    shutil.copy2(PREBUILT / "model.fp32.onnx", tmp_path / "m.onnx")
    ok = _standin(tmp_path, 100300, "--onnx=m.onnx", "--saveEngine=e.engine", "--skipInference")
    assert ok.returncode == 0 and (tmp_path / "e.engine").read_bytes() == b"stand-in engine bytes"
    assert (tmp_path / "argv").read_bytes() == b"--onnx=m.onnx\0--saveEngine=e.engine\0--skipInference\0"
    # sampleEngines.cpp: a core the builder does not have ends the run (no DLA: 0 cores)
    dla = _standin(tmp_path, 100300, "--onnx=m.onnx", "--saveEngine=f.engine", "--useDLACore=1", "--allowGPUFallback")
    assert dla.returncode == 1 and "Cannot create DLA engine, 1 not available" in dla.stderr
    assert _standin(tmp_path, 100300, "--onnx=m.onnx", "--saveEngine=f.engine", "--useDLACore=1",
                    dla_cores=2).returncode == 0
    missing = _standin(tmp_path, 100300, "--onnx=none.onnx", "--saveEngine=g.engine")
    assert missing.returncode == 1 and not (tmp_path / "g.engine").exists()
    (tmp_path / "bad.onnx").write_bytes(b"not a model")  # a file that is no ONNX: the parser fails the build
    bad = _standin(tmp_path, 100300, "--onnx=bad.onnx", "--saveEngine=g.engine")
    assert bad.returncode == 1 and "Failed to parse onnx file" in bad.stderr and not (tmp_path / "g.engine").exists()
    # --help prints the version's banner (build_engine.sh reads the version from it)
    help_ = _standin(tmp_path, 8502, "--help")
    assert help_.returncode == 0 and "[TensorRT v8502]" in help_.stdout and "--buildOnly" in help_.stdout
    # a version nobody recorded is not played
    unknown = _standin(tmp_path, 110401, "--help")
    assert unknown.returncode == 1 and "no option set for TensorRT code '110401'" in unknown.stderr


def test_api_tables_are_the_versions_the_plan_covers() -> None:
    """Every name table is a version the build plan supports (no orphan fixtures), and the set spans the
    three API generations: 8.x (explicit batch flag), 10.x, 11.x (strongly typed only)."""
    assert list(tables()) == ["8.5.2", "8.6.1", "10.3.0", "10.7.0", "10.13.3", "11.4.0"]
    for version in tables():
        assert plans(version), version
    assert "NVIDIA/TensorRT at tag 8.5.2" in tables()["8.5.2"].origin  # no 8.5 wheel on PyPI: from source


@pytest.mark.parametrize("version", VERSIONS)
def test_trtexec_cmd_lines_run_on_that_trtexec(version: str, prebuilt_bundle: Path, tmp_path: Path) -> None:
    """What `edge-resnet trtexec-cmd --trt <version>` prints, executed as printed (cd, the cache retag,
    trtexec) against that version's stand-in: every precision, with and without DLA. Where the plan
    refuses DLA the command prints nothing and fails with one line instead."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    install_trtexec_stand_in(tmp_path / "bin")
    files = set(load_manifest(prebuilt_bundle).files)
    code = version_code(version)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "FAKE_TRT_CODE": str(code), "FAKE_DLA_CORES": "2"}
    for precision in ("int8", "fp16", "fp32"):
        for dla in (None, 0) if precision != "fp32" else (None,):
            extra = ["--dla", str(dla)] if dla is not None else []
            rc, out, err = run_cli("trtexec-cmd", str(prebuilt_bundle), "--trt", version, "--gpu",
                                   "NVIDIA Jetson AGX Orin Developer Kit", "--precision", precision, *extra)
            try:
                plan_build(version, BuildOptions(precision=precision, dla_core=dla), files)
            except ConfigError:  # the plan refuses (no DLA in this TensorRT): so does the command, in one line
                one_line_error(rc, out, err, "has no DLA support")
                continue
            assert rc == 0, err
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", out], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=120, env=env)
            assert done.returncode == 0, (version, precision, dla, out, done.stdout, done.stderr)
            assert f"&&&& PASSED TensorRT.trtexec [TensorRT v{code}]" in done.stdout
            engine = next(a.split("=", 1)[1] for a in out.split() if a.startswith("--saveEngine="))
            assert (prebuilt_bundle / engine).read_bytes() == b"stand-in engine bytes"


# options each version parses but its help does not list, and why (sampleOptions.cpp at the tag)
UNLISTED = {
    "--explicitBatch": "8.x: deprecated, parsed with a warning", "--explicitPrecision": "8.x: deprecated, warns",
    "--nvtxMode": "8.x: deprecated by --profilingVerbosity", "--buildOnly": "8.6: deprecated by --skipInference",
    "--plugins": "deprecated by --staticPlugins", "--streams": "deprecated by --infStreams",
    "--distributiveIndependence": "10.13+: parsed, undocumented",
    "--tuningResultFile": "11.1: hidden parent->child flag",
}


def test_option_sets_agree_with_the_help_text() -> None:
    """regenerate.py follows the helpers the parsers call (v11.1 parses --refPair in getRefPairs), and
    compares the result with the help text: everything the help lists is parsed unless the Linux build
    compiles its parser out (--safetyPlugins needs ENABLE_UNIFIED_BUILDER, the safety samples' build),
    and everything parsed but unlisted is a known deprecated or hidden option."""
    import json

    from tests.export.tensorrt_api import FIXTURES

    assert "--refPair" in trtexec_options()["11.1.0"]
    for version in VERSIONS:
        table = json.loads((FIXTURES / "trtexec" / f"{version}.json").read_text())
        assert set(table["help_check"]["in_help_not_parsed"]) <= set(table["compiled_out"]), version
        assert set(table["help_check"]["parsed_not_in_help"]) <= set(UNLISTED), version
        assert "--safetyPlugins" not in table["options"]
        assert not table.get("unknown_macros"), version
