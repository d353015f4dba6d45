"""Bad inputs as a new user tries them (issue 17): every file kind the commands read, damaged or of the
wrong kind; every output that is a folder, a file, unwritable or on a missing parent; folders that hold
another model's run. Each must give one `edge-resnet: error:` line (the last on stderr), exit 1, and
leave every existing file as it was.

The commands run in process through ``cli.main`` (tests/export/util.run_cli); the few checks that need
a real process (a read-only mount) run the console script.

"Unwritable": tests run as root here, and root ignores file modes, so a chmod'ed folder would not
refuse anything. The folders used instead refuse root too: /sys/kernel (sysfs: no new files) and a
read-only bind mount inside a private mount namespace (``unshare -m``). Where neither works the
test is skipped and says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_resnet.deploy import make_bundle
from edge_resnet.pipeline import ExportOptions, export_run
from tests.export.util import entries, one_line_error, run_cli, tree
from tests.helpers import torch_threads
from tests.tiny_model import other_checkpoint, tiny_checkpoint
from tests.fs import unwritable_dir

# the slow lane: each bad input against real runs, mostly through the command line (`pytest -m "not slow"` leaves them out)
pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "edge-resnet"
FAST = ["--num-calib", "64", "--batch-size", "64", "--calib-method", "max"]


# ---------------------------------------------------------------- fixtures: one run and one bundle, read-only


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return other_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def run(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`export --int8` of the tiny model (read-only: copy it before changing anything)."""
    out = tmp_path_factory.mktemp("bad_inputs") / "run"
    with torch_threads(1):
        result = export_run(ExportOptions(model=str(ckpt), int8=True, calib_method="max", num_calib=64,
                                          batch_size=64, output=str(out)))
    assert result.passed, result.report.failures
    return out


@pytest.fixture(scope="module")
def bundle(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(run, tmp_path_factory.mktemp("bad_inputs_bundle") / "resnet8-bundle", samples=16).folder


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of one test, so a stray default output (runs/...) would show up in it."""
    w = tmp_path / "work"
    w.mkdir()
    monkeypatch.chdir(w)
    return w


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def _rehash(folder: Path, name: str) -> None:
    """Make the manifest vouch for ``name`` as it is now (a file damaged *and* re-listed, so the reader
    itself must notice, not the checksum)."""
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name]["sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    m["files"][name]["bytes"] = (folder / name).stat().st_size
    (folder / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------- 1. another model's run is never replaced


def test_export_into_another_models_run_is_refused_before_anything_is_written(
        run: Path, other: Path, tmp_path: Path, work: Path) -> None:
    target = _copy(run, tmp_path / "runA")
    before = tree(target)
    line = one_line_error(*run_cli("export", "--int8", "--model", str(other), "--output", str(target), *FAST),
                          str(target), "holds the run of another model", "--output", "--force", "model.pt")
    assert "calib.json" in line and "manifest.json" in line  # it says what --force would replace
    assert tree(target) == before and entries(target) == sorted(before)  # not a byte changed, no temp file
    assert os.listdir(work) == []


def test_force_replaces_the_other_run_and_says_what_it_replaces(
        run: Path, other: Path, tmp_path: Path, work: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = _copy(run, tmp_path / "runA")
    for name in ("last.pt", "train.json", "eval-digits-test.json"):  # the other run's training files
        (target / name).write_bytes(b"of the other run")
    caplog.set_level(logging.WARNING)
    rc, _, err = run_cli("export", "--int8", "--model", str(other), "--output", str(target), "--force", *FAST)
    assert rc in (0, 3), err  # 3: the 1-epoch model may miss the gate; the files are written either way
    assert "replacing the run of another model" in caplog.text and "last.pt" in caplog.text
    assert (target / "model.pt").read_bytes() == other.read_bytes()
    assert not {"last.pt", "train.json", "eval-digits-test.json"} & set(os.listdir(target))
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["files"]["model.pt"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_exporting_again_into_the_same_models_run_needs_no_force(run: Path, ckpt: Path, tmp_path: Path,
                                                                  work: Path) -> None:
    target = _copy(run, tmp_path / "runA")
    rc, out, err = run_cli("export", "--int8", "--model", str(ckpt), "--output", str(target), *FAST)
    assert rc == 0, err
    assert "(reused)" in out  # the same weights: even the calibration is reused


def _variant(ckpt: Path, dst: Path, *, run_id: str | None, nudge: float) -> Path:
    """A checkpoint like ``ckpt`` with its fc bias moved by ``nudge`` and the given training-run id."""
    obj = torch.load(ckpt, weights_only=True)
    obj["state_dict"]["fc.bias"] = obj["state_dict"]["fc.bias"] + nudge
    if run_id is None:
        obj.pop("run_id", None)
    else:
        obj["run_id"] = run_id
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, dst)
    return dst


def test_a_newer_checkpoint_of_the_same_training_run_replaces_its_export(ckpt: Path, tmp_path: Path,
                                                                         work: Path) -> None:
    """Training on and exporting again into the export folder is the normal loop; a checkpoint of another
    training run, or the same run's checkpoint over the training folder itself, is refused."""
    run_id = torch.load(ckpt, weights_only=True)["run_id"]
    assert run_id  # training names its run in every checkpoint
    out = tmp_path / "export"
    first = _variant(ckpt, tmp_path / "train" / "model.pt", run_id=run_id, nudge=0.0)
    assert run_cli("export", "--model", str(first), "--output", str(out))[0] == 0
    newer = _variant(ckpt, tmp_path / "train" / "model.pt", run_id=run_id, nudge=0.01)
    assert run_cli("export", "--model", str(newer), "--output", str(out))[0] == 0
    assert (out / "model.pt").read_bytes() == newer.read_bytes()
    stranger = _variant(ckpt, tmp_path / "elsewhere" / "model.pt", run_id="another-run", nudge=0.02)
    before = tree(out)
    one_line_error(*run_cli("export", "--model", str(stranger), "--output", str(out)), "holds the run of another")
    assert tree(out) == before
    # the training folder itself (it has last.pt): its model.pt is the run's best, never replaced by another epoch
    training = tmp_path / "train"
    shutil.copy(first, training / "last.pt")
    older = _variant(ckpt, tmp_path / "old" / "model.pt", run_id=run_id, nudge=-0.01)
    before = tree(training)
    one_line_error(*run_cli("export", "--model", str(older), "--output", str(training)),
                   "another checkpoint of that training run")
    assert tree(training) == before


def test_last_pt_into_its_own_folder_is_refused_with_or_without_output(run: Path, tmp_path: Path, work: Path) -> None:
    target = _copy(run, tmp_path / "runA")
    shutil.copy(target / "model.pt", target / "last.pt")
    before = tree(target)
    for extra in ([], ["--output", str(target)]):
        one_line_error(*run_cli("export", "--model", str(target / "last.pt"), *extra), "would replace the model.pt")
    assert tree(target) == before


def test_train_refuses_a_folder_that_holds_a_model(run: Path, tmp_path: Path, work: Path) -> None:
    target = _copy(run, tmp_path / "runA")  # an export folder: model.pt and manifest.json, no last.pt
    before = tree(target)
    one_line_error(*run_cli("train", "--model", "resnet8", "--epochs", "1", "--output", str(target)),
                   "already holds a model", "model.pt", "--output")
    assert tree(target) == before


def _run_of_another_model(run: Path, other: Path, dst: Path) -> Path:
    """A run directory whose model.pt (and manifest entry) is the other checkpoint."""
    target = _copy(run, dst)
    shutil.copy(other, target / "model.pt")
    _rehash(target, "model.pt")
    return target


def test_bundle_of_another_model_is_refused_unless_forced(run: Path, bundle: Path, other: Path, tmp_path: Path,
                                                          work: Path) -> None:
    out = _copy(bundle, tmp_path / "resnet8-bundle")
    elsewhere = _run_of_another_model(run, other, tmp_path / "runB")
    before = tree(out)
    one_line_error(*run_cli("bundle", str(elsewhere), "--output", str(out), "--samples", "8"),
                   "holds the bundle of another model", str(run), "--force")
    assert tree(out) == before
    assert run_cli("bundle", str(elsewhere), "--output", str(out), "--samples", "8", "--force")[0] == 0
    made = json.loads((out / "manifest.json").read_text())["bundle"]
    assert made["source_run"] == str(elsewhere)
    assert made["source_checkpoint_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    # the same run again (a re-bundle): no --force needed
    assert run_cli("bundle", str(elsewhere), "--output", str(out), "--samples", "4")[0] == 0


def test_bench_output_in_another_models_run_is_refused(run: Path, other: Path, tmp_path: Path, work: Path) -> None:
    elsewhere = _run_of_another_model(run, other, tmp_path / "runB")
    before = tree(elsewhere)
    one_line_error(*run_cli("bench", str(run), "--output", str(elsewhere), "--backends", "onnx-fp32",
                            "--batch", "1"), "another model", "--output")
    assert tree(elsewhere) == before


# ---------------------------------------------------------------- 2. damaged or wrong files, one kind at a time


def _junk(path: Path, how: str) -> Path:
    data = path.read_bytes() if path.exists() else b""
    path.write_bytes({"truncated": data[: len(data) // 2], "junk": os.urandom(64) + b"\x00junk",
                      "empty": b""}[how])
    return path


class _Payload:
    def __reduce__(self):  # unpickling would call os.system: the loader must refuse it, naming it
        return (os.system, ("echo PWNED",))


def _checkpoint_case(case: str, ckpt: Path, tmp: Path) -> tuple[list[str], str]:
    bad = tmp / "bad"
    bad.mkdir()
    if case == "truncated":
        p = _junk(Path(shutil.copy(ckpt, bad / "model.pt")), "truncated")
        return ["eval", "--model", str(p)], "truncated"
    if case == "junk":
        return ["export", "--model", str(_junk(bad / "model.pt", "junk"))], "not a PyTorch file"
    if case == "a folder":
        return ["eval", "--model", str(bad)], "is a folder"
    if case == "a calib.json":
        p = bad / "calib.json"
        p.write_text('{"format": "edge-resnet/calib-1"}')
        return ["export", "--model", str(p), "--output", str(tmp / "o")], "not a PyTorch file"
    if case == "unsafe pickle":
        obj = torch.load(ckpt, weights_only=True)
        obj["extra"] = _Payload()
        torch.save(obj, bad / "model.pt")
        return ["train", "--model", str(bad / "model.pt"), "--epochs", "1", "--output", str(tmp / "o")], \
            "refused as unsafe"
    if case == "weights junk":
        return ["train", "--model", "resnet8", "--weights", str(_junk(bad / "w.pth", "junk")), "--epochs", "1",
                "--output", str(tmp / "o")], "not a PyTorch file"
    if case == "damaged last.pt (--resume)":
        shutil.copy(ckpt, bad / "model.pt")
        _junk(Path(shutil.copy(ckpt, bad / "last.pt")), "truncated")
        return ["train", "--resume", "--output", str(bad)], "truncated"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated", "junk", "a folder", "a calib.json", "unsafe pickle", "weights junk",
                                  "damaged last.pt (--resume)"])
def test_checkpoint(case: str, ckpt: Path, tmp_path: Path, work: Path) -> None:
    argv, fragment = _checkpoint_case(case, ckpt, tmp_path)
    before = tree(tmp_path / "bad")
    line = one_line_error(*run_cli(*argv), fragment)
    if case == "unsafe pickle":
        assert "posix.system" in line and "truncated" not in line  # named as unsafe, with the global torch saw
    assert tree(tmp_path / "bad") == before and not (tmp_path / "o").exists() and os.listdir(work) == []


@pytest.mark.parametrize("case", ["junk", "truncated", "JSON list", "JSON of another shape", "calib.cache",
                                  "report.json", "a folder", "ranges missing"])
def test_pinned_calib(case: str, run: Path, ckpt: Path, tmp_path: Path, work: Path) -> None:
    """--calib is the user's own file: say what is wrong with it, never "delete it"."""
    path = tmp_path / "pinned.json"
    if case in ("calib.cache", "report.json"):
        path = run / case
    elif case == "a folder":
        path = tmp_path
    elif case == "ranges missing":
        doc = json.loads((run / "calib.json").read_text())
        del doc["amax"]["input"]
        path.write_text(json.dumps(doc))
    else:
        path.write_text({"junk": "\x00\x01 not json", "truncated": (run / "calib.json").read_text()[:200],
                         "JSON list": "[1, 2, 3]", "JSON of another shape": '{"amax": {"input": 1.0}}'}[case])
    fragment = {"calib.cache": "TensorRT calibration cache", "ranges missing": "no range for 1",
                "a folder": "is a folder"}.get(case, "not")
    line = one_line_error(*run_cli("export", "--int8", "--model", str(ckpt), "--calib", str(path),
                                   "--output", str(tmp_path / "o")), "--calib", str(path), fragment)
    assert "delete" not in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["junk", "truncated", "JSON list", "NaN range"])
def test_damaged_calib_json_in_the_run_is_recomputed(damage: str, run: Path, tmp_path: Path, work: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    target = _copy(run, tmp_path / "runA")
    calib = target / "calib.json"
    if damage == "JSON list":
        calib.write_text("[]")
    elif damage == "NaN range":
        calib.write_text(calib.read_text().replace('"input": ', '"input": NaN, "was": ', 1))
    else:
        _junk(calib, damage)
    caplog.set_level(logging.WARNING)
    rc, out, err = run_cli("export", "--int8", "--model", str(target), *FAST)
    assert rc == 0, err
    assert "recalibrating" in caplog.text and str(calib) in caplog.text
    assert "computed in" in out  # not "(reused)"
    assert json.loads(calib.read_text())["amax"]["input"] > 0


MANIFEST_DAMAGE = {
    "junk": lambda m: "{not json",
    "a JSON list": lambda m: "[]",
    "unknown format": lambda m: json.dumps({**m, "format": "someone-else/manifest-9"}),
    "a field of the wrong type": lambda m: json.dumps({**m, "files": {k: {**v, "bytes": "many"}
                                                                      for k, v in m["files"].items()}}),
    "a file outside the folder": lambda m: json.dumps({**m, "files": {**m["files"], "../model.pt": {
        "sha256": "0" * 64, "role": "x"}}}),
}
MANIFEST_READERS = {
    "trtexec-cmd": lambda d: ["trtexec-cmd", str(d), "--trt", "10.3"],
    "bundle": lambda d: ["bundle", str(d), "--output", str(d.parent / "b"), "--samples", "4"],
    "bench": lambda d: ["bench", str(d), "--backends", "onnx-fp32", "--batch", "1"],
    "camera": lambda d: ["camera", str(d.parent / "none.mp4"), "--run", str(d), "--no-display"],
    "verify": lambda d: ["verify", "--bundle", str(d), "--onnx", "model.fp32.onnx"],
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
@pytest.mark.parametrize("command", list(MANIFEST_READERS))
def test_manifest(command: str, damage: str, run: Path, bundle: Path, tmp_path: Path, work: Path) -> None:
    folder = _copy(bundle if command == "verify" else run, tmp_path / "d")
    raw = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(MANIFEST_DAMAGE[damage](raw))
    before = tree(tmp_path)
    one_line_error(*run_cli(*MANIFEST_READERS[command](folder)), "manifest.json")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["trtexec-cmd", "bench"])
def test_report_json_where_a_manifest_is_wanted(command: str, run: Path, work: Path) -> None:
    argv = {"trtexec-cmd": ["trtexec-cmd", str(run / "report.json"), "--trt", "10.3"],
            "bench": ["bench", str(run / "report.json")]}[command]
    one_line_error(*run_cli(*argv), "report.json")


@pytest.mark.parametrize("damage", ["junk", "truncated", "no logits", "object array"])
def test_validation_npz(damage: str, bundle: Path, tmp_path: Path, work: Path) -> None:
    folder = _copy(bundle, tmp_path / "b")
    npz = folder / "validation.npz"
    if damage in ("junk", "truncated"):
        _junk(npz, damage)
    else:
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        if damage == "no logits":
            del arrays["logits"]
        else:
            arrays["labels"] = np.array([{"a": 1}] * len(arrays["labels"]), dtype=object)
        with open(npz, "wb") as f:
            np.savez(f, **arrays)
    _rehash(folder, "validation.npz")
    one_line_error(*run_cli("verify", "--bundle", str(folder), "--onnx", "model.fp32.onnx"), "validation")
    assert not (folder / "device_report.json").exists()


@pytest.mark.parametrize("command", ["verify", "camera", "lint", "bench"])
def test_onnx(command: str, run: Path, bundle: Path, tmp_path: Path, work: Path) -> None:
    junk = _junk(tmp_path / "model.onnx", "junk")
    if command == "verify":
        argv = ["verify", "--bundle", str(_copy(bundle, tmp_path / "b")), "--onnx", str(junk)]
    elif command == "camera":
        argv = ["camera", str(tmp_path / "none.mp4"), "--run", str(run), "--model", str(junk), "--no-display"]
    elif command == "lint":
        argv = ["lint", str(junk)]
    else:  # the run's own file damaged and re-listed in its manifest, so the child process itself must notice:
        # the bench's rule for a row that cannot run (say why, go on with the others) gives one reason line
        folder = _copy(run, tmp_path / "r")
        _junk(folder / "model.fp32.onnx", "junk")
        _rehash(folder, "model.fp32.onnx")
        rc, out, err = run_cli("bench", str(folder), "--backends", "onnx-fp32", "--batch", "1", "--output",
                               str(tmp_path / "o"))
        assert rc == 0 and "Traceback" not in out + err
        assert f"ONNX Runtime FP32 (model.fp32.onnx) skipped: onnxruntime cannot load {folder}/model.fp32.onnx" in out
        return
    one_line_error(*run_cli(*argv), "model")


@pytest.mark.parametrize("case", ["no key beside it", "a junk key", "a junk engine with a key"])
def test_engine(case: str, bundle: Path, tmp_path: Path, work: Path) -> None:
    folder = _copy(bundle, tmp_path / "b")
    engine = folder / "x.engine"
    engine.write_bytes(b"not a TensorRT plan")
    if case == "a junk key":
        (folder / "x.engine.json").write_text("{")
    elif case == "a junk engine with a key":
        from edge_resnet.export.build_plan import BuildOptions, plan_build
        from edge_resnet.export.engine import engine_key
        from edge_resnet.contract.engine import System, write_sidecar

        orin = System(gpu="NVIDIA Jetson AGX Orin", compute_capability="8.7", tensorrt="10.3.0", jetpack="6.2",
                      l4t="36.4.3")
        write_sidecar(engine, engine_key(folder, plan_build("10.3", BuildOptions(), {"model.int8.onnx"}), orin))
    fragment = "TensorRT" if case == "a junk engine with a key" else "no readable key"
    one_line_error(*run_cli("verify", "--bundle", str(folder), "--engine", str(engine), "--no-rebuild"), fragment)
    assert not (folder / "device_report.json").exists()


@pytest.mark.parametrize("case", ["a folder", "under a file"])
def test_timing_cache(case: str, bundle: Path, tmp_path: Path, work: Path) -> None:
    """The timing cache is read and rewritten by the engine build; a path that cannot be one fails before
    TensorRT is even looked for (its content only TensorRT can judge: see the TensorRT-marked tests)."""
    folder = _copy(bundle, tmp_path / "b")
    if case == "a folder":
        (folder / "timing.cache").mkdir()
        value = "timing.cache"
    else:
        (folder / "notes").write_text("x")
        value = "notes/timing.cache"
    before = tree(folder)
    one_line_error(*run_cli("build-engine", str(folder), "--timing-cache", value), "--timing-cache")
    assert tree(folder) == before


def test_tampered_archive_leaves_nothing_unpacked(bundle: Path, tmp_path: Path, work: Path) -> None:
    """Point 4: every checksum is verified in a hidden temp folder; the bundle's folder appears only when
    all hold, and on failure nothing stays beside the archive."""
    import tarfile

    src = _copy(bundle, tmp_path / "src" / "resnet8-bundle")
    data = bytearray((src / "model.int8.onnx").read_bytes())
    data[-9] ^= 0x40
    (src / "model.int8.onnx").write_bytes(bytes(data))
    where = tmp_path / "device"
    where.mkdir()
    archive = where / "resnet8-bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="resnet8-bundle")
    line = one_line_error(*run_cli("verify", "--bundle", str(archive), "--onnx", "model.fp32.onnx"),
                          "resnet8-bundle/model.int8.onnx", "does not match the sha256", "nothing was unpacked")
    assert ".tmp" not in line
    assert entries(where) == ["resnet8-bundle.tar.gz"]  # no folder, no hidden temp folder


# ---------------------------------------------------------------- 2. outputs: a file, unwritable, a missing parent


FOLDER_OUTPUTS = {
    "train": lambda o: ["train", "--model", "resnet8", "--epochs", "1", "--output", str(o)],
    "export": lambda o: ["export", "--model", "{ckpt}", "--output", str(o)],
    "experiment": lambda o: ["experiment", "degradation", "--models", "plain8", "resnet8", "--epochs", "1",
                             "--output", str(o)],
    "bench": lambda o: ["bench", "{run}", "--backends", "onnx-fp32", "--batch", "1", "--output", str(o)],
    "bundle": lambda o: ["bundle", "{run}", "--samples", "4", "--output", str(o)],
}
FILE_OUTPUTS = {
    "eval --json": lambda o: ["eval", "--model", "{ckpt}", "--json", str(o)],
    "camera --summary": lambda o: ["camera", "{video}", "--run", "{run}", "--no-display", "--jsonl", "off",
                                   "--summary", str(o)],
    "camera --save": lambda o: ["camera", "{video}", "--run", "{run}", "--no-display", "--jsonl", "off",
                                "--save", str(o) if str(o).endswith(".mp4") else str(o) + ".mp4"],
    "camera --jsonl": lambda o: ["camera", "{video}", "--run", "{run}", "--no-display", "--jsonl", str(o)],
}


def _fill(argv: list[str], **values: Path) -> list[str]:
    return [a.format(**{k: str(v) for k, v in values.items()}) for a in argv]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(3):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("kind", ["a file", "unwritable", "unwritable parent", "under a file"])
@pytest.mark.parametrize("command", list(FOLDER_OUTPUTS))
def test_folder_output(command: str, kind: str, ckpt: Path, run: Path, tmp_path: Path, work: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a user's file")
    out = {"a file": blocker, "unwritable": unwritable_dir() if kind == "unwritable" else None,
           "unwritable parent": (unwritable_dir() / "new" / "out") if kind == "unwritable parent" else None,
           "under a file": blocker / "out"}[kind]
    run_before = tree(run)
    one_line_error(*run_cli(*_fill(FOLDER_OUTPUTS[command](out), ckpt=ckpt, run=run)), str(out if kind != "under a file"
                                                                                        else blocker))
    assert blocker.read_text() == "a user's file" and tree(run) == run_before
    assert sorted(os.listdir(tmp_path)) == ["blocker", "work"] and os.listdir(work) == []


@pytest.mark.parametrize("kind", ["a folder", "unwritable", "under a file"])
@pytest.mark.parametrize("command", list(FILE_OUTPUTS))
def test_file_output(command: str, kind: str, ckpt: Path, run: Path, video: Path, tmp_path: Path, work: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a user's file")
    folder = tmp_path / "a-folder.mp4"
    folder.mkdir()
    out = {"a folder": folder, "unwritable": (unwritable_dir() / "out.mp4") if kind == "unwritable" else None,
           "under a file": blocker / "out.mp4"}[kind]
    run_before = tree(run)
    one_line_error(*run_cli(*_fill(FILE_OUTPUTS[command](out), ckpt=ckpt, run=run, video=video)))
    assert blocker.read_text() == "a user's file" and tree(run) == run_before and os.listdir(folder) == []
    assert sorted(os.listdir(tmp_path)) == ["a-folder.mp4", "blocker", "work"] and os.listdir(work) == []


@pytest.mark.parametrize("command", ["export", "bench", "eval --json", "camera --summary"])
def test_missing_parent_folders_are_created(command: str, ckpt: Path, run: Path, video: Path, tmp_path: Path,
                                            work: Path) -> None:
    out = tmp_path / "new" / "deeper" / ("out.json" if " " in command else "out")
    table = FILE_OUTPUTS if " " in command else FOLDER_OUTPUTS
    argv = _fill(table[command](out), ckpt=ckpt, run=run, video=video)
    if command == "bench":
        argv += ["--seconds", "0.05", "--warmup", "0", "--iterations", "2", "--min-iterations", "1", "--no-plot"]
    rc, _, err = run_cli(*argv)
    assert rc == 0, err
    assert out.exists() and not [p for p in entries(tmp_path) if ".tmp" in p]


def _readonly(folder: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The console script with ``folder`` mounted read-only in a private mount namespace (root ignores modes)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return subprocess.run([str(EXE), *argv], capture_output=True, text=True, timeout=300)
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot mount {folder} read-only here ({probe.stderr.decode()[:100]})")
    return subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), str(EXE), *argv], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("command", ["verify", "export"])
def test_a_read_only_run_or_bundle_folder(command: str, run: Path, bundle: Path, tmp_path: Path) -> None:
    folder = _copy(bundle if command == "verify" else run, tmp_path / "ro")
    before = tree(folder)
    argv = (["verify", "--bundle", str(folder), "--onnx", "model.fp32.onnx"] if command == "verify"
            else ["export", "--int8", "--model", str(folder), *FAST])
    proc = _readonly(folder, argv)
    one_line_error(proc.returncode, proc.stdout, proc.stderr, str(folder),
                   "Read-only file system" if os.geteuid() == 0 else "Permission denied")
    assert tree(folder) == before


# ---------------------------------------------------------------- issue 23.5: numbers that make no sense

# (command line with RUN, BUNDLE and MODEL standing for the fixtures' paths, what the one line must say). Each is
# refused by the parser (edge_resnet.cli._common.Bounded) before the command runs: `quantize --size 0` used to
# write a whole run.
NUMBERS = [
    ("quantize MODEL --calib-data RUN --size 0", "--size must be >= 1, got 0"),
    ("quantize MODEL --calib-data RUN --resize -256", "--resize must be >= 1, got -256"),
    ("quantize MODEL --calib-data RUN --num-verify 0", "--num-verify must be >= 1, got 0"),
    ("quantize MODEL --calib-data RUN --num-calib -5", "--num-calib must be >= 1, got -5"),
    ("quantize MODEL --calib-data RUN --every 0", "--every must be >= 1, got 0"),
    ("quantize MODEL --calib-data RUN --seed -1", "--seed must be >= 0, got -1"),
    ("quantize MODEL --calib-data RUN --tolerance -1", "--tolerance must be between 0 and 100, got -1.0"),
    ("quantize MODEL --calib-data RUN --percentile nan", "--percentile must be in (0, 100], got nan"),
    ("quantize MODEL --calib-data RUN --memory-budget 0", "--memory-budget must be > 0, got 0.0"),
    ("quantize MODEL --calib-data RUN --threads -2", "--threads must be >= 0, got -2"),
    ("export --int8 --batch-size 0", "--batch-size must be >= 1, got 0"),
    ("export --int8 --tolerance inf", "--tolerance must be between 0 and 100, got inf"),
    ("export --int8 --threads 0", "--threads must be >= 1, got 0"),
    ("export --int8 --fallback-max -1", "--fallback-max must be >= 0, got -1"),
    ("export --int8 --calib-seed -3", "--calib-seed must be >= 0, got -3"),
    ("train --epochs 0", "--epochs must be >= 1, got 0"),
    ("train --lr 0", "--lr must be > 0, got 0.0"),
    ("train --momentum 1.5", "--momentum must be in [0, 1), got 1.5"),
    ("train --input-size -32", "--input-size must be >= 1, got -32"),
    ("eval --batch-size 0", "--batch-size must be >= 1, got 0"),
    ("experiment degradation --limit-train 0", "--limit-train must be >= 1, got 0"),
    ("qat RUN --epochs 0", "--epochs must be >= 1, got 0"),
    ("qat RUN --lr -0.0001", "--lr must be > 0, got -0.0001"),
    ("sensitivity RUN --images 0", "--images must be >= 1, got 0"),
    ("bundle RUN --samples 0", "--samples must be between 1 and 5000, got 0"),
    ("bench RUN --batch 8 0", "--batch must be >= 1, got 0"),
    ("bench RUN --seconds 0", "--seconds must be > 0, got 0.0"),
    ("bench RUN --warmup -1", "--warmup must be >= 0, got -1"),
    ("camera 0 --run RUN --timeout 0", "--timeout must be > 0, got 0.0"),
    ("camera 0 --run RUN --max-frames 0", "--max-frames must be >= 1, got 0"),
    ("camera 0 --run RUN --fps -30", "--fps must be >= 1, got -30"),
    ("camera 0 --run RUN --flip-method 8", "--flip-method must be between 0 and 7, got 8"),
    ("build-engine BUNDLE --batch 1 0 32", "--batch must be >= 1, got 0"),
    ("build-engine BUNDLE --opt-level 6", "--opt-level must be between 0 and 5, got 6"),
    ("trtexec-cmd RUN --trt 10.3 --workspace 0", "--workspace must be >= 1, got 0"),
]


@pytest.mark.parametrize("line, says", NUMBERS, ids=[c for c, _ in NUMBERS])
def test_a_number_out_of_its_range_is_refused_by_the_parser_in_one_line(line: str, says: str, run: Path, bundle: Path,
                                                                        work: Path) -> None:
    before_run, before_bundle = tree(run), tree(bundle)
    argv = [{"RUN": str(run), "BUNDLE": str(bundle), "MODEL": str(run / "model.fp32.onnx")}.get(w, w)
            for w in line.split()]
    rc, out, err = run_cli(*argv)
    assert one_line_error(rc, out, err, says) == f"edge-resnet: error: {says}"
    assert err.count("\n") == 1 and out == ""  # nothing ran: no log line, no progress, no table
    assert entries(work) == [] and tree(run) == before_run and tree(bundle) == before_bundle


# ---------------------------------------------------------------- 5 and 6: what is said, once, and where


def _calibration_folder(root: Path, good: int, junk: int, color: tuple[int, int, int] | None = None) -> Path:
    """``good`` PNGs (digits, or one flat colour) and ``junk`` files named like JPEGs."""
    from PIL import Image

    from edge_resnet.data.digits import read_digits

    root.mkdir(parents=True)
    images, _ = read_digits()
    for i in range(good):
        img = Image.new("RGB", (32, 32), color) if color is not None else Image.fromarray(images[i]).resize((32, 32))
        img.save(root / f"{i}.png")
    for i in range(junk):
        (root / f"junk{i}.jpg").write_bytes(os.urandom(300))
    return root


def test_small_calibration_set_is_warned_and_named_in_the_gate_line(ckpt: Path, tmp_path: Path, work: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """19 candidates, 4 of them junk, all black: the INT8 ranges only see the background, the gate fails, and
    both the warning and the failure line say how many images the ranges came from."""
    folder = _calibration_folder(tmp_path / "few", good=15, junk=4, color=(0, 0, 0))
    caplog.set_level(logging.INFO)
    rc, _, err = run_cli("export", "--int8", "--target", "tensorrt", "--model", str(ckpt), "--calib-data",
                         str(folder), "--calib-method", "max", "--output", str(tmp_path / "o"))
    assert rc == 3, err
    warned = [r.getMessage() for r in caplog.records if "calibrating on only" in r.getMessage()]
    assert len(warned) == 1 and "15 images (4 more could not be read)" in warned[0] and "fewer than 100" in warned[0]
    failed = json.loads((tmp_path / "o" / "report.json").read_text())["failures"]
    assert failed and all("from 15 calibration images" in f for f in failed if "INT8" in f), failed
    assert any("model.int8.onnx" in f for f in failed)  # the shipped file that failed is named
    assert err.rstrip("\n").splitlines()[-1] == "edge-resnet: accuracy gate failed: " + "; ".join(failed)


def test_each_unreadable_calibration_image_is_warned_once(ckpt: Path, tmp_path: Path, work: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """auto reads the calibration set twice (statistics, then scoring the calibrators): one warning per file."""
    folder = _calibration_folder(tmp_path / "mixed", good=12, junk=3)
    caplog.set_level(logging.DEBUG)
    rc, _, err = run_cli("export", "--int8", "--target", "tensorrt", "--model", str(ckpt), "--calib-data",
                         str(folder), "--output", str(tmp_path / "o"))
    assert rc in (0, 3), err
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for i in range(3):
        assert sum(f"junk{i}.jpg" in w for w in warnings) == 1, warnings
    assert sum("unreadable ones were skipped" in w for w in warnings) == 1, warnings


@pytest.mark.parametrize("source", ["junk images", "a damaged video"])
def test_the_error_line_is_the_last_line_after_library_noise(source: str, ckpt: Path, tmp_path: Path) -> None:
    """The real console script: FFmpeg's own complaints and our warnings come first, the error line last."""
    if source == "junk images":
        calib = _calibration_folder(tmp_path / "junk", good=0, junk=5)
    else:
        cv2 = pytest.importorskip("cv2")
        calib = tmp_path / "clip.mp4"
        writer = cv2.VideoWriter(str(calib), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
        for i in range(20):
            writer.write(np.full((32, 32, 3), 10 * i, np.uint8))
        writer.release()
        calib.write_bytes(calib.read_bytes()[:-400])  # the index at the end is cut: FFmpeg says "moov atom..."
    proc = subprocess.run([str(EXE), "export", "--int8", "--model", str(ckpt), "--calib-data", str(calib),
                           "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = one_line_error(proc.returncode, proc.stdout, proc.stderr, str(calib))
    noise = proc.stderr.splitlines()[:-1]
    assert noise, "the case should make noise before the error"
    assert len(noise) == len(set(noise)), noise  # nothing said twice
    assert line == proc.stderr.rstrip("\n").splitlines()[-1]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 9. an interrupted first-time export resumes


_KILLED_EXPORT = """
import dataclasses, os, signal, sys
import edge_resnet.training as training
real_train = training.train
def short(cfg, **kw):  # a short first training: the export asks for the default budget
    return real_train(dataclasses.replace(cfg, epochs=2, batch_size=32), **kw)
training.train = short
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith("last.pt"):  # epoch 1 saved: killed as a user's Ctrl-\\ or the OOM killer would
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_export_killed_during_its_first_training_resumes_it(tmp_path: Path, work: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    repo = Path(__file__).resolve().parents[1]
    argv = ["export", "--int8", "--model", "resnet8", *FAST]
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, *argv], cwd=work, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    run_dir = work / "runs" / "resnet8-digits"
    assert {"model.pt", "last.pt"} <= set(os.listdir(run_dir))  # model.pt exists after epoch 1 already
    assert torch.load(run_dir / "last.pt", weights_only=True)["train_state"]["epoch"] == 1
    caplog.set_level(logging.INFO)
    rc, out, err = run_cli(*argv)
    assert rc in (0, 3), err  # (a 2-epoch model may miss the INT8 gate; the point is what was exported)
    assert "stopped after epoch 1 of 2" in caplog.text and "resuming" in caplog.text
    state = torch.load(run_dir / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    exported = torch.load(run_dir / "model.pt", weights_only=True)
    assert exported["epoch"] == state["best_epoch"]  # the finished training's best, not epoch 1's leftover
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["files"]["model.pt"]["sha256"] == hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest()
    caplog.clear()
    assert run_cli(*argv)[0] in (0, 3)  # finished now: exported as it is, no training
    assert "training" not in caplog.text and "resuming" not in caplog.text


def test_an_unfinished_run_named_by_path_is_exported_with_a_warning(ckpt: Path, tmp_path: Path, work: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    shutil.copy(ckpt, folder / "model.pt")
    last = torch.load(ckpt, weights_only=True)
    last["train_state"] = {"epoch": 3, "config": {"epochs": 30}}
    torch.save(last, folder / "last.pt")
    caplog.set_level(logging.WARNING)
    rc, _, err = run_cli("export", "--model", str(folder / "model.pt"), "--output", str(tmp_path / "o"))
    assert rc == 0, err
    assert "stopped after epoch 3 of 30" in caplog.text and "train --resume" in caplog.text
