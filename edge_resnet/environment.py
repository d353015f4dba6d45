"""What a measured figure ran on: CPU, cores, library versions, GPU, Python.

``machine()`` is the one-line summary the training benchmarks print (it imports torch);
``describe()`` is the torch-free record that ``edge-resnet bench`` stores with every result,
including, on a Jetson, the power mode and whether the clocks are locked.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

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
        import importlib.util

        try:
            if importlib.util.find_spec("tensorrt") is not None:
                versions["tensorrt"] = "present (version not in its metadata)"
        except (ImportError, ValueError):
            pass
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
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
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


def _command(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
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
