"""``edge-resnet bench``: every model of a run directory, timed over a batch sweep.

What runs: PyTorch FP32 (the run's model.pt, where torch is installed), ONNX Runtime on
model.fp32.onnx, model.fp16.onnx, model.int8.onnx (the TensorRT-target Q/DQ layout) and
model.int8.cpu.onnx (the CPU target), and the runtime's TensorRT backend on every ``*.engine``
in the run directory. Each backend runs in its own child process (``edge_resnet.bench.worker``):
its peak memory is then its own, and no backend runs beside another's threads and arenas.

ONNX Runtime runs on the best available of the CUDA and CPU providers unless ``providers`` says
otherwise; the TensorRT execution provider is left out by default because it builds its own
engine when a session starts (the run's engines are the TensorRT rows).

This package imports no torch (only the PyTorch row does, in its own process): it is meant to run
on a Jetson that has only numpy, Pillow, onnxruntime and TensorRT.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import edge_resnet
from edge_resnet.bench.frames import check_frames_source, load_frames
from edge_resnet.bench.report import BenchResult
from edge_resnet.contract import BENCH_ROWS
from edge_resnet.environment import describe
from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.runtime.manifest import Manifest, load_manifest
from edge_resnet.runs import MANIFEST, manifest_owner, read_manifest
from edge_resnet.runtime.outputs import check_writable_dir


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    batches: tuple[int, ...] = (1, 8, 32)  # batch sizes swept
    backends: tuple[str, ...] | None = None  # keys of BENCH_ROWS; None: every one the run has
    warmup: int = 5  # untimed iterations per batch size
    iterations: int = 200  # at most this many timed iterations per batch size
    min_iterations: int = 10  # at least this many, even when they take longer than ``seconds``
    seconds: float = 2.0  # per batch size: stop once this long has passed (after min_iterations)
    threads: int = 0  # intra-op threads of ONNX Runtime / PyTorch; 0: the library's default
    providers: tuple[str, ...] | None = None  # ONNX Runtime providers; None: best of CUDA, CPU
    frames: str | None = None  # folder of images, an image or a video; None: the bundled digits
    top_k: int = 5  # classes decoded per image in post-processing
    output: str | None = None  # folder for bench.json and bench.png; None: the run directory
    plot: bool = True
    skip_missing: bool = False  # bench what exists when a model the manifest lists is gone (said, not silent)

    def validate(self) -> None:
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be whole numbers >= 1, got {list(self.batches)}; e.g. --batch 1 8 32")
        unknown = [b for b in self.backends or () if b not in BENCH_ROWS]
        if unknown:
            raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BENCH_ROWS)}")
        checks = ((self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
                  (self.iterations >= 1, f"--iterations must be >= 1, got {self.iterations}"),
                  (1 <= self.min_iterations <= self.iterations,
                   f"--min-iterations must be between 1 and --iterations ({self.iterations}), got {self.min_iterations}"),
                  (self.seconds > 0, f"--seconds must be > 0, got {self.seconds}"),
                  (self.threads >= 0, f"--threads must be >= 0 (0: the library's default), got {self.threads}"),
                  (self.top_k >= 1, f"--top-k must be >= 1, got {self.top_k}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class Job:
    """One row to measure: a backend kind and the file it loads."""

    key: str  # "onnx-fp32", ... or "tensorrt:<engine file name>"
    kind: str
    file: Path
    label: str
    precision: str | None
    accuracy: float | None
    size_bytes: int
    result: dict[str, Any] = field(default_factory=dict)


def benchmark_run(run_dir: str | Path, opts: BenchOptions | None = None) -> BenchResult:
    """Measure every model of a run directory; write bench.json (and bench.png) into ``opts.output``.

    Raises:
        EdgeResNetError: a missing run directory or manifest, bad options, a requested backend the
            run lacks, a model file that no longer matches its manifest, an unreadable ``frames``, or an
            ``output`` folder that cannot be created or written. All are checked before anything runs;
            nothing is written then.
    """
    opts = opts or BenchOptions()
    opts.validate()
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise EdgeResNetError(f"no run directory at {run_dir}; create one with `edge-resnet export --int8` "
                              "or pass the path of one")
    manifest = load_manifest(run_dir)
    output = Path(opts.output) if opts.output is not None else run_dir
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; pass a directory for bench.json and bench.png")
    check_frames_source(opts.frames)
    frames = load_frames(opts.frames).describe()
    missing = listed_but_missing(manifest, opts.backends)
    if missing and not opts.skip_missing:
        raise EdgeResNetError(f"{run_dir} lacks {', '.join(missing)}, which its manifest lists; copy the whole run "
                              "(or write the file again), or pass --skip-missing to bench the models that are there")
    for name in missing:
        log.warning("bench: %s is listed in %s/manifest.json but missing; not benched (--skip-missing)", name, run_dir)
    jobs = plan(manifest, opts.backends)
    manifest.verify([j.file.name for j in jobs if j.file.name in manifest.files])
    providers = resolve_providers(opts.providers)
    batches = tuple(sorted(set(opts.batches)))
    # before minutes of measuring: the folder can be created and written (a probe that leaves nothing)
    check_writable_dir(output, f"--output {output}")
    _check_not_another_run(output, manifest)

    environment = describe()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for job in jobs:
        log.info("bench: %s (%s), batch %s", job.label, job.file.name, ", ".join(map(str, batches)))
        job.result = run_child({"kind": job.kind, "file": str(job.file), "run_dir": str(run_dir),
                                "providers": providers, "threads": opts.threads, "batches": list(batches),
                                "warmup": opts.warmup, "iterations": opts.iterations,
                                "min_iterations": opts.min_iterations, "seconds": opts.seconds,
                                "frames": opts.frames, "top_k": opts.top_k})
    settings = {**asdict(opts), "batches": list(batches), "providers": providers, "output": str(output)}
    result = BenchResult.build(run_dir=run_dir, manifest=manifest, jobs=jobs, settings=settings,
                               environment=environment, frames=frames, started=started)
    result.notes[:0] = [f"{name} not benched: listed in the manifest but missing (--skip-missing)" for name in missing]
    try:
        result.write(output, plot=opts.plot)
    except OSError as e:  # probed above, but a disk can fill or a folder go during the run
        raise EdgeResNetError(f"cannot write the results into --output {output} ({e.strerror or e})") from None
    return result


def _check_not_another_run(output: Path, manifest: Manifest) -> None:
    """bench.json beside another model's manifest would describe the wrong model (and replace that run's own)."""
    theirs = read_manifest(output)
    if (output / MANIFEST).exists() and output.resolve() != manifest.run_dir.resolve():
        ours = manifest_owner(manifest.data)
        other = manifest_owner(theirs) if theirs is not None else None
        if other is None or not ours.checkpoint_sha256 or other.checkpoint_sha256 != ours.checkpoint_sha256:
            what = f"of {other.description}" if other is not None else "with an unreadable manifest.json"
            raise ConfigError(f"--output {output} is the run or bundle folder of another model ({what}); its "
                              f"bench.json would describe {manifest.run_dir}'s models: pass another --output")


def plan(manifest: Manifest, requested: Sequence[str] | None) -> list[Job]:
    """The rows to measure: the requested backends (all that the run has, by default) in table order."""
    accuracy = {b.get("key"): b.get("top1") for b in (manifest.accuracy or {}).get("backends", [])}
    jobs = []
    for key, backend in BENCH_ROWS.items():
        if requested is not None and key not in requested:
            continue
        if backend.role is None:
            engines = sorted(manifest.run_dir.glob("*.engine"))
            if not engines and requested is not None:
                raise EdgeResNetError(f"{manifest.run_dir} has no TensorRT engine (*.engine); build one with "
                                      f"{backend.export_hint} on the device, or leave tensorrt out of --backends")
            for engine in engines:
                jobs.append(Job(f"tensorrt:{engine.name}", key, engine, f"TensorRT {engine.stem}",
                                _engine_precision(engine.name), None, engine.stat().st_size))
            continue
        entry = manifest.by_role(backend.role)
        if entry is None or not manifest.path(entry.name).is_file():
            if requested is not None:
                raise EdgeResNetError(f"{manifest.run_dir} has no {key} model; write it with `{backend.export_hint}` "
                                      "or leave it out of --backends")
            continue
        path = manifest.path(entry.name)
        jobs.append(Job(key, key, path, backend.label, backend.precision, accuracy.get(backend.accuracy_key),
                        path.stat().st_size))
    if not jobs:
        raise EdgeResNetError(f"{manifest.run_dir} has no model to benchmark; export one with `edge-resnet export`")
    return jobs


def listed_but_missing(manifest: Manifest, requested: Sequence[str] | None) -> list[str]:
    """The model files of the rows to bench that the manifest lists but the folder lacks (a requested one is
    refused by ``plan`` with its own message)."""
    if requested is not None:
        return []
    entries = [manifest.by_role(row.role) for row in BENCH_ROWS.values() if row.role is not None]
    return [e.name for e in entries if e is not None and not manifest.path(e.name).is_file()]


def _engine_precision(name: str) -> str | None:
    lowered = name.lower()
    return next((p for p in ("int8", "fp16", "fp32") if p in lowered), None)


def resolve_providers(requested: Sequence[str] | None) -> list[str] | None:
    """ONNX Runtime providers for the ONNX rows; None when onnxruntime is missing (those rows then
    say so). An unavailable provider that was asked for is an error."""
    from edge_resnet.runtime.backends import available_providers, default_providers

    try:
        available = available_providers()
    except EdgeResNetError:
        return None
    if requested is None:
        return [p for p in default_providers(available) if p != "TensorrtExecutionProvider"]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ConfigError(f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                          f"(available: {', '.join(available)})")
    return list(requested)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one row in a fresh interpreter (``python -m edge_resnet.bench.worker``) and read its result."""
    env = dict(os.environ)
    package_root = str(Path(edge_resnet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="edge-resnet-bench-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "edge_resnet.bench.worker", str(spec_path), str(result_path)],
                              capture_output=True, text=True, env=env)
        for line in proc.stderr.splitlines():
            log.debug("worker: %s", line)
        if proc.returncode == 0 and result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    reason = lines[-1].strip() if lines else "no message"
    log.error("the benchmark process for %s failed (exit %d): %s", Path(spec["file"]).name, proc.returncode, reason)
    return {"skipped": f"failed: the benchmark process exited with {proc.returncode} ({reason})", "failed": True}
