"""Calibration: data readers, streaming statistics collectors, calibrators (max, percentile, entropy, mse) and caches."""
