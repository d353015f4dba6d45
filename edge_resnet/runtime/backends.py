"""Inference backends: a float32 NCHW batch in, float32 logits out.

ONNX Runtime here (any execution provider it offers); TensorRT engines in ``tensorrt_backend.py``.
``onnxruntime`` is imported when a backend is built, so ``import edge_resnet.runtime`` works on a
box that has only the TensorRT Python bindings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_resnet.errors import EdgeResNetError
from edge_resnet.sessions import Provider, open_session, provider_names
from edge_resnet.sessions import onnxruntime as _ort

log = logging.getLogger(__name__)

# best first; ORT places each node on the first provider in the list that can run it
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, as ORT reports them."""
    return list(_ort().get_available_providers())


def default_providers(available: Sequence[str] | None = None) -> list[str]:
    """The best available of TensorRT, CUDA and CPU, best first (CPU always, as the last resort).

    The TensorRT provider builds an engine when the session starts (seconds to minutes on a Jetson);
    pass ``providers=["CUDAExecutionProvider", "CPUExecutionProvider"]`` to skip it.
    """
    available = available_providers() if available is None else available
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen if "CPUExecutionProvider" in chosen else [*chosen, "CPUExecutionProvider"]


def uses_gpu(providers: Sequence[Provider]) -> bool:
    return any(name in GPU_PROVIDERS for name in provider_names(providers))


class Backend:
    """What every runtime backend is: ``run`` a float batch to float32 logits, and a lifecycle (as Polygraphy's
    runners have): ``close()`` frees what it holds (a session, device memory, a stream) and may be called
    twice; ``with Backend(...) as b:`` closes on the way out, errors included."""

    name: str = "backend"

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the backend holds; it runs nothing afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session over one model file.

    Args:
        path: the .onnx file.
        providers: execution providers, best first (names or (name, options)); None: ``default_providers()``.
            A provider this onnxruntime does not offer is an error, not a silent fall-back to CPU.
        threads: intra-op threads; 0 lets ORT choose (one per physical core).
    """

    def __init__(self, path: str | Path, providers: Sequence[Provider] | None = None, threads: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeResNetError(f"no model file at {self.path}")
        requested = default_providers() if providers is None else list(providers)
        self.session = open_session(self.path, providers=requested, threads=threads,
                                    fix="re-export it with `edge-resnet export`")
        # what ORT really uses: a provider it could not start (e.g. TensorRT without its libraries) is dropped
        self.providers: list[str] = list(self.session.get_providers())
        if provider_names(requested)[0] not in self.providers:
            log.warning("%s: %s could not start; running on %s", self.path.name, provider_names(requested)[0],
                        ", ".join(self.providers))
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_shape: tuple[int | str | None, ...] = tuple(inp.shape)
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        batch = self.input_shape[0] if self.input_shape else None
        # an ONNX with a fixed batch (e.g. 1) gets the batch in pieces of that size
        self.fixed_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None

    @property
    def name(self) -> str:
        return f"onnxruntime ({self.providers[0]})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32 for an (N, C, H, W) batch."""
        expected = self.input_shape[1:]
        if batch.ndim != len(self.input_shape) or any(
                isinstance(d, int) and d != n for d, n in zip(expected, batch.shape[1:])):
            raise EdgeResNetError(f"{self.path.name} takes input of shape {list(self.input_shape)}, "
                                  f"got {list(batch.shape)}")
        x = np.ascontiguousarray(batch, dtype=self._dtype)
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            return self._run(x)
        b = self.fixed_batch
        out = []
        for start in range(0, len(x), b):
            part = x[start:start + b]
            n = len(part)
            if n < b:  # pad the last piece; its padding rows are dropped below
                part = np.concatenate([part, np.zeros((b - n, *part.shape[1:]), part.dtype)])
            out.append(self._run(part)[:n])
        return np.concatenate(out)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise EdgeResNetError(f"the ONNX Runtime backend of {self.path.name} was closed")
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory with its last reference
