"""A TensorRT engine as an inference backend: float32 NCHW batch in, float32 logits out.

TensorRT 10/11's named-tensor API: the engine's I/O tensors by name (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``), ``set_input_shape`` for the batch, ``set_tensor_address``
for the buffers and ``execute_async_v3`` on one CUDA stream (8.5 has the same calls). CUDA memory
comes from cuda-python's runtime bindings (``cudaMalloc``, ``cudaMallocHost``,
``cudaMemcpyAsync``): a small, NVIDIA-maintained dependency, where pycuda would need a compiler
on the device and torch would defeat the point of a torch-free runtime.

Each ``run`` copies the batch into pinned host memory, to the device, runs, and copies the logits
back (data transfers included, no CUDA graph): ``settings`` says so, and benchmarks record it,
because trtexec 10 and 11 default differently. Batches larger than the engine's profile run in
pieces of its maximum; smaller ones are padded up to its minimum.

Needs ``tensorrt`` (on a Jetson JetPack's python3-libnvinfer, never the PyPI wheel) and
``cuda-python`` pinned to the driver's CUDA major (the ``jetpack5``/``jetpack6``/``jetpack7`` extras;
docs/jetson.md): a cuda-python newer than the driver fails at the first CUDA call, and that is
said as such here rather than blamed on the GPU. Importing this module needs neither.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet.errors import EdgeResNetError
from edge_resnet.optional import require, version
from edge_resnet.runtime.backends import Backend

log = logging.getLogger(__name__)


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None."""
    return version("tensorrt")


INSTALL_HINT = ("install the cuda-python pinned to your JetPack: pip install 'edge-resnet[jetpack6]' (JetPack 6), "
                "'edge-resnet[jetpack7]' (JetPack 7); see docs/jetson.md")
CUDA_ERROR_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python without cuda.bindings (it arrived in 12.6.1 and 11.8.4)
        except ImportError:
            raise EdgeResNetError(f"cuda-python is not installed; {INSTALL_HINT}") from None
    return cudart


def stream_handle(stream: Any) -> int:
    """The raw cudaStream_t value TensorRT's ``execute_async_v3`` takes. cuda-bindings 12.9.1/13.0 deprecate
    ``int(stream)`` in favour of ``cuda.bindings.utils.get_cuda_native_handle``; older bindings (JetPack 5's
    11.x, JetPack 6's 12.x before 12.9.1) have only ``int()``."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(stream)
    return int(get_cuda_native_handle(stream))


def cuda_python_version() -> str | None:
    """The installed CUDA Python bindings' version (cuda-bindings, or cuda-python before 12.8)."""
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def cuda_python_refusal(bindings: str | None, driver: int) -> str | None:
    """Why cuda-python ``bindings`` cannot run on a driver reporting CUDA ``driver`` (cudaDriverGetVersion:
    12060 is 12.6); None when it can or either is unknown. cuda-python follows the CUDA major it was
    built for and needs a driver of that major (cuda-bindings 13 needs driver 580+); within a major,
    CUDA's minor-version compatibility applies."""
    if not bindings or driver <= 0:
        return None
    major = int(bindings.split(".")[0])
    driver_major, driver_minor = driver // 1000, driver % 1000 // 10
    if major <= driver_major:
        return None
    return (f"cuda-python {bindings} is built for CUDA {major}, but this driver supports CUDA "
            f"{driver_major}.{driver_minor}; pip install 'cuda-python>={driver_major},<{driver_major + 1}' "
            f"(or {INSTALL_HINT.split(': ', 1)[1]})")


def _check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) == CUDA_ERROR_INSUFFICIENT_DRIVER:
        raise EdgeResNetError(f"CUDA {what} failed: the driver is older than cuda-python {cuda_python_version()} "
                              f"needs; {INSTALL_HINT}")
    if int(err) != 0:
        raise EdgeResNetError(f"CUDA {what} failed ({err}); is a GPU present and the driver loaded?")
    return rest[0] if len(rest) == 1 else tuple(rest)


def _check_cuda_python(cudart: Any) -> None:
    """Refuse a cuda-python newer than the driver before its first real call fails obscurely."""
    try:
        err, driver = cudart.cudaDriverGetVersion()
    except Exception:  # noqa: BLE001 - no driver library at all: cudaSetDevice reports it next
        return
    why = cuda_python_refusal(cuda_python_version(), int(driver) if int(err) == 0 else 0)
    if why:
        raise EdgeResNetError(why)


class _Buffer:
    """A pinned host array and a device buffer of the same size."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.cudart = cudart
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.host_ptr = _check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost")
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=dtype).reshape(shape)
        self.device = _check(cudart.cudaMalloc(self.nbytes), "cudaMalloc")

    def free(self) -> None:
        self.cudart.cudaFree(self.device)
        self.cudart.cudaFreeHost(self.host_ptr)


class TensorRTBackend(Backend):
    """A deserialized engine with one execution context and one stream.

    Args:
        path: the .engine file (plain TensorRT bytes, as ``edge-resnet build-engine`` writes them).
        device: the CUDA device.
        dla_core: the DLA core of an engine built for DLA (its key says which); the runtime's
            default (-1) would not place it.

    Raises:
        EdgeResNetError: TensorRT or cuda-python missing, no GPU, or an engine this TensorRT/GPU
            cannot deserialize (built elsewhere: rebuild it on this device).
    """

    settings = {"cuda_graph": False, "data_transfers": True, "pinned_host_memory": True, "streams": 1}

    def __init__(self, path: str | Path, device: int = 0, dla_core: int | None = None) -> None:
        trt = require("tensorrt", "running a TensorRT engine")
        self.trt, self.cudart = trt, _cudart()
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeResNetError(f"no engine file at {self.path}; build one with `edge-resnet build-engine`")
        _check_cuda_python(self.cudart)
        _check(self.cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EdgeResNetError(f"TensorRT {trt.__version__} cannot load {self.path.name} (built by another "
                                  "TensorRT version or for another GPU); rebuild it here with `edge-resnet build-engine`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgeResNetError(f"{self.path.name} has inputs {inputs} and outputs {outputs}; a classifier "
                                  "engine has one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.input_shape: tuple[int | str, ...] = ("batch", *shape[1:]) if shape[0] == -1 else shape
        if shape[0] == -1:
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        else:
            self.min_batch = self.max_batch = int(shape[0])
        self.fixed_batch: int | None = self.max_batch if self.min_batch == self.max_batch else None
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        chw = tuple(int(d) for d in shape[1:])
        self.context.set_input_shape(self.input_name, (self.max_batch, *chw))
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        self._in = _Buffer(self.cudart, (self.max_batch, *chw), self._in_dtype)
        self._out = _Buffer(self.cudart, out_shape, self._out_dtype)
        self.context.set_tensor_address(self.input_name, int(self._in.device))
        self.context.set_tensor_address(self.output_name, int(self._out.device))
        log.info("loaded %s (TensorRT %s, batch %d-%d)", self.path.name, trt.__version__, self.min_batch,
                 self.max_batch)

    @property
    def name(self) -> str:
        return f"tensorrt ({self.trt.__version__})"

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self.trt.__version__}"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32 for an (N, C, H, W) batch."""
        expected = tuple(self.input_shape[1:])
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise EdgeResNetError(f"{self.path.name} takes input of shape {list(self.input_shape)}, "
                                  f"got {list(batch.shape)}")
        out = []
        for start in range(0, len(batch), self.max_batch):
            part = batch[start:start + self.max_batch]
            out.append(self._run(part))
        return np.concatenate(out) if out else np.zeros((0, self._out.host.shape[1]), np.float32)

    def _run(self, part: np.ndarray) -> np.ndarray:
        n = len(part)
        b = max(n, self.min_batch)
        cudart = self.cudart
        self._in.host[:n] = part
        if b > n:
            self._in.host[n:b] = 0
        self.context.set_input_shape(self.input_name, (b, *self.input_shape[1:]))
        nbytes_in = b * self._in.nbytes // self.max_batch
        nbytes_out = b * self._out.nbytes // self.max_batch
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._in.device, self._in.host_ptr, nbytes_in, h2d, self.stream), "copy to GPU")
        if not self.context.execute_async_v3(stream_handle(self.stream)):
            raise EdgeResNetError(f"TensorRT failed to run {self.path.name} on a batch of {b}")
        _check(cudart.cudaMemcpyAsync(self._out.host_ptr, self._out.device, nbytes_out, d2h, self.stream),
               "copy from GPU")
        _check(cudart.cudaStreamSynchronize(self.stream), "stream synchronize")
        return np.array(self._out.host[:n], dtype=np.float32)

    def close(self) -> None:
        for buf in (getattr(self, "_in", None), getattr(self, "_out", None)):
            if buf is not None:
                buf.free()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self._in = self._out = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to report to
            pass
