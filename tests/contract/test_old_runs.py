"""Run directories written before the contract refactor still load: a committed one from commit 0e86326."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_resnet.calibration.files import load_calibration
from edge_resnet.contract.files import BY_ROLE
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.runtime import Classifier, load_manifest

OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run-0e86326"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(OLD_RUN, tmp_path / "run"))


def test_old_manifest_loads(old_run: Path) -> None:
    manifest = load_manifest(old_run)
    assert manifest.input_name == "input" and list(manifest.input_shape[1:]) == [3, 32, 32]
    assert list(manifest.labels) == [str(d) for d in range(10)]
    assert PreprocessSpec.from_dict(manifest.preprocessing).input_size == 32
    assert {manifest.by_role("tensorrt").name, manifest.by_role("cpu").name} == {"model.int8.onnx",
                                                                                 "model.int8.cpu.onnx"}
    # today's file table lists every file of it exactly as it was written (name, role, precision, target)
    for name, raw in manifest.data["files"].items():
        f = BY_ROLE[raw["role"]]
        written = f.entry(raw["sha256"], raw["bytes"])
        assert f.name == name and {k: v for k, v in raw.items() if k not in ("lint", "lint_warnings")} == written


@pytest.mark.parametrize("model", ["int8", "int8-cpu"])
def test_old_models_classify(old_run: Path, model: str) -> None:
    clf = Classifier.from_run(old_run, model=model, providers=["CPUExecutionProvider"], backend="onnxruntime")
    frames = [np.full((8, 8), v, dtype=np.uint8) for v in (0, 128, 255)]
    predictions = clf.predict(frames, top_k=3)
    assert len(predictions) == 3 and all(len(p.labels) == 3 for p in predictions)


def test_old_calibration_loads_with_its_scores(old_run: Path) -> None:
    calib = load_calibration(old_run / "calib.json")
    assert calib.method == "max" and calib.images == 64 and calib.amax["input"] > 0
