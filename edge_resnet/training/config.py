"""Training configuration: one frozen dataclass, its defaults those of the paper where it has one."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from edge_resnet.errors import ConfigError
from edge_resnet.contract.preprocess import RESAMPLERS

# training augmentations (edge_resnet.data.transforms)
AUGMENTS = ("cifar", "imagenet", "none")
SCHEDULES = ("cosine", "step")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    # registry name (fresh weights) or the path of one of our checkpoints (fine-tune from it)
    model: str = "resnet20"
    # None for the bundled digits, else an ImageFolder or CIFAR-10 folder
    data: str | None = None
    # run directory; None means runs/<model>-<dataset>
    output: str | None = None
    # paper option A/B/C for the shortcut where the shape changes
    shortcut: str = "B"
    # weights file to start from (torchvision .pth, timm, ours); a head of another size is replaced
    weights: str | None = None
    # must equal the dataset's class count when given (a guard for fine-tuning)
    num_classes: int | None = None
    # network input side; None: the model's default (32 CIFAR, 224 ImageNet)
    input_size: int | None = None
    # the resize implementation of the preprocessing (edge_resnet.contract.preprocess.RESAMPLERS); None: "pil"
    # for a fresh model, the checkpoint's own when fine-tuning one of ours
    resampler: str | None = None
    epochs: int = 30
    # global batch size; under torchrun each process takes batch_size / world_size
    batch_size: int = 128
    lr: float = 0.1
    # SGD momentum and weight decay of the paper (sections 3.4 and 4.2)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # "cosine" to zero, or "step": divide by 10 at step_milestones (fractions of the run; the
    # paper's CIFAR schedule is 32k and 48k of 64k iterations)
    schedule: str = "cosine"
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    # linear warm-up from lr/10 over this many epochs (the paper warms ResNet-110 up at 0.01)
    warmup_epochs: float = 1.0
    # "auto": cifar pad-and-crop for CIFAR nets, random-resized crop for ImageNet nets
    augment: str = "auto"
    # None: flip only where the dataset is flip-invariant (digits are not)
    hflip: bool | None = None
    device: str = "auto"
    # mixed precision and channels_last memory format; None: on when training on CUDA
    amp: bool | None = None
    channels_last: bool | None = None
    # DataLoader worker processes; None: 0 on CPU (they would compete for the cores), 4 on CUDA
    workers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.schedule in SCHEDULES, f"schedule {self.schedule!r} is not one of {SCHEDULES}"),
            (self.augment in ("auto", *AUGMENTS), f"augment {self.augment!r} is not one of auto, {', '.join(AUGMENTS)}"),
            (self.device in DEVICES, f"device {self.device!r} is not one of {DEVICES}"),
            (self.warmup_epochs >= 0, f"warmup epochs must be >= 0, got {self.warmup_epochs}"),
            (self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.num_classes is None or self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}"),
            (self.input_size is None or self.input_size >= 8, f"input size must be >= 8, got {self.input_size}"),
            (self.resampler in (None, *RESAMPLERS), f"resampler {self.resampler!r} is not one of {', '.join(RESAMPLERS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step_milestones"] = list(self.step_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "step_milestones" in d:
            d["step_milestones"] = tuple(d["step_milestones"])
        return cls(**d)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step ``step`` (0-based); stateless, so resuming needs no state."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (0.1 + 0.9 * step / warmup)
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))
    drops = sum(step >= m * total for m in cfg.step_milestones)
    return cfg.lr * 0.1**drops
