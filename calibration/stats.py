"""Streaming per-tensor statistics for calibration, in memory that does not grow with the data.

A ``TensorStats`` sees one activation tensor per batch and keeps its element count, min, max and
a signed histogram on a fixed number of bins. The histogram's range R starts at the first non-zero
batch's max |x| and only ever doubles, so old bins merge pairwise into the new ones and no count
is ever re-estimated: after any number of batches the counts equal a histogram computed directly
at the final range (up to values lying exactly on a former range end, see ``_merge_bins``).

The calibrators (``edge_resnet.calibration.calibrators``) are pure functions of the ``Histogram`` this produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Histogram:
    """Counts of non-negative magnitudes on equal bins starting at 0.

    Bin ``i`` covers ``[i * width, (i + 1) * width)``; ``amax`` is the exact max of the values
    counted, which can lie anywhere in the last occupied bin. ``counts`` is a read-only float64
    copy, so a calibrator cannot change a histogram another one reads.
    """

    counts: np.ndarray
    width: float
    amax: float

    def __post_init__(self) -> None:
        counts = np.array(self.counts, dtype=np.float64)  # always a copy: the caller keeps its array
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError(f"counts must be a non-empty 1-D array, got shape {counts.shape}")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("counts must be finite and non-negative")
        if not (math.isfinite(self.width) and self.width >= 0 and math.isfinite(self.amax) and self.amax >= 0):
            raise ValueError(f"width and amax must be finite and >= 0, got width={self.width}, amax={self.amax}")
        if self.amax > 0 and self.width == 0:
            raise ValueError(f"width 0 cannot hold values up to amax={self.amax}")
        counts.flags.writeable = False
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "amax", float(self.amax))

    @property
    def bins(self) -> int:
        return int(self.counts.size)

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges, ``0, width, ..., bins * width``."""
        return np.arange(self.bins + 1, dtype=np.float64) * self.width

    @property
    def total(self) -> float:
        return float(self.counts.sum())


def _merge_bins(counts: np.ndarray, group: int) -> np.ndarray:
    """Sum each run of ``group`` adjacent bins into one: the layout after the range grows ``group`` times.

    New bin j covers old bins ``[j * group, (j + 1) * group)``. A positive value exactly at the old
    range end R was in the old (closed) last bin and stays in new bin ``(bins - 1) // group``, one
    below where binning it afresh would put it; amax keeps its exact value.
    """
    out = np.zeros_like(counts)
    if group >= counts.size:
        out[0] = counts.sum()
    else:
        merged = np.add.reduceat(counts, np.arange(0, counts.size, group))
        out[: merged.size] = merged
    return out


def _rebin(counts: np.ndarray, width: float, new_width: float) -> np.ndarray:
    """Spread counts on bins of ``width`` onto bins of ``new_width >= width`` by overlap.

    Only for merging two stats whose ranges are not a power of two apart: each count moves at most
    within the one or two new bins its old bin overlaps, the total is kept exactly.
    """
    bins = counts.size
    lo_edge = np.arange(bins) * width
    hi_edge = lo_edge + width
    lo = np.minimum((lo_edge / new_width).astype(np.int64), bins - 1)
    split = (lo + 1) * new_width  # the new bin edge that may cut the old bin
    frac_lo = np.clip((split - lo_edge) / width, 0.0, 1.0)
    frac_lo = np.where(hi_edge <= split, 1.0, frac_lo)
    out = np.bincount(lo, weights=counts * frac_lo, minlength=bins)
    hi = np.minimum(lo + 1, bins - 1)
    out += np.bincount(hi, weights=counts * (1.0 - frac_lo), minlength=bins)
    return out[:bins]


def _covering_range(r: float, m: float) -> float:
    """``r * 2**k`` for the smallest k >= 0 that makes it >= ``m``."""
    k = 0
    while r * 2**k < m:
        k += 1
    return r * 2**k


def _regrid(counts: np.ndarray, r: float, target: float) -> np.ndarray:
    """Counts on a histogram of range ``r`` moved to range ``target >= r`` (same number of bins)."""
    if target == r:
        return counts
    group = round(target / r)
    if group & (group - 1) == 0 and r * group == target:
        return _merge_bins(counts, group)
    return _rebin(counts, r / counts.size, target / counts.size)


class TensorStats:
    """Count, min, max and a signed histogram of every value a tensor took during calibration.

    The histogram has ``2 * bins`` bins over ``[-R, R]``, kept as two halves with the same layout:
    ``pos[i]`` counts values in ``[i * w, (i + 1) * w)`` (zeros in ``pos[0]``), ``neg[i]`` counts
    negatives whose magnitude is in ``(i * w, (i + 1) * w]``, with ``w = R / bins``. Keeping the sign
    lets one collector serve both the symmetric ``|x|`` histogram and the post-ReLU one.
    """

    def __init__(self, bins: int = 2048) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        self.bins = bins
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.range: float | None = None  # R; None until a non-zero value is seen
        self.pos = np.zeros(bins, dtype=np.float64)
        self.neg = np.zeros(bins, dtype=np.float64)

    @property
    def amax(self) -> float:
        """max |x| over everything seen (0.0 before any value)."""
        return max(-self.min, self.max, 0.0) if self.count else 0.0

    @property
    def width(self) -> float:
        """Bin width ``R / bins``; 0.0 while every value seen was zero."""
        return self.range / self.bins if self.range is not None else 0.0

    def update(self, x: Any) -> None:
        """Add every element of ``x``: a torch tensor (any float dtype, any device) or a numpy array.

        Both give the same counts for the same float32 values: the bin index is the same float32
        arithmetic, floor((x + R) * (bins / R)), with R and bins / R rounded to float32 first.
        """
        if isinstance(x, np.ndarray):
            flat = np.asarray(x, dtype=np.float32).reshape(-1)
            if flat.size and self._account(flat.size, float(flat.min()), float(flat.max())):
                t = flat + np.float32(self.range)
                t *= np.float32(self.bins / self.range)
                idx = t.astype(np.intp)  # t >= 0 (every x >= -R), so truncating is the floor; intp: bincount's own type
                del t
                np.minimum(idx, 2 * self.bins - 1, out=idx)  # x = R: the top edge, in the last bin
                self._add(np.bincount(idx, minlength=2 * self.bins))
            return
        import torch  # here, so that the calibrators and their method names import without torch

        x = x.detach().float()
        if x.numel() == 0 or not self._account(x.numel(), *torch.stack(torch.aminmax(x)).tolist()):  # one sync
            return
        r = self.range
        # bin index floor((x + R) * bins / R), the top edge folded into the last bin (as histc
        # does); on the CPU this index-and-bincount is faster than histc and counts in int64
        idx = x.reshape(-1).add(r).mul_(self.bins / r).floor_().clamp_(0, 2 * self.bins - 1).to(torch.int32)
        self._add(torch.bincount(idx, minlength=2 * self.bins).cpu().numpy())

    def _account(self, n: int, lo: float, hi: float) -> bool:
        """Count ``n`` values with min ``lo`` and max ``hi`` and grow the range to cover them; False when they
        were all zeros (counted in pos[0], also before the range exists): nothing left to bin."""
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"tensor has non-finite values (min {lo}, max {hi}); calibration data must be finite")
        self.count += n
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        m = max(-lo, hi)
        if m == 0.0:
            self.pos[0] += n
            return False
        self._grow_to(m)
        return True

    def _add(self, hist: np.ndarray) -> None:
        hist = hist.astype(np.float64)
        self.pos += hist[self.bins :]
        self.neg += hist[self.bins - 1 :: -1]  # mirrored: neg[i] is hist[bins - 1 - i]

    def _grow_to(self, m: float) -> None:
        """Make the range cover ``m``: set it on first use, else double it as often as needed."""
        if self.range is None:
            self.range = m
        elif m > self.range:
            target = _covering_range(self.range, m)
            self.pos = _regrid(self.pos, self.range, target)
            self.neg = _regrid(self.neg, self.range, target)
            self.range = target

    def merge(self, other: TensorStats) -> None:
        """Add ``other``'s statistics to these (data-parallel ranks, several passes); ``other`` is unchanged.

        The smaller range doubles until it covers the larger. That is exact when the two ranges are a
        power of two apart (two streams whose first batches had the same max, say); otherwise the
        larger range's counts are spread onto the new grid by overlap, moving counts by less than a bin.
        """
        if other.bins != self.bins:
            raise ValueError(f"cannot merge stats with {other.bins} bins into stats with {self.bins} bins")
        pos, neg = other.pos.copy(), other.neg.copy()
        if other.range is not None and self.range is None:
            self.range = other.range  # our counts so far are all zeros, in pos[0] on any grid
        elif other.range is not None:
            target = _covering_range(min(self.range, other.range), max(self.range, other.range))
            self.pos, self.neg = (_regrid(c, self.range, target) for c in (self.pos, self.neg))
            pos, neg = (_regrid(c, other.range, target) for c in (pos, neg))
            self.range = target
        self.pos += pos
        self.neg += neg
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def histogram(self, part: str = "abs") -> Histogram:
        """The histogram calibrators read: ``"abs"`` for |x| (a signed tensor), ``"relu"`` for max(x, 0).

        "relu" is for a tensor that feeds a ReLU whose output is what gets quantized: every negative
        becomes a zero, counted in bin 0.
        """
        if part == "abs":
            return Histogram(self.pos + self.neg, self.width, self.amax)
        if part == "relu":
            counts = self.pos.copy()
            counts[0] += self.neg.sum()
            return Histogram(counts, self.width, max(self.max, 0.0) if self.count else 0.0)
        raise ValueError(f"unknown histogram part {part!r}; expected 'abs' or 'relu'")

    def __repr__(self) -> str:
        return (
            f"TensorStats(bins={self.bins}, count={self.count}, min={self.min:.6g}, max={self.max:.6g}, "
            f"range={self.range})"
        )
