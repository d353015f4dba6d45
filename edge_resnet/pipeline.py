"""The export job: checkpoint -> fold -> calibrate -> INT8 plan -> ONNX files -> verify -> manifest.

This is the one module that imports every stage (no stage imports it); the CLI is a thin layer
over ``export_run``. Everything the user got wrong (calibration data that turns out unreadable
included) is found before the first file is written, every file is written atomically, files an
earlier export left that this one does not produce are removed (the manifest first), and the
report is written even when the gate fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from edge_resnet.calibration.files import (
    Calibration,
    CalibrationFileError,
    load_calibration,
    save_calibration,
)
from edge_resnet.calibration.calibrate import calibrate_methods, check_reusable, graph_fingerprint
from edge_resnet.calibration.calibrators import CALIBRATORS
from edge_resnet.calibration.readers import CalibrationData, open_calibration_data
from edge_resnet import atomic
from edge_resnet.contract import BENCH_ROWS
from edge_resnet.contract.files import FILES, LAST, checkpoint_reference
from edge_resnet.data.datasets import BUNDLED
from edge_resnet.data import Transformed, collate_skip_none, dataset_name, eval_transform, load_dataset
from edge_resnet.torch_settings import torch_threads
from edge_resnet.errors import CheckpointError, ConfigError, DataError, EdgeResNetError
from edge_resnet.fold import fold_batchnorm
from edge_resnet.models.graph import Graph, trace
from edge_resnet.quant import QuantSim
from edge_resnet.quant.equalize import EQUALIZE_CHOICES, equalize
from edge_resnet.quant.fallback import FallbackResult, fallback
from edge_resnet.quant.plan import check_float_layers, classifier_layers
from edge_resnet.quant.select import pick, score_calibrations
from edge_resnet.runs import DEVICE_FILES, TRAINING_FILES, describe, folder_files, foreign_run
from edge_resnet.training.checkpoint import Checkpoint, load_checkpoint
from edge_resnet.training.evaluate import check_classes
from edge_resnet.training.loop import resolve_device
from edge_resnet.accuracy import compare, onnx_form, run_forms, torch_form
from edge_resnet.analysis import HeldOut, held_out
from edge_resnet.export.onnx_writer import build_onnx, save_onnx
from edge_resnet.export.artifacts import int8_model, library_versions, manifest_dict
from edge_resnet.export.artifacts import write_implicit as _write_implicit

log = logging.getLogger("edge_resnet.export")

TARGET_CHOICES: tuple[str, ...] = ("all", "tensorrt", "cpu")
# fewer calibration images than this get a warning, and the gate's INT8 failures name the count
SMALL_CALIBRATION = 100

Progress = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def _no_progress(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@dataclass(frozen=True)
class ExportOptions:
    model: str | None = None  # checkpoint path or registry name; None: the default run's model
    data: str | None = None  # dataset: trains a missing model, and its test split verifies
    int8: bool = False
    fp16: bool = False
    calib_data: str | None = None  # None: the train split of ``data``
    calib_method: str = "auto"  # or one of edge_resnet.calibration.calibrators.CALIBRATORS
    percentile: float = 99.99
    num_calib: int = 512
    calib_seed: int = 0
    every: int = 1  # video calibration sources: every k-th frame
    calib: str | None = None  # a pinned calib.json to use instead of calibrating
    target: str = "all"
    tolerance: float = 1.0
    output: str | None = None
    batch_size: int = 64
    device: str = "cpu"
    force: bool = False  # replace the run of another model in ``output`` (edge_resnet.runs)
    # the final FC layer stays float by default, as NVIDIA Model Optimizer leaves it (see plan.classifier_layers)
    quantize_classifier: bool = False
    # layers (module paths) the user keeps in float, beside the classifier and the fallback's
    float_layers: tuple[str, ...] = ()
    # the mixed-precision fallback's cap: at most this many layers leave INT8 to meet --tolerance (0: off)
    fallback_max: int = 3
    # CPU threads for PyTorch and ONNX Runtime; None: their defaults. On a busy machine one thread
    # can be many times faster than OpenMP threads spinning against other work
    threads: int | None = None
    # cross-layer equalization before calibration: auto keeps it when it scores better on the validation split
    equalize: str = "auto"

    def validate(self) -> None:
        if self.calib_method not in ("auto", *CALIBRATORS):
            raise ConfigError(f"--calib-method {self.calib_method!r} is not one of auto, {', '.join(CALIBRATORS)}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.num_calib < 1:
            raise ConfigError(f"--num-calib must be >= 1, got {self.num_calib}")
        if self.target not in TARGET_CHOICES:
            raise ConfigError(f"--target must be one of {', '.join(TARGET_CHOICES)}, got {self.target!r}")
        if self.tolerance < 0:
            raise ConfigError(f"--tolerance is in top-1 points and must be >= 0, got {self.tolerance}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.int8 and (self.calib_data or self.calib):
            raise ConfigError("--calib-data and --calib only apply to INT8; add --int8")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.fallback_max < 0:
            raise ConfigError(f"--fallback-max is a number of layers, >= 0 (0 turns the fallback off), got {self.fallback_max}")
        if self.equalize not in EQUALIZE_CHOICES:
            raise ConfigError(f"--equalize must be one of {', '.join(EQUALIZE_CHOICES)}, got {self.equalize!r}")
        if not self.int8 and (self.float_layers or self.quantize_classifier):
            raise ConfigError("--float-layers and --quantize-classifier only apply to INT8; add --int8")

    @property
    def targets(self) -> tuple[str, ...]:
        if not self.int8:
            return ()
        return ("tensorrt", "cpu") if self.target == "all" else (self.target,)


@dataclass
class ExportResult:
    run_dir: Path
    files: dict[str, Path]
    report: Any  # edge_resnet.accuracy.Report
    calibration: Any | None  # edge_resnet.calibration.files.Calibration
    calibration_reused: bool
    trained: bool
    lint: dict[str, list[str]] = field(default_factory=dict)  # errors by target (empty: clean)
    lint_warnings: dict[str, list[str]] = field(default_factory=dict)  # layers deliberately left in float
    float_layers: dict[str, str] = field(default_factory=dict)  # layer -> why it is float
    fallback: Any | None = None  # edge_resnet.quant.fallback.FallbackResult

    @property
    def passed(self) -> bool:
        return self.report.passed


# ---------------------------------------------------------------- resolving inputs


def resolve_checkpoint(opts: ExportOptions, train_monitor: Any = None) -> tuple[Path, bool]:
    """The checkpoint to export, training the default (or a named) model once if it is missing."""
    from edge_resnet.models import get_spec

    path = checkpoint_reference(opts.model) if opts.model is not None else None
    if path is not None:
        if not path.exists():
            raise EdgeResNetError(f"no checkpoint at {path}; pass a model.pt written by `edge-resnet train`, "
                                  "or a model name such as resnet20")
        stopped = _unfinished(path.parent) if path.name == FILES["checkpoint"] else None
        if stopped:
            log.warning("the training in %s stopped after epoch %d of %d; exporting its best checkpoint so far "
                        "(to finish it first: edge-resnet train --resume --output %s)", path.parent, *stopped,
                        path.parent)
        return path, False
    arch = opts.model or "resnet20"
    get_spec(arch)  # an unknown name fails here, listing the valid ones
    run_dir = Path("runs") / f"{arch}-{dataset_name(opts.data)}"
    path = run_dir / FILES["checkpoint"]
    # model.pt exists from the first epoch on: a training killed later must be finished, not exported
    stopped = _unfinished(run_dir)
    if path.exists() and not stopped:
        return path, False
    from edge_resnet.training import TrainConfig, train

    cfg = TrainConfig(model=arch, data=opts.data, output=str(run_dir))
    resume = (run_dir / LAST).exists()
    if stopped:
        log.warning("the training in %s stopped after epoch %d of %d (interrupted): resuming it from %s "
                    "until it finishes", run_dir, *stopped, run_dir / LAST)
    elif resume:
        log.warning("no checkpoint at %s, but an interrupted training left %s: resuming it",
                    path, run_dir / LAST)
    else:
        log.warning("no checkpoint at %s: training %s on %s first (this happens once)",
                    path, arch, dataset_name(opts.data))
    train(cfg, resume=resume, monitor=train_monitor)
    return path, True


def _unfinished(run_dir: Path) -> tuple[int, int] | None:
    from edge_resnet.training.loop import unfinished

    try:
        return unfinished(run_dir)
    except CheckpointError:
        last = run_dir / LAST
        raise CheckpointError(f"{last} (the training state of {run_dir}) is not a readable checkpoint, so whether "
                              f"its training finished is unknown; delete it to export {run_dir / 'model.pt'} as it "
                              "is") from None


def _bundled_default(ckpt: Checkpoint, opts: ExportOptions) -> ExportOptions:
    """A model trained on a bundled dataset other than the digits verifies on that one by default."""
    trained_on = ckpt.extra.get("dataset")
    if opts.data is None and trained_on in BUNDLED and trained_on != "digits":
        return dataclasses.replace(opts, data=trained_on)
    return opts


def _verification_data(ckpt: Checkpoint, opts: ExportOptions, path: Path):
    trained_on = ckpt.extra.get("dataset")
    if opts.data is None and trained_on not in (None, "digits"):
        raise DataError(f"{path} was trained on {trained_on!r}; pass --data with that dataset's folder "
                        "so its held-out split can verify the export")
    data = load_dataset(opts.data, seed=int(ckpt.extra.get("seed", 0)))
    check_classes(ckpt, data, path)
    if len(data.test) == 0:
        raise DataError(f"{data.name} has no test images to verify on; add a test/ split")
    return data


def _open_calibration_source(ckpt: Checkpoint, opts: ExportOptions) -> CalibrationData:
    source = opts.calib_data if opts.calib_data is not None else opts.data
    # the verification data's own folder: calibrate on its train part only, its test part verifies
    same = source is None or (opts.data is not None and Path(source).resolve() == Path(opts.data).resolve())
    return open_calibration_data(source, ckpt.preprocessing, num=opts.num_calib, seed=opts.calib_seed,
                                 every=opts.every, dataset_seed=int(ckpt.extra.get("seed", 0)),
                                 exclude_heldout=same)


# ---------------------------------------------------------------- the job


# a step between calibration and the files: (folded model, its graph, calibration, held-out images) ->
# the model and ranges the INT8 files are written from (quantization-aware training, edge_resnet.qat)
Refine = Callable[[torch.nn.Module, Graph, Calibration, HeldOut], tuple[torch.nn.Module, Graph, Calibration]]


def export_run(opts: ExportOptions, *, progress: Progress | None = None, train_monitor: Any = None,
               qat: Refine | None = None) -> ExportResult:
    """Run the whole export; see the module docstring.

    Raises:
        EdgeResNetError: bad options, checkpoint, data, or a pinned calibration that does not fit.
    """
    opts.validate()
    with torch_threads(opts.threads):
        return _export(opts, progress or _no_progress, train_monitor, qat)


def _export(opts: ExportOptions, progress: Progress, train_monitor: Any, qat: Refine | None = None) -> ExportResult:
    device = resolve_device(opts.device)
    if opts.output is not None and Path(opts.output).exists() and not Path(opts.output).is_dir():
        raise ConfigError(f"--output {opts.output} is a file; it must be a (new or existing) directory")
    if opts.output is not None:  # before a first-time training: its minutes would be lost
        atomic.check_writable_dir(opts.output, f"--output {opts.output}")
    ckpt_path, trained = resolve_checkpoint(opts, train_monitor)
    if ckpt_path.name != FILES["checkpoint"] and ckpt_path.resolve().parent == Path(opts.output or
                                                                                      ckpt_path.parent).resolve():
        raise ConfigError(f"exporting {ckpt_path} into its own directory would replace the "
                          f"{FILES['checkpoint']} there; pass --output DIR for this export")
    ckpt = load_checkpoint(ckpt_path)
    opts = _bundled_default(ckpt, opts)
    run_dir = Path(opts.output) if opts.output else ckpt_path.parent
    atomic.check_writable_dir(run_dir, f"--output {run_dir}" if opts.output else
                              f"the checkpoint's folder {run_dir} (the default --output)")
    replaced = _check_owner(run_dir, ckpt_path, ckpt, opts.force)
    data = _verification_data(ckpt, opts, ckpt_path)
    calib_source = _open_calibration_source(ckpt, opts) if opts.int8 and not opts.calib else None
    pinned = _pinned_calibration(opts.calib) if opts.calib else None

    model = ckpt.build_model()
    folded = fold_batchnorm(model).to(device)  # calibration and the simulation run where asked
    graph = trace(folded)
    try:
        check_float_layers(graph, opts.float_layers)
    except ValueError as e:
        raise ConfigError(f"--float-layers: {e}") from None
    candidates = _candidates(opts, folded, graph, pinned) if opts.int8 else []
    if pinned is not None:
        why = check_reusable(pinned, model=candidates[0].fingerprint, data=None, tensors=[n.name for n in graph],
                             **pinned.settings())
        if why:
            raise EdgeResNetError(f"--calib {opts.calib} does not fit this model: {why}; "
                                  "leave out --calib to recalibrate")
    # calibrate before writing anything: unreadable calibration data must not leave a half-updated run
    calib, calib_origin = None, None
    float_layers: dict[str, str] = {}
    fallback_result = None
    # the model the INT8 files quantize: the folded one, or its equalized twin (same FP32 function)
    qfolded, qgraph = folded, graph
    if opts.int8:
        hold = held_out(data, ckpt.preprocessing, batch_size=opts.batch_size)
        calib, calib_origin, chosen = _calibration(opts, candidates, calib_source, pinned, run_dir, progress,
                                                   device, hold)
        qfolded, qgraph = chosen.folded, chosen.graph
        if qat is not None:  # quantization-aware training from this calibration (edge_resnet.qat)
            qfolded, qgraph, calib = qat(qfolded, qgraph, calib, hold)
        float_layers, fallback_result = _float_layers(opts, qfolded, qgraph, calib, hold, device)

    # ---- from here on files are written
    run_dir.mkdir(parents=True, exist_ok=True)
    if replaced:
        log.warning("--force: replacing the run of another model in %s (%s)", run_dir, ", ".join(replaced))
        for name in replaced:
            (run_dir / name).unlink(missing_ok=True)
    _remove_stale(run_dir, opts)
    files: dict[str, Path] = {}
    checkpoint_out = run_dir / FILES["checkpoint"]
    if checkpoint_out.resolve() != ckpt_path.resolve():
        with atomic.atomic_open(checkpoint_out, "wb") as f, open(ckpt_path, "rb") as src:
            shutil.copyfileobj(src, f)
    files["checkpoint"] = checkpoint_out
    size = ckpt.preprocessing.input_size

    files["fp32"] = run_dir / FILES["fp32"]
    fp32_model = build_onnx(graph, input_size=size, precision="fp32")
    save_onnx(fp32_model, files["fp32"])
    if opts.fp16:
        files["fp16"] = run_dir / FILES["fp16"]
        save_onnx(build_onnx(graph, input_size=size, precision="fp16"), files["fp16"])

    plans, lint, warnings, cache_info = {}, {}, {}, None
    if calib is not None:
        plans, lint, warnings, cache_info = _write_int8(opts, run_dir, files, qgraph, calib, calib_origin,
                                                        float_layers, size)

    report = _verify(opts, ckpt, data, model, qfolded, plans, files, calib, device, progress)
    files["report_json"] = run_dir / FILES["report_json"]
    files["report_md"] = run_dir / FILES["report_md"]
    mixed = _mixed_precision(float_layers, fallback_result) if calib is not None else None
    report_dict = report.to_dict() | ({"mixed_precision": mixed} if mixed else {}) | (
        {"equalization": calib.equalization} if calib is not None else {}) | (
        {"qat": calib.qat} if calib is not None and calib.qat else {})
    atomic.write_json(files["report_json"], report_dict)
    atomic.write_text(files["report_md"], report.to_markdown() + (_mixed_markdown(mixed) if mixed else "")
                      + (_int8_markdown(calib) if calib is not None else ""))

    files["manifest"] = run_dir / FILES["manifest"]
    atomic.write_json(files["manifest"], _manifest(ckpt, files, report_dict, calib, lint, opts, cache_info, mixed,
                                                   warnings))
    return ExportResult(run_dir, files, report, calib, calib_origin in ("run directory", "pinned"), trained,
                        lint, warnings, float_layers, fallback_result)


def _write_int8(opts: ExportOptions, run_dir: Path, files: dict[str, Path], qgraph: Graph, calib: Calibration,
                calib_origin: str | None, float_layers: dict[str, str], size: int
                ) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, list[str]], dict[str, Any]]:
    """calib.json, the implicit model and calib.cache, and one INT8 file per target (the TensorRT one linted);
    returns (plans, lint errors, lint warnings, what the manifest records about calib.cache)."""
    plans: dict[str, Any] = {}
    lint: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    files["calib"] = run_dir / FILES["calib"]
    if calib_origin != "run directory":  # a fresh or pinned calibration belongs in this run
        save_calibration(files["calib"], calib)
    cache_info = _write_implicit(qgraph, calib, size, run_dir, files)
    for target in opts.targets:
        files[target] = run_dir / FILES[target]
        plans[target], onnx_model, found = int8_model(qgraph, calib, target, size, sorted(float_layers))
        if target == "tensorrt":
            lint[target], warnings[target] = [], found
        save_onnx(onnx_model, files[target])
    return plans, lint, warnings, cache_info


def _verify(opts: ExportOptions, ckpt: Checkpoint, data, model, qfolded, plans: dict[str, Any],
            files: dict[str, Path], calib: Calibration | None, device: torch.device, progress: Progress):
    """Every written form of the model (and the INT8 simulation) on the held-out test split, and the gate."""
    torch_row = BENCH_ROWS["pytorch"]
    forms = [torch_form(torch_row.accuracy_key, torch_row.label, model, device=device,
                        file=str(files["checkpoint"]), size_bytes=files["checkpoint"].stat().st_size)]
    if "tensorrt" in plans:
        forms.append(torch_form("sim_int8", "simulated INT8 (PyTorch)", QuantSim(qfolded, plans["tensorrt"]),
                                device=device))
    for row in BENCH_ROWS.values():  # the ONNX models, named as the benchmark names them
        if row.role in files and row.role != "checkpoint":
            path = files[row.role]
            forms.append(onnx_form(row.accuracy_key, row.label, str(path), threads=opts.threads or 0,
                                   size_bytes=path.stat().st_size))
    loader = DataLoader(Transformed(data.test, eval_transform(ckpt.preprocessing)),
                        batch_size=opts.batch_size, collate_fn=collate_skip_none)
    with progress("verify", len(data.test)) as step:
        labels = run_forms(forms, loader, on_batch=step)
    sim_pair = ("sim_int8", BENCH_ROWS["onnx-int8"].accuracy_key) if "tensorrt" in plans else None
    report = compare(forms, labels, reference=torch_row.accuracy_key, tolerance=opts.tolerance, dataset=data.name,
                     split="test", sim_pair=sim_pair, reference_name=torch_row.label,
                     more=lambda n: f"a --data whose test split has {n}+ images")
    if calib is not None:  # an INT8 miss is often the calibration set: name it
        small = f", fewer than {SMALL_CALIBRATION}: calibrate on more" if calib.images < SMALL_CALIBRATION else ""
        report.failures = [f"{f}; its ranges come from {calib.images} calibration images of {calib.data}{small}"
                           if "INT8" in f else f for f in report.failures]
    return report


def _check_owner(run_dir: Path, ckpt_path: Path, ckpt: Checkpoint, force: bool) -> list[str]:
    """Refuse to write into the run of another model (edge_resnet.runs) unless ``force``; returns the
    files of that run that a forced export removes (empty when the folder is new or this model's)."""
    def read(path: Path) -> tuple[str | None, str]:
        other = load_checkpoint(path)
        return other.extra.get("run_id"), describe(other.arch, other.num_classes, other.extra.get("dataset"))

    why = foreign_run(run_dir, ckpt_path, run_id=ckpt.extra.get("run_id"), read_checkpoint=read)
    if why is None:
        return []
    theirs = folder_files(run_dir, (*FILES.values(), *TRAINING_FILES, *DEVICE_FILES))
    if not force:
        raise ConfigError(f"{run_dir} holds the run of another model ({why}); exporting {ckpt_path} there would "
                          f"replace it: pass another --output, or --force to replace that run's {len(theirs)} "
                          f"files ({', '.join(theirs)})")
    return theirs


def _pinned_calibration(path: str) -> Calibration:
    try:
        return load_calibration(path)
    except CalibrationFileError as e:
        raise CalibrationFileError(f"--calib: {e}; pass a calib.json written by `edge-resnet export --int8`, "
                                    "or leave out --calib to calibrate") from None


def _remove_stale(run_dir: Path, opts: ExportOptions) -> None:
    """Delete what an earlier export left that this one will not rewrite (the manifest first, so a
    directory caught mid-export never has a manifest vouching for a mix of old and new files)."""
    produced = {"checkpoint", "fp32", "report_json", "report_md", "manifest", *opts.targets}
    if opts.fp16:
        produced.add("fp16")
    if opts.int8:
        produced |= {"calib", "cache", "implicit"}
    for key in ("manifest", *FILES):
        if key == "manifest" or key not in produced:
            (run_dir / FILES[key]).unlink(missing_ok=True)


@dataclass(frozen=True)
class _Candidate:
    """A model the INT8 files may quantize: the folded model, or its cross-layer-equalized twin."""

    equalized: bool
    folded: torch.nn.Module
    graph: Graph
    fingerprint: str
    info: dict[str, Any]  # for the record: equalized pairs, largest scale


def _candidates(opts: ExportOptions, folded, graph: Graph, pinned: Calibration | None) -> list[_Candidate]:
    """The models --equalize asks to calibrate (a pinned calibration fixes the choice it was made with)."""
    choice = opts.equalize
    if pinned is not None:
        if choice != "auto" and (choice == "on") != pinned.equalized:
            raise ConfigError(f"--calib {opts.calib} was calibrated {'with' if pinned.equalized else 'without'} "
                              f"equalization, but --equalize {choice} asks otherwise; leave out --equalize to follow "
                              "the file, or --calib to recalibrate")
        choice = "on" if pinned.equalized else "off"
    plain = _Candidate(False, folded, graph, graph_fingerprint(graph), {})
    if choice == "off":
        return [plain]
    eq = equalize(folded)
    if not eq.pairs:
        if choice == "on":
            log.warning("--equalize on: this model has no conv -> ReLU -> conv pair to equalize; calibrating it as is")
        return [plain]
    eq_graph = trace(eq.model)
    cand = _Candidate(True, eq.model, eq_graph, graph_fingerprint(eq_graph),
                      {"pairs": len(eq.pairs), "max_scale": round(eq.max_scale, 4)})
    return [cand] if choice == "on" else [plain, cand]


def _calibration(opts: ExportOptions, candidates: list[_Candidate], source: CalibrationData | None,
                 pinned: Calibration | None, run_dir: Path, progress: Progress, device: torch.device,
                 hold: HeldOut) -> tuple[Calibration, str, _Candidate]:
    """The pinned calibration, the run directory's if it still fits, or a fresh one; how; and its model."""
    if pinned is not None:
        return pinned, "pinned", candidates[0]
    existing = run_dir / FILES["calib"]
    if existing.exists():
        try:
            previous = load_calibration(existing)
        except CalibrationFileError as e:  # our own derived file: say so and compute it again
            log.warning("%s; recalibrating (it will be replaced)", e)
        else:
            whys = [check_reusable(previous, model=c.fingerprint, data=source.fingerprint, method=opts.calib_method,
                                   percentile=opts.percentile, bins=previous.bins, tensors=[n.name for n in c.graph],
                                   equalize=opts.equalize) for c in candidates]
            for cand, why in zip(candidates, whys):
                if why is None and previous.equalized == cand.equalized:
                    log.info("reusing %s (same weights, data and settings)", existing)
                    return previous, "run directory", cand
            why = next((w for c, w in zip(candidates, whys) if c.fingerprint == previous.fingerprint.get("model")),
                       whys[0])
            log.warning("recalibrating: the existing %s does not fit (%s)", existing.name, why)
    start = time.perf_counter()
    calibs = [_calibrate(opts, c, source, progress, device, hold) for c in candidates]
    if len(candidates) == 1:
        calib, chosen = calibs[0], candidates[0]
        calib.equalization = {"requested": opts.equalize, "applied": chosen.equalized, **chosen.info}
    else:
        # auto: the equalized model only when its INT8 simulation is closer to FP32 on the held-out images
        scores = [_held_out_db(opts, c, calib, hold, device) for c, calib in zip(candidates, calibs)]
        best = max(range(len(candidates)), key=lambda i: scores[i])
        calib, chosen = calibs[best], candidates[best]
        calib.seconds = time.perf_counter() - start
        calib.equalization = {"requested": "auto", "applied": chosen.equalized, **candidates[-1].info,
                              "selection": {("on" if c.equalized else "off"): _db(v) for c, v in zip(candidates, scores)},
                              "judged_on": hold.name}
        log.info("auto equalization: %s", ", ".join(f"{'on' if c.equalized else 'off'} {v:.2f} dB"
                                                  for c, v in zip(candidates, scores)))
    if calib.images < SMALL_CALIBRATION:
        log.warning("calibrating on only %d images%s: ranges measured on fewer than %d images miss the activations "
                    "other images produce, so INT8 accuracy may drop; pass --calib-data with a few hundred images "
                    "like the deployment's (TensorRT suggests about 500)", calib.images,
                    f" ({calib.skipped} more could not be read)" if calib.skipped else "", SMALL_CALIBRATION)
    return calib, "fresh", chosen


def _calibrate(opts: ExportOptions, cand: _Candidate, source: CalibrationData, progress: Progress,
               device: torch.device, hold: HeldOut) -> Calibration:
    """A fresh calibration of one candidate model (``auto``: the calibrator chosen on the held-out images)."""
    methods = CALIBRATORS if opts.calib_method == "auto" else (opts.calib_method,)
    start = time.perf_counter()
    with progress("calibrate" + (" (equalized)" if cand.equalized else ""), len(source)) as step:
        calibs = calibrate_methods(cand.graph, source, methods, percentile=opts.percentile,
                                   batch_size=opts.batch_size, device=device, on_batch=step)
    calib = calibs[0]
    if opts.calib_method == "auto":
        with progress("choose calibrator", len(hold)) as step:
            # choose for the model that is written (the TensorRT one when both are), on held-out
            # images: on the calibration images the calibrators would be judged on what they fitted
            scores = score_calibrations(cand.folded, cand.graph, calibs, hold.batches, target=opts.targets[0],
                                        device=device, on_batch=step)
        calib = pick(calibs, scores)
        calib.seconds = time.perf_counter() - start
        log.info("auto calibration%s: %s", " (equalized)" if cand.equalized else "",
                 ", ".join(f"{m} {s:.1f} dB" for m, s in scores.items()))
    return calib


def _held_out_db(opts: ExportOptions, cand: _Candidate, calib: Calibration, hold: HeldOut,
                 device: torch.device) -> float:
    """Logit SQNR of ``calib``'s INT8 simulation on the held-out images (``auto`` already measured it)."""
    if calib.method in calib.selection:
        return calib.selection[calib.method]
    return score_calibrations(cand.folded, cand.graph, [calib], hold.batches, target=opts.targets[0],
                              device=device)[calib.method]


def _db(v: float) -> float | None:
    return None if math.isinf(v) else round(v, 3)


def _float_layers(opts: ExportOptions, folded, graph, calib: Calibration, hold: HeldOut,
                  device: torch.device) -> tuple[dict[str, str], FallbackResult | None]:
    """The layers that stay float, each with its reason: the classifier, the user's, the fallback's."""
    layers: dict[str, str] = {}
    if not opts.quantize_classifier:
        layers |= dict.fromkeys(sorted(classifier_layers(graph)), "classifier")
    layers |= dict.fromkeys(opts.float_layers, "requested")  # checked against the graph in export_run
    if opts.fallback_max == 0:
        return layers, None
    result = fallback(folded, graph, calib.amax, hold.batches, hold.labels, tolerance=opts.tolerance,
                      max_layers=opts.fallback_max, base=frozenset(layers), target=opts.targets[0],
                      channel_mean=calib.channel_mean or None, device=device)
    result.data = hold.name
    log.info("mixed precision on %s: %s", hold.name, result.reason)
    layers |= dict.fromkeys(result.float_layers, "fallback")
    return layers, result


def _mixed_precision(float_layers: dict[str, str], result: FallbackResult | None) -> dict[str, Any]:
    return {"float_layers": dict(float_layers), "fallback": None if result is None else result.to_dict()}


def _int8_markdown(calib: Calibration) -> str:
    """The report's lines on equalization and QAT: what was chosen, and on what."""
    eq = calib.equalization
    lines = ["", "## Cross-layer equalization", ""]
    if not eq:
        lines.append("Not tried (a calibration made before the option existed).")
    else:
        sel = eq.get("selection")
        how = (f" (auto, on {eq.get('judged_on')}: " + ", ".join(
            f"{k} {'identical' if v is None else format(v, '.2f') + ' dB'}" for k, v in sel.items()) + ")") if sel \
            else f" (--equalize {eq.get('requested')})"
        lines.append(("Applied" if eq.get("applied") else "Not applied") + how + "."
                     + (f" {eq['pairs']} conv pairs, largest channel scale {eq['max_scale']}." if eq.get("applied") else ""))
    if calib.qat:
        q = calib.qat
        lines += ["", "## Quantization-aware training", "",
                  f"{q['epochs']} epoch(s) at lr {q['lr']:g} from the {q['started_from']['method']} calibration "
                  f"({'learned' if q['learn_scales'] else 'fixed'} activation scales); logit SQNR on "
                  f"{q['judged_on']}: {q['sqnr_db_before']} dB before, {q['sqnr_db_after']} dB after."]
    return "\n".join(lines) + "\n"


def _mixed_markdown(mixed: dict[str, Any]) -> str:
    lines = ["", "## Mixed precision", ""]
    layers = mixed["float_layers"]
    lines.append("Layers kept in float: " + (", ".join(f"`{k}` ({v})" for k, v in layers.items()) or "none") + ".")
    fb = mixed["fallback"]
    if fb is not None:
        lines += ["", f"Fallback (on {fb['data']}, FP32 top-1 {fb['fp32_top1']:.2f}%): {fb['reason']}.", "",
                  "| float beyond the start | top-1 drop (points) | logit SQNR dB |", "|---|---|---|"]
        lines += [f"| {', '.join(s['float_layers']) or '-'} | {s['top1_drop']:.2f} | {'identical' if s['sqnr_db'] is None else format(s['sqnr_db'], '.2f')} |"
                  for s in fb["steps"]]
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str | None]:
    return library_versions(torch.__version__)


def _manifest(ckpt: Checkpoint, files: dict[str, Path], report: dict[str, Any], calib, lint, opts: ExportOptions,
              cache_info: dict[str, Any] | None = None, mixed: dict[str, Any] | None = None,
              warnings: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return manifest_dict(
        model={"arch": ckpt.arch, "shortcut": ckpt.shortcut, "num_classes": ckpt.num_classes,
               "trained_on": ckpt.extra.get("dataset"), "run_id": ckpt.extra.get("run_id")},
        size=ckpt.preprocessing.input_size, num_classes=ckpt.num_classes, preprocessing=ckpt.preprocessing.to_dict(),
        labels=list(ckpt.classes), files=files, report=report, calib=calib, lint=lint, targets=opts.targets,
        versions=_versions(), cache_info=cache_info, mixed=mixed, warnings=warnings)


__all__ = ["TARGET_CHOICES", "ExportOptions", "ExportResult",
           "export_run", "resolve_checkpoint"]
