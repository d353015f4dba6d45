"""The device commands (no torch; Python 3.8 on JetPack 5): lint, quantize, bench, camera, build-engine, verify,
trtexec-cmd, doctor.

Every handler imports what it runs inside itself; building their parsers imports nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_resnet.cli._common import DEFAULT_RUN, BooleanOptionalAction, Bounded, Command, table
from edge_resnet.contract import BENCH_ROWS, EXIT_TOLERANCE
from edge_resnet.errors import EdgeResNetError


def cmd_lint(args: argparse.Namespace) -> int:
    from edge_resnet.export.lint import errors, lint_model, manifest_float_layers

    path = Path(args.onnx)
    float_layers = manifest_float_layers(path)  # our own run: exactly the layers its manifest lists
    found = lint_model(path, float_layers)
    for v in found:
        print(v)
    bad = errors(found)
    if bad:
        print(f"{path}: {len(bad)} violation(s) of TensorRT's explicit-quantization rules", file=sys.stderr)
        return 1
    floats = f"; {len(found)} layer(s) left in float (warnings above)" if found else ""
    listed = " as manifest.json lists" if float_layers is not None and found else ""
    print(f"{path}: clean (INT8 Q/DQ placement fits TensorRT's explicit quantization{floats}{listed})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_resnet.bench import BenchOptions, benchmark_run

    opts = BenchOptions(batches=tuple(args.batch), backends=tuple(args.backends) if args.backends else None,
                        warmup=args.warmup, iterations=args.iterations, min_iterations=args.min_iterations,
                        seconds=args.seconds, threads=args.threads,
                        providers=tuple(args.providers) if args.providers else None, frames=args.frames,
                        top_k=args.top_k, output=args.output, plot=args.plot, skip_missing=args.skip_missing)
    result = benchmark_run(args.run_dir, opts)
    print(table(result.table(), result.header()))
    print(result.summary())
    for line in result.verdicts + result.notes:
        print(line)
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    from edge_resnet import atomic
    from edge_resnet.runtime.camera import CameraConfig, run_camera
    from edge_resnet.runtime.outputs import check_writable_file
    from edge_resnet.runtime.sources import CaptureSettings, RetryPolicy
    from edge_resnet.runtime.streams import run_streams

    config = CameraConfig(
        source=args.source[0] if len(args.source) == 1 else tuple(args.source), run=args.run, model=args.model,
        backend=args.backend, threads=args.threads, providers=tuple(args.providers) if args.providers else None,
        top_k=args.top_k, display=args.display, save=args.save,
        fourcc=args.fourcc, jsonl=None if args.jsonl == "off" else args.jsonl, pace=args.pace,
        max_frames=args.max_frames, capture=CaptureSettings(args.width, args.height, args.fps, args.flip_method),
        retry=RetryPolicy(args.retries, args.retry_delay, args.retry_max_delay, args.timeout))
    config.validate()  # the option errors first, then the --summary path: both before the run
    if args.summary:
        check_writable_file(args.summary, f"--summary {args.summary}")
    if len(args.source) == 1:
        summary: Any = run_camera(config)
        print(f"camera: {summary.line()}", file=sys.stderr)
        messages = [(summary, summary.message)] if summary.message else []
    else:  # several streams: one line each, then the totals
        summary = run_streams(config)
        for line in summary.lines():
            print(f"camera: {line}", file=sys.stderr)
        messages = summary.messages
    for stream, message in messages:
        print(f"edge-resnet: {'error' if stream.exit_code else 'warning'}: {message}", file=sys.stderr)
    if args.summary:
        try:
            atomic.write_json(args.summary, summary.to_dict())
        except OSError as e:  # checked before the run, but the disk can fill or the folder go meanwhile
            raise EdgeResNetError(f"cannot write --summary {args.summary} ({e.strerror or e}); the summary is "
                                  "the camera: line above") from None
    return summary.exit_code


def cmd_quantize(args: argparse.Namespace) -> int:
    from edge_resnet.cli._common import progress_bar
    from edge_resnet.ptq import QuantizeOptions, quantize

    opts = QuantizeOptions(
        model=args.model, calib_data=args.calib_data, output=args.output, num_calib=args.num_calib,
        num_verify=args.num_verify, every=args.every, pace=args.pace, seed=args.seed, calib_method=args.calib_method,
        percentile=args.percentile, tolerance=args.tolerance, quantize_classifier=args.quantize_classifier,
        float_layers=tuple(x for x in (args.float_layers or "").split(",") if x), size=args.size,
        resize=args.resize, mean=_triple(args.mean, "--mean"), std=_triple(args.std, "--std"),
        channel_order=args.channel_order, resampler=args.resampler, labels=args.labels, threads=args.threads,
        budget_mb=args.memory_budget, force=args.force)
    result = quantize(opts, progress=progress_bar)
    calib = result.calibration
    chosen = f" (auto: {', '.join(f'{m} {s:.1f} dB' for m, s in calib.selection.items())})" if calib.selection else ""
    print(f"{result.imported.source_nodes} ONNX nodes imported ({result.imported.folded_bn} BatchNorms folded); "
          f"calibrated on {calib.images} images of {result.data} with {calib.method}{chosen} in "
          f"{result.seconds['calibrate']:.1f} s")
    report = result.report
    print(f"verified on {report.images} held-out images against {report.reference}" + (
        "" if report.labelled else "; no labels (no class folders named after the model's labels): the gate judges "
        "agreement with it, not accuracy"))
    print(table(report.table(), report.HEADER))
    print(f"wrote {result.run_dir} ({', '.join(p.name for p in result.files.values())})")
    return print_verdict(report)


def print_verdict(report: Any) -> int:
    """The accuracy gate's warnings, then its verdict as the last line on stderr; the exit status."""
    for w in report.warnings:
        print(f"edge-resnet: warning: {w}", file=sys.stderr)
    print(f"edge-resnet: {report.verdict_line()}", file=sys.stderr, flush=True)
    return 0 if report.passed else EXIT_TOLERANCE


def _triple(text: str | None, flag: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise EdgeResNetError(f"{flag} takes three comma-separated numbers (R,G,B), got {text!r}")
    return values  # type: ignore[return-value]


def build_options(args: argparse.Namespace) -> Any:
    from edge_resnet.export.build_plan import BuildOptions

    return BuildOptions(precision=args.precision, batch=tuple(args.batch), workspace_mib=args.workspace,
                        dla_core=args.dla, implicit=args.implicit, timing_cache=args.timing_cache,
                        opt_level=args.opt_level)


def _print_check(check: Any) -> int:
    if check.result is None:
        return 0
    print(check.result.summary())
    print(f"wrote {check.report}")
    return 0 if check.result.passed else EXIT_TOLERANCE


def cmd_build_engine(args: argparse.Namespace) -> int:
    from edge_resnet.deploy.device import build_and_check

    check = build_and_check(args.bundle, build_options(args), rebuild=not args.no_rebuild, force=args.force)
    print(f"engine {check.engine} ({check.action})")
    return _print_check(check)


def cmd_verify(args: argparse.Namespace) -> int:
    from edge_resnet.deploy.device import check_model, verify_engine

    if (args.engine is None) == (args.onnx is None):
        raise EdgeResNetError("give exactly one of --engine FILE (a TensorRT engine) or --onnx FILE "
                              "(ONNX Runtime standing in for the engine)")
    if args.engine is not None:
        check = verify_engine(args.bundle, args.engine, rebuild=not args.no_rebuild)
    else:
        check = check_model(args.bundle, args.onnx)
    return _print_check(check)


def cmd_trtexec(args: argparse.Namespace) -> int:
    from edge_resnet.runtime.manifest import load_manifest
    from edge_resnet.export.build_plan import plan_build
    from edge_resnet.environment import probe_system
    from edge_resnet.export.trtexec import command_line

    manifest = load_manifest(args.run)
    gpu = args.gpu if args.gpu is not None else probe_system().gpu
    plan = plan_build(args.trt, build_options(args), set(manifest.files), device=gpu)
    for note in plan.notes:
        print(f"# {note}")
    print(f"# TensorRT {plan.tensorrt}: {plan.precision} from {plan.onnx}" + (
        ", strongly typed (no precision flags)" if plan.strongly_typed else ""))
    print(f"cd {manifest.run_dir}")
    print(command_line(plan, manifest.input_name, manifest.input_shape[1:], gpu or "unknown-gpu"))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    if args.report is None:
        from edge_resnet.deploy.doctor import run_doctor

        for flag, value in (("--bundle", args.bundle), ("--clip", args.clip)):
            if value is not None:
                raise EdgeResNetError(f"{flag} is for --report; add --report OUT.md to run the device path on a bundle")
        diagnosis = run_doctor(args.root)
        if args.json:
            print(json.dumps(diagnosis.to_dict(), indent=1))
        else:
            print(_doctor_header(diagnosis, args.root))
            print("\n".join(diagnosis.lines()))
        return diagnosis.exit_code
    from edge_resnet.deploy.doctor_report import run_report

    report = run_report(args.report, args.bundle, clip=args.clip, seconds=args.seconds, root=args.root)
    if args.json:
        print(json.dumps({**report.diagnosis.to_dict(), "report": str(report.path),
                          "steps": [vars(s) for s in report.steps]}, indent=1))
    else:
        print(_doctor_header(report.diagnosis, args.root))
        print("\n".join(report.diagnosis.lines()))
        for step in report.steps:
            print(f"{step.name}: {step.status} ({step.seconds:.1f} s): {step.summary}")
        print(f"wrote {report.path}")
    return report.exit_code


def _doctor_header(diagnosis: Any, root: str) -> str:
    from edge_resnet import __version__

    b = diagnosis.facts.board
    what = b["model"] if b else "not a Jetson"
    head = f"edge-resnet doctor {__version__}: {what}"
    if root != "/":
        head += (f" (a recorded board: its files from {root}; Python packages and the disk are this machine's, its "
                 "CUDA driver the one its L4T release ships)")
    return head


def add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="int8", choices=["int8", "fp16", "fp32"], help="default: %(default)s")
    p.add_argument("--batch", type=int, action=Bounded, at_least=1, nargs=3, default=[1, 1, 32],
                   metavar=("MIN", "OPT", "MAX"),
                   help="optimization profile over the batch (default: 1 1 32; DLA uses OPT as a fixed batch)")
    p.add_argument("--workspace", type=int, action=Bounded, at_least=1, default=None, metavar="MIB",
                   help="builder workspace limit in MiB (default: TensorRT's)")
    p.add_argument("--dla", type=int, action=Bounded, at_least=0, default=None, metavar="CORE",
                   help="build for this DLA core with GPU fallback (Jetson AGX/NX)")
    p.add_argument("--implicit", action="store_true",
                   help="INT8 from calib.cache (model.int8.implicit.onnx; TensorRT 8.5-10.x; DLA INT8 does this "
                        "anyway)")
    p.add_argument("--timing-cache", default="timing.cache", help="timing cache file, reused and updated "
                                                                  "(default: %(default)s in the bundle)")
    p.add_argument("--opt-level", type=int, action=Bounded, at_least=0, at_most=5, default=None,
                   help="builder optimization level 0-5 (TensorRT 8.6+)")


def _lint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", help="the .onnx file")


def _bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", default=str(DEFAULT_RUN), help="run directory (default: %(default)s)")
    p.add_argument("--batch", type=int, action=Bounded, at_least=1, nargs="+", default=[1, 8, 32],
                   help="batch sizes (default: 1 8 32)")
    p.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                   help=f"any of {', '.join(BENCH_ROWS)} (default: every one the run has)")
    p.add_argument("--warmup", type=int, action=Bounded, at_least=0, default=5,
                   help="untimed iterations per batch size (default: %(default)s)")
    p.add_argument("--iterations", type=int, action=Bounded, at_least=1, default=200,
                   help="at most this many timed iterations per batch "
                        "size (default: %(default)s)")
    p.add_argument("--min-iterations", type=int, action=Bounded, at_least=1, default=10,
                   help="at least this many, even past --seconds "
                        "(default: %(default)s)")
    p.add_argument("--seconds", type=float, action=Bounded, above=0, default=2.0,
                   help="per batch size: stop after this long, once "
                        "--min-iterations are done (default: %(default)s)")
    p.add_argument("--threads", type=int, action=Bounded, at_least=0, default=0,
                   help="intra-op threads (default: 0, the library's own)")
    p.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime execution providers, best first "
                                                                "(default: the best of CUDA and CPU)")
    p.add_argument("--frames", default=None, help="folder of images, an image or a video file to preprocess "
                                                  "(default: the bundled 8x8 digits)")
    p.add_argument("--top-k", type=int, action=Bounded, at_least=1, default=5,
                   help="classes decoded per image (default: %(default)s)")
    p.add_argument("--output", default=None, help="folder for bench.json and bench.png (default: the run directory)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write bench.png")
    p.add_argument("--skip-missing", action="store_true", help="bench the models that are there when one the "
                                                               "manifest lists is missing (refused without it)")


def _camera_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="+", help="camera index (0), /dev/videoN, video file, rtsp:// or http(s):// URL, "
                                             "csi://N (Jetson CSI camera) or a GStreamer pipeline ending in appsink; "
                                             "several: their newest frames classified in one batch, one JSON line "
                                             "per frame with its stream")
    p.add_argument("--run", default=str(DEFAULT_RUN), help="run directory (default: %(default)s)")
    p.add_argument("--model", default="int8", help="int8, int8-cpu, fp32, fp16 or an .onnx path (default: "
                                                   "%(default)s, the INT8 target that suits the provider)")
    p.add_argument("--backend", default="auto", help="auto (the run's TensorRT engine when one loads here, else "
                                                     "ONNX Runtime), tensorrt or onnxruntime (default: %(default)s)")
    p.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime execution providers, best first "
                                                                "(default: the best available)")
    p.add_argument("--threads", type=int, action=Bounded, at_least=0, default=0,
                   help="ONNX Runtime intra-op threads (default: 0, every core but "
                        "one, which decodes and preprocesses)")
    p.add_argument("--top-k", type=int, action=Bounded, at_least=1, default=5,
                   help="classes per JSON line (default: %(default)s)")
    p.add_argument("--display", action=BooleanOptionalAction, default=None,
                   help="show a window with the overlay (default: when a display and a GUI OpenCV exist)")
    p.add_argument("--save", default=None, metavar="VIDEO", help="write the annotated video (.mp4, .avi, .mkv); "
                                                                 "renamed into place when the run ends; with "
                                                                 "several sources one per stream, VIDEO.streamN.mp4")
    p.add_argument("--fourcc", default=None, help="codec for --save (default: mp4v, MJPG for .avi)")
    p.add_argument("--jsonl", default="-", metavar="FILE", help="one JSON line per frame to FILE, - for stdout, "
                                                                "off for none (default: -)")
    p.add_argument("--summary", default=None, metavar="FILE", help="also write the summary as JSON to FILE")
    p.add_argument("--pace", action="store_true", help="files: play at the file's frame rate and drop frames the "
                                                       "model cannot keep up with, as with a camera")
    p.add_argument("--max-frames", type=int, action=Bounded, at_least=1, default=None,
                   help="stop after this many classified frames (with several sources: of each stream)")
    p.add_argument("--retries", type=int, action=Bounded, at_least=0, default=10,
                   help="reconnect attempts for a live source that stops, and "
                        "open attempts for a network one (default: %(default)s)")
    p.add_argument("--retry-delay", type=float, action=Bounded, at_least=0, default=0.5,
                   help="seconds before the first retry, doubling "
                        "(default: %(default)s)")
    p.add_argument("--retry-max-delay", type=float, action=Bounded, at_least=0, default=10.0,
                   help="longest wait between retries "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=float, action=Bounded, above=0, default=10.0,
                   help="network open/read timeout in seconds "
                        "(default: %(default)s)")
    p.add_argument("--width", type=int, action=Bounded, at_least=1, default=None,
                   help="capture width for cameras (CSI default 1280)")
    p.add_argument("--height", type=int, action=Bounded, at_least=1, default=None,
                   help="capture height for cameras (CSI default 720)")
    p.add_argument("--fps", type=int, action=Bounded, at_least=1, default=None,
                   help="capture frame rate for cameras (CSI default 30)")
    p.add_argument("--flip-method", type=int, action=Bounded, at_least=0, at_most=7, default=0,
                   help="CSI cameras: nvvidconv flip-method (default: 0)")


def _quantize_options(p: argparse.ArgumentParser) -> None:
    from edge_resnet.contract import CALIBRATORS

    p.add_argument("model", help="an FP32 ONNX ResNet-family classifier (our model.fp32.onnx, torchvision, timm, ...)")
    p.add_argument("--calib-data", required=True, metavar="SOURCE",
                   help="a folder of images (recursive), a video file, or a live source as the camera app takes it: "
                        "camera index (0), /dev/videoN, csi://N, rtsp://..., a GStreamer pipeline")
    p.add_argument("--output", default=None, help="run directory (default: <model folder>/<model name>-int8)")
    p.add_argument("--num-calib", type=int, action=Bounded, at_least=1, default=512,
                   help="calibration images (default: %(default)s)")
    p.add_argument("--num-verify", type=int, action=Bounded, at_least=1, default=256,
                   help="held-out images that verify (a folder holds out at "
                        "most a quarter; default: %(default)s)")
    p.add_argument("--every", type=int, action=Bounded, at_least=1, default=1,
                   help="video and live sources: take every k-th frame read "
                        "(default: 1)")
    p.add_argument("--pace", action="store_true", help="video files: read at the file's frame rate, newest frame "
                                                       "only, as from a camera")
    p.add_argument("--seed", type=int, action=Bounded, at_least=0, default=0,
                   help="folders: the seed of the held-out split (default: 0)")
    p.add_argument("--calib-method", default="auto", choices=["auto", *CALIBRATORS],
                   help="auto scores every calibrator on held-out images and keeps the best (default: %(default)s)")
    p.add_argument("--percentile", type=float, action=Bounded, above=0, at_most=100, default=99.99,
                   help="for --calib-method percentile "
                        "(default: %(default)s)")
    p.add_argument("--tolerance", type=float, action=Bounded, at_least=0, at_most=100, default=1.0,
                   help="allowed top-1 drop (points) against the source "
                        "model (default: %(default)s)")
    p.add_argument("--quantize-classifier", action="store_true", help="quantize the final FC layer too (default: "
                                                                      "float, as Model Optimizer leaves it)")
    p.add_argument("--float-layers", default=None, metavar="LAYER[,LAYER]", help="ONNX node names to keep in float")
    p.add_argument("--size", type=int, action=Bounded, at_least=1, default=None,
                   help="input side (without a manifest.json beside the model; "
                        "default: the model's)")
    p.add_argument("--resize", type=int, action=Bounded, at_least=1, default=None,
                   help="shorter side before the centre crop (default: "
                        "size * 256 / 224)")
    p.add_argument("--mean", default=None, metavar="R,G,B", help="per-channel mean of [0, 1] pixels (default: "
                                                                 "ImageNet's)")
    p.add_argument("--std", default=None, metavar="R,G,B", help="per-channel std (default: ImageNet's)")
    p.add_argument("--channel-order", default=None, choices=["RGB", "BGR"], help="default: RGB")
    p.add_argument("--resampler", default=None, choices=["pil", "opencv"], help="resize implementation "
                                                                                "(default: pil)")
    p.add_argument("--labels", default=None, help="a text file with one class name per line (default: the "
                                                  "manifest's, else the class indices)")
    p.add_argument("--threads", type=int, action=Bounded, at_least=0, default=0,
                   help="ONNX Runtime intra-op threads (default: 0, its own)")
    p.add_argument("--memory-budget", type=float, action=Bounded, above=0, default=64.0, metavar="MB",
                   help="at most this much of intermediate tensors per calibration step (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace another model's run at --output")


def _build_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle folder or .tar.gz (or a run directory)")
    add_build_options(p)
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding an engine built for "
                                                             "another system")
    p.add_argument("--force", action="store_true", help="rebuild even when the engine matches")


def _verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder or .tar.gz")
    p.add_argument("--engine", default=None, help="a TensorRT engine built from the bundle")
    p.add_argument("--onnx", default=None, help="an ONNX model of the bundle, run by ONNX Runtime instead")
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding an engine whose key "
                                                             "does not match this system")


def _trtexec_cmd_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", default=str(DEFAULT_RUN), help="run directory or bundle (default: %(default)s)")
    p.add_argument("--trt", required=True, help="TensorRT version, e.g. 8.5, 10.3, 11.4")
    p.add_argument("--gpu", default=None, help="GPU name for the engine file name (default: this machine's)")
    add_build_options(p)


def _doctor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the checks as JSON (format edge-resnet/doctor-1)")
    p.add_argument("--report", default=None, metavar="OUT.md",
                   help="also run the device path once (build-engine, verify, bench, a 10-second camera run) on "
                        "--bundle and write one Markdown report to attach to a bug")
    p.add_argument("--bundle", default=None, help="with --report: the bundle folder or .tar.gz (default: the first "
                                                  "of resnet20-digits-bundle[.tar.gz], runs/resnet20-digits-bundle"
                                                  "[.tar.gz])")
    p.add_argument("--clip", default=None, help="with --report: the video the camera step plays (default: a clip "
                                                "made from the bundle's validation images)")
    p.add_argument("--seconds", type=float, default=10.0, help="with --report: length of the camera run "
                                                               "(default: %(default)s)")
    p.add_argument("--root", default="/", help="read the Jetson's system files (etc/nv_tegra_release, "
                                               "proc/device-tree, sys, commands.json) under this folder: a "
                                               "recorded board (default: /, this machine)")


# name -> (help, description, options, handler), in the order `edge-resnet --help` lists them
COMMANDS = {
    "lint": Command(
        "check an INT8 ONNX model against TensorRT's Q/DQ placement rules",
        "Reports every violation by node name; exit status 1 if there is any.",
        _lint_options, cmd_lint),
    "quantize": Command(
        "INT8-quantize an FP32 ONNX ResNet (no PyTorch): calibrate on images, a video or a live camera",
        "Imports the ONNX classifier (BatchNorm folded), calibrates with ONNX Runtime on a folder of images, a "
        "video file or a camera (csi://0, rtsp://..., through the camera app's reader), writes the run "
        "directory export --int8 writes (model.fp32/int8/int8.cpu/int8.implicit.onnx, calib.json, calib.cache, "
        "report, manifest.json) and verifies every file against the source model on held-out images. Exit "
        "status 3 when an INT8 file fails the tolerance.",
        _quantize_options, cmd_quantize),
    "bench": Command(
        "latency, throughput, memory (and power on a Jetson) of every model in a run directory",
        "Times PyTorch FP32 (model.pt, where torch is installed), ONNX Runtime FP32/FP16/INT8 (both "
        "targets) and the run's TensorRT engines over a batch sweep, each in its own process: latency "
        "mean/p50/p90/p99, throughput, pre-/post-processing, peak memory, the environment. Prints a "
        "table, writes bench.json and bench.png (latency vs batch) and says when INT8 is not faster.",
        _bench_options, cmd_bench),
    "camera": Command(
        "classify a camera, video file, stream or GStreamer pipeline in real time",
        "Classifies the newest frame of a live source (frames it cannot keep up with are dropped and "
        "counted), every frame of a file; reconnects to live sources with backoff. Writes an overlay "
        "(window, --save video) and one JSON line per frame; a summary line on stderr at the end. "
        "Ctrl-C ends the run with exit status 0; a live source that does not come back, 1.",
        _camera_options, cmd_camera),
    "build-engine": Command(
        "on the device: verify a bundle, build its TensorRT engine, check accuracy",
        "Verifies every checksum, builds the engine with the installed TensorRT (or "
        "reuses one whose key matches this system), runs the validation set through it "
        "and writes device_report.json. Exit status 3 when the engine fails the tolerance.",
        _build_engine_options, cmd_build_engine),
    "verify": Command(
        "check an engine (or an ONNX model standing in for it) on a bundle's "
        "validation set",
        "Compares top-1 accuracy and agreement with the stored FP32 logits under the "
        "bundle's tolerance; writes device_report.json; exit status 3 on failure.",
        _verify_options, cmd_verify),
    "trtexec-cmd": Command(
        "print the trtexec command lines for a TensorRT version",
        "The lines build_engine.sh runs for that version: flags per TensorRT "
        "(10.x: --int8 --fp16 on the Q/DQ graph; 11.x: none), DLA, shapes, timing cache.",
        _trtexec_cmd_options, cmd_trtexec),
    "doctor": Command(
        "the device self-check: board, JetPack, TensorRT, cuda-python, ONNX Runtime, DLA, camera, power, disk",
        "One line per check (ok, warn, fail or n/a), what was found and the fix, then what will work here "
        "(GPU and DLA engines, INT8 modes, camera sources). Exit status 1 when a check fails. Off a Jetson it "
        "says so and checks Python, ONNX Runtime, OpenCV and the disk. With --report, runs build-engine, "
        "verify, bench and a camera run on a bundle and writes one report.",
        _doctor_options, cmd_doctor),
}
