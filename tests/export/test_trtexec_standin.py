"""The trtexec stand-in refuses bad values as each version's trtexec does (tests/fixtures/tensorrt/
trtexec_standin.py; the rules read at each tag's samples/common/sampleOptions.cpp and sampleEngines.cpp).
"parse": trtexec's option parser throws before anything is built; "build": the parse succeeds and the
build fails (sampleEngines.cpp or the TensorRT builder); "uncaught": the parser throws something other
than std::invalid_argument, which main's catch reports. Run in-process: one subprocess per case would
import onnx dozens of times."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from edge_resnet.contract.engine import version_code
from tests.export.conftest import PREBUILT
from tests.export.util import STAND_IN

ALL = ["8.5.2", "8.6.1", "10.3.0", "10.7.0", "10.13.3", "10.16.0", "11.1.0"]
OLD, NEW = ALL[:2], ALL[2:]
GOOD = "input:1x3x32x32"
# (versions, arguments after --onnx/--saveEngine, exit status, where, what stderr says)
CASES = [
    (ALL, ["--minShapes=image:1x3x32x32"], 1, "build", 'Cannot find input tensor with name "image"'),
    (ALL, ["--minShapes=input:1x3xAx32"], 1, "parse", "stoi"),
    (NEW, ["--minShapes=input:1x3x32x"], 1, "parse", "stoi conversion failure: failed to parse minShapes"),
    (OLD, ["--minShapes=input:1x3x32x"], 1, "build", "does not fit input input"),  # 8.x drops the empty field
    (ALL, ["--optShapes=input:1x3x64x32"], 1, "build", "does not fit input input"),
    (ALL, ["--minShapes=input:8x3x32x32", "--optShapes=input:2x3x32x32"], 1, "build", "min <= opt <= max"),
    (ALL, ["--minShapes=in'put:1x3x32x32"], 1, "parse", "Found invalid number of 's when parsing"),
    (NEW, ["--minShapes=inp*:1x3x32x32"], 0, "", ""),  # 10.x: one wildcard in a shape name
    (OLD, ["--minShapes=inp*:1x3x32x32"], 1, "build", 'Cannot find input tensor with name "inp*"'),
    (NEW, [f"--minShapes={GOOD}", f"--minShapes={GOOD}"], 1, "parse", "Multiple --minShapes/--optShapes/--maxShapes"),
    (OLD, [f"--minShapes={GOOD}", f"--minShapes={GOOD}"], 1, "parse", f"Unknown option: --minShapes {GOOD}"),
    (ALL, ["--memPoolSize=workspace:-64"], 1, "parse", "Negative memory pool size: -"),
    (ALL, ["--memPoolSize=scratch:64"], 1, "parse", "Unknown memory pool: scratch"),
    (ALL, ["--memPoolSize=64"], 1, "parse", "Unknown memory pool: 64"),  # no name: the value is the name too
    (ALL, ["--memPoolSize=workspace:lots"], 1, "parse", "stod"),
    (NEW, ["--memPoolSize=workspace:64X"], 1, "parse", "invalid unit specifier 'X'"),
    (NEW, ["--memPoolSize=workspace:1G,tacticSharedMem:48K"], 0, "", ""),
    (OLD, ["--memPoolSize=tacticSharedMem:48"], 1, "parse", "Unknown memory pool: tacticSharedMem"),
    (ALL, ["--useDLACore=one"], 1, "parse", "stoi"),
    (ALL, ["--useDLACore=2"], 1, "build", "Cannot create DLA engine, 2 not available"),
    (["8.6.1", "10.3.0"], ["--builderOptimizationLevel=x"], 1, "parse", "stoi"),
    (["8.6.1", "11.1.0"], ["--builderOptimizationLevel=9"], 1, "build", "not in 0-5"),
    # std::out_of_range is no invalid_argument: it passes the parser's catch to main's (10.x, 11.x)
    (NEW, ["--useDLACore=99999999999"], 1, "uncaught", "Uncaught exception detected: stoi"),
    (["10.3.0", "11.1.0"], ["--iterations=ten"], 1, "parse", "stoi"),
    (["10.3.0"], ["--warmUp=soon"], 1, "parse", "stof"),
    (["10.3.0"], ["--sparsity=maybe"], 1, "parse", "Unknown sparsity mode: maybe"),
    (["8.5.2", "10.13.3"], ["--precisionConstraints=strict"], 1, "parse", "Unknown precision constraints: strict"),
    (NEW, ["--skipInference=no"], 0, "", ""),  # stringToValue<bool>: any value sets a flag (8.5: --buildOnly)
    (ALL, ["--allowGPUFallback=0"], 0, "", ""),
]


def _stand_in():
    spec = importlib.util.spec_from_file_location("trtexec_standin", STAND_IN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stand_in():
    return _stand_in()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy2(PREBUILT / "model.fp32.onnx", tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_DLA_CORES", "2")
    for name in ("FAKE_TRT_ARGV", "FAKE_ENGINE_BYTES"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _run(stand_in, monkeypatch, capsys, version: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("FAKE_TRT_CODE", str(version_code(version)))
    rc = stand_in.main(["--onnx=m.onnx", "--saveEngine=e.engine", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(("versions", "args", "rc", "where", "says"), CASES,
                         ids=[f"{'+'.join(c[1])}@{c[0][0]}" for c in CASES])
def test_stand_in_judges_values_as_trtexec_does(versions, args, rc, where, says, stand_in, folder: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for version in versions:
        got, out, err = _run(stand_in, monkeypatch, capsys, version, *args)
        assert got == rc, (version, args, err)
        assert says in err, (version, args, err)
        engine = folder / "e.engine"
        assert engine.exists() == (rc == 0), version
        if rc == 0:
            assert out.splitlines()[-1].startswith("&&&& PASSED")
            engine.unlink()
            continue
        last = out.splitlines()[-1]
        # a parse error in 11.x returns without the FAILED line; a failed build (or an exception main catches)
        # always reports it
        assert last.startswith("&&&& FAILED") == (where != "parse" or version_code(version) < 110000), (version, out)


def test_out_of_range_aborts_8_5(stand_in, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """8.5.2's main catches only std::invalid_argument: std::stoi's out_of_range terminates it."""
    rc, out, err = _run(stand_in, monkeypatch, capsys, "8.5.2", "--useDLACore=99999999999")
    assert rc == 134 and "std::out_of_range" in err and "&&&& FAILED" not in out


def test_a_static_model_takes_no_shapes(stand_in, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import onnx

    model = onnx.load(str(folder / "m.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # batch fixed at 1
    onnx.save(model, str(folder / "m.onnx"))
    rc, out, err = _run(stand_in, monkeypatch, capsys, "10.3.0", f"--minShapes={GOOD}")
    assert rc == 1 and "Static model does not take explicit shapes" in err
    assert _run(stand_in, monkeypatch, capsys, "10.3.0")[0] == 0


def test_a_missing_calibration_cache_is_random_calibration(stand_in, folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys) -> None:
    """trtexec does not fail on --calib naming no file: RndInt8Calibrator (sampleEngines.cpp) calibrates on
    random data. The stand-in builds too, and says so in the engine it writes."""
    rc, out, err = _run(stand_in, monkeypatch, capsys, "10.3.0", "--int8", "--calib=missing.cache")
    assert rc == 0 and "calibrates on random data" in err
    assert (folder / "e.engine").read_bytes() == b"stand-in engine bytes (random calibration)"
    shutil.copy2(PREBUILT / "calib.cache", folder / "present.cache")
    rc, out, err = _run(stand_in, monkeypatch, capsys, "10.3.0", "--int8", "--calib=present.cache")
    assert rc == 0 and (folder / "e.engine").read_bytes() == b"stand-in engine bytes"


def test_profile_is_not_judged(stand_in, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """--profile changes how the shape options are read (by position); the stand-in does not model it and
    says so with exit status 2 instead of guessing."""
    rc, out, err = _run(stand_in, monkeypatch, capsys, "10.3.0", "--profile=0", f"--minShapes={GOOD}")
    assert rc == 2 and "not modelled" in err


def test_the_stand_in_reads_onnx_inputs_as_onnx_does(stand_in) -> None:
    """Its small protobuf reader (no onnx import per trtexec call) against the onnx package, on every model
    of the committed bundle and on one with a fixed batch and an initializer listed among the inputs."""
    import onnx

    def reference(model: onnx.ModelProto) -> dict:
        inits = {i.name for i in model.graph.initializer}
        return {i.name: [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in i.type.tensor_type.shape.dim] for i in model.graph.input if i.name not in inits}

    for path in sorted(PREBUILT.glob("*.onnx")):
        assert stand_in.onnx_inputs(str(path)) == reference(onnx.load(str(path))), path
    model = onnx.load(str(PREBUILT / "model.fp32.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    model.graph.input.append(onnx.helper.make_tensor_value_info(model.graph.initializer[0].name, 1, [3]))
    data = model.SerializeToString()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.onnx").write_bytes(data)
        got = stand_in.onnx_inputs(str(Path(tmp) / "m.onnx"))
    assert got == reference(model) == {"input": [4, 3, 32, 32]}
