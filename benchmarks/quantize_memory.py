"""Issue 15's must-show: `edge-resnet quantize` (torch-free, ONNX Runtime statistics) against ONNX Runtime's
quantize_static (entropy = its histogram calibrator, and minmax) and NVIDIA Model Optimizer's ONNX PTQ.

Same FP32 ONNX, same calibration images, same test inputs for everyone; every calibration runs in its own
child process and reports its own peak resident set (VmHWM from /proc/self/status) and wall time:

- ours: the whole `quantize` job (import, statistics, the four calibrators and the auto choice, the INT8
  files, verification, the run directory), streaming images from a folder of PNGs; no torch in the process;
- ONNX Runtime 1.32 `quantize_static` (QDQ, per-channel int8 weights, symmetric int8 activations), the
  same images preloaded from a .npy (counted in its baseline, not its peak-minus-baseline);
- Model Optimizer `modelopt.onnx.quantization.quantize(quantize_mode="int8")`, entropy and max, in its own
  venv (``--modelopt-python``), the same .npy.

Models: the digits ResNet-20 (``--checkpoint``; ``edge-resnet train --output runs/resnet20-digits`` makes
it) at 512 and 4096 images, and torchvision's resnet50 at 224 (random weights with jittered BatchNorm: no
pretrained weights offline): every tool at 16-128 images, ours at 512 and 4096 and Model Optimizer at 512,
because ONNX Runtime's histogram calibrator keeps every intermediate tensor of every image (~111 MiB per
image for resnet50 at 224: 512 images would need ~56 GiB; its line is extrapolated in the summary).
Then the list of ONNX model kinds that quantize, lint clean and verify. Run by hand:

    .venv/bin/python benchmarks/quantize_memory.py --modelopt-python /tmp/movenv/bin/python
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


# ---------------------------------------------------------------------------------------------- children

MODELOPT_CHILD = """
import json, sys, time
import numpy as np
def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
from modelopt.onnx.quantization import quantize
src, npy, method, out = sys.argv[1:5]
data = np.load(npy)
base = kb("VmRSS"); t = time.perf_counter()
quantize(src, quantize_mode="int8", calibration_data=data, calibration_method=method, output_path=out,
         calibration_eps=["cpu"])
print(json.dumps({"baseline_kb": base, "peak_kb": kb("VmHWM"), "seconds": time.perf_counter() - t}))
"""


def child(argv: list[str]) -> int:
    kind, src, data, out = argv[:4]
    extra = json.loads(argv[4]) if len(argv) > 4 else {}
    if kind == "ours":
        from edge_resnet.ptq import QuantizeOptions, quantize

        opts = QuantizeOptions(model=src, calib_data=data, output=out, **extra)
        base, t = vm_kb("VmRSS"), time.perf_counter()
        result = quantize(opts)
        seconds = time.perf_counter() - t
        info = {"calib_seconds": result.seconds["calibrate"], "images": result.calibration.images,
                "method": result.calibration.method, "torch_imported": "torch" in sys.modules}
    else:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        array = np.load(data)
        name = onnx.load(src).graph.input[0].name
        base, t = vm_kb("VmRSS"), time.perf_counter()
        quantize_static(src, out, ArrayReader(array, name), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, kind),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        seconds = time.perf_counter() - t
        info = {"images": len(array)}
    print(json.dumps({"baseline_kb": base, "peak_kb": vm_kb("VmHWM"), "seconds": seconds, **info}))
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child":
    sys.exit(child(sys.argv[2:]))


# ---------------------------------------------------------------------------------------------- the parent

sys.path.insert(0, str(ROOT))  # tests.helpers, tests.runtime.videos

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from edge_resnet.contract.metrics import agreement, sqnr_db  # noqa: E402
from edge_resnet.export.lint import errors, lint_model  # noqa: E402
from edge_resnet.imaging import open_rgb  # noqa: E402
from edge_resnet.ptq.frames import FolderFrames  # noqa: E402
from edge_resnet.runtime.preprocess import Preprocessor  # noqa: E402


def run_child(kind: str, src: Path, data: Path, out: Path, extra: dict | None = None,
              python: str | None = None) -> dict[str, Any]:
    if kind.startswith("modelopt-"):
        cmd = [python, "-c", MODELOPT_CHILD, str(src), str(data), kind.split("-", 1)[1], str(out)]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    else:
        cmd = [sys.executable, __file__, "--child", kind, str(src), str(data), str(out), json.dumps(extra or {})]
        env = dict(os.environ)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
    if proc.returncode != 0:
        return {"kind": kind, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return {"kind": kind, **json.loads(proc.stdout.strip().splitlines()[-1])}


def logits(path: Path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def lint_text(path: Path) -> str:
    found = lint_model(str(path), None)
    bad = errors(found)
    return f"{len(bad)} errors" if bad else ("clean" + (f", {len(found)} float" if found else ""))


def digits_setup(tmp: Path, checkpoint: Path, count: int) -> dict[str, Any]:
    from edge_resnet.data import load_dataset
    from edge_resnet.export.onnx_writer import build_onnx, save_onnx
    from edge_resnet.fold import fold_batchnorm
    from edge_resnet.models.graph import trace
    from edge_resnet.training import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    spec = ckpt.preprocessing
    src = tmp / "resnet20.fp32.onnx"
    save_onnx(build_onnx(trace(fold_batchnorm(ckpt.build_model())), input_size=spec.input_size), src)
    splits = load_dataset(None, seed=int(ckpt.extra.get("seed", 0)))
    folder = tmp / "digits"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):  # the train digits, shifted by up to a pixel, with noise (as int8_peers.py)
        img = np.asarray(splits.train[i % len(splits.train)][0], dtype=np.float32)
        img = np.roll(img, shift=tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
        Image.fromarray(np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)).save(
            folder / f"d{i:05d}.png")
    pre = Preprocessor(spec.to_dict())
    test = np.stack([pre.image(splits.test[i][0]) for i in range(len(splits.test))])
    d = spec.to_dict()
    extra = {"size": d["input_size"], "resize": d["resize"], "mean": tuple(d["mean"]), "std": tuple(d["std"])}
    return {"name": "ResNet-20 digits (trained)", "src": src, "folder": folder, "pre": pre, "test": test,
            "extra": extra}


def r50_setup(tmp: Path, count: int) -> dict[str, Any]:
    import torchvision

    from tests.helpers import randomise_bn
    from tests.runtime.videos import photo_frames

    model = torchvision.models.resnet50().eval()
    randomise_bn(model, torch.Generator().manual_seed(0))
    src = tmp / "resnet50.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(src), dynamo=False, input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "n"}})
    folder = tmp / "photos"
    folder.mkdir()
    frames = photo_frames(6, hold=1)
    rng = np.random.default_rng(0)
    for i in range(count + 64):
        f = frames[i % 6]
        s = int(rng.integers(240, 480))
        y, x = rng.integers(0, 480 - s + 1), rng.integers(0, 640 - s + 1)
        Image.fromarray(np.ascontiguousarray(f[y:y + s, x:x + s, ::-1])).resize((256, 256)).save(folder / f"p{i:05d}.jpg")
    pre = Preprocessor({"input_size": 224, "resize": 256})
    test_paths = sorted(folder.glob("*.jpg"))[-64:]
    test = np.stack([pre.image(open_rgb(p)) for p in test_paths])
    return {"name": "resnet50 at 224 (random weights)", "src": src, "folder": folder, "pre": pre, "test": test,
            "extra": {"size": 224}}


def bench(setup: dict[str, Any], counts: list[int], tmp: Path, peers: list[str], modelopt: str | None,
          num_verify: int, modelopt_max: int | None = None) -> list[dict[str, Any]]:
    """Each image count: ours, ``peers`` (ONNX Runtime's calibrators) and Model Optimizer (when its python is
    given, and up to ``modelopt_max`` images)."""
    rows = []
    ref = logits(setup["src"], setup["test"])
    for n in counts:
        # the images ours calibrates on (its seeded held-out split of the folder), decoded for the peers
        frames = FolderFrames(setup["folder"], setup["pre"], [], num_calib=n, num_verify=num_verify, seed=0)
        kinds = ["ours", *peers]
        if modelopt and (modelopt_max is None or n <= modelopt_max):
            kinds += ["modelopt-entropy", "modelopt-max"]
        npy = tmp / f"calib-{n}.npy"
        if kinds != ["ours"]:
            np.save(npy, np.stack([setup["pre"].image(open_rgb(p)) for p in frames.calib_paths]))
        for kind in kinds:
            out = tmp / f"{kind}-{n}"
            if kind == "ours":
                r = run_child("ours", setup["src"], setup["folder"], out,
                              {**setup["extra"], "num_calib": n, "num_verify": num_verify, "tolerance": 100.0})
                model = out / "model.int8.onnx"
            else:
                model = out.with_suffix(".onnx")
                r = run_child(kind, setup["src"], npy, model, python=modelopt)
            r.update(model=setup["name"], images=n)
            if "error" not in r and model.exists():
                lg = logits(model, setup["test"])
                r.update(sqnr_db=sqnr_db(ref, lg), agreement=agreement(ref, lg), lint=lint_text(model))
                if kind == "ours":
                    lg = logits(out / "model.int8.cpu.onnx", setup["test"])
                    r.update(cpu_sqnr_db=sqnr_db(ref, lg), cpu_agreement=agreement(ref, lg))
            rows.append(r)
            print(json.dumps(r), flush=True)
        npy.unlink(missing_ok=True)
    return rows


def kinds_list(tmp: Path, photos: Path) -> list[dict[str, Any]]:
    """Each model kind of the issue through the CLI at 64 pixels: exit status, lint, verification."""
    import torchvision

    from edge_resnet.cli import main
    from tests.helpers import randomise_bn

    out = []
    cases = {
        "ours: model.fp32.onnx (resnet8, digits bundle)": None,
        "torchvision resnet18 (BN folded by torch.onnx)": (torchvision.models.resnet18, True),
        "torchvision resnet18 (BN kept)": (torchvision.models.resnet18, False),
        "torchvision resnet50": (torchvision.models.resnet50, True),
        "torchvision resnext50_32x4d": (torchvision.models.resnext50_32x4d, True),
        "torchvision wide_resnet50_2": (torchvision.models.wide_resnet50_2, False),
    }
    for name, case in cases.items():
        folder = tmp / f"kind-{len(out)}"
        folder.mkdir()
        if case is None:
            src = ROOT / "tests/fixtures/bundle/resnet8-narrow-bundle/model.fp32.onnx"
            data = ROOT / "tests/fixtures/bundle/resnet8-narrow-bundle"
            digits = folder / "digits"
            with np.load(data / "validation.npz") as z:
                for i, (p, label) in enumerate(zip(z["pixels"], z["labels"])):
                    (digits / str(label)).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(p).save(digits / str(label) / f"{i}.png")
            (folder / "m").mkdir()
            for f in ("model.fp32.onnx", "manifest.json"):
                (folder / "m" / f).write_bytes((data / f).read_bytes())
            argv = [str(folder / "m" / "model.fp32.onnx"), "--calib-data", str(digits), "--num-verify", "16"]
        else:
            ctor, fold = case
            model = ctor().eval()
            randomise_bn(model, torch.Generator().manual_seed(0))
            src = folder / "model.onnx"
            torch.onnx.export(model, torch.randn(1, 3, 64, 64), str(src), dynamo=False, do_constant_folding=fold)
            argv = [str(src), "--calib-data", str(photos), "--size", "64", "--num-calib", "48", "--num-verify", "16"]
        t = time.perf_counter()
        rc = main(["quantize", *argv, "--output", str(folder / "q")])
        row: dict[str, Any] = {"kind": name, "exit": rc, "seconds": time.perf_counter() - t}
        rep = folder / "q" / "report.json"
        if rep.exists():
            report = json.loads(rep.read_text())
            b = {r["key"]: r for r in report["backends"]}
            row.update(lint=lint_text(folder / "q" / "model.int8.onnx"), passed=report["passed"],
                       fp32_ours_agreement=b["onnxruntime_fp32"]["agreement"],
                       int8_sqnr_db=b["onnxruntime_tensorrt"]["sqnr_db"],
                       int8_agreement=b["onnxruntime_tensorrt"]["agreement"],
                       cpu_sqnr_db=b["onnxruntime_cpu"]["sqnr_db"])
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def summarize(names: list[str]) -> str:
    """The tables of results/NAME.json files, as benchmarks/results/quantize_memory.txt holds them."""
    lines = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        lines.append(f"## {name}: {r['machine']}, {r['cpus']} CPUs, onnxruntime {r['onnxruntime']}, 1-minute load "
                     f"averages during the run {[x[0] for x in r['load_average']]}")
        if r["rows"]:
            lines.append(f"{'model':34} {'tool':17} {'images':>6} {'peak MB':>8} {'base MB':>8} {'peak-base':>9} "
                         f"{'wall s':>7} {'calib s':>7} {'SQNR dB':>7} {'agree':>7}  lint")
            for x in r["rows"]:
                if "error" in x:
                    lines.append(f"{x['model']:34} {x['kind']:17} {x['images']:>6} error: {x['error']}")
                    continue
                tool = {"ours": "ours (quantize)", "Entropy": "ORT entropy", "MinMax": "ORT minmax"}.get(x["kind"], x["kind"])
                calib = f"{x['calib_seconds']:.1f}" if "calib_seconds" in x else "-"
                lines.append(f"{x['model']:34} {tool:17} {x['images']:>6} {x['peak_kb'] / 1024:>8.0f} "
                             f"{x['baseline_kb'] / 1024:>8.0f} {(x['peak_kb'] - x['baseline_kb']) / 1024:>9.0f} "
                             f"{x['seconds']:>7.1f} {calib:>7} {x.get('sqnr_db', float('nan')):>7.2f} "
                             f"{100 * x.get('agreement', float('nan')):>6.1f}%  {x.get('lint', '-')}")
        lines += extrapolated(r["rows"])
        for k in r["kinds"]:
            lines.append(f"{k['kind']:48} exit {k['exit']}  lint {k.get('lint', '-'):16} passed {k.get('passed')}  "
                         f"ours-FP32 agreement {k.get('fp32_ours_agreement')}  INT8 SQNR "
                         f"{k.get('int8_sqnr_db') or float('nan'):.1f} dB, agreement {k.get('int8_agreement')}  "
                         f"CPU-target SQNR {k.get('cpu_sqnr_db') or float('nan'):.1f} dB  ({k['seconds']:.0f} s)")
        lines.append("")
    return "\n".join(lines)


def extrapolated(rows: list[dict[str, Any]], at: tuple[int, ...] = (512, 4096)) -> list[str]:
    """ONNX Runtime's peaks at image counts it could not run here, from a least-squares line over the counts it
    ran (its histogram calibrator keeps every tensor of every image: linear in the images), next to ours where
    ours ran."""
    lines = []
    for model in dict.fromkeys(x["model"] for x in rows):
        mine = {x["images"]: x["peak_kb"] / 1024 for x in rows if x["model"] == model and x["kind"] == "ours" and "error" not in x}
        # only the histogram calibrator: ORT's minmax stopped growing past 64 resnet50 images (7,173 -> 7,211 MiB)
        for kind, tool in (("Entropy", "ORT entropy"),):
            pts = [(x["images"], x["peak_kb"] / 1024) for x in rows
                   if x["model"] == model and x["kind"] == kind and "error" not in x]
            if len(pts) < 2 or all(n in {p[0] for p in pts} for n in at):
                continue
            slope, icept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
            est = ", ".join(f"{n}: {icept + slope * n:,.0f} MiB" + (f" (ours {mine[n]:,.0f} MiB = {mine[n] / (icept + slope * n):.3f}x)"
                                                                    if n in mine else "") for n in at)
            lines.append(f"{model}: {tool} extrapolated (not run; a line through its {len(pts)} runs, "
                         f"{slope:.1f} MiB per image): {est}")
    return lines


def main_(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "runs" / "resnet20-digits" / "model.pt"))
    p.add_argument("--modelopt-python", default=None)
    p.add_argument("--digits-images", default="512,4096")
    p.add_argument("--r50-images", default="16,32,64,128",
                   help="resnet50 image counts every tool runs (ONNX Runtime needs ~115 MiB per image)")
    p.add_argument("--r50-large", default="512,4096",
                   help="resnet50 image counts ours (and Model Optimizer up to --modelopt-max) runs")
    p.add_argument("--modelopt-max", type=int, default=512, help="the most resnet50 images Model Optimizer gets")
    p.add_argument("--skip", default="", help="comma list of: digits, r50, kinds")
    p.add_argument("--name", default="quantize_memory", help="results file name (benchmarks/results/NAME.json)")
    p.add_argument("--summarize", default=None, metavar="NAME[,NAME]",
                   help="print (and write to results/quantize_memory.txt) the tables of earlier runs")
    args = p.parse_args(argv)
    if args.summarize:
        text = summarize(args.summarize.split(","))
        (RESULTS / "quantize_memory.txt").write_text(text)
        print(text)
        return 0
    skip = set(args.skip.split(","))
    uptime = [open("/proc/loadavg").read().split()[:3]]
    result: dict[str, Any] = {"machine": subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip(),
                              "cpus": os.cpu_count(), "onnxruntime": ort.__version__, "rows": [], "kinds": []}
    with tempfile.TemporaryDirectory(prefix="quantize-memory-") as tmp_s:
        tmp = Path(tmp_s)
        if "digits" not in skip:
            counts = [int(x) for x in args.digits_images.split(",")]
            setup = digits_setup(tmp, Path(args.checkpoint), max(counts) + 256)
            result["rows"] += bench(setup, counts, tmp, ["Entropy", "MinMax"], args.modelopt_python, 256)
            uptime.append(open("/proc/loadavg").read().split()[:3])
        if "r50" not in skip:
            counts = [int(x) for x in args.r50_images.split(",") if x]
            large = [int(x) for x in args.r50_large.split(",") if x]
            setup = r50_setup(tmp, max(counts + large) + 16)
            result["rows"] += bench(setup, counts, tmp, ["Entropy", "MinMax"], args.modelopt_python, 16)
            result["rows"] += bench(setup, large, tmp, [], args.modelopt_python, 16, args.modelopt_max)
            uptime.append(open("/proc/loadavg").read().split()[:3])
        if "kinds" not in skip:
            photos = tmp / "kind-photos"
            photos.mkdir()
            from tests.runtime.videos import photo_frames

            frames = photo_frames(6, hold=1)
            for i in range(64):
                Image.fromarray(np.ascontiguousarray(frames[i % 6][(i * 7) % 200:(i * 7) % 200 + 256,
                                                                   (i * 11) % 300:(i * 11) % 300 + 256, ::-1])
                                ).save(photos / f"k{i:02d}.jpg")
            result["kinds"] = kinds_list(tmp, photos)
    uptime.append(open("/proc/loadavg").read().split()[:3])
    result["load_average"] = uptime
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS / args.name}.json; load averages {uptime}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
