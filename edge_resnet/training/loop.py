"""The training loop: SGD over a registry model, an atomic checkpoint each epoch, resumable."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from edge_resnet import atomic
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.contract.files import FILES, HISTORY, LAST, MANIFEST, checkpoint_reference
from edge_resnet.data import (
    DatasetSplits,
    Transformed,
    collate_skip_none,
    dataset_name,
    eval_transform,
    load_dataset,
    train_transform,
)
from edge_resnet.errors import ConfigError, DataError
from edge_resnet.imaging import opencv_worker_init
from edge_resnet.models import ResNet, create_model, get_spec, load_weights
from edge_resnet.training.checkpoint import Checkpoint, load_checkpoint, read_weights, save_checkpoint, unwrap
from edge_resnet.training.config import TrainConfig, learning_rate
from edge_resnet.training.distributed import DistContext, init_distributed, shutdown_distributed
from edge_resnet.training.evaluate import EvalResult, eval_json_path, evaluate

log = logging.getLogger(__name__)

BEST, HISTORY_JSON = FILES["checkpoint"], HISTORY
# options that may change when a run is resumed; anything else must match the saved run
RESUMABLE_OVERRIDES = frozenset({"output", "device", "workers", "epochs"})


@dataclass
class EpochStats:
    epoch: int
    epochs: int
    lr: float
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    images_per_s: float
    seconds: float
    best: bool = False


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    test: EvalResult
    history: list[EpochStats]
    best_epoch: int
    seconds: float
    summary: str = ""
    # False on the other processes of a torchrun job: only rank 0 reports
    is_main: bool = True


class TrainMonitor(Protocol):
    """Receives progress; the CLI draws a progress bar from it, the library only logs."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float, top1: float, images_per_s: float) -> None: ...
    def epoch_end(self, stats: EpochStats) -> None: ...


class SilentMonitor:
    """For the processes of a torchrun job other than rank 0."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float, top1: float, images_per_s: float) -> None:
        pass

    def epoch_end(self, s: EpochStats) -> None:
        pass


class LogMonitor(SilentMonitor):
    def epoch_end(self, s: EpochStats) -> None:
        log.info("epoch %d/%d loss %.4f train %.2f%% val %.2f%% %.0f img/s%s", s.epoch, s.epochs,
                 s.train_loss, 100 * s.train_top1, 100 * s.val_top1, s.images_per_s, " *" if s.best else "")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def default_run_dir(cfg: TrainConfig) -> Path:
    """runs/<arch>-<dataset>, known before any data is read (so --resume can find it)."""
    checkpoint = checkpoint_reference(cfg.model)
    arch = load_checkpoint(checkpoint).arch if checkpoint is not None else cfg.model
    return Path("runs") / f"{arch}-{dataset_name(cfg.data)}"


def unfinished(run_dir: str | Path) -> tuple[int, int] | None:
    """(epochs done, epochs planned) when ``run_dir`` holds a training run that stopped before its last
    epoch (killed, interrupted); None when it finished or there is none.

    Raises:
        CheckpointError: its last.pt is unreadable.
    """
    last = Path(run_dir) / LAST
    if not last.is_file():
        return None
    state = load_checkpoint(last).extra.get("train_state")
    if not isinstance(state, dict):
        return None
    done, planned = int(state.get("epoch", 0)), int((state.get("config") or {}).get("epochs", 0))
    return (done, planned) if done < planned else None


def default_preprocessing(arch: str, data: DatasetSplits, input_size: int | None,
                          resampler: str | None = None) -> PreprocessSpec:
    """Crop to the model's input size; CIFAR nets see the whole image, ImageNet nets torchvision's
    resize-256/crop-224 ratio; normalise with the dataset's statistics when it has them; resize
    with PIL unless ``resampler`` says otherwise."""
    spec = get_spec(arch)
    size = input_size or spec.input_size
    resize = size if spec.family == "cifar" else round(size * 256 / 224)
    stats = {"mean": data.mean, "std": data.std} if data.mean is not None and data.std is not None else {}
    return PreprocessSpec(input_size=size, resize=resize, resampler=resampler or "pil", **stats)


def _start_model(cfg: TrainConfig, data: DatasetSplits) -> tuple[ResNet, str, str, PreprocessSpec]:
    """The model to train, its arch and shortcut, and its preprocessing."""
    n = len(data.classes)
    checkpoint = checkpoint_reference(cfg.model)
    if checkpoint is not None:
        base = load_checkpoint(checkpoint)
        model = create_model(base.arch, num_classes=n, shortcut=base.shortcut)
        load_weights(model, base.state_dict, source=f"checkpoint {checkpoint}")
        # the weights were learned on this preprocessing; keep it, but for a resampler asked for
        pre = base.preprocessing
        if cfg.resampler is not None and cfg.resampler != pre.resampler:
            log.info("preprocessing: resizing with %s instead of the checkpoint's %s", cfg.resampler, pre.resampler)
            pre = replace(pre, resampler=cfg.resampler)
        return model, base.arch, base.shortcut, pre
    model = create_model(cfg.model, num_classes=n, shortcut=cfg.shortcut)
    if cfg.weights:
        if load_weights(model, read_weights(cfg.weights), source=f"weights {cfg.weights}"):
            log.info("new %d-class classifier head on top of %s", n, cfg.weights)
    return model, cfg.model, cfg.shortcut.upper(), default_preprocessing(cfg.model, data, cfg.input_size, cfg.resampler)


def _loader(ds: Dataset, batch: int, workers: int, sampler=None, device: torch.device | None = None) -> DataLoader:
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                      collate_fn=collate_skip_none, pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=workers > 0, worker_init_fn=opencv_worker_init if workers > 0 else None)


def _check_resume(cfg: TrainConfig, saved: dict[str, Any], explicit: set[str]) -> TrainConfig:
    saved_cfg = TrainConfig.from_dict(saved)
    changed = sorted(k for k in explicit - RESUMABLE_OVERRIDES
                     if getattr(cfg, k) != getattr(saved_cfg, k))
    if changed:
        raise ConfigError(
            f"--resume continues the saved run, but {', '.join(changed)} differ from it; "
            "drop those options or start a new run with another --output"
        )
    overrides = {k: getattr(cfg, k) for k in explicit & RESUMABLE_OVERRIDES}
    return TrainConfig.from_dict({**saved_cfg.to_dict(), **overrides})


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    explicit: set[str] | None = None,
    monitor: TrainMonitor | None = None,
) -> TrainResult:
    """Train, checkpoint every epoch, then evaluate the best checkpoint on the test split.

    Args:
        cfg: what to train.
        resume: continue the run in ``cfg.output`` from its ``last.pt``.
        explicit: the option names the user actually gave (to tell a conflicting resume).
        monitor: progress receiver.

    Raises:
        EdgeResNetError: any problem with the options, data, weights or run directory.
    """
    monitor = monitor or LogMonitor()
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    if not ctx.is_main:
        monitor = SilentMonitor()
    try:
        return _train(cfg, resume, explicit or set(), monitor, device, ctx)
    finally:
        shutdown_distributed(ctx)


@dataclass(frozen=True)
class _Hardware:
    """How this process trains: its device and the CUDA-only speed-ups."""

    device: torch.device
    amp: bool
    channels_last: bool
    workers: int


def _hardware(cfg: TrainConfig, device: torch.device, ctx: DistContext) -> _Hardware:
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    use_cuda = device.type == "cuda"
    amp = use_cuda if cfg.amp is None else cfg.amp
    if amp and not use_cuda:
        raise ConfigError("--amp needs a CUDA device; drop --amp on the CPU")
    return _Hardware(device=device, amp=amp, channels_last=use_cuda if cfg.channels_last is None else cfg.channels_last,
                     workers=(4 if use_cuda else 0) if cfg.workers is None else cfg.workers)


def _resume_state(cfg: TrainConfig, run_dir: Path, explicit: set[str]) -> tuple[TrainConfig, Checkpoint, dict[str, Any]]:
    """The saved run's config (with the options that may change), its last checkpoint and training state."""
    last = run_dir / LAST
    if not last.is_file():
        raise ConfigError(f"nothing to resume: {last} does not exist; drop --resume to start a new run")
    resumed = load_checkpoint(last)
    state = resumed.extra.get("train_state")
    if not state:
        raise ConfigError(f"{last} has no training state to resume from")
    return _check_resume(cfg, state["config"], explicit), resumed, state


def _check_fresh(run_dir: Path) -> None:
    """A new training never replaces another run or model in its folder."""
    if (run_dir / LAST).exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; pass --resume to continue it, "
            "or --output DIR to train elsewhere"
        )
    held = [n for n in (BEST, MANIFEST) if (run_dir / n).exists()]
    if held:
        raise ConfigError(f"{run_dir} already holds a model ({', '.join(held)}) that training would replace; "
                          "pass --output DIR to train elsewhere")


def _load_data(cfg: TrainConfig) -> DatasetSplits:
    data = load_dataset(cfg.data, seed=cfg.seed)
    if cfg.num_classes is not None and cfg.num_classes != len(data.classes):
        raise ConfigError(
            f"--num-classes {cfg.num_classes} but the data has {len(data.classes)} classes; "
            "drop --num-classes or point --data at the right folder"
        )
    if len(data.train) < 1 or len(data.val) < 1:
        raise DataError(f"{data.summary()}: training needs at least one train and one val image per run")
    return data


@dataclass
class _Progress:
    """Where the run stands: the epochs done and the best so far (saved in last.pt, restored on resume)."""

    history: list[EpochStats] = field(default_factory=list)
    start_epoch: int = 1
    best_key: tuple[float, float] = (-1.0, 0.0)
    best_epoch: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Progress:
        return cls(history=[EpochStats(**h) for h in state["history"]], start_epoch=state["epoch"] + 1,
                   best_key=tuple(state["best_key"]), best_epoch=state["best_epoch"])


@dataclass
class _Epoch:
    """One epoch's training figures."""

    lr: float
    seen: int = 0
    correct: int = 0
    loss_sum: float = 0.0


def _run_epoch(net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               cfg: TrainConfig, epoch: int, hw: _Hardware, monitor: TrainMonitor, world_size: int) -> _Epoch:
    steps = len(loader)
    out, t0 = _Epoch(lr=cfg.lr), time.perf_counter()
    for i, batch in enumerate(loader):
        out.lr = learning_rate(cfg, (epoch - 1) * steps + i, steps)
        for group in optimizer.param_groups:
            group["lr"] = out.lr
        if batch is None:
            continue
        x, y = batch
        x, y = x.to(hw.device, non_blocking=True), y.to(hw.device, non_blocking=True)
        if hw.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(hw.device.type, enabled=hw.amp):
            logits = net(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = y.numel()
        out.seen += n
        out.loss_sum += loss.item() * n
        out.correct += int((logits.argmax(1) == y).sum())
        monitor.step(out.loss_sum / out.seen, out.correct / out.seen,
                     out.seen * world_size / (time.perf_counter() - t0))
    return out


def _train(cfg: TrainConfig, resume: bool, explicit: set[str], monitor: TrainMonitor,
           device: torch.device, ctx: DistContext) -> TrainResult:
    t_start = time.perf_counter()
    if checkpoint_reference(cfg.model) is not None and cfg.weights:
        raise ConfigError("--weights and a checkpoint as --model both give starting weights; keep one")
    run_dir = Path(cfg.output) if cfg.output else default_run_dir(cfg)
    if ctx.is_main:
        atomic.check_writable_dir(run_dir, f"--output {run_dir}")
    state: dict[str, Any] | None = None
    if resume:
        cfg, resumed, state = _resume_state(cfg, run_dir, explicit)
    # names this training run in every checkpoint it writes (edge_resnet.runs: which run a folder belongs to)
    run_id = str(state.get("run_id") or resumed.extra.get("run_id") or "") if state else ""
    run_id = run_id or uuid.uuid4().hex
    hw = _hardware(cfg, device, ctx)

    torch.manual_seed(cfg.seed)
    data = _load_data(cfg)
    model, arch, shortcut, pre = _start_model(cfg, data)
    if not resume:
        _check_fresh(run_dir)
    log.info("%s; run directory %s", data.summary(), run_dir)

    augment = cfg.augment if cfg.augment != "auto" else get_spec(arch).family
    hflip = data.flip_invariant if cfg.hflip is None else cfg.hflip
    train_ds = Transformed(data.train, train_transform(pre, augment, hflip))  # type: ignore[arg-type]
    val_ds = Transformed(data.val, eval_transform(pre))
    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=cfg.seed)
    per_rank_batch = max(1, cfg.batch_size // ctx.world_size)
    train_loader = _loader(train_ds, per_rank_batch, hw.workers, sampler, hw.device)
    val_loader = _loader(Subset(val_ds, range(ctx.rank, len(val_ds), ctx.world_size)), per_rank_batch, hw.workers,
                         device=hw.device)

    model.to(hw.device)
    if hw.channels_last:
        model.to(memory_format=torch.channels_last)
    device_ids = [hw.device.index] if hw.device.type == "cuda" else None
    net: nn.Module = DistributedDataParallel(model, device_ids=device_ids) if ctx.enabled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=hw.amp)
    progress = _Progress()
    if state is not None:
        load_weights(model, resumed.state_dict, source=LAST)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        progress = _Progress.from_state(state)
        log.info("resuming %s after epoch %d of %d", run_dir, state["epoch"], cfg.epochs)

    def make_checkpoint(extra: dict[str, Any]) -> Checkpoint:
        sd = {k: v.detach().cpu().contiguous() for k, v in unwrap(net).state_dict().items()}
        return Checkpoint(arch=arch, shortcut=shortcut, classes=data.classes, preprocessing=pre,
                          state_dict=sd, extra={"dataset": data.name, "seed": cfg.seed, "run_id": run_id, **extra})

    for epoch in range(progress.start_epoch, cfg.epochs + 1):
        # Reseeding per epoch makes a resumed run draw the same batches and augmentations.
        torch.manual_seed(cfg.seed * 100_003 + epoch * 1_009 + ctx.rank)
        sampler.set_epoch(epoch)
        net.train()
        monitor.epoch_start(epoch, cfg.epochs, len(train_loader))
        t0 = time.perf_counter()
        done = _run_epoch(net, train_loader, optimizer, scaler, cfg, epoch, hw, monitor, ctx.world_size)
        train_seconds = time.perf_counter() - t0
        val = evaluate(net, val_loader, data.classes, device=hw.device, channels_last=hw.channels_last, amp=hw.amp)
        key = (val.top1, -val.loss)
        stats = EpochStats(epoch=epoch, epochs=cfg.epochs, lr=done.lr, train_loss=done.loss_sum / max(done.seen, 1),
                           train_top1=done.correct / max(done.seen, 1), val_loss=val.loss, val_top1=val.top1,
                           images_per_s=done.seen * ctx.world_size / train_seconds,
                           seconds=time.perf_counter() - t0, best=key >= progress.best_key)
        progress.history.append(stats)
        if stats.best:
            progress.best_key, progress.best_epoch = key, epoch
        if ctx.is_main:
            metrics = {"epoch": epoch, "val_top1": val.top1, "val_loss": val.loss}
            if stats.best:
                save_checkpoint(run_dir / BEST, make_checkpoint(metrics))
            save_checkpoint(run_dir / LAST, make_checkpoint({**metrics, "train_state": {
                "config": cfg.to_dict(), "epoch": epoch, "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "history": [asdict(h) for h in progress.history],
                "best_key": list(progress.best_key), "best_epoch": progress.best_epoch,
            }}))
            atomic.write_json(run_dir / HISTORY_JSON, {"config": cfg.to_dict(),
                                                       "epochs": [asdict(h) for h in progress.history]})
        monitor.epoch_end(stats)

    if ctx.enabled:
        torch.distributed.barrier()
    test = _test_best(model, net, data, pre, run_dir, hw, ctx, per_rank_batch)
    return TrainResult(run_dir=run_dir, checkpoint=run_dir / BEST, test=test, history=progress.history,
                       best_epoch=progress.best_epoch, seconds=time.perf_counter() - t_start, summary=data.summary(),
                       is_main=ctx.is_main)


def _test_best(model: nn.Module, net: nn.Module, data: DatasetSplits, pre: PreprocessSpec, run_dir: Path,
               hw: _Hardware, ctx: DistContext, per_rank_batch: int) -> EvalResult:
    """The best checkpoint on the test split (written beside it by the main process)."""
    best = load_checkpoint(run_dir / BEST)
    load_weights(model, best.state_dict, source=str(run_dir / BEST))
    test_ds = Transformed(data.test, eval_transform(pre))
    test_loader = _loader(Subset(test_ds, range(ctx.rank, len(test_ds), ctx.world_size)), per_rank_batch,
                          hw.workers, device=hw.device)
    test = evaluate(net, test_loader, data.classes, device=hw.device, channels_last=hw.channels_last, amp=hw.amp)
    if ctx.is_main:
        atomic.write_json(eval_json_path(run_dir, data.name, "test"), {"checkpoint": str(run_dir / BEST),
                                                                       "split": "test", "dataset": data.name,
                                                                       **test.to_dict()})
    return test
