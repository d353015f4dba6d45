"""The device half of deployment: open a bundle, build or reuse the TensorRT engine, check it.

Imports no torch: a Jetson needs only numpy and ONNX Runtime or TensorRT (a test runs
`edge-resnet verify` with torch blocked). The workstation half, which makes the bundle, is
``edge_resnet.deploy.bundle``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_resnet import __version__, atomic
from edge_resnet.contract.engine import EngineKey, System, decide, read_sidecar
from edge_resnet.contract.files import DEVICE_REPORT, VALIDATION
from edge_resnet.environment import probe_system
from edge_resnet.errors import EdgeResNetError
from edge_resnet.export.build_plan import BuildOptions
from edge_resnet.export.bundle import safe_extract
from edge_resnet.runtime.backends import OnnxRuntimeBackend
from edge_resnet.runtime.manifest import Manifest, load_manifest
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.runtime.validate import ValidationResult, ValidationSet, check_backend

log = logging.getLogger(__name__)
REPORT = DEVICE_REPORT


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
    with OnnxRuntimeBackend(path, providers=providers) as backend:
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
    with TensorRTBackend(engine, dla_core=key.dla_core if key else None) as backend:
        result = _judge(manifest, backend, engine.name, key.precision if key else "int8")
    report = _write_report(manifest, result, {
        "system": asdict(system), "engine": {"file": engine.name, "action": action, "build_seconds": build_seconds,
                                             "key": key.to_dict() if key else None, "settings": backend.settings}})
    return DeviceCheck(result=result, report=report, engine=engine, action=action)


__all__ = ["REPORT", "DeviceCheck", "build_and_check", "check_model", "open_bundle", "verify_engine"]
