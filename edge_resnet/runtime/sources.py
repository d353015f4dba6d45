"""Video sources for the camera app: what a source string means, opening it, and reading frames.

    parse_source("0")                      camera index 0 (or "/dev/video0")
    parse_source("clip.mp4")               a video file (or file:///abs/clip.mp4)
    parse_source("rtsp://cam.local/live")  a network stream: rtsp(s), rtmp, http(s), udp, tcp, srt
    parse_source("csi://0")                a Jetson CSI camera, through nvarguscamerasrc
    parse_source("v4l2src ! videoconvert ! appsink")   a raw GStreamer pipeline, ending in appsink

``parse_source`` is pure (no OpenCV, no file system), so a typo is caught before a model loads.
``open_capture`` opens it with OpenCV, imported lazily (the ``video`` extra, or JetPack's own cv2).

Reading frames from an opened source is ``edge_resnet.runtime.reader``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edge_resnet import imaging
from edge_resnet.errors import ConfigError, EdgeResNetError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
# GStreamer elements that make a pipeline a network source (it gets the network retry policy)
GST_NETWORK_ELEMENTS = ("rtspsrc", "souphttpsrc", "udpsrc", "tcpclientsrc", "rtmpsrc", "srtsrc", "uridecodebin")
SOURCE_HELP = ("a camera index (0), /dev/videoN, a video file, rtsp://, http(s)://, csi://N or a GStreamer "
               "pipeline ending in appsink")


@dataclass(frozen=True)
class CaptureSettings:
    """What to ask of a camera. None keeps the camera's own setting (CSI needs all three)."""

    width: int | None = None
    height: int | None = None
    fps: int | None = None
    # nvvidconv flip-method for CSI cameras: 0 none, 2 rotate 180, 4 mirror, ...
    flip: int = 0


@dataclass(frozen=True)
class Source:
    """A parsed source string."""

    # camera, file, url, gstreamer or csi
    kind: str
    # what cv2.VideoCapture opens: a device index, a path, a URL or a GStreamer pipeline
    target: int | str
    # frames arrive on the source's own clock, so only the newest is kept
    live: bool
    # opening is retried with backoff too (a stream that is not up yet), not just reading
    network: bool
    # for logs and messages: the URL without its password
    name: str

    @property
    def gstreamer(self) -> bool:
        return self.kind in ("gstreamer", "csi")


def csi_pipeline(sensor_id: int, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera: Argus in NVMM memory, nvvidconv to system memory
    as BGRx, videoconvert to BGR for OpenCV; appsink keeps only the newest buffer."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def mask_password(url: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://user:***@host/x (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_source(text: str, capture: CaptureSettings | None = None) -> Source:
    """What a source string means (pure: touches neither OpenCV nor the file system).

    Raises:
        ConfigError: an empty string, an unknown scheme, a URL without a host or with a bad port, a
            ``csi://`` without a sensor number, or a GStreamer pipeline without appsink.
    """
    capture = capture or CaptureSettings()
    text = text.strip()
    if not text:
        raise ConfigError(f"empty source; pass {SOURCE_HELP}")
    if text.isdigit():
        return Source("camera", int(text), live=True, network=False, name=f"camera {int(text)}")
    if re.fullmatch(r"/dev/video\d+", text):
        return Source("camera", text, live=True, network=False, name=text)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is None and "!" in text:
        return _gstreamer(text)
    if scheme is None:
        return Source("file", text, live=False, network=False, name=text)
    name = scheme.group(1).lower()
    rest = text[scheme.end():]
    if name == "file":
        path = rest if rest.startswith("/") else rest.split("/", 1)[-1]  # file:///a/b or file://host/a/b
        return Source("file", "/" + path.lstrip("/"), live=False, network=False, name=text)
    if name == "csi":
        if not rest.isdigit():
            raise ConfigError(f"bad CSI source {text!r}: expected csi://N with N the sensor id, e.g. csi://0")
        w, h, f = capture.width or 1280, capture.height or 720, capture.fps or 30
        return Source("csi", csi_pipeline(int(rest), w, h, f, capture.flip), live=True, network=False,
                      name=f"CSI camera {int(rest)} ({w}x{h}@{f})")
    if name in NETWORK_SCHEMES:
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ConfigError(f"bad URL {mask_password(text)!r}: the port is not a number in 0-65535") from None
        if not parts.hostname:
            raise ConfigError(f"bad URL {text!r}: it has no host; expected e.g. {name}://192.168.1.10:8554/stream")
        return Source("url", text, live=True, network=True, name=mask_password(text))
    raise ConfigError(f"unknown source scheme {name}:// in {mask_password(text)!r}; use "
                      f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}, csi://N or file://, or {SOURCE_HELP}")


def _gstreamer(pipeline: str) -> Source:
    elements = [e.strip().split(" ")[0] for e in pipeline.split("!")]
    if "appsink" not in elements:
        raise ConfigError("a GStreamer pipeline must end in appsink for OpenCV to read it; add "
                          "`! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1`")
    network = any(e in GST_NETWORK_ELEMENTS for e in elements)
    # a pipeline reading a file is a file: every frame, and its end is the end
    live = "filesrc" not in elements
    return Source("gstreamer", pipeline, live=live, network=network, name=f"GStreamer pipeline ({elements[0]} ...)")


def backoff_delays(attempts: int, initial: float, maximum: float) -> list[float]:
    """Seconds to wait before each of ``attempts`` tries: doubling from ``initial``, capped at ``maximum``."""
    return [min(maximum, initial * 2 ** i) for i in range(attempts)]


@dataclass(frozen=True)
class RetryPolicy:
    """Reconnecting a live source that stopped delivering (and opening a network source)."""

    # attempts before giving up; 0: never reconnect
    retries: int = 10
    # seconds before the first attempt; doubles each time
    delay: float = 0.5
    # cap on the wait between attempts
    max_delay: float = 10.0
    # FFmpeg's open/read timeout for network streams, seconds
    timeout: float = 10.0


# ---------------------------------------------------------------- OpenCV


def import_cv2() -> Any:
    return imaging.import_cv2("the camera app")


def _build_has(cv2: Any, feature: str) -> bool:
    m = re.search(rf"^\s*{feature}:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return m is not None and m.group(1).upper() not in ("NO", "NONE")


def try_open(source: Source, capture: CaptureSettings | None = None, timeout: float = 10.0) -> Any | None:
    """A ``cv2.VideoCapture`` that is open, or None. ``timeout``: seconds FFmpeg waits to open or read
    a network stream. Raises EdgeResNetError only for what retrying cannot fix (OpenCV lacks GStreamer)."""
    cv2 = import_cv2()
    capture = capture or CaptureSettings()
    if source.gstreamer:
        if not _build_has(cv2, "GStreamer"):
            raise EdgeResNetError(f"this OpenCV ({cv2.__version__}) is built without GStreamer, which {source.name} "
                                  "needs; on a Jetson use JetPack's python3-opencv (uninstall opencv-python-headless, "
                                  "which shadows it), or pass a camera index, file or URL")
        cap = cv2.VideoCapture(source.target, cv2.CAP_GSTREAMER)
    elif source.kind == "url" and hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        ms = int(1000 * timeout)
        cap = cv2.VideoCapture(source.target, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(source.target)
    if not cap.isOpened():
        cap.release()
        return None
    if source.kind == "camera":
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, capture.width), (cv2.CAP_PROP_FRAME_HEIGHT, capture.height),
                            (cv2.CAP_PROP_FPS, capture.fps)):
            if value:
                cap.set(prop, value)
    return cap


def open_capture(source: Source, capture: CaptureSettings | None = None, *, retries: int = 0,
                 delay: float = 0.5, max_delay: float = 10.0, timeout: float = 10.0,
                 stop: threading.Event | None = None) -> Any | None:
    """Open ``source``; network sources are retried ``retries`` times with capped exponential backoff.
    None when ``stop`` was set while waiting.

    Raises:
        EdgeResNetError: a missing file, or a source that did not open (after the retries).
    """
    if source.kind == "file" and not Path(source.target).is_file():
        raise EdgeResNetError(f"no video file at {source.target}; a source is {SOURCE_HELP}")
    start = time.monotonic()
    waiter = stop or threading.Event()
    delays = backoff_delays(retries, delay, max_delay) if source.network else []
    cap = try_open(source, capture, timeout)
    for attempt, wait in enumerate(delays, 1):
        if cap is not None:
            break
        log.warning("cannot open %s; retrying in %.1f s (%d/%d)", source.name, wait, attempt, len(delays))
        if waiter.wait(wait):
            return None  # stopped (Ctrl-C) while waiting
        cap = try_open(source, capture, timeout)
    if cap is not None:
        return cap
    if source.kind == "file":
        raise EdgeResNetError(f"OpenCV cannot decode {source.target} (not a video, or a codec this OpenCV lacks); "
                              "convert it with `ffmpeg -i IN -c:v libx264 OUT.mp4`")
    if source.kind == "camera":
        raise EdgeResNetError(f"cannot open {source.name}: is it connected and not in use by another program? "
                              "(`v4l2-ctl --list-devices` lists cameras)")
    if source.network:
        raise EdgeResNetError(f"cannot open {source.name} after {len(delays) + 1} attempt(s) in "
                              f"{time.monotonic() - start:.1f} s; check the URL and that the stream is up "
                              "(--retries waits longer)")
    raise EdgeResNetError(f"cannot open {source.name}; check the pipeline with `gst-launch-1.0` "
                          "(and that nvargus-daemon runs, for CSI cameras)")
