"""Calibrate a folded model: stream statistics over the data, then turn each histogram into a range.

The caller owns the data (a ``CalibrationData``) and the model (its traced graph); this module
only connects the collector to the calibrators and records what the ranges came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import torch

from edge_resnet.calibration.files import Calibration, CalibrationFileError, model_fingerprint
from edge_resnet.calibration.calibrators import CALIBRATORS
from edge_resnet.calibration.collect import collect
from edge_resnet.calibration.statistics import ranges
from edge_resnet.calibration.readers import CalibrationData
from edge_resnet.models.graph import Graph


def calibrate(
    graph: Graph,
    data: CalibrationData,
    *,
    method: str = "entropy",
    percentile: float = 99.99,
    bins: int = 2048,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> Calibration:
    """Calibrated ranges of every tensor of ``graph`` (a folded FP32 model) over ``data``."""
    return calibrate_methods(graph, data, (method,), percentile=percentile, bins=bins, batch_size=batch_size,
                             device=device, on_batch=on_batch)[0]


def calibrate_methods(
    graph: Graph,
    data: CalibrationData,
    methods: tuple[str, ...] = CALIBRATORS,
    *,
    percentile: float = 99.99,
    bins: int = 2048,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> list[Calibration]:
    """One pass over the data, one ``Calibration`` per method (the statistics are shared)."""
    for method in methods:
        if method not in CALIBRATORS:
            raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATORS)}")
    start = time.perf_counter()
    stats = collect(graph, data.batches(batch_size), bins=bins, device=device, on_batch=on_batch)
    collected = time.perf_counter()
    fingerprint = {"model": graph_fingerprint(graph), "data": data.fingerprint}
    out = []
    for method in methods:
        t = time.perf_counter()
        amax = ranges(stats, method, percentile=percentile)
        out.append(Calibration(
            method=method, amax=amax, images=stats.images, skipped=data.skipped,
            percentile=percentile if method == "percentile" else None, bins=bins, data=data.name,
            fingerprint=dict(fingerprint), channel_mean=stats.channel_means(), requested=method,
            seconds=(collected - start) + (time.perf_counter() - t),
        ))
    return out


def graph_fingerprint(graph: Graph) -> str:
    """The weights the ranges belong to (every module's parameters and buffers)."""
    state = {}
    for node in graph:
        if node.module is not None:
            for k, v in node.module.state_dict().items():
                state[f"{node.target}.{k}"] = v
    return model_fingerprint(state)


def check_reusable(calib: Calibration, *, model: str, data: str | None, method: str, percentile: float,
                   bins: int, tensors: Collection[str] = (), equalize: str = "off") -> str | None:
    """Why ``calib`` cannot be reused for this model/data/settings, or None if it can.

    ``data`` None skips the data check (a pinned calibration used without calibration data);
    ``tensors`` are the names the ranges must cover (the graph's); ``equalize`` the --equalize
    setting asked for (a calibration made without the option counts as "off").
    """
    if calib.fingerprint.get("model") != model:
        return "it was computed for other model weights"
    missing = sorted(set(tensors) - set(calib.amax))
    if missing:
        return f"it has no range for {len(missing)} of the model's {len(set(tensors))} tensors (e.g. {missing[0]})"
    if data is not None and calib.fingerprint.get("data") != data:
        return "it was computed on other calibration data (or another --num-calib / seed / preprocessing)"
    want = {"method": method, "percentile": percentile if method in ("percentile", "auto") else None, "bins": bins,
            "equalize": equalize}
    if calib.settings() != want:
        return f"it used {calib.settings()}, this run asks for {want}"
    return None


__all__ = ["Calibration", "CalibrationFileError", "calibrate", "calibrate_methods", "check_reusable",
           "graph_fingerprint", "ranges"]
