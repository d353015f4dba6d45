"""Several video sources classified by one model: the newest frame of each stream in one batch per inference.

    from edge_resnet.runtime.camera import CameraConfig
    from edge_resnet.runtime.streams import run_streams
    summary = run_streams(CameraConfig(source=("rtsp://cam1/live", "rtsp://cam2/live"), run="runs/resnet18-224"))

Each stream has its own reader thread (``FrameReader``: newest frame only for live sources and paced files,
reconnection with backoff, files read ahead and preprocessed), so a stream that stalls, reconnects or ends
holds up no other. The loop's batching policy:

- A batch takes one frame from every stream that has one ready, in stream order: the newest frame of a
  live (or paced) stream, the next frame of a file. No stream waits for another to fill a batch, and none
  can starve: each is in every batch while it has a frame (at most one frame per stream per batch, so a
  fast stream cannot crowd out a slow one). With every stream faster than the model, each batch holds one
  frame of each and the streams share the classified frames equally.
- The backend runs once per batch (a backend with a fixed or capped batch splits it itself).
- Each result goes to its stream's outputs: one JSON line with ``stream`` (the index among the sources)
  and ``source`` (its name) before the single-stream fields, plus ``batch`` (frames in that inference,
  whose time ``infer_ms`` is); one annotated video per stream (``CameraConfig.saves``).

Ends, per stream: a file ends at its last frame (or "truncated"), a live source that does not come back is
"lost", ``max_frames`` ends a stream after that many of its frames ("max frames"); the others go on, and the
run ends when every stream has ended. Ctrl-C or SIGTERM ends the run after the batch in hand (every stream
"interrupted"); a second aborts. Every source is opened before the run starts, so one that cannot be opened
(a missing file, a camera that is not there, a network stream that does not come up within its retries)
stops the run before any frame, as it does for one source. The exit code is 1 when a stream was lost.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import IO, Any

import numpy as np

from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.runtime.camera import (
    CameraConfig,
    CameraSummary,
    _opencv_threads,
    _prepare,
    _signals_stop,
    _Stats,
    camera_threads,
)
from edge_resnet.runtime.classifier import Classifier
from edge_resnet.runtime.outputs import VideoSink, draw_overlay, jsonl_writer
from edge_resnet.runtime.reader import Captured, FrameReader
from edge_resnet.runtime.sources import Source, import_cv2, open_capture, parse_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamsSummary:
    """The run's totals and one ``CameraSummary`` per stream (its ``seconds`` are the run's)."""

    streams: tuple[CameraSummary, ...]
    model: str
    backend: str
    # frames classified over all streams, in how many backend calls, over how long
    frames: int
    batches: int
    seconds: float
    fps: float
    # "interrupted" (Ctrl-C, SIGTERM, ``stop``) or "all streams ended"; each stream says why it ended
    end: str

    @property
    def exit_code(self) -> int:
        return 1 if any(s.exit_code for s in self.streams) else 0

    @property
    def messages(self) -> list[tuple[CameraSummary, str]]:
        return [(s, s.message) for s in self.streams if s.message]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """One line per stream, then the totals."""
        out = [f"[{i}] {s.source}: {s.line()}" for i, s in enumerate(self.streams)]
        mean = f", {self.frames / self.batches:.2f} per batch" if self.batches else ""
        out.append(f"{len(self.streams)} streams, {self.frames} frames in {self.seconds:.1f} s "
                   f"({self.fps:.1f} FPS) in {self.batches} batches{mean}; {self.end}")
        return out


class _Stream:
    """One source in the run: its reader, counters and video; ``end`` once it has ended."""

    def __init__(self, index: int, source: Source, reader: FrameReader, video: VideoSink | None) -> None:
        self.index, self.source, self.reader, self.video = index, source, reader, video
        self.stats = _Stats()
        self.end: str | None = None

    def finish(self, end: str | None = None) -> None:
        """Stop the reader (joined, capture released); a reader's exception is raised, as for one source."""
        self.reader.stop()
        if self.reader.error is not None:
            raise self.reader.error
        self.end = end or self.reader.end or "stopped"

    def summary(self, clf: Classifier, seconds: float, saved: str | None) -> CameraSummary:
        r, st = self.reader, self.stats
        return CameraSummary(
            source=self.source.name, model=clf.model_path.name, backend=clf.backend.name, frames=st.frames,
            read=r.read, dropped=r.dropped, reconnects=r.reconnects, seconds=seconds,
            fps=st.frames / seconds if seconds > 0 else 0.0, pre_ms=st.mean("pre"), infer_ms=st.mean("infer"),
            post_ms=st.mean("post"), end=self.end or "stopped", message=r.message, saved=saved)


def run_streams(config: CameraConfig, *, classifier: Classifier | None = None, out: IO[str] | None = None,
                stop: threading.Event | None = None,
                on_result: Callable[[dict[str, Any]], None] | None = None) -> StreamsSummary:
    """Classify every source of ``config.source`` together until all have ended or the run is stopped; see
    the module docstring. The arguments are ``run_camera``'s; ``on_result`` gets each frame's JSON record.

    Raises:
        EdgeResNetError: a bad source string or option, a run or model that cannot load, a source that
            cannot be opened, ``display`` asked for, or an output that cannot be written.
    """
    if config.display:
        raise ConfigError(f"--display shows one source, got {len(config.sources)}; pass --no-display (--save writes "
                          "one video per stream, --jsonl one line per frame with its stream)")
    config = replace(config, display=False)
    config.validate()
    sources = [parse_source(text, config.capture) for text in config.sources]
    cv2 = import_cv2()
    clf = classifier or Classifier.from_run(config.run, model=config.model, backend=config.backend,
                                            providers=config.providers, threads=camera_threads(config.threads))
    stop = stop or threading.Event()
    wake = threading.Event()
    streams: list[_Stream] = []
    with _signals_stop(stop), _opencv_threads(cv2, 1):
        try:
            for i, (source, save) in enumerate(zip(sources, config.saves or (None,) * len(sources))):
                try:
                    cap = open_capture(source, config.capture, retries=config.retry.retries,
                                       delay=config.retry.delay, max_delay=config.retry.max_delay,
                                       timeout=config.retry.timeout, stop=stop)
                except KeyboardInterrupt:
                    cap = None
                if cap is None:  # stopped while a network source was retried
                    return _interrupted(clf, sources)
                ahead = not (source.live or config.pace)  # files are read ahead and preprocessed in the reader
                reader = FrameReader(source, cap, capture=config.capture, retry=config.retry, pace=config.pace,
                                     prepare=_prepare(clf) if ahead else None, wake=wake, name=f"frame-reader-{i}")
                video = VideoSink(cv2, save, config.fourcc, reader.fps or 30.0) if save else None
                streams.append(_Stream(i, source, reader, video))
            with jsonl_writer(config.jsonl, out or sys.stdout) as emit:
                end, batches, seconds = _loop(clf, streams, cv2, config, emit, wake, stop, on_result)
            saved = [s.video.finish() if s.video is not None else None for s in streams]
        except BaseException:  # an error, or a second Ctrl-C: no half-written video under its final name
            for s in streams:
                if s.video is not None:
                    s.video.abort()
            raise
        finally:
            for s in streams:
                s.reader.stop()
    frames = sum(s.stats.frames for s in streams)
    return StreamsSummary(
        streams=tuple(s.summary(clf, seconds, path) for s, path in zip(streams, saved)),
        model=clf.model_path.name, backend=clf.backend.name, frames=frames, batches=batches, seconds=seconds,
        fps=frames / seconds if seconds > 0 else 0.0, end=end)


def _interrupted(clf: Classifier, sources: Sequence[Source]) -> StreamsSummary:
    none = [CameraSummary(s.name, clf.model_path.name, clf.backend.name, 0, 0, 0, 0, 0.0, 0.0, None, None, None,
                          "interrupted") for s in sources]
    return StreamsSummary(tuple(none), clf.model_path.name, clf.backend.name, 0, 0, 0.0, 0.0, "interrupted")


def _loop(clf: Classifier, streams: list[_Stream], cv2: Any, config: CameraConfig,
          emit: Callable[[dict[str, Any]], None] | None, wake: threading.Event, stop: threading.Event,
          on_result: Callable[[dict[str, Any]], None] | None) -> tuple[str, int, float]:
    """Batches until every stream has ended or ``stop`` is set: (the run's end, batches, seconds)."""
    prepare = _prepare(clf)
    for s in streams:
        s.reader.start()
    active = list(streams)
    batches = 0
    start = last = time.perf_counter()
    end = "all streams ended"
    while active:
        if stop.is_set():
            end = "interrupted"
            break
        wake.clear()  # before looking: a frame handed over after this sets it again
        taken: list[tuple[_Stream, Captured]] = []
        for s in list(active):
            frame = s.reader.get(timeout=0)
            if frame is not None:
                taken.append((s, frame))
            elif s.reader.finished:
                s.finish()
                active.remove(s)
        if not taken:
            wake.wait(0.1)
            continue
        records = _classify(clf, taken, prepare, config.top_k)
        batches += 1
        last = time.perf_counter()
        for (s, frame), (record, pred) in zip(taken, records):
            if emit is not None:
                emit(record)
            if s.video is not None:
                draw_overlay(cv2, frame.image, pred, record["fps"])
                s.video.write(frame.image)
            if on_result is not None:
                on_result(record)
            if config.max_frames is not None and s.stats.frames >= config.max_frames:
                s.finish("max frames")
                active.remove(s)
    for s in active:
        s.finish("interrupted")
    return end, batches, last - start


def _classify(clf: Classifier, taken: list[tuple[_Stream, Captured]], prepare: Callable[[np.ndarray], np.ndarray],
              top_k: int) -> list[tuple[dict[str, Any], Any]]:
    """One backend call for the batch; per frame its JSON record and prediction (stats updated)."""
    inputs, pre = [], []
    for _, frame in taken:
        t = time.perf_counter()
        if frame.prepared is None:
            inputs.append(prepare(frame.image))
            pre.append(1000 * (time.perf_counter() - t))
        else:
            inputs.append(frame.prepared)
            pre.append(frame.prepare_ms or 0.0)
    t1 = time.perf_counter()
    logits = clf.backend.run(np.concatenate(inputs) if len(inputs) > 1 else inputs[0])
    t2 = time.perf_counter()
    if logits.ndim != 2 or logits.shape != (len(taken), len(clf.labels)):
        raise EdgeResNetError(f"{clf.model_path.name} returns logits of shape {list(logits.shape)} for "
                              f"{len(taken)} frames of {len(clf.labels)} labels; the manifest and the model do not "
                              "belong together")
    preds = clf.decode(logits, top_k)
    t3 = time.perf_counter()
    infer_ms, post_ms = 1000 * (t2 - t1), 1000 * (t3 - t2)
    done = time.time()
    out = []
    for (s, frame), pre_ms, pred in zip(taken, pre, preds):
        fps = s.stats.add(pre_ms, infer_ms, post_ms, t3)
        record = {"stream": s.index, "source": s.source.name, "frame": frame.index, "time": round(frame.time, 6),
                  "pos_ms": frame.pos_ms, **pred.to_dict(), "pre_ms": round(pre_ms, 3),
                  "infer_ms": round(infer_ms, 3), "post_ms": round(post_ms, 3), "batch": len(taken),
                  "latency_ms": round(1000 * (done - frame.time), 3), "dropped": s.reader.dropped,
                  "fps": round(fps, 2)}
        out.append((record, pred))
    return out

