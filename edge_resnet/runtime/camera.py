"""The camera app: classify a video source frame by frame, in real time, without torch.

    from edge_resnet.runtime.camera import CameraConfig, run_camera
    summary = run_camera(CameraConfig(source="rtsp://cam.local/live", run="runs/resnet18-224", display=False))

Behaviour (README, "Camera app", says the same for users):
- Live sources (cameras, streams, pipelines; files with ``pace``) are read in a thread that keeps
  only the newest frame; the loop classifies whatever is newest when it is ready, and every frame it
  never saw is counted as dropped. Files without ``pace`` are classified frame by frame (nothing is
  live, so nothing needs dropping); their reader decodes and preprocesses ahead of the loop.
- A live source that stops delivering is reconnected with capped exponential backoff (``RetryPolicy``);
  network sources are also retried when they first open. When the attempts run out the summary says
  "lost" and its exit code is 1.
- A file ends at its last frame; one that ends before the frame count its header declares is
  reported as truncated (exit code 0: every decodable frame was classified).
- Ctrl-C (SIGINT) or SIGTERM ends the run after the frame in hand, as cleanly as the end of a file:
  the summary is returned, the saved video finalised, exit code 0 (stopping is how a live run ends).
  A second one aborts at once.

Per frame, the preprocessing, the backend call and the post-processing are timed separately
(``Classifier.preprocess``, ``.backend.run``, ``.decode``) and written as one JSON line.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.runtime.classifier import Classifier, Prediction
from edge_resnet.runtime.outputs import (
    FOURCC,
    WINDOW,
    VideoSink,
    check_writable_file,
    draw_overlay,
    has_display,
    jsonl_writer,
    show,
    stream_video_path,
)
from edge_resnet.runtime.reader import Captured, FrameReader
from edge_resnet.runtime.sources import (
    SOURCE_HELP,
    CaptureSettings,
    RetryPolicy,
    import_cv2,
    open_capture,
    parse_source,
)

log = logging.getLogger(__name__)

# frames the overlay's FPS figure averages over
FPS_WINDOW = 30


@dataclass(frozen=True)
class CameraConfig:
    """Everything ``run_camera`` (one source) and ``run_streams`` (several) need; the CLI's options by the
    same names."""

    # camera index, /dev/videoN, video file, rtsp/http(s) URL, csi://N or a GStreamer pipeline; several of
    # them (a tuple) for ``edge_resnet.runtime.streams.run_streams``
    source: str | tuple[str, ...]
    # run directory (or manifest.json) of the model
    run: str
    # which model of the run: int8, int8-cpu, fp32, fp16 or an .onnx path (Classifier.from_run)
    model: str = "int8"
    # auto (the run's TensorRT engine when one loads here, else ONNX Runtime), tensorrt or onnxruntime
    backend: str = "auto"
    # ONNX Runtime execution providers, best first; None: the best available
    providers: tuple[str, ...] | None = None
    # ONNX Runtime intra-op threads; 0: one per core but one, which the reader keeps for decoding
    threads: int = 0
    # classes per JSON line
    top_k: int = 5
    # show a window with the overlay; None: when a display and a GUI-enabled OpenCV exist
    display: bool | None = None
    # write the annotated video here (.mp4, .avi, .mkv, .mov); with several sources one video per stream,
    # named by ``stream_video_path`` (out.mp4 -> out.stream0.mp4, out.stream1.mp4, ...)
    save: str | None = None
    # codec for ``save``; None: by extension (FOURCC)
    fourcc: str | None = None
    # JSON lines: "-" for the ``out`` stream (stdout), a path, or None for none
    jsonl: str | None = "-"
    # files only: play at the file's frame rate, newest frame only, as if it were live
    pace: bool = False
    # stop after this many classified frames (with several sources: of each stream)
    max_frames: int | None = None
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)

    @property
    def saves(self) -> tuple[str, ...]:
        """The annotated videos ``save`` names: itself for one source, one per stream for several."""
        if self.save is None:
            return ()
        n = len(self.sources)
        return (self.save,) if n == 1 else tuple(stream_video_path(self.save, i) for i in range(n))

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError(f"no source; pass {SOURCE_HELP}")
        if len(self.sources) > 1 and self.display:
            raise ConfigError(f"--display shows one source, got {len(self.sources)}; pass --no-display (--save "
                              "writes one video per stream, --jsonl one line per frame with its stream)")
        if self.top_k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {self.top_k}")
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0: all cores but one), got {self.threads}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")
        r = self.retry
        if r.retries < 0 or r.delay <= 0 or r.max_delay < r.delay or r.timeout <= 0:
            raise ConfigError(f"need --retries >= 0 and 0 < --retry-delay <= --retry-max-delay and --timeout > 0, "
                              f"got {r.retries}, {r.delay}, {r.max_delay}, {r.timeout}")
        if self.save is not None and self.fourcc is None and Path(self.save).suffix.lower() not in FOURCC:
            raise ConfigError(f"--save {self.save}: use a {', '.join(FOURCC)} file name, or name a codec with --fourcc")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ConfigError(f"--fourcc takes four characters (e.g. mp4v, MJPG, avc1), got {self.fourcc!r}")
        # the output files last: a probe of the file system (it leaves nothing behind), before any model
        # loads or source opens, so an unwritable path fails at once and not after the run
        for path in self.saves:
            check_writable_file(path, f"--save {path}")
        if self.jsonl not in (None, "-"):
            check_writable_file(self.jsonl, f"--jsonl {self.jsonl}")


@dataclass(frozen=True)
class CameraSummary:
    source: str
    model: str
    backend: str
    # frames classified, frames read from the source, frames read but never classified
    frames: int
    read: int
    dropped: int
    reconnects: int
    seconds: float
    # frames / seconds, from the first wait for a frame to the last result
    fps: float
    # means over the classified frames (None without any)
    pre_ms: float | None
    infer_ms: float | None
    post_ms: float | None
    # end of file, truncated, lost, interrupted, quit, max frames
    end: str
    message: str | None = None
    saved: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.end == "lost" else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        line = (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} FPS), {self.dropped} dropped, "
                f"{self.reconnects} reconnects")
        if self.frames:
            line += f"; mean pre {self.pre_ms:.2f} ms, infer {self.infer_ms:.2f} ms, post {self.post_ms:.3f} ms"
        line += f"; {self.end}"
        return line + (f"; saved {self.saved}" if self.saved else "")


@contextlib.contextmanager
def _signals_stop(stop: threading.Event) -> Iterator[None]:
    """The first SIGINT (Ctrl-C) or SIGTERM (systemd, docker stop) sets ``stop``: the loop finishes the frame
    in hand (its JSON line, its video frame) and ends with a summary; a second one aborts (KeyboardInterrupt).
    Raising at the first would land anywhere, e.g. between counting a frame and writing its line."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log.warning("interrupted: finishing up (Ctrl-C again to abort)")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


# ---------------------------------------------------------------- the loop


@contextlib.contextmanager
def _opencv_threads(cv2: Any, n: int) -> Iterator[None]:
    """OpenCV's own thread pool at ``n`` threads for the run, then as it was. Decoding, resizing and
    drawing happen on the core the loop leaves to the reader; OpenCV splitting each small resize
    over every core would take time from inference (in-loop preprocessing 0.49 -> 0.41 ms per
    640x480 frame on two cores)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _prepare(clf: Classifier) -> Callable[[np.ndarray], np.ndarray]:
    """Preprocessing of one BGR frame (the Preprocessor swaps the channels after resize and crop)."""
    def prepare(bgr: np.ndarray) -> np.ndarray:
        return clf.preprocess(bgr, order="BGR")
    return prepare


class _Stats:
    def __init__(self) -> None:
        self.frames = 0
        self.sums = {"pre": 0.0, "infer": 0.0, "post": 0.0}
        self.done: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW)

    def add(self, pre: float, infer: float, post: float, now: float) -> float:
        """Record one frame; the FPS over the last FPS_WINDOW frames."""
        self.frames += 1
        for key, ms in zip(self.sums, (pre, infer, post)):
            self.sums[key] += ms
        self.done.append(now)
        if len(self.done) < 2:
            return 0.0
        return (len(self.done) - 1) / max(self.done[-1] - self.done[0], 1e-9)

    def mean(self, key: str) -> float | None:
        return self.sums[key] / self.frames if self.frames else None


def camera_threads(threads: int) -> int:
    """Inference threads for the camera loop: ``threads``, or for 0 every core but one.

    The reader thread decodes and preprocesses the next frame while the model runs; with every core
    given to ONNX Runtime the two fight: on two cores the loop kept 0.54 (PIL resize) or 0.77 (OpenCV
    resize) of the two-thread inference rate, against 0.95 of the one-thread rate with one.
    """
    return threads if threads > 0 else max(1, (os.cpu_count() or 2) - 1)


def run_camera(config: CameraConfig, *, classifier: Classifier | None = None, out: IO[str] | None = None,
               stop: threading.Event | None = None,
               on_result: Callable[[dict[str, Any]], None] | None = None) -> CameraSummary:
    """Classify ``config.source`` until it ends, is lost, or the run is stopped; see the module docstring.

    Args:
        classifier: use this one instead of loading ``config.run``.
        out: the stream "-" JSON lines go to (default: sys.stdout).
        stop: set it (from another thread) to end the run as Ctrl-C does.
        on_result: called with each frame's JSON record after it is written (runs on the loop's thread,
            so a slow callback slows the loop like a slow model would).

    Raises:
        EdgeResNetError: a bad source string or option, a run or model that cannot load, a source that
            cannot be opened, a display asked for where none exists, or an output that cannot be written.
    """
    config.validate()
    if len(config.sources) != 1:
        raise ConfigError(f"run_camera classifies one source, got {len(config.sources)}; "
                          "edge_resnet.runtime.streams.run_streams classifies several in one batch")
    source = parse_source(config.sources[0], config.capture)
    cv2 = import_cv2()
    display = has_display(cv2) if config.display is None else config.display
    if config.display and not has_display(cv2):
        raise EdgeResNetError("--display needs a display (DISPLAY or WAYLAND_DISPLAY) and an OpenCV with a GUI "
                              "(opencv-python-headless has none); use --no-display with --save or --jsonl")
    clf = classifier or Classifier.from_run(config.run, model=config.model, backend=config.backend,
                                            providers=config.providers, threads=camera_threads(config.threads))
    stop = stop or threading.Event()
    with _signals_stop(stop), _opencv_threads(cv2, 1):
        try:
            cap = open_capture(source, config.capture, retries=config.retry.retries, delay=config.retry.delay,
                               max_delay=config.retry.max_delay, timeout=config.retry.timeout, stop=stop)
        except KeyboardInterrupt:
            cap = None
        if cap is None:
            return CameraSummary(source.name, clf.model_path.name, clf.backend.name, 0, 0, 0, 0, 0.0, 0.0,
                                 None, None, None, "interrupted")
        # files are read ahead and preprocessed in the reader thread; live frames only when classified
        ahead = not (source.live or config.pace)
        reader = FrameReader(source, cap, capture=config.capture, retry=config.retry, pace=config.pace,
                             prepare=_prepare(clf) if ahead else None)
        video = VideoSink(cv2, config.save, config.fourcc, reader.fps or 30.0) if config.save else None
        try:
            with jsonl_writer(config.jsonl, out or sys.stdout) as emit:
                summary = _loop(clf, reader, cv2, config, source.name, emit, video, display, stop, on_result)
            saved = video.finish() if video is not None else None
        except BaseException:  # an error, or a second Ctrl-C: no half-written video under the final name
            if video is not None:
                video.abort()
            raise
        finally:
            reader.stop()
            if display:
                with contextlib.suppress(Exception):
                    cv2.destroyWindow(WINDOW)
    return CameraSummary(**{**summary.to_dict(), "saved": saved})


def _loop(clf: Classifier, reader: FrameReader, cv2: Any, config: CameraConfig, name: str,
          emit: Callable[[dict[str, Any]], None] | None, video: VideoSink | None, display: bool,
          stop: threading.Event, on_result: Callable[[dict[str, Any]], None] | None) -> CameraSummary:
    stats = _Stats()
    prepare = _prepare(clf)
    end: str | None = None
    reader.start()
    start = last = time.perf_counter()
    while end is None:
        if stop.is_set():
            end = "interrupted"
            break
        frame = reader.get(timeout=0.1)
        if frame is None:
            if reader.finished:
                break
            continue
        record, pred, fps = _classify(clf, frame, prepare, config.top_k, stats, reader)
        last = time.perf_counter()
        if emit is not None:
            emit(record)
        if video is not None or display:
            draw_overlay(cv2, frame.image, pred, fps)
        if video is not None:
            video.write(frame.image)
        if display and not show(cv2, frame.image):
            end = "quit"
        if on_result is not None:
            on_result(record)
        if config.max_frames is not None and stats.frames >= config.max_frames:
            end = "max frames"
    reader.stop()
    if reader.error is not None:
        raise reader.error
    seconds = last - start
    return CameraSummary(
        source=name, model=clf.model_path.name, backend=clf.backend.name, frames=stats.frames, read=reader.read,
        dropped=reader.dropped, reconnects=reader.reconnects, seconds=seconds,
        fps=stats.frames / seconds if seconds > 0 else 0.0, pre_ms=stats.mean("pre"),
        infer_ms=stats.mean("infer"), post_ms=stats.mean("post"), end=end or reader.end or "stopped",
        message=reader.message)


def _classify(clf: Classifier, frame: Captured, prepare: Callable[[np.ndarray], np.ndarray], top_k: int,
              stats: _Stats, reader: FrameReader) -> tuple[dict[str, Any], Prediction, float]:
    t0 = time.perf_counter()
    if frame.prepared is None:
        x = prepare(frame.image)
        pre_ms = 1000 * (time.perf_counter() - t0)
    else:
        x, pre_ms = frame.prepared, frame.prepare_ms or 0.0
    t1 = time.perf_counter()
    logits = clf.backend.run(x)
    t2 = time.perf_counter()
    if logits.ndim != 2 or logits.shape[1] != len(clf.labels):
        raise EdgeResNetError(f"{clf.model_path.name} returns logits of shape {list(logits.shape)} for "
                              f"{len(clf.labels)} labels; the manifest and the model do not belong together")
    pred = clf.decode(logits, top_k)[0]
    t3 = time.perf_counter()
    infer_ms, post_ms = 1000 * (t2 - t1), 1000 * (t3 - t2)
    fps = stats.add(pre_ms, infer_ms, post_ms, t3)
    record = {"frame": frame.index, "time": round(frame.time, 6), "pos_ms": frame.pos_ms, **pred.to_dict(),
              "pre_ms": round(pre_ms, 3), "infer_ms": round(infer_ms, 3), "post_ms": round(post_ms, 3),
              "latency_ms": round(1000 * (time.time() - frame.time), 3), "dropped": reader.dropped,
              "fps": round(fps, 2)}
    return record, pred, fps
