"""Timing one backend over a batch sweep: the part of ``edge-resnet bench`` that runs in a child process.

Each timed iteration is what a device application does with a batch of decoded frames:
``pre`` = the runtime's ``Preprocessor`` (resize, crop, normalise, NCHW), ``infer`` = the
backend's ``run`` (for ONNX Runtime and TensorRT that includes copying the batch in and the
logits out), ``post`` = ``Classifier.decode`` (softmax and top-k labels). Each part is timed with
``time.perf_counter_ns`` around it; the three add up to the iteration.

Nothing here imports torch at module level: only the PyTorch backend imports it, in its own process.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet.bench.frames import Frames, load_frames
from edge_resnet.bench.power import PowerSampler
from edge_resnet.bench.stats import summarize, throughput
from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.backends import Backend
from edge_resnet.runtime.classifier import Classifier
from edge_resnet.runtime.manifest import load_manifest
from edge_resnet.runtime.preprocess import Preprocessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """How long each batch size runs."""

    warmup: int  # untimed iterations first (session start-up, allocator, caches)
    iterations: int  # at most this many timed iterations
    min_iterations: int  # at least this many, even past ``seconds``
    seconds: float  # stop once this much time has passed (and min_iterations are done)


class TorchBackend(Backend):
    """PyTorch FP32 in eager mode on the CPU: the run's model.pt as trained, BatchNorm not folded
    (the baseline a user starts from before any export)."""

    def __init__(self, checkpoint: Path, threads: int = 0) -> None:
        import torch

        from edge_resnet.training.checkpoint import load_checkpoint

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        ckpt = load_checkpoint(checkpoint)
        self.model = ckpt.build_model()
        size = ckpt.preprocessing.input_size
        self.path = Path(checkpoint)
        self.input_shape: tuple[int | str, ...] = ("batch", 3, size, size)
        self.fixed_batch: int | None = None
        self.threads = torch.get_num_threads()
        self.settings = {"mode": "eager", "batchnorm": "not folded", "device": "cpu", "threads": self.threads,
                         "torch": torch.__version__}

    @property
    def name(self) -> str:
        return "pytorch (eager, CPU)"

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(batch)).numpy()


def build_backend(kind: str, path: Path, providers: list[str] | None, threads: int) -> Any:
    """The backend of one benchmark row. Raises EdgeResNetError when it cannot run here."""
    if kind == "pytorch":
        import importlib.util

        try:
            found = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise EdgeResNetError("torch is not installed here (the torch-free runtime measures the ONNX and "
                                  "TensorRT models only)")
        return TorchBackend(path, threads)
    if kind == "tensorrt":
        try:
            from edge_resnet.runtime.tensorrt_backend import TensorRTBackend
        except ImportError as e:
            raise EdgeResNetError(f"the TensorRT backend cannot be imported ({e})") from None
        from edge_resnet.contract.engine import read_sidecar

        # a DLA engine runs only on the core it was built for: the runtime's default would not place it
        key = read_sidecar(path)
        return TensorRTBackend(path, dla_core=key.dla_core if key is not None else None)
    from edge_resnet.runtime.backends import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, providers=providers, threads=threads)


def _import_library(kind: str) -> None:
    """Import the backend's library before the baseline reading, so the model's memory excludes it
    (a missing library is reported by ``build_backend``)."""
    import importlib

    name = {"pytorch": "torch", "tensorrt": "tensorrt"}.get(kind, "onnxruntime")
    try:
        importlib.import_module(name)
    except ImportError:
        pass


def rss_mb() -> dict[str, float | None]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in MB; None off Linux."""
    out: dict[str, float | None] = {"rss_mb": None, "peak_rss_mb": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        import resource

        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


def _ms(ns: int) -> float:
    return ns / 1e6


def time_batch(clf: Classifier, frames: Frames, batch: int, budget: Budget, top_k: int,
               sampler: PowerSampler | None = None) -> dict[str, Any]:
    """Warm up, then time pre / infer / post of ``batch`` frames until the budget is spent."""
    clock = time.perf_counter_ns
    for i in range(budget.warmup):
        clf.decode(clf.backend.run(clf.preprocess(frames.batch(batch, i * batch), frames.order)), top_k)
    pre: list[float] = []
    infer: list[float] = []
    post: list[float] = []
    gc.collect()
    start = time.perf_counter()
    while len(infer) < budget.iterations and (len(infer) < budget.min_iterations
                                              or time.perf_counter() - start < budget.seconds):
        chunk = frames.batch(batch, len(infer) * batch)
        t0 = clock()
        x = clf.preprocess(chunk, frames.order)
        t1 = clock()
        logits = clf.backend.run(x)
        t2 = clock()
        clf.decode(logits, top_k)
        t3 = clock()
        pre.append(_ms(t1 - t0))
        infer.append(_ms(t2 - t1))
        post.append(_ms(t3 - t2))
    end = time.perf_counter()
    latency = summarize(infer)
    total = [a + b + c for a, b, c in zip(pre, infer, post)]
    e2e = summarize(total)
    return {
        "batch": batch,
        "iterations": len(infer),
        "seconds": end - start,
        "latency_ms": latency,
        "pre_ms": summarize(pre),
        "post_ms": summarize(post),
        "end_to_end_ms": e2e,
        "throughput_ips": throughput(batch, latency["mean"]),
        "end_to_end_ips": throughput(batch, e2e["mean"]),
        "power": sampler.window(start, end, batch * len(infer)) if sampler is not None else None,
        "samples_ms": {"pre": pre, "infer": infer, "post": post},
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One row of the benchmark: build the backend named by ``spec`` and time every batch size.

    ``spec`` holds kind, file, run_dir, providers, threads, batches, the Budget fields, frames, top_k.
    A backend that cannot run here comes back as ``{"skipped": reason}``; a batch size it cannot
    take (a fixed-batch engine, say) as that batch's ``skipped``.
    """
    budget = Budget(spec["warmup"], spec["iterations"], spec["min_iterations"], spec["seconds"])
    manifest = load_manifest(spec["run_dir"])
    frames = load_frames(spec["frames"])
    _import_library(spec["kind"])
    before = rss_mb()
    try:
        backend = build_backend(spec["kind"], Path(spec["file"]), spec["providers"], spec["threads"])
        clf = Classifier(backend, Preprocessor(manifest.preprocessing), manifest.labels, manifest)
    except EdgeResNetError as e:
        return {"skipped": str(e)}
    loaded = rss_mb()
    sampler = PowerSampler.start()
    results = []
    try:
        for batch in spec["batches"]:
            log.info("%s: batch %d", Path(spec["file"]).name, batch)
            try:
                results.append(time_batch(clf, frames, batch, budget, spec["top_k"], sampler))
            except EdgeResNetError as e:
                results.append({"batch": batch, "skipped": str(e)})
            except MemoryError:
                results.append({"batch": batch, "skipped": "out of memory"})
    finally:
        if sampler is not None:
            sampler.stop()
    after = rss_mb()
    providers = getattr(backend, "providers", None)
    return {
        "skipped": None,
        "backend": backend.name,
        "providers": list(providers) if providers is not None else None,
        "threads": getattr(backend, "threads", spec["threads"] or None),
        "fixed_batch": backend.fixed_batch,
        "settings": dict(getattr(backend, "settings", None) or {}),
        "frames": frames.describe(),
        "memory": {
            # the whole process (interpreter, numpy, the runtime library, frames, model, buffers)
            "peak_rss_mb": after["peak_rss_mb"],
            # before the model was loaded (libraries imported, frames decoded) and after loading it
            "baseline_rss_mb": before["rss_mb"],
            "loaded_rss_mb": loaded["rss_mb"],
            # what loading and running this model added at its peak
            "model_peak_mb": None if after["peak_rss_mb"] is None or before["rss_mb"] is None
            else after["peak_rss_mb"] - before["rss_mb"],
        },
        "power_source": None if sampler is None else f"tegrastats ({sampler.rail or 'no rails read'})",
        "batches": results,
    }
