"""Must-show: `edge-resnet train` with its defaults reaches >= 98.5% test top-1 on the bundled
digits in <= 3 minutes on this machine.

Runs the real command in a subprocess (defaults: resnet20, 30 epochs, CPU) into a temporary run
directory and prints its wall time and the test accuracy it wrote.

    .venv/bin/python benchmarks/train_default.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402


def main() -> int:
    exe = Path(sys.executable).with_name("edge-resnet")
    out = Path(tempfile.mkdtemp(prefix="edge-resnet-bench-"))
    try:
        t0 = time.perf_counter()
        subprocess.run([str(exe), "train", "--output", str(out / "run")], check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        report = json.loads((out / "run" / "eval-digits-test.json").read_text())
        history = json.loads((out / "run" / "train.json").read_text())["epochs"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ips = sum(e["images_per_s"] for e in history) / len(history)
    print(f"machine: {machine()}")
    print(f"edge-resnet train (defaults: resnet20, {len(history)} epochs, bundled digits)")
    print(f"  wall time         {wall:7.1f} s   (target <= 180 s)")
    print(f"  test top-1        {100 * report['top1']:7.2f} %   (target >= 98.5 %, {report['images']} images)")
    print(f"  test top-5        {100 * report['top5']:7.2f} %")
    print(f"  training speed    {ips:7.0f} images/s (mean over epochs)")
    ok = wall <= 180 and report["top1"] >= 0.985
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
