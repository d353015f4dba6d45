"""The run directory's files: one table, and the manifest format that lists them.

Every part that names a file of a run reads it here: the export (which writes them), the bundle
(which carries the ``bundled`` ones), the runtime (which loads a model by its ``choice``), the
benchmark (which matches a file to its row in the export's accuracy report by ``report_key``) and
the engine builder. The manifest lists each file under its name with its ``role``, ``precision``
and ``target`` exactly as this table gives them.

The strings are on-disk names (manifest format ``edge-resnet/manifest-1``, report.json): run
directories and bundles written since the first release keep loading, so they do not change; the
table is what ties a file's several names together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edge-resnet/manifest-1"
# formats this version reads (the runtime refuses others in one line)
SUPPORTED_FORMATS: Tuple[str, ...] = (MANIFEST_FORMAT,)

EXPORT = "edge-resnet export"
EXPORT_INT8 = "edge-resnet export --int8"


@dataclass(frozen=True)
class RunFile:
    """One file of a run directory and every name it goes by."""

    role: str  # its "role" in manifest.json, and the export's key for it
    name: str  # the file name
    writer: str  # the command that writes it, for "re-export with ..." messages
    precision: Optional[str] = None  # fp32, fp16 or int8 for model files
    target: Optional[str] = None  # for INT8 models: the definition it follows (manifest int8.models)
    bundled: bool = False  # the Jetson bundle carries it
    choice: Optional[str] = None  # the runtime's name for it (--model of camera, verify, ...)
    report_key: Optional[str] = None  # its row in the export's accuracy report (report.json "key")

    def entry(self, sha256: str, size: int) -> Dict[str, Any]:
        """How manifest.json lists this file."""
        out: Dict[str, Any] = {"sha256": sha256, "bytes": size, "role": self.role}
        if self.precision is not None and self.name.endswith(".onnx"):  # manifest-1 lists it for ONNX models
            out["precision"] = self.precision
        if self.target is not None:
            out["target"] = self.target
        return out


RUN_FILES: Tuple[RunFile, ...] = (
    RunFile("checkpoint", "model.pt", "edge-resnet train", "fp32", report_key="pytorch_fp32"),
    RunFile("calib", "calib.json", EXPORT_INT8),
    RunFile("cache", "calib.cache", EXPORT_INT8, bundled=True),
    RunFile("tensorrt", "model.int8.onnx", EXPORT_INT8, "int8", "tensorrt", bundled=True, choice="int8",
            report_key="onnxruntime_tensorrt"),
    RunFile("cpu", "model.int8.cpu.onnx", EXPORT_INT8 + " --target cpu", "int8", "cpu", bundled=True,
            choice="int8-cpu", report_key="onnxruntime_cpu"),
    RunFile("implicit", "model.int8.implicit.onnx", EXPORT_INT8, "int8", "implicit", bundled=True),
    RunFile("fp32", "model.fp32.onnx", EXPORT, "fp32", bundled=True, choice="fp32", report_key="onnxruntime_fp32"),
    RunFile("fp16", "model.fp16.onnx", EXPORT + " --fp16", "fp16", bundled=True, choice="fp16",
            report_key="onnxruntime_fp16"),
    RunFile("report_json", "report.json", EXPORT),
    RunFile("report_md", "report.md", EXPORT),
    RunFile("manifest", MANIFEST, EXPORT),
    # `edge-resnet sensitivity`: it describes one calibration of one set of weights, so an export that
    # replaces them removes it (it is never rewritten by export, quantize or qat)
    RunFile("sensitivity_json", "sensitivity.json", "edge-resnet sensitivity"),
    RunFile("sensitivity_md", "sensitivity.md", "edge-resnet sensitivity"),
    RunFile("sensitivity_png", "sensitivity.png", "edge-resnet sensitivity"),
)
BY_ROLE: Dict[str, RunFile] = {f.role: f for f in RUN_FILES}
# role -> file name
FILES: Dict[str, str] = {f.role: f.name for f in RUN_FILES}
# what `edge-resnet export --int8 --fp16` leaves in a run (with the checkpoint training wrote): every row but
# the other commands' reports
EXPORTED: Dict[str, str] = {f.role: f.name for f in RUN_FILES if f.writer.startswith((EXPORT, "edge-resnet train"))}
# the runtime's model choices ("int8", "int8-cpu", "fp32", "fp16") -> the file
BY_CHOICE: Dict[str, RunFile] = {f.choice: f for f in RUN_FILES if f.choice is not None}
# the INT8 models, by the definition they follow
INT8_TARGETS: Tuple[str, ...] = tuple(f.target for f in RUN_FILES if f.target is not None)

# files beside the export's, which the manifest does not list
LAST = "last.pt"  # training's latest state, while a run trains (resume)
HISTORY = "train.json"  # training's per-epoch history
TRAINING_FILES: Tuple[str, ...] = (LAST, HISTORY)
BENCH_JSON, BENCH_PNG = "bench.json", "bench.png"  # edge-resnet bench
DEVICE_REPORT = "device_report.json"  # edge-resnet verify / build-engine --check
TIMING_CACHE = "timing.cache"  # TensorRT's timing cache, reused by the next build
# what the device-side commands write into a run or bundle folder, besides engines (*.engine, *.engine.json)
DEVICE_FILES: Tuple[str, ...] = (BENCH_JSON, BENCH_PNG, DEVICE_REPORT, TIMING_CACHE)
# a Jetson bundle's own files
VALIDATION = "validation.npz"
BUILD_SCRIPT = "build_engine.sh"


def checkpoint_reference(model: str) -> Optional[Path]:
    """The checkpoint a ``--model`` value names, or None when it names an architecture of the registry.

    One rule for every command that takes a model to load (train, eval, export): a run directory
    names its model.pt; an existing file, a name ending in .pt/.pth or anything with a path separator
    names a checkpoint file (which may be missing: the caller says so); anything else is a registry
    name (resnet20, resnet18, ...).
    """
    path = Path(model)
    if path.is_dir():
        return path / FILES["checkpoint"]
    if path.exists() or model.endswith((".pt", ".pth")) or "/" in model or os.sep in model:
        return path
    return None
