"""Reading an opened video source in a thread, handing frames to the consumer without a backlog.

Files are read in full: every frame is classified, and the reader waits for the consumer through a
small bounded buffer, since nothing is lost by waiting (it decodes, and preprocesses when asked, while
the consumer runs the model). Live sources (and files with ``pace=True``, played at their own frame
rate) go through a one-frame buffer that keeps only the newest frame: a slow consumer skips frames,
which are counted as dropped, and never works through a backlog. A live source that stops delivering
is reopened with capped exponential backoff (``RetryPolicy``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_resnet.runtime.sources import CaptureSettings, RetryPolicy, Source, backoff_delays, import_cv2, try_open

log = logging.getLogger(__name__)


@dataclass
class Captured:
    """One frame as read from the source."""

    # position in the source: frames read so far, counting those dropped later (0-based)
    index: int
    # BGR uint8 (H, W, 3), as OpenCV delivers it
    image: np.ndarray
    # time.time() when it was read
    time: float
    # media position of a file (None for live sources)
    pos_ms: float | None
    # what the reader's ``prepare`` made of it (the preprocessed input), and how long that took
    prepared: Any = None
    prepare_ms: float | None = None


class FrameBuffer:
    """A bounded hand-over from the reader thread to the consumer.

    ``drop_oldest``: a full buffer discards its oldest frame (counted in ``dropped``) rather than
    making the reader wait; with capacity 1 the consumer always gets the newest frame. ``wake`` is set
    whenever a frame arrives or the buffer closes: one consumer of several buffers (the multi-stream
    loop) waits on it instead of on each buffer.
    """

    def __init__(self, capacity: int, drop_oldest: bool, wake: threading.Event | None = None) -> None:
        self.capacity, self.drop_oldest, self.wake = capacity, drop_oldest, wake
        self._items: collections.deque[Captured] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.high_water = 0  # most frames ever held at once (never above capacity)

    def put(self, item: Captured) -> bool:
        """Hand over a frame; False when the buffer was closed (the consumer stopped)."""
        with self._cond:
            while len(self._items) >= self.capacity and not self.drop_oldest and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
        if self.wake is not None:
            self.wake.set()
        return True

    def get(self, timeout: float | None = None) -> Captured | None:
        """The next frame; None once the buffer is closed and empty, or after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.wake is not None:
            self.wake.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)


class FrameReader:
    """Reads ``cap`` in a daemon thread into a ``FrameBuffer`` (see the module docstring).

    Args:
        cap: an open ``cv2.VideoCapture`` of ``source``; the reader releases it.
        pace: play a file at its own frame rate, newest frame only (as if it were live).
        prepare: called on each frame in the reader thread (e.g. preprocessing), its result kept in
            ``Captured.prepared``; for files, so that work overlaps inference.
        wake: set when a frame is handed over or the reader ends (``FrameBuffer``).
        name: the reader thread's name.

    After the end, ``end`` says why: "end of file", "truncated" (a file that ended before the frame
    count its header declares), "lost" (a live source that did not come back), "stopped" or "error".
    """

    def __init__(self, source: Source, cap: Any, *, capture: CaptureSettings | None = None,
                 retry: RetryPolicy | None = None, pace: bool = False, capacity: int = 4,
                 prepare: Callable[[np.ndarray], Any] | None = None, wake: threading.Event | None = None,
                 name: str = "frame-reader") -> None:
        cv2 = import_cv2()
        self.source, self.cap = source, cap
        self.capture, self.retry = capture or CaptureSettings(), retry or RetryPolicy()
        self.newest_only = source.live or pace
        self.pace = pace and not source.live
        self.prepare = prepare
        self.buffer = FrameBuffer(1 if self.newest_only else capacity, drop_oldest=self.newest_only, wake=wake)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if not source.live else 0
        self.declared_frames = int(count) if count and count > 0 else None
        self._pos_prop = cv2.CAP_PROP_POS_MSEC
        self.read = 0
        self.reconnects = 0
        self.end: str | None = None
        self.message: str | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> FrameReader:
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Captured | None:
        return self.buffer.get(timeout)

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    @property
    def finished(self) -> bool:
        return self.buffer.closed and len(self.buffer) == 0

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stop reading and release the capture (unless a read is stuck past ``join_timeout``)."""
        self._stop.set()
        self.buffer.close()
        if self._thread.is_alive():
            self._thread.join(join_timeout)
        if self.end is None:
            self.end = "stopped"
        if not self._thread.is_alive() and self.cap is not None:
            self.cap.release()
            self.cap = None

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # handed to the consumer, which raises it
            self.error, self.end = e, "error"
        finally:
            self.buffer.close()

    def _loop(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            ok, image = self.cap.read()
            if not ok or image is None:
                if self._stop.is_set():
                    return
                if self.source.live:
                    if self._reconnect():
                        continue
                    return
                self._file_ended()
                return
            frame = Captured(self.read, image, time.time(), None if self.source.live else self.cap.get(self._pos_prop))
            self.read += 1
            if self.pace and self.fps:
                due = start + frame.index / self.fps
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
            if self.prepare is not None:
                t = time.perf_counter()
                frame.prepared = self.prepare(image)
                frame.prepare_ms = 1000 * (time.perf_counter() - t)
            if not self.buffer.put(frame):
                return

    def _file_ended(self) -> None:
        if self.declared_frames is not None and self.read < self.declared_frames:
            self.end = "truncated"
            self.message = (f"{self.source.name} ended after {self.read} of the {self.declared_frames} frames "
                            "its header declares (truncated or damaged)")
        else:
            self.end = "end of file"

    def _reconnect(self) -> bool:
        self.cap.release()
        self.cap = None
        began = time.monotonic()
        delays = backoff_delays(self.retry.retries, self.retry.delay, self.retry.max_delay)
        for attempt, wait in enumerate(delays, 1):
            log.warning("%s stopped delivering frames; reconnecting in %.1f s (%d/%d)", self.source.name, wait,
                        attempt, len(delays))
            if self._stop.wait(wait):
                return False
            self.cap = try_open(self.source, self.capture, self.retry.timeout)
            if self.cap is not None:
                self.reconnects += 1
                log.warning("%s: reconnected", self.source.name)
                return True
        self.end = "lost"
        self.message = (f"lost {self.source.name} after {self.read} frames; it did not come back in "
                        f"{len(delays)} reconnect attempt(s) over {time.monotonic() - began:.1f} s "
                        "(--retries and --retry-max-delay wait longer)")
        return False
