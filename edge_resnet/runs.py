"""Which model a run directory or bundle folder belongs to, so no command replaces another model's files.

A run directory belongs to the model in its ``model.pt`` (or, without one, to the checkpoint its
``manifest.json`` lists). Writing model X's files into model Y's folder would leave Y's run gone
or, worse, a folder whose files describe two models; so every command that writes into an existing
run or bundle folder asks ``foreign_run`` first, before it writes anything, and refuses unless the
user says ``--force``.

"The same model" is decided by bytes or lineage, never by file names: the same checkpoint bytes
(re-running an export, a moved folder), or, for an export folder (a copy of the checkpoint, not a
training run), a checkpoint from the same training run (``run_id``, which training stores in every
checkpoint it writes: training on and exporting again replaces the copy of its earlier best, as
training itself replaces its own ``model.pt``).

Torch-free: the device-side commands use it too; reading a checkpoint's ``run_id`` is the caller's
job (``read_run_id``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_resnet.atomic import sha256_file
from edge_resnet.contract.files import DEVICE_FILES, FILES, LAST, MANIFEST, TRAINING_FILES

CHECKPOINT = FILES["checkpoint"]


@dataclass(frozen=True)
class Owner:
    """What a folder says about the model whose run it holds."""

    checkpoint_sha256: str | None
    run_id: str | None
    description: str  # for messages: "resnet8 (10 classes, trained on digits)"
    source_run: str | None = None  # a bundle's: the run directory it was made from


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest.json as a dict; None when it has none or it is unreadable."""
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def manifest_owner(raw: Mapping[str, Any]) -> Owner:
    """The owner a run's or bundle's manifest names."""
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    files = raw.get("files") if isinstance(raw.get("files"), dict) else {}
    entry = files.get(CHECKPOINT) if isinstance(files.get(CHECKPOINT), dict) else {}
    bundle = raw.get("bundle") if isinstance(raw.get("bundle"), dict) else {}
    sha = entry.get("sha256") or bundle.get("source_checkpoint_sha256")
    return Owner(checkpoint_sha256=sha if isinstance(sha, str) else None,
                 run_id=model.get("run_id") if isinstance(model.get("run_id"), str) else None,
                 description=describe(model.get("arch"), len(raw.get("labels") or []) or None, model.get("trained_on")),
                 source_run=bundle.get("source_run") if isinstance(bundle.get("source_run"), str)
                 else None)


def describe(arch: Any, classes: int | None, dataset: Any) -> str:
    parts = [f"{classes} classes" if classes else "", f"trained on {dataset}" if dataset else ""]
    inside = ", ".join(p for p in parts if p)
    return f"{arch or 'an unknown model'}" + (f" ({inside})" if inside else "")


def folder_files(folder: Path, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (and of the eval reports and engines) exist in ``folder``, sorted."""
    if not folder.is_dir():
        return []
    found = {n for n in names if (folder / n).exists()}
    for entry in os.scandir(folder):
        if (entry.name.startswith("eval-") and entry.name.endswith(".json")) or entry.name.endswith(
                (".engine", ".engine.json")):
            found.add(entry.name)
    return sorted(found)


def foreign_run(folder: Path, checkpoint: Path, *, run_id: str | None,
                read_checkpoint: Callable[[Path], tuple[str | None, str]]) -> str | None:
    """Why ``folder`` holds the run of a model other than ``checkpoint`` (None: new, empty or its own).

    Args:
        run_id: the training run ``checkpoint`` came from (None for checkpoints that do not say).
        read_checkpoint: (run_id, description) of another checkpoint; raises EdgeResNetError when
            the file is not a readable checkpoint.
    """
    from edge_resnet.errors import EdgeResNetError

    existing = folder / CHECKPOINT
    if existing.is_file():
        if _same_file(existing, checkpoint) or sha256_file(existing) == sha256_file(checkpoint):
            return None
        try:
            their_run, description = read_checkpoint(existing)
        except EdgeResNetError:
            return f"its {CHECKPOINT} is not a checkpoint this tool can read"
        if run_id and their_run == run_id:
            if not (folder / LAST).exists() and checkpoint.resolve().parent != folder.resolve():
                return None  # an export folder holding an earlier checkpoint of the same training run
            return f"its {CHECKPOINT} is another checkpoint of that training run"
        return f"its {CHECKPOINT} is {description}, not this checkpoint"
    raw = read_manifest(folder) if (folder / MANIFEST).exists() else None
    if (folder / MANIFEST).exists() and raw is None:
        return f"its {MANIFEST} is unreadable, so the model it belongs to is unknown"
    if raw is not None:
        owner = manifest_owner(raw)
        if owner.checkpoint_sha256 == sha256_file(checkpoint) or (run_id and owner.run_id == run_id):
            return None
        return f"its {MANIFEST} lists another checkpoint, of {owner.description}"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


__all__ = ["CHECKPOINT", "DEVICE_FILES", "LAST", "MANIFEST", "TRAINING_FILES", "Owner", "describe", "folder_files",
           "foreign_run", "manifest_owner", "read_manifest"]
