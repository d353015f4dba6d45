"""Must-show: the multi-stream table. N streams in one batched `edge-resnet camera` process against N
separate single-stream processes, on the same run and the same clips, interleaved.

Target (issue 25, item 3): 4 streams in one batched process classify at least 1.2x the frames per second
of 4 separate single-stream processes (CPU, resnet18 INT8, streams faster than the model), and no stream
gets under 20% of the classified frames.

Setup: the run of benchmarks/camera_fps.py (resnet18 at 224, random weights, INT8 CPU target; built when
missing, OpenCV resampler by default), N 640x480 mp4 clips of scikit-image's photographs played at their
frame rate (``--pace``), ONNX Runtime's CPU provider, every process at the camera's default threads unless
``--threads``. The streams together deliver ``--input-fps`` frames per second (120 by default: each of 4
streams at 30 fps, as cameras deliver; 1 stream at 120), the same decoding work in every setting and
more than the model classifies, so every stream drops frames in both modes and the figure is the
model's, not the clips' rate. ``--cpus 1`` pins every camera process to one core: on a machine shared
with other work, N processes otherwise take N scheduler shares where one process takes one.

Measured from the JSON lines, over the window in which every stream of the run was being classified (the
latest first result to the earliest last result; separate processes start a little apart): total
classified frames per second, each stream's share of them, and latency (read to result) p50/p90.

    .venv/bin/python benchmarks/camera_streams.py [--streams 1 2 4] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import machine  # noqa: E402
from benchmarks.camera_fps import RUNS, ensure_run, write_video  # noqa: E402

MIN_RATIO = 1.2
MIN_SHARE = 0.20


def camera_cmd(run_dir: Path, clips: list[Path], jsonl: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "edge_resnet.cli", "camera", *map(str, clips), "--run", str(run_dir),
            "--model", "int8", "--providers", "CPUExecutionProvider", "--threads", str(threads), "--pace",
            "--no-display", "--jsonl", str(jsonl)]


def run_mode(mode: str, run_dir: Path, clips: list[Path], tmp: Path, threads: int,
             cpus: list[int] | None = None) -> dict[str, float]:
    """One process for every clip ("batched") or one per clip at once ("separate"); the window's figures."""
    if mode == "batched":
        jobs = [(camera_cmd(run_dir, clips, tmp / "batched.jsonl", threads), tmp / "batched.jsonl")]
    else:
        jobs = [(camera_cmd(run_dir, [clip], tmp / f"separate{i}.jsonl", threads), tmp / f"separate{i}.jsonl")
                for i, clip in enumerate(clips)]
    def pin() -> None:  # in the child, before it runs: the same cores for either mode
        if cpus:
            os.sched_setaffinity(0, cpus)

    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=pin) for cmd, _ in jobs]
    cpu = sample_cpu(procs)
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{mode} camera run failed ({proc.returncode}):\n{err}")
    # (stream, time of the result, latency ms) of every classified frame
    done: list[tuple[int, float, float]] = []
    for i, (_, jsonl) in enumerate(jobs):
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            done.append((r.get("stream", i), r["time"] + r["latency_ms"] / 1000, r["latency_ms"]))
    return window(done, len(clips), cpu)


def sample_cpu(procs: list[subprocess.Popen]) -> list[tuple[float, float]]:
    """(wall time, CPU seconds used so far by all of ``procs``) every 50 ms until they have all exited: the
    CPU they spent inside the measuring window is interpolated from it (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    last = {p.pid: 0.0 for p in procs}
    samples = []
    while True:
        for p in procs:
            with contextlib.suppress(OSError, IndexError):  # exited: keep its last reading
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                last[p.pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime of every thread
        samples.append((time.time(), sum(last.values())))
        if all(p.poll() is not None for p in procs):
            return samples
        time.sleep(0.05)


def window(done: list[tuple[int, float, float]], streams: int, cpu: list[tuple[float, float]]) -> dict[str, float]:
    firsts = [min(t for s, t, _ in done if s == k) for k in range(streams)]
    lasts = [max(t for s, t, _ in done if s == k) for k in range(streams)]
    start, end = max(firsts), min(lasts)
    inside = [(s, t, lat) for s, t, lat in done if start <= t <= end]
    counts = [sum(1 for s, _, _ in inside if s == k) for k in range(streams)]
    latencies = sorted(lat for _, _, lat in inside)
    times, used = [t for t, _ in cpu], [c for _, c in cpu]
    cpu_seconds = float(np.interp(end, times, used) - np.interp(start, times, used))
    return {"fps": len(inside) / (end - start), "per_cpu_s": len(inside) / cpu_seconds,
            "cores": cpu_seconds / (end - start), "min_share": min(counts) / len(inside), "seconds": end - start,
            "p50": latencies[len(latencies) // 2], "p90": latencies[int(0.9 * (len(latencies) - 1))]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4], help="stream counts (default: 1 2 4)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, every setting once per round (default: 3)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each clip (default: %(default)s)")
    p.add_argument("--input-fps", type=float, default=120.0,
                   help="frames per second all streams deliver together; each plays at this / N (default: 120)")
    p.add_argument("--threads", type=int, default=0, help="--threads of the separate processes (default: 0, the "
                                                          "camera's default: every core but one)")
    p.add_argument("--batched-threads", type=int, default=None, help="--threads of the batched process (default: "
                                                                     "as --threads)")
    p.add_argument("--cpus", type=int, nargs="+", default=None,
                   help="pin every camera process to these CPUs (e.g. 1: both modes get the same one core, whatever "
                        "their thread counts; default: no pinning)")
    p.add_argument("--resampler", choices=list(RUNS), default="opencv", help="the run's resize (default: opencv)")
    args = p.parse_args()

    run_dir = ensure_run(RUNS[args.resampler], args.resampler)
    print(f"machine: {machine()}; load average at start {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"run: {run_dir.relative_to(REPO)} (resnet18 224, INT8 CPU target, random weights); clips 640x480 mp4v, "
          f"{args.seconds:.0f} s, played at their frame rate ({args.input_fps:.0f} frames/s over all streams); "
          f"--threads {args.threads} (separate), {args.threads if args.batched_threads is None else args.batched_threads} "
          "(batched)" + (f"; every camera process pinned to CPU(s) {args.cpus}" if args.cpus else ""))
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clips = {n: [write_video(tmp / f"n{n}-{i}.mp4", round(args.seconds * args.input_fps / n),
                                 fps=args.input_fps / n) for i in range(n)] for n in args.streams}
        for r in range(args.rounds):
            for n in args.streams:
                modes = ["batched"] if n == 1 else ["batched", "separate"]
                for mode in modes if r % 2 == 0 else modes[::-1]:  # alternate which goes first
                    threads = args.batched_threads if mode == "batched" and args.batched_threads is not None \
                        else args.threads
                    res = run_mode(mode, run_dir, clips[n], tmp, threads, args.cpus)
                    results.setdefault((n, mode), []).append(res)
                    print(f"  round {r + 1}, {n} stream(s), {mode}: {res['fps']:.1f} FPS over {res['seconds']:.1f} s, "
                          f"{res['per_cpu_s']:.1f} per CPU-second ({res['cores']:.2f} cores), "
                          f"min share {100 * res['min_share']:.1f}%, latency p50 {res['p50']:.1f} ms, "
                          f"p90 {res['p90']:.1f} ms; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average at end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| streams | mode | total classified FPS | frames per CPU-second (cores used) | per-stream share (min) "
          "| latency p50 / p90 |")
    print("|---|---|---|---|---|---|")
    for (n, mode), rounds in results.items():
        med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        spread = f"{min(x['fps'] for x in rounds):.1f}-{max(x['fps'] for x in rounds):.1f}"
        label = "one process" if n == 1 else ("one process, batched" if mode == "batched" else f"{n} processes")
        print(f"| {n} | {label} | {med['fps']:.1f} ({spread}) | {med['per_cpu_s']:.1f} ({med['cores']:.2f}) | "
              f"{100 * med['min_share']:.1f}% "
              f"(ideal {100 / n:.0f}%) | {med['p50']:.0f} / {med['p90']:.0f} ms |")
    ok = True
    for n in args.streams:
        if n == 1:
            continue
        ratios = [b["fps"] / s["fps"] for b, s in zip(results[n, "batched"], results[n, "separate"])]
        ratio = statistics.median(ratios)
        per_cpu = statistics.median(b["per_cpu_s"] / s["per_cpu_s"]
                                    for b, s in zip(results[n, "batched"], results[n, "separate"]))
        shares = min(x["min_share"] for x in results[n, "batched"])
        line = (f"{n} streams: batched / separate {ratio:.2f}x (rounds {', '.join(f'{x:.2f}' for x in ratios)}); "
                f"per CPU-second {per_cpu:.2f}x; smallest stream share in the batched process {100 * shares:.1f}%")
        if n == 4:
            passed = ratio >= MIN_RATIO and shares >= MIN_SHARE
            ok = ok and passed
            line += f" (target >= {MIN_RATIO}x and >= {100 * MIN_SHARE:.0f}%) {'PASS' if passed else 'FAIL'}"
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
