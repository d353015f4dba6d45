"""What a run directory holds, torch-free: the file table, the INT8 definitions, the implicit-INT8 files
and the manifest. Both jobs that write a run directory use it: the PyTorch export (``edge_resnet.pipeline``)
and the ONNX quantizer (``edge_resnet.ptq``), so their folders are the same contract for the device.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from edge_resnet.calibration.cache import DEFAULT_CACHE_TENSORRT, Calibration, trt_cache_header, trt_cache_text
from edge_resnet.export.onnx_writer import OPSET, build_implicit_onnx, implicit_tensors, save_onnx

from edge_resnet import __version__, atomic
from edge_resnet.models.dataflow import INPUT, OUTPUT, Graph
from edge_resnet.quant.plan import make_plan

log = logging.getLogger("edge_resnet.export")

MANIFEST_FORMAT = "edge-resnet/manifest-1"
INT8_DEFINITIONS = {
    "tensorrt": "symmetric int8, zero point 0; activations per tensor (amax/127), weights per output "
                "channel (amax_c/127); round half to even, saturate; Q/DQ on Conv/Gemm inputs and residual "
                "shortcuts (TensorRT explicit quantization)",
    "cpu": "uint8 activations per tensor: ReLU outputs zero point 0 over [0, amax] (amax/255), signed tensors "
           "zero point 128 (amax/127); int8 weights per output channel (amax_c/127), stored as uint8 with "
           "zero point 128 (ONNX Runtime's u8u8 kernels, exact on x86 without VNNI); "
           "Q/DQ also on conv outputs, so ONNX Runtime runs QLinearConv/QLinearAdd",
    "implicit": "TensorRT implicit quantization (8.5-10.x; DLA INT8): model.int8.implicit.onnx with calib.cache. "
                "The same calibration ranges as model.int8.onnx (activations per tensor, amax/127) and its "
                "bias-corrected biases; weights per output channel with scales TensorRT takes from their max "
                "(as model.int8.onnx does); the classifier is a 1x1 convolution, so calib.cache names every "
                "tensor TensorRT's parser creates. Unlike the Q/DQ graph, TensorRT chooses per layer which "
                "tensors run in INT8 (any it finds faster in FP16/FP32 stay there, and DLA falls back to the GPU "
                "for layers it cannot run), so the workstation's INT8 figures are those of model.int8.onnx, "
                "and the device check measures this engine itself",
}
# which INT8 definition an engine follows, by the int8_mode its key records
ENGINE_INT8 = {"qdq": "tensorrt", "implicit": "implicit"}

FILES = {
    "checkpoint": "model.pt",
    "calib": "calib.json",
    "cache": "calib.cache",
    "fp32": "model.fp32.onnx",
    "fp16": "model.fp16.onnx",
    "tensorrt": "model.int8.onnx",
    "cpu": "model.int8.cpu.onnx",
    "implicit": "model.int8.implicit.onnx",
    "report_json": "report.json",
    "report_md": "report.md",
    "manifest": "manifest.json",
}


# what a float layer of the Q/DQ file runs at on each TensorRT (see export/build_plan.py): 8.5 and 10.x
# build it with BuilderFlag.FP16 beside INT8, so TensorRT may run it in FP16; 11.x is strongly typed
# and runs the FP32 the file declares. ONNX Runtime's CPU provider runs the CPU file's float layers in FP32.
FLOAT_PRECISION = {"tensorrt": {"8.5": "fp16", "10.x": "fp16", "11.x": "fp32"}, "cpu": {"onnxruntime": "fp32"}}


def implicit_files(graph: Graph, calib: Calibration, size: int) -> tuple[onnx.ModelProto, str, dict[str, Any]]:
    """model.int8.implicit.onnx and calib.cache (its text) for TensorRT's implicit INT8 (DLA), from the same
    corrected model as model.int8.onnx, and what the manifest records about the cache."""
    plan = make_plan(graph, calib.amax, "tensorrt", channel_mean=calib.channel_mean or None)
    model = build_implicit_onnx(graph, input_size=size, plan=plan)
    ranges, uncovered = cache_ranges(model, calib.amax)
    if uncovered:  # our writer never makes such tensors; if it did, say which layers lose INT8
        log.warning("calib.cache has no range for %s: TensorRT runs those layers in FP16/FP32", ", ".join(uncovered))
    info = {"file": FILES["cache"], "model": FILES["implicit"], "header": trt_cache_header(DEFAULT_CACHE_TENSORRT),
            "tensorrt": DEFAULT_CACHE_TENSORRT, "tensors": len(ranges), "uncovered": uncovered,
            "note": "TensorRT skips a cache whose header names another version: build_engine.sh, trtexec-cmd and "
                    "build-engine rewrite the header for the TensorRT they run, and a bundle carries "
                    "calib.trt<version>.cache for each JetPack's TensorRT"}
    return model, trt_cache_text(ranges), info


def write_implicit(graph: Graph, calib: Calibration, size: int, run_dir: Path, files: dict[str, Path]) -> dict[str, Any]:
    """Write ``implicit_files`` into ``run_dir`` (recorded in ``files``); returns the cache's manifest entry."""
    model, text, info = implicit_files(graph, calib, size)
    files["implicit"] = run_dir / FILES["implicit"]
    save_onnx(model, files["implicit"])
    files["cache"] = run_dir / FILES["cache"]
    atomic.write_text(files["cache"], text)
    return info


def cache_ranges(model: onnx.ModelProto, amax: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """(amax of every float tensor TensorRT's ONNX parser creates for ``model``, in graph order; the
    tensors no range can be given).

    Our writer names each tensor as the graph does. The others hold the same values as a graph
    tensor: the strided Slice of an option-A shortcut (a subset of its input), its zero Pad (adds
    zeros: the same max), the Flatten after the classifier and the classifier's (N, K, 1, 1) output
    before it (the logits, reshaped).
    """
    names = implicit_tensors(model)
    out: dict[str, float] = {}
    for name in names:
        if name in amax:
            out[name] = amax[name]
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    same_values = ("Slice", "Pad", "Flatten", "Reshape")
    for _ in range(len(names)):
        changed = False
        for name in names:
            if name in out:
                continue
            node = producers.get(name)
            if node is not None and node.op_type in same_values and node.input[0] in out:
                out[name] = out[node.input[0]]
                changed = True
                continue
            users = consumers.get(name, [])
            if len(users) == 1 and users[0].op_type in ("Flatten", "Reshape") and users[0].output[0] in out:
                out[name] = out[users[0].output[0]]
                changed = True
        if not changed:
            break
    return {n: out[n] for n in names if n in out}, [n for n in names if n not in out]


def library_versions(torch_version: str | None = None) -> dict[str, str | None]:
    """The libraries that made the files; Pillow and OpenCV because the preprocessing resizes with one
    of them (OpenCV: None when it is not installed); torch None where no PyTorch took part."""
    import onnxruntime
    import PIL

    try:
        import cv2
        opencv: str | None = cv2.__version__
    except ImportError:
        opencv = None
    return {"edge_resnet": __version__, "python": platform.python_version(), "torch": torch_version,
            "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "pillow": PIL.__version__, "opencv": opencv, "tensorrt": None}


def manifest_dict(*, model: dict[str, Any], size: int, num_classes: int, preprocessing: dict[str, Any],
                  labels: list[str], files: dict[str, Path], report: dict[str, Any], calib: Calibration | None,
                  lint: dict[str, Any], targets: tuple[str, ...], versions: dict[str, Any],
                  cache_info: dict[str, Any] | None = None, mixed: dict[str, Any] | None = None,
                  warnings: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The run directory's manifest.json (``edge_resnet.runtime.manifest`` reads it): every file in ``files``
    with its checksum, the input and output, the preprocessing, the labels and the INT8 section."""
    precision = {"fp32": "fp32", "fp16": "fp16", "tensorrt": "int8", "cpu": "int8", "implicit": "int8"}
    entries = {}
    for key, path in files.items():
        if key == "manifest":
            continue
        entry: dict[str, Any] = {"sha256": atomic.sha256_file(path), "bytes": path.stat().st_size, "role": key}
        if key in precision:
            entry["precision"] = precision[key]
        if key in ("tensorrt", "cpu", "implicit"):
            entry["target"] = key
        if key == "tensorrt":
            entry["lint"] = "clean" if not lint.get(key) else lint[key]
            if (warnings or {}).get(key):
                entry["lint_warnings"] = warnings[key]
        entries[path.name] = entry
    return {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": dict(model),
        "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": OUTPUT, "shape": ["batch", num_classes], "dtype": "float32"},
        "preprocessing": dict(preprocessing),
        "labels": list(labels),
        "int8": None if calib is None else {
            "calibration": {"method": calib.method, "requested": calib.requested or calib.method,
                            "percentile": calib.percentile, "images": calib.images,
                            "skipped": calib.skipped, "data": calib.data, "bias_correction": bool(calib.channel_mean)},
            "models": {FILES[t]: {"target": t, "definition": INT8_DEFINITIONS[t],
                                  "float_layers": {layer: {"reason": why, "precision": FLOAT_PRECISION[t]}
                                                   for layer, why in (mixed or {}).get("float_layers", {}).items()}
                                  if t in FLOAT_PRECISION else {}}
                       for t in (*targets, "implicit")},
            # an engine's key records its int8_mode; this says which definition (and file) it follows
            "engines": {mode: {"model": FILES[target], "definition": target}
                        for mode, target in ENGINE_INT8.items()},
            "calib_cache": cache_info,
            "fallback": None if mixed is None else mixed["fallback"],
        },
        "opset": OPSET,
        "files": entries,
        "versions": versions,
        "accuracy": report,
    }


__all__ = ["ENGINE_INT8", "FILES", "FLOAT_PRECISION", "INT8_DEFINITIONS", "MANIFEST_FORMAT", "cache_ranges",
           "implicit_files", "library_versions", "manifest_dict", "write_implicit"]
