"""The TensorRT/CUDA tests run on a device without torch: test_tensorrt_engine.py collected and run in a
fresh interpreter where every ``import torch`` fails (a sitecustomize that blocks it, standing for a
Jetson with only JetPack's TensorRT, numpy and ONNX Runtime). Here they then skip (no TensorRT), but
they must get that far: no import, fixture or marker decision may need torch. Where TensorRT and a GPU
exist they run, and must pass. Their Python 3.8 check is in tests/test_py38.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import BLOCK_TORCH

ROOT = Path(__file__).resolve().parents[2]


def test_tensorrt_tests_need_no_torch(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/export/test_tensorrt_engine.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "error" not in out.lower().replace("error::futurewarning", ""), out[-4000:]
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "torch is blocked" in probe.stderr  # the block really held
    # where TensorRT and a GPU exist the tests run and pass; elsewhere each skips, and only for the hardware
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|skipped|failed|errors?)\b", out))
    assert counts.get("passed", 0) + counts.get("skipped", 0) > 0 and not counts.get("failed"), out[-4000:]
    skipped = [ln for ln in done.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert all("needs TensorRT" in ln or "needs a CUDA GPU" in ln for ln in skipped), out[-4000:]

