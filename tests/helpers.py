"""Helpers shared by tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn


def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters
    (a fresh BN is nearly an identity, which would hide errors in the layers around it)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
