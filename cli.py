"""The ``edge-resnet`` command: parse options, call one library function, print its result.

Every EdgeResNetError becomes one line on stderr and exit code 1; argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edge_resnet import __version__
from edge_resnet.errors import EdgeResNetError

log = logging.getLogger("edge_resnet.cli")
DEFAULT_RUN = Path("runs") / "resnet20-digits"


# ---------------------------------------------------------------- output helpers

def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _format_eval(result: Any, title: str) -> str:
    out = [f"{title}: top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  "
           f"({result.correct}/{result.n} images, loss {result.loss:.4f})"]
    rows = [(r["class"], r["images"], r["correct"], "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%")
            for r in result.per_class()]
    out.append(_table(rows, ("class", "images", "correct", "accuracy")))
    if len(result.classes) <= 20:
        names = [c[:6] for c in result.classes]
        conf = [[names[i], *row] for i, row in enumerate(result.confusion)]
        out.append("confusion matrix (rows: true class, columns: predicted)")
        out.append(_table(conf, ("", *names)))
    return "\n".join(out)


class _ProgressMonitor:
    """A tqdm bar per epoch with loss, accuracy and images/s."""

    def __init__(self) -> None:
        self.bar = None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                        dynamic_ncols=True, file=sys.stderr, disable=None)

    def step(self, loss: float, top1: float, images_per_s: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{100 * top1:.1f}%", img_s=f"{images_per_s:.0f}")

    def epoch_end(self, s: Any) -> None:
        self.bar.close()
        print(f"epoch {s.epoch:>3}/{s.epochs}  lr {s.lr:.4f}  loss {s.train_loss:.4f}  "
              f"train {100 * s.train_top1:6.2f}%  val {100 * s.val_top1:6.2f}%  "
              f"{s.images_per_s:6.0f} img/s  {s.seconds:5.1f}s{'  best' if s.best else ''}", flush=True)


# ---------------------------------------------------------------- commands

def cmd_models(args: argparse.Namespace) -> int:
    from edge_resnet.models import count_macs, count_params, create_model, get_spec, list_models

    rows, records = [], []
    for name in list_models():
        spec = get_spec(name)
        model = create_model(name, num_classes=1000 if spec.family == "imagenet" else 10)
        params, macs = count_params(model), count_macs(model, spec.input_size)
        records.append({"name": name, "family": spec.family, "depth": spec.depth, "residual": spec.residual,
                        "input_size": spec.input_size, "params": params, "flops": macs})
        rows.append((name, spec.family, spec.depth, "residual" if spec.residual else "plain",
                     f"{spec.input_size}x{spec.input_size}", f"{params / 1e6:.2f}M", f"{macs / 1e9:.3f}G"))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(_table(rows, ("name", "family", "depth", "kind", "input", "params", "FLOPs")))
        print("FLOPs are multiply-adds per image at the input size (the paper's convention); "
              "ImageNet nets counted with 1000 classes, CIFAR nets with 10.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edge_resnet.training import TrainConfig, train

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "resume", "verbose")}
    if "output" in given:
        given["output"] = str(given["output"])
    cfg = TrainConfig(**given)
    result = train(cfg, resume=args.resume, explicit=set(given), monitor=_ProgressMonitor())
    if not result.is_main:
        return 0
    print(result.summary)
    print(_format_eval(result.test, f"test (best epoch {result.best_epoch})"))
    print(f"trained in {result.seconds:.1f}s; checkpoint {result.checkpoint}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from edge_resnet.experiments import run_degradation

    result = run_degradation(data=args.data, models=args.models, shortcut=args.shortcut, epochs=args.epochs,
                             seed=args.seed, output=args.output, batch_size=args.batch_size,
                             limit_train=args.limit_train, monitor=_ProgressMonitor())
    rows = [(c.model, f"{c.final_train_error:.2f}%", f"{c.tail_train_error:.2f}%", f"{c.val_error[-1]:.2f}%",
             f"{c.test_error:.2f}%", f"{c.seconds:.0f}s") for c in result.curves.values()]
    print(_table(rows, ("model", "train err", "train err (last 20%)", "val err", "test err", "time")))
    for c in result.comparisons:
        print(f"{c.question} {c.statement}")
    print(f"wrote {result.output}/: " + ", ".join(p.name for p in result.files.values())
          + f" ({result.seconds / 60:.1f} min)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_resnet import atomic
    from edge_resnet.training.evaluate import eval_json_path, evaluate_checkpoint

    model = Path(args.model)
    if not model.exists() and args.model == str(DEFAULT_RUN / "model.pt"):
        raise EdgeResNetError(f"no checkpoint at {model}; train one with `edge-resnet train` or pass --model")
    result, _ckpt, data = evaluate_checkpoint(model, data=args.data, split=args.split,
                                              batch_size=args.batch_size, device=args.device)
    print(_format_eval(result, f"{data.name} {args.split}"))
    out = Path(args.json) if args.json else eval_json_path(model.parent, data.name, args.split)
    atomic.write_json(out, {"checkpoint": str(model), "split": args.split, "dataset": data.name,
                            **result.to_dict()})
    print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def _progress_bar(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    """A tqdm bar for the library's progress callbacks (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True,
              file=sys.stderr, disable=None) as t:
        yield t.update


def cmd_export(args: argparse.Namespace) -> int:
    from edge_resnet.pipeline import EXIT_TOLERANCE, ExportOptions, export_run
    from edge_resnet.verify import Report

    opts = ExportOptions(
        model=args.model, data=args.data, int8=args.int8, fp16=args.fp16, calib_data=args.calib_data,
        calib_method=args.calib_method, percentile=args.percentile, num_calib=args.num_calib,
        calib_seed=args.calib_seed, every=args.every, calib=args.calib, target=args.target,
        tolerance=args.tolerance, output=args.output, batch_size=args.batch_size, device=args.device)
    result = export_run(opts, progress=_progress_bar, train_monitor=_ProgressMonitor())
    report = result.report
    calib = result.calibration
    if calib is not None:
        how = "reused" if result.calibration_reused else f"computed in {calib.seconds:.1f}s"
        chosen = f" (auto chose {calib.method})" if calib.requested == "auto" else ""
        print(f"calibration: {calib.method}{chosen} on {calib.images} images of {calib.data} ({how})")
    print(f"verification on {report.dataset} {report.split} ({report.images} images):")
    print(_table(report.table(), Report.HEADER))
    if report.sim_agreement is not None:
        print(f"simulated vs ONNX Runtime INT8 (TensorRT target): {100 * report.sim_agreement:.2f}% top-1 agreement, "
              f"logits {report.sim_sqnr_db:.1f} dB apart")
    if "tensorrt" in result.lint:
        violations = result.lint["tensorrt"]
        print("QDQ lint (TensorRT rules): " + (f"{len(violations)} violations" if violations else "clean"))
    print(f"wrote {result.run_dir}/: " + ", ".join(p.name for p in result.files.values()))
    if not report.passed:
        for f in report.failures:
            print(f"edge-resnet: accuracy check failed: {f}", file=sys.stderr)
        return EXIT_TOLERANCE
    print(f"accuracy within tolerance ({report.tolerance:g} top-1 points)")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    import onnx

    from edge_resnet.export.lint import lint_model

    path = Path(args.onnx)
    if not path.is_file():
        raise EdgeResNetError(f"no ONNX file at {path}; pass the path of a .onnx model")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError; any failure here means "not ONNX"
        raise EdgeResNetError(f"{path} is not a readable ONNX model ({type(e).__name__}); "
                              "pass a .onnx file written by an ONNX exporter") from None
    if not model.graph.node:  # protobuf reads an empty or foreign file as an empty model
        raise EdgeResNetError(f"{path} is not a readable ONNX model (it has no graph nodes); "
                              "pass a .onnx file written by an ONNX exporter")
    violations = lint_model(model)
    for v in violations:
        print(v)
    if violations:
        print(f"{path}: {len(violations)} violation(s) of TensorRT's explicit-quantization rules", file=sys.stderr)
        return 1
    print(f"{path}: clean (INT8 Q/DQ placement fits TensorRT's explicit quantization)")
    return 0


# ---------------------------------------------------------------- parser

# ---- cmd_bench

def cmd_bench(args: argparse.Namespace) -> int:
    from edge_resnet.bench import BenchOptions, benchmark_run

    opts = BenchOptions(batches=tuple(args.batch), backends=tuple(args.backends) if args.backends else None,
                        warmup=args.warmup, iterations=args.iterations, min_iterations=args.min_iterations,
                        seconds=args.seconds, threads=args.threads,
                        providers=tuple(args.providers) if args.providers else None, frames=args.frames,
                        top_k=args.top_k, output=args.output, plot=args.plot)
    result = benchmark_run(args.run_dir, opts)
    print(_table(result.table(), result.header()))
    print(result.summary())
    for line in result.verdicts + result.notes:
        print(line)
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


# ---- cmd_camera

def cmd_camera(args: argparse.Namespace) -> int:
    from edge_resnet import atomic
    from edge_resnet.runtime.camera import CameraConfig, run_camera
    from edge_resnet.runtime.outputs import check_writable_file
    from edge_resnet.runtime.sources import CaptureSettings, RetryPolicy

    config = CameraConfig(
        source=args.source, run=args.run, model=args.model, backend=args.backend, threads=args.threads,
        providers=tuple(args.providers) if args.providers else None, top_k=args.top_k, display=args.display,
        save=args.save,
        fourcc=args.fourcc, jsonl=None if args.jsonl == "off" else args.jsonl, pace=args.pace,
        max_frames=args.max_frames, capture=CaptureSettings(args.width, args.height, args.fps, args.flip_method),
        retry=RetryPolicy(args.retries, args.retry_delay, args.retry_max_delay, args.timeout))
    config.validate()  # the option errors first, then the --summary path: both before the run
    if args.summary:
        check_writable_file(args.summary, f"--summary {args.summary}")
    summary = run_camera(config)
    print(f"camera: {summary.line()}", file=sys.stderr)
    if summary.message:
        print(f"edge-resnet: {'error' if summary.exit_code else 'warning'}: {summary.message}", file=sys.stderr)
    if args.summary:
        try:
            atomic.write_json(args.summary, summary.to_dict())
        except OSError as e:  # checked before the run, but the disk can fill or the folder go meanwhile
            raise EdgeResNetError(f"cannot write --summary {args.summary} ({e.strerror or e}); the summary is "
                                  "the camera: line above") from None
    return summary.exit_code


# ---- cmd_engines

def _build_options(args: argparse.Namespace) -> Any:
    from edge_resnet.export.build_plan import BuildOptions

    return BuildOptions(precision=args.precision, batch=tuple(args.batch), workspace_mib=args.workspace,
                        dla_core=args.dla, implicit=args.implicit, timing_cache=args.timing_cache,
                        opt_level=args.opt_level)


def _print_check(check: Any) -> int:
    from edge_resnet.deploy import EXIT_TOLERANCE  # not the pipeline's: that imports torch, the device has none

    if check.result is None:
        return 0
    print(check.result.summary())
    print(f"wrote {check.report}")
    return 0 if check.result.passed else EXIT_TOLERANCE


def cmd_bundle(args: argparse.Namespace) -> int:
    from edge_resnet.deploy import make_bundle

    result = make_bundle(args.run, args.output, data=args.data, samples=args.samples, build=_build_options(args))
    print(f"bundle {result.folder} ({', '.join(result.files)})")
    print(f"archive {result.archive} ({result.archive.stat().st_size / 1e6:.1f} MB), sha256 in "
          f"{result.archive.name}.sha256")
    print(f"validation set: {result.samples} test images, FP32 top-1 {100 * result.fp32_top1:.2f}% "
          f"({result.seconds:.1f} s)")
    print(f"on the device: edge-resnet build-engine {result.folder.name}  (or ./build_engine.sh with trtexec)")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from edge_resnet.deploy import build_and_check

    check = build_and_check(args.bundle, _build_options(args), rebuild=not args.no_rebuild, force=args.force)
    print(f"engine {check.engine} ({check.action})")
    return _print_check(check)


def cmd_verify(args: argparse.Namespace) -> int:
    from edge_resnet.deploy import check_model, verify_engine

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
    from edge_resnet.export.engine_key import probe_system
    from edge_resnet.export.trtexec import command_line

    manifest = load_manifest(args.run)
    plan = plan_build(args.trt, _build_options(args), set(manifest.files))
    gpu = args.gpu if args.gpu is not None else probe_system().gpu
    for note in plan.notes:
        print(f"# {note}")
    print(f"# TensorRT {plan.tensorrt}: {plan.precision} from {plan.onnx}" + (
        ", strongly typed (no precision flags)" if plan.strongly_typed else ""))
    print(f"cd {manifest.run_dir}")
    print(command_line(plan, manifest.input_name, manifest.input_shape[1:], gpu or "unknown-gpu"))
    return 0


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="int8", choices=["int8", "fp16", "fp32"], help="default: %(default)s")
    p.add_argument("--batch", type=int, nargs=3, default=[1, 1, 32], metavar=("MIN", "OPT", "MAX"),
                   help="optimization profile over the batch (default: 1 1 32; DLA uses OPT as a fixed batch)")
    p.add_argument("--workspace", type=int, default=None, metavar="MIB",
                   help="builder workspace limit in MiB (default: TensorRT's)")
    p.add_argument("--dla", type=int, default=None, metavar="CORE",
                   help="build for this DLA core with GPU fallback (Jetson AGX/NX)")
    p.add_argument("--implicit", action="store_true",
                   help="INT8 from calib.cache on the FP32 graph (TensorRT 8.5-10.x; DLA INT8 does this anyway)")
    p.add_argument("--timing-cache", default="timing.cache", help="timing cache file, reused and updated "
                                                                  "(default: %(default)s in the bundle)")
    p.add_argument("--opt-level", type=int, default=None, help="builder optimization level 0-5 (TensorRT 8.6+)")




def _train_default(name: str) -> Any:
    try:
        from edge_resnet.training import TrainConfig
    except ImportError:  # no PyTorch (a Jetson running build-engine/verify): train cannot run there anyway
        return "needs PyTorch"

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]


def _add_train_options(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # options not given stay out of the namespace: TrainConfig's default applies

    def opt(flag: str, help: str, **kw: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        if "action" not in kw or kw["action"] is argparse.BooleanOptionalAction:
            help = f"{help} (default: {_train_default(dest)})"
        p.add_argument(flag, default=S, help=help, **kw)

    opt("--model", "registry name (see `edge-resnet models`) or an edge-resnet checkpoint to fine-tune")
    opt("--data", "ImageFolder or CIFAR-10 folder; the bundled digits when left out")
    opt("--output", "run directory (default: runs/<model>-<dataset>)", action="store")
    opt("--shortcut", "paper shortcut option A, B or C", choices=["A", "B", "C", "a", "b", "c"])
    opt("--weights", "weights file to start from: torchvision .pth, timm or edge-resnet checkpoint")
    opt("--num-classes", "expected class count; the head is replaced when the weights have another", type=int)
    opt("--input-size", "network input side in pixels", type=int)
    opt("--resampler", "resize implementation, in training and on the device: pil (antialiased, torchvision's) "
                       "or opencv (bilinear, no antialiasing, ~10x cheaper per camera frame; needs cv2) "
                       "(default: pil for a new model, the checkpoint's when fine-tuning)",
        choices=["pil", "opencv"], action="store")
    opt("--epochs", "training epochs", type=int)
    opt("--batch-size", "global batch size", type=int)
    opt("--lr", "peak learning rate", type=float)
    opt("--momentum", "SGD momentum", type=float)
    opt("--weight-decay", "SGD weight decay", type=float)
    opt("--schedule", "learning-rate schedule", choices=["cosine", "step"])
    opt("--warmup-epochs", "linear warm-up epochs", type=float)
    opt("--augment", "training augmentation", choices=["auto", "cifar", "imagenet", "none"])
    opt("--hflip", "random horizontal flips (default: only for flip-invariant data)",
        action=argparse.BooleanOptionalAction)
    opt("--device", "auto, cpu or cuda", choices=["auto", "cpu", "cuda"])
    opt("--amp", "mixed precision, CUDA only (default: on with CUDA)", action=argparse.BooleanOptionalAction)
    opt("--channels-last", "channels_last memory format (default: on with CUDA)",
        action=argparse.BooleanOptionalAction)
    opt("--workers", "DataLoader worker processes (default: 0 on CPU, 4 on CUDA)", type=int, action="store")
    opt("--seed", "random seed (weights, split, batches, augmentation)", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-resnet", description="ResNet classifiers from training to an INT8 engine on a Jetson.")
    parser.add_argument("--version", action="version", version=f"edge-resnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the architectures with parameters and FLOPs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a ResNet (defaults: resnet20 on the bundled digits)",
                       description="Train with SGD; checkpoints every epoch (last.pt) and the best (model.pt). "
                                   "Runs under `torchrun --nproc-per-node N` unchanged.")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("experiment", help="reproduce a finding of the paper (degradation: plain vs ResNet depth)",
                       description="degradation: train plain and residual nets of two depths with one budget and "
                                   "seed; write degradation.json/.png/.md with per-epoch errors and a verdict.")
    p.add_argument("name", choices=["degradation"], help="the experiment")
    p.add_argument("--data", default=None, help="ImageFolder or CIFAR-10 folder (default: the bundled digits)")
    p.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"],
                   help="CIFAR model names (default: plain20 plain56 resnet20 resnet56)")
    p.add_argument("--shortcut", default="A", choices=["A", "B"], help="for the ResNets (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--limit-train", type=int, default=None, help="train on about this many images (default: all)")
    p.add_argument("--output", default="runs/degradation", help="default: %(default)s")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("--model", default=str(DEFAULT_RUN / "model.pt"), help="checkpoint (default: %(default)s)")
    p.add_argument("--data", default=None, help="dataset folder (default: the bundled digits)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--json", default=None, help="JSON report path (default: eval-<dataset>-<split>.json "
                                                "beside the checkpoint)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export", help="fold, calibrate, write FP32/INT8 ONNX and the TensorRT cache, verify accuracy",
        description="Writes the run directory: model.fp32.onnx, and with --int8 calib.json, calib.cache, "
                    "model.int8.onnx (TensorRT) and model.int8.cpu.onnx (ONNX Runtime CPU), then runs every "
                    "form on the held-out test split and writes report.json/report.md and manifest.json. "
                    "Exit status 3 when an accuracy check fails (the report is still written).")
    p.add_argument("--model", default=None, help="checkpoint (model.pt or its run directory) or a registry name; "
                                                 "default: runs/resnet20-digits/model.pt, trained first if missing")
    p.add_argument("--data", default=None, help="dataset whose test split verifies (default: the bundled digits)")
    p.add_argument("--int8", action="store_true", help="calibrate and write the INT8 models")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (TensorRT 11 strongly typed)")
    p.add_argument("--calib-data", default=None, help="calibration images: dataset, folder (recursive) or "
                                                      "video file (default: the train split of --data)")
    p.add_argument("--calib-method", default="auto", choices=["auto", *_calib_methods()],
                   help="range calibrator; auto keeps the one whose simulated INT8 logits are closest to "
                        "FP32 on the calibration images (default: %(default)s)")
    p.add_argument("--percentile", type=float, default=99.99, help="for --calib-method percentile "
                                                                   "(default: %(default)s)")
    p.add_argument("--num-calib", type=int, default=512, help="calibration images (default: %(default)s)")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration sample (default: %(default)s)")
    p.add_argument("--every", type=int, default=1, help="video calibration: use every k-th frame (default: 1)")
    p.add_argument("--calib", default=None, help="use this calib.json instead of calibrating (must match the model)")
    p.add_argument("--target", default="all", choices=["all", "tensorrt", "cpu"],
                   help="INT8 flavours: tensorrt = model.int8.onnx (explicit Q/DQ for TensorRT), cpu = "
                        "model.int8.cpu.onnx (fastest on ONNX Runtime CPU); default: %(default)s")
    p.add_argument("--tolerance", type=float, default=1.0, help="allowed top-1 drop in points (default: %(default)s)")
    p.add_argument("--output", default=None, help="run directory (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="PyTorch side (default: %(default)s)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("lint", help="check an INT8 ONNX model against TensorRT's Q/DQ placement rules",
                       description="Reports every violation by node name; exit status 1 if there is any.")
    p.add_argument("onnx", help="the .onnx file")
    p.set_defaults(func=cmd_lint)

    # ---- bench (edge-resnet bench)
    from edge_resnet.bench.benchmark import BACKENDS

    p = sub.add_parser(
        "bench", help="latency, throughput, memory (and power on a Jetson) of every model in a run directory",
        description="Times PyTorch FP32 (model.pt, where torch is installed), ONNX Runtime FP32/FP16/INT8 (both "
                    "targets) and the run's TensorRT engines over a batch sweep, each in its own process: latency "
                    "mean/p50/p90/p99, throughput, pre-/post-processing, peak memory, the environment. Prints a "
                    "table, writes bench.json and bench.png (latency vs batch) and says when INT8 is not faster.")
    p.add_argument("run_dir", nargs="?", default=str(DEFAULT_RUN), help="run directory (default: %(default)s)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default: 1 8 32)")
    p.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                   help=f"any of {', '.join(BACKENDS)} (default: every one the run has)")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations per batch size (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=200, help="at most this many timed iterations per batch "
                                                               "size (default: %(default)s)")
    p.add_argument("--min-iterations", type=int, default=10, help="at least this many, even past --seconds "
                                                                  "(default: %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0, help="per batch size: stop after this long, once "
                                                              "--min-iterations are done (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (default: 0, the library's own)")
    p.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime execution providers, best first "
                                                                "(default: the best of CUDA and CPU)")
    p.add_argument("--frames", default=None, help="folder of images, an image or a video file to preprocess "
                                                  "(default: the bundled 8x8 digits)")
    p.add_argument("--top-k", type=int, default=5, help="classes decoded per image (default: %(default)s)")
    p.add_argument("--output", default=None, help="folder for bench.json and bench.png (default: the run directory)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write bench.png")
    p.set_defaults(func=cmd_bench)
    # ---- end bench

    # ---- camera (edge-resnet camera)
    p = sub.add_parser(
        "camera", help="classify a camera, video file, stream or GStreamer pipeline in real time",
        description="Classifies the newest frame of a live source (frames it cannot keep up with are dropped and "
                    "counted), every frame of a file; reconnects to live sources with backoff. Writes an overlay "
                    "(window, --save video) and one JSON line per frame; a summary line on stderr at the end. "
                    "Ctrl-C ends the run with exit status 0; a live source that does not come back, 1.")
    p.add_argument("source", help="camera index (0), /dev/videoN, video file, rtsp:// or http(s):// URL, csi://N "
                                  "(Jetson CSI camera) or a GStreamer pipeline ending in appsink")
    p.add_argument("--run", default=str(DEFAULT_RUN), help="run directory (default: %(default)s)")
    p.add_argument("--model", default="int8", help="int8, int8-cpu, fp32, fp16 or an .onnx path (default: "
                                                   "%(default)s, the INT8 target that suits the provider)")
    p.add_argument("--backend", default="auto", help="auto (the run's TensorRT engine when one loads here, else "
                                                     "ONNX Runtime), tensorrt or onnxruntime (default: %(default)s)")
    p.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime execution providers, best first "
                                                                "(default: the best available)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: 0, every core but "
                                                          "one, which decodes and preprocesses)")
    p.add_argument("--top-k", type=int, default=5, help="classes per JSON line (default: %(default)s)")
    p.add_argument("--display", action=argparse.BooleanOptionalAction, default=None,
                   help="show a window with the overlay (default: when a display and a GUI OpenCV exist)")
    p.add_argument("--save", default=None, metavar="VIDEO", help="write the annotated video (.mp4, .avi, .mkv); "
                                                                 "renamed into place when the run ends")
    p.add_argument("--fourcc", default=None, help="codec for --save (default: mp4v, MJPG for .avi)")
    p.add_argument("--jsonl", default="-", metavar="FILE", help="one JSON line per frame to FILE, - for stdout, "
                                                                "off for none (default: -)")
    p.add_argument("--summary", default=None, metavar="FILE", help="also write the summary as JSON to FILE")
    p.add_argument("--pace", action="store_true", help="files: play at the file's frame rate and drop frames the "
                                                       "model cannot keep up with, as with a camera")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many classified frames")
    p.add_argument("--retries", type=int, default=10, help="reconnect attempts for a live source that stops, and "
                                                           "open attempts for a network one (default: %(default)s)")
    p.add_argument("--retry-delay", type=float, default=0.5, help="seconds before the first retry, doubling "
                                                                  "(default: %(default)s)")
    p.add_argument("--retry-max-delay", type=float, default=10.0, help="longest wait between retries "
                                                                       "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="network open/read timeout in seconds "
                                                               "(default: %(default)s)")
    p.add_argument("--width", type=int, default=None, help="capture width for cameras (CSI default 1280)")
    p.add_argument("--height", type=int, default=None, help="capture height for cameras (CSI default 720)")
    p.add_argument("--fps", type=int, default=None, help="capture frame rate for cameras (CSI default 30)")
    p.add_argument("--flip-method", type=int, default=0, help="CSI cameras: nvvidconv flip-method (default: 0)")
    p.set_defaults(func=cmd_camera)
    # ---- end camera

    # ---- engines (build-engine, trtexec-cmd, bundle, verify)
    p = sub.add_parser("bundle", help="write the Jetson bundle (ONNX, calib.cache, validation set, build_engine.sh) "
                                      "and its .tar.gz",
                       description="Checks the run's files against its manifest, draws a validation set from the "
                                   "held-out test split with the FP32 logits for it, and writes <run>-bundle/ and "
                                   "<run>-bundle.tar.gz beside the run.")
    p.add_argument("run", nargs="?", default=str(DEFAULT_RUN), help="run directory (default: %(default)s)")
    p.add_argument("--output", default=None, help="bundle folder (default: <run>-bundle beside the run)")
    p.add_argument("--data", default=None, help="the dataset the model was trained on (default: the bundled digits)")
    p.add_argument("--samples", type=int, default=256, help="validation samples (default: %(default)s)")
    _add_build_options(p)
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("build-engine", help="on the device: verify a bundle, build its TensorRT engine, check accuracy",
                       description="Verifies every checksum, builds the engine with the installed TensorRT (or "
                                   "reuses one whose key matches this system), runs the validation set through it "
                                   "and writes device_report.json. Exit status 3 when the engine fails the tolerance.")
    p.add_argument("bundle", help="bundle folder or .tar.gz (or a run directory)")
    _add_build_options(p)
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding an engine built for "
                                                             "another system")
    p.add_argument("--force", action="store_true", help="rebuild even when the engine matches")
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("verify", help="check an engine (or an ONNX model standing in for it) on a bundle's "
                                      "validation set",
                       description="Compares top-1 accuracy and agreement with the stored FP32 logits under the "
                                   "bundle's tolerance; writes device_report.json; exit status 3 on failure.")
    p.add_argument("--bundle", required=True, help="bundle folder or .tar.gz")
    p.add_argument("--engine", default=None, help="a TensorRT engine built from the bundle")
    p.add_argument("--onnx", default=None, help="an ONNX model of the bundle, run by ONNX Runtime instead")
    p.add_argument("--no-rebuild", action="store_true", help="fail instead of rebuilding an engine whose key "
                                                             "does not match this system")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("trtexec-cmd", help="print the trtexec command lines for a TensorRT version",
                       description="The lines build_engine.sh runs for that version: flags per TensorRT "
                                   "(10.x: --int8 --fp16 on the Q/DQ graph; 11.x: none), DLA, shapes, timing cache.")
    p.add_argument("run", nargs="?", default=str(DEFAULT_RUN), help="run directory or bundle (default: %(default)s)")
    p.add_argument("--trt", required=True, help="TensorRT version, e.g. 8.5, 10.3, 11.4")
    p.add_argument("--gpu", default=None, help="GPU name for the engine file name (default: this machine's)")
    _add_build_options(p)
    p.set_defaults(func=cmd_trtexec)
    # ---- end engines
    return parser


def _calib_methods() -> tuple[str, ...]:
    try:
        from edge_resnet.calibration.calibrators import METHODS
    except ImportError:  # no PyTorch (a Jetson): export cannot run there; a test keeps this equal to METHODS
        return ("max", "percentile", "entropy", "mse")

    return METHODS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except EdgeResNetError as e:
        print(f"edge-resnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-resnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: silence the final flush instead of a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
