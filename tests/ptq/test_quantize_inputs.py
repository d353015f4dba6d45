"""`edge-resnet quantize` on video and (paced, as live) sources through the camera app's reader, and on bad input:
one line, non-zero exit, nothing half-written, another model's run left alone."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import onnx
import pytest

from edge_resnet.cli import main
from edge_resnet.runtime.manifest import load_manifest
from tests.runtime.videos import write_video
from tests.tiny_model import listing


def _quantize(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(["quantize", *argv])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", 60)


def test_video_file_every_kth_frame(capsys, digits_run: Path, clip: Path, tmp_path: Path) -> None:
    """Every 3rd frame of the file; every 5th frame taken is held out until 3 are: 12 calibrate."""
    out = tmp_path / "q"
    rc, err = _quantize(capsys, str(digits_run / "model.fp32.onnx"), "--calib-data", str(clip), "--every", "3",
                        "--num-calib", "12", "--num-verify", "3", "--calib-method", "max", "--tolerance", "100",
                        "--output", str(out))
    assert rc == 0, err
    calib = json.loads((out / "calib.json").read_text())
    assert calib["images"] == 12 and "every 3 frames" in calib["data"]
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 3 and report["labelled"] is False  # a video has no labels: agreement is judged
    assert report["reference"] == "the FP32 ONNX source (model.fp32.onnx)"
    load_manifest(out, verify=True)


def test_paced_reader_reads_at_the_file_rate_as_a_camera(capsys, digits_run: Path, clip: Path,
                                                         tmp_path: Path) -> None:
    """--pace plays the file at 30 fps through the newest-frame buffer, as a live camera: 10 frames taken
    every 2nd read need about 20 frames, so no less than half a second."""
    out = tmp_path / "q"
    start = time.monotonic()
    rc, err = _quantize(capsys, str(digits_run / "model.fp32.onnx"), "--calib-data", str(clip), "--pace", "--every",
                        "2", "--num-calib", "8", "--num-verify", "2", "--calib-method", "max", "--tolerance", "100",
                        "--output", str(out))
    assert rc == 0, err
    assert time.monotonic() - start >= 0.5
    calib = json.loads((out / "calib.json").read_text())
    assert 1 <= calib["images"] <= 8 and "paced" in calib["data"]


@pytest.mark.parametrize("source,says", [("ftp://cam/x", "unknown source scheme"),
                                         ("missing.mp4", "does not exist"), ("photo.png", "single image")])
def test_bad_calibration_sources_are_one_line(capsys, digits_run: Path, tmp_path: Path, source: str,
                                              says: str) -> None:
    if source == "photo.png":
        from PIL import Image

        source = str(tmp_path / source)
        Image.new("RGB", (8, 8)).save(source)
    out = tmp_path / "q"
    rc, err = _quantize(capsys, str(digits_run / "model.fp32.onnx"), "--calib-data", source, "--output", str(out))
    assert rc == 1 and len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert not out.exists()


def test_unreadable_model_is_one_line(capsys, digit_images: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    rc, err = _quantize(capsys, str(bad), "--calib-data", str(digit_images), "--output", str(tmp_path / "q"))
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "not a readable ONNX model" in err
    assert not (tmp_path / "q").exists()


def test_a_failed_run_leaves_a_good_run_as_it_was(capsys, digits_run: Path, digit_images: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "q"
    args = [str(digits_run / "model.fp32.onnx"), "--num-calib", "24", "--num-verify", "8", "--calib-method", "max",
            "--output", str(out)]
    assert _quantize(capsys, *args, "--calib-data", str(digit_images))[0] == 0
    before = listing(out)
    rc, err = _quantize(capsys, *args, "--calib-data", str(tmp_path / "nothing-here"))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert listing(out) == before
    load_manifest(out, verify=True)
    # the same model again: its own run is replaced without --force
    assert _quantize(capsys, *args, "--calib-data", str(digit_images))[0] == 0


def test_another_models_run_needs_force(capsys, digits_run: Path, digit_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    args = ["--calib-data", str(digit_images), "--num-calib", "24", "--num-verify", "8", "--calib-method", "max",
            "--output", str(out)]
    assert _quantize(capsys, str(digits_run / "model.fp32.onnx"), *args)[0] == 0
    before = listing(out)
    changed = tmp_path / "changed.onnx"  # another file (other bytes), without a manifest beside it
    m = onnx.load(str(digits_run / "model.fp32.onnx"))
    m.producer_version = "another"
    onnx.save(m, str(changed))
    rc, err = _quantize(capsys, str(changed), *args, "--size", "32", "--mean", "0.3,0.3,0.3", "--std", "0.4,0.4,0.4")
    assert rc == 1 and "another model's run" in err and "--force" in err, err
    assert listing(out) == before
    rc, err = _quantize(capsys, str(changed), *args, "--size", "32", "--force", "--tolerance", "100")
    assert rc == 0, err
    assert load_manifest(out).model["source"] == str(changed)


def test_refusals_before_any_work(capsys, digits_run: Path, digit_images: Path, tmp_path: Path) -> None:
    model = str(digits_run / "model.fp32.onnx")
    cases = {
        "fixes the preprocessing": [model, "--size", "64"],
        "would replace the files of the run": [model, "--output", str(digits_run)],
        "--num-calib must be >= 1": [model, "--num-calib", "0"],
        "--mean takes three": [str(tmp_path / "m.onnx"), "--mean", "1,2"],
    }
    shutil.copy2(model, tmp_path / "m.onnx")
    for says, argv in cases.items():
        rc, err = _quantize(capsys, *argv, "--calib-data", str(digit_images))
        assert rc == 1 and says in err and len(err.strip().splitlines()) == 1, (says, err)


def test_a_write_failure_leaves_no_manifest(capsys, digits_run: Path, digit_images: Path, tmp_path: Path) -> None:
    """A folder where model.int8.onnx must go: the write fails in one line, and no manifest vouches for the rest."""
    out = tmp_path / "q"
    (out / "model.int8.onnx").mkdir(parents=True)
    rc, err = _quantize(capsys, str(digits_run / "model.fp32.onnx"), "--calib-data", str(digit_images),
                        "--num-calib", "24", "--num-verify", "8", "--calib-method", "max", "--output", str(out),
                        "--force")
    assert rc == 1 and "cannot write" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
