"""Must-show: the camera loop keeps up with the model it runs.

On a 640x480 video file made from real photographs (scikit-image's samples), for resnet18 at 224
with the INT8 CPU target on ONNX Runtime:
- end-to-end FPS of `edge-resnet camera` >= 0.9x the pure inference rate of the same backend
  (``backend.run`` on a preprocessed batch of one, same threads);
- pre- plus post-processing <= 10% of inference time (means over the camera run's own per-frame
  figures).

Both resamplers a preprocessing spec offers are measured, each with its own run directory:
runs/resnet18-224 ("pil", torchvision's antialiased resize; the bench uses the same run) and
runs/resnet18-224-opencv ("opencv": cv2.resize, no antialiasing). Random weights, ten digit
classes; speed only. A run is built only when missing: a random resnet18 with jittered BatchNorm
statistics (the same weights for both), exported with every INT8 target, max calibration on 64
digits and the accuracy gate opened (a random net's accuracy means nothing).

    .venv/bin/python benchmarks/camera_fps.py [--frames 300] [--threads 0] [--resampler opencv]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import jitter_batchnorm, machine  # noqa: E402
from edge_resnet.runtime.camera import camera_threads  # noqa: E402

RUNS = {"pil": REPO / "runs" / "resnet18-224", "opencv": REPO / "runs" / "resnet18-224-opencv"}
RUN = RUNS["pil"]
MIN_RATIO = 0.9
MAX_OVERHEAD = 0.10


def ensure_run(run_dir: Path = RUN, resampler: str = "pil") -> Path:
    """``run_dir`` with model.int8.cpu.onnx, built (about two minutes on two cores) if missing."""
    if (run_dir / "manifest.json").is_file() and (run_dir / "model.int8.cpu.onnx").is_file():
        return run_dir
    import torch

    from edge_resnet.contract.preprocess import PreprocessSpec
    from edge_resnet.models import create_model
    from edge_resnet.pipeline import ExportOptions, export_run
    from edge_resnet.training.checkpoint import Checkpoint, save_checkpoint

    print(f"building {run_dir} (random resnet18 at 224, {resampler} resize, INT8 for every target) ...", flush=True)
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10)
    jitter_batchnorm(model, seed=0)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(arch="resnet18", shortcut="B", classes=[str(d) for d in range(10)],
                      preprocessing=replace(PreprocessSpec.imagenet(224), resampler=resampler),
                      state_dict=model.state_dict(),
                      extra={"dataset": "digits", "seed": 0, "note": "random weights, for speed measurements"})
    save_checkpoint(run_dir / "model.pt", ckpt)
    export_run(ExportOptions(model=str(run_dir / "model.pt"), int8=True, target="all", calib_method="max",
                             num_calib=64, tolerance=100.0, batch_size=32))
    return run_dir


def write_video(path: Path, frames: int, fps: float = 30.0) -> Path:
    """A 640x480 video cycling through scikit-image's photographs, each shown for 10 frames."""
    import cv2
    from skimage import data

    photos = [getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")]
    photos = [cv2.resize(np.ascontiguousarray(p[..., :3][..., ::-1]), (640, 480), interpolation=cv2.INTER_AREA)
              for p in photos]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        writer.write(photos[(i // 10) % len(photos)])
    writer.release()
    return path


def pure_inference(run_dir: Path, video: Path, threads: int, runs: int) -> dict[str, float]:
    """ms per ``backend.run`` of one preprocessed frame, the session built as the camera builds it."""
    import cv2

    from edge_resnet.runtime import Classifier

    clf = Classifier.from_run(run_dir, model="int8", providers=["CPUExecutionProvider"], threads=threads)
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok, video
    x = clf.preprocess(frame, order="BGR")
    for _ in range(10):
        clf.backend.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        clf.backend.run(x)
        times.append(1000 * (time.perf_counter() - start))
    return {"mean_ms": statistics.fmean(times), "median_ms": statistics.median(times), "model": clf.model_path.name}


def camera_run(run_dir: Path, video: Path, threads: int, jsonl: Path) -> dict[str, float]:
    """`edge-resnet camera VIDEO --no-display --jsonl FILE --summary FILE` in a child process; its summary."""
    summary = jsonl.with_name("summary.json")
    cmd = [sys.executable, "-m", "edge_resnet.cli", "camera", str(video), "--run", str(run_dir), "--model", "int8",
           "--providers", "CPUExecutionProvider", "--threads", str(threads), "--no-display", "--jsonl", str(jsonl),
           "--summary", str(summary)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"camera run failed ({out.returncode}):\n{out.stderr}")
    result = json.loads(summary.read_text())
    frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for key in ("pre_ms", "infer_ms", "post_ms"):  # per-frame medians, beside the summary's means
        result[f"median_{key}"] = statistics.median(f[key] for f in frames)
    result["lines"] = len(frames)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=300, help="frames in the test video (default: %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=[0, os.cpu_count() or 2],
                   help="ONNX Runtime intra-op thread settings to measure, 0: the camera's default, every core "
                        "but one (default: 0 and all cores)")
    p.add_argument("--runs", type=int, default=300, help="timed backend.run calls per round (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=5, help="rounds per setting, pure inference and camera run "
                                                         "alternating (default: %(default)s)")
    p.add_argument("--resampler", nargs="+", choices=list(RUNS), default=list(RUNS),
                   help="preprocessing resize implementations to measure (default: both)")
    args = p.parse_args()

    run_dirs = {name: ensure_run(RUNS[name], name) for name in args.resampler}
    print(f"machine: {machine()}")
    print(f"video: {args.frames} frames 640x480 (mp4v) from scikit-image photographs; resnet18 224, INT8 CPU "
          f"target (model.int8.cpu.onnx), random weights; ONNX Runtime CPU provider")
    verdicts = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "photos-640x480.mp4", args.frames)
        for name, run_dir in run_dirs.items():
            for threads in args.threads:
                rounds = []
                for _ in range(args.repeat):  # alternate, so drift on a shared machine hits both sides
                    pure = pure_inference(run_dir, video, camera_threads(threads), args.runs)
                    cam = camera_run(run_dir, video, threads, Path(tmp) / "frames.jsonl")
                    assert cam["lines"] == cam["frames"] == args.frames, cam
                    rounds.append((pure, cam))
                verdicts[name, threads] = report(name, threads, rounds)
    print("summary: " + "; ".join(f"{name} resize, threads={camera_threads(t)}: {'PASS' if ok else 'FAIL'}"
                                  for (name, t), ok in verdicts.items()))
    return 0 if all(verdicts.values()) else 1


def report(resampler: str, threads: int, rounds: list[tuple[dict, dict]]) -> bool:
    """Print one setting's rounds and its verdicts (medians over the rounds)."""
    label = (f"{resampler} resize, threads={camera_threads(threads)}"
             + (" (the camera's default)" if threads == 0 else ""))
    ratios, overheads = [], []
    for i, (pure, cam) in enumerate(rounds, 1):
        rate = 1000 / pure["mean_ms"]
        ratios.append(cam["fps"] / rate)
        overheads.append((cam["pre_ms"] + cam["post_ms"]) / cam["infer_ms"])
        print(f"  {label} round {i}: pure inference {rate:.1f}/s ({pure['mean_ms']:.2f} ms mean, "
              f"{pure['median_ms']:.2f} median); camera {cam['fps']:.1f} FPS over {cam['frames']} frames "
              f"({cam['dropped']} dropped); mean pre {cam['pre_ms']:.2f} ms, infer {cam['infer_ms']:.2f} ms, "
              f"post {cam['post_ms']:.3f} ms (medians {cam['median_pre_ms']:.2f} / {cam['median_infer_ms']:.2f} / "
              f"{cam['median_post_ms']:.3f}); ratio {ratios[-1]:.3f}, pre+post {100 * overheads[-1]:.1f}% of infer")
    ratio, overhead = statistics.median(ratios), statistics.median(overheads)
    ok_ratio, ok_overhead = ratio >= MIN_RATIO, overhead <= MAX_OVERHEAD
    print(f"{label}: end-to-end / pure inference {ratio:.3f} (median of {len(rounds)}; target >= {MIN_RATIO}) "
          f"{'PASS' if ok_ratio else 'FAIL'}")
    print(f"{label}: pre+post / inference {100 * overhead:.1f}% (median; target <= {100 * MAX_OVERHEAD:.0f}%) "
          f"{'PASS' if ok_overhead else 'FAIL'}")
    return ok_ratio and ok_overhead


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
