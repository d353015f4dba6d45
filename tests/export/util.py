"""Helpers of the engine/bundle tests: running the CLI and checking its one-line errors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

from edge_resnet import cli


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``cli.main(argv)`` with stdout/stderr captured: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def one_line_error(rc: int, stdout: str, stderr: str, *fragments: str) -> str:
    """Exit 1 and exactly one `edge-resnet: error:` line, the last on stderr; no traceback."""
    assert rc == 1, (rc, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("edge-resnet: error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0]
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(d: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``d`` (empty when ``d`` does not exist)."""
    d = Path(d)
    if not d.exists():
        return {}
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def entries(d: Path) -> list[str]:
    """Every name under ``d``, hidden ones included (temp folders would show up here)."""
    d = Path(d)
    return sorted(str(Path(root, n).relative_to(d)) for root, dirs, files in os.walk(d) for n in dirs + files)


STAND_IN = Path(__file__).resolve().parents[1] / "fixtures" / "tensorrt" / "trtexec_standin.py"


def install_trtexec_stand_in(bin_dir: Path) -> Path:
    """``bin_dir/trtexec``: the per-version stand-in (tests/fixtures/tensorrt/trtexec_standin.py) under
    this interpreter; its version comes from FAKE_TRT_CODE, its DLA core count from FAKE_DLA_CORES."""
    import sys

    bin_dir.mkdir(parents=True, exist_ok=True)
    trtexec = bin_dir / "trtexec"
    trtexec.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    trtexec.chmod(0o755)
    return trtexec
