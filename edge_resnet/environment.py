"""The running machine: what a measured figure ran on, and what a TensorRT engine is built for.

``machine()`` is the one-line summary the training benchmarks print (it imports torch);
``describe()`` is the torch-free record that ``edge-resnet bench`` stores with every result,
including, on a Jetson, the power mode and whether the clocks are locked; ``probe_system()`` is
what an engine key records (GPU, compute capability, TensorRT, JetPack, L4T). The Jetson's files
are read here and nowhere else.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_resnet import optional
from edge_resnet.contract.engine import System, short_version

# where JetPack keeps its identity; read as files so tests can point them elsewhere
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")
# a recorded board (``board(root)`` with a root other than /): its command outputs by command line, in this
# file under the root, since a recording cannot run the board's nvpmodel or dpkg
RECORDED_COMMANDS = "commands.json"
NVPMODEL_QUERY = ("nvpmodel", "-q")
JETPACK_QUERY = ("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack")
# distributions whose versions a benchmark depends on; looked up without importing them
LIBRARIES = ("numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "pillow", "opencv-python-headless",
             "opencv-python", "torch", "tensorrt", "cuda-python", "matplotlib")


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86 "model name"; ARM boards give "Hardware"/"Model"
    or nothing, then the device tree's model), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        for key in ("model name", "Hardware", "Model"):
            if fields.get(key):
                return fields[key]
    except OSError:
        pass
    return _read("/proc/device-tree/model") or platform.processor() or platform.machine()


def machine() -> str:
    """One line, enough to read a wall time or a speed against."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution that is present (read from its metadata, not imported:
    importing torch just to learn its version would cost half a second and 500 MB)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "tensorrt" not in versions:
        # JetPack installs the TensorRT bindings from a Debian package, often without dist-info
        found = optional.version("tensorrt")
        if found is not None:
            versions["tensorrt"] = found
    return versions


def describe() -> dict[str, Any]:
    """The environment a benchmark ran in, as a JSON-ready dict; imports no torch.

    CPU model, logical cores and the cores this process may use, memory, load average, CPU
    frequency governor, OS, Python, library versions, and on a Jetson its model, L4T release,
    power mode (``nvpmodel -q``) and clock state.
    """
    record: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mb": _meminfo_mb("MemTotal"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "jetson": jetson(),
    }
    return record


def jetson() -> dict[str, Any] | None:
    """Jetson facts that change benchmark figures, or None off a Jetson.

    ``power_mode`` is what ``nvpmodel -q`` prints (e.g. "MAXN"); ``clocks`` says whether every CPU
    core and the GPU have their minimum frequency raised to their maximum, which is what
    ``jetson_clocks`` does (read from sysfs, because ``jetson_clocks --show`` needs root).
    """
    release = _read(str(TEGRA_RELEASE))
    model = _read(str(DEVICE_TREE_MODEL))
    if release is None and not (model and "jetson" in model.lower()):
        return None
    return {
        "model": model,
        "l4t": release.splitlines()[0] if release else None,
        "power_mode": nvpmodel_mode(),
        "clocks": clock_state(),
    }


def nvpmodel_mode() -> str | None:
    """The power mode name from ``nvpmodel -q`` ("NV Power Mode: MAXN" then the mode id), or None."""
    out = _command(["nvpmodel", "-q"])
    if out is None:
        return None
    return parse_nvpmodel(out)


def parse_nvpmodel(text: str) -> str | None:
    """"NV Power Mode: 15W\\n2" -> "15W (mode 2)"; None when the text has no mode line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode"):
            name = line.split(":", 1)[1].strip()
            mode_id = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].isdigit() else None
            return f"{name} (mode {mode_id})" if mode_id else name
    return None


def clock_state(root: str = "/sys") -> dict[str, Any]:
    """Whether CPU and GPU clocks are pinned (min frequency == max frequency), from sysfs.

    Returns ``{"locked": bool | None, "cpu": {...}, "gpu": {...} | None}``: ``locked`` is None when
    nothing could be read.
    """
    cpus = []
    for d in sorted(glob.glob(f"{root}/devices/system/cpu/cpu[0-9]*/cpufreq")):
        lo, hi = _read(f"{d}/scaling_min_freq"), _read(f"{d}/scaling_max_freq")
        if lo and hi and lo.isdigit() and hi.isdigit():
            cpus.append((int(lo), int(hi)))
    gpu = None
    # the GPU's devfreq node: /sys/class/devfreq/17000000.gpu (Orin, JetPack 6), .../17000000.ga10b
    # (Orin, JetPack 5), 17000000.gv11b (Xavier), 57000000.gpu (Nano); older layouts under devices/
    gpu_nodes = [d for d in sorted(glob.glob(f"{root}/class/devfreq/*"))
                 if re.search(r"\.(gpu|ga10b|gv11b|gp10b|gm20b)$", d)]
    for d in gpu_nodes + sorted(glob.glob(f"{root}/devices/gpu.0/devfreq/*")
                                + glob.glob(f"{root}/devices/platform/*gpu*/devfreq/*")):
        lo, hi = _read(f"{d}/min_freq"), _read(f"{d}/max_freq")
        if lo and hi and lo.isdigit() and hi.isdigit():
            gpu = {"min_hz": int(lo), "max_hz": int(hi), "locked": lo == hi}
            break
    cpu = {"cores": len(cpus), "locked": bool(cpus) and all(lo == hi for lo, hi in cpus)} if cpus else None
    parts = [p["locked"] for p in (cpu, gpu) if p is not None]
    return {"locked": all(parts) if parts else None, "cpu": cpu, "gpu": gpu}


def parse_tegra_release(text: str) -> str | None:
    """The L4T release from /etc/nv_tegra_release: "# R36 (release), REVISION: 4.3, ..." -> "36.4.3"."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    return f"{m[1]}.{m[2]}.{m[3]}" if m else None


def parse_jetpack_version(text: str) -> str | None:
    """The JetPack release from ``dpkg-query -W -f='${Version}' nvidia-jetpack``: "6.2+b77" -> "6.2"."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    return m[1] if m else None


def installed_tensorrt() -> str | None:
    """The version of the importable ``tensorrt`` package, or None."""
    found = optional.version("tensorrt")
    return None if found is None else short_version(found)


def _cuda_device() -> tuple[str | None, str | None]:
    """(name, "major.minor") of CUDA device 0 through cuda-python, or (None, None)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError:
            return None, None
    try:
        err, prop = cudart.cudaGetDeviceProperties(0)
    except Exception:  # noqa: BLE001 - no CUDA runtime library or driver: cuda-python raises RuntimeError & co.
        return None, None
    if int(err) != 0:
        return None, None
    name = prop.name.decode("utf-8", "replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\x00").strip() or None, f"{prop.major}.{prop.minor}"


def probe_system() -> System:
    """What this machine is, as the engine key records it.

    On a Jetson the GPU is named by the board (/proc/device-tree/model, e.g. "NVIDIA Jetson AGX Orin
    Developer Kit"), which ``build_engine.sh`` reads the same way, so both name engines alike;
    elsewhere by the CUDA device name (as nvidia-smi prints it).
    """
    l4t_text = _read(str(TEGRA_RELEASE))
    l4t = parse_tegra_release(l4t_text) if l4t_text else None
    name, cc = _cuda_device()
    gpu = _read(str(DEVICE_TREE_MODEL)) if l4t else None
    if not gpu:
        gpu = name
    if not gpu:
        smi = _command(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
        gpu = smi.splitlines()[0].strip() if smi and smi.strip() else None
    if cc is None:
        smi = _command(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"])
        cc = smi.splitlines()[0].strip() if smi and smi.strip() else None
    jetpack = None
    if l4t:
        dpkg = _command(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
        jetpack = parse_jetpack_version(dpkg) if dpkg else None
    return System(gpu=gpu, compute_capability=cc, tensorrt=installed_tensorrt(), jetpack=jetpack, l4t=l4t)


def board(root: str = "/") -> dict[str, Any] | None:
    """What a Jetson's own files say about it, read under ``root`` (a recorded board's copy of them
    elsewhere; its command outputs come from ``RECORDED_COMMANDS`` there); None when they say it is no Jetson.

    Returns a dict: ``release`` (the first line of etc/nv_tegra_release), ``l4t`` ("36.4.3"), ``model``
    (the device tree's), ``compatible`` (its entries, e.g. ["nvidia,p3768-0000+p3767-0000",
    "nvidia,p3767-0000", "nvidia,tegra234"]), ``jetpack_package`` (the nvidia-jetpack package's release,
    None when it is not installed), ``power_mode`` (``nvpmodel -q``) and ``clocks`` (``clock_state``).
    """
    live = Path(root) == Path("/")
    base = Path(root)
    release = _read(str(TEGRA_RELEASE if live else base / "etc/nv_tegra_release"))
    model = _read(str(DEVICE_TREE_MODEL if live else base / "proc/device-tree/model"))
    if release is None and not (model and "jetson" in model.lower()):
        return None
    compatible = _read(str(DEVICE_TREE_COMPATIBLE if live else base / "proc/device-tree/compatible"))
    nvpmodel = system_command(NVPMODEL_QUERY, root)
    dpkg = system_command(JETPACK_QUERY, root)
    return {
        "release": release.splitlines()[0] if release else None,
        "l4t": parse_tegra_release(release) if release else None,
        "model": model,
        "compatible": [c for c in (compatible or "").split("\x00") if c.strip()],
        "jetpack_package": parse_jetpack_version(dpkg) if dpkg else None,
        "power_mode": parse_nvpmodel(nvpmodel) if nvpmodel else None,
        "clocks": clock_state(str(base / "sys")),
    }


def system_command(argv: tuple[str, ...] | list[str], root: str = "/", timeout: float = 20) -> str | None:
    """The standard output of a command that succeeded, or None; for a recorded board (``root`` other
    than /), what ``RECORDED_COMMANDS`` there holds for that command line."""
    if Path(root) == Path("/"):
        return _command(list(argv), timeout)
    try:
        recorded = json.loads((Path(root) / RECORDED_COMMANDS).read_text())
    except (OSError, ValueError):
        return None
    out = recorded.get(" ".join(argv)) if isinstance(recorded, dict) else None
    return out if isinstance(out, str) else None


def _command(argv: list[str], timeout: float = 20) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _meminfo_mb(field: str) -> int | None:
    text = _read("/proc/meminfo")
    for line in (text or "").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None
