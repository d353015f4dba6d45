"""Summaries of timed samples: the figures a benchmark table shows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """mean, std, min, max and p50/p90/p99 (numpy's linear interpolation) of samples in ms."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    out = {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}
    for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES)):
        out[f"p{q}"] = float(v)
    return out


def throughput(batch: int, mean_ms: float) -> float:
    """Images per second at ``batch`` images per ``mean_ms``."""
    return 1000.0 * batch / mean_ms
