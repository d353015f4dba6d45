"""The workstation commands (PyTorch: the `train` extra): models, train, experiment, eval, export, bundle.

Every handler imports the torch side inside itself; building their parsers imports nothing heavy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from edge_resnet.cli._common import (DEFAULT_RUN, BooleanOptionalAction, Bounded, Command, ProgressMonitor,
                                     format_eval, progress_bar, table)
from edge_resnet.cli.device import add_build_options, build_options, print_verdict
from edge_resnet.contract import CALIBRATORS
from edge_resnet.contract.files import FILES, checkpoint_reference
from edge_resnet.errors import EdgeResNetError


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
        print(table(rows, ("name", "family", "depth", "kind", "input", "params", "FLOPs")))
        print("FLOPs are multiply-adds per image at the input size (the paper's convention); "
              "ImageNet nets counted with 1000 classes, CIFAR nets with 10.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from edge_resnet.training import TrainConfig, train

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "resume", "verbose")}
    if "output" in given:
        given["output"] = str(given["output"])
    cfg = TrainConfig(**given)
    result = train(cfg, resume=args.resume, explicit=set(given), monitor=ProgressMonitor())
    if not result.is_main:
        return 0
    print(result.summary)
    print(format_eval(result.test, f"test (best epoch {result.best_epoch})"))
    print(f"trained in {result.seconds:.1f}s; checkpoint {result.checkpoint}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from edge_resnet.experiments import run_degradation

    result = run_degradation(data=args.data, models=args.models, shortcut=args.shortcut, epochs=args.epochs,
                             seed=args.seed, output=args.output, batch_size=args.batch_size,
                             limit_train=args.limit_train, monitor=ProgressMonitor())
    rows = [(c.model, f"{c.final_train_error:.2f}%", f"{c.tail_train_error:.2f}%", f"{c.val_error[-1]:.2f}%",
             f"{c.test_error:.2f}%", f"{c.seconds:.0f}s") for c in result.curves.values()]
    print(table(rows, ("model", "train err", "train err (last 20%)", "val err", "test err", "time")))
    for c in result.comparisons:
        print(f"{c.question} {c.statement}")
    print(f"wrote {result.output}/: " + ", ".join(p.name for p in result.files.values())
          + f" ({result.seconds / 60:.1f} min)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_resnet import atomic
    from edge_resnet.training.evaluate import eval_json_path, evaluate_checkpoint

    model = checkpoint_reference(args.model)
    if model is None:
        raise EdgeResNetError(f"--model {args.model} names an architecture, not trained weights; pass a checkpoint "
                              "(model.pt) or its run directory")
    if not model.exists() and args.model == str(DEFAULT_RUN / FILES["checkpoint"]):
        raise EdgeResNetError(f"no checkpoint at {model}; train one with `edge-resnet train` or pass --model")
    if not model.exists() and Path(args.model).is_dir():
        raise EdgeResNetError(f"--model {args.model} is a folder without a {FILES['checkpoint']}; pass a checkpoint "
                              "or the run directory that holds one")
    if args.json:  # before the evaluation, which may take minutes
        atomic.check_writable_file(args.json, f"--json {args.json}")
    result, _ckpt, data = evaluate_checkpoint(model, data=args.data, split=args.split,
                                              batch_size=args.batch_size, device=args.device)
    print(format_eval(result, f"{data.name} {args.split}"))
    out = Path(args.json) if args.json else eval_json_path(model.parent, data.name, args.split)
    try:
        atomic.write_json(out, {"checkpoint": str(model), "split": args.split, "dataset": data.name,
                                **result.to_dict()})
    except OSError as e:  # beside the checkpoint: a read-only folder (or a disk that filled up meanwhile)
        raise EdgeResNetError(f"cannot write {out} ({e.strerror or e}); the result is printed above, "
                              "pass --json FILE to save it elsewhere") from None
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edge_resnet.pipeline import ExportOptions, export_run

    opts = ExportOptions(
        model=args.model, data=args.data, int8=args.int8, fp16=args.fp16, calib_data=args.calib_data,
        calib_method=args.calib_method, percentile=args.percentile, num_calib=args.num_calib,
        calib_seed=args.calib_seed, every=args.every, calib=args.calib, target=args.target,
        tolerance=args.tolerance, output=args.output, batch_size=args.batch_size, device=args.device,
        force=args.force, quantize_classifier=args.quantize_classifier, fallback_max=args.fallback_max,
        float_layers=tuple(x for x in (args.float_layers or "").split(",") if x), threads=args.threads,
        equalize=args.equalize)
    result = export_run(opts, progress=progress_bar, train_monitor=ProgressMonitor())
    return _print_export(result, args.tolerance)


def _print_export(result: Any, tolerance: float) -> int:
    """The export's (and QAT's) summary; the exit status of the accuracy gate."""
    from edge_resnet.accuracy import Report

    report = result.report
    calib = result.calibration
    if calib is not None and not calib.qat:
        how = "reused" if result.calibration_reused else f"computed in {calib.seconds:.1f}s"
        chosen = f" (auto chose {calib.method})" if calib.requested == "auto" else ""
        print(f"calibration: {calib.method}{chosen} on {calib.images} images of {calib.data} ({how})")
        eq = calib.equalization
        if eq:
            sel = eq.get("selection")
            print("cross-layer equalization: " + ("applied" if eq.get("applied") else "not applied")
                  + (" (auto: " + ", ".join(f"{k} {'identical' if v is None else format(v, '.2f') + ' dB'}"
                                           for k, v in sel.items()) + f" on {eq.get('judged_on')})" if sel
                     else f" (--equalize {eq.get('requested')})"))
    print(f"verification on {report.dataset} {report.split} ({report.images} images):")
    print(table(report.table(), Report.HEADER))
    if report.sim_agreement is not None:
        print(f"simulated vs ONNX Runtime INT8 (TensorRT target): {100 * report.sim_agreement:.2f}% top-1 agreement, "
              f"logits {report.sim_sqnr_db:.1f} dB apart")
    if result.float_layers:
        print("kept in float: " + ", ".join(f"{k} ({v})" for k, v in result.float_layers.items()))
    if result.fallback is not None and result.fallback.steps[0].top1_drop > tolerance:
        print(f"mixed-precision fallback on {result.fallback.data}: {result.fallback.reason}")
    if "tensorrt" in result.lint:
        violations = result.lint["tensorrt"]
        floats = len(result.lint_warnings.get("tensorrt", []))
        print("QDQ lint (TensorRT rules): " + (f"{len(violations)} violations" if violations else "clean")
              + (f" ({floats} layer(s) deliberately float, as the manifest lists)" if floats else ""))
    print(f"wrote {result.run_dir}/: " + ", ".join(p.name for p in result.files.values()))
    return print_verdict(report)


def cmd_qat(args: argparse.Namespace) -> int:
    from edge_resnet.qat import QATOptions, qat_run

    opts = QATOptions(run=args.run, output=args.output, data=args.data, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, learn_scales=args.learn_scales, scale_lr=args.scale_lr,
                      tolerance=args.tolerance,
                      device=args.device, threads=args.threads, force=args.force)

    def on_epoch(r: dict) -> None:
        print(f"epoch {int(r['epoch'])}/{args.epochs}  loss {r['train_loss']:.4g}  held-out logit SQNR "
              f"{r['held_out_sqnr_db']:.2f} dB", flush=True)

    result = qat_run(opts, progress=progress_bar, on_epoch=on_epoch)
    q = result.calibration.qat
    print(f"QAT from {q['started_from']['run']} ({q['started_from']['method']} calibration) on {q['judged_on']}: "
          f"logit SQNR {q['sqnr_db_before']:.2f} dB before, {q['sqnr_db_after']:.2f} dB after "
          f"(kept epoch {q['best_epoch']})")
    return _print_export(result, result.report.tolerance)


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from edge_resnet.analysis import sensitivity_run

    if args.images is not None and args.images < 1:
        raise EdgeResNetError(f"--images must be >= 1, got {args.images}")
    report, files, note = sensitivity_run(args.run, data=args.data, target=args.target, images=args.images,
                                          batch_size=args.batch_size, device=args.device)
    header, rows = report.table()
    print(report.to_markdown().splitlines()[0])
    print(table(rows, header))
    print("leaving one layer in float helps most for: " + ", ".join(report.ranking()[:5]))
    if note:
        print(note)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from edge_resnet.deploy.bundle import make_bundle

    result = make_bundle(args.run, args.output, data=args.data, samples=args.samples, build=build_options(args),
                         force=args.force)
    print(f"bundle {result.folder} ({', '.join(result.files)})")
    print(f"archive {result.archive} ({result.archive.stat().st_size / 1e6:.1f} MB), sha256 in "
          f"{result.archive.name}.sha256")
    print(f"validation set: {result.samples} test images, FP32 top-1 {100 * result.fp32_top1:.2f}% "
          f"({result.seconds:.1f} s)")
    print(f"on the device: edge-resnet build-engine {result.folder.name}  (or ./build_engine.sh with trtexec)")
    return 0


def _train_default(name: str) -> Any:
    try:
        from edge_resnet.training import TrainConfig
    except ImportError:  # no PyTorch (a Jetson running build-engine/verify): train cannot run there anyway
        return "needs PyTorch"

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]


def _train_options(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # options not given stay out of the namespace: TrainConfig's default applies

    def opt(flag: str, help: str, **kw: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        if kw.get("action", Bounded) in (Bounded, BooleanOptionalAction) and "(default:" not in help:
            help = f"{help} (default: {_train_default(dest)})"
        p.add_argument(flag, default=S, help=help, **kw)

    opt("--model", "registry name (see `edge-resnet models`), or an edge-resnet checkpoint (model.pt or its run directory) to fine-tune")
    opt("--data", "ImageFolder or CIFAR-10 folder; the bundled digits when left out")
    opt("--output", "run directory (default: runs/<model>-<dataset>)", action="store")
    opt("--shortcut", "paper shortcut option A, B or C", choices=["A", "B", "C", "a", "b", "c"])
    opt("--weights", "weights file to start from: torchvision .pth, timm or edge-resnet checkpoint")
    opt("--num-classes", "expected class count; the head is replaced when the weights have another", type=int,
        action=Bounded, at_least=1)
    opt("--input-size", "network input side in pixels", type=int, action=Bounded, at_least=1)
    opt("--resampler", "resize implementation, in training and on the device: pil (antialiased, torchvision's) "
                       "or opencv (bilinear, no antialiasing, ~10x cheaper per camera frame; needs cv2) "
                       "(default: pil for a new model, the checkpoint's when fine-tuning)",
        choices=["pil", "opencv"], action="store")
    opt("--epochs", "training epochs", type=int, action=Bounded, at_least=1)
    opt("--batch-size", "global batch size", type=int, action=Bounded, at_least=1)
    opt("--lr", "peak learning rate", type=float, action=Bounded, above=0)
    opt("--momentum", "SGD momentum", type=float, action=Bounded, at_least=0, below=1)
    opt("--weight-decay", "SGD weight decay", type=float, action=Bounded, at_least=0)
    opt("--schedule", "learning-rate schedule", choices=["cosine", "step"])
    opt("--warmup-epochs", "linear warm-up epochs", type=float, action=Bounded, at_least=0)
    opt("--augment", "training augmentation", choices=["auto", "cifar", "imagenet", "none"])
    opt("--hflip", "random horizontal flips (default: only for flip-invariant data)",
        action=BooleanOptionalAction)
    opt("--device", "auto, cpu or cuda", choices=["auto", "cpu", "cuda"])
    opt("--amp", "mixed precision, CUDA only (default: on with CUDA)", action=BooleanOptionalAction)
    opt("--channels-last", "channels_last memory format (default: on with CUDA)",
        action=BooleanOptionalAction)
    opt("--workers", "DataLoader worker processes (default: 0 on CPU, 4 on CUDA)", type=int, action=Bounded, at_least=0)
    opt("--seed", "random seed (weights, split, batches, augmentation)", type=int, action=Bounded, at_least=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")


def _models_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _experiment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=["degradation"], help="the experiment")
    p.add_argument("--data", default=None, help="ImageFolder or CIFAR-10 folder (default: the bundled digits)")
    p.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"],
                   help="CIFAR model names (default: plain20 plain56 resnet20 resnet56)")
    p.add_argument("--shortcut", default="A", choices=["A", "B"], help="for the ResNets (default: %(default)s)")
    p.add_argument("--epochs", type=int, action=Bounded, at_least=1, default=30, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, action=Bounded, at_least=1, default=128, help="default: %(default)s")
    p.add_argument("--seed", type=int, action=Bounded, at_least=0, default=0, help="default: %(default)s")
    p.add_argument("--limit-train", type=int, action=Bounded, at_least=1, default=None,
                   help="train on about this many images (default: all)")
    p.add_argument("--output", default="runs/degradation", help="default: %(default)s")


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(DEFAULT_RUN / FILES["checkpoint"]), help="checkpoint (model.pt or its run directory; default: %(default)s)")
    p.add_argument("--data", default=None, help="dataset folder (default: the bundled digits)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: %(default)s")
    p.add_argument("--batch-size", type=int, action=Bounded, at_least=1, default=256, help="default: %(default)s")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--json", default=None, help="JSON report path (default: eval-<dataset>-<split>.json "
                                                "beside the checkpoint)")


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint (model.pt or its run directory) or a registry name; "
                                                 "default: runs/resnet20-digits/model.pt, trained first if missing")
    p.add_argument("--data", default=None, help="dataset whose test split verifies (default: the bundled digits)")
    p.add_argument("--int8", action="store_true", help="calibrate and write the INT8 models")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (TensorRT 11 strongly typed)")
    p.add_argument("--calib-data", default=None, help="calibration images: dataset, folder (recursive) or "
                                                      "video file (default: the train split of --data)")
    p.add_argument("--calib-method", default="auto", choices=["auto", *CALIBRATORS],
                   help="range calibrator; auto keeps the one whose simulated INT8 logits are closest to "
                        "FP32 on the validation split (default: %(default)s)")
    p.add_argument("--percentile", type=float, action=Bounded, above=0, at_most=100, default=99.99,
                   help="for --calib-method percentile "
                        "(default: %(default)s)")
    p.add_argument("--num-calib", type=int, action=Bounded, at_least=1, default=512,
                   help="calibration images (default: %(default)s)")
    p.add_argument("--calib-seed", type=int, action=Bounded, at_least=0, default=0,
                   help="seed of the calibration sample (default: %(default)s)")
    p.add_argument("--every", type=int, action=Bounded, at_least=1, default=1,
                   help="video calibration: use every k-th frame (default: 1)")
    p.add_argument("--calib", default=None, help="use this calib.json instead of calibrating (must match the model)")
    p.add_argument("--target", default="all", choices=["all", "tensorrt", "cpu"],
                   help="INT8 flavours: tensorrt = model.int8.onnx (explicit Q/DQ for TensorRT), cpu = "
                        "model.int8.cpu.onnx (fastest on ONNX Runtime CPU); default: %(default)s")
    p.add_argument("--tolerance", type=float, action=Bounded, at_least=0, at_most=100, default=1.0,
                   help="allowed top-1 drop in points (default: %(default)s)")
    p.add_argument("--output", default=None, help="run directory (default: the checkpoint's)")
    p.add_argument("--force", action="store_true", help="export into an --output that holds another model's run, "
                                                        "replacing that run's files (refused without it)")
    p.add_argument("--batch-size", type=int, action=Bounded, at_least=1, default=64, help="default: %(default)s")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="PyTorch side (default: %(default)s)")
    p.add_argument("--quantize-classifier", action="store_true",
                   help="quantize the final FC layer too (default: it stays float, as NVIDIA Model Optimizer leaves it)")
    p.add_argument("--float-layers", default=None, metavar="LAYER[,LAYER]",
                   help="keep these layers (module paths, see `edge-resnet sensitivity`) in float in both INT8 files")
    p.add_argument("--fallback-max", type=int, action=Bounded, at_least=0, default=3,
                   help="when INT8 misses --tolerance on the validation split, leave up to this many of the most "
                        "sensitive layers in float, one at a time (0: off; default: %(default)s)")
    p.add_argument("--threads", type=int, action=Bounded, at_least=1, default=None,
                   help="CPU threads for PyTorch and ONNX Runtime (default: theirs; 1 is often fastest on a busy CPU)")
    p.add_argument("--equalize", default="auto", choices=["auto", "on", "off"],
                   help="cross-layer equalization of the folded model before calibration (exact in FP32); auto "
                        "calibrates with and without and keeps the one closer to FP32 on the validation split "
                        "(default: %(default)s)")


def _qat_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory of an INT8 export (edge-resnet export --int8): model.pt, calib.json, manifest")
    p.add_argument("--output", default=None, help="the QAT run directory (default: <run>-qat beside the run; never "
                                                  "the run itself)")
    p.add_argument("--data", default=None, help="dataset whose train split fine-tunes and test split verifies "
                                                "(default: the bundled one the model was trained on)")
    p.add_argument("--epochs", type=int, action=Bounded, at_least=1, default=3, help="default: %(default)s")
    p.add_argument("--lr", type=float, action=Bounded, above=0, default=1e-4,
                   help="Adam learning rate of the weights and biases "
                        "(default: %(default)s)")
    p.add_argument("--scale-lr", type=float, action=Bounded, at_least=0, default=0.03,
                   help="Adam learning rate of the log activation ranges: about the largest relative change "
                        "of a range per step (default: %(default)s; 0.1 to repair a badly clipped calibration)")
    p.add_argument("--batch-size", type=int, action=Bounded, at_least=1, default=64, help="default: %(default)s")
    p.add_argument("--learn-scales", action=BooleanOptionalAction, default=True,
                   help="train the activation ranges too (LSQ); --no-learn-scales keeps the calibrated ones "
                        "(default: on)")
    p.add_argument("--tolerance", type=float, action=Bounded, at_least=0, at_most=100, default=None,
                   help="allowed top-1 drop in points (default: the export's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--threads", type=int, action=Bounded, at_least=1, default=None,
                   help="CPU threads for PyTorch and ONNX Runtime")
    p.add_argument("--force", action="store_true", help="write into an --output that holds another model's run")


def _sensitivity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory with model.pt and calib.json (after `edge-resnet export --int8`)")
    p.add_argument("--data", default=None, help="dataset (default: the bundled one the model was trained on)")
    p.add_argument("--target", default="tensorrt", choices=["tensorrt", "cpu"], help="placement (default: %(default)s)")
    p.add_argument("--images", type=int, action=Bounded, at_least=1, default=None,
                   help="at most this many validation images (default: up to 2048)")
    p.add_argument("--batch-size", type=int, action=Bounded, at_least=1, default=64, help="default: %(default)s")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")


def _bundle_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", default=str(DEFAULT_RUN), help="run directory (default: %(default)s)")
    p.add_argument("--output", default=None, help="bundle folder (default: <run>-bundle beside the run)")
    p.add_argument("--data", default=None, help="the dataset the model was trained on (default: the bundled digits)")
    p.add_argument("--samples", type=int, action=Bounded, at_least=1, at_most=5000, default=256,
                   help="validation samples (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace a bundle of another model at --output "
                                                        "(refused without it)")
    add_build_options(p)


# name -> (help, description, options, handler), in the order `edge-resnet --help` lists them
COMMANDS = {
    "models": Command(
        "list the architectures with parameters and FLOPs",
        None,
        _models_options, cmd_models),
    "train": Command(
        "train a ResNet (defaults: resnet20 on the bundled digits)",
        "Train with SGD; checkpoints every epoch (last.pt) and the best (model.pt). "
        "Runs under `torchrun --nproc-per-node N` unchanged.",
        _train_options, cmd_train),
    "experiment": Command(
        "reproduce a finding of the paper (degradation: plain vs ResNet depth)",
        "degradation: train plain and residual nets of two depths with one budget and "
        "seed; write degradation.json/.png/.md with per-epoch errors and a verdict.",
        _experiment_options, cmd_experiment),
    "eval": Command(
        "top-1/top-5, per-class accuracy and confusion matrix of a checkpoint",
        None,
        _eval_options, cmd_eval),
    "export": Command(
        "fold, calibrate, write FP32/INT8 ONNX and the TensorRT cache, verify accuracy",
        "Writes the run directory: model.fp32.onnx, and with --int8 calib.json, calib.cache, "
        "model.int8.onnx (TensorRT) and model.int8.cpu.onnx (ONNX Runtime CPU), then runs every "
        "form on the held-out test split and writes report.json/report.md and manifest.json. "
        "Exit status 3 when an accuracy check fails (the report is still written).",
        _export_options, cmd_export),
    "qat": Command(
        "quantization-aware training of an INT8 export, written as a new verified run",
        "Fine-tunes the folded model under the INT8 simulation (straight-through estimator, learned "
        "activation ranges) starting from the run's calibration, toward the FP32 logits, then writes "
        "the same files as `export --int8` (both INT8 targets, calib.cache, calib.json, report, "
        "manifest) into <run>-qat, verified and gated the same way. Exit status 3 when the accuracy "
        "check fails.",
        _qat_options, cmd_qat),
    "sensitivity": Command(
        "per-layer INT8 sensitivity of an exported run (table, JSON, PNG)",
        "For every quantizable layer: logit SQNR and top-1 change against FP32 with only that layer in "
        "INT8, and with only that layer left in float, simulated on the validation split with the run's "
        "calib.json. Writes sensitivity.json/.md/.png.",
        _sensitivity_options, cmd_sensitivity),
    "bundle": Command(
        "write the Jetson bundle (ONNX, calib.cache, validation set, build_engine.sh) "
        "and its .tar.gz",
        "Checks the run's files against its manifest, draws a validation set from the "
        "held-out test split with the FP32 logits for it, and writes <run>-bundle/ and "
        "<run>-bundle.tar.gz beside the run.",
        _bundle_options, cmd_bundle),
}
