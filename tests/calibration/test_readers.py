"""Calibration readers on real files: PNG/JPEG written with PIL, an MJPG video written with OpenCV."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from edge_resnet.calibration.readers import VIDEO_EXTENSIONS, CalibrationData, open_calibration_data
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.data import eval_transform, load_dataset
from edge_resnet.errors import DataError

SPEC = PreprocessSpec(input_size=32, resize=32)
# identity normalisation: tensor values are pixel/255, so tests can read pixel values back
PLAIN = PreprocessSpec(input_size=32, resize=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
# frame i of the test video is filled with grey level i * FRAME_STEP (MJPG is lossy by ~1 level)
FRAME_STEP = 6
N_FRAMES = 40


def _write_image(path: Path, value: int, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _all(data: CalibrationData, batch_size: int = 64) -> torch.Tensor:
    return torch.cat(list(data.batches(batch_size)))


def _grey_levels(batch: torch.Tensor) -> list[int]:
    """The (uniform) grey level of each image of a PLAIN-preprocessed batch."""
    return [int(round(float(img.mean()) * 255)) for img in batch]


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 48))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(np.full((48, 48, 3), i * FRAME_STEP, np.uint8))
    writer.release()
    return path


# ----------------------------------------------------------------------------- bundled dataset


def test_digits_batches_match_eval_transform_of_the_train_split() -> None:
    train = load_dataset("digits", seed=0).train
    data = open_calibration_data(None, SPEC, num=100_000)
    assert data.kind == "dataset" and data.name == "digits (train split)"
    assert len(data) == len(train)
    batches = list(data.batches(batch_size=256))
    assert [b.shape[0] for b in batches[:-1]] == [256] * (len(batches) - 1)
    assert all(b.dtype == torch.float32 and b.shape[1:] == (3, 32, 32) for b in batches)
    assert data.images == len(train) and data.skipped == 0
    transform = eval_transform(SPEC)
    expected = torch.stack([transform(train[i][0]) for i in range(256)])
    torch.testing.assert_close(batches[0], expected)


def test_digits_num_and_seed() -> None:
    a = open_calibration_data("digits", SPEC, num=50, seed=1)
    b = open_calibration_data("digits", SPEC, num=50, seed=1)
    c = open_calibration_data("digits", SPEC, num=50, seed=2)
    ta, tb, tc = _all(a, 16), _all(b, 16), _all(c, 16)
    assert len(a) == 50 and ta.shape == (50, 3, 32, 32)
    assert [x.shape[0] for x in a.batches(16)] == [16, 16, 16, 2]
    torch.testing.assert_close(ta, tb)
    assert not torch.equal(ta, tc)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_dataset_seed_changes_the_train_split_and_fingerprint() -> None:
    a = open_calibration_data("digits", SPEC, num=50, dataset_seed=0)
    b = open_calibration_data("digits", SPEC, num=50, dataset_seed=1)
    assert a.fingerprint != b.fingerprint


def _write_cifar(root: Path, per_batch: int = 20) -> Path:
    """A miniature CIFAR-10 python-batch folder (same format, a few images per batch)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def test_cifar_folder_is_a_dataset_source(tmp_path: Path) -> None:
    root = _write_cifar(tmp_path / "cifar")
    data = open_calibration_data(root, SPEC, num=30, seed=0)
    assert data.kind == "dataset" and data.name == "cifar10 (train split)" and len(data) == 30
    assert _all(data).shape == (30, 3, 32, 32)
    fp = data.fingerprint
    assert open_calibration_data(root, SPEC, num=30, seed=0).fingerprint == fp
    target = root / "data_batch_3"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert open_calibration_data(root, SPEC, num=30, seed=0).fingerprint != fp


# ----------------------------------------------------------------------------- folders


def test_plain_folder_is_read_recursively(tmp_path: Path) -> None:
    for i, rel in enumerate(["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.jpeg"]):
        _write_image(tmp_path / rel, 50 * i)
    (tmp_path / "notes.txt").write_text("not an image")
    data = open_calibration_data(tmp_path, PLAIN)
    assert data.kind == "images" and len(data) == 4
    assert "4 images" in data.name
    batch = _all(data)
    assert batch.shape == (4, 3, 32, 32) and data.images == 4
    # sorted path order: a.png, b.jpg, sub/c.png, sub/deeper/d.jpeg (JPEG within a level or two)
    assert all(abs(got - want) <= 2 for got, want in zip(_grey_levels(batch), [0, 50, 100, 150], strict=True))


def test_imagefolder_with_train_uses_only_train(tmp_path: Path) -> None:
    for split, value in (("train", 10), ("val", 200), ("test", 250)):
        for cls in ("cat", "dog"):
            for k in range(3):
                _write_image(tmp_path / split / cls / f"{k}.png", value)
    data = open_calibration_data(tmp_path, PLAIN)
    assert data.kind == "imagefolder" and len(data) == 6
    assert set(_grey_levels(_all(data))) == {10}


def test_class_folders_without_splits_are_an_imagefolder(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        _write_image(tmp_path / cls / "x.png", 1)
    assert open_calibration_data(tmp_path, SPEC).kind == "imagefolder"


def test_folder_num_and_seed(tmp_path: Path) -> None:
    for i in range(30):
        _write_image(tmp_path / f"{i:02d}.png", 8 * i)
    a = open_calibration_data(tmp_path, PLAIN, num=10, seed=0)
    b = open_calibration_data(tmp_path, PLAIN, num=10, seed=0)
    c = open_calibration_data(tmp_path, PLAIN, num=10, seed=5)
    levels_a, levels_c = _grey_levels(_all(a)), _grey_levels(_all(c))
    assert len(a) == 10 and len(levels_a) == 10 and "10 of 30 images" in a.name
    assert levels_a == sorted(levels_a) and len(set(levels_a)) == 10  # read in sorted order, no repeats
    assert levels_a == _grey_levels(_all(b))
    assert levels_a != levels_c


def test_fewer_candidates_than_num_uses_all_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(3):
        _write_image(tmp_path / f"{i}.png", i)
    with caplog.at_level(logging.INFO, logger="edge_resnet.calibration"):
        data = open_calibration_data(tmp_path, SPEC, num=512)
    assert len(data) == 3
    assert "all 3 are used" in caplog.text


def test_corrupt_image_is_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_image(tmp_path / "good1.png", 10)
    _write_image(tmp_path / "good2.jpg", 20)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    data = open_calibration_data(tmp_path, SPEC)
    assert len(data) == 3
    with caplog.at_level(logging.WARNING, logger="edge_resnet.calibration"):
        batch = _all(data)
    assert batch.shape[0] == 2 and data.images == 2 and data.skipped == 1
    assert str(bad) in caplog.text
    # counters describe the last iteration, not a running total
    _all(data)
    assert data.images == 2 and data.skipped == 1


def test_all_corrupt_raises(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(rng.bytes(500))
    data = open_calibration_data(tmp_path, SPEC)
    with pytest.raises(DataError, match="none of the 3"):
        list(data.batches())
    assert data.skipped == 3 and data.images == 0


# ----------------------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*folder of images, a video"):
        open_calibration_data(tmp_path / "nope", SPEC)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="has no .*images"):
        open_calibration_data(tmp_path, SPEC)


def test_empty_train_folder_names_train(tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    _write_image(tmp_path / "val" / "cat" / "0.png", 1)
    with pytest.raises(DataError, match="train/ part"):
        open_calibration_data(tmp_path, SPEC)


def test_single_image_file_says_pass_its_folder(tmp_path: Path) -> None:
    img = _write_image(tmp_path / "one.png", 1)
    with pytest.raises(DataError, match=f"single image.*folder.*{tmp_path.name}"):
        open_calibration_data(img, SPEC)


def test_other_file(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="neither a folder of images nor a video"):
        open_calibration_data(f, SPEC)


def test_unopenable_video(tmp_path: Path) -> None:
    f = tmp_path / "bad.mp4"
    f.write_bytes(np.random.default_rng(2).bytes(1000))
    with pytest.raises(DataError, match="cannot open the video"):
        open_calibration_data(f, SPEC)


def test_video_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 48))
    writer.release()
    with pytest.raises(DataError, match="(no frames|cannot open)"):
        open_calibration_data(path, SPEC)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"num": 0}, "must be >= 1"),
    ({"every": 0}, "every=0"),
])
def test_bad_counts(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    _write_image(tmp_path / "a.png", 1)
    with pytest.raises(DataError, match=pattern):
        open_calibration_data(tmp_path, SPEC, **kwargs)


def test_every_on_a_non_video_is_refused(tmp_path: Path) -> None:
    _write_image(tmp_path / "a.png", 1)
    with pytest.raises(DataError, match="selects video frames"):
        open_calibration_data(tmp_path, SPEC, every=5)


# ----------------------------------------------------------------------------- video


def test_video_every_kth_frame(video: Path) -> None:
    assert video.suffix in VIDEO_EXTENSIONS
    data = open_calibration_data(video, PLAIN, every=5)
    assert data.kind == "video" and "every 5th frame" in data.name
    assert len(data) == 8
    batch = _all(data, batch_size=3)
    assert batch.shape == (8, 3, 32, 32) and data.images == 8 and data.skipped == 0
    frames = [round(level / FRAME_STEP) for level in _grey_levels(batch)]
    assert frames == [0, 5, 10, 15, 20, 25, 30, 35]


def test_video_sampling_reads_the_chosen_frames(video: Path) -> None:
    a = open_calibration_data(video, PLAIN, num=7, seed=3, every=2)
    b = open_calibration_data(video, PLAIN, num=7, seed=4, every=2)
    frames_a = [round(v / FRAME_STEP) for v in _grey_levels(_all(a))]
    frames_b = [round(v / FRAME_STEP) for v in _grey_levels(_all(b))]
    assert len(frames_a) == 7 and frames_a == sorted(set(frames_a))
    assert all(f % 2 == 0 and 0 <= f < N_FRAMES for f in frames_a)
    assert frames_a != frames_b
    assert frames_a == [round(v / FRAME_STEP) for v in _grey_levels(_all(a))]


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    for i in range(12):
        _write_image(folder / f"{i}.png", 10 * i)
    fp = open_calibration_data(folder, SPEC, num=5).fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert open_calibration_data(folder, SPEC, num=5).fingerprint == fp
    assert open_calibration_data(folder, SPEC, num=6).fingerprint != fp
    assert open_calibration_data(folder, SPEC, num=5, seed=1).fingerprint != fp
    other_spec = PreprocessSpec(input_size=32, resize=36)
    assert open_calibration_data(folder, other_spec, num=5).fingerprint != fp
    # rewriting a file (num=12 selects all of them) changes it; decoding is not needed to notice
    fp_all = open_calibration_data(folder, SPEC, num=12).fingerprint
    target = folder / "3.png"
    _write_image(target, 99, size=(41, 48))
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert open_calibration_data(folder, SPEC, num=12).fingerprint != fp_all


def test_video_fingerprint_depends_on_every(video: Path) -> None:
    a = open_calibration_data(video, SPEC, every=2).fingerprint
    assert open_calibration_data(video, SPEC, every=2).fingerprint == a
    assert open_calibration_data(video, SPEC, every=3).fingerprint != a


def test_fingerprint_is_the_same_in_a_new_process(tmp_path: Path) -> None:
    for i in range(4):
        _write_image(tmp_path / f"{i}.png", i)
    code = (
        "import sys\n"
        "from edge_resnet.calibration.readers import open_calibration_data\n"
        "from edge_resnet.contract.preprocess import PreprocessSpec\n"
        "spec = PreprocessSpec(input_size=32, resize=32)\n"
        "print(open_calibration_data(sys.argv[1], spec, num=3).fingerprint)\n"
        "print(open_calibration_data(None, spec, num=20).fingerprint)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=root).stdout.split()
    assert out == [open_calibration_data(tmp_path, SPEC, num=3).fingerprint,
                   open_calibration_data(None, SPEC, num=20).fingerprint]


def test_truncated_video_skips_the_frames_past_its_end(video: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # A cut-off recording still reports its full frame count; the frames past the cut are skipped.
    cut = tmp_path / "cut.avi"
    raw = video.read_bytes()
    cut.write_bytes(raw[: len(raw) * 6 // 10])
    data = open_calibration_data(cut, PLAIN)
    with caplog.at_level(logging.WARNING, logger="edge_resnet.calibration"):
        batch = _all(data, batch_size=8)
    assert data.images == batch.shape[0] > 0 and data.skipped > 0
    assert data.images + data.skipped == len(data)
    frames = [round(v / FRAME_STEP) for v in _grey_levels(batch)]
    assert frames == list(range(len(frames)))
    assert "ended before frame" in caplog.text


def test_imagefolder_without_splits_calibrates_on_its_train_split_only(tmp_path: Path) -> None:
    """The test part of a split-by-seed ImageFolder verifies the export: calibration must not see it."""
    from edge_resnet.data.folder import load_image_folder

    level = {}
    for c, cls in enumerate(("cat", "dog")):
        for i in range(20):
            level[_write_image(tmp_path / cls / f"{i}.png", 10 * i + 5 * c)] = 10 * i + 5 * c
    everything = open_calibration_data(tmp_path, PLAIN, num=1000, dataset_seed=3)
    assert sorted(_grey_levels(_all(everything))) == sorted(level.values())  # a calibration-only folder
    data = open_calibration_data(tmp_path, PLAIN, num=1000, dataset_seed=3, exclude_heldout=True)
    splits = load_image_folder(tmp_path, seed=3)
    seen = sorted(_grey_levels(_all(data)))
    assert seen == sorted(level[p] for p, _ in splits.train.samples)
    assert not set(seen) & {level[p] for p, _ in splits.test.samples}
    assert data.kind == "imagefolder" and "train split" in data.name
    other = open_calibration_data(tmp_path, PLAIN, num=1000, dataset_seed=4, exclude_heldout=True)
    assert sorted(_grey_levels(_all(other))) != seen and other.fingerprint != data.fingerprint
