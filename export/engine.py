"""Build a serialized TensorRT engine from a run directory's (or bundle's) ONNX, on the device.

``build_engine`` follows ``edge_resnet.export.build_plan.plan_build`` for the installed TensorRT: a Q/DQ
network with BuilderFlag.INT8 (+FP16) on 8.5/8.6/10.x, model.int8.implicit.onnx with calib.cache
for implicit INT8 (DLA), and on 11.x a strongly typed network with no precision flags at all. It
writes the engine as plain TensorRT bytes (atomically) and the key beside it (``<engine>.json``).
A DLA build is refused before parsing where the builder reports no such DLA core.

TensorRT cannot be installed on the development machines, so this module is written against the
documented Python API (8.5, 10.x, 11.x) and its build is covered by tests marked ``tensorrt``;
everything it decides is in ``build_plan``/``contract.engine``/``trtexec`` and tested everywhere.
Importing it needs neither torch nor TensorRT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_resnet import atomic
from edge_resnet.errors import EdgeResNetError
from edge_resnet.optional import require
from edge_resnet.export.build_plan import BuildOptions, BuildPlan, plan_build
from edge_resnet.contract.engine import EngineKey, System, version_code, write_sidecar
from edge_resnet.environment import probe_system
from edge_resnet.export.jetson import dla_core_refusal
from edge_resnet.export.trtexec import retag_cache

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0


def import_tensorrt() -> Any:
    return require("tensorrt", "building a TensorRT engine")


@dataclass(frozen=True)
class BuiltEngine:
    path: Path
    key: EngineKey
    plan: BuildPlan
    seconds: float
    bytes: int


def engine_key(folder: Path, plan: BuildPlan, system: System) -> EngineKey:
    """The key of the engine ``plan`` makes from ``folder`` on ``system``."""
    return EngineKey.for_system(system, precision=plan.precision, batch=plan.batch, dla_core=plan.dla_core,
                                int8_mode=plan.int8_mode, onnx=plan.onnx,
                                onnx_sha256=atomic.sha256_file(folder / plan.onnx))


def plan_for(folder: Path, options: BuildOptions, system: System, listed: set[str] | None = None) -> BuildPlan:
    """The plan for this system. ``listed``: the files the manifest vouches for (checksums verified);
    a file merely lying in the folder is not built from."""
    if system.tensorrt is None:
        import_tensorrt()  # raises with the install hint
    available = {p.name for p in folder.iterdir() if p.is_file()}
    return plan_build(system.tensorrt, options, available if listed is None else available & listed,
                      device=system.gpu, jetpack=system.jetpack)


def build_engine(folder: str | Path, options: BuildOptions, input_name: str, chw: Sequence[int],
                 system: System | None = None, stem: str = "model", listed: set[str] | None = None) -> BuiltEngine:
    """Build the engine ``options`` describe from the ONNX in ``folder`` and write it there.

    Args:
        folder: a run directory or an unpacked bundle (its checksums already verified).
        input_name, chw: the network input's name and (C, H, W), from the manifest.
        system: the machine's identity (default: probed).
        listed: the files the manifest lists (verified); others in the folder are not built from.

    Raises:
        EdgeResNetError: TensorRT missing, an unsupported combination, a parser or build failure.
    """
    trt = import_tensorrt()
    folder = Path(folder)
    system = system or probe_system()
    plan = plan_for(folder, options, system, listed)
    for note in plan.notes:
        log.info("%s", note)
    key = engine_key(folder, plan, system)
    engine_path = folder / key.filename(stem)
    start = time.perf_counter()
    log.info("building %s with TensorRT %s (%s%s, batch %s) on %s", engine_path.name, plan.tensorrt,
             plan.precision, f", DLA {plan.dla_core}" if plan.dla_core is not None else "",
             "/".join(map(str, plan.batch)), system.gpu or "an unnamed GPU")
    with _heartbeat(start):
        serialized, timing = _build(trt, folder, plan, input_name, chw)
    seconds = time.perf_counter() - start
    with atomic.atomic_open(engine_path, "wb") as f:
        f.write(serialized)
    write_sidecar(engine_path, key, {"built_by": "edge-resnet build-engine", "build_seconds": round(seconds, 1),
                                     "flags": list(plan.flags), "notes": list(plan.notes)})
    if timing is not None and plan.timing_cache:
        with atomic.atomic_open(folder / plan.timing_cache, "wb") as f:
            f.write(timing)
    size = engine_path.stat().st_size
    log.info("built %s in %.1f s (%.1f MB)", engine_path.name, seconds, size / 1e6)
    return BuiltEngine(path=engine_path, key=key, plan=plan, seconds=seconds, bytes=size)


class _heartbeat:
    """Logs the elapsed time every HEARTBEAT_S while the (minutes-long) build runs."""

    def __init__(self, start: float) -> None:
        self.start, self.stop = start, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            log.info("  ... building, %.0f s elapsed", time.perf_counter() - self.start)

    def __enter__(self) -> _heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _build(trt: Any, folder: Path, plan: BuildPlan, input_name: str, chw: Sequence[int]) -> tuple[bytes, bytes | None]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if plan.dla_core is not None:
        # before minutes of parsing and building: TensorRT itself would fail late, naming the workspace
        why = dla_core_refusal(plan.dla_core, int(builder.num_DLA_cores))
        if why:
            raise EdgeResNetError(why)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if plan.explicit_batch_flag else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(folder / plan.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeResNetError(f"TensorRT {plan.tensorrt} cannot parse {plan.onnx}: {' '.join(errors.split())[:400]}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if input_name not in names:
        raise EdgeResNetError(f"{plan.onnx} has inputs {names}, the manifest says {input_name!r}; "
                              "the manifest and the model do not belong together")

    config = builder.create_builder_config()
    if plan.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mib << 20)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    lo, opt, hi = plan.batch
    profile.set_shape(input_name, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    calibrator = None
    if plan.int8_mode == "implicit":
        text = (folder / plan.calib_cache).read_text(encoding="ascii")
        code = version_code(trt.__version__)
        calibrator = _cache_calibrator(trt, retag_cache(text, code).encode("ascii"), opt)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.opt_level is not None:
        config.builder_optimization_level = plan.opt_level
    cache = None
    if plan.timing_cache:
        path = folder / plan.timing_cache
        cache = attach_timing_cache(config, path.read_bytes() if path.is_file() else b"", plan.timing_cache)
    monitor = _attach_progress_monitor(trt, config)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeResNetError(f"TensorRT {plan.tensorrt} failed to build {plan.onnx} ({plan.precision}); "
                              "its log above names the layer; try --workspace or another precision")
    timing = None
    if cache is not None:
        try:  # the engine is built: never lose it over the cache
            updated = config.get_timing_cache()
            timing = bytes(updated.serialize()) if updated is not None else None
        except Exception as e:  # noqa: BLE001 - TensorRT raises its own RuntimeError subclasses
            log.warning("could not save the timing cache (%s); the engine is fine", e)
    del calibrator, monitor  # TensorRT holds references only until the build returns
    return bytes(serialized), timing


def attach_timing_cache(config: Any, data: bytes, name: str) -> Any:
    """Give ``config`` a timing cache made from ``data``; returns the cache, or None without one.

    ``create_timing_cache`` returns None for bytes it cannot read (a corrupt or foreign file) and
    ``set_timing_cache`` refuses a cache made by another TensorRT or GPU; either way the build goes on
    from an empty cache, as trtexec does (samples/utils/timingCache.cpp checks the None first).
    """
    for attempt in (data, b"") if data else (b"",):
        cache = config.create_timing_cache(attempt)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        if attempt:
            log.warning("%s cannot be used (corrupt, or made by another TensorRT or GPU); building without it",
                        name)
    log.warning("TensorRT could not create a timing cache; building without one")
    return None


def _cache_calibrator(trt: Any, cache: bytes, batch: int) -> Any:
    """An entropy calibrator that only ever answers from the cache: the ranges come from our calibration."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> None:
            # TensorRT asks for data only when the cache does not cover the network; None ends calibration
            log.error("calib.cache does not cover every tensor of the network; re-export with --int8")
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None

    return CacheCalibrator()


def _attach_progress_monitor(trt: Any, config: Any) -> Any:
    """Phase lines with elapsed time while the builder works (TensorRT 10+: IProgressMonitor); returns
    the monitor, which the caller keeps alive until the build returns (None before 10)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Progress(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.start = time.perf_counter()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                log.info("  [%6.1f s] %s (%d steps)", time.perf_counter() - self.start, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            return None

    monitor = Progress()
    config.progress_monitor = monitor
    return monitor
