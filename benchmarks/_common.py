"""Shared bits of the benchmark scripts: the machine description (from the library) and random
weights that are worth timing."""

from __future__ import annotations

from typing import Any

from edge_resnet.environment import machine

__all__ = ["ArrayReader", "jitter_batchnorm", "machine", "vm_kb"]


def jitter_batchnorm(model: Any, seed: int) -> None:
    """Non-trivial BN statistics, so folding changes the weights (random weights, latency only)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))


def vm_kb(field: str) -> int:
    """A /proc/self/status field of this process in KiB ("VmRSS", "VmHWM": the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class ArrayReader:
    """ONNX Runtime's CalibrationDataReader protocol (``get_next``) over an in-memory array, in batches."""

    def __init__(self, array: Any, name: str, batch: int = 32) -> None:
        self.name, self.it = name, iter([array[i:i + batch] for i in range(0, len(array), batch)])

    def get_next(self) -> Any:
        b = next(self.it, None)
        return None if b is None else {self.name: b}
