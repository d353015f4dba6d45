"""Top-1/top-5, per-class accuracy and the confusion matrix of a model over a data loader."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from edge_resnet.data import DatasetSplits, Transformed, collate_skip_none, eval_transform, load_dataset
from edge_resnet.errors import CheckpointError
from edge_resnet.training.checkpoint import Checkpoint, load_checkpoint
from edge_resnet.training.distributed import all_reduce_sum


@dataclass
class EvalResult:
    classes: list[str]
    # confusion[true][predicted] image counts
    confusion: list[list[int]]
    top5_correct: int
    loss_sum: float

    @property
    def n(self) -> int:
        return sum(map(sum, self.confusion))

    @property
    def correct(self) -> int:
        return sum(self.confusion[i][i] for i in range(len(self.classes)))

    @property
    def top1(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def top5(self) -> float:
        return self.top5_correct / self.n if self.n else 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else 0.0

    def per_class(self) -> list[dict[str, Any]]:
        rows = []
        for i, name in enumerate(self.classes):
            total = sum(self.confusion[i])
            rows.append({"class": name, "images": total, "correct": self.confusion[i][i],
                         "accuracy": self.confusion[i][i] / total if total else None})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.n, "top1": self.top1, "top5": self.top5, "loss": self.loss,
            "per_class": self.per_class(), "classes": self.classes, "confusion": self.confusion,
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor] | None],
    classes: list[str],
    *,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    amp: bool = False,
) -> EvalResult:
    """Run ``model`` in eval mode over ``batches``; under torchrun the counts are summed over ranks.

    top-5 means "the label is among the min(5, classes) highest logits".
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in batches:
        if batch is None:
            continue
        x, y = batch
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
        confusion += torch.bincount(y * k + pred, minlength=k * k).view(k, k)
        topk = logits.topk(min(5, k), dim=1).indices
        top5 += (topk == y[:, None]).any(1).sum()
    model.train(was_training)
    for t in (confusion, top5, loss_sum):
        all_reduce_sum(t)
    return EvalResult(classes=list(classes), confusion=confusion.cpu().tolist(),
                      top5_correct=int(top5), loss_sum=float(loss_sum))


def eval_json_path(run_dir: Path, dataset: str, split: str) -> Path:
    """Where an evaluation of ``run_dir``'s model on ``dataset``/``split`` is written."""
    return run_dir / f"eval-{dataset}-{split}.json"


def check_classes(ckpt: Checkpoint, data: DatasetSplits, path: str | Path) -> None:
    """The checkpoint's head must name the dataset's classes, in the same order."""
    if ckpt.classes == data.classes:
        return
    if len(ckpt.classes) != len(data.classes):
        raise CheckpointError(
            f"checkpoint {path} has {len(ckpt.classes)} classes but {data.name} has {len(data.classes)}; "
            f"evaluate on data with the same classes, or fine-tune first: "
            f"edge-resnet train --model {path} --data <folder>"
        )
    raise CheckpointError(
        f"checkpoint {path} classes {ckpt.classes[:5]}... differ from {data.name}'s {data.classes[:5]}...; "
        "the class subfolders must be named as in training"
    )


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    device: str = "cpu",
    seed: int | None = None,
) -> tuple[EvalResult, Checkpoint, DatasetSplits]:
    """Evaluate one of our checkpoints on a split, with the checkpoint's own preprocessing.

    ``seed`` picks the split of datasets without one; None uses the seed the model was trained with.

    Raises:
        EdgeResNetError: unreadable checkpoint, missing data, class mismatch.
    """
    ckpt = load_checkpoint(path)
    if seed is None:
        seed = int(ckpt.extra.get("seed", 0))
    dataset = load_dataset(data, seed=seed)
    check_classes(ckpt, dataset, path)
    loader = DataLoader(Transformed(dataset.split(split), eval_transform(ckpt.preprocessing)),
                        batch_size=batch_size, collate_fn=collate_skip_none)
    model = ckpt.build_model().to(device)
    return evaluate(model, loader, dataset.classes, device=device), ckpt, dataset
