"""Atomic writes and the litter of killed runs (edge_resnet/atomic.py; issue 17, point 3).

A process killed by SIGKILL runs no cleanup: the temp file it was writing stays. The next write into
that folder removes the temp files of ours whose process is gone, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_resnet import atomic
from edge_resnet.runtime.manifest import load_manifest
from tests.helpers import torch_threads
from tests.tiny_model import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_are_hidden_and_named_for_their_process(tmp_path: Path) -> None:
    with atomic.atomic_open(tmp_path / "model.pt", "wb") as f:
        (name,) = os.listdir(tmp_path)
        assert not atomic.is_stale_temp(tmp_path / name)  # a live writer's temp file is never stale
        f.write(b"x")
    assert name.startswith(f".model.pt.{os.getpid()}.") and name.endswith(".tmp")
    assert os.listdir(tmp_path) == ["model.pt"]
    assert atomic.temp_path(tmp_path / "clip.mp4", keep_suffix=True).name.endswith(".tmp.mp4")
    folder = atomic.temp_dir(tmp_path, "resnet8-bundle")
    assert folder.name.startswith(f".resnet8-bundle.{os.getpid()}.") and folder.is_dir()


def test_the_next_write_removes_only_our_stale_temps(tmp_path: Path) -> None:
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_file = tmp_path / f".model.pt.{dead}.ab12cd_3.tmp"
        stale_dir = tmp_path / f".resnet8-bundle.{dead}.x9y8z7w6.tmp"
        stale_video = tmp_path / f".clip.mp4.{dead}.0a1b2c3d.tmp.mp4"
        legacy_old = tmp_path / ".model.onnx.k3j4h5g6.tmp"  # written before temp names carried a pid
        live = tmp_path / f".model.int8.onnx.{alive.pid}.q1w2e3r4.tmp"
        legacy_new = tmp_path / ".calib.json.zz11yy22.tmp"
        others = [tmp_path / n for n in (".model.pt.123.tmp", "notes.tmp", f".a.{dead}.ABCDEFGH.tmp", ".cache",
                                         f"model.pt.{dead}.ab12cd_3.tmp", f".a.{dead}.ab12cd_3.tmp.backup")]
        for p in (stale_file, stale_video, legacy_old, live, legacy_new, *others):
            p.write_bytes(b"partial")
        stale_dir.mkdir()
        (stale_dir / "model.fp32.onnx").write_bytes(b"partial")
        hours_ago = time.time() - 2 * 3600
        os.utime(legacy_old, (hours_ago, hours_ago))

        atomic.write_text(tmp_path / "report.md", "done")

        left = set(os.listdir(tmp_path))
        assert not {stale_file.name, stale_dir.name, stale_video.name, legacy_old.name} & left
        assert {live.name, legacy_new.name, "report.md", *(p.name for p in others)} <= left
    finally:
        alive.kill()
        alive.wait()
    # a day-old temp file is stale whoever wrote it (a reused pid)
    (tmp_path / "later").mkdir()
    day_old = tmp_path / "later" / f".x.{os.getppid()}.abcdefgh.tmp"
    day_old.write_bytes(b"")
    os.utime(day_old, (time.time() - 2 * 86400,) * 2)
    assert atomic.remove_stale_temps(tmp_path / "later") == [day_old]


# The child: a real `edge-resnet export` that SIGKILLs itself when it is about to rename its Nth file into
# place, i.e. with N-1 files written and the Nth complete under its temp name (as a kill mid-write leaves it).
# (Later runs reuse the calib.json an earlier one left, so "N files" counts this run's own writes.)
_KILLER = """
import os, signal, sys
n, count, real = int(sys.argv[1]), [0], os.replace
def replace(src, dst):
    count[0] += 1
    if count[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
import cli
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_exports_killed_after_1_3_and_6_files_leave_nothing_after_the_next_run(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with torch_threads(1):
        ckpt = tiny_checkpoint(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["export", "--int8", "--model", str(ckpt), "--calib-method", "max", "--num-calib", "64",
            "--batch-size", "64", "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for written in (1, 3, 6):
        proc = subprocess.run([sys.executable, "-c", _KILLER, str(written + 1), *argv], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        temps = [n for n in os.listdir(out) if n.endswith(".tmp")]
        # the kill left exactly this run's temp file (the earlier run's was swept when this one began writing)
        assert len(temps) == 1 and temps[0].startswith("."), os.listdir(out)
        if written == 1:  # the folder was new: only the checkpoint copy made it under its final name
            assert [n for n in os.listdir(out) if not n.startswith(".")] == ["model.pt"]
    import cli

    assert cli.main(argv) == 0
    assert not [n for n in os.listdir(out) if n.startswith(".")], os.listdir(out)
    load_manifest(out, verify=True)  # a complete run: every file matches its manifest
    assert sorted(os.listdir(out)) == sorted([*json.loads((out / "manifest.json").read_text())["files"],
                                              "manifest.json"])
