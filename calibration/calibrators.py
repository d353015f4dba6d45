"""Calibrators: pure functions from a ``Histogram`` of magnitudes to the amax that sets an INT8 scale.

Collecting a histogram is ``edge_resnet.calibration.stats``' job; choosing the range from it is this module's,
so every method can be run (and compared) on the same collected statistics. All functions are numpy
on the CPU, never change their input, and return a plain float; a histogram with no data or only
zeros gives 0.0, which the caller must turn into a usable scale.

The activation scale is ``amax / 127`` (see "INT8 semantics" in DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_resnet.calibration.stats import Histogram
from edge_resnet.contract import CALIBRATORS

# the smallest range a scale is made from: a tensor calibration never saw move (all zeros)
# still needs a positive scale
MIN_AMAX = 1e-6


def _empty(h: Histogram) -> bool:
    return h.amax == 0.0 or h.total == 0.0


def _check_percentile(percentile: float) -> None:
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")


def amax_max(h: Histogram) -> float:
    """The largest magnitude seen: nothing clips, but one outlier can waste most of the 127 levels."""
    return 0.0 if _empty(h) else h.amax


def amax_percentile(h: Histogram, percentile: float = 99.99) -> float:
    """The upper edge of the bin where the cumulative count first reaches ``percentile`` percent.

    The upper edge, so at least that fraction of values lies inside the range. (pytorch-quantization
    returns that bin's lower edge; the 90th percentile of 0..99 is 90 here and 89 there.)
    Capped at ``h.amax``: the bin holding the max can reach past it.
    """
    _check_percentile(percentile)
    if _empty(h):
        return 0.0
    cum = np.cumsum(h.counts)
    # total * p / 100 is exact for integer counts and percentages; the slack absorbs cumsum rounding
    threshold = cum[-1] * percentile / 100.0 * (1.0 - 1e-12)
    idx = int(np.searchsorted(cum, threshold, side="left"))
    return min((idx + 1) * h.width, h.amax)


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x * log(x) with 0 log 0 = 0."""
    safe = np.where(x > 0, x, 1.0)
    return x * np.log(safe)


def amax_entropy(h: Histogram, num_quant_bins: int = 128) -> float:
    """TensorRT's entropy calibration: the range whose 128-level quantization loses least information.

    For each candidate range of ``i`` bins (``num_quant_bins <= i <= bins``) the reference P is the
    first i bins with everything beyond added to bin i-1 (clipped values saturate there); the candidate
    Q merges the first i bins into ``num_quant_bins`` groups (bin j goes to group
    ``floor(j * num_quant_bins / i)``) and spreads each group's count evenly over its non-empty bins.
    The answer is the upper edge ``i * width`` of the candidate with the smallest KL(P || Q), the last
    one on ties. This follows NVIDIA pytorch-quantization's ``_compute_amax_entropy`` (its Python
    rendering of TensorRT's entropy calibrator; TensorRT's own code is closed) in every detail that
    changes the answer, including two that are easy to miss:

    * bin 0 is given bin 1's count first: after a ReLU bin 0 holds every zero, and a spike there
      would make any range wider than 128 bins look costly (its group would smear it).
    * Q is built from the counts without the clipped mass, so a candidate whose bin i-1 is empty
      while values lie beyond it has infinite divergence and is never chosen.

    Vectorised over candidates with prefix sums (O(bins * num_quant_bins), a few ms for 2048 bins);
    ``tests/calibration/test_calibrators.py`` keeps the loop version it must agree with.
    Capped at ``h.amax`` like the other methods.
    """
    if num_quant_bins < 1:
        raise ValueError(f"num_quant_bins must be >= 1, got {num_quant_bins}")
    if _empty(h):
        return 0.0
    if h.bins < num_quant_bins or np.count_nonzero(h.counts) < num_quant_bins:
        return h.amax  # at most 128 distinct bins: nothing to trade, keep every value
    c = h.counts.copy()  # never the caller's array
    if c.size > 1:
        c[0] = c[1]
    n, nq = c.size, num_quant_bins

    def prefix(v: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(v, dtype=np.float64)))

    cum, nonzero, clogc = prefix(c), prefix(c > 0), prefix(_xlogx(c))
    i = np.arange(nq, n + 1)  # candidate widths, in bins
    k = np.arange(nq + 1)
    bounds = -((-k[None, :] * i[:, None]) // nq)  # ceil(k * i / nq): group k is bins [bounds_k, bounds_k+1)
    mass = np.diff(cum[bounds], axis=1)  # (candidates, groups)
    filled = np.diff(nonzero[bounds], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # sum over bins of c_j log q_j, where q_j = mass / filled of the bin's group
        c_log_q = np.where(mass > 0, mass * np.log(mass / np.maximum(filled, 1)), 0.0).sum(axis=1)
        total = cum[n]
        inside = cum[i]
        outliers = total - inside
        last = c[i - 1]
        q_last = mass[:, -1] / np.maximum(filled[:, -1], 1)  # bin i-1 is always in the last group
        # P's bin i-1 carries the outliers: correct both sums for that one bin
        p_log_p = clogc[i - 1] + _xlogx(last + outliers)
        p_log_q = c_log_q + np.where(outliers > 0, outliers * np.log(np.where(last > 0, q_last, 1.0)), 0.0)
        kl = (p_log_p - p_log_q) / total + np.log(inside / total)
    kl = np.where((outliers > 0) & (last == 0), np.inf, kl)
    kl = np.where(inside > 0, kl, np.inf)
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return min(float(i[best]) * h.width, h.amax)


def amax_mse(h: Histogram, num_levels: int = 127) -> float:
    """The range that minimises the expected squared error of symmetric quantization.

    Each bin's values sit at its center x. A value above amax clips, costing (x - amax)^2; one below
    is rounded to a step of ``amax / num_levels``, costing step^2 / 12 on average. Candidates are
    the bins' upper edges; prefix sums of n, n*x and n*x^2 price them all at once. Capped at ``h.amax``.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if _empty(h):
        return 0.0
    n = h.counts
    x = np.arange(n.size) + 0.5  # in units of bins: exact, and better conditioned than metres of width
    a = np.arange(1, n.size + 1, dtype=np.float64)  # candidate amax = upper edge of bin k
    below = np.cumsum(n)  # values with center <= a_k are bins 0..k
    # suffix sums over bins j > k (the clipped ones)
    s0 = below[-1] - below
    s1 = np.sum(n * x) - np.cumsum(n * x)
    s2 = np.sum(n * x * x) - np.cumsum(n * x * x)
    clip = np.maximum(s2 - 2.0 * a * s1 + a * a * s0, 0.0)
    rounding = (a / num_levels) ** 2 / 12.0 * below
    best = int(np.argmin(clip + rounding))
    return min(float(a[best]) * h.width, h.amax)


_DISPATCH: dict[str, Callable[[Histogram, float], float]] = {
    "max": lambda h, percentile: amax_max(h),
    "percentile": lambda h, percentile: amax_percentile(h, percentile),
    "entropy": lambda h, percentile: amax_entropy(h),
    "mse": lambda h, percentile: amax_mse(h),
}


def compute_amax(h: Histogram, method: str, *, percentile: float = 99.99) -> float:
    """amax of ``h`` by the named method (one of ``CALIBRATORS``); ``percentile`` is read by "percentile" only.

    Raises:
        ValueError: an unknown method, or a percentile outside (0, 100].
    """
    _check_percentile(percentile)  # checked for every method so a bad setting fails early
    try:
        fn = _DISPATCH[method]
    except KeyError:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATORS)}") from None
    return fn(h, percentile)


def weight_amax(w: np.ndarray) -> np.ndarray:
    """Per-output-channel max |w| (axis 0: conv OIHW, linear [out, in]) as float32.

    Weights are known in full, so no histogram: per-channel max is what TensorRT and the DESIGN's
    INT8 semantics use for them. A channel of zeros gives 0; the caller decides its scale.
    """
    w = np.asarray(w)
    if w.ndim < 1:
        raise ValueError("weight_amax needs a weight with an output-channel axis, got a 0-d array")
    a = np.abs(w)
    if w.ndim > 1:
        a = a.reshape(w.shape[0], -1).max(axis=1)
    return a.astype(np.float32)
