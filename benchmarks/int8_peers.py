"""Must-show of the INT8 issue: our calibration + INT8 export against ONNX Runtime's and PyTorch's PTQ.

One run, one FP32 model (ResNet-20 trained on the bundled digits), the same 512 calibration images
and the same held-out test images for everyone:

- ours: ``calibrate`` (max / percentile / entropy / mse) -> ``make_plan`` -> our INT8 ONNX, run in
  ONNX Runtime (TensorRT target, and the CPU target);
- ONNX Runtime ``quantize_static`` (QDQ, per-channel) with each calibration method, uint8 and
  symmetric int8 activations, on our FP32 ONNX of the folded model;
- PyTorch PTQ: PT2E (``torchao``) and the deprecated ``torch.ao`` FX flow, on the unfolded model.

Also measured: peak memory of calibration in child processes (VmHWM), CPU latency of resnet18/50
on ONNX Runtime, and our QDQ lint on every ONNX model. Prints tables and a PASS/FAIL summary against
the issue's targets and writes everything to ``benchmarks/results/int8_peers.json``.

    .venv/bin/python benchmarks/int8_peers.py            # full run, about 4 minutes on 2 cores
    .venv/bin/python benchmarks/int8_peers.py --quick    # smoke run (fewer timing runs, no 4096-image
                                                         # memory runs), written to int8_peers.quick.json

Run it on an otherwise idle machine: the load average is printed, and with other work on the cores
torch's calibration (2 OpenMP threads) slows down 10x or more while ONNX Runtime's barely does.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OUR_METHODS = ("max", "percentile", "entropy", "mse")
ORT_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")
ORT_HISTOGRAM = {"ort-entropy": "Entropy", "ort-percentile": "Percentile", "ort-distribution": "Distribution"}
ORT_ACTIVATIONS = {
    "uint8": ("QUInt8", {}),
    "int8 sym": ("QInt8", {"ActivationSymmetric": True, "WeightSymmetric": True}),
}
NUM_CALIB = 512
BATCH = 64

# the targets
SQNR_MARGIN_DB = 1.0
MIN_AGREEMENT = 0.998
MAX_TIME_RATIO = 1 / 3
MAX_MEMORY_RATIO = 1 / 4
MAX_MEMORY_GROWTH = 0.10


# ============================================================================ light helpers
# Everything up to the child dispatch needs only the standard library, numpy and (lazily)
# onnxruntime, so a memory child holds just what its calibrator needs: ONNX Runtime's children
# never import torch, ours import torch and our library (as a user's export does).


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the peers' chatter: ORT prints to stdout and warns on the root logger, torch warns."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall time in seconds."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def proc_status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: now, VmHWM: this process's peak resident set)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class ArrayReader:
    """ONNX Runtime's CalibrationDataReader protocol (``get_next``) over an in-memory array."""

    def __init__(self, array: np.ndarray, input_name: str, batch: int = BATCH) -> None:
        self.input_name = input_name
        self.batches = iter([array[i:i + batch] for i in range(0, len(array), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self.batches, None)
        return None if b is None else {self.input_name: b}


def ort_quantize(fp32: Path, out: Path, reader: ArrayReader | None, method: str, activations: str = "uint8",
                 cache: Path | None = None) -> None:
    """``quantize_static``: QDQ, per-channel int8 weights, ``method`` calibration (or a calibration cache)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    act_type, extra = ORT_ACTIVATIONS[activations]
    with quiet():
        quantize_static(str(fp32), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=getattr(QuantType, act_type), weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method), extra_options=dict(extra),
                        calibration_cache_path=None if cache is None else str(cache))


def child_main(argv: Sequence[str]) -> int:
    """The hidden ``--child-calib`` mode: calibrate once, print this process's memory as JSON.

    ours: our reader streams ``--source`` (a folder); ORT: ``--source`` is a .npy of the same images.
    """
    p = argparse.ArgumentParser()
    p.add_argument("--child-calib", required=True, choices=("ours", *ORT_HISTOGRAM))
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--input-name", required=True)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="int8-peers-child-") as tmp:
        if args.child_calib == "ours":
            from edge_resnet.calibration.calibrate import calibrate
            from edge_resnet.calibration.readers import open_calibration_data
            from edge_resnet.fold import fold_batchnorm
            from edge_resnet.models.graph import trace
            from edge_resnet.training import load_checkpoint

            ckpt = load_checkpoint(args.checkpoint)
            data = open_calibration_data(args.source, ckpt.preprocessing, num=args.num)
            graph = trace(fold_batchnorm(ckpt.build_model()))
            work: Callable[[], Any] = functools.partial(calibrate, graph, data, method="entropy", batch_size=BATCH)
        else:
            reader = ArrayReader(np.load(args.source), args.input_name)
            work = functools.partial(ort_quantize, Path(args.onnx), Path(tmp) / "model.int8.onnx", reader,
                                     ORT_HISTOGRAM[args.child_calib], "uint8")
        gc.collect()
        baseline = proc_status_kb("VmRSS")
        _, seconds = timed(work)
        peak = proc_status_kb("VmHWM")
    print(json.dumps({"kind": args.child_calib, "num": args.num, "baseline_kb": baseline, "peak_kb": peak,
                      "seconds": seconds}))
    return 0


if __name__ == "__main__" and "--child-calib" in sys.argv:
    sys.exit(child_main(sys.argv[1:]))


# ============================================================================ the parent's imports

import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import jitter_batchnorm, machine  # noqa: E402

from edge_resnet.calibration.calibrate import calibrate  # noqa: E402
from edge_resnet.calibration.readers import CalibrationData, open_calibration_data  # noqa: E402
from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.data import eval_transform, load_dataset  # noqa: E402
from edge_resnet.fold import fold_batchnorm  # noqa: E402
from edge_resnet.models import create_model  # noqa: E402
from edge_resnet.models.graph import INPUT, trace  # noqa: E402
from edge_resnet.quant import make_plan  # noqa: E402
from edge_resnet.training import Checkpoint, TrainConfig, load_checkpoint, train  # noqa: E402
from edge_resnet.contract.metrics import sqnr_db  # noqa: E402
from edge_resnet.export.lint import lint_model  # noqa: E402
from edge_resnet.export.onnx_writer import build_onnx, save_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "runs" / "resnet20-digits" / "model.pt"
RESULTS = Path(__file__).parent / "results"
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # importing torchao warns there about torch itself


# ============================================================================ small helpers


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))
    for n in notes:
        print(f"  {n}")


def materialise(data: CalibrationData) -> np.ndarray:
    """All calibration images as one float32 NCHW array (what the peers' data readers want)."""
    return torch.cat(list(data.batches(BATCH))).numpy()


def ort_session(model: Any, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_onnx(model: Any, x: np.ndarray) -> np.ndarray:
    sess = ort_session(model)
    return np.concatenate([sess.run(None, {INPUT: b})[0] for b in np.array_split(x, max(1, len(x) // 128))])


def run_torch(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(b)).float().numpy() for b in np.array_split(x, max(1, len(x) // 128))])


def lint_summary(model: Any) -> dict[str, Any]:
    violations = lint_model(model)
    return {"violations": len(violations), "rules": dict(Counter(v.rule for v in violations))}


def lint_text(lint: dict[str, Any] | None) -> str:
    if lint is None:
        return "n/a"
    return "clean" if lint["violations"] == 0 else f"{lint['violations']} violations"


def write_noise_pngs(folder: Path, count: int, size: int, seed: int) -> Path:
    """``count`` PNGs of coloured noise (latency calibration only needs plausible ranges)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"noise{i:04d}.png")
    return folder


def write_digit_pngs(folder: Path, count: int, seed: int) -> Path:
    """``count`` real-looking digits: the bundled train images, shifted by up to a pixel, with noise."""
    folder.mkdir(parents=True, exist_ok=True)
    train = load_dataset(None, seed=seed).train
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = np.asarray(train[i % len(train)][0], dtype=np.float32)
        img = np.roll(img, shift=tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
        img = np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"digit{i:05d}.png")
    return folder


# ============================================================================ the shared setup


@dataclass
class Setup:
    ckpt: Checkpoint
    ckpt_path: Path
    model: torch.nn.Module  # unfolded, eval mode
    graph: Any  # traced folded model
    fp32_onnx: Path
    calib: CalibrationData  # ours streams it
    calib_array: np.ndarray  # the same images, for the peers
    test_x: np.ndarray
    test_y: np.ndarray
    ref: np.ndarray  # FP32 PyTorch logits of test_x


def load_or_train() -> tuple[Path, bool]:
    if CHECKPOINT.exists():
        return CHECKPOINT, False
    print(f"no checkpoint at {CHECKPOINT}: training ResNet-20 on the digits first (about a minute)")
    train(TrainConfig(output=str(CHECKPOINT.parent)))
    return CHECKPOINT, True


def prepare(tmp: Path) -> Setup:
    ckpt_path, _ = load_or_train()
    ckpt = load_checkpoint(ckpt_path)
    seed = int(ckpt.extra.get("seed", 0))
    model = ckpt.build_model()
    graph = trace(fold_batchnorm(model))
    fp32_onnx = tmp / "model.fp32.onnx"
    save_onnx(build_onnx(graph, input_size=ckpt.preprocessing.input_size, precision="fp32"), fp32_onnx)
    calib = open_calibration_data(None, ckpt.preprocessing, num=NUM_CALIB, dataset_seed=seed)
    transform = eval_transform(ckpt.preprocessing)
    test = load_dataset(None, seed=seed).test
    samples = [test[i] for i in range(len(test))]
    test_x = torch.stack([transform(img) for img, _ in samples]).numpy()
    test_y = np.array([label for _, label in samples])
    return Setup(ckpt, ckpt_path, model, graph, fp32_onnx, calib, materialise(calib), test_x, test_y,
                 run_torch(model, test_x))


def score(setup: Setup, logits: np.ndarray) -> dict[str, float]:
    return {"sqnr_db": sqnr_db(setup.ref, logits),
            "agreement": float(np.mean(logits.argmax(1) == setup.ref.argmax(1))),
            "top1": float(np.mean(logits.argmax(1) == setup.test_y))}


# ============================================================================ accuracy: ours


def measure_ours(setup: Setup) -> list[dict[str, Any]]:
    """Each calibration method, both targets, as the export job builds them (with bias correction)."""
    rows = []
    size = setup.ckpt.preprocessing.input_size
    for method in OUR_METHODS:
        calib, seconds = timed(calibrate, setup.graph, setup.calib, method=method, batch_size=BATCH)
        for target in ("tensorrt", "cpu"):
            plan = make_plan(setup.graph, calib.amax, target, channel_mean=calib.channel_mean or None)
            onnx_model = build_onnx(setup.graph, input_size=size, precision="int8", plan=plan)
            # the same ranges without bias correction, to show what that step adds
            plain = build_onnx(setup.graph, input_size=size, precision="int8",
                               plan=make_plan(setup.graph, calib.amax, target))
            rows.append({"who": "ours", "config": f"{method}, {target} target", "method": method, "target": target,
                         "calib_s": seconds, **score(setup, run_onnx(onnx_model, setup.test_x)),
                         "sqnr_db_no_bias_correction": sqnr_db(setup.ref, run_onnx(plain, setup.test_x)),
                         "lint": lint_summary(onnx_model)})
    return rows


# ============================================================================ accuracy: ONNX Runtime


def ort_entropy_2048(fp32: Path, out: Path, array: np.ndarray, tmp: Path) -> None:
    """ORT's entropy calibrator with 2048 histogram bins.

    ``quantize_static`` forwards no bin count to the calibrator (its extra_options pass only
    symmetric/moving-average/max-outputs/percentile), so ``CalibNumBins`` is silently ignored: the
    calibrator is built by hand and its ranges handed to ``quantize_static`` as a calibration cache.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.quantize import save_tensors_data

    cache = tmp / "ort-entropy-2048.json"
    with quiet():
        calibrator = create_calibrator(fp32, None, augmented_model_path=str(tmp / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": 2048})
        calibrator.collect_data(ArrayReader(array, INPUT))
        save_tensors_data(calibrator.compute_data(), cache)
        del calibrator
    ort_quantize(fp32, out, None, "Entropy", "uint8", cache=cache)


def measure_ort(setup: Setup, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for method in ORT_METHODS:
        for activations in ORT_ACTIVATIONS:
            out = tmp / f"ort-{method}-{activations.replace(' ', '-')}.onnx"
            _, seconds = timed(ort_quantize, setup.fp32_onnx, out, ArrayReader(setup.calib_array, INPUT), method,
                               activations)
            rows.append({"who": "onnxruntime", "config": f"quantize_static {method}, {activations}",
                         "method": method, "activations": activations, "calib_s": seconds,
                         **score(setup, run_onnx(out, setup.test_x)), "lint": lint_summary(str(out))})
    out = tmp / "ort-Entropy-2048.onnx"
    _, seconds = timed(ort_entropy_2048, setup.fp32_onnx, out, setup.calib_array, tmp)
    rows.append({"who": "onnxruntime", "config": "Entropy 2048 bins (create_calibrator), uint8",
                 "method": "Entropy-2048", "activations": "uint8", "calib_s": seconds,
                 **score(setup, run_onnx(out, setup.test_x)), "lint": lint_summary(str(out))})
    return rows


# ============================================================================ accuracy: PyTorch PTQ


def _calibrate_torch(prepared: Callable[[torch.Tensor], Any], array: np.ndarray) -> None:
    with torch.no_grad():
        for i in range(0, len(array), BATCH):
            prepared(torch.from_numpy(array[i:i + BATCH]))


def pt2e_quantize(model: torch.nn.Module, array: np.ndarray, quantizer: Any) -> Any:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.from_numpy(array[:2]),)
    exported = torch.export.export(copy.deepcopy(model).eval(), example,
                                   dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
    prepared = prepare_pt2e(exported, quantizer)
    _calibrate_torch(prepared, array)
    return convert_pt2e(prepared)


def fx_quantize(model: torch.nn.Module, array: np.ndarray) -> Any:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                          (torch.from_numpy(array[:2]),))
    _calibrate_torch(prepared, array)
    return convert_fx(prepared)


def pt2e_x86(model: torch.nn.Module, array: np.ndarray) -> Any:
    """torchao's X86InductorQuantizer, default config: uint8 activations, per-channel int8 weights."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return pt2e_quantize(model, array, X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))


def pt2e_xnnpack(model: torch.nn.Module, array: np.ndarray) -> Any:
    """XNNPACKQuantizer (moved to ExecuTorch; torchao keeps a copy under torchao.testing), per-channel."""
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    return pt2e_quantize(model, array, XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)))


TORCH_FLOWS: tuple[tuple[str, Callable[[torch.nn.Module, np.ndarray], Any]], ...] = (
    ("PT2E X86InductorQuantizer (uint8 act)", pt2e_x86),
    ("PT2E XNNPACKQuantizer (int8 act)", pt2e_xnnpack),
    ("FX prepare_fx/convert_fx, x86 qconfig", fx_quantize),
)


def torch_peers() -> tuple[list[tuple[str, Callable[[torch.nn.Module, np.ndarray], Any]]], list[str]]:
    """The PyTorch PTQ flows that can run here, and why any cannot."""
    try:
        with quiet():
            import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import problem means: skip PT2E and say why
        return [f for f in TORCH_FLOWS if not f[0].startswith("PT2E")], [
            f"PT2E skipped: torchao does not work with torch {torch.__version__} here ({type(e).__name__}: {e})"]
    return list(TORCH_FLOWS), []


def measure_torch(setup: Setup) -> tuple[list[dict[str, Any]], list[str]]:
    flows, problems = torch_peers()
    rows = []
    for name, flow in flows:
        try:
            with quiet():
                quantized, seconds = timed(flow, setup.model, setup.calib_array)
                logits = run_torch(quantized, setup.test_x)
        except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash of the benchmark
            problems.append(f"{name} failed: {type(e).__name__}: {e}")
            continue
        rows.append({"who": "pytorch", "config": name, "calib_s": seconds, **score(setup, logits), "lint": None})
    return rows, problems


def print_accuracy(rows: list[dict[str, Any]], notes: Sequence[str]) -> None:
    table = []
    for r in rows:
        extra = r.get("sqnr_db_no_bias_correction")
        table.append([r["who"], r["config"], f"{r['sqnr_db']:.2f}",
                      "" if extra is None else f"{extra:.2f}",
                      f"{100 * r['agreement']:.2f}%", f"{100 * r['top1']:.2f}%", f"{r['calib_s']:.2f}",
                      lint_text(r["lint"])])
    print_table(f"INT8 accuracy: ResNet-20, digits test split, {NUM_CALIB} calibration images",
                ["who", "configuration", "SQNR dB", "w/o bias corr", "agree", "top-1", "calib s", "QDQ lint"],
                table, notes)


# ============================================================================ calibration time


def measure_calibration_time(setup: Setup, tmp: Path, repeats: int) -> dict[str, dict[str, Any]]:
    """Our entropy calibration against ORT's Entropy quantize_static (uint8), taking turns; medians.

    Ours reads and preprocesses the images inside the timing; ORT gets them preloaded.
    """
    runs: dict[str, list[float]] = {"ours entropy (calibrate)": [], "ORT Entropy (quantize_static)": []}
    for _ in range(repeats):
        _, seconds = timed(calibrate, setup.graph, setup.calib, method="entropy", batch_size=BATCH)
        runs["ours entropy (calibrate)"].append(seconds)
        _, seconds = timed(ort_quantize, setup.fp32_onnx, tmp / "ort-entropy-timing.onnx",
                           ArrayReader(setup.calib_array, INPUT), "Entropy", "uint8")
        runs["ORT Entropy (quantize_static)"].append(seconds)
    return {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in runs.items()}


def print_calibration_time(times: dict[str, dict[str, Any]]) -> None:
    table = [[k, f"{v['median_s']:.2f}", " ".join(f"{t:.2f}" for t in v["runs_s"])] for k, v in times.items()]
    print_table(f"Calibration wall time, {NUM_CALIB} images, the two taking turns",
                ["calibration", "median s", "runs s"], table)


# ============================================================================ memory (child processes)


def run_child(kind: str, num: int, source: Path, setup: Setup) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-calib", kind, "--num", str(num),
           "--source", str(source), "--checkpoint", str(setup.ckpt_path), "--onnx", str(setup.fp32_onnx),
           "--input-name", INPUT]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"kind": kind, "num": num, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(setup: Setup, tmp: Path, quick: bool) -> list[dict[str, Any]]:
    """Peak RSS of one calibration, per calibrator and image count, each in a fresh process.

    Everyone calibrates on the same images: ours streams them from a folder of PNGs through our
    reader; ONNX Runtime gets the same selection, decoded by the parent into a .npy it loads.
    """
    counts = (NUM_CALIB,) if quick else (NUM_CALIB, 4096)
    folder = write_digit_pngs(tmp / "digits-4096", max(counts), seed=int(setup.ckpt.extra.get("seed", 0)))
    rows = []
    for num in counts:
        array = tmp / f"digits-{num}.npy"
        np.save(array, materialise(open_calibration_data(folder, setup.ckpt.preprocessing, num=num)))
        rows.append(run_child("ours", num, folder, setup))
        rows.extend(run_child(kind, num, array, setup) for kind in ORT_HISTOGRAM)
        array.unlink()
    return rows


def _memory_cells(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["error: " + " ".join(r["error"]), "", "", ""]
    peak, base = r["peak_kb"] / 1024, r["baseline_kb"] / 1024
    return [f"{peak:.0f}", f"{base:.0f}", f"{peak - base:.0f}", f"{r['seconds']:.1f}"]


def print_memory(rows: list[dict[str, Any]]) -> None:
    table = [[r["kind"], r["num"], *_memory_cells(r)] for r in rows]
    print_table("Calibration memory (each row its own child process, images from a folder of digit PNGs)",
                ["calibrator", "images", "peak MB", "baseline MB", "peak-baseline MB", "calib s"], table,
                ["peak = the child's VmHWM at the end; baseline = its VmRSS just before calibrating "
                 "(after imports, model and data)",
                 "ru_maxrss is not used: it is inherited across fork+exec and can report the parent's peak",
                 "ours: calibrate(entropy) streaming the PNGs (torch + our library imported: ~0.5 GB of it is "
                 "libtorch); ORT: quantize_static, uint8, the same images preloaded from a .npy (in its baseline), "
                 "no torch in the process"])


# ============================================================================ CPU latency


LATENCY_CASES = (("resnet18", 1), ("resnet50", 16))


def latency_models(arch: str, batch: int, tmp: Path, calib_folder: Path) -> dict[str, Path]:
    """Our FP32, our INT8 (CPU and TensorRT targets) and ORT's uint8 QDQ of one random-weight model."""
    model = create_model(arch, num_classes=1000)
    jitter_batchnorm(model, seed=0)
    graph = trace(fold_batchnorm(model.eval()))
    spec = PreprocessSpec.imagenet(224)
    data = open_calibration_data(calib_folder, spec, num=32)
    calib = calibrate(graph, data, method="entropy", batch_size=batch)
    paths = {name: tmp / f"{arch}.{name}.onnx" for name in ("fp32", "ours int8 cpu", "ours int8 tensorrt", "ort uint8")}
    save_onnx(build_onnx(graph, input_size=224, precision="fp32"), paths["fp32"])
    for target, key in (("cpu", "ours int8 cpu"), ("tensorrt", "ours int8 tensorrt")):
        plan = make_plan(graph, calib.amax, target, channel_mean=calib.channel_mean or None)
        save_onnx(build_onnx(graph, input_size=224, precision="int8", plan=plan), paths[key])
    ort_quantize(paths["fp32"], paths["ort uint8"], ArrayReader(materialise(data), INPUT), "MinMax", "uint8")
    return paths


def time_sessions(paths: dict[str, Path], x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, list[float]]:
    """ms of each run per model; the models take turns each round so drift hits them all alike."""
    threads = os.cpu_count() or 1
    sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    for sess in sessions.values():
        for _ in range(warmup):
            sess.run(None, {INPUT: x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, sess in sessions.items():
            _, s = timed(sess.run, None, {INPUT: x})
            times[k].append(1000 * s)
    return times


def measure_latency(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    calib_folder = write_noise_pngs(tmp / "noise", 32, 256, seed=0)
    rows = []
    for arch, batch in LATENCY_CASES:
        paths = latency_models(arch, batch, tmp, calib_folder)
        x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        runs = (5 if batch == 1 else 2) if quick else (200 if batch == 1 else 16)
        times = time_sessions(paths, x, runs)
        fp32 = statistics.median(times["fp32"])
        for key, path in paths.items():
            ms = statistics.median(times[key])
            rows.append({"model": arch, "batch": batch, "onnx": key, "ms": ms, "min_ms": min(times[key]),
                         "ratio": ms / fp32, "runs": runs, "lint": None if key == "fp32" else lint_summary(str(path))})
    return rows


def print_latency(rows: list[dict[str, Any]]) -> None:
    table = [[f"{r['model']} b{r['batch']}", r["onnx"], f"{r['ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['ratio']:.2f}x",
              r["runs"], lint_text(r["lint"])] for r in rows]
    print_table(f"CPU latency, ONNX Runtime CPU EP, {os.cpu_count()} intra-op threads, 224x224, random weights",
                ["model", "ONNX", "median ms", "min ms", "median vs FP32", "runs", "QDQ lint"], table,
                ["3 warm-up runs per session, then the sessions take turns; calibrated on 32 noise images"])


# ============================================================================ summary


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "FAIL")


def summarise(acc: list[dict[str, Any]], times: dict[str, dict[str, Any]], memory: list[dict[str, Any]],
              latency: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ours = [r for r in acc if r["who"] == "ours"]
    ours_trt = [r for r in ours if r["target"] == "tensorrt"]
    peers = [r for r in acc if r["who"] != "ours"]
    best = max(ours_trt, key=lambda r: r["sqnr_db"])
    best_peer = max(peers, key=lambda r: r["sqnr_db"])
    default = next(r for r in ours_trt if r["method"] == "entropy")
    worst_agree = min(ours, key=lambda r: r["agreement"])
    ours_entropy_s = times["ours entropy (calibrate)"]["median_s"]
    ort_entropy_s = times["ORT Entropy (quantize_static)"]["median_s"]
    ort_entropy_2048 = next(r for r in peers if r.get("method") == "Entropy-2048")
    out = [
        {"target": f"SQNR >= best peer + {SQNR_MARGIN_DB:g} dB",
         "measured": f"ours best {best['sqnr_db']:.2f} dB ({best['config']}; default entropy {default['sqnr_db']:.2f}) "
                     f"vs best peer {best_peer['sqnr_db']:.2f} dB ({best_peer['who']} {best_peer['config']}): "
                     f"{best['sqnr_db'] - best_peer['sqnr_db']:+.2f} dB",
         "ok": best["sqnr_db"] >= best_peer["sqnr_db"] + SQNR_MARGIN_DB},
        {"target": f"top-1 agreement >= {100 * MIN_AGREEMENT:.1f}% (every INT8 model of ours)",
         "measured": f"lowest {100 * worst_agree['agreement']:.2f}% ({worst_agree['config']})",
         "ok": worst_agree["agreement"] >= MIN_AGREEMENT},
        {"target": "entropy calibration time <= 1/3 of ORT Entropy quantize_static",
         "measured": f"medians: ours {ours_entropy_s:.2f} s vs ORT {ort_entropy_s:.2f} s "
                     f"(ratio {ours_entropy_s / ort_entropy_s:.2f}); ORT with 2048 bins (one run) "
                     f"{ort_entropy_2048['calib_s']:.2f} s (ratio {ours_entropy_s / ort_entropy_2048['calib_s']:.2f})",
         "ok": ours_entropy_s <= MAX_TIME_RATIO * ort_entropy_s},
    ]
    mem = {(r["kind"], r["num"]): r for r in memory if "error" not in r}
    for num in sorted({r["num"] for r in memory}):
        ort_peaks = [mem[(k, num)]["peak_kb"] for k in ORT_HISTOGRAM if (k, num) in mem]
        if ("ours", num) in mem and ort_peaks:
            ours = mem[("ours", num)]
            ours_kb, ours_growth = ours["peak_kb"], ours["peak_kb"] - ours["baseline_kb"]
            ort_growth = min(mem[(k, num)]["peak_kb"] - mem[(k, num)]["baseline_kb"] for k in ORT_HISTOGRAM
                             if (k, num) in mem)
            out.append({"target": f"peak memory <= 1/4 of ORT histogram calibrators ({num} images)",
                        "measured": f"peak: ours {ours_kb / 1024:.0f} MB vs ORT lowest {min(ort_peaks) / 1024:.0f} MB "
                                    f"(ratio {ours_kb / min(ort_peaks):.3f}); above baseline: ours "
                                    f"{ours_growth / 1024:.0f} MB vs ORT lowest {ort_growth / 1024:.0f} MB "
                                    f"(ratio {ours_growth / ort_growth:.3f})",
                        "ok": ours_kb <= MAX_MEMORY_RATIO * min(ort_peaks)})
    small, large = mem.get(("ours", NUM_CALIB)), mem.get(("ours", 4096))
    if small and large:
        growth = large["peak_kb"] / small["peak_kb"] - 1
        delta = (large["peak_kb"] - large["baseline_kb"]) / 1024, (small["peak_kb"] - small["baseline_kb"]) / 1024
        out.append({"target": f"our peak memory flat from {NUM_CALIB} to 4096 images (+<10%)",
                    "measured": f"{small['peak_kb'] / 1024:.0f} -> {large['peak_kb'] / 1024:.0f} MB ({100 * growth:+.1f}%; "
                                f"above baseline {delta[1]:.0f} -> {delta[0]:.0f} MB)",
                    "ok": growth < MAX_MEMORY_GROWTH})
    else:
        out.append({"target": f"our peak memory flat from {NUM_CALIB} to 4096 images (+<10%)",
                    "measured": "not measured (--quick)", "ok": None})
    for arch, batch in LATENCY_CASES:
        ratio = {r["onnx"]: r["ratio"] for r in latency if r["model"] == arch}
        out.append({"target": f"CPU target INT8/FP32 latency <= ORT uint8's, {arch} b{batch}",
                    "measured": f"ours {ratio['ours int8 cpu']:.2f}x vs ORT {ratio['ort uint8']:.2f}x "
                                f"({100 * (ratio['ours int8 cpu'] / ratio['ort uint8'] - 1):+.0f}%; "
                                f"ours TensorRT target {ratio['ours int8 tensorrt']:.2f}x)",
                    "ok": ratio["ours int8 cpu"] <= ratio["ort uint8"]})
    exported = ours_trt + [r for r in latency if r["onnx"] == "ours int8 tensorrt"]
    dirty = [r for r in exported if r["lint"]["violations"]]
    ort_lint = [r["lint"]["violations"] for r in peers if r["lint"] is not None]
    out.append({"target": "QDQ lint clean on every TensorRT-target export",
                "measured": f"{len(exported) - len(dirty)}/{len(exported)} clean; ORT's quantize_static outputs: "
                            f"{sum(v > 0 for v in ort_lint)}/{len(ort_lint)} flagged ({min(ort_lint)}-{max(ort_lint)} violations)",
                "ok": not dirty})
    return out


def print_summary(rows: list[dict[str, Any]]) -> None:
    print("\nSummary against the issue's targets")
    for r in rows:
        print(f"  [{verdict(r['ok'])}] {r['target']}: {r['measured']}")


# ============================================================================ main


def load() -> float:
    """The 1-minute load average: other work on these cores inflates every timing here."""
    return round(os.getloadavg()[0], 2)


def versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime

    try:
        import torchao

        ao: str | None = torchao.__version__
    except Exception:  # noqa: BLE001
        ao = None
    return {"torch": torch.__version__, "torchao": ao, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer timing runs, no 4096-image memory runs")
    args = p.parse_args(argv)

    start = time.perf_counter()
    loads = {"start": load()}
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    if loads["start"] > 0.5 * (os.cpu_count() or 1):
        print(f"note: the CPUs are busy before we start (1-minute load average {loads['start']:.1f} on "
              f"{os.cpu_count()} cores): every timing below is inflated and noisy")
    with tempfile.TemporaryDirectory(prefix="int8-peers-") as tmp_name:
        tmp = Path(tmp_name)
        setup = prepare(tmp)
        print(f"model: {setup.ckpt_path} ({setup.ckpt.arch}, shortcut {setup.ckpt.shortcut}); "
              f"calibration: {setup.calib.name}; test: {len(setup.test_y)} images, FP32 top-1 "
              f"{100 * np.mean(setup.ref.argmax(1) == setup.test_y):.2f}%")
        ours = measure_ours(setup)
        ort_rows = measure_ort(setup, tmp)
        torch_rows, problems = measure_torch(setup)
        accuracy = ours + ort_rows + torch_rows
        print_accuracy(accuracy, [
            "SQNR and agree(ment) vs the FP32 PyTorch logits; ours as the export job builds it (bias corrected)",
            "calib s: wall time of calibration (ours: reading + preprocessing the images, collect, calibrators; "
            "ORT: quantize_static from preloaded arrays; PyTorch: export/prepare, calibrate, convert)",
            "ORT's quantize_static ignores CalibNumBins (it forwards no bin count): its 128-bin Entropy equals MinMax; "
            "the 2048-bin row uses create_calibrator + calibration_cache_path",
            *problems])
        times = measure_calibration_time(setup, tmp, repeats=1 if args.quick else 5)
        print_calibration_time(times)
        loads["after accuracy and time"] = load()
        memory = measure_memory(setup, tmp, args.quick)
        print_memory(memory)
        loads["after memory"] = load()
        latency = measure_latency(tmp, args.quick)
        print_latency(latency)
        loads["end"] = load()
    summary = summarise(accuracy, times, memory, latency)
    print_summary(summary)
    wall = time.perf_counter() - start
    print(f"\nmachine: {machine()}")
    print(f"1-minute load average: {', '.join(f'{k} {v:.1f}' for k, v in loads.items())} ({os.cpu_count()} cores)")
    print(f"total wall time {wall:.0f} s{' (--quick)' if args.quick else ''}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("int8_peers.quick.json" if args.quick else "int8_peers.json")
    out.write_text(json.dumps({
        "machine": machine(), "versions": versions(), "quick": args.quick, "wall_s": wall,
        "model": str(setup.ckpt_path), "calibration_images": NUM_CALIB, "test_images": int(len(setup.test_y)),
        "load_average": loads, "accuracy": accuracy, "calibration_time": times, "memory": memory,
        "latency": latency, "problems": problems,
        "summary": [{**r, "verdict": verdict(r["ok"])} for r in summary],
    }, indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
