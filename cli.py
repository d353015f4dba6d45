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

    from export.lint import lint_model

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

def _train_default(name: str) -> Any:
    from edge_resnet.training import TrainConfig

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
    return parser


def _calib_methods() -> tuple[str, ...]:
    from calibration.calibrators import METHODS

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
