"""TensorStats against histograms computed directly with numpy on all the data at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_resnet.calibration.stats import Histogram, TensorStats

BINS = 256


def on_grid(rng: np.random.Generator, n: int, r: float, bins: int = BINS, top: float = 1.0) -> np.ndarray:
    """Signed values at bin centers of the grid of range ``r``, jittered by under a quarter bin,
    with magnitudes up to ``top * r`` (the same bin width continued past r when top > 1).

    No value then lies near a bin edge of that grid or of any coarser grid (2x, 4x, ... the range),
    so float32 (our binning) and float64 (np.histogram) must agree on every one of them.
    """
    w = r / bins
    idx = rng.integers(0, int(bins * top), n)
    mag = (idx + 0.5 + rng.uniform(-0.2, 0.2, n)) * w
    return np.where(rng.random(n) < 0.5, -mag, mag).astype(np.float32)


def np_halves(x: np.ndarray, r: float, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    pos, _ = np.histogram(x[x >= 0], bins=bins, range=(0.0, r))
    neg, _ = np.histogram(-x[x < 0], bins=bins, range=(0.0, r))
    return pos.astype(np.float64), neg.astype(np.float64)


def test_first_batch_halves_equal_numpy_histograms() -> None:
    rng = np.random.default_rng(0)
    x = on_grid(rng, 20_000, 3.0)
    x[:3] = [3.0, -3.0, 0.0]  # both ends of the range (closed last bins) and an exact zero
    s = TensorStats(bins=BINS)
    s.update(torch.from_numpy(x).view(20, 1000))
    pos, neg = np_halves(x, 3.0)
    assert s.range == 3.0
    np.testing.assert_array_equal(s.pos, pos)
    np.testing.assert_array_equal(s.neg, neg)
    assert (s.count, s.min, s.max, s.amax) == (20_000, -3.0, 3.0, 3.0)


def test_abs_and_relu_parts_equal_numpy_histograms_of_abs_and_relu() -> None:
    rng = np.random.default_rng(1)
    x = on_grid(rng, 50_000, 2.0)
    x[0] = -2.0
    s = TensorStats(bins=BINS)
    s.update(torch.from_numpy(x))
    abs_h = s.histogram("abs")
    relu_h = s.histogram("relu")
    np.testing.assert_array_equal(abs_h.counts, np.histogram(np.abs(x), bins=BINS, range=(0, 2.0))[0])
    np.testing.assert_array_equal(relu_h.counts, np.histogram(np.maximum(x, 0), bins=BINS, range=(0, 2.0))[0])
    assert abs_h.width == relu_h.width == 2.0 / BINS
    assert abs_h.amax == 2.0
    assert relu_h.amax == float(x.max())
    assert abs_h.total == relu_h.total == x.size


def test_doubling_gives_the_histogram_at_the_final_range() -> None:
    rng = np.random.default_rng(2)
    first = on_grid(rng, 10_000, 1.0)
    first[0] = -1.0  # the first batch's max |x|: the range starts at exactly 1
    later = [on_grid(rng, 10_000, 1.0, top=0.9), on_grid(rng, 10_000, 1.0, top=3.0), on_grid(rng, 5_000, 1.0, top=7.5)]
    s = TensorStats(bins=BINS)
    for batch in [first, *later]:
        s.update(torch.from_numpy(batch))
    assert s.range == 8.0  # 1 -> 4 (covers 3) -> 8 (covers 7.5): powers of two of the first range
    everything = np.concatenate([first, *later])
    pos, neg = np_halves(everything, 8.0)
    # the first batch's -1.0 sat on the old range end, which is an edge of the new grid; the negative
    # half's bins are closed above, so it stays in the bin below that edge, where numpy does not put it
    edge = BINS // 8
    neg[edge] -= 1
    neg[edge - 1] += 1
    np.testing.assert_array_equal(s.pos, pos)
    np.testing.assert_array_equal(s.neg, neg)
    assert s.count == everything.size
    assert (s.min, s.max) == (float(everything.min()), float(everything.max()))


def test_doubling_past_the_bin_count_collapses_into_bin_zero() -> None:
    s = TensorStats(bins=8)
    s.update(torch.tensor([0.5, -0.25, 1.0]))
    s.update(torch.tensor([100.0]))  # 1 -> 128 = 16 x 8 bins: every old bin lands in new bin 0
    assert s.range == 128.0
    assert s.pos[0] == 2 and s.neg[0] == 1
    assert s.pos[6] == 1 and s.pos.sum() + s.neg.sum() == 4  # 100 is in [96, 112)


def test_all_zero_batches_before_the_first_non_zero_one_are_counted() -> None:
    s = TensorStats(bins=BINS)
    s.update(torch.zeros(4, 5))
    s.update(torch.zeros(3))
    assert s.range is None and s.amax == 0.0 and s.count == 23
    assert s.histogram().total == 23 and s.histogram().amax == 0.0
    x = on_grid(np.random.default_rng(3), 1_000, 2.0)
    x[0] = 2.0
    s.update(torch.from_numpy(x))
    s.update(torch.zeros(7))
    pos, neg = np_halves(np.concatenate([x, np.zeros(30, np.float32)]), 2.0)
    np.testing.assert_array_equal(s.pos, pos)
    np.testing.assert_array_equal(s.neg, neg)
    assert s.count == 1_030 and s.min == min(0.0, float(x.min()))


def test_merge_equals_a_single_stream() -> None:
    rng = np.random.default_rng(4)
    a1 = on_grid(rng, 8_000, 1.0)
    a1[0] = 1.0
    b1 = on_grid(rng, 8_000, 2.0)
    b1[0] = -2.0  # rank b starts at 2: a power of two from rank a's 1, so the merge is exact
    a2, b2 = on_grid(rng, 8_000, 1.0) * 3.0, on_grid(rng, 8_000, 1.0) * 0.5
    single, rank_a, rank_b = TensorStats(BINS), TensorStats(BINS), TensorStats(BINS)
    for batch in (a1, a2, b1, b2):
        single.update(torch.from_numpy(batch))
    for batch in (a1, a2):
        rank_a.update(torch.from_numpy(batch))
    for batch in (b1, b2):
        rank_b.update(torch.from_numpy(batch))
    rank_b.merge(rank_a)
    assert rank_b.range == single.range == 4.0
    np.testing.assert_array_equal(rank_b.pos, single.pos)
    np.testing.assert_array_equal(rank_b.neg, single.neg)
    assert (rank_b.count, rank_b.min, rank_b.max) == (single.count, single.min, single.max)
    a_pos, a_neg = rank_a.pos.copy(), rank_a.neg.copy()
    rank_a.merge(TensorStats(BINS))  # merging an empty one changes nothing
    np.testing.assert_array_equal(rank_a.pos, a_pos)
    np.testing.assert_array_equal(rank_a.neg, a_neg)
    zeros = TensorStats(BINS)
    zeros.update(torch.zeros(5))
    zeros.merge(rank_a)  # an all-zero stats takes the other's range
    assert zeros.range == 4.0 and zeros.pos[0] == rank_a.pos[0] + 5


def test_merge_leaves_the_other_unchanged_and_rejects_other_bin_counts() -> None:
    a, b = TensorStats(BINS), TensorStats(BINS)
    a.update(torch.tensor([1.0, -0.5]))
    b.update(torch.tensor([3.0, 0.25]))
    before = b.pos.copy(), b.neg.copy(), b.range, b.count
    a.merge(b)
    np.testing.assert_array_equal(b.pos, before[0])
    np.testing.assert_array_equal(b.neg, before[1])
    assert (b.range, b.count) == before[2:]
    with pytest.raises(ValueError, match="bins"):
        a.merge(TensorStats(BINS * 2))


def test_merge_of_unaligned_ranges_keeps_totals_and_moves_counts_less_than_a_bin() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=20_000).astype(np.float32), rng.normal(size=20_000).astype(np.float32) * 1.3
    a, b = TensorStats(BINS), TensorStats(BINS)
    a.update(torch.from_numpy(x))
    b.update(torch.from_numpy(y))
    assert np.log2(b.range / a.range) % 1 != 0  # not a power of two apart
    a.merge(b)
    both = np.concatenate([x, y])
    pos, neg = np_halves(both, a.range)
    assert a.pos.sum() + a.neg.sum() == both.size
    assert a.amax == float(np.abs(both).max()) and a.range >= a.amax
    # cumulative counts differ by at most what one bin holds: every count moved less than a bin
    for got, want in ((a.pos, pos), (a.neg, neg)):
        assert np.max(np.abs(np.cumsum(got) - np.cumsum(want))) <= want.max()



def test_counts_above_float32_precision_stay_exact() -> None:
    # 2**24 + 1 zeros is not a float32 number: counting in float32 (torch.histc) would report 2**24
    x = torch.zeros(2**24 + 2)
    x[0] = 1.0
    s = TensorStats(BINS)
    s.update(x)
    assert s.pos[0] == 2**24 + 1 and s.pos[-1] == 1


def test_dtypes_empty_tensors_and_bad_values() -> None:
    s = TensorStats(BINS)
    s.update(torch.empty(0))
    assert s.count == 0 and s.amax == 0.0
    s.update(torch.tensor([0.5, -1.0], dtype=torch.float16))
    s.update(torch.tensor([0.25], dtype=torch.float64, requires_grad=True))
    assert s.count == 3 and s.amax == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        s.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="non-finite"):
        s.update(torch.tensor([float("inf")]))
    assert s.count == 3  # a rejected batch leaves no trace
    with pytest.raises(ValueError):
        TensorStats(bins=0)
    with pytest.raises(ValueError, match="part"):
        s.histogram("sign")


def test_histogram_is_a_read_only_copy_with_consistent_edges() -> None:
    counts = np.array([1.0, 2.0, 0.0, 4.0])
    h = Histogram(counts, 0.5, 1.9)
    counts[0] = 100.0
    assert h.counts[0] == 1.0  # not the caller's array
    with pytest.raises(ValueError):
        h.counts[1] = 7.0
    np.testing.assert_array_equal(h.edges, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert (h.bins, h.total) == (4, 7.0)
    with pytest.raises(ValueError):
        Histogram(np.array([1.0, -1.0]), 0.5, 1.0)
    with pytest.raises(ValueError):
        Histogram(np.array([1.0]), 0.0, 1.0)


@pytest.mark.cuda
def test_cuda_tensor_gives_the_same_counts_as_cpu() -> None:
    rng = np.random.default_rng(7)
    batches = [torch.from_numpy(on_grid(rng, 100_000, 1.0) * s) for s in (1.0, 2.5, 0.5)]
    cpu, gpu = TensorStats(BINS), TensorStats(BINS)
    for b in batches:
        cpu.update(b)
        gpu.update(b.cuda())
    np.testing.assert_array_equal(gpu.pos, cpu.pos)
    np.testing.assert_array_equal(gpu.neg, cpu.neg)
    assert (gpu.count, gpu.min, gpu.max, gpu.range) == (cpu.count, cpu.min, cpu.max, cpu.range)


def test_numpy_and_torch_updates_count_the_same_bins() -> None:
    """The ONNX Runtime collector feeds numpy arrays, the PyTorch one tensors: the same values, the same counts,
    through range growth and an all-zero batch."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a, b = TensorStats(256), TensorStats(256)
    batches = [np.zeros((3, 5), np.float32)] + [(rng.standard_normal((4, 7, 9)) * (1 + 3 * i)).astype(np.float32)
                                                for i in range(4)]
    for x in batches:
        a.update(x)
        b.update(torch.from_numpy(x))
    assert (a.count, a.min, a.max, a.range) == (b.count, b.min, b.max, b.range)
    np.testing.assert_array_equal(a.pos, b.pos)
    np.testing.assert_array_equal(a.neg, b.neg)
    assert a.pos.sum() + a.neg.sum() == sum(x.size for x in batches)
