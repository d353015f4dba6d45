"""Classify frames with a run directory's model: preprocessing, a backend, top-k with probabilities.

``Classifier.from_run`` needs nothing but the run directory (or a bundle holding its manifest):
the manifest names the model files, the preprocessing and the labels, and its checksum guards
the model that is loaded.

Which INT8 model ``model="int8"`` loads: the export writes two. ``model.int8.onnx`` is laid out
for TensorRT (Q/DQ on every Conv input and residual Add, so TensorRT fuses Conv+Add+ReLU);
``model.int8.cpu.onnx`` is laid out for ONNX Runtime's CPU kernels (it also quantizes the pooled
vector, so ORT pools and runs the classifier in integers). On ORT's CPU provider the CPU target
runs about 3-4x faster (resnet20 at 32x32, batch 64: 22 ms vs 88 ms on two cores) with the same
accuracy, so when no GPU provider is in use "int8" means the CPU target whenever the run has one.
With a GPU provider it means the TensorRT target, which is what the TensorRT provider expects.
``"int8-cpu"`` asks for the CPU target whatever the provider.

Which backend runs it (``backend=``): "auto" takes a TensorRT engine from the run directory or
bundle when TensorRT is importable and an engine of that precision was built for this very
system (its ``<engine>.json`` key matches the GPU, TensorRT, JetPack and the manifest's ONNX
checksum), else ONNX Runtime. An engine built for something else is passed over with a warning
naming ``edge-resnet build-engine``, which rebuilds it; loading never builds (minutes) by surprise.
"tensorrt" insists on an engine, "onnxruntime" never uses one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge_resnet.contract.files import BY_CHOICE
from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.backends import OnnxRuntimeBackend, Provider, available_providers, default_providers, uses_gpu
from edge_resnet.runtime.manifest import Manifest, load_manifest
from edge_resnet.runtime.preprocess import Frame, Preprocessor, to_rgb

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime")
# the engine precision that stands for each model choice
# (no engine stands for the CPU target: it is laid out for ONNX Runtime's CPU kernels only)
ENGINE_PRECISION = {choice: f.precision for choice, f in BY_CHOICE.items() if f.target != "cpu"}


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one frame, best first; scores are softmax probabilities over all classes."""

    labels: tuple[str, ...]
    scores: tuple[float, ...]
    indices: tuple[int, ...]

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def score(self) -> float:
        return self.scores[0]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "scores": list(self.scores), "indices": list(self.indices)}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (shifted by the row max, so large logits cannot overflow)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def select_model(manifest: Manifest, model: str, providers: Sequence[Provider]) -> Path:
    """The model file ``model`` names in this run, for a session on ``providers``.

    Args:
        model: "int8", "int8-cpu", "fp32", "fp16", or a path to an .onnx file (relative paths are
            looked up in the run directory first).

    Raises:
        EdgeResNetError: the run has no such model, or the path does not exist.
    """
    if model not in BY_CHOICE:
        path = Path(model)
        for candidate in (manifest.run_dir / path, path):
            if candidate.is_file():
                return candidate
        raise EdgeResNetError(f"model {model!r} is neither one of {', '.join(BY_CHOICE)} nor an existing file")
    if model == "int8":
        # see the module docstring: the CPU target is the fast one on ORT's CPU provider
        roles = ("tensorrt", "cpu") if uses_gpu(providers) else ("cpu", "tensorrt")
    else:
        roles = (BY_CHOICE[model].role,)
    entry = next((e for e in map(manifest.by_role, roles) if e is not None), None)
    if entry is not None and entry.role != roles[0]:
        log.info("%s has no %s-target INT8 model; using %s", manifest.run_dir, roles[0], entry.name)
    if entry is None:
        raise EdgeResNetError(f"{manifest.run_dir} has no {model} model; re-export it with `{BY_CHOICE[model].writer}`")
    return manifest.path(entry.name)


class Classifier:
    """Frames in, top-k labels out: ``Preprocessor`` + a backend + softmax.

    Build it with ``from_run``; the parts stay reachable (``preprocess``, ``backend``) so a benchmark
    can time each on its own.
    """

    def __init__(self, backend: Any, preprocess: Preprocessor, labels: Sequence[str],
                 manifest: Manifest | None = None) -> None:
        self.backend, self.preprocess, self.labels = backend, preprocess, tuple(labels)
        self.manifest = manifest
        shape = backend.input_shape[1:]
        if all(isinstance(d, int) for d in shape) and tuple(shape) != preprocess.shape:
            raise EdgeResNetError(f"{backend.path.name} takes {list(shape)} images but the preprocessing makes "
                                  f"{list(preprocess.shape)}; the manifest and the model do not belong together")

    def close(self) -> None:
        """Free the backend (its session, or the engine's device memory)."""
        self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_run(cls, run_dir: str | Path, model: str = "int8", providers: Sequence[Provider] | None = None,
                 threads: int = 0, verify: bool = True, backend: str = "auto") -> Classifier:
        """The classifier of a run directory (or its manifest.json).

        Args:
            model: "int8" (the target that suits ``providers``; see the module docstring), "int8-cpu",
                "fp32", "fp16", or a path to an .onnx file.
            providers: ONNX Runtime execution providers, best first; None: the best available.
            threads: intra-op threads for ONNX Runtime (0: its default).
            verify: check the chosen model file against the manifest's sha256 before loading it.
            backend: "auto" (a matching TensorRT engine, else ONNX Runtime), "tensorrt" or "onnxruntime".

        Raises:
            EdgeResNetError: missing or invalid manifest, a model the run lacks, a changed model file,
                or a provider this onnxruntime does not offer.
        """
        if backend not in BACKENDS:
            raise EdgeResNetError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        manifest = load_manifest(run_dir)
        if manifest.layout != "NCHW":
            raise EdgeResNetError(f"{manifest.run_dir}: input layout {manifest.layout} is not supported (NCHW only)")
        if backend != "onnxruntime" and model in ENGINE_PRECISION:
            engine = _engine_backend(manifest, ENGINE_PRECISION[model], required=backend == "tensorrt")
            if engine is not None:
                return cls(engine, Preprocessor(manifest.preprocessing), manifest.labels, manifest)
        elif backend == "tensorrt":
            raise EdgeResNetError(f"model {model!r} has no TensorRT engine form; use int8, fp16 or fp32")
        resolved = default_providers(available_providers()) if providers is None else list(providers)
        path = select_model(manifest, model, resolved)
        if verify and path.parent.resolve() == manifest.run_dir.resolve() and path.name in manifest.files:
            manifest.verify([path.name])
        backend = OnnxRuntimeBackend(path, providers=resolved, threads=threads)
        log.info("loaded %s on %s", path, ", ".join(backend.providers))
        return cls(backend, Preprocessor(manifest.preprocessing), manifest.labels, manifest)

    @property
    def model_path(self) -> Path:
        return self.backend.path

    def logits(self, frames: Frame | Sequence[Frame], order: str = "RGB") -> np.ndarray:
        """Raw logits (N, classes) for a frame, a list of frames or an (N, H, W, C) uint8 array."""
        logits = self.backend.run(self.preprocess(frames, order))
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise EdgeResNetError(f"{self.model_path.name} returns logits of shape {list(logits.shape)} for "
                                  f"{len(self.labels)} labels; the manifest and the model do not belong together")
        return logits

    def predict(self, frames: Frame | Sequence[Frame], top_k: int = 5, order: str = "RGB") -> list[Prediction]:
        """Top-k predictions per frame.

        Args:
            frames: a PIL image, a uint8 numpy frame, a list of either, or an (N, H, W, C) uint8 array.
            top_k: classes per prediction (at most the number of labels).
            order: channel order of numpy frames: "BGR" for OpenCV frames, "RGB" otherwise.
        """
        if top_k < 1:
            raise EdgeResNetError(f"top_k must be >= 1, got {top_k}")
        return self.decode(self.logits(frames, order), top_k)

    def decode(self, logits: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """Logits as predictions (the post-processing step, separate so it can be timed)."""
        probs = softmax(logits)
        k = min(top_k, probs.shape[1])
        # stable: ties keep the lower class index first, as the export's accuracy report counts them
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [Prediction(labels=tuple(self.labels[i] for i in row), scores=tuple(float(p[i]) for i in row),
                           indices=tuple(int(i) for i in row)) for row, p in zip(top, probs)]

    def classify_file(self, path: str | Path, top_k: int = 5) -> Prediction:
        """Top-k for one image file (any format PIL reads)."""
        try:
            with Image.open(path) as img:
                img.load()
                rgb = to_rgb(img)
        except FileNotFoundError:
            raise EdgeResNetError(f"no image file at {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise EdgeResNetError(f"cannot read image {path} ({e})") from None
        return self.predict(rgb, top_k=top_k)[0]


def _engine_backend(manifest: Manifest, precision: str, required: bool) -> Any:
    """A TensorRTBackend on the best engine of ``precision`` valid on this system, or None (auto only)."""
    from edge_resnet.runtime.tensorrt_backend import TensorRTBackend, tensorrt_version
    from edge_resnet.contract.engine import find_engines
    from edge_resnet.environment import probe_system

    def fail_or_none(why: str) -> None:
        if required:
            raise EdgeResNetError(why)
        log.info("%s; using ONNX Runtime", why)
        return None

    if tensorrt_version() is None:
        return fail_or_none("running a TensorRT engine needs tensorrt, which is not importable here (install python3-libnvinfer on JetPack, see "
                            "docs/jetson.md; elsewhere pip install 'edge-resnet[tensorrt-cu12]')")
    if not any(manifest.run_dir.glob("*.engine")):
        return fail_or_none(f"{manifest.run_dir} has no TensorRT engine; build one with "
                            f"`edge-resnet build-engine {manifest.run_dir} --precision {precision}`")

    def sha256_of(name: str) -> str | None:
        entry = manifest.files.get(name)
        return entry.sha256 if entry is not None else None

    usable, skipped = find_engines(manifest.run_dir, probe_system(), precision, sha256_of)
    for line in skipped:
        log.warning("passing over %s", line)
    if not usable:
        return fail_or_none(f"no {precision} engine in {manifest.run_dir} was built for this system; rebuild with "
                            f"`edge-resnet build-engine {manifest.run_dir} --precision {precision}`")
    engine, key = usable[0]
    try:
        return TensorRTBackend(engine, dla_core=key.dla_core)
    except EdgeResNetError as e:
        if required:
            raise
        log.warning("%s; using ONNX Runtime", e)
        return None
