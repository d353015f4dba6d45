"""Shared fixtures. Hardware tests carry a marker and skip without the hardware.

The markers are decided without importing torch, so the TensorRT/CUDA tests also run on a Jetson
that has no PyTorch: CUDA is asked of the driver library itself (``cuInit`` and ``cuDeviceGetCount``
from libcuda, in a child process so this one never holds a CUDA context before DataLoader workers
fork), TensorRT by importing it.
"""

from __future__ import annotations

import functools
import importlib.util
import signal
import subprocess
import sys

import pytest

PROBE_CUDA = """
import ctypes, sys
for name in ("libcuda.so.1", "libcuda.so"):
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        continue
    count = ctypes.c_int(0)
    ok = lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    sys.exit(0 if ok else 1)
sys.exit(1)
"""


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """A CUDA device the driver can see (no torch, no CUDA toolkit needed)."""
    try:
        return subprocess.run([sys.executable, "-c", PROBE_CUDA], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def tensorrt_importable() -> bool:
    """``import tensorrt`` works (the PyPI placeholder package, for one, is found but does not import)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_trt = pytest.mark.skip(reason="needs TensorRT (`import tensorrt` fails here) and a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not cuda_available():
            item.add_marker(skip_cuda)
        if "tensorrt" in item.keywords and not (tensorrt_importable() and cuda_available()):
            item.add_marker(skip_trt)


@pytest.fixture(autouse=True)
def _seed() -> None:
    if importlib.util.find_spec("torch") is not None:  # a Jetson running the TensorRT tests has no torch
        import torch

        torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _signal_handlers(request: pytest.FixtureRequest):
    """Every test leaves SIGINT/SIGTERM as it found them. Started from a background shell (``cmd &``, many CI
    runners) SIGINT is SIG_IGN, not Python's default_int_handler: tests compare with what was there, and a
    test that leaves its own handler behind fails here (after the handler is put back, so the next test runs
    as the suite started)."""
    watched = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in watched}
    yield
    changed = [signal.Signals(sig).name for sig in watched if signal.getsignal(sig) is not before[sig]]
    for sig in watched:
        if before[sig] is not None:  # None: a handler installed outside Python, which Python cannot put back
            signal.signal(sig, before[sig])
    if changed:
        pytest.fail(f"{request.node.nodeid} left its own {', '.join(changed)} handler behind", pytrace=False)
