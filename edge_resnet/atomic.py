"""Atomic file writes: a temp file in the target's folder, then ``os.replace``.

An interrupted step never leaves a half-written file under a final name. Temp files and folders
are hidden and carry the writer's process id, ``.<name>.<pid>.<random>.tmp``, so a process killed
mid-write (SIGKILL runs no cleanup) leaves litter that the next write into that folder recognises
as ours and removes: only names of that pattern, only when their process is gone (or the file is a
day old), never another program's files. Also the pre-flight checks that an output path can be
written before a command spends minutes on work it could not save.

Torch-free: the runtime and the device-side commands use it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edge_resnet.errors import EdgeResNetError

log = logging.getLogger(__name__)

# .<name>.<pid>.<8 chars of tempfile's alphabet>.tmp, optionally with an extension kept for a
# library that picks the format by it (the camera's video writer)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]{1,5})?$")
# what versions before the pid was added wrote: only removed once old enough to be surely dead
_LEGACY_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
LEGACY_AGE_S = 3600.0
# a temp file this old is stale whoever wrote it (a reused pid, a folder shared across hosts)
MAX_TEMP_AGE_S = 86400.0
_swept: set[str] = set()


def temp_prefix(name: str) -> str:
    """The start of a temp name for ``name`` written by this process (see the module docstring)."""
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temp file or folder of ours whose writer is gone."""
    now = time.time() if now is None else now
    try:
        age = now - path.lstat().st_mtime
    except OSError:
        return False
    m = _TEMP.match(path.name)
    if m is not None:
        return age > MAX_TEMP_AGE_S or not _alive(int(m.group("pid")))
    return _LEGACY_TEMP.match(path.name) is not None and age > LEGACY_AGE_S


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files/folders of ours in ``folder`` that a killed process left; returns them."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        path = Path(entry.path)
        if not entry.name.startswith(".") or not is_stale_temp(path, now):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as e:
            log.debug("could not remove stale temp %s (%s)", path, e)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temp file(s) an interrupted run left in %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed))
    return removed


def sweep(folder: str | os.PathLike[str]) -> None:
    """``remove_stale_temps`` once per folder and process: called by every writer below."""
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        remove_stale_temps(folder)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success it replaces ``path``, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the permissions a plain open() would (0666 minus umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temp_dir(parent: str | os.PathLike[str], name: str) -> Path:
    """A new hidden temp folder in ``parent`` for assembling folder ``name`` (rename it into place);
    named as the temp files are, so a killed run's leftover is swept too."""
    parent = Path(parent)
    sweep(parent)
    return Path(tempfile.mkdtemp(prefix=temp_prefix(name), suffix=".tmp", dir=parent))


def temp_path(path: str | os.PathLike[str], keep_suffix: bool = False) -> Path:
    """A fresh temp name beside ``path`` for writers that open the file themselves (e.g. OpenCV);
    ``keep_suffix`` ends it in ``path``'s extension too, for libraries that choose a format by it."""
    path = Path(path)
    sweep(path.parent)
    return path.with_name(f"{temp_prefix(path.name)}{secrets.token_hex(4)}.tmp{path.suffix if keep_suffix else ''}")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- pre-flight checks of output paths


def check_writable_dir(path: str | os.PathLike[str], what: str) -> None:
    """Raise EdgeResNetError unless folder ``path`` exists or can be created and a file can be written in it.

    A probe: the missing folders are created, a temp file is written in the last one, and all of it
    is removed again, so a run that fails later leaves nothing behind. ``what`` names the option in
    the message (e.g. ``--output runs/x``).
    """
    path = Path(path)
    created: list[Path] = []
    doing = f"reach {path}"
    try:
        missing: list[Path] = []
        ancestor = path
        while not ancestor.is_dir():
            if ancestor.exists() or ancestor.is_symlink():  # a file (or a dangling link) where a folder must be
                raise EdgeResNetError(f"{what}: {ancestor} is a file, not a folder; pass a writable path")
            missing.append(ancestor)
            if ancestor.parent == ancestor:
                break
            ancestor = ancestor.parent
        for folder in reversed(missing):
            doing = f"create the folder {folder}"
            folder.mkdir()
            created.append(folder)
        doing = f"write in {path}"
        fd, probe = tempfile.mkstemp(prefix=temp_prefix("edge-resnet-probe"), suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EdgeResNetError(f"{what}: cannot {doing} ({e.strerror or e}); pass a writable path") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_writable_file(path: str | os.PathLike[str], what: str) -> None:
    """Raise EdgeResNetError unless a file can be written at ``path`` (see ``check_writable_dir``)."""
    path = Path(path)
    if path.is_dir():
        raise EdgeResNetError(f"{what}: {path} is a folder; pass a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise EdgeResNetError(f"{what}: {path} exists and is not writable; pass another file name")
    check_writable_dir(path.parent, what)
