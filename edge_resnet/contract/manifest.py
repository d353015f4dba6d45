"""manifest.json, the contract between the export and the device: how it is written.

``edge_resnet.runtime.manifest`` reads it (without torch); the export (``edge_resnet.pipeline``)
and anything else that writes a run directory build it here, so the writer and the reader share
one format name, one file table (``contract.files``) and one description of each INT8 model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from edge_resnet.atomic import sha256_file
from edge_resnet.contract.files import BY_ROLE, MANIFEST_FORMAT

# what each INT8 file computes, as the manifest records it (int8.models.<file>.definition)
INT8_DEFINITIONS: Dict[str, str] = {
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
ENGINE_INT8: Dict[str, str] = {"qdq": "tensorrt", "implicit": "implicit"}
# the precision a layer left out of INT8 runs at, per INT8 file and runtime (docs/int8.md)
FLOAT_PRECISION: Dict[str, Dict[str, str]] = {"tensorrt": {"8.5": "fp16", "10.x": "fp16", "11.x": "fp32"},
                                              "cpu": {"onnxruntime": "fp32"}}


def file_entries(paths: Mapping[str, Path], extra: Optional[Mapping[str, Mapping[str, Any]]] = None
                 ) -> Dict[str, Dict[str, Any]]:
    """The manifest's ``files``: each file (by role) with its checksum, size, role, precision and target.

    Args:
        paths: role -> the written file; the manifest itself is left out.
        extra: role -> further keys for that file's entry (e.g. the lint verdict).
    """
    out = {}
    for role, path in paths.items():
        if role == "manifest":
            continue
        entry = BY_ROLE[role].entry(sha256_file(path), path.stat().st_size)
        entry.update((extra or {}).get(role, {}))
        out[path.name] = entry
    return out


def int8_section(calibration: Mapping[str, Any], targets: Sequence[str], float_layers: Mapping[str, str],
                 calib_cache: Optional[Mapping[str, Any]], fallback: Optional[Mapping[str, Any]],
                 equalization: Optional[Mapping[str, Any]] = None, qat: Optional[Mapping[str, Any]] = None
                 ) -> Dict[str, Any]:
    """The manifest's ``int8``: the calibration, each INT8 file's definition and float layers, the engines,
    and the choices made on the way (the fallback, cross-layer equalization, quantization-aware training)."""
    def floats(target: str) -> Dict[str, Any]:
        if target not in FLOAT_PRECISION:
            return {}
        return {layer: {"reason": why, "precision": FLOAT_PRECISION[target]} for layer, why in float_layers.items()}

    return {
        "calibration": dict(calibration),
        "models": {BY_ROLE[t].name: {"target": t, "definition": INT8_DEFINITIONS[t], "float_layers": floats(t)}
                   for t in targets},
        # an engine's key records its int8_mode; this says which definition (and file) it follows
        "engines": {mode: {"model": BY_ROLE[target].name, "definition": target} for mode, target in ENGINE_INT8.items()},
        "calib_cache": None if calib_cache is None else dict(calib_cache),
        "fallback": None if fallback is None else dict(fallback),
        # the INT8 files quantize the equalized model when "applied" (the FP32 files never do: same function)
        "equalization": dict(equalization) if equalization else None,
        "qat": dict(qat) if qat else None,
    }


def build_manifest(*, model: Mapping[str, Any], input_name: str, input_size: int, output_name: str, num_classes: int,
                   preprocessing: Mapping[str, Any], labels: Sequence[str], files: Mapping[str, Mapping[str, Any]],
                   int8: Optional[Mapping[str, Any]], opset: int, versions: Mapping[str, Any],
                   accuracy: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The whole manifest.json of a run directory, ready to write."""
    labels_out: List[str] = [str(label) for label in labels]
    return {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": dict(model),
        "input": {"name": input_name, "shape": ["batch", 3, input_size, input_size], "dtype": "float32",
                  "layout": "NCHW"},
        "output": {"name": output_name, "shape": ["batch", num_classes], "dtype": "float32"},
        "preprocessing": dict(preprocessing),
        "labels": labels_out,
        "int8": None if int8 is None else dict(int8),
        "opset": opset,
        "files": {name: dict(entry) for name, entry in files.items()},
        "versions": dict(versions),
        "accuracy": None if accuracy is None else dict(accuracy),
    }
