"""One tiny trained model shared by the export tests (trained once per pytest session).

resnet8 on the bundled digits, 4 epochs at batch 32: about 5 s on two cores and ~97% test top-1.
A better-trained model matters here: with a 1-2 epoch model (~30-80% top-1) the FP32 top-2
classes nearly tie on many images, so INT8 rounding flips predictions and the export's own
accuracy gate (top-1 drop <= 1 point, simulation vs ONNX Runtime agreement >= 99.5%) fails for
reasons that have nothing to do with the code under test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edge_resnet.training import TrainConfig, train

_CACHE: dict[str, Path] = {}


def _train(tmp_path_factory: pytest.TempPathFactory, key: str, cfg: dict) -> Path:
    if key not in _CACHE or not _CACHE[key].exists():
        out = tmp_path_factory.mktemp(key) / "run"
        train(TrainConfig(model="resnet8", output=str(out), **cfg))
        _CACHE[key] = out / "model.pt"
    return _CACHE[key]


def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.pt of resnet8 trained 4 epochs on the digits (read it, do not write next to it)."""
    return _train(tmp_path_factory, "tiny", {"epochs": 4, "batch_size": 32})


def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another resnet8 (other seed, 1 epoch): same architecture, different weights."""
    return _train(tmp_path_factory, "other", {"epochs": 1, "batch_size": 32, "seed": 1})


def opencv_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet8 trained as ``tiny_checkpoint`` but with the OpenCV resampler in its spec: every resize of
    training, evaluation and calibration goes through cv2.resize."""
    return _train(tmp_path_factory, "opencv", {"epochs": 4, "batch_size": 32, "resampler": "opencv"})


def copy_checkpoint(src: Path, run_dir: Path) -> Path:
    """A fresh run directory holding only a copy of ``src``: tests that write never share a folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(src, run_dir / "model.pt"))


def listing(d: Path) -> dict[str, int]:
    """File name -> mtime_ns of every file in ``d`` (empty when ``d`` does not exist)."""
    if not d.exists():
        return {}
    return {f: (d / f).stat().st_mtime_ns for f in sorted(os.listdir(d))}
