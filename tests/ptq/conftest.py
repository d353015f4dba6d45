"""Models and images for the quantize tests: ONNX files made here with torch.onnx, real photographs and digits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "fixtures" / "bundle" / "resnet8-narrow-bundle"


def export_onnx(model: nn.Module, path: Path, size: int, *, fold_bn: bool = True) -> Path:
    """torch.onnx's TorchScript exporter, as users call it: BatchNorm folded by constant folding, or kept."""
    model.eval()
    torch.onnx.export(model, torch.randn(1, 3, size, size), str(path), dynamo=False, do_constant_folding=fold_bn,
                      input_names=["images"], output_names=["scores"], dynamic_axes={"images": {0: "n"}})
    return path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our own model.fp32.onnx (quarter-width resnet8 on the digits) with its manifest.json."""
    out = tmp_path_factory.mktemp("digits") / "run"
    out.mkdir()
    for name in ("model.fp32.onnx", "manifest.json"):
        shutil.copy2(BUNDLE / name, out / name)
    return out


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's 64 held-out digits as PNGs in class folders named after the labels."""
    root = tmp_path_factory.mktemp("digit-images")
    with np.load(BUNDLE / "validation.npz") as z:
        for i, (pixels, label) in enumerate(zip(z["pixels"], z["labels"])):
            (root / str(label)).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(root / str(label) / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 crops of real photographs (skimage's), 80x64, no class folders."""
    from tests.runtime.videos import photo_frames

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    frames = photo_frames(6, hold=1)
    for i in range(48):
        f = frames[i % 6]
        y, x = rng.integers(0, 480 - 192), rng.integers(0, 640 - 240)
        crop = np.ascontiguousarray(f[y:y + 192:3, x:x + 240:3, ::-1])
        Image.fromarray(crop).save(root / f"{i:02d}.jpg", quality=92)
    return root
