"""Accuracy-aware INT8 (issue 16): ours against ONNX Runtime and NVIDIA Model Optimizer, on models INT8 hurts.

Per model, everyone gets the same FP32 ONNX (our folded export), the same calibration images (512 of
the train split) and the same test split; our own choices (calibrator, fallback layers) are made on
the validation split. Per method: FP32 top-1, INT8 top-1, top-1 agreement with FP32, logit SQNR
against the FP32 logits, and the QDQ lint of the file.

- ours: our calibration (``auto``: the calibrator chosen on the validation split) and TensorRT-target
  file, with the classifier quantized (the old default) and left float (the new default); then with
  the mixed-precision fallback (tolerance 0.5 top-1 points, cap 3 layers), listing the layers it kept
  float; cross-layer equalization (recalibrated), and the fallback on whichever of the two scored
  better on the validation split; QAT (``quant.qat.train_qat``, what `edge-resnet qat` runs) for
  ``--qat-epochs`` epochs on the train split from that same calibration, the epoch closest to FP32 on
  the validation split kept.
- ONNX Runtime ``quantize_static``: QDQ, per-channel int8 weights, symmetric int8 activations (the
  TensorRT-style setting), MinMax.
- NVIDIA Model Optimizer ONNX PTQ (int8, ``max`` and ``entropy``, CPU calibration): run in its own
  virtual environment (it pins other onnx/onnxruntime versions than ours), given with
  ``--modelopt-python``; skipped with a note when absent.

    .venv/bin/python benchmarks/int8_accuracy.py --model runs/resnet20-digits/model.pt \\
        --model runs/resnet20-synthetic-digits/model.pt --stress --modelopt-python /path/to/venv/bin/python

``--stress`` adds the stress-transformed copy of each model (outlier channels, same FP32 function).
Results: ``benchmarks/results/int8_accuracy.json`` and the printed tables (redirect to a .txt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402
from edge_resnet.calibration.calibrate import calibrate_methods  # noqa: E402
from edge_resnet.calibration.readers import open_calibration_data  # noqa: E402
from edge_resnet.export.lint import errors, lint_model  # noqa: E402
from edge_resnet.export.onnx_writer import build_onnx, save_onnx  # noqa: E402
from int8_peers import ArrayReader, ort_quantize, print_table, run_onnx  # noqa: E402

from edge_resnet.analysis import held_out  # noqa: E402
from edge_resnet.data import Transformed, eval_transform, load_dataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from edge_resnet.fold import fold_batchnorm  # noqa: E402
from edge_resnet.models.graph import INPUT, trace  # noqa: E402
from edge_resnet.quant import make_plan  # noqa: E402
from edge_resnet.quant.equalize import equalize  # noqa: E402
from edge_resnet.quant.fallback import fallback  # noqa: E402
from edge_resnet.quant.plan import classifier_layers  # noqa: E402
from edge_resnet.quant.qat import train_qat  # noqa: E402
from edge_resnet.quant.select import pick, score_calibrations  # noqa: E402
from edge_resnet.quant.stress import stress  # noqa: E402
from edge_resnet.training import load_checkpoint  # noqa: E402
from edge_resnet.accuracy import sqnr_db  # noqa: E402

RESULTS = Path(__file__).parent / "results"
NUM_CALIB = 512
BATCH = 64
TOLERANCE = 0.5  # top-1 points: the "within 0.5 of FP32"
FALLBACK_MAX = 3

MODELOPT_SCRIPT = """
import sys, numpy as np
from modelopt.onnx.quantization import quantize
src, calib, method, out = sys.argv[1:5]
quantize(src, quantize_mode="int8", calibration_data=np.load(calib), calibration_method=method,
         output_path=out, calibration_eps=["cpu"])
"""


def _score(ref: np.ndarray, out: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"top1": 100 * float(np.mean(out.argmax(1) == labels)),
            "agreement": 100 * float(np.mean(out.argmax(1) == ref.argmax(1))), "sqnr_db": sqnr_db(ref, out)}


def _lint(model: Any, float_layers: Sequence[str] | None = None) -> str:
    found = lint_model(model, float_layers)
    bad = errors(found)
    warn = len(found) - len(bad)
    return (f"{len(bad)} errors" if bad else "clean") + (f", {warn} float" if warn else "")


def modelopt(python: str, fp32: Path, calib: Path, method: str, out: Path) -> tuple[Path | None, str]:
    """Model Optimizer's ONNX PTQ in its own interpreter; (file, "") or (None, why it failed)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([python, "-c", MODELOPT_SCRIPT, str(fp32), str(calib), method, str(out)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0 or not out.exists():
        return None, (proc.stderr or proc.stdout).strip().splitlines()[-1][:200] if (proc.stderr or proc.stdout) else "failed"
    return out, ""


def bench_model(name: str, model: torch.nn.Module, ckpt: Any, data_name: str, tmp: Path,
                modelopt_python: str | None, qat_epochs: int = 2, fallback_max: int = FALLBACK_MAX) -> dict[str, Any]:
    seed = int(ckpt.extra.get("seed", 0))
    data = load_dataset(data_name, seed=seed)
    folded = fold_batchnorm(model.eval())
    graph = trace(folded)
    size = ckpt.preprocessing.input_size
    fp32 = tmp / f"{name}.fp32.onnx"
    save_onnx(build_onnx(graph, input_size=size, precision="fp32"), fp32)
    calib_data = open_calibration_data(data_name, ckpt.preprocessing, num=NUM_CALIB, dataset_seed=seed)
    calib_array = torch.cat(list(calib_data.batches(BATCH))).numpy()
    np.save(tmp / f"{name}.calib.npy", calib_array)
    transform = eval_transform(ckpt.preprocessing)
    test = [data.test[i] for i in range(len(data.test))]
    test_x = torch.stack([transform(img) for img, _ in test]).numpy()
    labels = np.array([y for _, y in test])
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(b)).numpy() for b in np.array_split(test_x, 12)])
    hold = held_out(data, ckpt.preprocessing, batch_size=BATCH)
    fp32_top1 = 100 * float(np.mean(ref.argmax(1) == labels))
    rows: list[dict[str, Any]] = []

    def add(who: str, config: str, onnx_model: Any, float_layers: Sequence[str] | None = None, **extra: Any) -> None:
        out = run_onnx(onnx_model, test_x)
        rows.append({"who": who, "config": config, **_score(ref, out, labels),
                     "lint": _lint(onnx_model, float_layers), **extra})
        print(f"  {who:11s} {config:45s} top-1 {rows[-1]['top1']:6.2f}  SQNR {rows[-1]['sqnr_db']:6.2f} dB",
              flush=True)

    start = time.perf_counter()
    calibs = calibrate_methods(graph, calib_data, batch_size=BATCH)
    scores = score_calibrations(folded, graph, calibs, hold.batches)
    calib = pick(calibs, scores)
    mean = calib.channel_mean or None
    ours_s = time.perf_counter() - start
    for cls_float, config in ((False, "PTQ, classifier INT8 (old default)"), (True, "PTQ (classifier float)")):
        layers = sorted(classifier_layers(graph)) if cls_float else []
        plan = make_plan(graph, calib.amax, "tensorrt", mean, float_layers=layers)
        add("ours", f"{config}, {calib.method}", build_onnx(graph, input_size=size, precision="int8", plan=plan),
            layers, calib_s=ours_s)
    base = frozenset(classifier_layers(graph))
    # cross-layer equalization: recalibrate the equalized model, keep whichever scores better on val
    eq = equalize(folded)
    eq_graph = trace(eq.model)
    eq_calibs = calibrate_methods(eq_graph, calib_data, batch_size=BATCH)
    eq_scores = score_calibrations(eq.model, eq_graph, eq_calibs, hold.batches)
    eq_calib = pick(eq_calibs, eq_scores)
    plan = make_plan(eq_graph, eq_calib.amax, "tensorrt", eq_calib.channel_mean or None, float_layers=sorted(base))
    add("ours", f"+equalization (CLE), {eq_calib.method}",
        build_onnx(eq_graph, input_size=size, precision="int8", plan=plan), sorted(base))
    use_eq = max(eq_scores.values()) > max(scores.values())
    g, m, c = (eq_graph, eq.model, eq_calib) if use_eq else (graph, folded, calib)
    fb = fallback(m, g, c.amax, hold.batches, hold.labels, tolerance=TOLERANCE, max_layers=fallback_max,
                  base=base, channel_mean=c.channel_mean or None)
    layers = sorted(base | set(fb.float_layers))
    plan = make_plan(g, c.amax, "tensorrt", c.channel_mean or None, float_layers=layers)
    add("ours", f"{'+equalization ' if use_eq else ''}+fallback ({', '.join(fb.float_layers) or 'none needed'})",
        build_onnx(g, input_size=size, precision="int8", plan=plan), layers, fallback=fb.to_dict())
    if qat_epochs > 0:
        train_set = Transformed(data.train, transform)

        def batches(epoch: int):
            gen = torch.Generator().manual_seed(epoch)
            for b in DataLoader(train_set, batch_size=BATCH, shuffle=True, generator=gen, drop_last=True):
                yield b[0]

        start = time.perf_counter()
        q = train_qat(m, g, c.amax, batches, hold.batches, epochs=qat_epochs, lr=1e-4, float_layers=base,
                      channel_mean=c.channel_mean or None)
        qg = trace(q.model)
        plan = make_plan(qg, q.amax, "tensorrt", None, float_layers=sorted(base))
        add("ours", f"{'+equalization ' if use_eq else ''}+QAT ({qat_epochs} epochs, kept {q.best_epoch})",
            build_onnx(qg, input_size=size, precision="int8", plan=plan), sorted(base),
            qat={"epochs": qat_epochs, "best_epoch": q.best_epoch, "val_sqnr_before": q.sqnr_before,
                 "val_sqnr_after": q.sqnr_after, "seconds": time.perf_counter() - start, "history": q.history})

    out = tmp / f"{name}.ort.onnx"
    ort_quantize(fp32, out, ArrayReader(calib_array, INPUT), "MinMax", "int8 sym")
    add("onnxruntime", "quantize_static MinMax, int8 sym", str(out))
    notes = []
    for method in ("max", "entropy"):
        if modelopt_python is None:
            notes.append("ModelOpt skipped: no --modelopt-python")
            break
        path, why = modelopt(modelopt_python, fp32, tmp / f"{name}.calib.npy", method, tmp / f"{name}.mo-{method}.onnx")
        if path is None:
            notes.append(f"ModelOpt {method} failed: {why}")
            continue
        add("modelopt", f"ONNX PTQ int8, {method}", str(path))
    return {"model": name, "data": data_name, "test_images": len(labels), "fp32_top1": fp32_top1,
            "calibration": {"method": calib.method, "selection_db": calib.selection, "images": calib.images,
                            "chosen_on": hold.name},
            "rows": rows, "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="a model.pt (trained on a bundled dataset)")
    p.add_argument("--stress", action="store_true", help="also the stress-transformed copy of each model")
    p.add_argument("--stress-scale", type=float, default=16.0)
    p.add_argument("--modelopt-python", default=None, help="python of a venv with nvidia-modelopt[onnx]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs for the +QAT row (0: no QAT row)")
    p.add_argument("--fallback-max", type=int, default=FALLBACK_MAX, help="the fallback's cap (0: off)")
    p.add_argument("--output", default=str(RESULTS / "int8_accuracy.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; 1-minute load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = []
    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as tmp_name:
        tmp = Path(tmp_name)
        for path in args.model:
            ckpt = load_checkpoint(path)
            data_name = ckpt.extra.get("dataset") or "digits"
            name = f"{ckpt.arch}-{data_name}"
            variants = [(name, ckpt.build_model())]
            if args.stress:
                variants.append((f"{name}-stress{args.stress_scale:g}",
                                 stress(ckpt.build_model(), scale=args.stress_scale, channels=2)[0]))
            for vname, model in variants:
                print(f"\n{vname} ({path})", flush=True)
                r = bench_model(vname, model, ckpt, data_name, tmp, args.modelopt_python, args.qat_epochs,
                                args.fallback_max)
                results.append(r)
                print_table(f"{vname}: FP32 top-1 {r['fp32_top1']:.2f}% on {r['test_images']} test images "
                            f"(calibrator {r['calibration']['method']}, chosen on {r['calibration']['chosen_on']})",
                            ["who", "config", "INT8 top-1", "drop", "agree", "SQNR dB", "lint"],
                            [[x["who"], x["config"], f"{x['top1']:.2f}", f"{r['fp32_top1'] - x['top1']:+.2f}",
                              f"{x['agreement']:.2f}", f"{x['sqnr_db']:.2f}", x["lint"]] for x in r["rows"]],
                            r["notes"])
    print(f"\n1-minute load at the end {os.getloadavg()[0]:.1f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"machine": machine(), "results": results}, indent=2, default=float) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
