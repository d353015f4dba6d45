"""The workstation half of deployment: a run directory's Jetson bundle, with its validation set.

A job above the stages it strings together (the runtime's manifest, preprocessing and ONNX Runtime
backend for the FP32 reference logits; export's bundle writer, recipe and calibration-cache
versions). It reads the held-out split with the data stage, which needs torch: run it on the
workstation. The device half is ``edge_resnet.deploy.device``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet.contract.engine import version_code
from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.export.build_plan import BuildOptions
from edge_resnet.export.bundle import write_bundle
from edge_resnet.export.jetson import calib_cache_versions
from edge_resnet.export.trtexec import build_script, retag_cache, retagged_cache_name
from edge_resnet.runtime.backends import OnnxRuntimeBackend
from edge_resnet.runtime.manifest import Manifest, load_manifest
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.runtime.validate import DEFAULT_MIN_AGREEMENT

DEFAULT_SAMPLES = 256


@dataclass(frozen=True)
class BundleResult:
    folder: Path
    archive: Path
    files: tuple[str, ...]
    samples: int
    fp32_top1: float
    seconds: float


def _validation_samples(manifest: Manifest, data: str | None, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, labels) of ``samples`` test-split images of the run's dataset, cropped as the model wants."""
    from edge_resnet.data import load_dataset
    from edge_resnet.data.datasets import BUNDLED
    from edge_resnet.training.checkpoint import load_checkpoint

    trained_on = manifest.model.get("trained_on")
    if data is None and trained_on in BUNDLED:
        data = trained_on  # a bundled dataset needs no folder: use the one the model learned
    if data is None and trained_on not in (None, "digits"):
        raise ConfigError(f"{manifest.run_dir} was trained on {trained_on!r}; pass --data with that dataset's "
                          "folder so its held-out split can fill the validation set")
    ckpt_entry = manifest.by_role("checkpoint")
    dataset_seed = 0
    if ckpt_entry is not None and manifest.path(ckpt_entry.name).is_file():
        dataset_seed = int(load_checkpoint(manifest.path(ckpt_entry.name)).extra.get("seed", 0))
    splits = load_dataset(data, seed=dataset_seed)
    if list(splits.classes) != list(manifest.labels):
        raise ConfigError(f"{splits.name} has classes {splits.classes[:5]}... but the model has "
                          f"{list(manifest.labels)[:5]}...; pass the dataset the model was trained on")
    test = splits.test
    if len(test) == 0:
        raise ConfigError(f"{splits.name} has no test images for a validation set; add a test/ split")
    order = np.random.default_rng(seed).permutation(len(test))
    pre = Preprocessor(manifest.preprocessing)
    pixels, labels = [], []
    for i in order:
        sample = test[int(i)]
        if sample is None:
            continue
        img, label = sample
        pixels.append(pre.pixels(img))
        labels.append(int(label))
        if len(labels) == samples:
            break
    return np.stack(pixels), np.asarray(labels, dtype=np.int64)


def make_bundle(run_dir: str | Path, output: str | Path | None = None, *, data: str | None = None,
                samples: int = DEFAULT_SAMPLES, build: BuildOptions | None = None, seed: int = 0,
                force: bool = False) -> BundleResult:
    """Write the Jetson bundle of a run directory (see ``edge_resnet.export.bundle``) and its .tar.gz.

    The validation set is ``samples`` images of the held-out test split (drawn with ``seed``),
    stored as cropped pixels, with the labels and the FP32 ONNX model's logits (ONNX Runtime, CPU).
    An existing bundle of another model at ``output`` is refused unless ``force``.

    Raises:
        EdgeResNetError: no run directory/manifest, files changed since the export, no ONNX model,
            the wrong dataset, or bad options.
    """
    start = time.perf_counter()
    build = build or BuildOptions()
    build.validate()
    if not 1 <= samples <= 5000:
        raise ConfigError(f"--samples must be 1-5000, got {samples}")
    manifest = load_manifest(run_dir)
    manifest.verify()
    fp32 = manifest.by_role("fp32")
    if fp32 is None:
        raise EdgeResNetError(f"{manifest.run_dir} has no model.fp32.onnx; run `edge-resnet export --int8` first")
    pixels, labels = _validation_samples(manifest, data, samples, seed)
    pre = Preprocessor(manifest.preprocessing)
    reference = OnnxRuntimeBackend(manifest.path(fp32.name), providers=["CPUExecutionProvider"])
    logits = np.concatenate([reference.run(pre.normalize(pixels[i:i + 64])) for i in range(0, len(pixels), 64)])
    fp32_top1 = float(np.mean(logits.argmax(1) == labels))
    raw = manifest.raw()
    accuracy = manifest.accuracy or {}
    info = {"samples": len(labels), "split": "test", "dataset": accuracy.get("dataset", manifest.model.get("trained_on")),
            "seed": seed, "pixels": "resized + centre-cropped RGB uint8 (N, S, S, 3); normalise on the device",
            "reference": "model.fp32.onnx on ONNX Runtime (CPU)", "fp32_top1": fp32_top1,
            "max_top1_drop_points": float(accuracy.get("tolerance_top1_points", 1.0)),
            "min_top1_agreement": dict(DEFAULT_MIN_AGREEMENT)}
    bundled = {e.name for e in manifest.files.values()}
    script = build_script(build, bundled, manifest.input_name, manifest.input_shape[1:], manifest.model.get("arch", "model"))
    run = manifest.run_dir.resolve()  # `edge-resnet bundle .` names the bundle after the folder, not "."
    out = Path(output) if output is not None else run.parent / f"{run.name}-bundle"
    folder, archive = write_bundle(manifest.run_dir, raw, out, script=script, validation_info=info,
                                   validation={"pixels": pixels, "labels": labels, "logits": logits.astype(np.float32)},
                                   extra=_versioned_caches(manifest), force=force)
    files = tuple(sorted(p.name for p in folder.iterdir()))
    return BundleResult(folder=folder, archive=archive, files=files, samples=len(labels), fp32_top1=fp32_top1,
                        seconds=time.perf_counter() - start)


def _versioned_caches(manifest: Manifest) -> dict[str, tuple[str, dict[str, Any]]]:
    """calib.cache under the header of each JetPack's TensorRT (calib.trt8502.cache, ...): TensorRT skips a
    cache written for another version, and a file handed to trtexec --calib, DeepStream's
    int8-calib-file or Polygraphy by hand gets no header rewrite."""
    entry = manifest.by_role("cache")
    if entry is None:
        return {}
    text = manifest.path(entry.name).read_text(encoding="ascii")
    out = {}
    for version in calib_cache_versions():
        code = version_code(version)
        out[retagged_cache_name(code)] = (retag_cache(text, code), {"role": "cache_version", "tensorrt": version})
    return out


__all__ = ["DEFAULT_SAMPLES", "BundleResult", "make_bundle"]
