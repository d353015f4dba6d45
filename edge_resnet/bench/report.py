"""The benchmark's results: the terminal table, the INT8-vs-FP32 verdicts, bench.json and bench.png."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_resnet import atomic
from edge_resnet.contract.files import BENCH_JSON, BENCH_PNG

if TYPE_CHECKING:
    from edge_resnet.bench.benchmark import Job
    from edge_resnet.runtime.manifest import Manifest

log = logging.getLogger(__name__)

FORMAT = "edge-resnet/bench-1"
JSON_NAME, PLOT_NAME = BENCH_JSON, BENCH_PNG
# speed-ups are relative to the first of these that was measured (same runtime, FP32)
REFERENCES = ("onnx-fp32", "pytorch")
DEFINITIONS = {
    "latency_ms": "backend.run of one batch (for ONNX Runtime and TensorRT including the copy of the batch in "
                  "and the logits out), per timed iteration",
    "pre_ms": "the runtime's Preprocessor on the batch's decoded frames (resize, crop, normalise, NCHW)",
    "post_ms": "Classifier.decode: softmax and top-k labels",
    "end_to_end_ms": "pre + inference + post of the same iteration",
    "throughput_ips": "batch / mean latency_ms (inference only); end_to_end_ips: batch / mean end_to_end_ms",
    "speedup": "mean latency of the reference row / mean latency of this row, at the same batch",
    "memory": "each backend runs in its own process: peak_rss_mb is that process's VmHWM (interpreter, numpy, "
              "the runtime library, frames, model, buffers); model_peak_mb is the peak minus the resident size "
              "before the model was loaded (library imported, frames decoded). On a Jetson, GPU memory is "
              "shared with the CPU and only partly visible in RSS",
    "power": "tegrastats board power (VDD_IN / POM_5V_IN, else the sum of rails) averaged over the timed loop; "
             "energy_per_image_mj = mean power x loop time / images (includes pre and post)",
}


@dataclass
class BenchResult:
    run_dir: Path
    rows: list[dict[str, Any]]  # one per backend: what was measured, the child's result, speed-ups
    reference: str | None  # key of the row speed-ups are relative to
    verdicts: list[str]  # INT8 against FP32, in plain words
    notes: list[str]  # skipped rows, a missing plot
    environment: dict[str, Any]
    settings: dict[str, Any]
    frames: dict[str, Any]
    model: dict[str, Any]
    accuracy_on: str | None
    started: str
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def build(cls, *, run_dir: Path, manifest: Manifest, jobs: list[Job], settings: dict[str, Any],
              environment: dict[str, Any], frames: dict[str, Any], started: str) -> BenchResult:
        rows = [{"key": j.key, "kind": j.kind, "label": j.label, "file": j.file.name, "precision": j.precision,
                 "size_bytes": j.size_bytes, "accuracy_top1": j.accuracy, **j.result} for j in jobs]
        for row in rows:
            if row["kind"] == "tensorrt" and row.get("settings", {}).get("precision"):
                row["precision"] = str(row["settings"]["precision"]).lower()
        reference = next((r for key in REFERENCES for r in rows if r["key"] == key and _measured(r)), None)
        for row in rows:
            for b in _batches(row):
                ref = _batch(reference, b["batch"]) if reference is not None else None
                b["speedup"] = ref["latency_ms"]["mean"] / b["latency_ms"]["mean"] if ref else None
        notes = [f"{r['label']} ({r['file']}) skipped: {r['skipped']}" for r in rows if r.get("skipped")]
        notes += [f"{r['label']} ({r['file']}) batch {b['batch']} skipped: {b['skipped']}"
                  for r in rows for b in r.get("batches", []) if b.get("skipped")]
        acc = manifest.accuracy or {}
        accuracy_on = f"{acc['dataset']} {acc['split']} ({acc['images']} images)" if "dataset" in acc else None
        return cls(run_dir=run_dir, rows=rows, reference=reference["key"] if reference else None,
                   verdicts=int8_verdicts(rows, reference), notes=notes, environment=environment,
                   settings=settings, frames=frames,
                   model={**manifest.model, "input_shape": list(manifest.input_shape)},
                   accuracy_on=accuracy_on, started=started)

    # ---------------------------------------------------------------- the table

    @property
    def has_power(self) -> bool:
        return any(b.get("power") for r in self.rows for b in _batches(r))

    def header(self) -> tuple[str, ...]:
        cols = ("format", "file", "size MB", "top-1", "batch", "runs", "mean ms", "p50 ms", "p90 ms", "p99 ms",
                "img/s", "pre ms", "post ms", "peak MB", "speed-up")
        return (*cols, "W", "mJ/img") if self.has_power else cols

    def table(self) -> list[tuple[str, ...]]:
        """One line per backend and batch size (``header()`` names the columns)."""
        out = []
        for r in self.rows:
            size = f"{r['size_bytes'] / 1e6:.2f}"
            top1 = "-" if r.get("accuracy_top1") is None else f"{100 * r['accuracy_top1']:.2f}%"
            head = (r["label"], r["file"], size, top1)
            if r.get("skipped"):
                out.append((*head, "skipped", *["-"] * (len(self.header()) - 5)))
                continue
            peak = r.get("memory", {}).get("peak_rss_mb")
            for b in r["batches"]:
                if b.get("skipped"):
                    out.append((*head, str(b["batch"]), "skipped", *["-"] * (len(self.header()) - 6)))
                    continue
                lat = b["latency_ms"]
                cells = (*head, str(b["batch"]), str(b["iterations"]), _ms(lat["mean"]), _ms(lat["p50"]),
                         _ms(lat["p90"]), _ms(lat["p99"]), f"{b['throughput_ips']:.1f}", _ms(b["pre_ms"]["mean"]),
                         _ms(b["post_ms"]["mean"]), "-" if peak is None else f"{peak:.0f}",
                         "-" if b.get("speedup") is None else f"{b['speedup']:.2f}x")
                if self.has_power:
                    p = b.get("power")
                    cells = (*cells, f"{p['mean_w']:.2f}" if p else "-",
                             f"{p['energy_per_image_mj']:.2f}" if p else "-")
                out.append(cells)
        return out

    def summary(self) -> str:
        """What ran on what, in one line, for under the table."""
        env = self.environment
        libs = env.get("libraries", {})
        parts = [f"{env.get('cpu')}, {env.get('cpus_usable')} of {env.get('cpu_count')} cores",
                 "onnxruntime " + libs.get("onnxruntime", libs.get("onnxruntime-gpu", "absent"))]
        providers = self.settings.get("providers")
        if providers:
            parts.append("providers " + ", ".join(providers))
        parts.append(f"threads {self.settings.get('threads') or 'library default'}")
        jetson = env.get("jetson")
        if jetson:
            locked = (jetson.get("clocks") or {}).get("locked")
            parts.append(f"{jetson.get('model')}, power mode {jetson.get('power_mode') or 'unknown'}, clocks "
                         + {True: "locked", False: "not locked", None: "unknown"}[locked])
        f = self.frames
        parts.append(f"frames: {f['source']} ({', '.join(f['sizes'][:3])}{'...' if len(f['sizes']) > 3 else ''})")
        if self.accuracy_on:
            parts.append(f"top-1 from the export's report on {self.accuracy_on}")
        return "; ".join(parts)

    # ---------------------------------------------------------------- files

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "created": self.started, "run_dir": str(self.run_dir), "model": self.model,
            "accuracy_on": self.accuracy_on, "frames": self.frames, "settings": self.settings,
            "definitions": DEFINITIONS, "environment": self.environment, "reference": self.reference,
            "results": self.rows, "verdicts": self.verdicts, "notes": self.notes,
        }

    def write(self, output: Path, plot: bool = True) -> None:
        """bench.json, then bench.png (each written atomically); records them in ``files``."""
        if plot and self.reference is None and not any(_measured(r) for r in self.rows):
            self.notes.append("nothing was measured, so there is no plot")
            plot = False
        plt = _pyplot() if plot else None
        if plot and plt is None:
            self.notes.append("matplotlib is not installed, so no bench.png: pip install -e '.[plots]'")
        self.files["json"] = output / JSON_NAME
        atomic.write_json(self.files["json"], self.to_dict())
        if plt is not None:
            self.files["plot"] = output / PLOT_NAME
            render_plot(self, self.files["plot"], plt)


def int8_verdicts(rows: list[dict[str, Any]], reference: dict[str, Any] | None) -> list[str]:
    """Plain sentences: for each INT8 row, where it is faster than FP32 and where it is not.

    ONNX rows are compared with the reference (ONNX Runtime FP32); a TensorRT INT8 engine with an
    FP32 engine of the same run, when there is one.
    """
    out = []
    fp32_engine = next((r for r in rows if r["kind"] == "tensorrt" and r["precision"] == "fp32" and _measured(r)),
                       None)
    for row in rows:
        if row.get("precision") != "int8" or not _measured(row):
            continue
        ref = fp32_engine if row["kind"] == "tensorrt" else reference
        if ref is None:
            out.append(f"{row['label']} ({row['file']}): no FP32 {'engine' if row['kind'] == 'tensorrt' else 'model'} "
                       "was measured to compare it with.")
            continue
        faster = []
        for b in _batches(row):
            r = _batch(ref, b["batch"])
            if r is None:
                continue
            mine, theirs = b["latency_ms"]["mean"], r["latency_ms"]["mean"]
            if mine >= theirs:
                out.append(f"INT8 is not faster than FP32 at batch {b['batch']}: {row['label']} ({row['file']}) "
                           f"takes {_ms(mine)} ms, {ref['label']} {_ms(theirs)} ms ({mine / theirs:.2f}x the time).")
            else:
                faster.append(f"{b['batch']} ({theirs / mine:.2f}x)")
        if faster:
            out.append(f"{row['label']} ({row['file']}) is faster than {ref['label']} at batch {', '.join(faster)}.")
    return out


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_plot(result: BenchResult, path: Path, plt: Any) -> None:
    """Latency (mean, with a p50-p99 band) and throughput against batch size, one line per backend."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, (ax_lat, ax_ips) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for row in result.rows:
        points = _batches(row)
        if not points:
            continue
        batches = [b["batch"] for b in points]
        label = f"{row['label']} ({row['file']})"
        line, = ax_lat.plot(batches, [b["latency_ms"]["mean"] for b in points], "o-", label=label)
        ax_lat.fill_between(batches, [b["latency_ms"]["p50"] for b in points],
                            [b["latency_ms"]["p99"] for b in points], color=line.get_color(), alpha=0.15)
        ax_ips.plot(batches, [b["throughput_ips"] for b in points], "o-", color=line.get_color(), label=label)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    for ax, title in ((ax_lat, "latency per batch (ms): mean, band p50-p99"), (ax_ips, "throughput (images/s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))  # label 2 and 5 in each decade
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlabel("batch size")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ticks = result.settings.get("batches") or []
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax_ips.legend(fontsize=7, loc="best")
    arch = result.model.get("arch", "model")
    size = result.model.get("input_shape", [None])[-1]
    fig.suptitle(f"edge-resnet bench: {arch} at {size}x{size}, {result.run_dir.name} "
                 f"({result.environment.get('cpu')}, {result.environment.get('cpus_usable')} cores)", fontsize=10)
    fig.tight_layout()
    try:
        with atomic.atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)


def _measured(row: dict[str, Any] | None) -> bool:
    return row is not None and bool(_batches(row))


def _batches(row: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The batch sizes of a row that were measured (not skipped)."""
    if row is None or row.get("skipped"):
        return []
    return [b for b in row.get("batches", []) if not b.get("skipped")]


def _batch(row: dict[str, Any], batch: int) -> dict[str, Any] | None:
    return next((b for b in _batches(row) if b["batch"] == batch), None)


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"
