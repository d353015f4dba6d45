"""Fixtures of the TensorRT-engine / Jetson-bundle tests (issue 4).

One run directory (the tiny resnet8 of ``tests.tiny_model``, exported once per session with FP32,
FP16 and both INT8 targets) and one bundle made from it. Both are read-only: a test that writes
(verify writes device_report.json, build_engine.sh writes engines) works on its own copy
(``fresh_bundle``), so tests never share a folder they change.

``prebuilt_bundle`` is a bundle the same pipeline wrote beforehand, committed under
tests/fixtures/bundle: the tests that need TensorRT use it, so they run on a device without torch
(this module imports torch only inside the fixtures that train).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PREBUILT = Path(__file__).resolve().parents[1] / "fixtures" / "bundle" / "resnet8-narrow-bundle"


@pytest.fixture(scope="session")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory written by the project's own export: model.pt, calib.json/.cache, model.fp32/fp16/
    int8/int8.cpu.onnx, report, manifest (max calibration on 64 images, to stay fast)."""
    from edge_resnet.pipeline import ExportOptions, export_run
    from tests.helpers import torch_threads
    from tests.tiny_model import tiny_checkpoint

    out = tmp_path_factory.mktemp("engine_run") / "run"
    # one thread: on a busy 2-core machine OpenMP threads spinning against each other make the tiny
    # model's training many times slower (tests/helpers.torch_threads)
    with torch_threads(1):
        ckpt = tiny_checkpoint(tmp_path_factory)
        result = export_run(ExportOptions(model=str(ckpt), int8=True, fp16=True, calib_method="max", num_calib=64,
                                          batch_size=64, output=str(out)))
    assert result.passed, result.report.failures
    return out


@pytest.fixture(scope="session")
def bundle_src(engine_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make_bundle`` of ``engine_run`` with the defaults (256 validation samples, int8 recipe).
    Read-only: copy it with ``fresh_bundle`` before writing anything into it."""
    from edge_resnet.deploy import make_bundle

    result = make_bundle(engine_run, tmp_path_factory.mktemp("bundle_src") / "resnet8-bundle")
    return result.folder


@pytest.fixture
def fresh_bundle(bundle_src: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle folder (what a user has after copying it to the device)."""
    return Path(shutil.copytree(bundle_src, tmp_path / "device" / bundle_src.name))


@pytest.fixture
def prebuilt_bundle(tmp_path: Path) -> Path:
    """A private copy of the committed bundle (tests/fixtures/bundle; no training, no torch)."""
    return Path(shutil.copytree(PREBUILT, tmp_path / "device" / PREBUILT.name))
