"""Video sources: parsing (pure, known answers), opening errors, and the reader thread on real files."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.runtime.reader import Captured, FrameBuffer, FrameReader
from edge_resnet.runtime.sources import (
    CaptureSettings,
    backoff_delays,
    csi_pipeline,
    import_cv2,
    mask_password,
    open_capture,
    parse_source,
)
from tests.runtime.videos import closed_port, write_video

CSI_0 = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1,format=NV12 ! "
         "nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
         "appsink drop=true max-buffers=1 sync=false")


@pytest.mark.parametrize(("text", "kind", "target", "live", "network", "name"), [
    ("0", "camera", 0, True, False, "camera 0"),
    (" 2 ", "camera", 2, True, False, "camera 2"),
    ("/dev/video1", "camera", "/dev/video1", True, False, "/dev/video1"),
    ("clip.mp4", "file", "clip.mp4", False, False, "clip.mp4"),
    ("videos/a b.avi", "file", "videos/a b.avi", False, False, "videos/a b.avi"),
    ("file:///data/clip.mkv", "file", "/data/clip.mkv", False, False, "file:///data/clip.mkv"),
    ("rtsp://10.0.0.2:8554/live", "url", "rtsp://10.0.0.2:8554/live", True, True, "rtsp://10.0.0.2:8554/live"),
    ("rtsp://admin:s3cret@cam.local/h264", "url", "rtsp://admin:s3cret@cam.local/h264", True, True,
     "rtsp://admin:***@cam.local/h264"),
    ("http://127.0.0.1:8080/video.mjpg", "url", "http://127.0.0.1:8080/video.mjpg", True, True,
     "http://127.0.0.1:8080/video.mjpg"),
    ("HTTPS://cam.example.com/stream", "url", "HTTPS://cam.example.com/stream", True, True,
     "HTTPS://cam.example.com/stream"),
    ("csi://0", "csi", CSI_0, True, False, "CSI camera 0 (1280x720@30)"),
])
def test_parse_source_known_answers(text: str, kind: str, target: object, live: bool, network: bool,
                                    name: str) -> None:
    s = parse_source(text)
    assert (s.kind, s.target, s.live, s.network, s.name) == (kind, target, live, network, name)
    assert s.gstreamer == (kind in ("csi", "gstreamer"))


def test_csi_pipeline_takes_the_capture_settings() -> None:
    s = parse_source("csi://1", CaptureSettings(width=1920, height=1080, fps=60, flip=2))
    assert s.target == csi_pipeline(1, 1920, 1080, 60, 2)
    assert s.target.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,"
                               "framerate=60/1")
    assert "nvvidconv flip-method=2 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink" \
        in s.target
    assert s.name == "CSI camera 1 (1920x1080@60)"


@pytest.mark.parametrize(("pipeline", "live", "network"), [
    ("v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true", True, False),
    ("rtspsrc location=rtsp://cam/x latency=0 ! rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! "
     "video/x-raw,format=BGRx ! videoconvert ! appsink", True, True),
    ("filesrc location=a.mp4 ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! appsink", False, False),
])
def test_gstreamer_pipelines(pipeline: str, live: bool, network: bool) -> None:
    s = parse_source(pipeline)
    assert (s.kind, s.target, s.live, s.network) == ("gstreamer", pipeline, live, network)


@pytest.mark.parametrize(("text", "match"), [
    ("", "empty source"),
    ("rtsp://", "has no host"),
    ("rtsp://:8554/x", "has no host"),
    ("http://cam:99999/x", "port is not a number"),
    ("rtsp://user:pw@cam:port/x", r"port is not a number"),
    ("csi://", r"csi://N"),
    ("csi://front", r"csi://N"),
    ("ftp://cam/x", r"unknown source scheme ftp://.*rtsp://"),
    ("v4l2src ! videoconvert", "must end in appsink"),
])
def test_parse_source_refuses_with_one_line(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        parse_source(text)
    assert "\n" not in str(e.value)
    assert "pw" not in str(e.value)  # passwords stay out of messages


def test_mask_password() -> None:
    assert mask_password("rtsp://u:p@h:1/x") == "rtsp://u:***@h:1/x"
    assert mask_password("rtsp://h/x") == "rtsp://h/x"


def test_backoff_doubles_and_caps() -> None:
    assert backoff_delays(6, 0.5, 3.0) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backoff_delays(3, 0.01, 0.02) == [0.01, 0.02, 0.02]
    assert backoff_delays(0, 0.5, 10.0) == []


# ---------------------------------------------------------------- the hand-over buffer


def _frame(i: int) -> Captured:
    import numpy as np

    return Captured(i, np.zeros((2, 2, 3), np.uint8), time.time(), None)


def test_newest_only_buffer_keeps_one_frame_and_counts_the_rest() -> None:
    buf = FrameBuffer(1, drop_oldest=True)
    for i in range(5):
        assert buf.put(_frame(i))
    assert len(buf) == 1 and buf.dropped == 4 and buf.high_water == 1
    assert buf.get(0).index == 4
    assert buf.get(0.01) is None  # empty, not closed: times out
    buf.put(_frame(5))
    buf.close()
    assert buf.get().index == 5 and buf.get() is None  # what was left is still handed over
    assert not buf.put(_frame(6))


def test_bounded_buffer_makes_the_reader_wait() -> None:
    buf = FrameBuffer(2, drop_oldest=False)
    buf.put(_frame(0))
    buf.put(_frame(1))
    done = threading.Event()
    threading.Thread(target=lambda: (buf.put(_frame(2)), done.set()), daemon=True).start()
    assert not done.wait(0.1)  # full: the third put waits for the consumer
    assert buf.get().index == 0
    assert done.wait(2)
    assert [buf.get().index, buf.get().index] == [1, 2] and buf.dropped == 0 and buf.high_water == 2


# ---------------------------------------------------------------- the reader on real files


def _open(path: Path):
    return open_capture(parse_source(str(path)))


def test_file_reader_delivers_every_frame_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", 40)
    reader = FrameReader(parse_source(str(video)), _open(video), prepare=lambda img: img.shape).start()
    got = []
    while (frame := reader.get(timeout=5)) is not None:
        got.append(frame)
        time.sleep(0.002)  # a consumer slower than the decoder: the reader waits, nothing is dropped
    reader.stop()
    assert [f.index for f in got] == list(range(40))
    assert all(f.prepared == (480, 640, 3) and f.prepare_ms >= 0 for f in got)
    assert reader.dropped == 0 and reader.buffer.high_water <= 4 and reader.end == "end of file"
    assert reader.fps == pytest.approx(30.0) and reader.declared_frames == 40
    assert [f.pos_ms for f in got[:3]] == pytest.approx([0.0, 1000 / 30, 2000 / 30])


def test_paced_reader_hands_a_slow_consumer_the_newest_frame(tmp_path: Path) -> None:
    """A real source faster than its consumer: a 200 fps file played at its own rate, a consumer that
    needs 25 ms per frame. The buffer never holds more than one frame, the consumer skips ahead (the
    frames it never saw are counted as dropped), and every frame read is either seen or dropped."""
    video = write_video(tmp_path / "fast.avi", 100, fps=200.0, fourcc="MJPG")
    reader = FrameReader(parse_source(str(video)), _open(video), pace=True).start()
    seen, sizes = [], []
    while (frame := reader.get(timeout=5)) is not None:
        seen.append(frame.index)
        time.sleep(0.025)
        sizes.append(len(reader.buffer))
    reader.stop()
    assert reader.read == 100 and reader.end == "end of file"
    assert reader.buffer.high_water == 1 and max(sizes) <= 1
    assert len(seen) + reader.dropped == 100
    assert reader.dropped >= 50, (len(seen), reader.dropped)  # 0.5 s of video, ~25 ms per frame consumed
    assert seen == sorted(seen) and seen[-1] == 99  # always forward, and the last frame is the newest one
    assert max(b - a for a, b in zip(seen, seen[1:], strict=False)) > 1


def test_reader_stops_on_request(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", 30)
    reader = FrameReader(parse_source(str(video)), _open(video), pace=True).start()
    assert reader.get(timeout=5) is not None
    reader.stop()
    assert reader.end == "stopped" and reader.cap is None and reader.finished


# ---------------------------------------------------------------- opening


def test_open_errors_are_one_line(tmp_path: Path) -> None:
    def one_line(fn, match: str) -> str:
        with pytest.raises(EdgeResNetError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)
        return str(e.value)

    one_line(lambda: open_capture(parse_source(str(tmp_path / "missing.mp4"))), "no video file at .*missing.mp4")
    (tmp_path / "notes.mp4").write_text("not a video")
    one_line(lambda: open_capture(parse_source(str(tmp_path / "notes.mp4"))), "cannot decode .*notes.mp4")
    one_line(lambda: open_capture(parse_source("/dev/video9")), "cannot open /dev/video9")
    port = closed_port()
    start = time.monotonic()
    msg = one_line(lambda: open_capture(parse_source(f"rtsp://127.0.0.1:{port}/x"), retries=2, delay=0.05,
                                        max_delay=0.1), r"cannot open rtsp://127\.0\.0\.1:\d+/x after 3 attempt")
    assert time.monotonic() - start >= 0.15 and "--retries" in msg  # waited 0.05 + 0.1 between the tries
    cv2 = import_cv2()
    if re.search(r"GStreamer:\s+NO", cv2.getBuildInformation()):
        one_line(lambda: open_capture(parse_source("csi://0")), "built without GStreamer.*JetPack")


def test_stop_interrupts_the_open_retries() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    assert open_capture(parse_source(f"rtsp://127.0.0.1:{closed_port()}/x"), retries=5, delay=5.0,
                        max_delay=5.0, stop=stop) is None
    assert time.monotonic() - start < 5.0  # the stop cut the first 5 s wait short
