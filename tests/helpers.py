"""Helpers shared by tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn

from edge_resnet.torch_settings import torch_threads  # noqa: F401  (the tests' one-thread runs)

# Python source that makes every later `import torch`/`import torchvision` fail: the first lines of
# a script run in a fresh interpreter (or a sitecustomize.py, to reach its child processes too),
# standing for a Jetson without PyTorch
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


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


def observed_amax(graph, x: torch.Tensor) -> dict[str, float]:
    """max |value| of every tensor of a traced graph (edge_resnet.models.graph) over the batch ``x``:
    calibration ranges computed independently of the calibration package."""
    amax: dict[str, float] = {}

    def visit(node, out: torch.Tensor) -> torch.Tensor:
        amax[node.name] = max(amax.get(node.name, 0.0), float(out.abs().max()))
        return out

    with torch.no_grad():
        graph.run(x, visit)
    return amax
