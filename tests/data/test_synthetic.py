"""The synthetic-digits dataset: pinned bytes, labels from the source digits, splits kept apart.

The checksums pin the generator: any change to the rendering (or to the random stream) shows up
here, and then ``GENERATOR_VERSION`` must be bumped so stale calibrations are not reused.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edge_resnet.data import dataset_name, load_dataset
from edge_resnet.data.datasets import stratified_split
from edge_resnet.data.digits import DIGITS_FRACTIONS, read_digits
from edge_resnet.data.synthetic import NAME, SCENES_PER_DIGIT, SIZE, render

# sha256 of the first 32 scenes of each split (seed 0), and their first labels
PINNED = {
    "train": ("11244730d09acd621f9c21cbf531ffbf96af09c57234452d23b851f49733b5ec", [0, 0, 0, 0, 1, 1, 1, 1, 3, 3, 3, 3]),
    "val": ("57c357a67bd098276e9c17793303408e9b47eb07740d3b5e304e33d6d91afe97", [7, 7, 7, 7, 3, 3, 3, 3, 1, 1, 1, 1]),
    "test": ("ef4b6d601469311a5c56f25bdf1ece8dd3caa74d77f72ef73776d3a2bf1ee616", [2, 2, 2, 2, 8, 8, 8, 8, 9, 9, 9, 9]),
}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic-digits")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_first_scenes_and_labels_are_pinned(data, split: str) -> None:
    part = data.split(split)
    digest, labels = PINNED[split]
    assert hashlib.sha256(part.images[:32].tobytes()).hexdigest() == digest
    assert part.labels[:12] == labels


def test_labels_are_the_source_digits_labels(data) -> None:
    """Independent of the generator: scene k of a split shows source digit k // 4 of that split."""
    _, labels = read_digits()
    for split, idx in zip(("train", "val", "test"), stratified_split(labels, DIGITS_FRACTIONS, 0), strict=True):
        expected = np.repeat(labels[idx], SCENES_PER_DIGIT[split]).tolist()
        assert data.split(split).labels == expected


def test_shapes_name_and_synthetic_label(data) -> None:
    assert data.name == NAME == dataset_name("synthetic-digits")
    assert (len(data.train), len(data.val), len(data.test)) == (5032, 716, 1440)
    img, label = data.test[0]
    assert img.size == (SIZE, SIZE) and img.mode == "RGB" and isinstance(label, int)
    assert "synthetic" in data.summary()
    assert data.flip_invariant is False
    assert all(0.3 < m < 0.7 for m in data.mean) and all(0.1 < s < 0.4 for s in data.std)


def test_render_is_independent_of_the_chunk_size() -> None:
    digits = read_digits()[0][:20].astype(np.float64) / 255
    a, src_a = render(digits, "val", 3, chunk=7)
    b, src_b = render(digits, "val", 3, chunk=256)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(src_a, np.repeat(np.arange(20), 3))
    np.testing.assert_array_equal(src_a, src_b)


def test_scenes_are_not_copies_of_each_other(data) -> None:
    """Four scenes of one source digit differ (colour, pose, clutter), so the task is not memorisation."""
    imgs = data.train.images[:4].reshape(4, -1).astype(np.int64)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(imgs[i] - imgs[j]).mean() > 20
