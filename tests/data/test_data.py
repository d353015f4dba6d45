"""Datasets and preprocessing: bundled digits, splits, the spec and its transforms, ImageFolder, CIFAR-10.

Every image is real: decoded by PIL from the bundled table or from files written under tmp_path.
Transforms are compared with an independent PIL + numpy computation of what the spec says.
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import os
import pickle
import shlex
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from edge_resnet.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from edge_resnet.data import (
    Transformed,
    collate_skip_none,
    dataset_name,
    eval_transform,
    load_dataset,
    stratified_split,
    train_transform,
)
from edge_resnet.data.digits import DIGITS_FRACTIONS, load_digits, read_digits
from edge_resnet.data.folder import ImageFileDataset
from edge_resnet.errors import ConfigError, DataError

# samples per class of the UCI optical digits (the copy scikit-learn ships)
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _all_samples(ds) -> list[tuple[bytes, int]]:
    out = []
    for i in range(len(ds)):
        img, label = ds[i]
        out.append((np.asarray(img).tobytes(), label))
    return out


# ---------------------------------------------------------------- bundled digits

def test_read_digits_matches_the_raw_table() -> None:
    raw = resources.files("edge_resnet.data").joinpath("assets/digits.csv.gz").read_bytes()
    rows = [[int(v) for v in row] for row in csv.reader(io.StringIO(gzip.decompress(raw).decode())) if row]
    table = np.array(rows)
    assert table.shape == (1797, 65)
    images, labels = read_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,)
    assert labels.tolist() == table[:, 64].tolist()
    assert np.bincount(labels).tolist() == DIGITS_CLASS_COUNTS
    # 0..16 stretched to 0..255: 16 -> 255 exactly, 8 -> 127.5 -> 128
    assert table[:, :64].min() == 0 and table[:, :64].max() == 16
    want = np.floor(table[:, :64] * 255 / 16 + 0.5).astype(np.uint8).reshape(-1, 8, 8)
    assert np.array_equal(images, want)
    assert images.max() == 255 and images.min() == 0


def test_digits_splits_partition_the_table_stratified() -> None:
    images, labels = read_digits()
    ds = load_digits(seed=0)
    assert (ds.name, ds.classes, ds.flip_invariant) == ("digits", [str(d) for d in range(10)], False)
    sizes = [len(ds.train), len(ds.val), len(ds.test)]
    assert sum(sizes) == 1797

    # every (image, label) of the table is in exactly one split: the multisets coincide
    table = collections.Counter(
        (np.repeat(img[..., None], 3, axis=-1).tobytes(), int(y)) for img, y in zip(images, labels, strict=True))
    split_samples = [_all_samples(s) for s in (ds.train, ds.val, ds.test)]
    assert collections.Counter(s for part in split_samples for s in part) == table

    for part, frac in zip(split_samples, DIGITS_FRACTIONS, strict=True):
        per_class = np.bincount([y for _, y in part], minlength=10)
        for c in range(10):
            assert abs(per_class[c] - frac * DIGITS_CLASS_COUNTS[c]) <= 1, (c, per_class[c])


def test_digits_splits_are_disjoint_by_index() -> None:
    images, labels = read_digits()
    idx = stratified_split(labels, DIGITS_FRACTIONS, 0)
    assert sum(len(p) for p in idx) == 1797
    assert sorted(i for p in idx for i in p) == list(range(1797))
    ds = load_digits(seed=0)
    for part, split in zip(idx, (ds.train, ds.val, ds.test), strict=True):
        assert [y for _, y in _all_samples(split)] == labels[part].tolist()
        img, _ = split[0]
        assert np.array_equal(np.asarray(img)[..., 1], images[part[0]])


def test_digits_split_depends_on_seed_only() -> None:
    a, b, c = (load_digits(seed=s) for s in (0, 0, 1))
    for split in ("train", "val", "test"):
        assert _all_samples(a.split(split)) == _all_samples(b.split(split))
    assert _all_samples(a.test) != _all_samples(c.test)
    assert a.mean == b.mean and a.std == b.std


def test_digits_images_are_8x8_rgb_with_full_range() -> None:
    ds = load_dataset("digits")
    assert load_dataset(None).summary() == ds.summary()
    img, label = ds.train[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (8, 8)
    assert 0 <= label <= 9
    arr = np.stack([np.asarray(ds.train[i][0]) for i in range(len(ds.train))])
    assert arr.dtype == np.uint8
    assert arr.max() == 255 and arr.min() == 0
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    # the normalisation statistics are those of the train split
    assert ds.mean[0] == pytest.approx(arr.mean() / 255, rel=1e-9)
    assert ds.std[0] == pytest.approx(arr.std() / 255, rel=1e-9)


def test_split_by_name() -> None:
    ds = load_digits(seed=0)
    assert ds.split("val") is ds.val
    with pytest.raises(DataError, match="unknown split"):
        ds.split("validation")


# ---------------------------------------------------------------- stratified_split

def test_stratified_split_known_answers() -> None:
    labels = [0] * 4 + [1] * 10
    train, val = stratified_split(labels, (0.5, 0.5), seed=0)
    assert sorted(train + val) == list(range(14))
    assert [labels[i] for i in train].count(0) == 2 and [labels[i] for i in train].count(1) == 5
    assert train == sorted(train) and val == sorted(val)

    labels = [7] * 10 + [3] * 20
    parts = stratified_split(labels, (0.7, 0.1, 0.2), seed=5)
    counts = [collections.Counter(labels[i] for i in p) for p in parts]
    assert counts == [{7: 7, 3: 14}, {7: 1, 3: 2}, {7: 2, 3: 4}]

    # one sample per class all goes to the first part; the last part takes the remainder
    assert stratified_split([0, 1, 2], (0.7, 0.1, 0.2), seed=0) == [[0, 1, 2], [], []]
    assert stratified_split([4, 4, 4], (0.0, 1.0), seed=0) == [[], [0, 1, 2]]
    assert stratified_split([], (0.8, 0.2), seed=0) == [[], []]


def test_stratified_split_seeds() -> None:
    labels = [i % 3 for i in range(60)]
    assert stratified_split(labels, (0.5, 0.5), 1) == stratified_split(labels, (0.5, 0.5), 1)
    assert stratified_split(labels, (0.5, 0.5), 1) != stratified_split(labels, (0.5, 0.5), 2)


# ---------------------------------------------------------------- PreprocessSpec

def test_preprocess_spec_round_trips_through_dict_and_torch_load(tmp_path: Path) -> None:
    spec = PreprocessSpec(input_size=32, resize=36, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
                          interpolation="bicubic", channel_order="BGR", layout="NCHW")
    d = spec.to_dict()
    assert d["mean"] == [0.1, 0.2, 0.3] and d["std"] == [0.4, 0.5, 0.6]
    assert PreprocessSpec.from_dict(d) == spec
    torch.save(d, tmp_path / "spec.pt")
    assert PreprocessSpec.from_dict(torch.load(tmp_path / "spec.pt", weights_only=True)) == spec
    default = PreprocessSpec(input_size=8, resize=8)
    assert PreprocessSpec.from_dict(default.to_dict()) == default
    assert PreprocessSpec.from_dict({"input_size": 8, "resize": 8}) == default
    # resampler: written only when it is not PIL, so PIL specs read as before the field existed
    assert "resampler" not in default.to_dict()
    cv = PreprocessSpec(input_size=8, resize=8, resampler="opencv")
    assert cv.to_dict()["resampler"] == "opencv" and PreprocessSpec.from_dict(cv.to_dict()) == cv


def test_imagenet_spec_is_resize_256_crop_224() -> None:
    spec = PreprocessSpec.imagenet()
    assert (spec.input_size, spec.resize) == (224, 256)
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (spec.interpolation, spec.channel_order, spec.layout) == ("bilinear", "RGB", "NCHW")
    assert PreprocessSpec.imagenet(112).resize == 128


@pytest.mark.parametrize("kwargs", [
    {"input_size": 32, "resize": 31},
    {"input_size": 0, "resize": 8},
    {"input_size": 32, "resize": 32, "interpolation": "lanczos"},
    {"input_size": 32, "resize": 32, "std": (0.2, 0.0, 0.2)},
    {"input_size": 32, "resize": 32, "std": (0.2, -0.1, 0.2)},
    {"input_size": 32, "resize": 32, "mean": (0.5, 0.5)},
    {"input_size": 32, "resize": 32, "channel_order": "RGBA"},
    {"input_size": 32, "resize": 32, "layout": "CHW"},
    # the transforms produce CHW tensors only, so NHWC is refused rather than silently ignored
    {"input_size": 32, "resize": 32, "layout": "NHWC"},
    {"input_size": 32, "resize": 32, "std": (0.2, float("nan"), 0.2)},
    {"input_size": 32, "resize": 32, "mean": ("a", 0.5, 0.5)},
    {"input_size": 32, "resize": 32, "resampler": "torch"},
    # OpenCV resizes bilinearly only: its other filters differ across OpenCV versions or CPUs
    {"input_size": 32, "resize": 32, "resampler": "opencv", "interpolation": "bicubic"},
    {"input_size": 32, "resize": 32, "resampler": "opencv", "interpolation": "nearest"},
])
def test_invalid_preprocess_spec_raises_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PreprocessSpec(**kwargs)
    d = PreprocessSpec(input_size=32, resize=32).to_dict()
    d.update({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    with pytest.raises(ConfigError):
        PreprocessSpec.from_dict(d)


def test_from_dict_rejects_unknown_fields() -> None:
    d = PreprocessSpec(input_size=32, resize=32).to_dict()
    d["gamma"] = 2.2
    with pytest.raises(ConfigError, match="gamma"):
        PreprocessSpec.from_dict(d)


# ---------------------------------------------------------------- transforms

def _photo(seed: int, w: int, h: int) -> Image.Image:
    """A smooth-ish random RGB picture (noise plus gradients), so resizing is not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


_PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _reference(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """What the spec says, with PIL (torchvision's tensor resize for resampler "opencv") and numpy:
    shorter side to ``resize``, center crop, [0, 1], normalise, CHW."""
    w, h = img.size
    if w <= h:
        new_w, new_h = spec.resize, int(spec.resize * h / w)
    else:
        new_w, new_h = int(spec.resize * w / h), spec.resize
    if spec.resampler == "opencv":
        # torchvision's own unantialiased bilinear resize on a tensor: the same sampling as OpenCV's
        # INTER_LINEAR by independent code (float, where OpenCV is fixed-point: one level apart at most)
        tensor = T.Resize((new_h, new_w), antialias=False)(T.PILToTensor()(img))
        resized = tensor.permute(1, 2, 0).numpy().astype(np.float64)
    else:
        resized = np.asarray(img.resize((new_w, new_h), _PIL_FILTERS[spec.interpolation]), dtype=np.float64)
    # the margins are even in these tests, so "center" is unambiguous
    assert (new_h - spec.input_size) % 2 == 0 and (new_w - spec.input_size) % 2 == 0
    top, left = (new_h - spec.input_size) // 2, (new_w - spec.input_size) // 2
    crop = resized[top:top + spec.input_size, left:left + spec.input_size] / 255.0
    out = (crop - np.array(spec.mean)) / np.array(spec.std)
    return out.transpose(2, 0, 1)


@pytest.mark.parametrize(("size", "spec_kwargs"), [
    ((40, 30), {"input_size": 16, "resize": 20}),
    ((30, 50), {"input_size": 20, "resize": 24, "interpolation": "bicubic"}),
    ((64, 64), {"input_size": 32, "resize": 32, "interpolation": "nearest", "mean": (0.5, 0.4, 0.3),
                "std": (0.2, 0.25, 0.3)}),
    ((330, 264), {"input_size": 224, "resize": 256}),
    ((40, 30), {"input_size": 16, "resize": 20, "resampler": "opencv"}),
    ((30, 50), {"input_size": 20, "resize": 24, "resampler": "opencv"}),
    ((8, 8), {"input_size": 32, "resize": 32, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
              "resampler": "opencv"}),
    ((330, 264), {"input_size": 224, "resize": 256, "resampler": "opencv"}),
    ((642, 480), {"input_size": 224, "resize": 256, "resampler": "opencv"}),
])
def test_eval_transform_equals_pil_resize_crop_and_numpy_normalisation(size, spec_kwargs) -> None:
    torch.manual_seed(0)
    img = _photo(1, *size)
    spec = PreprocessSpec(**spec_kwargs)
    got = eval_transform(spec)(img)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    want = _reference(img, spec)
    assert tuple(got.shape) == want.shape == (3, spec.input_size, spec.input_size)
    # OpenCV's fixed-point bilinear against torchvision's float one: one 8-bit level at most
    tol = 1.0001 / 255 / min(spec.std) if spec.resampler == "opencv" else 1e-6
    assert np.abs(got.numpy().astype(np.float64) - want).max() <= tol


def test_bgr_order_flips_channels() -> None:
    img = _photo(2, 40, 30)
    rgb = PreprocessSpec(input_size=16, resize=20, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    bgr = PreprocessSpec(input_size=16, resize=20, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                         channel_order="BGR")
    a, b = eval_transform(rgb)(img), eval_transform(bgr)(img)
    assert torch.equal(b, a.flip(0))
    assert not torch.equal(a, b)


def test_bgr_statistics_are_in_channel_order() -> None:
    """The spec documents mean/std "in channel_order": with BGR, mean[0] belongs to blue."""
    img = _photo(3, 40, 30)
    mean, std = (0.1, 0.45, 0.8), (0.2, 0.3, 0.4)
    spec = PreprocessSpec(input_size=16, resize=20, mean=mean, std=std, channel_order="BGR")
    got = eval_transform(spec)(img).numpy().astype(np.float64)
    rgb = _reference(img, PreprocessSpec(input_size=16, resize=20, mean=(0, 0, 0), std=(1, 1, 1)))
    bgr01 = rgb[::-1]
    want = (bgr01 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert np.abs(got - want).max() <= 1e-6


def _shifts(out: torch.Tensor, ref: torch.Tensor, pad_value: torch.Tensor, max_shift: int) -> list[tuple[int, int]]:
    """The (dy, dx) for which ``out`` is ``ref`` translated, with ``pad_value`` where it moved in."""
    n = ref.shape[-1]
    found = []
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            canvas = pad_value.view(3, 1, 1).expand(3, n + 2 * max_shift, n + 2 * max_shift).clone()
            canvas[:, max_shift:max_shift + n, max_shift:max_shift + n] = ref
            y0, x0 = max_shift + dy, max_shift + dx
            if torch.allclose(canvas[:, y0:y0 + n, x0:x0 + n], out, atol=1e-6):
                found.append((dy, dx))
    return found


def test_cifar_augment_is_a_random_4_pixel_translation() -> None:
    img = _photo(4, 40, 40)
    spec = PreprocessSpec(input_size=32, resize=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    ref = eval_transform(spec)(img)
    pad_value = (0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    aug = train_transform(spec, "cifar", hflip=False)
    outs = []
    for seed in range(8):
        torch.manual_seed(seed)
        out = aug(img)
        assert out.shape == (3, 32, 32)
        assert _shifts(out, ref, pad_value, 4), f"seed {seed}: not a translation of the eval image"
        outs.append(out)
    assert len({o.numpy().tobytes() for o in outs}) > 1
    torch.manual_seed(3)
    assert torch.equal(aug(img), outs[3])


def test_imagenet_augment_gives_input_size_and_varies() -> None:
    img = _photo(5, 60, 48)
    spec = PreprocessSpec(input_size=24, resize=28)
    aug = train_transform(spec, "imagenet", hflip=True)
    outs = []
    for seed in range(4):
        torch.manual_seed(seed)
        outs.append(aug(img))
    assert all(o.shape == (3, 24, 24) and o.dtype == torch.float32 for o in outs)
    assert not torch.equal(outs[0], outs[1])


def test_opencv_resampler_is_not_the_pil_resize() -> None:
    """The two resamplers differ where they should (downscaling: PIL antialiases, cv2 samples 2x2),
    so a spec's resampler is not a label without effect."""
    img = _photo(7, 640, 480)
    pil, cv = PreprocessSpec.imagenet(224), PreprocessSpec(input_size=224, resize=256, resampler="opencv")
    a, b = eval_transform(pil)(img), eval_transform(cv)(img)
    assert a.shape == b.shape and not torch.equal(a, b)
    # smoothing: the antialiased resize averages the photo's pixel noise away, 2x2 sampling keeps more
    assert float(b.std()) > float(a.std())


@pytest.mark.parametrize(("height", "width"), [(480, 640), (451, 300), (300, 451), (427, 640), (8, 8), (333, 999),
                                               (100, 101), (1080, 1920), (20, 50)])
@pytest.mark.parametrize("resize", [32, 73, 182, 256])
def test_resized_size_is_torchvisions_rule(height: int, width: int, resize: int) -> None:
    """The shared size rule (used by the OpenCV resize and the runtime) equals what torchvision's
    Resize actually produces."""
    from edge_resnet.imaging import resized_size
    out = T.Resize(resize, antialias=True)(Image.new("RGB", (width, height)))
    assert resized_size(height, width, resize) == (out.height, out.width)


def test_opencv_random_resized_crop_draws_torchvisions_window() -> None:
    """Under one seed, the OpenCV random-resized crop gives torchvision's own unantialiased
    RandomResizedCrop on a tensor within one level (fixed-point against float bilinear): the same
    random window, scale and aspect-ratio ranges; a window drawn from another seed is far off."""
    rng = np.random.default_rng(8)
    img = Image.fromarray(np.clip(rng.normal(128, 60, (61, 97, 3)), 0, 255).astype(np.uint8))
    ours = train_transform(PreprocessSpec(input_size=24, resize=28, mean=(0, 0, 0), std=(1, 1, 1), resampler="opencv"),
                           "imagenet", hflip=False)
    theirs = T.Compose([T.PILToTensor(), T.RandomResizedCrop(24, antialias=False)])
    outs = set()
    for seed in range(12):
        torch.manual_seed(seed)
        a = ours(img).numpy() * 255
        torch.manual_seed(seed)
        b = theirs(img).numpy().astype(np.float64)
        torch.manual_seed(seed + 100)
        other = theirs(img).numpy().astype(np.float64)
        assert np.abs(a - b).max() <= 1.001, seed
        assert np.abs(a - other).mean() > 10, seed
        outs.add(a.tobytes())
    assert len(outs) == 12


def test_opencv_train_transforms_are_seeded_and_sized() -> None:
    img = _photo(9, 60, 48)
    for augment, spec in (("imagenet", PreprocessSpec(input_size=24, resize=28, resampler="opencv")),
                          ("cifar", PreprocessSpec(input_size=32, resize=32, resampler="opencv"))):
        aug = train_transform(spec, augment, hflip=True)
        torch.manual_seed(1)
        a = aug(img)
        torch.manual_seed(1)
        assert a.shape == (3, spec.input_size, spec.input_size) and torch.equal(a, aug(img))
        torch.manual_seed(2)
        assert not torch.equal(a, aug(img)), augment


@pytest.mark.parametrize("hflip", [False, True])
def test_hflip_flag(hflip: bool) -> None:
    img = _photo(6, 40, 30)
    spec = PreprocessSpec(input_size=16, resize=20)
    ref = eval_transform(spec)(img)
    aug = train_transform(spec, "none", hflip=hflip)
    flipped = 0
    for seed in range(16):
        torch.manual_seed(seed)
        out = aug(img)
        if torch.equal(out, ref):
            continue
        assert torch.equal(out, ref.flip(-1))
        flipped += 1
    if hflip:
        assert 0 < flipped < 16
    else:
        assert flipped == 0


# ---------------------------------------------------------------- ImageFolder

def _rgb(rng: np.random.Generator, h: int = 12, w: int = 10) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_png_folder(root: Path, rng: np.random.Generator, per_class: int, size: int) -> None:
    """Classes a and b, each with ``per_class`` random RGB PNGs of ``size`` x ``size``."""
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(per_class):
            Image.fromarray(_rgb(rng, size, size)).save(root / cls / f"{i}.png")


def _write_mixed_folder(root: Path) -> dict[str, np.ndarray]:
    """Three classes of real image files in many PIL modes, plus two unreadable ones.

    Returns the RGB pixels each readable file must decode to (None where lossy: JPEG)."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "eel"):
        (root / cls).mkdir(parents=True)
    want: dict[str, np.ndarray | None] = {}

    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    Image.fromarray(grey).save(root / "cat/grey.png")
    want["cat/grey.png"] = np.repeat(grey[..., None], 3, axis=-1)

    rgba = np.concatenate([_rgb(rng), rng.integers(0, 256, (12, 10, 1), dtype=np.uint8)], axis=-1)
    Image.fromarray(rgba).save(root / "cat/rgba.png")
    want["cat/rgba.png"] = rgba[..., :3]

    rgb = _rgb(rng)
    Image.fromarray(rgb).save(root / "cat/rgb.bmp")
    want["cat/rgb.bmp"] = rgb

    Image.fromarray(_rgb(rng)).save(root / "cat/photo.JPG", quality=90)
    want["cat/photo.JPG"] = None

    # transparency as one palette index, and as per-entry alpha bytes (PIL warns converting those to RGB)
    for name, transparency in (("dog/palette.png", None), ("dog/palette_transparent.png", 0),
                               ("dog/palette_alpha.png", bytes(range(0, 256, 16)))):
        pal = Image.fromarray(_rgb(rng)).convert("P", palette=Image.ADAPTIVE, colors=16)
        kwargs = {} if transparency is None else {"transparency": transparency}
        pal.save(root / name, **kwargs)
        lut = np.array(pal.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
        want[name] = lut[np.asarray(pal)]

    Image.fromarray(_rgb(rng)).save(root / "dog/rgb.webp", lossless=True)
    want["dog/rgb.webp"] = np.asarray(Image.open(root / "dog/rgb.webp").convert("RGB"))

    Image.fromarray(_rgb(rng)).convert("CMYK").save(root / "eel/cmyk.jpg")
    want["eel/cmyk.jpg"] = None

    deep = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 547).astype(np.uint16)
    Image.fromarray(deep).save(root / "eel/deep16.png")
    want["eel/deep16.png"] = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=-1)

    Image.fromarray(_rgb(rng)).save(root / "eel/rgb.jpeg")
    want["eel/rgb.jpeg"] = None

    (root / "eel/corrupt.jpg").write_bytes(b"\x00" + rng.bytes(2000))
    (root / "eel/empty.png").write_bytes(b"")
    (root / "eel/notes.txt").write_text("not an image")
    return want


def _by_file(ds, root: Path) -> dict[str, tuple[Image.Image, int]]:
    out = {}
    for split in (ds.train, ds.val, ds.test):
        assert isinstance(split, ImageFileDataset)
        for i, (path, _) in enumerate(split.samples):
            sample = split[i]
            assert sample is not None, path
            out[Path(path).relative_to(root).as_posix()] = sample
    return out


def test_image_folder_loads_every_mode_as_rgb_and_skips_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    want = _write_mixed_folder(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decoding is clean, not merely survivable
        ds = load_dataset(str(root))
        loaded = _by_file(ds, root)
    assert ds.name == "pets" and ds.classes == ["cat", "dog", "eel"]
    assert ds.skipped == 2
    assert "2 unreadable files skipped" in ds.summary()
    # folders without their own split are split without overlap (the test set may equal val: not here)
    files = [Path(p).relative_to(root).as_posix() for s in (ds.train, ds.val, ds.test) for p, _ in s.samples]
    assert len(files) == len(set(files))
    assert sorted(loaded) == sorted(want)
    for name, (img, label) in loaded.items():
        assert img.mode == "RGB" and img.size == (10, 12), name
        assert label == ds.classes.index(name.split("/")[0]), name
        if want[name] is not None:
            assert np.array_equal(np.asarray(img), want[name]), name


def test_image_folder_split_is_seeded(tmp_path: Path) -> None:
    _write_png_folder(tmp_path, np.random.default_rng(1), per_class=20, size=4)

    def split_files(seed: int) -> list[list[str]]:
        ds = load_dataset(str(tmp_path), seed=seed)
        return [sorted(p.name for p, _ in s.samples) for s in (ds.train, ds.val, ds.test)]

    first = split_files(0)
    assert [len(p) for p in first] == [32, 4, 4]
    assert split_files(0) == first
    assert split_files(1) != first
    assert dataset_name(str(tmp_path)) == tmp_path.name


def test_image_folder_with_train_and_val_uses_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("x", "y"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_rgb(rng, 6, 6)).save(tmp_path / split / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.classes == ["x", "y"]
    assert len(ds.train) == 6 and len(ds.val) == 4 and len(ds.test) == 4
    assert all(p.parent.parent.name == "train" for p, _ in ds.train.samples)
    assert all(p.parent.parent.name == "val" for p, _ in ds.val.samples)
    # no test/: evaluation uses val
    assert ds.test.samples == ds.val.samples
    assert sorted(ds.train.labels) == [0, 0, 0, 1, 1, 1]
    assert all(ds.classes[y] == p.parent.name for p, y in ds.train.samples + ds.val.samples)


def test_image_folder_splits_must_share_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for split, classes in (("train", ("x", "y")), ("val", ("x", "z"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(_rgb(rng, 6, 6)).save(tmp_path / split / cls / "0.png")
    with pytest.raises(DataError, match="same class subfolders"):
        load_dataset(str(tmp_path))


def test_missing_folder_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))


def test_folder_without_class_subfolders_raises_data_error(tmp_path: Path) -> None:
    Image.fromarray(_rgb(np.random.default_rng(4))).save(tmp_path / "a.png")
    Image.fromarray(_rgb(np.random.default_rng(5))).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(str(tmp_path))


def test_path_that_is_a_file_raises_data_error(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(_rgb(np.random.default_rng(6))).save(path)
    with pytest.raises(DataError, match="is a file"):
        load_dataset(str(path))


@pytest.mark.parametrize("content", ["empty", "text", "corrupt"])
def test_class_folders_without_images_raise_data_error(tmp_path: Path, content: str) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        if content == "text":
            (tmp_path / cls / "readme.txt").write_text("hi")
        elif content == "corrupt":
            (tmp_path / cls / "x.jpg").write_bytes(b"\x00" + np.random.default_rng(7).bytes(500))
    with pytest.raises(DataError, match="no readable"):
        load_dataset(str(tmp_path))


def test_file_broken_after_scanning_is_dropped_from_the_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    _write_png_folder(tmp_path, rng, per_class=10, size=8)
    ds = load_dataset(str(tmp_path), seed=0)
    assert ds.skipped == 0
    broken_path, _ = ds.train.samples[3]
    broken_path.write_bytes(rng.bytes(300))
    assert ds.train[3] is None

    spec = PreprocessSpec(input_size=8, resize=8)
    data = Transformed(ds.train, eval_transform(spec))
    assert data[3] is None
    loader = DataLoader(data, batch_size=len(data), shuffle=False, collate_fn=collate_skip_none)
    (images, labels), = list(loader)
    keep = [i for i in range(len(data)) if i != 3]
    assert images.shape == (len(data) - 1, 3, 8, 8)
    assert labels.tolist() == [ds.train.labels[i] for i in keep]
    assert torch.equal(images[3], data[4][0])
    assert collate_skip_none([None, None]) is None


# ---------------------------------------------------------------- CIFAR-10 python batches

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _dump(path: Path, obj, protocol: int = 2) -> None:
    # protocol 2 with bytes keys is what the Python 2 pickles of the real download look like
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _write_cifar(root: Path, per_batch: int = 10, protocol: int = 2) -> dict[str, np.ndarray]:
    """The six batches and the meta file; each image's first byte is its global index."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(9)
    rows = {}
    for b, name in enumerate(CIFAR_FILES):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(per_batch) + b * per_batch
        labels = [(i + b) % 10 for i in range(per_batch)]
        _dump(root / name, {b"batch_label": f"batch {b}".encode(), b"labels": labels, b"data": data,
                            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}, protocol)
        rows[name] = (data, labels)
    _dump(root / "batches.meta", {b"label_names": CIFAR_NAMES, b"num_cases_per_batch": per_batch,
                                  b"num_vis": 3072}, protocol)
    return rows


def _check_cifar(ds, rows: dict) -> None:
    assert ds.name == "cifar10"
    assert ds.classes == [n.decode() for n in CIFAR_NAMES]
    source = {}
    for name, (data, labels) in rows.items():
        for row, label in zip(data, labels, strict=True):
            source[int(row[0])] = (row.reshape(3, 32, 32).transpose(1, 2, 0), label, name)
    seen = []
    for split in (ds.train, ds.val, ds.test):
        for i in range(len(split)):
            img, label = split[i]
            assert img.mode == "RGB" and img.size == (32, 32)
            arr = np.asarray(img)
            want, want_label, batch = source[int(arr[0, 0, 0])]
            assert np.array_equal(arr, want) and label == want_label
            assert (batch == "test_batch") == (split is ds.test)
            seen.append(int(arr[0, 0, 0]))
    assert sorted(seen) == sorted(source)  # every image once: the splits are disjoint
    assert len(ds.test) == len(rows["test_batch"][1])


def test_cifar10_batches_load_with_correct_pixels_and_names(tmp_path: Path) -> None:
    rows = _write_cifar(tmp_path, per_batch=20)
    ds = load_dataset(str(tmp_path))
    _check_cifar(ds, rows)
    # 10% of the training images held out for validation, stratified: 1 of each class's 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (90, 10, 20)
    assert sorted(ds.val.labels) == list(range(10))
    assert ds.mean == pytest.approx((0.4914, 0.4822, 0.4465)) and ds.flip_invariant
    assert dataset_name(str(tmp_path)) == "cifar10"


def test_cifar10_batches_are_found_in_their_download_folder(tmp_path: Path) -> None:
    rows = _write_cifar(tmp_path / "cifar-10-batches-py")
    _check_cifar(load_dataset(str(tmp_path)), rows)
    assert dataset_name(str(tmp_path)) == "cifar10"


def test_cifar10_without_meta_names_classes_by_number(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "batches.meta").unlink()
    assert load_dataset(str(tmp_path)).classes == [str(i) for i in range(10)]


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_cifar10_batches_rewritten_by_python3_load(tmp_path: Path, protocol: int) -> None:
    rows = _write_cifar(tmp_path, per_batch=4, protocol=protocol)
    _check_cifar(load_dataset(str(tmp_path)), rows)


class _ShellPayload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar_batch_with_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    payload = _ShellPayload(f"touch {shlex.quote(str(marker))}")
    data = np.zeros((10, 3072), dtype=np.uint8)
    _dump(tmp_path / "data_batch_3", {b"data": data, b"labels": list(range(10)), b"x": payload})
    with pytest.raises(DataError, match="data_batch_3") as exc:
        load_dataset(str(tmp_path))
    assert "system" in str(exc.value)
    assert not marker.exists()
    # the payload is live: plain pickle runs it
    with open(tmp_path / "data_batch_3", "rb") as f:
        pickle.load(f, encoding="bytes")
    assert marker.exists()


def test_cifar_meta_with_code_is_refused(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    _dump(tmp_path / "batches.meta", {b"label_names": CIFAR_NAMES, b"x": _ShellPayload(f"touch {shlex.quote(str(marker))}")})
    with pytest.raises(DataError, match="batches.meta"):
        load_dataset(str(tmp_path))
    assert not marker.exists()


def test_cifar_missing_test_batch_raises_data_error(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("content", [
    pytest.param({b"data": np.zeros((10, 1000), np.uint8), b"labels": list(range(10))}, id="wrong-row-size"),
    pytest.param({b"data": np.zeros((10, 3072), np.uint8), b"fine_labels": list(range(10))}, id="cifar100"),
    pytest.param({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(9))}, id="labels-too-few"),
    pytest.param({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(5, 15))}, id="label-out-of-range"),
    pytest.param([1, 2, 3], id="not-a-dict"),
    pytest.param(b"", id="truncated"),
])
def test_malformed_cifar_batch_raises_data_error(tmp_path: Path, content) -> None:
    _write_cifar(tmp_path)
    if content == b"":
        raw = (tmp_path / "test_batch").read_bytes()
        (tmp_path / "test_batch").write_bytes(raw[: len(raw) // 2])
    else:
        _dump(tmp_path / "test_batch", content)
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(str(tmp_path))
