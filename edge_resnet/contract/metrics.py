"""How two models' outputs are compared, on both sides: logit SQNR and top-1 agreement.

Identical logits have an infinite SQNR; JSON has no infinity, so every file writes it as null
(``db_to_json``) and reads null back as infinity (``db_from_json``).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def sqnr_from_sums(signal: float, noise: float) -> float:
    """10 log10(signal / noise) from the summed squares: inf when the noise is 0, -inf without signal."""
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference``, in dB (float64 sums)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    return sqnr_from_sums(float(np.sum(ref ** 2)), noise)


def agreement(reference_logits: np.ndarray, test_logits: np.ndarray) -> float:
    """Fraction of rows whose top-1 class is the same."""
    return float(np.mean(np.argmax(reference_logits, axis=1) == np.argmax(test_logits, axis=1)))


def db_to_json(db: Optional[float]) -> Optional[float]:
    """An SQNR as a file holds it: null for identical (infinite)."""
    return None if db is None or math.isinf(db) and db > 0 else db


def db_from_json(value: Optional[float]) -> float:
    """An SQNR read from a file: null (identical) is infinity; 999.0 is how calib.json once wrote it."""
    return math.inf if value is None or value >= 999.0 else float(value)
