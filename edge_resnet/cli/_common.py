"""What every command shares: the default run directory, tables, progress bars, argparse for Python 3.8.

Imports nothing heavy: building the parser must stay cheap (``edge-resnet camera --help`` on a Jetson).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT_RUN = Path("runs") / "resnet20-digits"


class _BooleanOptional(argparse.Action):
    """``--flag`` / ``--no-flag`` (argparse.BooleanOptionalAction, which Python 3.8 lacks)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        flags = []
        for s in option_strings:
            flags.append(s)
            if s.startswith("--"):
                flags.append("--no-" + s[2:])
        super().__init__(flags, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        if option_string in self.option_strings:
            setattr(namespace, self.dest, not option_string.startswith("--no-"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


BooleanOptionalAction = getattr(argparse, "BooleanOptionalAction", _BooleanOptional)


class Bounded(argparse.Action):
    """Store a number (or each of ``nargs`` numbers) that must lie in a range; one outside it stops the parser
    with a ConfigError naming the option, the range and the value, which the CLI prints as its one
    ``edge-resnet: error:`` line (exit 1) before the command runs, so nothing is written::

        p.add_argument("--size", type=int, action=Bounded, at_least=1)
        p.add_argument("--percentile", type=float, action=Bounded, above=0, at_most=100)

    Floats must also be finite (nan compares false with every bound; inf is no size, time or tolerance).
    Defaults are not checked: they are the program's own.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, at_least: float | None = None,
                 above: float | None = None, at_most: float | None = None, below: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.at_least, self.above, self.at_most, self.below = at_least, above, at_most, below

    def range(self) -> str:
        """The valid range as the error line says it: ">= 1", "> 0", "between 0 and 5", "in (0, 100]"."""
        low = self.at_least if self.at_least is not None else self.above
        high = self.at_most if self.at_most is not None else self.below
        if low is None or high is None:
            return (f">= {self.at_least}" if self.at_least is not None else f"> {self.above}" if self.above is not None
                    else f"<= {self.at_most}" if self.at_most is not None else f"< {self.below}")
        if self.at_least is not None and self.at_most is not None:
            return f"between {low} and {high}"
        return f"in {'[' if self.at_least is not None else '('}{low}, {high}{']' if self.at_most is not None else ')'}"

    def ok(self, v: float) -> bool:
        return (v == v and abs(v) != float("inf")
                and (self.at_least is None or v >= self.at_least) and (self.above is None or v > self.above)
                and (self.at_most is None or v <= self.at_most) and (self.below is None or v < self.below))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from edge_resnet.errors import ConfigError

        for v in values if isinstance(values, list) else [values]:
            if not self.ok(v):
                name = option_string or self.metavar or self.dest
                raise ConfigError(f"{name} must be {self.range()}, got {v}")
        setattr(namespace, self.dest, values)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_eval(result: Any, title: str) -> str:
    out = [f"{title}: top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  "
           f"({result.correct}/{result.n} images, loss {result.loss:.4f})"]
    rows = [(r["class"], r["images"], r["correct"], "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%")
            for r in result.per_class()]
    out.append(table(rows, ("class", "images", "correct", "accuracy")))
    if len(result.classes) <= 20:
        names = [c[:6] for c in result.classes]
        conf = [[names[i], *row] for i, row in enumerate(result.confusion)]
        out.append("confusion matrix (rows: true class, columns: predicted)")
        out.append(table(conf, ("", *names)))
    return "\n".join(out)


class ProgressMonitor:
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


@contextlib.contextmanager
def progress_bar(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    """A tqdm bar for the library's progress callbacks (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True,
              file=sys.stderr, disable=None) as t:
        yield t.update



@dataclass(frozen=True)
class Command:
    """One ``edge-resnet`` subcommand: its help line, its description, what adds its options, what runs it."""

    help: str
    description: str | None
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
