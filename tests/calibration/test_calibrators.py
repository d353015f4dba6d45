"""Calibrators against known answers and against slow, straightforward re-computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_resnet.calibration.calibrators import (
    CALIBRATORS,
    amax_entropy,
    amax_max,
    amax_mse,
    amax_percentile,
    compute_amax,
    weight_amax,
)
from edge_resnet.calibration.stats import Histogram, TensorStats


def hist_of(values: np.ndarray, bins: int = 2048) -> Histogram:
    """Histogram of magnitudes on [0, max], as the collector builds it before any doubling."""
    values = np.abs(values)
    amax = float(values.max())
    counts, _ = np.histogram(values, bins=bins, range=(0.0, amax))
    return Histogram(counts.astype(np.float64), amax / bins, amax)


# ---- reference implementations: loops, written from the algorithms' descriptions -----------------


def entropy_reference(h: Histogram, num_quant_bins: int = 128) -> float:
    """pytorch-quantization's _compute_amax_entropy, candidate by candidate, with a direct KL."""
    if np.count_nonzero(h.counts) < num_quant_bins:
        return h.amax
    bins = h.counts.copy()
    bins[0] = bins[1]
    divergences = []
    for i in range(num_quant_bins, bins.size + 1):
        space = np.linspace(0, i, num=num_quant_bins + 1)
        group = np.digitize(np.arange(i), space) - 1
        kept = bins[:i] != 0
        q = np.zeros(i)
        for g in np.unique(group[kept]):
            members = (group == g) & kept
            q[members] = bins[:i][members].sum() / members.sum()
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        if np.any((p > 0) & (q == 0)):
            divergences.append(np.inf)
            continue
        m = p > 0
        divergences.append(float(np.sum(p[m] * np.log(p[m] / q[m]))))
    divergences = np.array(divergences)
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))  # the last minimum
    return min((best + num_quant_bins) * h.width, h.amax)


def mse_reference(h: Histogram, num_levels: int = 127) -> tuple[float, np.ndarray]:
    """Expected error of every candidate amax (bin upper edges), summed value by value."""
    centers = (np.arange(h.bins) + 0.5) * h.width
    errors = []
    for k in range(h.bins):
        a = (k + 1) * h.width
        err = 0.0
        for x, n in zip(centers, h.counts, strict=True):
            err += n * ((x - a) ** 2 if x > a else (a / num_levels) ** 2 / 12)
        errors.append(err)
    errors = np.array(errors)
    return min((int(np.argmin(errors)) + 1) * h.width, h.amax), errors


def quantization_mse(values: np.ndarray, amax: float) -> float:
    """Mean squared error of the real int8 round trip (round half to even, saturate)."""
    scale = amax / 127
    q = np.clip(np.round(values / scale), -127, 127) * scale
    return float(np.mean((q - values) ** 2))


# ---- histograms shaped like real activations ------------------------------------------------------


def real_looking() -> dict[str, Histogram]:
    rng = np.random.default_rng(1)
    stats = TensorStats(bins=2048)
    relu_in = torch.from_numpy(rng.normal(0.3, 1.0, 300_000).astype(np.float32))
    stats.update(relu_in)
    random_counts = rng.integers(0, 50, 512).astype(np.float64)
    random_counts[rng.random(512) < 0.2] = 0  # empty bins: candidates whose last bin is empty
    return {
        "half-normal": hist_of(rng.normal(size=200_000)),
        "exponential": hist_of(rng.exponential(size=200_000), bins=1024),
        "laplace-tail": hist_of(rng.laplace(size=100_000), bins=1024),
        "relu-with-zeros": stats.histogram("relu"),
        "random-counts": Histogram(random_counts, 0.01, 5.12),
        "random-float-counts": Histogram(rng.random(700) * rng.random(700), 0.5, 349.9),
    }


REAL = real_looking()


# ---- max / percentile -----------------------------------------------------------------------------


def test_max_is_the_histograms_amax() -> None:
    h = Histogram(np.array([3.0, 0.0, 1.0]), 1.0, 2.7)
    assert amax_max(h) == 2.7


def test_percentile_known_answer_0_to_99() -> None:
    # one value in each unit bin 0..99: 90% of the values are 0..89, i.e. at most the edge 90
    h = Histogram(np.ones(100), 1.0, 99.0)
    assert amax_percentile(h, 90.0) == pytest.approx(90.0)
    assert amax_percentile(h, 100.0) == 99.0  # capped at amax: the last bin reaches past it
    assert amax_percentile(h, 0.5) == pytest.approx(1.0)


SAMPLERS = {
    "half-normal": lambda rng: np.abs(rng.normal(size=200_000)),
    "exponential": lambda rng: rng.exponential(size=200_000),
    "laplace": lambda rng: np.abs(rng.laplace(size=100_000)),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("percentile", [50.0, 99.0, 99.99])
def test_percentile_within_one_bin_of_numpy(name: str, percentile: float) -> None:
    data = SAMPLERS[name](np.random.default_rng(3))
    h = hist_of(data, bins=1024)
    got = amax_percentile(h, percentile)
    exact = np.percentile(data, percentile)
    assert exact <= got <= exact + h.width  # the upper edge: never clips the percentile's mass


# ---- entropy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL))
def test_entropy_matches_reference_on_real_looking_histograms(name: str) -> None:
    h = REAL[name]
    assert amax_entropy(h) == pytest.approx(entropy_reference(h), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_entropy_matches_reference_on_random_histograms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(130, 600))
    counts = rng.poisson(rng.exponential(20.0, n)).astype(np.float64)  # many small and some empty bins
    h = Histogram(counts, 0.1, n * 0.1)
    assert amax_entropy(h) == pytest.approx(entropy_reference(h), rel=1e-12)
    assert amax_entropy(h, num_quant_bins=100) == pytest.approx(entropy_reference(h, 100), rel=1e-12)


def test_entropy_clips_a_far_outlier_and_keeps_a_compact_bulk() -> None:
    rng = np.random.default_rng(0)
    bulk = rng.normal(size=100_000)
    h = hist_of(np.concatenate([bulk, [60.0]]))  # one value at 60, the rest within about 5
    assert amax_entropy(h) < 8.0
    assert amax_entropy(h) > 2.0


def test_entropy_does_not_mutate_its_input() -> None:
    h = REAL["relu-with-zeros"]
    before = h.counts.copy()
    amax_entropy(h)
    np.testing.assert_array_equal(h.counts, before)
    assert not h.counts.flags.writeable


def test_entropy_with_fewer_filled_bins_than_levels_returns_amax() -> None:
    counts = np.zeros(2048)
    counts[::20] = 5.0  # 103 filled bins < 128
    h = Histogram(counts, 0.01, 20.47)
    assert amax_entropy(h) == 20.47


# ---- mse ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exponential", "laplace-tail", "random-counts", "random-float-counts"])
def test_mse_matches_brute_force(name: str) -> None:
    h = REAL[name]
    expected, errors = mse_reference(h)
    assert amax_mse(h) == pytest.approx(expected, rel=1e-12)
    assert errors.argmin() < h.bins - 1  # these shapes have an interior optimum: the test checks a real choice


def test_mse_keeps_the_max_of_a_uniform_distribution() -> None:
    values = np.random.default_rng(0).uniform(0, 1, 200_000)
    h = hist_of(values, bins=512)
    assert amax_mse(h) >= 0.97 * h.amax


def test_mse_clips_a_laplace_tail_at_the_analytic_optimum() -> None:
    # |Laplace(0, 1)| is Exp(1): exact bin masses on [0, 30], no sampling noise
    edges = np.linspace(0.0, 30.0, 2049)
    h = Histogram(np.exp(-edges[:-1]) - np.exp(-edges[1:]), 30.0 / 2048, 30.0)
    # expected error in closed form: clipping 2 e^-a, rounding (a / 127)^2 / 12 on P(x <= a) = 1 - e^-a
    a = np.linspace(1.0, 30.0, 290_001)
    optimum = a[np.argmin(2 * np.exp(-a) + (a / 127) ** 2 / 12 * (1 - np.exp(-a)))]
    assert 9.5 < optimum < 10.5  # about 9.89 (Banner et al.'s ACIQ figure for 8 bits), far below the max of 30
    assert amax_mse(h) == pytest.approx(optimum, abs=3 * h.width)


def test_mse_choice_is_near_best_for_the_real_int8_round_trip() -> None:
    values = np.random.default_rng(0).laplace(size=200_000)
    h = hist_of(values, bins=1024)
    got = amax_mse(h)
    assert got < 0.9 * h.amax
    grid = np.linspace(0.3, 1.0, 71) * h.amax
    best = min(quantization_mse(values, a) for a in grid)
    assert quantization_mse(values, got) <= 1.05 * best
    assert quantization_mse(values, got) < 0.8 * quantization_mse(values, h.amax)


# ---- degenerate input, dispatch, weights ----------------------------------------------------------


@pytest.mark.parametrize("method", CALIBRATORS)
def test_empty_and_all_zero_histograms_give_zero(method: str) -> None:
    empty = Histogram(np.zeros(2048), 0.001, 0.0)
    zeros = TensorStats()
    zeros.update(torch.zeros(10, 10))
    assert compute_amax(empty, method) == 0.0
    assert compute_amax(zeros.histogram(), method) == 0.0
    assert compute_amax(zeros.histogram("relu"), method) == 0.0


@pytest.mark.parametrize("method", CALIBRATORS)
def test_compute_amax_dispatches_to_the_named_function(method: str) -> None:
    h = REAL["laplace-tail"]
    direct = {"max": amax_max, "percentile": amax_percentile, "entropy": amax_entropy, "mse": amax_mse}
    assert compute_amax(h, method) == direct[method](h)
    assert 0.0 < compute_amax(h, method) <= h.amax


def test_compute_amax_passes_the_percentile() -> None:
    h = REAL["laplace-tail"]
    assert compute_amax(h, "percentile", percentile=99.0) == amax_percentile(h, 99.0)
    assert compute_amax(h, "percentile", percentile=99.0) < compute_amax(h, "percentile", percentile=99.99)


def test_compute_amax_rejects_unknown_method_and_bad_percentile() -> None:
    h = REAL["laplace-tail"]
    with pytest.raises(ValueError, match="max, percentile, entropy, mse"):
        compute_amax(h, "minmax")
    for bad in (0.0, -1.0, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            compute_amax(h, "percentile", percentile=bad)
    with pytest.raises(ValueError, match="percentile"):
        amax_percentile(h, 0.0)


def test_weight_amax_per_output_channel() -> None:
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3))
    w[2] = 0.0
    got = weight_amax(w)
    expected = np.array([max(abs(v) for v in w[c].ravel()) for c in range(8)])  # one channel at a time
    assert got.dtype == np.float32 and got.shape == (8,)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert got[2] == 0.0
    linear = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    np.testing.assert_array_equal(weight_amax(linear), np.abs(linear).max(axis=1))
    with pytest.raises(ValueError):
        weight_amax(np.float32(1.0))
