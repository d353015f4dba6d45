"""Sensitivity and the mixed-precision fallback on a tiny trained model with one layer made sensitive on purpose.

The range of one tensor (``layer2.0.relu1``, read only by ``layer2.0.conv2``) is cut to 2% of its
calibrated value, so INT8 saturates it and top-1 collapses. The analysis must name that layer and the
fallback must leave exactly it in float, which brings INT8 back within the tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from edge_resnet.calibration.calibrate import calibrate
from edge_resnet.calibration.readers import open_calibration_data

from edge_resnet.analysis import held_out
from edge_resnet.data import load_dataset
from edge_resnet.fold import fold_batchnorm
from edge_resnet.models.graph import trace
from edge_resnet.quant import make_plan
from edge_resnet.quant.fallback import fallback
from edge_resnet.quant.plan import units
from edge_resnet.quant.sensitivity import logits, plan_score, plot, sensitivity
from edge_resnet.training import load_checkpoint
from tests.helpers import torch_threads
from tests.tiny_model import tiny_checkpoint

SABOTAGED = "layer2.0.relu1"
SENSITIVE = "layer2.0.conv2"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@dataclasses.dataclass
class Setup:
    folded: torch.nn.Module
    graph: object
    amax: dict[str, float]
    bad: dict[str, float]
    mean: dict
    batches: list[torch.Tensor]
    labels: np.ndarray


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path_factory))
    folded = fold_batchnorm(ckpt.build_model())
    graph = trace(folded)
    calib = calibrate(graph, open_calibration_data(None, ckpt.preprocessing, num=128), method="max", batch_size=64)
    hold = held_out(load_dataset(None), ckpt.preprocessing)
    bad = dict(calib.amax) | {SABOTAGED: calib.amax[SABOTAGED] * 0.02}
    return Setup(folded, graph, calib.amax, bad, calib.channel_mean, hold.batches, hold.labels)


def test_held_out_is_the_validation_split(setup: Setup) -> None:
    assert len(setup.labels) == len(load_dataset(None).val) > 150
    assert sorted(set(setup.labels.tolist())) == list(range(10))


def test_sabotage_hurts_and_only_that_layer_float_repairs_it(setup: Setup) -> None:
    ref = logits(setup.folded, setup.batches)
    good = plan_score(setup.folded, make_plan(setup.graph, setup.amax), setup.batches, ref, setup.labels)
    broken = plan_score(setup.folded, make_plan(setup.graph, setup.bad), setup.batches, ref, setup.labels)
    repaired = plan_score(setup.folded, make_plan(setup.graph, setup.bad, float_layers={SENSITIVE}), setup.batches,
                          ref, setup.labels)
    assert broken.agreement < good.agreement - 10 and broken.sqnr_db < good.sqnr_db - 10
    assert repaired.sqnr_db > broken.sqnr_db + 10


def test_sensitivity_names_the_sabotaged_layer(setup: Setup, tmp_path: Path) -> None:
    report = sensitivity(setup.folded, setup.graph, setup.bad, setup.batches, setup.labels, data="digits val")
    assert [s.layer for s in report.layers] == units(setup.graph)
    assert report.ranking()[0] == SENSITIVE
    by = {s.layer: s for s in report.layers}
    assert min(report.layers, key=lambda s: s.only_quantized.sqnr_db).layer == SENSITIVE
    # a layer quantized alone stays close to FP32 when it is not the sabotaged one
    assert all(s.only_quantized.sqnr_db > by[SENSITIVE].only_quantized.sqnr_db + 10 for s in report.layers
               if s.layer != SENSITIVE)
    assert report.fp32_top1 == pytest.approx(100 * float(np.mean(logits(setup.folded, setup.batches).argmax(1)
                                                                 == setup.labels)))
    md = report.to_markdown()
    assert md.count("\n| ") == len(report.layers) + 1 and SENSITIVE in md
    d = report.to_dict()
    assert d["ranking"][0] == SENSITIVE and len(d["layers"]) == len(report.layers)
    if plot(report, str(tmp_path / "s.png")):
        assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fallback_leaves_exactly_the_sensitive_layer_in_float(setup: Setup) -> None:
    result = fallback(setup.folded, setup.graph, setup.bad, setup.batches, setup.labels, tolerance=1.0,
                      max_layers=3, base=frozenset({"fc"}), channel_mean=setup.mean)
    assert result.steps[0].top1_drop > 1.0  # the sabotage made INT8 miss the gate
    assert result.passed and result.float_layers == (SENSITIVE,), result.reason
    assert result.ranking[0][0] == SENSITIVE and "fc" not in [r[0] for r in result.ranking]
    assert result.steps[-1].top1_drop <= 1.0 and "1 layer" in result.reason


def test_fallback_does_nothing_when_int8_already_passes(setup: Setup) -> None:
    result = fallback(setup.folded, setup.graph, setup.amax, setup.batches, setup.labels, tolerance=1.0,
                      max_layers=3, base=frozenset({"fc"}))
    assert result.passed and result.float_layers == () and len(result.steps) == 1 and result.ranking == []


def test_fallback_cap_is_reported(setup: Setup) -> None:
    # two sabotaged tensors, a cap of one layer: the gate cannot pass
    bad = dict(setup.bad) | {"layer3.0.relu1": setup.amax["layer3.0.relu1"] * 0.02}
    result = fallback(setup.folded, setup.graph, bad, setup.batches, setup.labels, tolerance=0.0, max_layers=1)
    assert not result.passed and "cap reached" in result.reason and len(result.steps) == 2
    assert math.isfinite(result.steps[-1].score.sqnr_db)
