"""The Jetson bundle on disk: one folder and a .tar.gz of it, and their safe unpacking.

```
<name>/
  manifest.json      the run's manifest: every file below with its sha256, input, preprocessing,
                     labels, versions, the workstation's accuracy report, plus a "bundle" section
  model.fp32.onnx    model.int8.onnx    model.int8.cpu.onnx    model.fp16.onnx (those the run has)
  model.int8.implicit.onnx, calib.cache   implicit INT8 / DLA builds (TensorRT 8.5-10.x)
  calib.trt<code>.cache   calib.cache with the header of each JetPack's TensorRT (8502, 100300, ...),
                     for trtexec --calib, DeepStream or Polygraphy by hand: TensorRT skips another's
  validation.npz     held-out samples (cropped uint8 pixels), labels and the FP32 logits for them
  build_engine.sh    the trtexec recipe for TensorRT 8.5/8.6, 10.x and 11.x
<name>.tar.gz        the folder, regular files only, owner root, modes 0644/0755
<name>.tar.gz.sha256
```

``write_bundle`` is given the validation arrays (the job in ``edge_resnet.deploy`` computes them);
``safe_extract`` unpacks an archive refusing absolute paths, ``..``, links, devices, more than one
top-level folder and archives over the size or file-count limits. Neither imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edge_resnet import __version__, atomic
from edge_resnet.contract.files import BUILD_SCRIPT, FILES, MANIFEST, RUN_FILES, VALIDATION
from edge_resnet.errors import EdgeResNetError

SCRIPT = BUILD_SCRIPT
# the run's files a bundle carries, by the role the export gave them
BUNDLED_ROLES = tuple(f.role for f in RUN_FILES if f.bundled)
MAX_BYTES = 4 << 30
MAX_FILES = 256
MAX_MANIFEST_BYTES = 16 << 20


def write_bundle(run_dir: Path, manifest: Mapping[str, Any], out_dir: Path, *, validation: Mapping[str, np.ndarray],
                 validation_info: Mapping[str, Any], script: str,
                 extra: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
                 force: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir`` and ``out_dir``.tar.gz; returns (folder, archive).

    Args:
        manifest: the run's manifest as a dict (its files must have been verified by the caller).
        validation: arrays "pixels" (N, S, S, 3) uint8, "labels" (N,) and "logits" (N, K) float32.
        validation_info: what the manifest says about them (split, tolerance, ...).
        extra: further text files: name -> (text, manifest entry without checksums).

    The folder is assembled in a temporary sibling and renamed into place, so an interrupted run
    leaves no half bundle under the final name. An existing bundle of the same run or checkpoint there
    is replaced; a bundle of another model only with ``force``; any other existing folder is refused.
    """
    out_dir = Path(out_dir)
    resolved, run_resolved = out_dir.resolve(), Path(run_dir).resolve()
    if resolved == run_resolved or run_resolved in resolved.parents or resolved in run_resolved.parents:
        raise EdgeResNetError(f"--output {out_dir} is the run directory, inside it or above it; choose a folder "
                              "beside the run (the default is <run>-bundle)")
    if out_dir.exists() and not is_bundle(out_dir):
        raise EdgeResNetError(f"{out_dir} exists and is not a bundle; choose another --output or remove it")
    checkpoint_sha = ((manifest.get("files") or {}).get(FILES["checkpoint"]) or {}).get("sha256")
    if out_dir.exists() and not force:
        other = read_bundle_manifest(out_dir)["bundle"]
        same_run = other.get("source_run") and Path(str(other["source_run"])).resolve() == run_resolved
        same_checkpoint = checkpoint_sha and other.get("source_checkpoint_sha256") == checkpoint_sha
        if not (same_run or same_checkpoint):
            raise EdgeResNetError(f"{out_dir} holds the bundle of another model (made from {other.get('source_run')}); "
                                  "pass another --output, or --force to replace that bundle and its archive")
    if out_dir.parent.exists() and not out_dir.parent.is_dir():
        raise EdgeResNetError(f"cannot write {out_dir}: {out_dir.parent} is a file; choose another --output")
    files = {name: e for name, e in manifest["files"].items() if e.get("role") in BUNDLED_ROLES}
    if not any(e.get("role") in ("fp32", "tensorrt", "fp16") for e in files.values()):
        raise EdgeResNetError(f"{run_dir} has no ONNX model to bundle; run `edge-resnet export --int8` first")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temp_dir(out_dir.parent, out_dir.name)
    except OSError as e:
        raise EdgeResNetError(f"cannot write the bundle at {out_dir} ({e.strerror or e}); choose another "
                              "--output") from None
    archive = out_dir.with_name(out_dir.name + ".tar.gz")
    checksum = archive.with_name(archive.name + ".sha256")
    try:
        for name in files:
            shutil.copyfile(run_dir / name, tmp / name)
        with atomic.atomic_open(tmp / VALIDATION, "wb") as f:
            np.savez_compressed(f, pixels=validation["pixels"], labels=validation["labels"],
                                logits=validation["logits"])
        (tmp / SCRIPT).write_text(script, encoding="utf-8")
        (tmp / SCRIPT).chmod(0o755)
        for name, (text, _) in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        listed = {name: dict(files[name]) for name in files}
        listed.update({name: dict(entry) for name, (_, entry) in (extra or {}).items()})
        listed[VALIDATION] = {"role": "validation"}
        listed[SCRIPT] = {"role": "script"}
        for name, entry in listed.items():
            entry["sha256"] = atomic.sha256_file(tmp / name)
            entry["bytes"] = (tmp / name).stat().st_size
        bundle_manifest = {**manifest, "files": listed, "bundle": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "edge_resnet": __version__,
            "source_run": str(run_dir), "source_checkpoint_sha256": checkpoint_sha,
            "validation": {"file": VALIDATION, **validation_info}}}
        atomic.write_json(tmp / MANIFEST, bundle_manifest)
        for p in tmp.iterdir():
            p.chmod(0o755 if p.name == SCRIPT else 0o644)
        tmp.chmod(0o755)
        # the old bundle's archive goes first: an archive beside the new folder must be of it
        for old in (checksum, archive):
            old.unlink(missing_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_archive(out_dir, archive)
    archive.chmod(0o644)
    atomic.write_text(checksum, f"{atomic.sha256_file(archive)}  {archive.name}\n")
    return out_dir, archive


def is_bundle(folder: Path) -> bool:
    """A folder ``write_bundle`` made: its manifest has a "bundle" section (a run directory's has none)."""
    manifest = read_bundle_manifest(folder)
    return isinstance(manifest.get("bundle"), dict)


def _write_archive(folder: Path, archive: Path) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755 if info.isdir() or info.name.endswith(".sh") else 0o644
        return info

    with atomic.atomic_open(archive, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name, recursive=False, filter=clean)
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=f"{folder.name}/{p.name}", recursive=False, filter=clean)


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name:
        raise EdgeResNetError(f"unsafe path {name!r} in the archive (absolute or leaving the folder); refusing it")
    if not path.parts:  # "", "." or "./": e.g. `tar czf b.tgz -C bundle .`
        raise EdgeResNetError(f"the archive has a member named {name!r} instead of one top-level folder; make it "
                              "with `edge-resnet bundle` (or `tar czf b.tar.gz <folder>`)")
    return path


def safe_extract(archive: str | Path, into: str | Path | None = None, *, max_bytes: int = MAX_BYTES,
                 max_files: int = MAX_FILES, check: Callable[[Path, str], None] | None = None) -> Path:
    """Unpack a bundle archive into ``into`` (default: beside the archive); returns the bundle folder.

    Only regular files and folders inside one top-level folder are accepted; anything else
    (absolute paths, ``..``, symbolic or hard links, devices, FIFOs), more than ``max_files``
    members or more than ``max_bytes`` in all refuses the whole archive before a byte is written.
    The folder appears under its final name only when everything is unpacked and ``check`` (called
    with the temporary folder and the final name; e.g. every checksum against the manifest) returned; when it raises,
    the temporary folder is removed and nothing stays beside the archive. A folder of that name
    holding the same manifest (unpacked before, or the one the archive was made from) is returned
    as it is; the caller verifies its files against that manifest.

    Raises:
        EdgeResNetError: unreadable or unsafe archive, or a different folder of the bundle's name exists.
    """
    archive = Path(archive)
    into = archive.parent if into is None else Path(into)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except FileNotFoundError:
        raise EdgeResNetError(f"no archive at {archive}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise EdgeResNetError(f"cannot read {archive} as a tar archive ({e}); copy it again") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise EdgeResNetError(f"{archive} is truncated or corrupt ({e}); copy it again") from None
        if not members:
            raise EdgeResNetError(f"{archive} is empty")
        if len(members) > max_files:
            raise EdgeResNetError(f"{archive} has {len(members)} members, more than a bundle's {max_files}; refusing it")
        tops, total = set(), 0
        for m in members:
            path = _member_path(m.name)
            if not (m.isfile() or m.isdir()):
                kind = "link" if m.issym() or m.islnk() else "special file"
                raise EdgeResNetError(f"{archive} holds a {kind} {m.name!r}; a bundle has only regular files, "
                                      "refusing it")
            if m.isfile() and len(path.parts) != 2:
                raise EdgeResNetError(f"{archive} holds {m.name!r} outside the bundle's one folder; refusing it")
            tops.add(path.parts[0])
            total += max(m.size, 0)
        if len(tops) != 1:
            raise EdgeResNetError(f"{archive} has {len(tops)} top-level entries ({', '.join(sorted(tops))}); "
                                  "a bundle has one folder")
        if total > max_bytes:
            raise EdgeResNetError(f"{archive} unpacks to {total / 1e9:.1f} GB, over the {max_bytes / 1e9:.1f} GB "
                                  "limit; refusing it")
        name = tops.pop()
        target = into / name
        if target.exists() and _same_manifest(tar, f"{name}/{MANIFEST}", target):
            # already unpacked (or the folder this archive was made from): its files are checked
            # against this very manifest by the caller, so unpacking again would add nothing
            return target
        if target.exists():
            raise EdgeResNetError(f"{target} already exists (unpacked before?); pass that folder instead of the "
                                  "archive, or remove it to unpack again")
        try:
            into.mkdir(parents=True, exist_ok=True)
            tmp = atomic.temp_dir(into, name)
        except OSError as e:
            raise EdgeResNetError(f"cannot unpack {archive} into {into} ({e.strerror or e}); copy the archive to a "
                                  "writable folder, or unpack it there with `tar xzf`") from None
        try:
            for m in members:
                if not m.isfile():
                    continue
                dest = tmp / PurePosixPath(m.name).parts[1]
                src = tar.extractfile(m)
                if src is None:
                    raise EdgeResNetError(f"cannot read {m.name} from {archive}")
                with src, open(dest, "wb") as out:
                    copied = _copy_limited(src, out, m.size)
                if copied != m.size:
                    raise EdgeResNetError(f"{m.name} in {archive} is truncated ({copied} of {m.size} bytes); "
                                          "copy the archive again")
                dest.chmod(0o755 if m.mode & 0o111 else 0o644)
            tmp.chmod(0o755)
            if check is not None:
                check(tmp, name)
            os.replace(tmp, target)
        except (tarfile.TarError, OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EdgeResNetError(f"{archive} is truncated or corrupt ({e}); copy it again") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _same_manifest(tar: tarfile.TarFile, member: str, folder: Path) -> bool:
    """Whether ``folder`` holds the bundle whose manifest the archive carries (byte for byte)."""
    try:
        src = tar.extractfile(member)
        if src is None:
            return False
        with src:
            ours = src.read(MAX_MANIFEST_BYTES + 1)
        return len(ours) <= MAX_MANIFEST_BYTES and (folder / MANIFEST).read_bytes() == ours
    except (KeyError, OSError, tarfile.TarError, EOFError):
        return False


def _copy_limited(src: Any, out: Any, size: int) -> int:
    copied = 0
    while copied < size:
        chunk = src.read(min(1 << 20, size - copied))
        if not chunk:
            break
        out.write(chunk)
        copied += len(chunk)
    return copied


def read_bundle_manifest(folder: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return {}
