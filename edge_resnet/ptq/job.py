"""The quantize job: an FP32 ONNX classifier -> the run directory ``edge-resnet export --int8`` writes, no torch.

import (BN folded) -> FP32 ONNX in our names -> statistics with ONNX Runtime over the calibration images
-> calibrators -> Q/DQ plans (TensorRT and CPU placement: ``edge_resnet.quant.plan``, the export's own)
-> INT8 ONNX files, implicit file and calib.cache -> verification against the source model on held-out
images -> report and manifest. Everything is computed in memory first; files are written only at the
end (the old manifest first removed, the new one written last), each atomically, so a failed or
interrupted run leaves the folder as it was or without a manifest vouching for a mix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from edge_resnet import atomic
from edge_resnet.calibration.files import Calibration
from edge_resnet.calibration.calibrators import CALIBRATORS
from edge_resnet.calibration.onnx_collect import DEFAULT_BUDGET_MB, OnnxCollector
from edge_resnet.calibration.statistics import Statistics, ranges
from edge_resnet.contract.metrics import sqnr_db
from edge_resnet.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from edge_resnet.errors import ConfigError, DataError, EdgeResNetError
from edge_resnet.contract import BENCH_ROWS
from edge_resnet.contract.files import FILES, LAST
from edge_resnet.export.artifacts import implicit_files, int8_model, library_versions, manifest_dict
from edge_resnet.export.onnx_writer import build_onnx
from edge_resnet.models.dataflow import Graph
from edge_resnet.models.onnx_import import ImportedModel, import_onnx
from edge_resnet.ptq.frames import FolderFrames, Frames, open_frames
from edge_resnet.quant.plan import check_float_layers, classifier_layers, make_plan
from edge_resnet.quant.select import pick
from edge_resnet.runs import MANIFEST, read_manifest
from edge_resnet.runtime.backends import OnnxRuntimeBackend
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.sessions import open_session
from edge_resnet.accuracy import ModelForm, Report, compare

log = logging.getLogger("edge_resnet.ptq")

TARGETS = ("tensorrt", "cpu")
# the files this job writes (FILES keys), manifest last
WRITES = ("fp32", "tensorrt", "cpu", "implicit", "calib", "cache", "report_json", "report_md", "manifest")
SELECTION_IMAGES = 128  # held-out images "auto" scores the calibrators on (the rest verify)

# typing.Callable: an alias is evaluated at import, and collections.abc.Callable[...] needs Python 3.9
Progress = Callable[[str, int], "contextlib.AbstractContextManager[Callable[[int], None]]"]


@contextlib.contextmanager
def _no_progress(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@dataclass(frozen=True)
class QuantizeOptions:
    model: str
    calib_data: str
    output: str | None = None  # default: <model folder>/<model stem>-int8
    num_calib: int = 512
    num_verify: int = 256
    every: int = 1
    pace: bool = False
    seed: int = 0
    calib_method: str = "auto"
    percentile: float = 99.99
    bins: int = 2048
    tolerance: float = 1.0
    quantize_classifier: bool = False
    float_layers: tuple[str, ...] = ()
    # preprocessing when no manifest.json sits beside the model
    size: int | None = None
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str | None = None
    resampler: str | None = None
    labels: str | None = None  # a file with one label per line
    threads: int = 0
    budget_mb: float = DEFAULT_BUDGET_MB
    force: bool = False

    def validate(self) -> None:
        if self.calib_method not in ("auto", *CALIBRATORS):
            raise ConfigError(f"--calib-method {self.calib_method!r} is not one of auto, {', '.join(CALIBRATORS)}")
        for flag, value, low in (("--num-calib", self.num_calib, 1), ("--num-verify", self.num_verify, 1),
                                 ("--every", self.every, 1), ("--bins", self.bins, 128), ("--threads", self.threads, 0),
                                 ("--seed", self.seed, 0), ("--size", self.size, 1), ("--resize", self.resize, 1)):
            if value is not None and value < low:
                raise ConfigError(f"{flag} must be >= {low}, got {value}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.tolerance < 0:
            raise ConfigError(f"--tolerance is in top-1 points and must be >= 0, got {self.tolerance}")
        if self.budget_mb <= 0:
            raise ConfigError(f"--memory-budget must be > 0 MB, got {self.budget_mb}")

    def preprocessing_given(self) -> list[str]:
        names = ("size", "resize", "mean", "std", "channel_order", "resampler")
        return [f"--{n.replace('_', '-')}" for n in names if getattr(self, n) is not None]


@dataclass
class QuantizeResult:
    run_dir: Path
    files: dict[str, Path]
    report: Report
    calibration: Calibration
    imported: ImportedModel
    data: str
    seconds: dict[str, float] = field(default_factory=dict)
    lint_warnings: list[str] = field(default_factory=list)
    cache_info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.report.passed


# ---------------------------------------------------------------- inputs


def _spec(opts: QuantizeOptions, model_dir: Path, imported: ImportedModel) -> tuple[dict[str, Any], dict | None]:
    """The preprocessing (as a manifest holds it) and the manifest beside the model, if any."""
    raw = read_manifest(model_dir) if (model_dir / MANIFEST).is_file() else None
    if raw is not None and isinstance(raw.get("preprocessing"), dict):
        given = opts.preprocessing_given()
        if given:
            raise ConfigError(f"{model_dir / MANIFEST} fixes the preprocessing the model was trained with; drop "
                              f"{', '.join(given)} (or quantize a copy of the model without its manifest)")
        spec = dict(raw["preprocessing"])
    else:
        size = opts.size or imported.input_size
        if size is None:
            raise ConfigError("the model's input size is dynamic and no manifest.json is beside it; pass --size")
        spec = PreprocessSpec(input_size=size, resize=opts.resize or round(size * 256 / 224),
                              mean=tuple(opts.mean or IMAGENET_MEAN), std=tuple(opts.std or IMAGENET_STD),
                              channel_order=opts.channel_order or "RGB", resampler=opts.resampler or "pil").to_dict()
    Preprocessor(spec)  # validates it (one line on a bad value)
    size = int(spec["input_size"])
    if imported.input_size is not None and imported.input_size != size:
        raise ConfigError(f"the model takes {imported.input_size}x{imported.input_size} inputs but the preprocessing "
                          f"crops {size}x{size}; pass --size {imported.input_size}")
    return spec, raw


def _labels(opts: QuantizeOptions, raw: dict | None, num_classes: int) -> list[str]:
    if opts.labels is not None:
        try:
            labels = [ln.strip() for ln in Path(opts.labels).read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--labels {opts.labels}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        where = f"--labels {opts.labels}"
    elif raw is not None and isinstance(raw.get("labels"), list):
        labels, where = [str(x) for x in raw["labels"]], "its manifest.json"
    else:
        return [str(i) for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ConfigError(f"{where} has {len(labels)} labels but the model has {num_classes} outputs")
    return labels


def default_output(model: Path) -> Path:
    return model.parent / f"{model.name[:-5] if model.name.endswith('.onnx') else model.name}-int8"


def _check_output(out: Path, model: Path, source_sha: str, force: bool) -> None:
    """Refuse the model's own run folder, and a folder holding another model's run unless ``force``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file; it must be a (new or existing) folder")
    if out.resolve() == model.parent.resolve() and (out / FILES["fp32"]).exists():
        raise ConfigError(f"writing into {out}, the folder of {model.name}, would replace the files of the run it "
                          "comes from; pass another --output")
    if not out.is_dir():
        return
    raw = read_manifest(out)
    ours = [FILES[k] for k in WRITES if (out / FILES[k]).exists()]
    theirs = ours + [n for n in (FILES["checkpoint"], LAST) if (out / n).exists()]
    if raw is not None and raw.get("model", {}).get("source_sha256") == source_sha and not (out / FILES["checkpoint"]).exists():
        return  # a run of this very file: re-quantizing replaces it
    if theirs and not force:
        what = "another model's run" if raw is not None or (out / FILES["checkpoint"]).exists() else "files this would replace"
        raise ConfigError(f"{out} holds {what} ({', '.join(theirs)}); pass another --output, or --force to replace "
                          "them")


# ---------------------------------------------------------------- the job


def quantize(opts: QuantizeOptions, *, progress: Progress | None = None) -> QuantizeResult:
    """Run the whole job; see the module docstring.

    Raises:
        EdgeResNetError: bad options, a model outside the supported ops, unusable calibration data.
    """
    opts.validate()
    progress = progress or _no_progress
    start = time.perf_counter()
    model_path = Path(opts.model)
    imported = import_onnx(model_path, float_ops=opts.float_layers)
    source_sha = atomic.sha256_file(model_path)
    spec, raw = _spec(opts, model_path.parent, imported)
    labels = _labels(opts, raw, imported.num_classes)
    out = Path(opts.output) if opts.output else default_output(model_path)
    _check_output(out, model_path, source_sha, opts.force)
    atomic.check_writable_dir(out, f"--output {out}")
    float_layers = _float_layers(opts, imported.graph)
    pre = Preprocessor(spec)
    frames = open_frames(opts.calib_data, pre, labels, num_calib=opts.num_calib, num_verify=opts.num_verify,
                         every=opts.every, seed=opts.seed, pace=opts.pace)
    _say_split(frames, opts)
    staged = _Staged(out)
    try:
        result = _run(opts, imported, pre, frames, float_layers, staged, progress, start)
        manifest = dict(
            model={"arch": "onnx", "source": str(model_path), "source_sha256": source_sha,
                   "num_classes": imported.num_classes,
                   "trained_on": (raw or {}).get("model", {}).get("trained_on"),
                   "run_id": (raw or {}).get("model", {}).get("run_id"),
                   "imported": {"nodes": imported.source_nodes, "folded_batchnorm": imported.folded_bn,
                                "kept_batchnorm": imported.kept_bn, "evaluated_shape_nodes": imported.folded_shapes,
                                "layout": imported.layout, "input_dtype": imported.input_dtype,
                                "softmax": imported.softmax,
                                "input": imported.input_name, "output": imported.output_name}},
            size=pre.input_size, num_classes=imported.num_classes, preprocessing=spec, labels=labels,
            calib=result.calibration, lint={"tensorrt": []}, targets=TARGETS, versions=library_versions(None),
            cache_info=result.cache_info, mixed={"float_layers": dict(float_layers), "fallback": None},
            warnings={"tensorrt": result.lint_warnings})
        staged.commit(manifest, result.report)
    except BaseException:
        staged.discard()
        raise
    result.files = staged.files
    result.seconds["total"] = time.perf_counter() - start
    return result


def _run(opts: QuantizeOptions, imported: ImportedModel, pre: Preprocessor, frames: Frames,
         float_layers: dict[str, str], staged: _Staged, progress: Progress, start: float) -> QuantizeResult:
    """Calibrate, choose, build and verify; every file goes to ``staged`` as soon as it exists."""
    graph, size, times = imported.graph, pre.input_size, {}
    fp32 = build_onnx(graph, input_size=size, precision="fp32")
    staged.model("fp32", fp32)
    collector = OnnxCollector(graph, fp32, bins=opts.bins, threads=opts.threads, budget_mb=opts.budget_mb)
    fingerprint = {"model": atomic.sha256_file(staged.files["fp32"]), "data": frames.fingerprint}
    del fp32  # in its file now: the model is held once during calibration, by the collector's sessions
    with progress("calibrate", opts.num_calib + opts.num_verify) as step:
        frames.on_image = step
        stats = collector.run(frames.calibration())
    del collector
    times["calibrate"] = time.perf_counter() - start
    if stats.images == 0:
        raise DataError(f"none of the calibration images of {frames.name} could be read")
    pixels, truth = frames.verification().arrays()
    calibs = [_calibration(stats, m, opts, frames, fingerprint, times["calibrate"])
              for m in (CALIBRATORS if opts.calib_method == "auto" else (opts.calib_method,))]
    del stats
    calib = calibs[0]
    if opts.calib_method == "auto":
        select, pixels, truth = _split_selection(pixels, truth)
        if len(select) == 0:
            log.warning("no held-out images to choose a calibrator on; using entropy")
            calib = next(c for c in calibs if c.method == "entropy")
        else:
            with progress("choose calibrator", len(calibs)) as step:
                scores = _score(graph, size, calibs, staged.files["fp32"], pre.normalize(select), float_layers,
                                opts.threads, step)
            calib = pick(calibs, scores)
            log.info("auto calibration: %s", ", ".join(f"{m} {s:.1f} dB" for m, s in scores.items()))
    del calibs
    calib.seconds = time.perf_counter() - start
    warnings = _int8_models(graph, size, calib, float_layers, staged)
    implicit, cache_text, cache_info = implicit_files(graph, calib, size)
    staged.model("implicit", implicit)
    del implicit
    staged.text("cache", cache_text)
    staged.text("calib", json.dumps(calib.to_dict(), indent=2) + "\n")
    times["build"] = time.perf_counter() - start - times["calibrate"]
    if len(pixels) == 0:
        raise DataError(f"{frames.name} gave no held-out images to verify on; pass more images (--num-verify "
                        "images are held out, at most a quarter of a folder)")
    with progress("verify", 4 * len(pixels)) as step:
        report = _verify(Path(opts.model), staged, pre.normalize, pixels, truth, opts, frames, step, imported)
    times["verify"] = time.perf_counter() - start - times["calibrate"] - times["build"]
    return QuantizeResult(staged.out, {}, report, calib, imported, frames.name, times, warnings, cache_info)


class _Staged:
    """The run's files, each written to a temp name in the output folder as soon as it is made (so the
    models need not stay in memory), renamed into place together at the end: the old manifest first
    removed, the new one written last. ``discard`` removes the temps (and the folder, if this run made it)."""

    def __init__(self, out: Path) -> None:
        self.out, self.created = out, not out.exists()
        self.temps: dict[str, Path] = {}
        self.final = {k: out / FILES[k] for k in WRITES}

    @property
    def files(self) -> dict[str, Path]:
        """Where each file can be read now: its temp name until ``commit``, then its final name."""
        return {k: self.temps.get(k, self.final[k]) for k in self.final if k in self.temps or self.final[k].exists()}

    def _path(self, key: str) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.temps[key] = atomic.temp_path(self.final[key], keep_suffix=True)
        return self.temps[key]

    def model(self, key: str, model: onnx.ModelProto) -> None:
        try:
            with open(self._path(key), "wb") as f:
                f.write(model.SerializeToString())
        except OSError as e:
            self._failed(e)

    def text(self, key: str, text: str) -> None:
        try:
            self._path(key).write_text(text, encoding="utf-8")
        except OSError as e:
            self._failed(e)

    def _failed(self, e: OSError) -> None:
        raise EdgeResNetError(f"cannot write in {self.out} ({e.strerror or e}); nothing there was changed") from None

    def commit(self, manifest: dict[str, Any], report: Report) -> None:
        self.text("report_json", json.dumps(report.to_dict(), indent=2) + "\n")
        self.text("report_md", report.to_markdown())
        try:
            self.final["manifest"].unlink(missing_ok=True)  # no manifest vouches for a half-replaced folder
            for key, tmp in list(self.temps.items()):
                os.replace(tmp, self.final[key])
                del self.temps[key]
            listed = {k: p for k, p in self.final.items() if k != "manifest"}
            atomic.write_json(self.final["manifest"], manifest_dict(files=listed, report=report.to_dict(), **manifest))
        except OSError as e:  # a folder where a file goes, a full disk: every file is whole, no manifest
            where = e.filename or self.out
            raise EdgeResNetError(f"cannot write {where} ({e.strerror or e}); {self.out} has no manifest.json "
                                  "until a quantize run completes") from None

    def discard(self) -> None:
        for tmp in self.temps.values():
            tmp.unlink(missing_ok=True)
        self.temps.clear()
        if self.created:
            with contextlib.suppress(OSError):
                self.out.rmdir()


def _float_layers(opts: QuantizeOptions, graph: Graph) -> dict[str, str]:
    layers: dict[str, str] = {}
    if not opts.quantize_classifier:
        layers.update(dict.fromkeys(sorted(classifier_layers(graph)), "classifier"))
    try:
        check_float_layers(graph, opts.float_layers)
    except ValueError as e:
        raise ConfigError(f"--float-layers: {e}") from None
    layers.update(dict.fromkeys(opts.float_layers, "requested"))
    return layers


def _calibration(stats: Statistics, method: str, opts: QuantizeOptions, frames: Frames,
                 fingerprint: dict[str, str], seconds: float) -> Calibration:
    return Calibration(method=method, amax=ranges(stats, method, percentile=opts.percentile), images=stats.images,
                       skipped=frames.skipped, percentile=opts.percentile if method == "percentile" else None,
                       bins=opts.bins, data=frames.name, fingerprint=dict(fingerprint),
                       channel_mean=stats.channel_means(), requested=method, seconds=seconds)


def _selection_count(held: int) -> int:
    """How many of ``held`` held-out images choose the calibrator under auto: every other one, at most
    SELECTION_IMAGES (none of a single image)."""
    return min((held + 1) // 2, SELECTION_IMAGES) if held > 1 else 0


def held_out_for(verify: int, auto: bool) -> int:
    """The held-out images (--num-verify) that leave ``verify`` of them to verify after auto's choice."""
    if not auto:
        return verify
    return 2 * verify if verify <= SELECTION_IMAGES else verify + SELECTION_IMAGES


def _say_split(frames: Frames, opts: QuantizeOptions) -> None:
    """One log line on how a folder splits, a warning when it cannot supply --num-calib after the hold-out."""
    if not isinstance(frames, FolderFrames):
        return  # a video or camera: VideoFrames says where it ended short
    calib, held = len(frames.calib_paths), len(frames.verify_paths)
    select = _selection_count(held) if opts.calib_method == "auto" else 0
    total = calib + held + frames.unused
    split = (f"{calib} calibrate; of the {held} held out, {select} choose the calibrator and {held - select} verify"
             if select else f"{calib} calibrate, {held} held out verify")
    if calib < opts.num_calib:
        cap = " (a quarter at most)" if held < opts.num_verify else ""
        log.warning("%s has %d images, too few for --num-calib %d after holding out %d%s: %s", frames.root, total,
                    opts.num_calib, held, cap, split)
    else:
        log.info("%s: %s", frames.root, split)


def _split_selection(pixels: np.ndarray, truth: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Held-out images for choosing the calibrator (every other one, at most SELECTION_IMAGES) and the rest,
    which verify: the report never judges on the images that made a choice."""
    idx = np.arange(len(pixels))
    chosen = idx[::2][:_selection_count(len(pixels))]
    rest = np.setdiff1d(idx, chosen)
    return pixels[chosen], pixels[rest], None if truth is None else truth[rest]


def _logits(model: bytes | str | onnx.ModelProto, x: np.ndarray, threads: int, batch: int = 32) -> np.ndarray:
    sess = open_session(model, threads=threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _score(graph: Graph, size: int, calibs: list[Calibration], fp32: Path, x: np.ndarray,
           float_layers: dict[str, str], threads: int, step: Callable[[int], None]) -> dict[str, float]:
    """Logit SQNR against FP32 of each calibration's TensorRT-placed INT8 model on ONNX Runtime."""
    ref = _logits(str(fp32), x, threads)
    scores = {}
    for c in calibs:
        plan = make_plan(graph, c.amax, "tensorrt", channel_mean=c.channel_mean or None,
                         float_layers=frozenset(float_layers))
        model = build_onnx(graph, input_size=size, precision="int8", plan=plan)
        scores[c.method] = sqnr_db(ref, _logits(model, x, threads))
        step(1)
    return scores


def _int8_models(graph: Graph, size: int, calib: Calibration, float_layers: dict[str, str],
                 staged: _Staged) -> list[str]:
    """Both INT8 files, staged; the TensorRT one passes the Q/DQ lint (its warnings: the float layers)."""
    warnings: list[str] = []
    for target in TARGETS:
        _, model, found = int8_model(graph, calib, target, size, sorted(float_layers))
        warnings += found
        staged.model(target, model)
    return warnings


def _verify(model_path: Path, staged: _Staged, normalize: Callable, pixels: np.ndarray, truth: np.ndarray | None,
            opts: QuantizeOptions, frames: Frames, step: Callable[[int], None], imported: ImportedModel) -> Report:
    """Every written model against the source ONNX on ONNX Runtime, on the held-out images; the export's gate.
    One session at a time: the held-out pixels are small, the models may not be. An NHWC source gets its
    images transposed; a source ending in Softmax is compared in log-probabilities (ours: log-softmax of
    the logits), so the SQNR means what it means for logits."""
    rows = {row.role: row for row in BENCH_ROWS.values() if row.role in ("fp32", "tensorrt", "cpu")}
    role_of = {row.accuracy_key: role for role, row in rows.items()}
    backends = [ModelForm("onnx_source", f"ONNX Runtime FP32 ({model_path.name})", lambda x: x, file=str(model_path),
                          size_bytes=model_path.stat().st_size)]
    backends += [ModelForm(row.accuracy_key, row.label + (" (BN folded, ours)" if role == "fp32" else ""), lambda x: x,
                           file=str(staged.final[role]), size_bytes=staged.files[role].stat().st_size)
                 for role, row in rows.items()]
    for b in backends:
        if b.key == "onnx_source":
            run = _source_runner(model_path, imported, opts.threads)
        else:
            sess = open_session(staged.files[role_of[b.key]], threads=opts.threads)
            run = lambda x, s=sess: s.run(None, {"input": x})[0].astype(np.float32)  # noqa: E731
            if imported.softmax:
                run = lambda x, r=run: _log_softmax(r(x))  # noqa: E731
        for i in range(0, len(pixels), 32):
            b.logits.append(run(np.ascontiguousarray(normalize(pixels[i:i + 32]), dtype=np.float32)))
            step(len(pixels[i:i + 32]))
        del run
    labels = truth
    if labels is None:  # no labels: the source model's predictions stand in, so the gate judges agreement
        labels = np.concatenate(backends[0].logits).argmax(1)
    auto = opts.calib_method == "auto"

    def more(n: int) -> str:
        held = held_out_for(n, auto)
        if isinstance(frames, FolderFrames):
            return f"--num-verify {max(held, opts.num_verify)} with a folder of {4 * held}+ images"
        return f"--num-verify {held}"

    return compare(backends, labels, reference="onnx_source", tolerance=opts.tolerance, dataset=frames.name,
                   split="held-out", reference_name=f"the FP32 ONNX source ({model_path.name})",
                   labelled=truth is not None, more=more)


def _source_runner(model_path: Path, imported: ImportedModel, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    run = OnnxRuntimeBackend(model_path, providers=["CPUExecutionProvider"], threads=threads).run
    if imported.layout == "NHWC":
        run = lambda x, r=run: r(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # noqa: E731
    if imported.softmax:
        run = lambda x, r=run: np.log(np.maximum(r(x).astype(np.float64), 1e-30)).astype(np.float32)  # noqa: E731
    return run


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)


__all__ = ["QuantizeOptions", "QuantizeResult", "default_output", "quantize"]
