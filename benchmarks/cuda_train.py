"""GPU check (run on a lent GPU machine): a few training steps of resnet50 with AMP and
channels_last on CUDA, reporting images/s; then a short `edge-resnet train` on CUDA.

    .venv/bin/python benchmarks/cuda_train.py [--batch 128] [--steps 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from edge_resnet.models import create_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible; run this on a GPU machine")
        return 2
    torch.backends.cudnn.benchmark = True
    model = create_model("resnet50", num_classes=1000).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(args.batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    ips = args.steps * args.batch / (time.perf_counter() - t0)
    print(f"machine: {machine()}")
    print(f"resnet50 training, AMP fp16 + channels_last, batch {args.batch} at 224: {ips:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
