"""Writing a run directory's files, torch-free: the implicit-INT8 model and calib.cache, the library
versions and the manifest (built by ``edge_resnet.contract.manifest`` from the file table of
``edge_resnet.contract.files``). Both jobs that write a run directory use it: the PyTorch export
(``edge_resnet.pipeline``) and the ONNX quantizer (``edge_resnet.ptq``), so their folders are the same
contract for the device.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from edge_resnet.calibration.files import DEFAULT_CACHE_TENSORRT, Calibration, trt_cache_header, trt_cache_text
from edge_resnet.export.onnx_writer import OPSET, build_implicit_onnx, implicit_tensors, save_onnx

from edge_resnet import __version__, atomic
from edge_resnet.errors import EdgeResNetError
from edge_resnet.contract.files import FILES
from edge_resnet.contract.manifest import build_manifest, file_entries, int8_section
from edge_resnet.models.dataflow import INPUT, OUTPUT, Graph
from edge_resnet.quant.plan import make_plan

log = logging.getLogger("edge_resnet.export")


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


def int8_model(graph: Graph, calib: Calibration, target: str, size: int,
               float_layers: Sequence[str] = ()) -> tuple[Any, onnx.ModelProto, list[str]]:
    """One INT8 file of the run, for ``target`` ("tensorrt" or "cpu"), from the calibration: (its plan, the
    ONNX model, the lint's warnings). The one place both INT8 jobs (``export --int8`` and ``quantize``) make
    them, so the two write the same files from the same graph and ranges. The TensorRT-placed model must pass
    the Q/DQ lint; a model that does not is a bug of ours (the placement is ours), raised as one line."""
    from edge_resnet.export.lint import errors as lint_errors
    from edge_resnet.export.lint import lint_model
    from edge_resnet.export.onnx_writer import build_onnx

    plan = make_plan(graph, calib.amax, target, channel_mean=calib.channel_mean or None,
                     float_layers=frozenset(float_layers))
    model = build_onnx(graph, input_size=size, precision="int8", plan=plan)
    if target != "tensorrt":
        return plan, model, []
    found = lint_model(model, sorted(float_layers))
    bad = [str(v) for v in lint_errors(found)]
    if bad:
        raise EdgeResNetError(f"the TensorRT-placed INT8 model fails the Q/DQ lint ({bad[0]}); this is a bug in "
                              "edge-resnet's placement for this graph, please report it")
    return plan, model, [str(v) for v in found if v.severity != "error"]


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
    """The run directory's manifest.json (``edge_resnet.contract.manifest`` builds it, ``edge_resnet.runtime.manifest``
    reads it): every file in ``files`` with its checksum, the input and output, the preprocessing, the labels
    and the INT8 section, from what the export (or the quantizer) made."""
    extra: dict[str, dict[str, Any]] = {}
    if "tensorrt" in files:
        extra["tensorrt"] = {"lint": "clean" if not lint.get("tensorrt") else lint["tensorrt"]}
        if (warnings or {}).get("tensorrt"):
            extra["tensorrt"]["lint_warnings"] = warnings["tensorrt"]
    int8 = None
    if calib is not None:
        calibration = {"method": calib.method, "requested": calib.requested or calib.method,
                       "percentile": calib.percentile, "images": calib.images, "skipped": calib.skipped,
                       "data": calib.data, "bias_correction": bool(calib.channel_mean)}
        int8 = int8_section(calibration, (*targets, "implicit"), (mixed or {}).get("float_layers", {}),
                            cache_info, None if mixed is None else mixed["fallback"],
                            equalization=calib.equalization, qat=calib.qat)
    return build_manifest(model=model, input_name=INPUT, input_size=size, output_name=OUTPUT, num_classes=num_classes,
                          preprocessing=preprocessing, labels=labels, files=file_entries(files, extra), int8=int8,
                          opset=OPSET, versions=versions, accuracy=report)


__all__ = ["cache_ranges", "implicit_files", "library_versions", "manifest_dict", "write_implicit"]
