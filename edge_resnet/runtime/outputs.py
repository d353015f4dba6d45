"""What the camera app writes: a window, an annotated video, JSON lines.

OpenCV is passed in (``cv2``), as the caller imported it lazily.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_resnet.atomic import check_writable_dir, check_writable_file, temp_path
from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.classifier import Prediction

# container -> the fourcc the stock OpenCV wheels and JetPack's OpenCV can both write
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
WINDOW = "edge-resnet"
__all__ = ["VideoSink", "check_writable_dir", "check_writable_file", "draw_overlay", "has_display", "jsonl_writer",
           "show", "stream_video_path"]


def stream_video_path(save: str, index: int) -> str:
    """The annotated video of stream ``index`` when several are classified: out.mp4 -> out.stream0.mp4
    (the number is the ``stream`` of the JSON lines; the extension still picks the container)."""
    path = Path(save)
    return str(path.with_name(f"{path.stem}.stream{index}{path.suffix}"))


def has_display(cv2: Any) -> bool:
    """A window can open: OpenCV has a GUI backend and (on Linux) a display server is reachable."""
    info = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.strip().startswith("GUI:")), "NONE")
    if gui.upper() in ("NONE", "NO", ""):
        return False
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def draw_overlay(cv2: Any, image: np.ndarray, pred: Prediction, fps: float) -> None:
    """Top-1 label and score, and the FPS, in the frame's top-left corner (in place)."""
    scale = max(0.5, image.shape[1] / 1280)
    thick = max(1, round(2 * scale))
    lines = [f"{pred.label} {pred.score:.2f}", f"{fps:.1f} FPS"]
    (w, h), base = cv2.getTextSize(max(lines, key=len), cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    step = h + base + 4
    cv2.rectangle(image, (0, 0), (w + 12, step * len(lines) + 6), (0, 0, 0), -1)
    for i, text in enumerate(lines):
        cv2.putText(image, text, (6, (i + 1) * step), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)


class VideoSink:
    """The annotated video, written under a hidden temp name and renamed when the run ends, so an
    aborted run leaves no half-written file under the final name."""

    def __init__(self, cv2: Any, path: str, fourcc: str | None, fps: float) -> None:
        self.cv2, self.path = cv2, Path(path)
        self.tmp = temp_path(self.path, keep_suffix=True)  # the extension picks the container
        self.fourcc = fourcc or FOURCC[self.path.suffix.lower()]
        self.fps = fps
        self.writer: Any = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise EdgeResNetError(f"--save {self.path}: cannot create the folder {self.path.parent} "
                                      f"({e.strerror or e}); pass a path in a writable folder") from None
            self.writer = self.cv2.VideoWriter(str(self.tmp), self.cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                               self.size)
            if not self.writer.isOpened():
                self.abort()
                raise EdgeResNetError(f"OpenCV cannot write {self.path} with codec {self.fourcc}; try an .avi "
                                      "file (MJPG) or another --fourcc")
        if (image.shape[1], image.shape[0]) != self.size:  # a source that reconnected at another size
            image = self.cv2.resize(image, self.size, interpolation=self.cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def finish(self) -> str | None:
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:  # the caller's abort() removes the temp file
            raise EdgeResNetError(f"--save {self.path}: cannot rename the finished video into place "
                                  f"({e.strerror or e})") from None
        return str(self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        with contextlib.suppress(OSError):  # never there, or under a path that cannot hold it
            self.tmp.unlink()


@contextlib.contextmanager
def jsonl_writer(dest: str | None, out: IO[str]) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A function writing one flushed JSON line per call (so a reader sees each frame as it happens)."""
    if dest is None:
        yield None
        return
    if dest == "-":
        f, close = out, False
    else:
        try:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            f, close = open(dest, "w", encoding="utf-8"), True  # noqa: SIM115 (closed below)
        except OSError as e:
            raise EdgeResNetError(f"cannot write --jsonl {dest} ({e.strerror}); pass a writable path or -") from None

    def write(record: dict[str, Any]) -> None:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()

    try:
        yield write
    finally:
        if close:
            f.close()


def show(cv2: Any, image: np.ndarray) -> bool:
    """Show a frame; False when the user pressed q or Esc, or closed the window."""
    cv2.imshow(WINDOW, image)
    key = cv2.waitKey(1) & 0xFF
    if key in (ord("q"), 27):
        return False
    with contextlib.suppress(Exception):  # some GUI backends cannot report visibility
        if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            return False
    return True
