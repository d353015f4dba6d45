"""Reading a run directory's ``manifest.json`` without torch.

The manifest is the contract between the export (``edge_resnet.pipeline``) and the device: the
input tensor, the preprocessing, the labels and a checksum of every file. The device trusts
nothing else, so a model file that no longer matches its checksum (a half-copied bundle, a model
re-exported without its manifest) is refused instead of silently classifying with the wrong weights.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_resnet.atomic import sha256_file
from edge_resnet.contract.files import MANIFEST, SUPPORTED_FORMATS
from edge_resnet.errors import EdgeResNetError



@dataclass(frozen=True)
class FileEntry:
    """One file of the run directory as the manifest lists it."""

    name: str
    sha256: str
    bytes: int
    # what the file is: a role of edge_resnet.contract.files (fp32, tensorrt, cpu, checkpoint, calib, ...)
    role: str
    precision: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What the runtime needs from a run directory. Treat the dicts as read-only."""

    run_dir: Path
    format: str
    input_name: str
    # e.g. ("batch", 3, 32, 32): a string names a dynamic dimension
    input_shape: tuple[int | str, ...]
    layout: str
    output_name: str | None
    # the PreprocessSpec as a dict, the argument of runtime.Preprocessor
    preprocessing: dict[str, Any]
    labels: tuple[str, ...]
    # file name -> entry
    files: dict[str, FileEntry]
    # calibration and INT8 model list; None when the run has no INT8 models
    int8: dict[str, Any] | None
    model: dict[str, Any]
    versions: dict[str, Any]
    # the export's accuracy report (report.json), for tables that show accuracy beside speed
    accuracy: dict[str, Any] | None
    # a Jetson bundle's own section (validation set, origin); None in a run directory
    bundle: dict[str, Any] | None = None
    # the whole JSON as read, for writers that carry it on (edge-resnet bundle)
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    def raw(self) -> dict[str, Any]:
        """A copy of the manifest's JSON."""
        return copy.deepcopy(self.data)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def by_role(self, role: str) -> FileEntry | None:
        """The file the export wrote in ``role`` (e.g. "fp32", "tensorrt", "cpu"), if any."""
        return next((e for e in self.files.values() if e.role == role), None)

    def verify(self, names: Iterable[str] | None = None) -> None:
        """Check that the listed files exist and match their sha256 (all of them by default).

        Raises:
            EdgeResNetError: a file is missing, unlisted or differs from what the export wrote.
        """
        for name in (self.files if names is None else names):
            entry = self.files.get(name)
            if entry is None:
                raise EdgeResNetError(f"{name} is not listed in {self.path(MANIFEST)}; "
                                      f"listed files: {', '.join(self.files)}")
            path = self.path(name)
            if not path.is_file():
                raise EdgeResNetError(f"{path} is listed in the manifest but missing; copy the whole run "
                                      "directory, or re-export it with `edge-resnet export`")
            if sha256_file(path) != entry.sha256:
                raise EdgeResNetError(f"{path} does not match the sha256 in its manifest (changed or truncated "
                                      "since it was written); refusing it: copy the run or bundle again, or "
                                      "re-export it with `edge-resnet export`")


def load_manifest(run_dir_or_manifest: str | Path, *, verify: bool = False) -> Manifest:
    """Read a run directory's manifest (pass the directory or the manifest file itself).

    Args:
        verify: also check every listed file against its sha256 (reads them all).

    Raises:
        EdgeResNetError: missing or unreadable manifest, an unknown format, missing fields, or
            (with ``verify``) a file that is missing or changed.
    """
    path = Path(run_dir_or_manifest)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise EdgeResNetError(f"{path} is a bundle archive; unpack it first (`edge-resnet build-engine` and "
                              "`verify --bundle` do) and pass the folder")
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        where = path.parent if path.name == MANIFEST else path
        raise EdgeResNetError(f"no {MANIFEST} at {where}; pass a run directory written by "
                              "`edge-resnet export` (or its manifest.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeResNetError(f"cannot read {path} ({_one_line(e)}); re-export the run with "
                              "`edge-resnet export`") from None
    if not isinstance(raw, dict):
        raise EdgeResNetError(f"{path} is not a manifest (a JSON object was expected); re-export the run")
    fmt = raw.get("format")
    if not str(fmt).startswith("edge-resnet/manifest-"):  # e.g. report.json or calib.json where a manifest is wanted
        what = "no format field" if fmt is None else f"format {fmt!r}"
        raise EdgeResNetError(f"{path} is not a manifest ({what}); pass a run directory written by "
                              "`edge-resnet export` (or its manifest.json)")
    if fmt not in SUPPORTED_FORMATS:
        raise EdgeResNetError(f"{path} has format {fmt!r}, this runtime reads {', '.join(SUPPORTED_FORMATS)}; "
                              "export with the same edge-resnet version as the runtime")
    try:
        manifest = _parse(raw, path)
    except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong type, e.g. "bytes": "x"
        raise EdgeResNetError(f"{path} is a damaged manifest ({_one_line(e)}); re-export the run with "
                              "`edge-resnet export`") from None
    if verify:
        manifest.verify()
    return manifest


def _parse(raw: dict[str, Any], path: Path) -> Manifest:
    def need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind):
            raise EdgeResNetError(f"{path} lacks a valid {where}{key!r}; re-export the run with "
                                  "`edge-resnet export`")
        return value

    inp = need(raw, "input", dict, "")
    files_raw = need(raw, "files", dict, "")
    files = {}
    for name, e in files_raw.items():
        sha = need(e, "sha256", str, f"files.{name}.")
        if "/" in name or "\\" in name or name in ("", ".", ".."):  # a file of the folder, never a path elsewhere
            raise EdgeResNetError(f"{path} lists {name!r}, which is not a file name in its folder; re-export the run")
        files[name] = FileEntry(name=name, sha256=sha, bytes=int(e.get("bytes", -1)), role=str(e.get("role", "")),
                                precision=e.get("precision"), target=e.get("target"))
    labels = need(raw, "labels", list, "")
    output = raw.get("output") if isinstance(raw.get("output"), dict) else {}
    return Manifest(
        run_dir=path.parent,
        format=raw["format"],
        input_name=need(inp, "name", str, "input."),
        input_shape=tuple(need(inp, "shape", list, "input.")),
        layout=str(inp.get("layout", "NCHW")),
        output_name=output.get("name"),
        preprocessing=dict(need(raw, "preprocessing", dict, "")),
        labels=tuple(str(label) for label in labels),
        files=files,
        int8=raw.get("int8"),
        model=dict(raw.get("model") or {}),
        versions=dict(raw.get("versions") or {}),
        accuracy=raw.get("accuracy"),
        bundle=raw.get("bundle") if isinstance(raw.get("bundle"), dict) else None,
        data=raw,
    )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
