"""The one way edge-resnet opens an ONNX Runtime session: providers, threads, optimization, memory, errors.

The runtime's backend, the accuracy check, the quantizer's scoring and the calibration collector all open
sessions; they used to set their options four times. Here: ``threads`` 0 is ONNX Runtime's default (one
per physical core), ORT's own warnings stay off stderr, a provider this build does not offer is an error
(never a silent CPU fall-back), and a model ORT cannot load is one ``EdgeResNetError`` naming the file.

A model given in memory (``onnx.ModelProto`` or serialized bytes) is written to a temporary file first: a
session made from bytes keeps them for its life (``InferenceSession`` holds ``path_or_bytes``), a second
copy of the weights. Torch-free, and onnxruntime is imported only when a session is opened.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

from edge_resnet.errors import EdgeResNetError

# a name, or (name, options) as ORT accepts them; typing's spelling because an alias is evaluated at import
# and JetPack 5's Python 3.8 has neither `X | Y` between types nor tuple[...]
Provider = Union[str, Tuple[str, Dict[str, Any]]]
CPU = ("CPUExecutionProvider",)
OPTIMIZATION = ("all", "extended", "basic", "none")


def onnxruntime() -> Any:
    """The onnxruntime module, or one line saying what to install."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EdgeResNetError("onnxruntime is not installed; `pip install onnxruntime` (onnxruntime-gpu for "
                              "CUDA, or the Jetson wheel for your JetPack from the Jetson AI Lab index)") from None
    return ort


def provider_names(providers: Sequence[Provider]) -> list:
    return [p if isinstance(p, str) else p[0] for p in providers]


def _load_errors(ort: Any) -> Tuple[type, ...]:
    # ORT's own exception types derive from Exception, not RuntimeError
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
             "NotImplemented", "RuntimeException", "ModelLoaded")
    return (RuntimeError, ValueError, *(getattr(state, n) for n in names if hasattr(state, n)))


def open_session(model: Union[str, Path, bytes, Any], *, providers: Sequence[Provider] = CPU, threads: int = 0,
                 optimization: str = "all", memory_arena: bool = True, fix: str = "") -> Any:
    """An ``onnxruntime.InferenceSession`` over ``model`` (a path, serialized bytes or an ``onnx.ModelProto``).

    Args:
        providers: execution providers, best first; each must be one this onnxruntime build offers.
        threads: intra-op threads; 0 lets ONNX Runtime choose.
        optimization: graph optimization level ("all" is ORT's default; "extended" leaves out the NCHWc
            layout, which keeps a second copy of the weights).
        memory_arena: keep the CPU arena (off: buffers are freed after each run, for bounded memory).
        fix: what the user can do when the model does not load (appended to the error).
    Raises:
        EdgeResNetError: onnxruntime missing, a provider not offered, a model it cannot load.
    """
    if threads < 0:
        raise EdgeResNetError(f"threads must be 0 (ONNX Runtime's default) or more, got {threads}")
    if optimization not in OPTIMIZATION:
        raise EdgeResNetError(f"unknown graph optimization {optimization!r}; one of {', '.join(OPTIMIZATION)}")
    ort = onnxruntime()
    available = list(ort.get_available_providers())
    missing = [p for p in provider_names(providers) if p not in available]
    if missing or not providers:
        raise EdgeResNetError(f"execution provider(s) {missing or list(providers)} not available in this onnxruntime "
                              f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # ORT's warnings go to stderr, past our logging
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    opts.enable_cpu_mem_arena = memory_arena
    if isinstance(model, (str, Path)):
        return _create(ort, str(model), opts, providers, str(model), fix)
    blob = model if isinstance(model, bytes) else model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="edge-resnet-ort-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(blob)
        del blob
        return _create(ort, path, opts, providers, "the model in memory", fix)


def _create(ort: Any, path: str, opts: Any, providers: Sequence[Provider], shown: str, fix: str) -> Any:
    try:
        return ort.InferenceSession(path, opts, providers=list(providers))
    except _load_errors(ort) as e:
        why = " ".join(str(e).split())[:300]
        raise EdgeResNetError(f"onnxruntime cannot load {shown} ({why})" + (f"; {fix}" if fix else "")) from None


__all__ = ["CPU", "OPTIMIZATION", "Provider", "onnxruntime", "open_session", "provider_names"]
