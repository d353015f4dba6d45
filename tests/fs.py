"""File-system situations the bad-input tests need (torch-free, so device-side tests can use them too)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def unwritable_dir() -> Path:
    """An existing folder that refuses new files even to root (or skip, saying why)."""
    if os.geteuid() != 0:
        d = Path(tempfile.mkdtemp())
        d.chmod(0o555)
        return d
    for candidate in (Path("/sys/kernel"), Path("/proc/1")):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("running as root, and no kernel folder here refuses new files")
