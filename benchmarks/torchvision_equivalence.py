"""Must-show: our resnet18/resnet50 load torchvision's state dicts (strict) and give the same
logits: max |difference| <= 1e-5 with the same random weights.

BatchNorm statistics and affine parameters are randomised too, so the comparison exercises
every layer (fresh BN would be close to an identity).

    .venv/bin/python benchmarks/torchvision_equivalence.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from _common import machine  # noqa: E402

from edge_resnet.models import create_model  # noqa: E402
from tests.helpers import randomise_bn  # noqa: E402


def compare(name: str, batch: int = 4, size: int = 224) -> float:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    randomise_bn(ref, gen)
    ours = create_model(name, num_classes=1000).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    diff = (a - b).abs().max().item()
    print(f"  {name:9s} batch {batch} at {size}: max |logit diff| {diff:.3g}  (max |logit| {a.abs().max():.3g})")
    return diff


def main() -> int:
    print(f"machine: {machine()}")
    print("torchvision equivalence (target <= 1e-5)")
    worst = max(compare("resnet18"), compare("resnet50"))
    print("PASS" if worst <= 1e-5 else "FAIL")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
