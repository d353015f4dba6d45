"""Must-show: training speed of our resnet18 vs torchvision's on this CPU, images/s ratio >= 0.95.

Same batch, same input, same optimizer (SGD momentum 0.9, wd 1e-4), one full training step
(forward, cross-entropy, backward, update) per iteration. The two models alternate in rounds so
that drift of the machine (thermal, other load) hits both alike; the median round counts.

    .venv/bin/python benchmarks/train_speed.py [--batch 16] [--size 224] [--rounds 5] [--iters 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from edge_resnet.models import create_model  # noqa: E402


def images_per_s(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * x.shape[0] / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    ours = create_model("resnet18", num_classes=1000)
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))
    ratios, a_all, b_all = [], [], []
    for r in range(args.rounds):
        pair = [("ours", ours), ("torchvision", ref)]
        if r % 2:
            pair.reverse()
        got = {name: images_per_s(m, x, y, args.iters) for name, m in pair}
        a_all.append(got["ours"])
        b_all.append(got["torchvision"])
        ratios.append(got["ours"] / got["torchvision"])
        print(f"  round {r + 1}: ours {got['ours']:.1f} img/s, torchvision {got['torchvision']:.1f} img/s, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    ratio = statistics.median(ratios)
    print(f"machine: {machine()}")
    print(f"resnet18 CPU training, batch {args.batch} at {args.size}x{args.size}: ours "
          f"{statistics.median(a_all):.1f} img/s, torchvision {statistics.median(b_all):.1f} img/s, "
          f"median ratio {ratio:.3f} (target >= 0.95)")
    print("PASS" if ratio >= 0.95 else "FAIL")
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
