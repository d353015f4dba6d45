"""Real video sources for the camera tests: files made from photographs, and a local MJPEG stream.

The frames are scikit-image's bundled photographs (shipped in its wheel, no download) resized to
640x480, written with OpenCV's own encoder. The stream is a real HTTP server speaking
multipart/x-mixed-replace (what IP cameras serve as MJPEG), read through OpenCV's FFmpeg.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import skimage.data as skdata  # a dev dependency: missing, these tests fail loudly rather than skip

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")
SIZE = (640, 480)


def photo_frames(count: int, hold: int = 3) -> list[np.ndarray]:
    """``count`` BGR 640x480 frames cycling through the photographs, each held for ``hold`` frames."""
    photos = [cv2.resize(np.ascontiguousarray(getattr(skdata, name)()[..., :3][..., ::-1]), SIZE,
                         interpolation=cv2.INTER_AREA) for name in PHOTOS]
    return [photos[(i // hold) % len(photos)] for i in range(count)]


def write_video(path: Path, count: int, fps: float = 30.0, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened(), path
    for frame in photo_frames(count):
        writer.write(frame)
    writer.release()
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from ``path``, read independently of the app."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """Serves ``connections`` HTTP clients ``frames`` JPEG frames each, then shuts down (the port
    then refuses): a network camera that drops its stream, comes back once, and goes away."""

    def __init__(self, frames: int, connections: int, interval: float = 0.01) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in photo_frames(frames, hold=1)]
        self.left = connections
        self.served = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if server.left <= 0:
                    self.send_error(503)
                    return
                server.left -= 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for jpg in server.jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                     + jpg + b"\r\n")
                    server.served += 1
                    time.sleep(interval)
                if server.left <= 0:  # the last client got its frames: the camera goes away
                    threading.Thread(target=server.close, daemon=True).start()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
