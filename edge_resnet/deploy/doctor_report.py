"""``edge-resnet doctor --report OUT.md``: the whole device path once, on one bundle, into one Markdown file.

The self-check, then build-engine, verify (ONNX Runtime on the model the engine is built from, then the
engine), bench and a ten-second camera run on a clip, each through the library function the command
runs. A step that fails is recorded with its error and the next steps run where they can; a step this
machine cannot run (build-engine without TensorRT) is recorded as not possible here, with why. The
report is written atomically at the end; bad input (no bundle, a report path that cannot be written)
is refused before anything runs. The steps write what the commands write into the bundle folder
(the engine, its key, timing.cache, device_report.json); bench's files and the clip go to a temporary
folder that is removed.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_resnet import __version__, atomic
from edge_resnet.deploy.doctor import Diagnosis, run_doctor
from edge_resnet.errors import EdgeResNetError

log = logging.getLogger(__name__)
# where `edge-resnet bundle` puts the default model's bundle, and where the docs copy it on the device
DEFAULT_BUNDLES = ("resnet20-digits-bundle", "resnet20-digits-bundle.tar.gz", "runs/resnet20-digits-bundle",
                   "runs/resnet20-digits-bundle.tar.gz")
CLIP_FPS = 30
FRAMES_PER_IMAGE = 3  # each validation image stays on screen for 0.1 s, as an object would before a camera
CLIP_SIDE = 256
CLIP_SECONDS = 10  # the images repeat when the validation set is shorter


@dataclass
class Step:
    name: str
    status: str  # passed, failed, not possible here
    seconds: float = 0.0
    summary: str = ""
    details: list[str] = field(default_factory=list)  # Markdown lines


@dataclass
class FieldReport:
    path: Path
    bundle: Path
    diagnosis: Diagnosis
    steps: list[Step]

    @property
    def exit_code(self) -> int:
        return 1 if self.diagnosis.exit_code or any(s.status == "failed" for s in self.steps) else 0


def default_bundle(folder: str | Path = ".") -> Path:
    """The default model's bundle where ``edge-resnet bundle`` or the docs' scp put it.

    Raises:
        EdgeResNetError: none of them exists (the device has no torch to make one).
    """
    for name in DEFAULT_BUNDLES:
        path = Path(folder) / name
        if path.exists():
            return path
    raise EdgeResNetError(f"no bundle given and none at {', '.join(DEFAULT_BUNDLES)}; make one on the workstation "
                          "(edge-resnet bundle runs/resnet20-digits), copy it here and pass --bundle PATH")


def run_report(out: str | Path, bundle: str | Path | None = None, *, clip: str | None = None,
               seconds: float = 10.0, root: str = "/") -> FieldReport:
    """Check this device, run the bundle through every device step, write the report to ``out``.

    Raises:
        EdgeResNetError: ``out`` cannot be written, the bundle is missing, not a bundle, damaged or in a
            folder that cannot be written, or ``clip`` is not a file; all before any step runs.
    """
    from edge_resnet.deploy.device import open_bundle

    out = Path(out)
    if seconds <= 0:
        raise EdgeResNetError(f"--seconds must be > 0, got {seconds:g}")
    atomic.check_writable_file(out, f"--report {out}")
    path = Path(bundle) if bundle is not None else default_bundle()
    if not path.exists():
        raise EdgeResNetError(f"no bundle at {path}; pass the folder or .tar.gz that `edge-resnet bundle` made")
    if clip is not None and not Path(clip).is_file():
        raise EdgeResNetError(f"--clip {clip} is not a file; pass a video file, or leave --clip out to play the "
                              "bundle's validation images")
    manifest = open_bundle(path)
    if not (manifest.bundle or {}).get("validation"):
        raise EdgeResNetError(f"{manifest.run_dir} is a run directory, not a bundle (no validation set); make one "
                              "with `edge-resnet bundle`")
    atomic.check_writable_dir(manifest.run_dir, f"the bundle folder {manifest.run_dir}")
    folder = manifest.run_dir

    diagnosis = run_doctor(root, engines=str(folder))
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="edge-resnet-doctor-") as tmp:
        engine = _step(steps, "build-engine", lambda s: _build(s, folder, diagnosis))
        _step(steps, "verify", lambda s: _verify(s, folder, manifest, engine))
        _step(steps, "bench", lambda s: _bench(s, folder, Path(tmp)))
        _step(steps, "camera", lambda s: _camera(s, folder, clip, Path(tmp), seconds))
    report = FieldReport(out, folder, diagnosis, steps)
    atomic.write_text(out, render(report))
    return report


def _step(steps: list[Step], name: str, body: Callable[[Step], Any]) -> Any:
    """Run one step, recording any failure into it; returns what the step returned (None if it failed)."""
    step = Step(name, "passed")
    steps.append(step)
    log.info("doctor --report: %s", name)
    start = time.perf_counter()
    try:
        return body(step)
    except EdgeResNetError as e:
        step.status, step.summary = "failed", str(e)
    except Exception as e:  # noqa: BLE001 - the report is for bugs too: keep the traceback
        step.status, step.summary = "failed", f"{type(e).__name__}: {e}"
        step.details += ["```", *traceback.format_exc().rstrip().splitlines()[-25:], "```"]
    finally:
        step.seconds = time.perf_counter() - start
    return None


def _build(step: Step, folder: Path, diagnosis: Diagnosis) -> Path | None:
    from edge_resnet.deploy.device import build_and_check
    from edge_resnet.export.build_plan import BuildOptions

    facts = diagnosis.facts
    if facts.tensorrt is None:
        step.status = "not possible here"
        step.summary = f"no TensorRT (the Python bindings do not import: {facts.tensorrt_error})"
        return None
    check = build_and_check(folder, BuildOptions())
    step.summary = f"{check.engine.name if check.engine else 'no engine'} ({check.action})"
    if check.result is not None:
        step.summary += f"; {check.result.summary()}"
        step.status = "passed" if check.result.passed else "failed"
    return check.engine


def _verify(step: Step, folder: Path, manifest: Any, engine: Path | None) -> None:
    from edge_resnet.deploy.device import check_model, verify_engine

    onnx = next((n for n, f in manifest.files.items() if f.role == "tensorrt"), "model.fp32.onnx")
    results = [check_model(folder, onnx).result]
    if engine is not None:
        results.append(verify_engine(folder, engine, rebuild=False).result)
    step.summary = "; ".join(r.summary() for r in results if r is not None)
    if any(r is not None and not r.passed for r in results):
        step.status = "failed"


def _bench(step: Step, folder: Path, tmp: Path) -> None:
    from edge_resnet.bench import BenchOptions, benchmark_run

    result = benchmark_run(folder, BenchOptions(batches=(1, 8), warmup=3, iterations=100, min_iterations=5,
                                                seconds=1.0, output=str(tmp / "bench"), plot=False))
    rows = result.table()
    header = result.header()
    step.details += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    step.details += ["| " + " | ".join(r) + " |" for r in rows]
    step.details += ["", result.summary()] + [f"- {line}" for line in result.verdicts + result.notes]
    measured = [r for r in rows if r[4] != "skipped" and r[5] != "skipped"]
    step.summary = f"{len(measured)} of {len(rows)} rows measured (batch 1 and 8, about 1 s each)"
    if not measured:
        step.status = "failed"


def _camera(step: Step, folder: Path, clip: str | None, tmp: Path, seconds: float) -> None:
    from edge_resnet.runtime.camera import CameraConfig, run_camera

    labels: list[int] | None = None
    if clip is None:
        clip, labels = _clip_from_validation(folder, tmp / "clip.avi")
        step.details.append(f"- clip: the bundle's validation images, {FRAMES_PER_IMAGE} frames each at "
                            f"{CLIP_FPS} FPS, {CLIP_SIDE}x{CLIP_SIDE} MJPG ({len(labels)} frames)")
    else:
        step.details.append(f"- clip: {clip}")
    records: list[dict[str, Any]] = []
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        summary = run_camera(CameraConfig(source=str(clip), run=str(folder), display=False, jsonl=None, pace=True),
                             stop=stop, on_result=records.append)
    finally:
        timer.cancel()
    step.summary = summary.line() + f" ({summary.model} on {summary.backend})"
    if labels is not None and records:
        right = sum(1 for r in records if r["frame"] < len(labels) and r["indices"][0] == labels[r["frame"]])
        step.details.append(f"- top-1 on the classified frames against the clip's labels: "
                            f"{100 * right / len(records):.1f}% ({right}/{len(records)})")
    step.details.append("- summary: `" + json.dumps(summary.to_dict()) + "`")
    if summary.frames == 0 or summary.exit_code:
        step.status = "failed"


def _clip_from_validation(folder: Path, path: Path) -> tuple[Path, list[int]]:
    """A 10-second MJPG clip of the bundle's validation images (enlarged, each for a few frames, repeated
    when there are too few), and the label of every frame."""
    import numpy as np

    from edge_resnet.runtime.manifest import load_manifest
    from edge_resnet.runtime.sources import import_cv2
    from edge_resnet.runtime.validate import ValidationSet

    cv2 = import_cv2()
    manifest = load_manifest(folder)
    validation = ValidationSet.load(manifest.path((manifest.bundle or {})["validation"].get("file", "validation.npz")))
    images = CLIP_SECONDS * CLIP_FPS // FRAMES_PER_IMAGE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(CLIP_FPS), (CLIP_SIDE, CLIP_SIDE))
    if not writer.isOpened():
        raise EdgeResNetError(f"OpenCV {cv2.__version__} cannot write an MJPG .avi here; pass a clip with --clip")
    labels: list[int] = []
    try:
        for k in range(images):
            i = k % len(validation)
            rgb = np.ascontiguousarray(validation.pixels[i])
            frame = cv2.resize(rgb[:, :, ::-1], (CLIP_SIDE, CLIP_SIDE), interpolation=cv2.INTER_NEAREST)
            for _ in range(FRAMES_PER_IMAGE):
                writer.write(frame)
                labels.append(int(validation.labels[i]))
    finally:
        writer.release()
    return path, labels


def render(report: FieldReport) -> str:
    """The report as Markdown: what ran where, the self-check, each step with its figures or error."""
    d = report.diagnosis
    b = d.facts.board or {}
    lines = ["# edge-resnet doctor report", "",
             f"- created: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, host {platform.node()}, "
             f"edge-resnet {__version__}",
             f"- device: {b.get('model') or 'not a Jetson (' + d.facts.machine + ')'}"
             + (f", L4T R{b.get('l4t')}, power mode {b.get('power_mode')}" if b else ""),
             f"- bundle: {report.bundle}",
             f"- verdict: {'PASSED' if report.exit_code == 0 else 'FAILED'} (exit {report.exit_code})", "",
             "## Self-check", "", "```", *d.lines(), "```", "", "## Steps", "",
             "| step | status | seconds | summary |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.1f} | {s.summary.replace('|', '/')} |" for s in report.steps]
    for s in report.steps:
        lines += ["", f"### {s.name}: {s.status}", "", s.summary or "-"]
        if s.details:
            lines += ["", *s.details]
    lines += ["", "## Facts", "", "```json", json.dumps(d.to_dict()["facts"], indent=1), "```", ""]
    return "\n".join(lines)


__all__ = ["DEFAULT_BUNDLES", "FieldReport", "Step", "default_bundle", "render", "run_report"]
