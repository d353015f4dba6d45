"""`edge-resnet bench` on a real run directory written by the project's own export.

The command runs for real (child processes, ONNX Runtime, PyTorch, matplotlib); the checks compare
what it printed and wrote against independent computations on the samples it recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_resnet import cli
from edge_resnet.bench.report import int8_verdicts
from edge_resnet.pipeline import ExportOptions, export_run
from tests.helpers import BLOCK_TORCH
from tests.tiny_model import listing, tiny_checkpoint

# the slow lane: benchmarks every model of a real run, each in its own process (`pytest -m "not slow"` leaves them out)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# tiny budgets: the figures are checked for consistency, not for speed
FAST = ["--batch", "1", "3", "--warmup", "1", "--iterations", "6", "--min-iterations", "3", "--seconds", "0.2"]
ENGINE = "model.int8.test.engine"  # junk bytes: TensorRT is absent here, the row must be skipped cleanly


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet8 on the digits, exported with FP16 and both INT8 targets, plus an engine file."""
    out = tmp_path_factory.mktemp("bench") / "run"
    result = export_run(ExportOptions(model=str(tiny_checkpoint(tmp_path_factory)), int8=True, fp16=True,
                                      calib_method="max", num_calib=64, batch_size=64, output=str(out)))
    assert result.passed, result.report.failures
    (out / ENGINE).write_bytes(b"not a real engine")
    return out


def _bench(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(["bench", *args])
    return rc, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def bench(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """`edge-resnet bench RUN --batch 1 3 ... --output DIR`: (output dir, stdout, bench.json)."""
    out = tmp_path_factory.mktemp("bench_out")
    # the CPU provider named, so the rows are the same on a machine with onnxruntime-gpu and a GPU
    rc, stdout, stderr = _bench([str(run_dir), *FAST, "--providers", "CPUExecutionProvider", "--output", str(out)])
    assert rc == 0, stdout[-2000:] + stderr[-2000:]
    return out, stdout, json.loads((out / "bench.json").read_text())


def _text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _rows(result: dict) -> dict[str, dict]:
    return {r["key"]: r for r in result["results"]}


def _measured(result: dict) -> list[tuple[dict, dict]]:
    return [(r, b) for r in result["results"] if not r.get("skipped") for b in r["batches"]]


def test_every_model_of_the_run_is_a_row_with_its_accuracy(run_dir: Path, bench: tuple[Path, str, dict]) -> None:
    _, stdout, result = bench
    report = {b["key"]: b["top1"] for b in json.loads((run_dir / "report.json").read_text())["backends"]}
    expected = {"pytorch": ("model.pt", "pytorch_fp32"), "onnx-fp32": ("model.fp32.onnx", "onnxruntime_fp32"),
                "onnx-fp16": ("model.fp16.onnx", "onnxruntime_fp16"),
                "onnx-int8": ("model.int8.onnx", "onnxruntime_tensorrt"),
                "onnx-int8-cpu": ("model.int8.cpu.onnx", "onnxruntime_cpu")}
    rows = _rows(result)
    assert set(rows) == {*expected, f"tensorrt:{ENGINE}"}
    for key, (name, report_key) in expected.items():
        row = rows[key]
        assert row["file"] == name and row["size_bytes"] == (run_dir / name).stat().st_size
        assert row["accuracy_top1"] == report[report_key]
        lines = [ln for ln in stdout.splitlines() if f" {name} " in f" {ln} "]
        assert [ln.split()[-11] for ln in lines] == ["1", "3"], lines  # batch: 11th column from the right
        assert all(f"{100 * report[report_key]:.2f}%" in ln for ln in lines)
    assert rows["pytorch"]["settings"]["batchnorm"] == "not folded"


def test_latency_figures_are_the_statistics_of_the_recorded_samples(bench: tuple[Path, str, dict]) -> None:
    _, _, result = bench
    pairs = _measured(result)
    assert len(pairs) == 5 * 2
    for _row, b in pairs:
        s = b["samples_ms"]
        infer = np.asarray(s["infer"])
        assert 3 <= b["iterations"] == len(infer) == len(s["pre"]) == len(s["post"]) <= 6
        p50, p90, p99 = np.percentile(infer, [50, 90, 99])
        lat = b["latency_ms"]
        assert (lat["p50"], lat["p90"], lat["p99"]) == pytest.approx((p50, p90, p99), rel=1e-12)
        assert lat["mean"] == pytest.approx(infer.mean(), rel=1e-12)
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert b["throughput_ips"] == pytest.approx(1000 * b["batch"] / lat["mean"], rel=1e-12)
        total = np.asarray(s["pre"]) + infer + np.asarray(s["post"])
        assert b["end_to_end_ms"]["mean"] == pytest.approx(total.mean(), rel=1e-12)
        assert b["pre_ms"]["mean"] == pytest.approx(np.mean(s["pre"]), rel=1e-12) and b["pre_ms"]["mean"] > 0
        assert b["post_ms"]["mean"] > 0
        ref = next(x for x in _rows(result)["onnx-fp32"]["batches"] if x["batch"] == b["batch"])
        assert b["speedup"] == pytest.approx(ref["latency_ms"]["mean"] / lat["mean"], rel=1e-12)


def test_int8_sentence_appears_exactly_when_int8_is_not_faster(bench: tuple[Path, str, dict]) -> None:
    _, stdout, result = bench
    rows = _rows(result)
    fp32 = {b["batch"]: b["latency_ms"]["mean"] for b in rows["onnx-fp32"]["batches"]}
    for key in ("onnx-int8", "onnx-int8-cpu"):
        for b in rows[key]["batches"]:
            sentence = f"INT8 is not faster than FP32 at batch {b['batch']}: {rows[key]['label']} ({rows[key]['file']})"
            assert (sentence in stdout) == (b["latency_ms"]["mean"] >= fp32[b["batch"]]), (key, b["batch"])


def test_int8_verdicts_known_answers() -> None:
    def row(key: str, precision: str, means: dict[int, float], kind: str = "onnx") -> dict:
        return {"key": key, "kind": kind, "label": key, "file": f"{key}.onnx", "precision": precision,
                "batches": [{"batch": b, "latency_ms": {"mean": m}} for b, m in means.items()]}

    ref = row("fp32", "fp32", {1: 2.0, 8: 10.0})
    slow = row("int8", "int8", {1: 2.0, 8: 9.0})  # equal at batch 1: not faster
    got = int8_verdicts([ref, slow], ref)
    assert got[0] == ("INT8 is not faster than FP32 at batch 1: int8 (int8.onnx) takes 2.000 ms, fp32 2.000 ms "
                      "(1.00x the time).")
    assert got[1] == "int8 (int8.onnx) is faster than fp32 at batch 8 (1.11x)."
    assert len(got) == 2
    engine = row("trt", "int8", {1: 1.0}, kind="tensorrt")
    assert int8_verdicts([ref, engine], ref) == ["trt (trt.onnx): no FP32 engine was measured to compare it with."]


def test_engine_without_tensorrt_is_skipped_with_the_reason(bench: tuple[Path, str, dict]) -> None:
    _, stdout, result = bench
    row = _rows(result)[f"tensorrt:{ENGINE}"]
    assert row["skipped"] and "TensorRT" in row["skipped"] and not row.get("failed")
    assert f"({ENGINE}) skipped: {row['skipped']}" in stdout
    assert re.search(rf"{re.escape(ENGINE)}\s.*\sskipped\s", stdout)  # its table line


def test_memory_is_per_process(bench: tuple[Path, str, dict]) -> None:
    """Each backend has its own process: ONNX Runtime rows do not carry torch's few hundred MB."""
    rows = _rows(bench[2])
    onnx = [rows[k]["memory"]["peak_rss_mb"] for k in ("onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-cpu")]
    torch_peak = rows["pytorch"]["memory"]["peak_rss_mb"]
    assert all(0 < m < torch_peak for m in onnx), (onnx, torch_peak)
    for k in ("pytorch", "onnx-fp32"):
        mem = rows[k]["memory"]
        assert mem["peak_rss_mb"] >= mem["loaded_rss_mb"] >= mem["baseline_rss_mb"] > 0
        assert mem["model_peak_mb"] == pytest.approx(mem["peak_rss_mb"] - mem["baseline_rss_mb"])


def test_json_records_environment_and_settings(bench: tuple[Path, str, dict]) -> None:
    import onnxruntime

    out, stdout, result = bench
    env = result["environment"]
    assert env["libraries"]["numpy"] == np.__version__
    assert env["libraries"]["onnxruntime"] == onnxruntime.__version__
    on_jetson = Path("/etc/nv_tegra_release").exists() or "jetson" in _text("/proc/device-tree/model").lower()
    assert env["cpu"] and env["cpu_count"] >= 1 and (env["jetson"] is not None) == on_jetson
    assert result["settings"]["batches"] == [1, 3] and result["settings"]["providers"] == ["CPUExecutionProvider"]
    assert result["frames"]["source"].startswith("bundled digits") and result["frames"]["sizes"] == ["8x8"]
    for key in ("onnx-fp32", "onnx-int8-cpu"):
        assert _rows(result)[key]["providers"] == ["CPUExecutionProvider"]
    assert f"wrote {out / 'bench.json'}, {out / 'bench.png'}" in stdout
    assert sorted(os.listdir(out)) == ["bench.json", "bench.png"]  # no temp files left behind


def test_plot_is_a_png(bench: tuple[Path, str, dict]) -> None:
    path = bench[0] / "bench.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 500 and img.height > 200
        # not a blank canvas: lines of several colours were drawn
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 20


def test_runs_without_torch(run_dir: Path, tmp_path: Path) -> None:
    """torch (and matplotlib) blocked in the parent and, through sitecustomize on PYTHONPATH, in
    every child: the PyTorch row says why it is skipped, every ONNX row is measured, bench.json is
    written, and one note says why there is no plot."""
    hook = tmp_path / "hook"
    hook.mkdir()
    # matplotlib too: a bare Jetson has neither
    (hook / "sitecustomize.py").write_text(BLOCK_TORCH.replace('("torch", "torchvision")',
                                                               '("torch", "torchvision", "matplotlib")'))
    # the `edge-resnet bench` command itself, as a torch-free Jetson runs it
    script = f"""
import json, sys
from edge_resnet import cli
rc = cli.main(["bench", {str(run_dir)!r}, "--batch", "2", "--warmup", "0", "--iterations", "3",
               "--min-iterations", "2", "--seconds", "0.1", "--output", {str(tmp_path / 'out')!r}])
assert rc == 0, rc
assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules)
r = json.load(open({str(tmp_path / 'out' / 'bench.json')!r}))
print(json.dumps(r["notes"]))
print(json.dumps({{row["key"]: row.get("skipped") for row in r["results"]}}))
"""
    env = {**os.environ, "PYTHONPATH": str(hook)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    notes, skipped = (json.loads(line) for line in out.stdout.splitlines()[-2:])
    assert notes[-1] == "matplotlib is not installed, so no bench.png: pip install -e '.[plots]'"
    assert "torch is not installed" in skipped.pop("pytorch")
    assert "TensorRT" in skipped.pop(f"tensorrt:{ENGINE}")
    assert skipped == {"onnx-fp32": None, "onnx-fp16": None, "onnx-int8": None, "onnx-int8-cpu": None}
    assert sorted(os.listdir(tmp_path / "out")) == ["bench.json"]


# ---------------------------------------------------------------- user mistakes


def _user_error(rc: int, stderr: str, *fragments: str) -> None:
    assert rc == 1 and "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("edge-resnet: error:")]
    assert len(lines) == 1, stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_missing_run_directory_and_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = _bench([])  # the default run does not exist here
    _user_error(rc, err, "no run directory at runs/resnet20-digits", "edge-resnet export --int8")
    (tmp_path / "empty").mkdir()
    rc, _, err = _bench(["empty"])
    _user_error(rc, err, "no manifest.json at empty")
    assert listing(tmp_path / "empty") == {} and sorted(os.listdir(tmp_path)) == ["empty"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--batch", "8", "0"], "--batch must be >= 1, got 0"),  # the parser, before anything runs
    (["--backends", "onnx-int4"], "unknown backend(s) onnx-int4; choose from pytorch, onnx-fp32"),
    (["--min-iterations", "50", "--iterations", "10"], "--min-iterations must be between 1 and --iterations"),
    (["--providers", "NoSuchExecutionProvider"], "NoSuchExecutionProvider not available in this onnxruntime"),
    (["--frames", "no/such/folder"], "--frames no/such/folder does not exist"),
])
def test_bad_options_write_nothing(run_dir: Path, args: list[str], fragment: str) -> None:
    before = listing(run_dir)
    rc, _, err = _bench([str(run_dir), *args])
    _user_error(rc, err, fragment)
    assert listing(run_dir) == before


def test_requested_backend_the_run_lacks_and_a_changed_model(run_dir: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / ENGINE).unlink()
    (run / "model.fp16.onnx").unlink()
    rc, _, err = _bench([str(run), "--backends", "onnx-fp16"])
    _user_error(rc, err, "has no onnx-fp16 model", "edge-resnet export --fp16")
    rc, _, err = _bench([str(run), "--backends", "tensorrt"])
    _user_error(rc, err, "has no TensorRT engine")
    with open(run / "model.int8.cpu.onnx", "ab") as f:
        f.write(b"\0")
    rc, _, err = _bench([str(run), "--backends", "onnx-int8-cpu"])
    _user_error(rc, err, "model.int8.cpu.onnx does not match the sha256")
    assert not (run / "bench.json").exists()


def test_a_model_the_manifest_lists_but_the_run_lacks(run_dir: Path, tmp_path: Path) -> None:
    """Issue 23.5: without model.int8.onnx the bench used to measure the rest without a word. It now stops in
    one line naming the file, and benches what is there only with --skip-missing, saying what it left out."""
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / ENGINE).unlink()
    (run / "model.int8.onnx").unlink()
    before = listing(run)
    rc, out, err = _bench([str(run), *FAST, "--providers", "CPUExecutionProvider"])
    _user_error(rc, err, f"{run} lacks model.int8.onnx, which its manifest lists", "--skip-missing")
    assert out == "" and listing(run) == before
    rc, out, err = _bench([str(run), *FAST, "--providers", "CPUExecutionProvider", "--backends", "onnx-fp32",
                           "--no-plot", "--output", str(tmp_path / "o1")])
    assert rc == 0, err  # naming the backends to bench is asking for what exists: no flag needed
    rc, out, err = _bench([str(run), *FAST, "--providers", "CPUExecutionProvider", "--skip-missing", "--no-plot",
                           "--output", str(tmp_path / "o3")])
    assert rc == 0, err
    result = json.loads((tmp_path / "o3" / "bench.json").read_text())
    assert "onnx-int8" not in _rows(result) and {"onnx-fp32", "onnx-int8-cpu"} <= set(_rows(result))
    assert result["notes"][0] == "model.int8.onnx not benched: listed in the manifest but missing (--skip-missing)"
    assert "model.int8.onnx not benched" in out


PROC = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


@pytest.mark.parametrize(("where", "fragment"), [
    pytest.param("/proc/nope", "cannot create the folder /proc/nope (", marks=PROC),  # cannot be created
    ("TMP/afile/sub", "TMP/afile is a file, not a folder"),  # under a regular file
    pytest.param("/proc/self", "cannot write in /proc/self (", marks=PROC),  # a folder that takes no files
])
def test_unwritable_output_fails_before_measuring(run_dir: Path, tmp_path: Path, where: str, fragment: str) -> None:
    """--output that cannot be created or written: one error line before any backend is measured
    (no `bench:` progress line), and nothing written in the run or next to the path."""
    (tmp_path / "afile").write_text("x")
    output = where.replace("TMP", str(tmp_path))
    before = listing(run_dir)
    out = subprocess.run([sys.executable, "-m", "edge_resnet.cli", "bench", str(run_dir), *FAST, "--output", output],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    _user_error(out.returncode, out.stderr, f"--output {output}: ", fragment.replace("TMP", str(tmp_path)))
    assert not [ln for ln in out.stderr.splitlines() if ln.startswith("bench: ")], out.stderr
    assert out.stdout == ""
    assert listing(run_dir) == before
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and (tmp_path / "afile").read_text() == "x"


def test_a_dla_engine_is_loaded_on_its_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TensorRT row loads an engine with the DLA core its key records (the runtime's default, -1,
    would not place a DLA engine); an engine built for the GPU gets none. TensorRT cannot run here, so
    the backend class is replaced by one that records how it was built."""
    from edge_resnet.bench.measure import build_backend
    from edge_resnet.contract.engine import EngineKey, write_sidecar
    from edge_resnet.runtime import tensorrt_backend

    made: list[tuple[Path, int | None]] = []

    class Recorder:
        def __init__(self, path: Path, device: int = 0, dla_core: int | None = None) -> None:
            made.append((Path(path), dla_core))

    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", Recorder)
    key = EngineKey(gpu="NVIDIA Jetson AGX Orin", compute_capability="8.7", tensorrt="10.3.0", jetpack="6.2",
                    l4t="36.4.3", precision="int8", batch=(1, 1, 1), dla_core=1, int8_mode="implicit",
                    onnx="model.int8.implicit.onnx", onnx_sha256="0" * 64)
    dla = tmp_path / key.filename()
    dla.write_bytes(b"engine")
    write_sidecar(dla, key)
    gpu = tmp_path / "model.int8.gpu.engine"
    gpu.write_bytes(b"engine")
    build_backend("tensorrt", dla, None, 0)
    build_backend("tensorrt", gpu, None, 0)  # no key beside it: nothing says DLA
    assert made == [(dla, 1), (gpu, None)]
