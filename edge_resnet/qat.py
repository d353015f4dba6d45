"""The QAT job: `edge-resnet qat RUN` fine-tunes an INT8 export and writes it again, verified and gated.

Like ``pipeline`` (which it drives), a job above the stages. The run must have been exported with
``--int8``: its calib.json is where training starts (``quant.qat``), its manifest says which INT8
files, float layers and equalization the export chose, and the same choices are kept. The files are
written by the export job itself (``pipeline.export_run`` with a refinement step between calibration
and writing), so QAT's files are written, linted, verified and gated exactly as an export's.

The result goes into a new run directory (``<run>-qat`` unless ``--output``), never over the PTQ run:
the PTQ files stay to compare with, a QAT that misses the gate replaces nothing that worked, and the
QAT run's calib.json, manifest and report name the PTQ run they started from (its calib.json and
model.int8.onnx by sha256). The QAT run's model.pt is the FP32 checkpoint, unchanged: it is the
reference the gate compares INT8 with. The fine-tuned float weights exist only inside the INT8
files; `edge-resnet sensitivity` refuses such a run (its ranges belong to weights model.pt lacks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from edge_resnet import atomic
from edge_resnet.errors import ConfigError, EdgeResNetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QATOptions:
    run: str  # an exported run directory (edge-resnet export --int8)
    output: str | None = None  # default: <run>-qat beside it
    data: str | None = None  # default: the bundled dataset the model was trained on
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 64
    learn_scales: bool = True
    scale_lr: float = 0.03  # Adam's rate for the log of the activation ranges (edge_resnet.quant.qat)
    tolerance: float | None = None  # None: the PTQ export's
    device: str = "cpu"
    threads: int | None = None
    force: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")
        if not 0 < self.scale_lr < 10:
            raise ConfigError(f"--scale-lr must be in (0, 10), got {self.scale_lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ConfigError(f"--tolerance is in top-1 points and must be >= 0, got {self.tolerance}")


def _read_run(run_dir: Path) -> dict[str, Any]:
    """The PTQ run's manifest, after checking the run has what QAT starts from."""
    from edge_resnet.calibration.files import load_calibration
    from edge_resnet.pipeline import FILES

    for key in ("checkpoint", "calib", "manifest"):
        if not (run_dir / FILES[key]).is_file():
            raise EdgeResNetError(f"{run_dir} has no {FILES[key]}; QAT starts from an INT8 export: run "
                                  f"`edge-resnet export --int8 --model {run_dir / FILES['checkpoint']}` first")
    try:
        manifest = json.loads((run_dir / FILES["manifest"]).read_text())
        int8 = manifest["int8"]
        models = int8["models"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgeResNetError(f"{run_dir / FILES['manifest']} is not the manifest of an INT8 export; "
                              f"re-export {run_dir} with --int8") from None
    if not isinstance(int8, dict) or not isinstance(models, dict):
        raise EdgeResNetError(f"{run_dir} was exported without --int8; run `edge-resnet export --int8` first")
    calib = load_calibration(run_dir / FILES["calib"])
    if calib.qat:
        raise EdgeResNetError(f"{run_dir} is already a QAT run (started from {calib.qat['started_from']['run']}); "
                              "run qat on the PTQ run itself")
    return manifest


def _export_choices(manifest: dict[str, Any]) -> dict[str, Any]:
    """The PTQ export's INT8 choices, as ExportOptions fields."""
    from edge_resnet.pipeline import FILES

    models = manifest["int8"]["models"]
    targets = [t for t in ("tensorrt", "cpu") if FILES[t] in models]
    reasons: dict[str, str] = {}
    for entry in models.values():
        reasons |= {layer: v.get("reason", "") for layer, v in (entry.get("float_layers") or {}).items()}
    tolerance = (manifest.get("accuracy") or {}).get("tolerance")
    return {"target": "all" if len(targets) == 2 else targets[0],
            "quantize_classifier": "classifier" not in reasons.values(),
            "float_layers": tuple(sorted(k for k, v in reasons.items() if v == "requested")),
            "tolerance": 1.0 if tolerance is None else float(tolerance)}


def qat_run(opts: QATOptions, *, progress: Any = None, on_epoch: Any = None):
    """Fine-tune the INT8 export in ``opts.run`` and export it into ``<run>-qat``; returns the ExportResult.

    Raises:
        EdgeResNetError: no INT8 export in the run, bad options, data that does not fit.
    """
    from edge_resnet.calibration.calibrate import calibrate_methods, graph_fingerprint
    from edge_resnet.calibration.readers import open_calibration_data
    from edge_resnet.analysis import run_dataset
    from edge_resnet.data import Transformed, collate_skip_none, eval_transform
    from edge_resnet.models.graph import trace
    from edge_resnet.pipeline import FILES, ExportOptions, export_run
    from edge_resnet.quant.plan import classifier_layers
    from edge_resnet.quant.qat import train_qat
    from edge_resnet.training.checkpoint import load_checkpoint
    from edge_resnet.training.loop import resolve_device

    opts.validate()
    run_dir = Path(opts.run)
    if not run_dir.is_dir():
        raise EdgeResNetError(f"no run directory at {run_dir}; pass the folder `edge-resnet export --int8` wrote")
    manifest = _read_run(run_dir)
    choices = _export_choices(manifest)
    if opts.tolerance is not None:
        choices["tolerance"] = opts.tolerance
    out_dir = Path(opts.output) if opts.output else run_dir.with_name(run_dir.name + "-qat")
    if out_dir.resolve() == run_dir.resolve():
        raise ConfigError(f"--output {out_dir} is the PTQ run itself; QAT writes a new run directory "
                          "(default: <run>-qat) so the PTQ files stay to compare with")
    ckpt = load_checkpoint(run_dir / FILES["checkpoint"])
    data = run_dataset(ckpt, opts.data, run_dir)
    data_name = opts.data if opts.data is not None else ckpt.extra.get("dataset")  # what run_dataset loaded
    if len(data.train) == 0:
        raise EdgeResNetError(f"{data.name} has no train images to fine-tune on")
    device = resolve_device(opts.device)
    ptq_calib_path = run_dir / FILES["calib"]
    started_from = {"run": str(run_dir), "calib_sha256": atomic.sha256_file(ptq_calib_path),
                    "int8_sha256": {name: atomic.sha256_file(run_dir / name)
                                    for name in manifest["int8"]["models"] if (run_dir / name).is_file()}}
    train_set = Transformed(data.train, eval_transform(ckpt.preprocessing))

    def train_batches(epoch: int) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(opts.seed * 1000 + epoch)
        for batch in DataLoader(train_set, batch_size=opts.batch_size, shuffle=True, generator=gen,
                                collate_fn=collate_skip_none, drop_last=len(train_set) > opts.batch_size):
            if batch is not None:
                yield batch[0]

    def refine(folded, graph, calib, hold):
        start = time.perf_counter()
        base = frozenset(choices["float_layers"]) | (
            frozenset() if choices["quantize_classifier"] else classifier_layers(graph))
        result = train_qat(folded, graph, calib.amax, train_batches, hold.batches, epochs=opts.epochs, lr=opts.lr,
                           float_layers=base, channel_mean=calib.channel_mean or None,
                           learn_scales=opts.learn_scales, scale_lr=opts.scale_lr, device=device, on_epoch=on_epoch)
        if result.best_epoch == 0:
            log.warning("QAT did not bring INT8 closer to FP32 on %s than the PTQ calibration (%.2f dB); the QAT run "
                        "holds the PTQ model, and %s stays as it was", hold.name, result.sqnr_before, run_dir)
        # ranges QAT did not train (the CPU file's conv outputs; float layers' inputs): recalibrated on the
        # fine-tuned model with the same data and method as the PTQ run
        source = open_calibration_data(data_name, ckpt.preprocessing, num=max(calib.images, 1), seed=0,
                                       dataset_seed=int(ckpt.extra.get("seed", 0)), exclude_heldout=True)
        qgraph = trace(result.model)
        fresh = calibrate_methods(qgraph, source, (calib.method,), percentile=calib.percentile or 99.99,
                                  bins=calib.bins, batch_size=opts.batch_size, device=device)[0]
        record = {"epochs": opts.epochs, "lr": opts.lr, "batch_size": opts.batch_size, "learn_scales": opts.learn_scales,
                  "scale_lr": opts.scale_lr if opts.learn_scales else None,
                  "loss": "squared logit error against FP32 / FP32 logit power (distillation)",
                  "train_images": len(train_set), "placement": "tensorrt", "float_layers": sorted(base),
                  "best_epoch": result.best_epoch, "judged_on": hold.name,
                  "sqnr_db_before": round(result.sqnr_before, 3), "sqnr_db_after": round(result.sqnr_after, 3),
                  "history": [{k: round(v, 5) for k, v in h.items()} for h in result.history],
                  "seconds": round(time.perf_counter() - start, 1),
                  "started_from": {**started_from, "method": calib.method, "fingerprint": dict(calib.fingerprint)}}
        new = dataclasses.replace(calib, amax=fresh.amax | result.amax, channel_mean={}, selection={},
                                  fingerprint={"model": graph_fingerprint(qgraph), "data": fresh.fingerprint["data"]},
                                  seconds=time.perf_counter() - start, qat=record)
        return result.model, qgraph, new

    export = ExportOptions(model=str(run_dir / FILES["checkpoint"]), data=data_name, int8=True, calib=str(ptq_calib_path),
                           output=str(out_dir), batch_size=opts.batch_size, device=opts.device, force=opts.force,
                           threads=opts.threads, **choices)
    return export_run(export, progress=progress, qat=refine)


__all__ = ["QATOptions", "qat_run"]
