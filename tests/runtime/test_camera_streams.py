"""`edge-resnet camera SRC1 SRC2 ...`: several real sources in one run, one batch per inference.

Real video files (scikit-image photographs, tests/runtime/videos.py) and a real local MJPEG stream; the
model is the committed resnet8-narrow bundle (no training). Expected labels are computed without the
camera code: OpenCV decodes every frame, the runtime's Preprocessor prepares it, ONNX Runtime runs the
model file on each frame alone.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edge_resnet import cli
from edge_resnet.runtime.camera import CameraConfig
from edge_resnet.runtime.manifest import load_manifest
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.runtime.streams import run_streams
from tests.runtime.videos import MjpegServer, decode_all, write_video

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "tests" / "fixtures" / "bundle" / "resnet8-narrow-bundle"
CPU = ["--providers", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three files of different lengths and containers (mp4v and MJPG)."""
    folder = tmp_path_factory.mktemp("streams")
    return [write_video(folder / "a.mp4", 24), write_video(folder / "b.avi", 15, fourcc="MJPG"),
            write_video(folder / "c.mp4", 30, fps=25.0)]


def _camera(*args: str) -> int:
    return cli.main(["camera", *args, "--run", str(BUNDLE), *CPU, "--no-display"])


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(("camera:", "edge-resnet:"))]


def _expected(video: Path, model: str) -> list[tuple[int, list[float]]]:
    """Per frame of ``video``: the top-1 class and the softmax, from ONNX Runtime on that frame alone."""
    session = ort.InferenceSession(str(BUNDLE / model), providers=["CPUExecutionProvider"])
    prepare = Preprocessor(load_manifest(BUNDLE).preprocessing)
    out = []
    for frame in decode_all(video):
        logits = session.run(None, {"input": prepare(frame, order="BGR")})[0][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        out.append((int(np.argmax(logits)), p.tolist()))
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_files_in_one_run_every_frame_under_its_stream_with_the_single_frame_labels(
        clips: list[Path], n: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two and three files in one run: every frame of each appears once, in order, under its stream id and
    source; labels and scores are those of the frame classified alone; frames of several streams share
    batches; one annotated video per stream; a summary line per stream, then the totals."""
    videos = clips[:n]
    jsonl, saved, summary = tmp_path / "frames.jsonl", tmp_path / "out" / "ann.mp4", tmp_path / "summary.json"
    assert _camera(*map(str, videos), "--jsonl", str(jsonl), "--save", str(saved), "--summary", str(summary),
                   "--top-k", "3") == 0
    records = _lines(jsonl)
    s = json.loads(summary.read_text())
    by_stream = collections.defaultdict(list)
    for r in records:
        by_stream[r["stream"]].append(r)
    assert sorted(by_stream) == list(range(n))
    for i, video in enumerate(videos):
        mine = by_stream[i]
        expected = _expected(video, s["model"])
        assert [r["frame"] for r in mine] == list(range(len(expected)))
        assert {r["source"] for r in mine} == {str(video)}
        assert [r["indices"][0] for r in mine] == [top for top, _ in expected]
        for r, (_, probs) in zip(mine, expected):
            assert r["scores"] == pytest.approx([probs[k] for k in r["indices"]], abs=1e-5)
            assert r["labels"] == [str(k) for k in r["indices"]]  # the bundle's labels are the digits
        assert len(decode_all(saved.with_name(f"ann.stream{i}.mp4"))) == len(expected)
    assert len({r["indices"][0] for r in records}) > 1
    assert max(r["batch"] for r in records) == n  # the files are read ahead: every stream in a batch
    batch_sizes = collections.Counter((r["batch"]) for r in records)
    assert s["batches"] == sum(count / size for size, count in batch_sizes.items())
    assert all(r["dropped"] == 0 and r["infer_ms"] > 0 for r in records)

    assert [x["frames"] for x in s["streams"]] == [len(decode_all(v)) for v in videos]
    assert all(x["end"] == "end of file" and x["saved"] == str(saved.with_name(f"ann.stream{i}.mp4"))
               for i, x in enumerate(s["streams"]))
    assert (s["frames"], s["end"]) == (len(records), "all streams ended")
    assert sorted(p.name for p in saved.parent.iterdir()) == [f"ann.stream{i}.mp4" for i in range(n)]
    err = _stderr_lines(capsys)
    assert len(err) == n + 1
    for i, (line, video) in enumerate(zip(err, videos)):
        assert line.startswith(f"camera: [{i}] {video}: {s['streams'][i]['frames']} frames in ") and "end of file" in line
    assert err[-1].startswith(f"camera: {n} streams, {len(records)} frames in ") and "all streams ended" in err[-1]


def test_max_frames_counts_per_stream(clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--max-frames 8 with several sources: each stream stops after 8 of its own frames; a stream shorter than
    that ends at its end; the run ends when every stream has."""
    short = write_video(tmp_path / "short.mp4", 5)
    jsonl = tmp_path / "frames.jsonl"
    assert _camera(str(clips[0]), str(short), str(clips[2]), "--max-frames", "8", "--jsonl", str(jsonl)) == 0
    frames = collections.defaultdict(list)
    for r in _lines(jsonl):
        frames[r["stream"]].append(r["frame"])
    assert dict(frames) == {0: list(range(8)), 1: list(range(5)), 2: list(range(8))}
    err = _stderr_lines(capsys)
    assert ["max frames" in err[0], "end of file" in err[1], "max frames" in err[2]] == [True] * 3
    assert err[3].startswith("camera: 3 streams, 21 frames")


def test_a_missing_source_among_good_ones_stops_the_run_before_any_frame(
        clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A source that cannot be opened is refused at the start, as for one source: one line, exit 1, no
    frame classified, nothing written."""
    jsonl, saved = tmp_path / "frames.jsonl", tmp_path / "ann.mp4"
    assert _camera(str(clips[0]), str(tmp_path / "missing.mp4"), "--jsonl", str(jsonl), "--save", str(saved)) == 1
    assert _stderr_lines(capsys) == [f"edge-resnet: error: no video file at {tmp_path / 'missing.mp4'}; a source "
                                     "is a camera index (0), /dev/videoN, a video file, rtsp://, http(s)://, csi://N "
                                     "or a GStreamer pipeline ending in appsink"]
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_file_among_good_ones_ends_on_its_own(clips: list[Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A file cut in half: its stream ends after its decodable frames with its own warning line; the other
    streams are classified to their ends; exit 0."""
    whole = write_video(tmp_path / "whole.avi", 40, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    decodable = len(decode_all(cut))
    jsonl = tmp_path / "frames.jsonl"
    assert _camera(str(clips[0]), str(cut), str(clips[2]), "--jsonl", str(jsonl)) == 0
    counts = collections.Counter(r["stream"] for r in _lines(jsonl))
    assert counts == {0: 24, 1: decodable, 2: 30}
    err = _stderr_lines(capsys)
    assert "truncated" in err[1] and "end of file" in err[0] and "end of file" in err[2]
    assert err[4:] == [f"edge-resnet: warning: {cut} ended after {decodable} of the 40 frames its header declares "
                       "(truncated or damaged)"]


def test_a_network_stream_that_drops_reconnects_then_is_lost_while_the_others_go_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real MJPEG camera serves 15 frames, drops, serves 15 more on the reconnect, then goes away; beside
    it a file played at its frame rate. The stream reconnects once then ends "lost" with its own error line;
    the file is classified to its end; exit 1 (a stream was lost)."""
    clip = write_video(tmp_path / "clip.mp4", 45)  # 1.5 s at 30 fps, longer than the stream lives
    server = MjpegServer(frames=15, connections=2, interval=0.02)
    jsonl, summary = tmp_path / "frames.jsonl", tmp_path / "summary.json"
    try:
        rc = _camera(server.url, str(clip), "--pace", "--jsonl", str(jsonl), "--summary", str(summary),
                     "--retries", "3", "--retry-delay", "0.05", "--retry-max-delay", "0.1", "--timeout", "2")
    finally:
        server.close()
    assert rc == 1
    s = json.loads(summary.read_text())
    net, file = s["streams"]
    assert (net["end"], net["reconnects"], net["read"]) == ("lost", 1, 30)
    assert (file["end"], file["read"], file["reconnects"]) == ("end of file", 45, 0)
    records = _lines(jsonl)
    assert net["frames"] == sum(r["stream"] == 0 for r in records) > 0
    assert file["frames"] == sum(r["stream"] == 1 for r in records) > 0
    assert max(r["frame"] for r in records if r["stream"] == 0) >= 15  # classified after the reconnect too
    err = _stderr_lines(capsys)
    assert "1 reconnects" in err[0] and "lost" in err[0] and "end of file" in err[1]
    assert err[3].startswith(f"edge-resnet: error: lost {server.url} after 30 frames") and len(err) == 4


def test_streams_faster_than_the_model_share_it_fairly(tmp_path: Path) -> None:
    """Three paced 120 fps files and a consumer that needs 15 ms per frame (slower than the frames come):
    each batch holds the newest frame of every stream, no stream gets much less than a third of the frames,
    and frames never queue up (one-frame buffers, dropped frames counted)."""
    videos = [write_video(tmp_path / f"{i}.avi", 60, fps=120.0, fourcc="MJPG") for i in range(3)]
    records: list[dict[str, Any]] = []

    def slow(record: dict[str, Any]) -> None:
        records.append(record)
        time.sleep(0.015)

    s = run_streams(CameraConfig(source=tuple(map(str, videos)), run=str(BUNDLE), providers=("CPUExecutionProvider",),
                                 jsonl=None, pace=True), on_result=slow)
    assert s.end == "all streams ended" and [x.end for x in s.streams] == ["end of file"] * 3
    assert all(x.read == 60 and x.frames + x.dropped <= 60 and x.dropped > 0 for x in s.streams), s
    shares = [x.frames / s.frames for x in s.streams]
    assert min(shares) >= 0.25, shares
    assert sum(r["batch"] for r in records) / len(records) > 1.5  # mostly several streams per batch
    for i in range(3):
        frames = [r["frame"] for r in records if r["stream"] == i]
        assert frames == sorted(set(frames))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_with_several_streams_ends_every_stream_cleanly(tmp_path: Path, signum: int) -> None:
    """SIGINT or SIGTERM to the real command with two paced files: exit 0, every stream "interrupted",
    each video finalised with exactly its stream's classified frames, no temp file left."""
    clips = [write_video(tmp_path / "a.mp4", 150), write_video(tmp_path / "b.avi", 150, fourcc="MJPG")]
    jsonl, saved = tmp_path / "frames.jsonl", tmp_path / "ann.avi"
    proc = subprocess.Popen([sys.executable, "-m", "edge_resnet.cli", "camera", *map(str, clips), "--run", str(BUNDLE),
                             *CPU, "--no-display", "--pace", "--jsonl", str(jsonl), "--save", str(saved)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 10):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    counts = collections.Counter(r["stream"] for r in _lines(jsonl))
    lines = [line for line in err.splitlines() if line.startswith("camera: ")]
    assert len(lines) == 3 and lines[2].endswith("; interrupted")
    for i in range(2):
        assert lines[i].startswith(f"camera: [{i}] {clips[i]}: {counts[i]} frames") and "interrupted" in lines[i]
        assert 1 <= counts[i] < 150
        assert len(decode_all(tmp_path / f"ann.stream{i}.avi")) == counts[i]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "ann.stream0.avi", "ann.stream1.avi", "b.avi",
                                                          "frames.jsonl"]


@pytest.mark.parametrize(("args", "match"), [
    (["--display"], r"--display shows one source, got 2; pass --no-display"),
    (["--save", "TMP/out.gif"], r"--save .*out\.gif: use a \.mp4"),
    (["--max-frames", "0"], r"--max-frames must be >= 1"),
])
def test_option_errors_with_several_sources_are_one_line(clips: list[Path], tmp_path: Path, args: list[str],
                                                         match: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    assert cli.main(["camera", str(clips[0]), str(clips[1]), *args, "--run", str(BUNDLE), *CPU]) == 1
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("edge-resnet: error: ") and re.search(match, err[0]), err
    assert list(tmp_path.iterdir()) == []


def test_save_paths_of_several_streams_are_probed_before_the_run(clips: list[Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "ann.mp4"
    assert _camera(str(clips[0]), str(clips[1]), "--save", str(path), "--jsonl", "off") == 1
    err = _stderr_lines(capsys)
    assert err == [f"edge-resnet: error: --save {tmp_path}/afile/ann.stream0.mp4: {tmp_path}/afile is a file, not a "
                   "folder; pass a writable path"]
