"""`edge-resnet export` and `edge-resnet lint` through ``cli.main`` (and once through the real console script).

Every test that runs the command changes into its own tmp_path first, so a default output
(runs/...) can never land in the repository, and "no file was written" can be checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from edge_resnet import cli
from edge_resnet.calibration.files import load_calibration
from edge_resnet.data.digits import read_digits
from edge_resnet.contract import EXIT_TOLERANCE
from tests.tiny_model import copy_checkpoint, listing, tiny_checkpoint

# the slow lane: exports of real runs through the command line (`pytest -m "not slow"` leaves them out)
pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "edge-resnet"
FAST = ["--num-calib", "64", "--batch-size", "32"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def run(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """`export --int8 --calib-method max` into a fresh folder; (run dir, its stdout, its stderr)."""
    out = tmp_path_factory.mktemp("cli_export") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(["export", "--model", str(ckpt), "--int8", "--calib-method", "max", *FAST, "--output", str(out)])
    assert rc == 0, stdout.getvalue()[-2000:] + stderr.getvalue()[-2000:]
    return out, stdout.getvalue(), stderr.getvalue()


def user_error(rc: int, captured: pytest.CaptureResult[str], *fragments: str) -> str:
    """Exit 1 and exactly one `edge-resnet: error:` line, the last on stderr; no traceback."""
    assert rc == 1, captured.out[-2000:] + captured.err[-2000:]
    assert "Traceback" not in captured.out + captured.err
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("edge-resnet: error:")]
    assert len(errors) == 1, captured.err
    assert captured.err.rstrip("\n").splitlines()[-1] == errors[0]
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def _digit_frames(n: int, size: int = 32) -> list[np.ndarray]:
    images, _ = read_digits()
    return [np.repeat(cv2.resize(images[i], (size, size), interpolation=cv2.INTER_NEAREST)[..., None], 3, axis=-1)
            for i in range(n)]


# ---------------------------------------------------------------- the happy path, as printed


def test_export_prints_calibration_table_lint_and_files(run: tuple[Path, str, str]) -> None:
    out, printed, err = run
    assert "calibration: max on 64 images of digits (train split)" in printed
    for name in ("PyTorch FP32", "simulated INT8 (PyTorch)", "ONNX Runtime FP32",
                 "ONNX Runtime INT8 (TensorRT target)", "ONNX Runtime INT8 (CPU target)"):
        assert name in printed, name
    assert "ONNX Runtime FP16" not in printed  # no --fp16
    assert "QDQ lint (TensorRT rules): clean" in printed
    # the verdict is the last line on stderr, with its reference, the set and the worst file's bounds and SQNR
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("edge-resnet: accuracy gate passed: every shipped file within 1.00 top-1 points of "
                           "PyTorch FP32 on 360 test images; worst: "), last
    assert "95% bounds" in last and "logit SQNR" in last
    assert "Reference: PyTorch FP32." in (out / "report.md").read_text()
    assert f"wrote {out}/" in printed
    assert {"model.int8.onnx", "model.int8.cpu.onnx", "calib.cache", "manifest.json"} <= set(os.listdir(out))


# ---------------------------------------------------------------- calibration sources


def test_calib_data_folder_of_pngs_in_subfolders(ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "camera"
    # a plain folder of unlabeled images: some at the top, some one and two levels down (with
    # images at the top it is not an ImageFolder, whose own train split alone would be used)
    for i, frame in enumerate(_digit_frames(24)):
        sub = [root, root / f"day{i % 2}", root / f"day{i % 2}" / "night"][i % 3]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(sub / f"{i}.png")
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(ckpt), "--int8", "--calib-data", str(root), "--calib-method", "max",
                   *FAST, "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    calib = load_calibration(out / "calib.json")
    assert calib.images == 24 and calib.skipped == 0  # every image, however deep
    assert str(root) in calib.data
    assert f"on 24 images of {calib.data}" in capsys.readouterr().out


def test_calib_data_video_every_second_frame(ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    assert writer.isOpened()
    for frame in _digit_frames(20):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(ckpt), "--int8", "--calib-data", str(video), "--every", "2",
                   "--calib-method", "max", *FAST, "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    calib = load_calibration(out / "calib.json")
    assert calib.images == 10  # frames 0, 2, ..., 18
    assert calib.data.startswith(f"video {video}") and "every 2nd frame" in calib.data


# ---------------------------------------------------------------- the tolerance gate


def _black_folder(root: Path, n: int = 8) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 32)).save(root / f"{i}.png")
    return root


def test_tolerance_gate_exits_3_and_still_writes_the_report(ckpt: Path, tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    # Calibrating on black images measures the background only: the input range becomes
    # |0 - mean| / std (0.81) instead of the strokes' 1.84, and every activation range is what a
    # blank image produces. Digit strokes then saturate everywhere and INT8 top-1 collapses to
    # about chance (measured: 97% -> ~11%), far beyond any tolerance; the FP32 rows are untouched.
    monkeypatch.chdir(tmp_path)
    black = _black_folder(tmp_path / "black")
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(ckpt), "--int8", "--calib-data", str(black), "--calib-method", "max",
                   "--fallback-max", "0", *FAST, "--output", str(out)])  # the gate itself, no fallback
    captured = capsys.readouterr()
    assert rc == EXIT_TOLERANCE == 3, captured.err
    assert "Traceback" not in captured.out + captured.err
    last = captured.err.rstrip("\n").splitlines()[-1]  # the verdict and its reason, last on stderr
    assert last.startswith("edge-resnet: accuracy gate failed: ONNX Runtime INT8 (TensorRT target), model.int8.onnx, "
                           "lost "), captured.err
    assert "even at its 95% lower bound" in last  # ~86 points lost on 360 images: established, not noise
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["failures"] and report["verdict"] == "failed"
    assert last == "edge-resnet: " + report["verdict_line"]
    # no FP32 backend failed
    assert not any(f.startswith(("PyTorch FP32", "ONNX Runtime FP32")) for f in report["failures"]), report["failures"]
    rows = {r["key"]: r for r in report["backends"]}
    assert rows["onnxruntime_tensorrt"]["drop"] > 10
    assert "FAILED" in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accuracy"]["passed"] is False


# ---------------------------------------------------------------- bad input: one line, exit 1, nothing written


@pytest.mark.parametrize("case, fragment", [
    ("missing checkpoint", "no checkpoint at"),
    ("missing calib data", "does not exist"),
    ("calib data is one image", "is a single image"),
    ("num-calib 0", "--num-calib must be >= 1"),
    ("unknown model name", "unknown model 'resnet9000'"),
    ("calib data without int8", "add --int8"),
    ("missing pinned calib", "no calibration file"),
])
def test_bad_input(case: str, fragment: str, ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (32, 32), (200, 200, 200)).save(image)
    model = ["--model", str(ckpt)]
    args = {
        "missing checkpoint": ["--model", str(tmp_path / "nothere" / "model.pt"), "--int8"],
        "missing calib data": [*model, "--int8", "--calib-data", str(tmp_path / "nothere")],
        "calib data is one image": [*model, "--int8", "--calib-data", str(image)],
        "num-calib 0": [*model, "--int8", "--num-calib", "0"],
        "unknown model name": ["--model", "resnet9000", "--int8"],
        "calib data without int8": [*model, "--calib-data", str(image.parent)],
        "missing pinned calib": [*model, "--int8", "--calib", str(tmp_path / "calib.json")],
    }[case]
    before = listing(ckpt.parent)
    rc = cli.main(["export", *args, "--output", str(tmp_path / "out")])
    user_error(rc, capsys.readouterr(), fragment)
    assert not (tmp_path / "out").exists()
    assert os.listdir(work) == []
    assert listing(ckpt.parent) == before


def test_unknown_calib_method_is_a_usage_error(ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--model", str(ckpt), "--int8", "--calib-method", "bogus", "--output", "out"])
    assert e.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_pinned_calibration_of_another_model(run: tuple[Path, str, str], ckpt: Path, tmp_path: Path, monkeypatch,
                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)
    doc = json.loads((run[0] / "calib.json").read_text())
    doc["fingerprint"]["model"] = "0" * 64  # as if computed for other weights
    pinned = tmp_path / "calib.json"
    pinned.write_text(json.dumps(doc))
    rc = cli.main(["export", "--model", str(ckpt), "--int8", "--calib", str(pinned), "--output", "out"])
    line = user_error(rc, capsys.readouterr(), "--calib", str(pinned), "other model weights")
    assert "leave out --calib" in line
    assert os.listdir(tmp_path) == ["calib.json"]


def test_pinned_calibration_of_this_model(run: tuple[Path, str, str], ckpt: Path, tmp_path: Path, monkeypatch,
                                          capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["export", "--model", str(ckpt), "--int8", "--target", "tensorrt",
                   "--calib", str(run[0] / "calib.json"), "--batch-size", "64", "--output", "out"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "(reused)" in captured.out
    assert load_calibration(tmp_path / "out" / "calib.json") == load_calibration(run[0] / "calib.json")
    assert not (tmp_path / "out" / "model.int8.cpu.onnx").exists()  # --target tensorrt only


# ---------------------------------------------------------------- without --int8, and the default model


def test_export_without_int8(ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["export", "--model", str(ckpt), "--output", "out"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    files = set(os.listdir(tmp_path / "out"))
    assert {"model.fp32.onnx", "report.json", "report.md", "manifest.json"} <= files
    assert not {f for f in files if "int8" in f or f.startswith("calib")}, files
    assert "calibration:" not in captured.out and "QDQ lint" not in captured.out


def test_registry_name_finds_the_default_run_checkpoint(ckpt: Path, tmp_path: Path, monkeypatch, capsys,
                                                        caplog) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = Path("runs") / "resnet8-digits"
    copy_checkpoint(ckpt, run_dir)
    caplog.set_level(logging.INFO)
    rc = cli.main(["export", "--model", "resnet8", "--int8", "--calib-method", "max", *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"wrote {run_dir}/" in captured.out
    files = set(os.listdir(run_dir))
    assert {"model.int8.onnx", "calib.json", "manifest.json"} <= files
    assert not {"train.json", "last.pt"} & files  # it did not train
    assert "training" not in caplog.text
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["files"]["model.pt"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert os.listdir(tmp_path) == ["runs"]


# ---------------------------------------------------------------- lint


def test_lint_our_int8_model_is_clean(run: tuple[Path, str, str], capsys) -> None:
    assert cli.main(["lint", str(run[0] / "model.int8.onnx")]) == 0
    captured = capsys.readouterr()
    assert "clean" in captured.out and captured.err == ""


def test_lint_fp32_model_has_no_qdq(run: tuple[Path, str, str], capsys) -> None:
    assert cli.main(["lint", str(run[0] / "model.fp32.onnx")]) == 1
    captured = capsys.readouterr()
    assert "[no-qdq]" in captured.out
    assert "1 violation(s)" in captured.err


def test_lint_names_the_node_with_a_nonzero_zero_point(run: tuple[Path, str, str], tmp_path: Path, capsys) -> None:
    model = onnx.load(str(run[0] / "model.int8.onnx"))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "input")
    zp = next(i for i in model.graph.initializer if i.name == q.input[2])
    assert not numpy_helper.to_array(zp).any()  # symmetric as exported
    zp.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(zp), 3), zp.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    assert cli.main(["lint", str(broken)]) == 1
    captured = capsys.readouterr()
    named = [ln for ln in captured.out.splitlines() if ln.startswith(f"{q.name}:")]
    assert named, captured.out
    assert "violation(s)" in captured.err


@pytest.mark.parametrize("content", [None, b"hello, not a protobuf\n", b'{"ir_version": 8}'])
def test_lint_missing_or_non_onnx_file(content: bytes | None, tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    fragment = "no ONNX file at" if content is None else "is not a readable ONNX model"
    user_error(cli.main(["lint", str(path)]), capsys.readouterr(), fragment, str(path))


def test_lint_empty_file_is_not_a_model(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    user_error(cli.main(["lint", str(path)]), capsys.readouterr(), "is not a readable ONNX model")


# ---------------------------------------------------------------- the real console script


def _exe(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_console_script_exit_codes(run: tuple[Path, str, str], ckpt: Path, tmp_path: Path) -> None:
    black = _black_folder(tmp_path / "black")
    cases = [
        (0, ["lint", run[0] / "model.int8.onnx"]),
        (1, ["export", "--model", ckpt, "--int8", "--num-calib", "0", "--output", "out"]),
        (2, ["export", "--model", ckpt, "--int8", "--calib-method", "bogus"]),
        (3, ["export", "--model", ckpt, "--int8", "--target", "tensorrt", "--calib-data", black,
             "--calib-method", "max", "--batch-size", "64", "--output", "gate"]),
    ]
    for code, args in cases:
        proc = _exe(*args, cwd=tmp_path)
        assert proc.returncode == code, (args, proc.stdout[-1500:], proc.stderr[-1500:])
        assert "Traceback" not in proc.stdout + proc.stderr, args
        if code == 1:
            assert [ln for ln in proc.stderr.splitlines() if ln.startswith("edge-resnet: error:")] == [
                "edge-resnet: error: --num-calib must be >= 1, got 0"]
    assert not (tmp_path / "out").exists()
    assert json.loads((tmp_path / "gate" / "report.json").read_text())["passed"] is False


def test_model_may_be_a_moved_run_directory(run: tuple[Path, str, str], tmp_path: Path, monkeypatch, capsys) -> None:
    """--model DIR uses DIR/model.pt and DIR as the output; its calib.json still fits after the move."""
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(run[0], moved)
    rc = cli.main(["export", "--model", str(moved), "--int8", "--calib-method", "max", *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "(reused)" in captured.out and f"wrote {moved}/" in captured.out
    assert os.listdir(tmp_path) == ["moved"]


# ---------------------------------------------------------------- the run directory stays consistent


def test_exporting_another_checkpoint_into_its_own_directory_is_refused(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    copy_checkpoint(ckpt, run_dir)
    shutil.copy(run_dir / "model.pt", run_dir / "last.pt")
    before = listing(run_dir)
    rc = cli.main(["export", "--model", str(run_dir / "last.pt"), *FAST])
    user_error(rc, capsys.readouterr(), "model.pt", "--output")
    assert listing(run_dir) == before


def test_unreadable_calibration_images_fail_before_any_file_is_written(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(os.urandom(300))
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(ckpt), "--int8", "--calib-data", str(bad), *FAST, "--output", str(out)])
    user_error(rc, capsys.readouterr())
    assert not out.exists() or listing(out) == {}


def test_a_later_export_removes_what_it_does_not_rewrite(run: tuple[Path, str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    assert (out / "model.int8.cpu.onnx").exists() and (out / "calib.json").exists()
    assert cli.main(["export", "--model", str(out / "model.pt"), *FAST]) == 0  # FP32 only now
    names = set(listing(out))
    assert {"model.int8.onnx", "model.int8.cpu.onnx", "calib.json", "calib.cache"}.isdisjoint(names)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["int8"] is None


def test_a_pinned_calibration_replaces_the_run_directorys(run: tuple[Path, str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    pinned = tmp_path / "pinned.json"
    assert cli.main(["export", "--model", str(out / "model.pt"), "--int8", "--calib-method", "entropy", *FAST,
                     "--output", str(tmp_path / "other")]) == 0
    shutil.copy(tmp_path / "other" / "calib.json", pinned)
    assert load_calibration(out / "calib.json").method == "max"
    assert cli.main(["export", "--model", str(out / "model.pt"), "--int8", "--calib", str(pinned), *FAST]) == 0
    assert load_calibration(out / "calib.json") == load_calibration(pinned)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(ckpt: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["export", "--model", str(ckpt), "--device", "cuda", "--output", str(tmp_path / "o")])
    user_error(rc, capsys.readouterr(), "--device cuda")
    assert not (tmp_path / "o").exists()
