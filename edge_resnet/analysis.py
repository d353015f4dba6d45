"""INT8 accuracy analysis of a run: the held-out images decisions are made on, and the sensitivity job.

Like ``pipeline`` and ``deploy``, a job above the stages (no stage imports it). Choices the export
makes about INT8 (which calibrator, which layers stay float) are measured on the dataset's
validation split: not the calibration images (a calibrator would be judged on the images it was
fitted to) and not the test split (which must stay unseen until the report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from edge_resnet.calibration.files import load_calibration
from edge_resnet.data import DatasetSplits, Transformed, collate_skip_none, eval_transform
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.errors import ConfigError, EdgeResNetError

log = logging.getLogger(__name__)

# held-out images kept in memory for the simulation's repeated passes: bounded by bytes, so a
# 224-pixel model keeps fewer images than a 32-pixel one (at least MIN_HELD_OUT)
HELD_OUT_BYTES = 256 * 2**20
MIN_HELD_OUT = 64
MAX_HELD_OUT = 2048


@dataclass
class HeldOut:
    """Preprocessed held-out images (in batches) and their labels."""

    batches: list[Tensor]
    labels: np.ndarray
    name: str  # e.g. "synthetic-digits val (716 images)"

    def __len__(self) -> int:
        return len(self.labels)


def held_out(data: DatasetSplits, spec: PreprocessSpec, *, batch_size: int = 64, seed: int = 0,
             limit: int | None = None) -> HeldOut:
    """The validation split (the test split when there is none), a seeded subset when it is large.

    Raises:
        EdgeResNetError: neither split has an image.
    """
    split = "val" if len(data.val) else "test"
    base = data.split(split)
    if len(base) == 0:
        raise EdgeResNetError(f"{data.name} has no val or test images to judge INT8 choices on; add a val/ split")
    if split == "test":
        log.warning("%s has no val split: INT8 choices are judged on the test split that also verifies", data.name)
    per_image = 3 * spec.input_size**2 * 4
    n = min(len(base), limit or MAX_HELD_OUT, max(MIN_HELD_OUT, HELD_OUT_BYTES // per_image))
    # splits are sorted by class: a seeded sample, not the first n
    idx = np.sort(np.random.default_rng(seed).choice(len(base), size=n, replace=False)) if n < len(base) \
        else np.arange(len(base))
    subset = torch.utils.data.Subset(Transformed(base, eval_transform(spec)), idx.tolist())
    batches, labels = [], []
    for batch in DataLoader(subset, batch_size=batch_size, collate_fn=collate_skip_none):
        if batch is not None:
            batches.append(batch[0])
            labels.append(batch[1])
    if not batches:
        raise EdgeResNetError(f"no image of {data.name}'s {split} split could be read")
    labels_arr = torch.cat(labels).numpy()
    return HeldOut(batches, labels_arr, f"{data.name} {split} ({len(labels_arr)} images)")


def run_dataset(ckpt, data: str | None, run_dir: Path) -> DatasetSplits:
    """The dataset a run's model is judged on: ``data`` when given, else the bundled one it was trained on,
    split with the training's seed (so its held-out images are the training's).

    Raises:
        ConfigError: the model was trained on a folder and ``data`` does not name it.
    """
    from edge_resnet.data import load_dataset
    from edge_resnet.data.datasets import BUNDLED

    trained_on = ckpt.extra.get("dataset")
    if data is None and trained_on in BUNDLED:
        data = trained_on
    elif data is None and trained_on is not None:
        raise ConfigError(f"{run_dir} was trained on {trained_on!r}; pass --data with that dataset's folder")
    return load_dataset(data, seed=int(ckpt.extra.get("seed", 0)))


def run_model(ckpt, calib, calib_path: Path, device: torch.device):
    """The folded model ``calib``'s ranges belong to (equalized when the export chose it) and its graph.

    Raises:
        EdgeResNetError: the ranges belong to other weights (another checkpoint, or a QAT run's
            fine-tuned weights, which are not in model.pt).
    """
    from edge_resnet.calibration.calibrate import graph_fingerprint
    from edge_resnet.fold import fold_batchnorm
    from edge_resnet.models.graph import trace
    from edge_resnet.quant.equalize import equalize

    folded = fold_batchnorm(ckpt.build_model()).to(device)
    if calib.equalized:
        folded = equalize(folded).model
    graph = trace(folded)
    if calib.fingerprint.get("model") not in (None, graph_fingerprint(graph)):
        what = ("its ranges were learned with fine-tuned weights (quantization-aware training)" if calib.qat
                else "it was computed for other model weights")
        raise EdgeResNetError(f"{calib_path} does not belong to this model.pt: {what}; analyse the run it was "
                              "exported from, or re-export with --int8")
    return folded, graph


def sensitivity_run(run: str, *, data: str | None = None, target: str = "tensorrt", images: int | None = None,
                    batch_size: int = 64, device: str = "cpu", on_layer=None):
    """Per-layer sensitivity of an exported run (its model.pt and calib.json) on held-out images.

    Writes sensitivity.json, sensitivity.md and (with matplotlib) sensitivity.png into the run.

    Returns:
        (report, files written, a note when the PNG was skipped or None).

    Raises:
        EdgeResNetError: no run, no calibration (export with --int8 first), or data that does not fit.
    """
    from edge_resnet import atomic
    from edge_resnet.contract.files import FILES
    from edge_resnet.quant import TARGETS
    from edge_resnet.quant.sensitivity import plot, sensitivity
    from edge_resnet.training.checkpoint import load_checkpoint
    from edge_resnet.training.evaluate import check_classes
    from edge_resnet.training.loop import resolve_device

    run_dir = Path(run)
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not (run_dir / FILES["checkpoint"]).is_file():
        raise EdgeResNetError(f"{run_dir} has no {FILES['checkpoint']}; pass a run directory written by "
                              "`edge-resnet train` and `edge-resnet export --int8`")
    if not (run_dir / FILES["calib"]).is_file():
        raise EdgeResNetError(f"{run_dir} has no {FILES['calib']}; run `edge-resnet export --int8 --model {run_dir}` "
                              "first, then analyse it")
    ckpt = load_checkpoint(run_dir / FILES["checkpoint"])
    calib = load_calibration(run_dir / FILES["calib"])
    splits = run_dataset(ckpt, data, run_dir)
    check_classes(ckpt, splits, run_dir)
    dev = resolve_device(device)
    folded, graph = run_model(ckpt, calib, run_dir / FILES["calib"], dev)
    hold = held_out(splits, ckpt.preprocessing, batch_size=batch_size, limit=images)
    try:
        report = sensitivity(folded, graph, calib.amax, hold.batches, hold.labels, target=target,
                             channel_mean=calib.channel_mean or None, data=hold.name, device=dev, on_layer=on_layer)
    except KeyError as e:
        raise EdgeResNetError(f"{run_dir / FILES['calib']} does not cover this model ({e}); re-export with --int8") from None
    files = [run_dir / FILES["sensitivity_json"], run_dir / FILES["sensitivity_md"]]
    atomic.write_json(files[0], report.to_dict())
    atomic.write_text(files[1], report.to_markdown())
    note = None
    if plot(report, str(run_dir / FILES["sensitivity_png"])):
        files.append(run_dir / FILES["sensitivity_png"])
    else:
        note = "matplotlib is not installed, so no sensitivity.png: pip install 'edge-resnet[plots]'"
    return report, files, note
