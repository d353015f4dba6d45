"""What a user installs: one import name, a torch-free device install (its Python 3.8 check: tests/test_py38.py).

The wheel is built once per session from this checkout (pip wheel, as a user's pip would build it),
its file list is checked against the source tree, and the slow test installs it into a fresh venv
without torch and runs the device commands on a run directory and bundle this suite made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.import_graph import PACKAGE_DIRS, ROOT, closure, external, module_name, project

# the slow lane: builds the wheel and installs it into fresh virtual environments (`pytest -m "not slow"` leaves them out)
pytestmark = pytest.mark.slow

# what a device (a Jetson, a camera box) runs: the runtime, the benchmark, the bundle/engine tools, the lint
DEVICE_ENTRIES = ["cli", "edge_resnet.deploy", "edge_resnet.deploy.device", "edge_resnet.export.lint",
                  "edge_resnet.export.trtexec", "edge_resnet.export.engine", "edge_resnet.export.bundle",
                  "edge_resnet.ptq.job", "edge_resnet.deploy.doctor", "edge_resnet.deploy.doctor_report"] + \
                 [m for m in project() if m.startswith(("edge_resnet.runtime", "edge_resnet.bench"))]
# third-party packages a device module may import when it is imported (tensorrt and cuda-python only in
# the functions that need them, torch only in the benchmark's PyTorch row, in its own process)
DEVICE_IMPORTS = {"numpy", "PIL", "onnx", "onnxruntime", "tqdm"}


def _device_modules() -> set[str]:
    return closure(DEVICE_ENTRIES)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = out.glob("edge_resnet-*.whl")
    return found


def test_wheel_installs_one_import_name(wheel: Path) -> None:
    """Only ``edge_resnet`` lands in site-packages; export/ and calibration/ live inside it, and every
    source file of the three folders is in the wheel at its installed place."""
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"edge_resnet", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top
    expected = {module_name(p).replace(".", "/") + ("/__init__.py" if p.name == "__init__.py" else ".py")
                for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py")}
    assert expected <= set(names), sorted(expected - set(names))
    assert "edge_resnet/data/assets/digits.csv.gz" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "edge-resnet = edge_resnet.cli:main" in entry_points


def test_device_modules_import_no_torch() -> None:
    """Importing any device module imports only numpy, Pillow, onnx, onnxruntime, tqdm and the standard library."""
    stdlib = set(sys.stdlib_module_names)
    bad = {m: sorted(ext - stdlib - DEVICE_IMPORTS) for m, ext in external(_device_modules()).items()}
    assert not {m: e for m, e in bad.items() if e}
    # quantize runs on the device: of the torch-side stages it reaches only their torch-free modules
    torch_free = {"edge_resnet.models", "edge_resnet.models.dataflow", "edge_resnet.models.onnx_import",
                  "edge_resnet.quant", "edge_resnet.quant.plan", "edge_resnet.quant.select", "edge_resnet.calibration",
                  "edge_resnet.calibration.files", "edge_resnet.calibration.calibrators",
                  "edge_resnet.calibration.stats", "edge_resnet.calibration.statistics",
                  "edge_resnet.calibration.onnx_collect", "edge_resnet.accuracy"}
    assert not {m for m in _device_modules() if m.startswith(("edge_resnet.training", "edge_resnet.models",
                                                               "edge_resnet.quant", "edge_resnet.calibration",
                                                               "edge_resnet.accuracy"))} - torch_free


DEVICE_HELP = ["--help", "camera --help", "bench --help", "verify --help", "build-engine --help", "bundle --help",
               "trtexec-cmd --help", "lint --help", "quantize --help", "doctor --help"]


@pytest.mark.parametrize("argv", DEVICE_HELP)
def test_device_command_help_imports_no_torch(argv: str) -> None:
    """With torch installed (this venv), a device command's start-up still leaves it alone."""
    code = ("import sys, cli\n"
            "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'torchvision', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules]\n"
            "print('IMPORTED', heavy, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv.split()], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.stdout.startswith("usage: edge-resnet")
    assert "IMPORTED []" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------ the device install


@pytest.fixture(scope="module")
def device_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel as a device installs it (`pip install edge-resnet[video]`): no torch."""
    env_dir = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    proc = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", f"{wheel}[video]"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


@pytest.fixture(scope="module")
def device_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the workstation hands over: a run directory (both INT8 targets), its bundle, and a video."""
    from edge_resnet.deploy import make_bundle
    from edge_resnet.pipeline import ExportOptions, export_run
    from tests.helpers import torch_threads
    from tests.runtime.videos import write_video
    from tests.tiny_model import tiny_checkpoint

    root = tmp_path_factory.mktemp("handover")
    with torch_threads(1):
        result = export_run(ExportOptions(model=str(tiny_checkpoint(tmp_path_factory)), int8=True,
                                          calib_method="max", num_calib=64, output=str(root / "run")))
    bundle = make_bundle(root / "run", root / "run-bundle", samples=32).folder
    return {"run": root / "run", "bundle": bundle, "video": write_video(root / "clip.mp4", 12)}


def _device(venv_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv_dir / "bin" / "edge-resnet"), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_device_install_runs_the_device_commands(device_venv: Path, device_run: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """The wheel in a venv without torch: every device command works on what the workstation wrote, and a
    workstation command says, in one line, which extra to install."""
    python = str(device_venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    assert subprocess.run([python, "-c", "import cli"], capture_output=True, cwd=tmp_path).returncode != 0
    run, bundle, video = str(device_run["run"]), device_run["bundle"], str(device_run["video"])
    ok = {
        "lint": ["lint", f"{run}/model.int8.onnx"],
        "trtexec-cmd": ["trtexec-cmd", run, "--trt", "10.3", "--gpu", "Orin"],
        "bench": ["bench", run, "--backends", "onnx-fp32", "onnx-int8-cpu", "--batch", "1", "--warmup", "1",
                  "--iterations", "3", "--min-iterations", "2", "--seconds", "0.1", "--no-plot",
                  "--output", str(tmp_path / "bench")],
        "camera": ["camera", video, "--run", run, "--no-display", "--max-frames", "4", "--jsonl",
                   str(tmp_path / "frames.jsonl"), "--providers", "CPUExecutionProvider"],
        "verify": ["verify", "--bundle", str(bundle), "--onnx", "model.int8.onnx"],
        "doctor": ["doctor"],  # not a Jetson: exit 0 when ONNX Runtime imports and the disk has room
    }
    for name, argv in ok.items():
        proc = _device(device_venv, tmp_path, *argv)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
    assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())["results"]
    # build-engine gets as far as TensorRT, then says what is missing in one line
    proc = _device(device_venv, tmp_path, "build-engine", str(bundle))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("edge-resnet: error:")
    assert "TensorRT" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
    for argv in (["train", "--epochs", "1"], ["export", "--int8"], ["eval"]):
        proc = _device(device_venv, tmp_path, *argv)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"edge-resnet: error: `edge-resnet {argv[0]}` needs PyTorch (torch and torchvision not installed); "
            "install the workstation extra: pip install 'edge-resnet[train]'"]
    assert not (tmp_path / "runs").exists()
