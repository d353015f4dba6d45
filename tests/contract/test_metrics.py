"""The comparison both sides use: SQNR known answers, agreement, and how files hold an infinite SQNR."""

from __future__ import annotations

import math

import numpy as np

from edge_resnet.contract.metrics import agreement, db_from_json, db_to_json, sqnr_db, sqnr_from_sums


def test_sqnr_known_answers() -> None:
    ref = np.array([[3.0, 4.0]], dtype=np.float32)  # energy 25
    assert sqnr_db(ref, ref) == math.inf
    assert math.isclose(sqnr_db(ref, ref + np.array([[0.5, 0.0]], dtype=np.float32)), 10 * math.log10(25 / 0.25))
    assert sqnr_db(np.zeros((1, 2)), np.ones((1, 2))) == -math.inf
    assert math.isclose(sqnr_from_sums(100.0, 1.0), 20.0) and sqnr_from_sums(1.0, 0.0) == math.inf


def test_sqnr_sums_in_float64() -> None:
    """float32 logits with a tiny difference: a float32 sum would lose the noise; float64 keeps it."""
    ref = np.full((1000, 10), 1000.0, dtype=np.float32)
    test = ref.copy()
    test[0, 0] = np.nextafter(np.float32(1000.0), np.float32(2000.0))
    noise = float(np.float64(test[0, 0]) - 1000.0) ** 2
    assert math.isclose(sqnr_db(ref, test), 10 * math.log10(1000 * 10 * 1000.0 ** 2 / noise), rel_tol=1e-12)


def test_agreement_counts_top1_matches() -> None:
    ref = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    test = np.array([[2, 1, 0], [0, 0, 1], [0, 0, 5], [0, 3, 0]], dtype=np.float32)
    assert agreement(ref, test) == 0.5


def test_identical_is_null_in_files_and_reads_back_as_infinity() -> None:
    assert db_to_json(math.inf) is None and db_to_json(31.5) == 31.5 and db_to_json(None) is None
    assert db_to_json(-math.inf) == -math.inf  # no signal at all is not "identical"
    assert db_from_json(None) == math.inf and db_from_json(31.5) == 31.5
    assert db_from_json(999.0) == math.inf  # how calib.json's calibrator scores spelled it before
