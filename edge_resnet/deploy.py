"""The deployment jobs: make a Jetson bundle on the workstation; build and check the engine on the device.

Like ``edge_resnet.pipeline`` this sits above the stages it strings together (export's bundle,
engine builder and recipe; the runtime's manifest, preprocessing, backends and validation), and
no stage imports it. The device half (``open_bundle``, ``build_and_check``, ``check_model``)
imports no torch: a Jetson needs only numpy, onnxruntime or TensorRT.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet import __version__, atomic
from edge_resnet.contract.files import DEVICE_REPORT
from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.runtime.backends import OnnxRuntimeBackend
from edge_resnet.runtime.manifest import Manifest, load_manifest
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.runtime.validate import DEFAULT_MIN_AGREEMENT, ValidationResult, ValidationSet, check_backend
from edge_resnet.export.build_plan import BuildOptions
from edge_resnet.contract.files import VALIDATION
from edge_resnet.export.bundle import safe_extract, write_bundle
from edge_resnet.export.engine_key import EngineKey, System, decide, probe_system, read_sidecar, version_code
from edge_resnet.export.jetson import calib_cache_versions
from edge_resnet.export.trtexec import build_script, retag_cache, retagged_cache_name

log = logging.getLogger(__name__)
REPORT = DEVICE_REPORT
DEFAULT_SAMPLES = 256


# ---------------------------------------------------------------- workstation: the bundle

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


# ---------------------------------------------------------------- device: open, build, check

def open_bundle(path: str | Path, into: str | Path | None = None) -> Manifest:
    """A bundle folder or archive (unpacked safely first), every checksum verified.

    Raises:
        EdgeResNetError: an unsafe or corrupt archive, no manifest, or a file that is missing or
            differs from its sha256 (named).
    """
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        path = safe_extract(path, into, check=_unpacked_checker(path))
        log.info("bundle in %s", path)
    manifest = load_manifest(path)
    manifest.verify()
    return manifest


def _unpacked_checker(archive: Path) -> Callable[[Path, str], None]:
    """Every checksum of a bundle unpacked to a temporary folder, before it may take its final name."""

    def check(folder: Path, name: str) -> None:
        try:
            load_manifest(folder).verify()
        except EdgeResNetError as e:  # name the archive's member, not the temporary folder
            raise EdgeResNetError(str(e).replace(str(folder), f"{archive}:{name}") + "; nothing was unpacked") from None

    return check


def _validation(manifest: Manifest) -> tuple[ValidationSet, dict[str, Any]]:
    info = (manifest.bundle or {}).get("validation")
    if not info:
        raise EdgeResNetError(f"{manifest.run_dir} is a run directory, not a bundle (no validation set); "
                              "make one with `edge-resnet bundle`")
    return ValidationSet.load(manifest.path(info.get("file", VALIDATION))), info


def _judge(manifest: Manifest, backend: Any, model: str, precision: str,
           min_agreement: float | None = None) -> ValidationResult:
    validation, info = _validation(manifest)
    if min_agreement is None:
        min_agreement = (info.get("min_top1_agreement") or {}).get(precision)
    return check_backend(backend, validation, Preprocessor(manifest.preprocessing), model=model, precision=precision,
                         max_drop_points=float(info.get("max_top1_drop_points", 1.0)), min_agreement=min_agreement)


def _forget_report(manifest: Manifest) -> None:
    """A check starts: an earlier verdict must not outlive it if this one fails before writing its own.
    The folder must take the new report (and engines): a read-only copy fails here, before any work."""
    atomic.check_writable_dir(manifest.run_dir, f"the bundle folder {manifest.run_dir}")
    try:
        (manifest.run_dir / REPORT).unlink(missing_ok=True)
    except OSError as e:
        raise EdgeResNetError(f"cannot replace {manifest.run_dir / REPORT} ({e.strerror or e}); copy the bundle to "
                              "a folder you can write") from None


def _write_report(manifest: Manifest, result: ValidationResult, extra: dict[str, Any]) -> Path:
    path = manifest.run_dir / REPORT
    atomic.write_json(path, {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "edge_resnet": __version__, "host": platform.node(),
                             "passed": result.passed, "validation": result.to_dict(), **extra})
    return path


@dataclass(frozen=True)
class DeviceCheck:
    # None when an engine was built in a run directory, which has no validation set
    result: ValidationResult | None
    report: Path | None
    engine: Path | None
    action: str | None  # reuse / build / rebuild for engines


def _precision_of(manifest: Manifest, onnx: Path) -> str:
    entry = manifest.files.get(onnx.name)
    if entry is not None and entry.role in ("tensorrt", "cpu"):
        return "int8"
    return (entry.precision if entry is not None and entry.precision else "fp32")


def check_model(bundle: str | Path, onnx: str, providers: list[str] | None = None) -> DeviceCheck:
    """The validation set through ONNX Runtime on one of the bundle's ONNX models (the engine's stand-in)."""
    manifest = open_bundle(bundle)
    _forget_report(manifest)
    path = manifest.path(onnx) if (manifest.run_dir / onnx).is_file() else Path(onnx)
    if not path.is_file():
        raise EdgeResNetError(f"no ONNX model {onnx} in {manifest.run_dir}; choose one of "
                              f"{', '.join(n for n in manifest.files if n.endswith('.onnx'))}")
    backend = OnnxRuntimeBackend(path, providers=providers)
    result = _judge(manifest, backend, path.name, _precision_of(manifest, path))
    report = _write_report(manifest, result, {"backend": {"kind": "onnxruntime", "providers": backend.providers,
                                                          "model": path.name}})
    return DeviceCheck(result=result, report=report, engine=None, action=None)


def build_and_check(bundle: str | Path, options: BuildOptions, *, rebuild: bool = True, force: bool = False,
                    system: System | None = None) -> DeviceCheck:
    """On the device: verify the bundle, build (or reuse) its engine, run the validation set through it.

    An engine is reused only when its sidecar key equals what this build would make on this system;
    one built for something else is rebuilt, or with ``rebuild=False`` refused with what differs.
    """
    from edge_resnet.export.engine import build_engine, engine_key, plan_for

    manifest = open_bundle(bundle)
    _check_timing_cache(manifest.run_dir, options)
    _forget_report(manifest)
    system = system or probe_system()
    plan = plan_for(manifest.run_dir, options, system, listed=set(manifest.files))
    wanted = engine_key(manifest.run_dir, plan, system)
    decision = decide(manifest.run_dir / wanted.filename(), wanted)
    if force and decision.action == "reuse":
        decision = type(decision)("rebuild", decision.engine, ("--force",))
    elif decision.action == "rebuild" and not rebuild:
        raise EdgeResNetError(f"{decision.engine.name} does not match this system: {'; '.join(decision.reasons)}; "
                              "drop --no-rebuild to rebuild it")
    if decision.action == "reuse":
        log.info("%s matches this system; reusing it", decision.engine.name)
        engine, seconds = decision.engine, 0.0
    else:
        if decision.action == "rebuild":
            log.info("rebuilding %s: %s", decision.engine.name, "; ".join(decision.reasons))
        built = build_engine(manifest.run_dir, options, manifest.input_name, manifest.input_shape[1:], system=system,
                             listed=set(manifest.files))
        engine, seconds = built.path, built.seconds
    if manifest.bundle is None:
        log.warning("%s is a run directory: the engine is built but not checked (no validation set); make a bundle "
                    "with `edge-resnet bundle` to check it", manifest.run_dir)
        return DeviceCheck(result=None, report=None, engine=engine, action=decision.action)
    return _check_engine(manifest, engine, system, action=decision.action, build_seconds=seconds)


def _check_timing_cache(folder: Path, options: BuildOptions) -> None:
    """The build reads and rewrites the timing cache: a folder or an unwritable path fails before the build."""
    if options.timing_cache:
        atomic.check_writable_file(folder / options.timing_cache, f"--timing-cache {options.timing_cache}")


def verify_engine(bundle: str | Path, engine: str | Path, *, rebuild: bool = True,
                  system: System | None = None) -> DeviceCheck:
    """``edge-resnet verify --engine``: check an existing engine's key against this system (rebuilding
    it from the bundle when it differs, unless ``rebuild=False``), then its accuracy."""
    manifest = open_bundle(bundle)
    _forget_report(manifest)
    engine = Path(engine)
    if not engine.is_absolute() and not engine.is_file():
        engine = manifest.run_dir / engine
    if not engine.is_file():
        raise EdgeResNetError(f"no engine file at {engine}; build one with `edge-resnet build-engine {manifest.run_dir}`")
    saved = read_sidecar(engine)
    if saved is None:
        raise EdgeResNetError(f"{engine.name} has no readable key ({engine.name}.json); rebuild it with "
                              f"`edge-resnet build-engine {manifest.run_dir}` so it can be checked")
    system = system or probe_system()
    source = manifest.files.get(saved.onnx)
    current = EngineKey.for_system(system, **{**_build_fields(saved),
                                              "onnx_sha256": source.sha256 if source else "not in the bundle"})
    diffs = saved.differences(current)
    action = "reuse"
    if diffs:
        if not rebuild:
            raise EdgeResNetError(f"{engine.name} does not match this system: {'; '.join(diffs)}; drop --no-rebuild "
                                  "to rebuild it from the bundle")
        return build_and_check(manifest.run_dir, _options_of(saved), rebuild=True, system=system)
    return _check_engine(manifest, engine, system, action=action, build_seconds=0.0)


def _build_fields(key: EngineKey) -> dict[str, Any]:
    return {"precision": key.precision, "batch": key.batch, "dla_core": key.dla_core, "int8_mode": key.int8_mode,
            "onnx": key.onnx}


def _options_of(key: EngineKey) -> BuildOptions:
    return BuildOptions(precision=key.precision, batch=key.batch, dla_core=key.dla_core,
                        implicit=key.int8_mode == "implicit")


def _check_engine(manifest: Manifest, engine: Path, system: System, *, action: str, build_seconds: float) -> DeviceCheck:
    from edge_resnet.runtime.tensorrt_backend import TensorRTBackend

    key = read_sidecar(engine)
    backend = TensorRTBackend(engine, dla_core=key.dla_core if key else None)
    try:
        result = _judge(manifest, backend, engine.name, key.precision if key else "int8")
    finally:
        backend.close()
    report = _write_report(manifest, result, {
        "system": asdict(system), "engine": {"file": engine.name, "action": action, "build_seconds": build_seconds,
                                             "key": key.to_dict() if key else None, "settings": backend.settings}})
    return DeviceCheck(result=result, report=report, engine=engine, action=action)


__all__ = ["BundleResult", "DeviceCheck", "build_and_check", "check_model", "make_bundle", "open_bundle",
           "verify_engine"]
