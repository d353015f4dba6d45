"""The paper's degradation experiment (He et al. 2015, Fig. 1 and 6) on our model zoo.

Plain and residual CIFAR networks of two depths are trained with one budget and one seed; the
per-epoch training error (measured on the fly, with augmentation, as the paper's thin curves) and
held-out error are recorded, and a verdict is computed from the numbers: does the deeper plain net
train worse than the shallower one, and does the deeper ResNet train at least as well?

The paper's bold curves are *test* error; ours are the *validation* split's (the test split is
kept for the one final number per model, measured on the best-validation checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_resnet import atomic
from edge_resnet.contract.files import FILES
from edge_resnet.data import load_dataset
from edge_resnet.environment import machine
from edge_resnet.errors import ConfigError
from edge_resnet.models import get_spec, list_models
from edge_resnet.training import TrainConfig, TrainMonitor, train
from edge_resnet.training.loop import LAST

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
RESULT_JSON, PLOT_PNG, VERDICT_MD = "degradation.json", "degradation.png", "degradation.md"
# the verdict compares the mean training error over this last fraction of the epochs, besides the final one
TAIL_FRACTION = 0.2
# error differences below this many percentage points count as ties: near zero error they are a few images
# (one training image of the digits is 0.08 points), not a verdict
TIE_POINTS = 0.25
# a model whose best error (validation, or training over the tail) stays above this fraction of the chance
# error (1 - 1/classes) did not train: it is within a quarter of the way from chance to perfect, and no depth
# comparison can be read from it
NEAR_CHANCE = 0.75


@dataclass
class ModelCurves:
    model: str
    depth: int
    residual: bool
    # per epoch, in percent
    train_error: list[float]
    val_error: list[float]
    # test error of the best-validation checkpoint, percent
    test_error: float
    best_epoch: int
    seconds: float
    classes: int = 10  # of the dataset: chance error is 100 (1 - 1/classes)

    @property
    def chance_error(self) -> float:
        return 100.0 * (1 - 1 / self.classes)

    @property
    def trained(self) -> bool:
        """Whether the model learned anything: its best error is clearly below chance (see NEAR_CHANCE)."""
        return min(min(self.val_error, default=100.0), self.tail_train_error) <= NEAR_CHANCE * self.chance_error

    @property
    def final_train_error(self) -> float:
        return self.train_error[-1]

    @property
    def tail_train_error(self) -> float:
        """Mean training error over the last TAIL_FRACTION of the epochs (at least one)."""
        k = max(1, round(TAIL_FRACTION * len(self.train_error)))
        return statistics.fmean(self.train_error[-k:])


@dataclass
class Comparison:
    """One of the two questions of the verdict, answered from the curves."""

    question: str
    shallow: str
    deep: str
    # the paper's expectation holds on the final training error / on the tail mean
    holds_final: bool
    holds_tail: bool
    statement: str
    # False when a model of the pair did not train (near chance): the statement then says "Inconclusive"
    conclusive: bool = True


@dataclass
class DegradationResult:
    config: dict[str, Any]
    curves: dict[str, ModelCurves]
    comparisons: list[Comparison]
    seconds: float
    machine: str
    output: Path
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "machine": self.machine,
            "seconds": round(self.seconds, 1),
            "models": {
                name: {**asdict(c), "final_train_error": c.final_train_error,
                       "tail_train_error": c.tail_train_error}
                for name, c in self.curves.items()
            },
            "verdict_rules": {"tail_fraction": TAIL_FRACTION, "tie_points": TIE_POINTS,
                              "near_chance_fraction_of_chance_error": NEAR_CHANCE},
            "verdict": [asdict(c) for c in self.comparisons],
        }


def load_result(output: str | os.PathLike[str]) -> DegradationResult:
    """The result a run wrote to ``output/degradation.json`` (to redraw its plot and verdict)."""
    out = Path(output)
    d = json.loads((out / RESULT_JSON).read_text())
    keys = {f.name for f in fields(ModelCurves)}
    curves = {name: ModelCurves(**{k: v for k, v in m.items() if k in keys}) for name, m in d["models"].items()}
    return DegradationResult(config=d["config"], curves=curves, comparisons=compare(curves),
                             seconds=d["seconds"], machine=d["machine"], output=out)


def run_degradation(
    data: str | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    shortcut: str = "A",
    epochs: int = 30,
    seed: int = 0,
    output: str | os.PathLike[str] = "runs/degradation",
    batch_size: int = 128,
    limit_train: int | None = None,
    monitor: TrainMonitor | None = None,
) -> DegradationResult:
    """Train every model with the same budget and seed into ``output/<model>/`` and write
    ``degradation.json``, ``degradation.png`` and ``degradation.md`` to ``output``.

    Args:
        data: None for the bundled digits, else a CIFAR-10 or ImageFolder folder.
        models: CIFAR registry names; plain ones are ``plain<depth>``.
        shortcut: paper option A or B, for the residual models (plain ones have none).
        epochs, seed, batch_size: the budget every model shares.
        limit_train: keep about this many training images (stratified; val and test stay whole).
        monitor: per-epoch progress receiver, shared by all models.

    Raises:
        EdgeResNetError: unknown or non-CIFAR model names, an output that holds a run, bad options.
    """
    _check_models(models)
    if shortcut.upper() not in ("A", "B"):
        raise ConfigError(f"shortcut {shortcut!r} is not one of A, B (the paper's CIFAR options)")
    from edge_resnet.experiments.report import require_matplotlib

    require_matplotlib()  # fail before an hour of training, not after
    out = Path(output)
    atomic.check_writable_dir(out, f"--output {out}")
    taken = [m for m in models if (out / m / LAST).exists() or (out / m / FILES["checkpoint"]).exists()]
    if taken:
        raise ConfigError(f"{out} already holds runs of {', '.join(taken)}; pass another --output or delete it")
    train_data = data
    if limit_train is not None:
        from edge_resnet.experiments.subset import write_train_subset

        train_data = str(write_train_subset(data, limit_train, out / f"data-train{limit_train}", seed=seed))
    # read once up front: a missing folder fails before any training, and the budget can be stated in SGD steps
    splits = load_dataset(train_data, seed=seed)
    n_train = len(splits.train)
    config = {"data": data or "digits", "models": list(models), "shortcut": shortcut.upper(), "epochs": epochs,
              "seed": seed, "batch_size": batch_size, "limit_train": limit_train, "train_images": n_train,
              "sgd_steps": epochs * math.ceil(n_train / batch_size)}
    # every config is built (and so validated) before the first model trains
    hflip = False if limit_train is not None and data in (None, "digits") else None  # the subset forgets it
    cfgs = [TrainConfig(model=name, data=train_data, output=str(out / name), shortcut=shortcut.upper(),
                        epochs=epochs, batch_size=batch_size, seed=seed, hflip=hflip) for name in models]
    t0 = time.perf_counter()
    curves: dict[str, ModelCurves] = {}
    for i, (name, cfg) in enumerate(zip(models, cfgs, strict=True), 1):
        log.info("[%d/%d] training %s for %d epochs", i, len(models), name, epochs)
        result = train(cfg, monitor=monitor)
        spec = get_spec(name)
        curves[name] = ModelCurves(
            model=name, depth=spec.depth, residual=spec.residual,
            train_error=[round(100 * (1 - h.train_top1), 3) for h in result.history],
            val_error=[round(100 * (1 - h.val_top1), 3) for h in result.history],
            test_error=round(100 * (1 - result.test.top1), 3), best_epoch=result.best_epoch,
            seconds=round(result.seconds, 1), classes=len(splits.classes))
    result = DegradationResult(config=config, curves=curves, comparisons=compare(curves),
                               seconds=time.perf_counter() - t0, machine=machine(), output=out)
    write_outputs(result)
    return result


def _check_models(models: Sequence[str]) -> None:
    if not models:
        raise ConfigError("no models given; pass CIFAR model names such as plain20 resnet20")
    cifar = [m for m in list_models() if get_spec(m).family == "cifar"]
    bad = [m for m in models if m not in cifar]
    if bad:
        raise ConfigError(f"unknown or non-CIFAR model(s) {', '.join(bad)}; choose from {', '.join(cifar)}")
    if len(set(models)) != len(models):
        raise ConfigError(f"models repeat a name: {', '.join(models)}; give each once")


def compare(curves: dict[str, ModelCurves]) -> list[Comparison]:
    """The shallowest vs the deepest net of each kind (plain, residual) that has two depths."""
    out = []
    for residual in (False, True):
        kind = sorted((c for c in curves.values() if c.residual == residual), key=lambda c: c.depth)
        if len(kind) < 2 or kind[0].depth == kind[-1].depth:
            continue
        out.append(_compare(kind[0], kind[-1]))
    return out


def _compare(shallow: ModelCurves, deep: ModelCurves) -> Comparison:
    label_s, label_d = _label(shallow), _label(deep)
    final = (shallow.final_train_error, deep.final_train_error)
    tail = (shallow.tail_train_error, deep.tail_train_error)
    figures = (f"final training error {label_s} {final[0]:.2f}% vs {label_d} {final[1]:.2f}%; "
               f"mean over the last {TAIL_FRACTION:.0%} of epochs {tail[0]:.2f}% vs {tail[1]:.2f}%; "
               f"differences under {TIE_POINTS} points count as ties")
    untrained = [c for c in (shallow, deep) if not c.trained]
    if untrained:
        question = f"Does {label_d} train {'at least as well as' if deep.residual else 'worse than'} {label_s}?"
        who = " and ".join(_label(c) for c in untrained)
        chance = shallow.chance_error
        verdict = (f"Inconclusive: {who} did not train (best error above {NEAR_CHANCE * chance:.1f}%, three "
                   f"quarters of the {chance:.0f}% error of chance with {shallow.classes} classes), so this budget "
                   "says nothing about depth; train longer (more epochs, or a smaller --batch-size for more SGD "
                   "steps).")
        return Comparison(question=question, shallow=shallow.model, deep=deep.model, holds_final=False,
                          holds_tail=False, statement=f"{verdict} ({figures})", conclusive=False)
    if not deep.residual:
        question = f"Does {label_d} train worse than {label_s}?"
        holds_final, holds_tail = final[1] > final[0] + TIE_POINTS, tail[1] > tail[0] + TIE_POINTS
        if holds_final and holds_tail:
            verdict = f"Yes: the degradation problem is visible ({label_d} has the higher training error)."
        elif holds_final or holds_tail:
            verdict = "Only partly: one of the two measures shows the degradation, the other does not."
        else:
            verdict = (f"No: the degradation problem is NOT visible at this budget "
                       f"({label_d} trains no worse than {label_s}).")
    else:
        question = f"Does {label_d} train at least as well as {label_s}?"
        holds_final, holds_tail = final[1] <= final[0] + TIE_POINTS, tail[1] <= tail[0] + TIE_POINTS
        if holds_final and holds_tail:
            verdict = "Yes: the deeper ResNet trains at least as well, as in the paper."
        elif holds_final or holds_tail:
            verdict = "Only partly: one of the two measures favours the deeper ResNet, the other does not."
        else:
            verdict = f"No: {label_d} trains worse than {label_s} here, unlike the paper."
    return Comparison(question=question, shallow=shallow.model, deep=deep.model, holds_final=holds_final,
                      holds_tail=holds_tail, statement=f"{verdict} ({figures})")


def _label(c: ModelCurves) -> str:
    return f"{'ResNet' if c.residual else 'plain'}-{c.depth}"


def write_outputs(result: DegradationResult) -> None:
    """degradation.json, .png and .md in ``result.output`` (the plot needs matplotlib)."""
    from edge_resnet.experiments.report import render_markdown, render_plot

    out = result.output
    result.files = {"json": out / RESULT_JSON, "png": out / PLOT_PNG, "md": out / VERDICT_MD}
    atomic.write_json(result.files["json"], result.to_dict())
    render_plot(result, result.files["png"])
    atomic.write_text(result.files["md"], render_markdown(result))
