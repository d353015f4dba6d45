"""The TensorRT/CUDA tests run on a device without torch: test_tensorrt_engine.py collected and run in a
fresh interpreter where every ``import torch`` fails (a sitecustomize that blocks it, standing for a
Jetson with only JetPack's TensorRT, numpy and ONNX Runtime). Here they then skip (no TensorRT), but
they must get that far: no import, fixture or marker decision may need torch."""

from __future__ import annotations

import os
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
    skipped = [ln for ln in done.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert skipped and all("needs TensorRT" in ln or "needs a CUDA GPU" in ln for ln in skipped), out[-4000:]


def test_tensorrt_tests_run_on_python_3_8() -> None:
    """JetPack 5's Python is 3.8: the files the TensorRT tests load there need nothing newer (vermin)."""
    import shutil

    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    assert vermin, "vermin is part of the dev extra"
    files = [ROOT / "tests" / "conftest.py", ROOT / "tests" / "export" / "conftest.py",
             ROOT / "tests" / "export" / "util.py", ROOT / "tests" / "export" / "test_tensorrt_engine.py"]
    done = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.8-", "--backport", "dataclasses",
                           *map(str, files)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
