"""The benchmark's frames: photographs from a folder, video frames, and the bundled digits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_resnet.bench.frames import load_frames
from edge_resnet.data.digits import read_digits
from edge_resnet.errors import EdgeResNetError

import skimage.data as skdata  # a dev dependency: missing, these tests fail loudly rather than skip


def test_folder_of_photographs_skips_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.fromarray(skdata.astronaut()).save(tmp_path / "a.png")
    Image.fromarray(skdata.camera()).save(tmp_path / "sub" / "b.jpg")  # grey, in a subfolder
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    frames = load_frames(tmp_path)
    assert frames.order == "RGB" and len(frames.images) == 2
    assert [f.shape for f in frames.images] == [(512, 512, 3), (512, 512, 3)]
    assert np.array_equal(frames.images[0], skdata.astronaut())
    assert frames.describe()["sizes"] == ["512x512"]
    # batches cycle through the frames from the given position
    assert [id(f) for f in frames.batch(3, 1)] == [id(frames.images[i]) for i in (1, 0, 1)]


def test_video_frames_stay_bgr(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), (255, 0, 10 * i), np.uint8))  # blue in BGR
    writer.release()
    frames = load_frames(path)
    assert frames.order == "BGR" and len(frames.images) == 5 and frames.images[0].shape == (48, 64, 3)
    assert frames.images[0][..., 0].mean() > 200 and frames.images[0][..., 1].mean() < 30


def test_default_frames_are_the_training_digits() -> None:
    """The torch-free reader gives the same pixels as the training side's read_digits."""
    frames = load_frames(None)
    images, _ = read_digits()
    assert len(frames.images) == 32
    for got, grey in zip(frames.images, images[:32], strict=True):
        assert got.shape == (8, 8, 3) and got.dtype == np.uint8
        assert np.array_equal(got, np.repeat(grey[..., None], 3, axis=-1))


def test_no_readable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(EdgeResNetError, match="holds no readable image"):
        load_frames(tmp_path)
    with pytest.raises(EdgeResNetError, match="neither an image"):
        load_frames(tmp_path / "notes.txt")
