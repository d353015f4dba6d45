"""Issue 23 item 4: INT8 fidelity on users' models, ours against ONNX Runtime and NVIDIA Model Optimizer.

Per model family, everyone gets the same FP32 ONNX file and the same calibration images, and every written
file is scored on the same test images that nobody calibrated or chose on:

- ours: the whole ``edge-resnet quantize`` job (``auto`` calibrator), from a folder of PNGs; it calibrates on
  ``--calib`` of them and holds out ``--holdout`` (half choose the calibrator, half verify). Both files are
  scored: the TensorRT-placed one (symmetric int8) and the CPU one (uint8 activations).
- ONNX Runtime ``quantize_static`` after ``quant_pre_process``: QDQ, per-channel int8 weights, MinMax and
  Entropy, QUInt8 (asymmetric) and QInt8 (symmetric) activations, on the images ours calibrated on.
- Model Optimizer ``modelopt.onnx.quantization.quantize(quantize_mode="int8")``, max and entropy, with its
  float parts in FP32 (``high_precision_dtype="fp32"``, equal precision with ours) and max with its default
  FP16; in its own venv (``--modelopt-python``: its pins clash with ours), CPU calibration.

Each quantization runs in a child process: wall time and peak resident set (VmHWM) are its own. Scores: logit
SQNR against the source ONNX and top-1 agreement with it, every file run by ONNX Runtime with graph
optimizations off (each Q/DQ as written: the file's own function, as TensorRT would compute it); beside it the
SQNR of the same file on ONNX Runtime's fused CPU integer kernels; the Q/DQ lint.

Models: torchvision resnet18/resnet50/resnext50_32x4d/wide_resnet50_2 and timm resnet50d/resnet26t/seresnet50/
ecaresnet50d/resnetv2_50 with random weights (no hub here), BatchNorm affine parameters drawn at random (a
timm block's last BN starts at zero, which would make every block an identity) and running statistics
re-estimated on photo crops (skimage's photographs, a third set of crops); at ``--size`` (96 px by default, to
fit two cores). And the digits ResNet-20 trained by ``edge-resnet train`` (``--checkpoint``): its 512
calibration images as quantize_memory.py makes them, the 360 test digits.

    .venv/bin/python benchmarks/int8_fidelity.py --modelopt-python /work/mo-venv/bin/python \\
        --checkpoint runs/resnet20-digits/model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ArrayReader, vm_kb  # the script's folder is on sys.path, the children's too

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
ORT_KINDS = tuple(f"ort-{m}-{a}" for m in ("MinMax", "Entropy") for a in ("QUInt8", "QInt8"))
MODELOPT_KINDS = ("modelopt-max-fp32", "modelopt-entropy-fp32", "modelopt-max-fp16")
TORCHVISION = ("resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2")
TIMM = ("resnet50d", "resnet26t", "seresnet50", "ecaresnet50d", "resnetv2_50")
FAMILIES = ("digits-resnet20", "resnet26t", "resnet50d", "resnext50_32x4d", "wide_resnet50_2", "resnet18",
            "resnet50", "seresnet50", "ecaresnet50d", "resnetv2_50")


# ---------------------------------------------------------------------------------------------- children

MODELOPT_CHILD = """
import json, sys, time
import numpy as np
def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
from modelopt.onnx.quantization import quantize
src, npy, method, precision, out = sys.argv[1:6]
data = np.load(npy)
base = kb("VmRSS"); t = time.perf_counter()
quantize(src, quantize_mode="int8", calibration_data=data, calibration_method=method, output_path=out,
         calibration_eps=["cpu"], high_precision_dtype=precision)
print(json.dumps({"baseline_kb": base, "peak_kb": kb("VmHWM"), "seconds": time.perf_counter() - t}))
"""


def child(argv: list[str]) -> int:
    kind, src, data, out = argv[:4]
    if kind == "ours":
        from edge_resnet.ptq import QuantizeOptions, quantize

        opts = QuantizeOptions(model=src, calib_data=data, output=out, **json.loads(argv[4]))
        base, t = vm_kb("VmRSS"), time.perf_counter()
        result = quantize(opts)
        seconds = time.perf_counter() - t
        info = {"calib_seconds": result.seconds["calibrate"], "images": result.calibration.images,
                "method": result.calibration.method, "selection": result.calibration.selection,
                "torch_imported": "torch" in sys.modules}
    else:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        _, method, act = kind.split("-")
        array = np.load(data)
        name = onnx.load(src, load_external_data=False).graph.input[0].name
        base, t = vm_kb("VmRSS"), time.perf_counter()
        pre = out + ".pre.onnx"
        quant_pre_process(src, pre)
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if act == "QInt8" else {}
        quantize_static(pre, out, ArrayReader(array, name), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=getattr(QuantType, act), weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method), extra_options=extra)
        seconds = time.perf_counter() - t
        os.unlink(pre)
        info = {"images": len(array)}
    print(json.dumps({"baseline_kb": base, "peak_kb": vm_kb("VmHWM"), "seconds": seconds, **info}))
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child":
    sys.exit(child(sys.argv[2:]))


# ---------------------------------------------------------------------------------------------- the parent

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from _common import machine  # noqa: E402
from edge_resnet.contract.metrics import agreement, sqnr_db  # noqa: E402
from edge_resnet.export.lint import errors, lint_model  # noqa: E402
from edge_resnet.imaging import open_rgb  # noqa: E402
from edge_resnet.ptq.frames import FolderFrames  # noqa: E402
from edge_resnet.runtime.preprocess import Preprocessor  # noqa: E402

# skimage's colour photographs, and grey ones as RGB: crops of them are the "photos"
COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat")
GREY = ("camera", "grass", "gravel", "brick", "moon", "coins")


def photo_crops(count: int, side: int, seed: int) -> list[np.ndarray]:
    """``count`` random square crops (a third to all of the short side), resized to ``side``, half mirrored."""
    import skimage.data as skdata

    photos = []
    for name in COLOUR + GREY:
        a = getattr(skdata, name)()
        photos.append(np.ascontiguousarray((np.stack([a] * 3, -1) if a.ndim == 2 else a)[..., :3]).astype(np.uint8))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        p = photos[int(rng.integers(len(photos)))]
        h, w = p.shape[:2]
        s = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(p[y:y + s, x:x + s]).resize((side, side), Image.BILINEAR)
        out.append(np.asarray(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop))
    return out


@torch.no_grad()
def reestimate_bn(model: torch.nn.Module, x: torch.Tensor, seed: int) -> None:
    """Random BN affine parameters (gamma in [0.5, 1.5], beta in [-0.1, 0.1]); running statistics re-estimated
    on ``x`` (a cumulative average over its batches), so every activation has a realistic scale."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(0.2 * (torch.rand(n, generator=gen) - 0.5))
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for i in range(0, len(x), 32):
        model(x[i:i + 32])
    model.eval()


def photo_setup(name: str, tmp: Path, size: int, calib: int, holdout: int, test: int) -> dict[str, Any]:
    import timm
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)() if name in TORCHVISION else timm.create_model(name, pretrained=False)
    pre = Preprocessor({"input_size": size, "resize": size})
    bn_images = np.stack([pre.image(c) for c in photo_crops(256, size, seed=3)])
    reestimate_bn(model, torch.from_numpy(bn_images), seed=0)
    src = tmp / f"{name}.onnx"
    torch.onnx.export(model.eval(), torch.randn(1, 3, size, size), str(src), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "n"}})
    folder = tmp / f"{name}-photos"
    folder.mkdir()
    for i, c in enumerate(photo_crops(calib + holdout, size, seed=1)):
        Image.fromarray(c).save(folder / f"p{i:05d}.png")
    return {"name": f"{name} ({size} px, random weights, BN re-estimated)", "family": name, "src": src,
            "folder": folder, "pre": pre, "test": np.stack([pre.image(c) for c in photo_crops(test, size, seed=2)]),
            "extra": {"size": size, "resize": size}}


def digits_setup(tmp: Path, checkpoint: Path, calib: int) -> dict[str, Any]:
    from quantize_memory import digits_setup as make

    s = make(tmp, checkpoint, calib + 64)
    return {**s, "family": "digits-resnet20"}


def run_child(kind: str, src: Path, data: Path, out: Path, extra: dict | None = None,
              python: str | None = None, timeout: int = 1800) -> dict[str, Any]:
    if kind.startswith("modelopt-"):
        _, method, precision = kind.split("-")
        cmd = [python, "-c", MODELOPT_CHILD, str(src), str(data), method, precision, str(out)]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    else:
        cmd = [sys.executable, __file__, "--child", kind, str(src), str(data), str(out), json.dumps(extra or {})]
        env = dict(os.environ)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"kind": kind, "error": " ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:])[:300]}
    return {"kind": kind, **json.loads(proc.stdout.strip().splitlines()[-1])}


def logits(path: Path, x: np.ndarray, batch: int = 32, exact: bool = True) -> np.ndarray:
    """ONNX Runtime CPU logits. ``exact``: graph optimizations off, so every Q/DQ pair runs as written and the
    convs in float: the function the file defines (what TensorRT computes, up to float rounding). Optimized, ONNX
    Runtime fuses Q/DQ into its integer kernels, whose u8s8 path saturates int16 pair sums on CPUs without VNNI
    (this AVX2 EPYC: docs/design-notes.md), which costs a uint8-activation file with int8 weights up to ~10 dB."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def lint_text(path: Path) -> str:
    found = lint_model(str(path), None)
    bad = errors(found)
    return f"{len(bad)} errors" if bad else "clean"


def scored(path: Path, ref: np.ndarray, test: np.ndarray, lint: bool) -> dict[str, Any]:
    lg = logits(path, test)
    out = {"sqnr_db": round(sqnr_db(ref, lg), 2), "agreement": round(100 * agreement(ref, lg), 1),
           "ort_cpu_sqnr_db": round(sqnr_db(ref, logits(path, test, exact=False)), 2)}
    if lint:
        out["lint"] = lint_text(path)
    return out


def bench_family(setup: dict[str, Any], tmp: Path, calib: int, holdout: int, kinds: list[str],
                 modelopt: str | None) -> list[dict[str, Any]]:
    ref = logits(setup["src"], setup["test"], exact=False)
    # the images ours calibrates on (its seeded split of the folder), decoded for the peers
    frames = FolderFrames(setup["folder"], setup["pre"], [], num_calib=calib, num_verify=holdout, seed=0)
    npy = tmp / f"{setup['family']}-calib.npy"
    np.save(npy, np.stack([setup["pre"].image(open_rgb(p)) for p in frames.calib_paths]))
    rows = []
    for kind in kinds:
        if kind.startswith("modelopt-") and not modelopt:
            continue
        out = tmp / f"{setup['family']}-{kind}"
        if kind == "ours":
            extra = {**setup["extra"], "num_calib": calib, "num_verify": holdout, "tolerance": 100.0}
            r = run_child(kind, setup["src"], setup["folder"], out, extra)
            files = {"tensorrt": out / "model.int8.onnx", "cpu": out / "model.int8.cpu.onnx"}
        else:
            r = run_child(kind, setup["src"], npy, out.with_suffix(".onnx"), python=modelopt)
            files = {"file": out.with_suffix(".onnx")}
        r.update(family=setup["family"], model=setup["name"])
        if "error" not in r:
            for role, path in files.items():
                r[role] = scored(path, ref, setup["test"], lint=role != "cpu")
                path.unlink()
        rows.append(r)
        print(json.dumps(r), flush=True)
    npy.unlink()
    return rows


# ---------------------------------------------------------------------------------------------- summary


def best_sqnr(r: dict[str, Any]) -> float | None:
    vals = [r[k]["sqnr_db"] for k in ("tensorrt", "cpu", "file") if k in r]
    return max(vals) if vals else None


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| family | tool | SQNR dB (TensorRT file / CPU file) | on ORT CPU kernels | agreement % | "
             "wall s (calibration) | peak MiB | lint |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['kind']} | failed: {r['error'][:80]} | | | | | |")
            continue
        if r["kind"] == "ours":
            sq = f"**{r['tensorrt']['sqnr_db']:.2f} / {r['cpu']['sqnr_db']:.2f}** ({r['method']})"
            ag = f"{r['tensorrt']['agreement']:.1f} / {r['cpu']['agreement']:.1f}"
            kern = f"{r['tensorrt']['ort_cpu_sqnr_db']:.2f} / {r['cpu']['ort_cpu_sqnr_db']:.2f}"
            wall = f"{r['seconds']:.1f} ({r['calib_seconds']:.1f})"
            lint = r["tensorrt"]["lint"]
        else:
            f = r["file"]
            sq, ag, wall, lint = f"{f['sqnr_db']:.2f}", f"{f['agreement']:.1f}", f"{r['seconds']:.1f}", f["lint"]
            kern = f"{f['ort_cpu_sqnr_db']:.2f}"
        lines.append(f"| {r['family']} | {r['kind']} | {sq} | {kern} | {ag} | {wall} | {r['peak_kb'] / 1024:,.0f} | {lint} |")
    return lines


def summary(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Per family: ours (each file) against the best peer at equal float precision (ModelOpt's FP16 row excluded)."""
    lines = ["| family | ours TensorRT / CPU | best peer (FP32 float parts) | margin of our best file | "
             "TensorRT file vs best ModelOpt |", "|---|---|---|---|---|"]
    margins, trt_margins, per = [], [], {}
    for fam in dict.fromkeys(r["family"] for r in rows):
        fr = [r for r in rows if r["family"] == fam and "error" not in r]
        ours = next((r for r in fr if r["kind"] == "ours"), None)
        peers = [r for r in fr if r["kind"] != "ours" and not r["kind"].endswith("fp16")]
        if ours is None or not peers:
            continue
        best = max(peers, key=best_sqnr)
        mo = [r for r in peers if r["kind"].startswith("modelopt-")]
        margin = best_sqnr(ours) - best_sqnr(best)
        trt = ours["tensorrt"]["sqnr_db"] - max(best_sqnr(r) for r in mo) if mo else None
        margins.append(margin)
        if trt is not None:
            trt_margins.append(trt)
        per[fam] = {"ours_tensorrt": ours["tensorrt"]["sqnr_db"], "ours_cpu": ours["cpu"]["sqnr_db"],
                    "best_peer": best["kind"], "best_peer_sqnr": best_sqnr(best), "margin": round(margin, 2),
                    "tensorrt_vs_modelopt": None if trt is None else round(trt, 2)}
        lines.append(f"| {fam} | {ours['tensorrt']['sqnr_db']:.2f} / {ours['cpu']['sqnr_db']:.2f} | "
                     f"{best_sqnr(best):.2f} ({best['kind']}) | {margin:+.2f} | "
                     + ("n/a |" if trt is None else f"{trt:+.2f} |"))
    verdict = {"families": per, "mean_margin_db": round(float(np.mean(margins)), 2) if margins else None,
               "min_margin_db": round(float(min(margins)), 2) if margins else None,
               "mean_tensorrt_vs_modelopt_db": round(float(np.mean(trt_margins)), 2) if trt_margins else None,
               "every_family_at_least_best_peer": bool(margins) and min(margins) >= 0,
               "mean_at_least_1db": bool(margins) and float(np.mean(margins)) >= 1.0}
    return lines, verdict


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--calib", type=int, default=64, help="calibration images per photo family")
    p.add_argument("--holdout", type=int, default=32, help="images ours holds out (choice + verification)")
    p.add_argument("--test", type=int, default=64, help="test photos (nobody calibrates or chooses on them)")
    p.add_argument("--checkpoint", type=Path, help="the digits ResNet-20 (edge-resnet train's model.pt)")
    p.add_argument("--modelopt-python", help="python of a venv with nvidia-modelopt[onnx]")
    p.add_argument("--peers", nargs="*", default=list(ORT_KINDS + MODELOPT_KINDS))
    p.add_argument("--output", type=Path, default=RESULTS / "int8_fidelity")
    args = p.parse_args(argv)
    kinds = ["ours", *args.peers]
    rows: list[dict[str, Any]] = []
    meta = {"machine": machine(), "load_start": load(), "size": args.size, "calib": args.calib,
            "holdout": args.holdout, "test": args.test, "kinds": kinds,
            "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__}}
    if args.modelopt_python:
        meta["versions"]["modelopt"] = subprocess.run(
            [args.modelopt_python, "-c", "import modelopt; print(modelopt.__version__)"],
            capture_output=True, text=True).stdout.strip()
    started = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for fam in args.families:
            t0, l0 = time.time(), load()
            if fam == "digits-resnet20":
                if args.checkpoint is None:
                    print("digits-resnet20: skipped (no --checkpoint)", flush=True)
                    continue
                setup, calib, holdout = digits_setup(tmp, args.checkpoint, 512), 512, 64
            else:
                setup, calib, holdout = photo_setup(fam, tmp, args.size, args.calib, args.holdout, args.test), args.calib, args.holdout
            fam_rows = bench_family(setup, tmp, calib, holdout, kinds, args.modelopt_python)
            for r in fam_rows:
                r["load"] = {"before": l0, "after": load()}
            rows += fam_rows
            meta["load_end"], meta["minutes"] = load(), round((time.time() - started) / 60, 1)
            _, verdict = summary(rows)
            args.output.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "verdict": verdict},
                                                                   indent=1) + "\n")
            print(f"{fam}: {time.time() - t0:.0f} s, load {l0} -> {load()}", flush=True)
    lines, verdict = summary(rows)
    text = [f"int8_fidelity: {meta['machine']}; {meta['minutes']} min; load {meta['load_start']} -> {meta['load_end']}",
            f"photo families at {args.size} px: {args.calib} calibration images (+{args.holdout} ours holds out), "
            f"{args.test} test photos; digits: 512 + 64 held out, 360 test digits", "", *table(rows), "", *lines, "",
            json.dumps({k: v for k, v in verdict.items() if k != "families"})]
    args.output.with_suffix(".txt").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
