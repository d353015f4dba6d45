"""The degradation experiment's figure (in the style of the paper's Fig. 6) and markdown verdict."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_resnet import atomic
from edge_resnet.errors import ConfigError

if TYPE_CHECKING:
    from edge_resnet.experiments.degradation import DegradationResult

# one colour per depth, the same in both panels (the paper's Fig. 6 does the same)
DEPTH_COLOURS = ("tab:orange", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown")


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend, or a one-line error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the degradation plot needs matplotlib; pip install -e '.[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_plot(result: DegradationResult, path: Path) -> None:
    """Two panels, plain left and ResNet right: training error thin dashed, validation error bold."""
    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    depths = sorted({c.depth for c in result.curves.values()})
    colour = {d: DEPTH_COLOURS[i % len(DEPTH_COLOURS)] for i, d in enumerate(depths)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, dpi=100)
    for ax, residual, title in ((axes[0], False, "plain"), (axes[1], True, "ResNet")):
        for c in sorted(result.curves.values(), key=lambda c: c.depth):
            if c.residual != residual:
                continue
            epochs = range(1, len(c.train_error) + 1)
            name = f"{title}-{c.depth}"
            ax.plot(epochs, c.train_error, "--", lw=1, color=colour[c.depth], label=f"{name} train")
            ax.plot(epochs, c.val_error, "-", lw=2.2, color=colour[c.depth], label=f"{name} val")
        ax.set_title(f"{title} networks")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    cfg = result.config
    fig.suptitle(f"{cfg['data']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, seed {cfg['seed']}, "
                 f"shortcut {cfg['shortcut']}: dashed = training error (augmented, on the fly), "
                 "bold = validation error", fontsize=9)
    fig.tight_layout()
    with atomic.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def command(result: DegradationResult) -> str:
    """The `edge-resnet` command line that repeats this experiment."""
    cfg = result.config
    args = ["edge-resnet experiment degradation"]
    if cfg["data"] != "digits":
        args.append(f"--data {cfg['data']}")
    args += [f"--models {' '.join(cfg['models'])}", f"--shortcut {cfg['shortcut']}", f"--epochs {cfg['epochs']}",
             f"--batch-size {cfg['batch_size']}", f"--seed {cfg['seed']}"]
    if cfg["limit_train"]:
        args.append(f"--limit-train {cfg['limit_train']}")
    args.append(f"--output {result.output}")
    return " ".join(args)


def render_markdown(result: DegradationResult) -> str:
    from edge_resnet.experiments.degradation import TAIL_FRACTION

    cfg = result.config
    images = f"{cfg['train_images']} training images" + (" (--limit-train)" if cfg["limit_train"] else "")
    budget = f"{cfg['epochs']} epochs = {cfg['sgd_steps']} SGD steps per model"
    lines = [
        "# Degradation: plain vs residual as depth grows",
        "",
        f"Data {cfg['data']}, {images}; {budget}, batch {cfg['batch_size']}, seed {cfg['seed']}, "
        f"shortcut option {cfg['shortcut']} for the ResNets; {result.seconds / 60:.1f} min on {result.machine}.",
        "",
        f"Reproduce with `{command(result)}`.",
        "",
        "## Verdict",
        "",
    ]
    for c in result.comparisons:
        lines += [f"- **{c.question}** {c.statement}"]
    if not result.comparisons:
        lines += ["- No verdict: the models do not include two depths of the same kind."]
    lines += [
        "",
        "## Figures (error %, lower is better)",
        "",
        f"| model | final train | train, last {TAIL_FRACTION:.0%} of epochs | final val | best val (epoch) "
        "| test (best-val checkpoint) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in result.curves.values():
        best = c.val_error[c.best_epoch - 1]
        lines.append(f"| {c.model} | {c.final_train_error:.2f} | {c.tail_train_error:.2f} | {c.val_error[-1]:.2f} "
                     f"| {best:.2f} ({c.best_epoch}) | {c.test_error:.2f} |")
    lines += [
        "",
        "Training error is measured on the fly over each epoch, with augmentation, as in the paper's curves. "
        "The held-out curves are the **validation** split's, where the paper's Fig. 6 plots test error; "
        "the test split gives only the last column.",
        "",
    ]
    return "\n".join(lines)
