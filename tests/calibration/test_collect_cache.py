"""Collection, calibration, reuse checks and the two calibration files, on a tiny folded model.

The model is a resnet8 at 32x32 with randomised BatchNorms (so folding changes real numbers), traced
into the graph calibration runs on. Every statistic is checked against a second computation done
here with a hook of our own on ``Graph.run``, not against the collector's own arithmetic.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_resnet.calibration.files import (
    Calibration,
    CalibrationFileError,
    load_calibration,
    read_trt_cache,
    save_calibration,
    trt_cache_text,
    trt_scale_hex,
)
from edge_resnet.calibration.calibrate import calibrate, calibrate_methods, check_reusable, graph_fingerprint
from edge_resnet.calibration.calibrators import CALIBRATORS
from edge_resnet.calibration.collect import Statistics, collect
from edge_resnet.calibration.readers import CalibrationData, open_calibration_data
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.errors import EdgeResNetError
from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import INPUT, Graph, Node, trace
from edge_resnet.quant.select import pick
from tests.helpers import randomise_bn

SPEC = PreprocessSpec(input_size=32, resize=32)
BATCH = 8


@pytest.fixture(scope="module")
def graph() -> Graph:
    gen = torch.Generator().manual_seed(0)
    model = create_model("resnet8", num_classes=10)
    randomise_bn(model, gen)
    return trace(fold_batchnorm(model.eval()))


def _batches(n: int, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # a different scale per batch, so the histogram range has to grow during collection
    return [torch.randn(BATCH, 3, 32, 32, generator=gen) * (1 + i) for i in range(n)]


def _observe(graph: Graph, batches: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Every tensor of every batch, by name (fine for a handful of 32x32 batches)."""
    seen: dict[str, list[torch.Tensor]] = {n.name: [] for n in graph}

    def visit(node: Node, out: torch.Tensor) -> torch.Tensor:
        seen[node.name].append(out.detach().clone())
        return out

    with torch.inference_mode():
        for b in batches:
            graph.run(b, visit)
    return seen


# ---------------------------------------------------------------- collect


def test_one_stats_per_non_relu_tensor(graph: Graph) -> None:
    stats = collect(graph, _batches(2), bins=64)
    relus = {n.name for n in graph if n.op == "relu"}
    assert relus, "resnet8 has ReLUs"
    assert set(stats.stats) == {n.name for n in graph} - relus
    assert stats.names == [n.name for n in graph]
    assert stats.images == 2 * BATCH


def test_amax_equals_the_observed_max_magnitude(graph: Graph) -> None:
    batches = _batches(3)
    stats = collect(graph, batches, bins=64)
    seen = _observe(graph, batches)
    for name, outs in seen.items():
        true_amax = max(float(o.abs().max()) for o in outs)
        assert stats.histogram(name).amax == true_amax, name
        if name in stats.stats:
            assert stats.stats[name].amax == true_amax, name
            assert stats.stats[name].count == sum(o.numel() for o in outs), name


def test_relu_histogram_is_the_relu_part_of_its_input(graph: Graph) -> None:
    batches = _batches(3)
    stats = collect(graph, batches, bins=64)
    seen = _observe(graph, batches)
    for node in graph.of_op("relu"):
        source = node.inputs[0]
        h, ref = stats.histogram(node.name), stats.stats[source].histogram("relu")
        np.testing.assert_array_equal(h.counts, ref.counts)
        assert (h.width, h.amax) == (ref.width, ref.amax)
        # independently: one count per element of the ReLU's output, negatives folded into bin 0
        outs = torch.cat([o.flatten() for o in seen[node.name]])
        assert h.total == outs.numel()
        assert h.amax == float(outs.max())
        negatives = int(sum((o < 0).sum() for o in seen[source]))
        assert h.counts[0] >= negatives > 0


def test_channel_means_match_an_independent_mean(graph: Graph) -> None:
    batches = _batches(3)
    stats = collect(graph, batches, bins=64)
    seen = _observe(graph, batches)
    weighted_inputs = {n.inputs[0] for n in graph.of_op("conv", "linear")}
    means = stats.channel_means()
    assert set(means) == weighted_inputs
    for name in weighted_inputs:
        x = torch.cat(seen[name]).double()
        expect = x.mean(dim=(0, 2, 3)) if x.dim() == 4 else x.mean(dim=0)
        np.testing.assert_allclose(means[name], expect.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def _footprint(stats: Statistics) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, s in stats.stats.items():
        out[name] = (s.pos.nbytes, s.neg.nbytes)
    for name, v in stats.channel_sums.items():
        out[f"sum:{name}"] = (v.size,)
    return out


def test_memory_does_not_grow_with_the_number_of_batches(graph: Graph) -> None:
    bins = 96
    seen_batches: list[int] = []
    one = collect(graph, _batches(1), bins=bins)
    many = collect(graph, _batches(6), bins=bins, on_batch=seen_batches.append)
    assert seen_batches == [BATCH] * 6 and many.images == 6 * BATCH
    assert _footprint(one) == _footprint(many)
    for name in many.names:
        h = many.histogram(name)
        assert h.bins == bins, name
        # everything was counted: six times the elements of one batch, in the same fixed bins
        assert h.total == 6 * one.histogram(name).total, name


# ---------------------------------------------------------------- calibrate


@pytest.fixture(scope="module")
def data() -> CalibrationData:
    return open_calibration_data(None, SPEC, num=48, seed=0)


@pytest.fixture(scope="module")
def calibs(graph: Graph, data: CalibrationData) -> list[Calibration]:
    return calibrate_methods(graph, data, CALIBRATORS, batch_size=16)


def test_one_pass_one_calibration_per_method(graph: Graph, data: CalibrationData,
                                             calibs: list[Calibration]) -> None:
    assert [c.method for c in calibs] == list(CALIBRATORS)
    fingerprint = {"model": graph_fingerprint(graph), "data": data.fingerprint}
    names = {n.name for n in graph}
    for c in calibs:
        assert c.fingerprint == fingerprint
        assert c.channel_mean == calibs[0].channel_mean and c.channel_mean
        assert set(c.amax) == names
        assert (c.images, c.skipped, c.data) == (48, 0, data.name)
        assert all(a >= 0 for a in c.amax.values())
    assert [c.percentile for c in calibs] == [99.99 if m == "percentile" else None for m in CALIBRATORS]


def test_input_gets_its_true_max_whatever_the_method(graph: Graph, data: CalibrationData,
                                                     calibs: list[Calibration]) -> None:
    images = torch.cat(list(data.batches(16)))
    true_max = float(images.abs().max())
    for c in calibs:
        assert c.amax[INPUT] == true_max, c.method
    # a known answer for the whole graph: "max" is the largest magnitude of every tensor
    seen = _observe(graph, [images])
    by_method = {c.method: c for c in calibs}
    for name, outs in seen.items():
        assert by_method["max"].amax[name] == float(outs[0].abs().max()), name
        for m in ("percentile", "entropy", "mse"):
            assert by_method[m].amax[name] <= by_method["max"].amax[name], (m, name)


def test_calibrate_is_calibrate_methods_of_one(graph: Graph, data: CalibrationData,
                                               calibs: list[Calibration]) -> None:
    one = calibrate(graph, data, method="entropy", batch_size=16)
    entropy = calibs[CALIBRATORS.index("entropy")]
    assert one.amax == entropy.amax and one.fingerprint == entropy.fingerprint


def test_unknown_method_is_a_value_error(graph: Graph, data: CalibrationData) -> None:
    with pytest.raises(ValueError, match="unknown calibration method 'minmax'"):
        calibrate_methods(graph, data, ("max", "minmax"))
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate(graph, data, method="kl")


# ---------------------------------------------------------------- check_reusable


def _calib(**kw) -> Calibration:
    base = {"method": "percentile", "amax": {"input": 1.0}, "images": 8, "percentile": 99.9,
            "fingerprint": {"model": "m1", "data": "d1"}, "requested": "percentile"}
    return Calibration(**(base | kw))


def test_check_reusable() -> None:
    c = _calib()
    same = {"model": "m1", "data": "d1", "method": "percentile", "percentile": 99.9, "bins": 2048}
    assert check_reusable(c, **same) is None
    assert check_reusable(c, **(same | {"data": None})) is None  # a pinned file: data not checked
    for change, word in [({"model": "m2"}, "model"), ({"data": "d2"}, "data"), ({"method": "entropy"}, "entropy"),
                         ({"percentile": 99.99}, "99.99"), ({"bins": 1024}, "1024")]:
        why = check_reusable(c, **(same | change))
        assert isinstance(why, str) and word in why, (change, why)


def test_check_reusable_ignores_the_percentile_of_other_methods() -> None:
    c = _calib(method="max", percentile=None, requested="max")
    assert check_reusable(c, model="m1", data="d1", method="max", percentile=99.0, bins=2048) is None


def test_an_auto_calibration_is_reusable_by_the_same_auto_run(calibs: list[Calibration]) -> None:
    before = [dataclasses.replace(c) for c in calibs]
    chosen = pick(calibs, {"max": 30.0, "percentile": 20.0, "entropy": 10.0, "mse": 0.0})
    assert chosen.method == "max" and chosen.requested == "auto"
    assert calibs == before and chosen is not calibs[0]  # the candidates are left as they were
    fp = chosen.fingerprint
    assert check_reusable(chosen, model=fp["model"], data=fp["data"], method="auto", percentile=99.99,
                          bins=chosen.bins) is None


# ---------------------------------------------------------------- calib.json


def test_calib_json_round_trip(tmp_path: Path, calibs: list[Calibration]) -> None:
    path = tmp_path / "calib.json"
    for c in calibs:
        save_calibration(path, c)
        assert load_calibration(path) == c
    assert os.listdir(tmp_path) == ["calib.json"]  # atomic: the temp files were renamed away


def _damage(path: Path, how: str) -> None:
    text = path.read_text()
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
        return
    if how == "a TensorRT cache":
        path.write_text(trt_cache_text({"input": 1.0}))
        return
    if how == "binary junk":
        path.write_bytes(bytes(range(256)))
        return
    d = json.loads(text)
    if how == "wrong format":
        d["format"] = "onnxruntime/calibration"
    elif how == "missing amax":
        del d["amax"]
    elif how == "amax not a mapping":
        d["amax"] = [1.0, 2.0]
    elif how == "a JSON list":
        d = [d]
    elif how == "negative range":
        d["amax"][next(iter(d["amax"]))] = -1.0
    elif how == "NaN range":
        d["amax"][next(iter(d["amax"]))] = float("nan")
    path.write_text(json.dumps(d))


DAMAGE = {"truncated": "cut short", "a TensorRT cache": "TensorRT calibration cache", "binary junk": "not a calib.json",
          "wrong format": "not an edge-resnet calibration file", "missing amax": "no 'amax'",
          "amax not a mapping": "damaged calibration file", "a JSON list": "not an edge-resnet calibration file",
          "negative range": "range -1.0", "NaN range": "range nan"}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_calib_json_says_what_is_wrong(tmp_path: Path, calibs: list[Calibration], how: str) -> None:
    """The loader names the file and the damage, not a fix: the fix depends on whose file it is (a pinned
    --calib is the user's own, the run directory's is recomputed; tests/test_cli_export.py)."""
    path = tmp_path / "calib.json"
    save_calibration(path, calibs[0])
    _damage(path, how)
    with pytest.raises(CalibrationFileError) as e:
        load_calibration(path)
    assert isinstance(e.value, EdgeResNetError)
    assert str(path) in str(e.value) and DAMAGE[how] in str(e.value), str(e.value)
    assert "delete" not in str(e.value) and "\n" not in str(e.value)


def test_a_folder_is_not_a_calib_json(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="is a folder"):
        load_calibration(tmp_path)


@pytest.mark.parametrize("line", ["input 3c010204", "input: zz010204", "input: 3c01"])
def test_damaged_trt_cache_line_is_named(line: str) -> None:
    with pytest.raises(CalibrationFileError, match="bad calibration cache line"):
        read_trt_cache(f"TRT-8501-EntropyCalibration2\n{line}\n")


def test_missing_calib_json(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="no calibration file"):
        load_calibration(tmp_path / "calib.json")


# ---------------------------------------------------------------- TensorRT calibration cache

LINE = re.compile(r"^(\S+): ([0-9a-f]{8})$")


def test_trt_cache_format_and_round_trip(calibs: list[Calibration]) -> None:
    amax = calibs[CALIBRATORS.index("entropy")].amax
    text = trt_cache_text(amax, "8.5.2")
    lines = text.splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    assert text.endswith("\n") and len(lines) == 1 + len(amax)
    for ln in lines[1:]:
        assert LINE.match(ln), ln
    header, scales = read_trt_cache(text)
    assert header == lines[0]
    assert list(scales) == list(amax)  # in the given order
    for name, a in amax.items():
        assert scales[name] == np.float32(max(a, 1e-6) / 127), name
        if a > 0:
            assert scales[name] == np.float32(a / 127), name


def test_trt_cache_known_answers() -> None:
    # IEEE-754 float32 bits, big-endian: 1.0 = 0x3f800000, 2.0 = 0x40000000, 0.5 = 0x3f000000
    assert trt_scale_hex(127.0) == "3f800000"
    assert trt_scale_hex(254.0) == "40000000"
    assert trt_scale_hex(63.5) == "3f000000"
    # the default header names JetPack 5.1.x's TensorRT, 8.5.2 (TensorRT skips a cache of another version)
    assert trt_cache_text({"input": 127.0, "conv1": 254.0}) == (
        "TRT-8502-EntropyCalibration2\ninput: 3f800000\nconv1: 40000000\n")
    assert trt_cache_text({"x": 127.0}, "10.3").splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert trt_cache_text({"x": 127.0}, "10.13.3.9").splitlines()[0] == "TRT-101303-EntropyCalibration2"
    assert trt_cache_text({"x": 127.0}, "8.6.2").splitlines()[0] == "TRT-8602-EntropyCalibration2"
    assert read_trt_cache("TRT-8501-EntropyCalibration2\ninput: 3f800000\n")[1] == {"input": 1.0}


def test_trt_cache_unknown_version() -> None:
    with pytest.raises(ValueError, match="unknown TensorRT version '7.1'"):
        trt_cache_text({"input": 1.0}, "7.1")
    with pytest.raises(ValueError, match="implicit INT8 is 8.5-10.x"):
        trt_cache_text({"input": 1.0}, "11.4.1")  # 11 removed calibration caches
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        trt_cache_text({"input": 1.0}, "ten")


def test_read_trt_cache_refuses_other_files() -> None:
    with pytest.raises(CalibrationFileError, match="TRT-"):
        read_trt_cache('{"format": "edge-resnet/calib-1"}')
    with pytest.raises(CalibrationFileError, match="bad calibration cache line"):
        read_trt_cache("TRT-8501-EntropyCalibration2\ninput 3f800000\n")
