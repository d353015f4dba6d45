"""``edge-resnet doctor``: the device self-check a Jetson owner runs first.

Two halves: ``gather`` looks at the machine (the Jetson's files through ``edge_resnet.environment.board``,
the Python packages by importing them, the CUDA driver through libcuda, the disk) and returns plain
``Facts``; ``diagnose`` judges them (pure: the tests feed it facts) into one ``Check`` per line, each
with a status (ok, warn, fail, n/a), what was found and the fix, then what will work on this machine.
Nothing heavy is imported unless it is the thing checked (tensorrt, onnxruntime, cv2), a missing one is
a status line, and no torch anywhere. A recorded board (``root``: a copy of a Jetson's /etc, /proc,
/sys files and its command outputs) is judged with this machine's Python packages and disk; its CUDA
driver is the one its L4T release ships.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_resnet.environment import board, system_command
from edge_resnet.errors import EdgeResNetError
from edge_resnet.optional import load
from edge_resnet.export.boards import dla_cores, jetpack_for_l4t, jetpack_row, module_of, tensorrt_releases
from edge_resnet.export.jetson import JetPack, dla_device_refusal, dla_version_refusal

STATUSES = ("ok", "warn", "fail", "n/a")
GST_ARGUS = ("gst-inspect-1.0", "nvarguscamerasrc")
DISK_FAIL_MIB = 200  # an INT8 build needs room for the engine, the timing cache and TensorRT's temporaries
DISK_WARN_MIB = 1024


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # one of STATUSES
    found: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.status:<5} {self.name:<14} {self.found}"
        return text + (f" | fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class Capability:
    name: str
    works: bool
    why: str

    def line(self) -> str:
        return f"{'yes' if self.works else 'no':<4} {self.name}: {self.why}"


@dataclass
class Facts:
    """What ``gather`` found; every field None (or empty) where nothing could be found."""

    root: str = "/"
    board: dict[str, Any] | None = None  # environment.board(): None off a Jetson
    machine: str = ""
    python: str = ""  # "3.10.12"
    executable: str = ""
    venv_without_system_packages: bool = False
    tensorrt: str | None = None
    tensorrt_error: str | None = None
    tensorrt_dla_cores: int | None = None  # the builder's count (live, TensorRT importable)
    cuda_python: str | None = None
    driver_cuda: int | None = None  # cuDriverGetVersion: 12060 is 12.6
    driver_source: str = ""  # "libcuda", "L4T R36.4.3" (a recorded board)
    onnxruntime: str | None = None
    onnxruntime_error: str | None = None
    providers: list[str] = field(default_factory=list)
    onnxruntime_dists: list[str] = field(default_factory=list)
    opencv: str | None = None
    opencv_io: dict[str, bool] = field(default_factory=dict)  # GStreamer, FFMPEG, V4L
    nvarguscamerasrc: bool | None = None
    cameras: list[str] = field(default_factory=list)
    disk_path: str = "."
    disk_free: int | None = None  # bytes


@dataclass
class Diagnosis:
    facts: Facts
    checks: list[Check]
    capabilities: list[Capability]

    @property
    def jetson(self) -> bool:
        return self.facts.board is not None

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == "fail" for c in self.checks) else 0

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def verdict(self) -> str:
        n = self.counts()
        return (f"{n['fail']} failed, {n['warn']} warning(s), {n['ok']} ok, {n['n/a']} n/a: "
                + ("something needs fixing (exit 1)" if n["fail"] else "nothing failed (exit 0)"))

    def lines(self) -> list[str]:
        out = [c.line() for c in self.checks]
        out.append("what will work here:")
        out += ["  " + c.line() for c in self.capabilities]
        out.append(self.verdict())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": "edge-resnet/doctor-1", "jetson": self.jetson, "root": self.facts.root,
                "passed": self.exit_code == 0, "counts": self.counts(),
                "checks": [asdict(c) for c in self.checks],
                "capabilities": [asdict(c) for c in self.capabilities], "facts": asdict(self.facts)}


# ---------------------------------------------------------------- looking at the machine

def gather(root: str = "/", engines: str = ".") -> Facts:
    """Everything ``diagnose`` judges. ``root``: where the Jetson's files are (/ for this machine);
    ``engines``: the folder engines will be built in (its free disk is checked)."""
    if not Path(root).is_dir():
        raise EdgeResNetError(f"--root {root} is not a folder; pass the folder that holds a recorded board's etc/, "
                              "proc/ and sys/ (or leave --root out for this machine)")
    live = Path(root) == Path("/")
    facts = Facts(root=str(root), board=board(root), machine=platform.machine(), python=platform.python_version(),
                  executable=sys.executable, venv_without_system_packages=_venv_without_system_packages())
    _tensorrt(facts, probe_dla=live and facts.board is not None)
    _cuda(facts, live)
    _onnxruntime(facts)
    _opencv(facts)
    if facts.board is not None:
        facts.nvarguscamerasrc = system_command(GST_ARGUS, root) is not None
    facts.cameras = sorted(glob.glob(str(Path(root) / "dev" / "video[0-9]*")))
    facts.disk_path, facts.disk_free = _disk(engines)
    return facts


def _venv_without_system_packages() -> bool:
    if sys.prefix == getattr(sys, "base_prefix", sys.prefix):
        return False
    try:
        cfg = (Path(sys.prefix) / "pyvenv.cfg").read_text()
    except OSError:
        return False
    m = re.search(r"include-system-site-packages\s*=\s*(\w+)", cfg)
    return not (m and m.group(1).lower() == "true")


def _tensorrt(facts: Facts, probe_dla: bool) -> None:
    trt, why = load("tensorrt")  # ImportError, or OSError from a libnvinfer that does not load
    if trt is None:
        facts.tensorrt_error = why
        return
    facts.tensorrt = str(trt.__version__)
    if probe_dla:
        try:
            facts.tensorrt_dla_cores = int(trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores)
        except Exception:  # noqa: BLE001 - no GPU or driver: the CUDA line says so
            facts.tensorrt_dla_cores = None


def _cuda(facts: Facts, live: bool) -> None:
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            facts.cuda_python = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    if live:
        facts.driver_cuda, facts.driver_source = driver_cuda_version(), "libcuda"
        return
    # a recorded board: its driver is the one its L4T release ships (on a Jetson the driver is part of L4T)
    row = _row(facts)
    if row is not None and facts.board is not None:
        major, _, minor = row.cuda.partition(".")
        facts.driver_cuda = int(major) * 1000 + (int(minor) * 10 if minor.isdigit() else 0)
        facts.driver_source = f"L4T R{facts.board['l4t']}'s driver"


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver supports (cuDriverGetVersion: 12060 is 12.6), or None."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
                return int(version.value)
        except AttributeError:
            return None
    return None


def _onnxruntime(facts: Facts) -> None:
    from importlib import metadata

    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            facts.onnxruntime_dists.append(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001 - ImportError, or a GPU build whose CUDA libraries do not load
        facts.onnxruntime_error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return
    facts.onnxruntime = str(ort.__version__)
    facts.providers = list(ort.get_available_providers())


def _opencv(facts: Facts) -> None:
    try:
        import cv2
    except Exception:  # noqa: BLE001 - ImportError, or a cv2 whose libraries do not load
        return
    facts.opencv = str(cv2.__version__)
    info = cv2.getBuildInformation()
    for key, label in (("GStreamer", "GStreamer"), ("FFMPEG", "FFMPEG"), ("V4L", "v4l/v4l2")):
        m = re.search(rf"^\s*{re.escape(label)}:\s*(\w+)", info, re.MULTILINE)
        facts.opencv_io[key] = bool(m and m.group(1).upper() == "YES")


def _disk(folder: str) -> tuple[str, int | None]:
    path = Path(folder).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return str(path), shutil.disk_usage(str(path)).free
    except OSError:
        return str(path), None


# ---------------------------------------------------------------- judging

def _row(facts: Facts) -> JetPack | None:
    return jetpack_row(_jetpack(facts), facts.board["l4t"]) if facts.board else None


def _jetpack(facts: Facts) -> str | None:
    if not facts.board:
        return None
    return facts.board.get("jetpack_package") or jetpack_for_l4t(facts.board.get("l4t"))


def diagnose(facts: Facts) -> Diagnosis:
    """One check per line and what will work, from the facts alone."""
    row = _row(facts)
    checks = [_check_board(facts), _check_jetpack(facts, row), _check_python(facts, row),
              _check_tensorrt(facts, row), _check_cuda_python(facts, row), _check_onnxruntime(facts),
              _check_dla(facts), _check_opencv(facts), _check_gstreamer(facts), _check_power(facts),
              _check_clocks(facts), _check_disk(facts)]
    return Diagnosis(facts, checks, capabilities(facts, row, checks))


def _check_board(facts: Facts) -> Check:
    b = facts.board
    if b is None:
        return Check("board", "n/a", f"not a Jetson ({facts.machine}; no /etc/nv_tegra_release): the Jetson checks "
                                     "are skipped, Python, ONNX Runtime, OpenCV and the disk are checked")
    module = module_of(b["compatible"])
    soc = next((c.split(",")[-1] for c in b["compatible"] if "tegra" in c), None)
    what = ", ".join(x for x in (f"module {module.part}: {module.name}" if module else None, soc) if x)
    return Check("board", "ok", f"{b['model'] or 'a Jetson without a device-tree model'}" + (f" ({what})" if what else ""))


def _check_jetpack(facts: Facts, row: JetPack | None) -> Check:
    b = facts.board
    if b is None:
        return Check("jetpack", "n/a", "not a Jetson")
    if b["l4t"] is None:
        return Check("jetpack", "warn", f"no readable L4T release in /etc/nv_tegra_release ({b['release']!r})",
                     "reflash with JetPack 5.1, 6.x or 7.x (SDK Manager); see docs/jetson.md")
    jetpack = _jetpack(facts)
    source = "nvidia-jetpack package" if b.get("jetpack_package") else "from the L4T release"
    found = f"JetPack {jetpack or 'unknown'} (L4T R{b['l4t']}; {source})"
    if row is None:
        return Check("jetpack", "fail", found + ": edge-resnet has no row for this release",
                     "edge-resnet's device side supports JetPack 5.1.x, 6.0, 6.1/6.2, 7.0/7.1 and 7.2.2+ "
                     "(docs/jetson.md); upgrade the board's JetPack")
    return Check("jetpack", "ok", found + f": CUDA {row.cuda}, TensorRT {row.tensorrt}, Python {row.python}, "
                                          f"extra [{row.extra}]")


def _check_python(facts: Facts, row: JetPack | None) -> Check:
    found = f"{facts.python} ({facts.executable})"
    if tuple(int(x) for x in facts.python.split(".")[:2]) < (3, 8):
        return Check("python", "fail", found, "edge-resnet needs Python 3.8 or newer")
    if row is not None and ".".join(facts.python.split(".")[:2]) != row.python:
        return Check("python", "warn", found + f", but JetPack {row.release}'s TensorRT bindings are built for "
                                               f"Python {row.python}",
                     f"make the venv with the system Python: /usr/bin/python3 -m venv --system-site-packages "
                     f"~/er (Python {row.python})")
    return Check("python", "ok", found)


def _check_tensorrt(facts: Facts, row: JetPack | None) -> Check:
    jetson = facts.board is not None
    if facts.tensorrt is None:
        if not jetson:
            return Check("tensorrt", "n/a", "not installed: no engines here (ONNX Runtime runs the models)")
        fix = ("sudo apt install python3-libnvinfer" + (f" (JetPack {row.release}: TensorRT {row.tensorrt})"
                                                       if row else "") + ", never pip install tensorrt on a Jetson")
        if facts.venv_without_system_packages:
            fix += "; this venv does not see the system's packages: python3 -m venv --system-site-packages ~/er"
        return Check("tensorrt", "fail", f"the Python bindings do not import ({facts.tensorrt_error})", fix)
    if jetson and row is not None and _short(facts.tensorrt) not in tensorrt_releases(_jetpack(facts),
                                                                                  facts.board["l4t"]):
        return Check("tensorrt", "warn", f"{facts.tensorrt}, but JetPack {row.release} ships {row.tensorrt}",
                     "a PyPI tensorrt wheel is not JetPack's: pip uninstall tensorrt, then sudo apt install "
                     "python3-libnvinfer")
    return Check("tensorrt", "ok", facts.tensorrt + (f" (JetPack {row.release}'s)" if row is not None else ""))


def _check_cuda_python(facts: Facts, row: JetPack | None) -> Check:
    jetson = facts.board is not None
    driver = facts.driver_cuda
    drv = (f"driver CUDA {driver // 1000}.{driver % 1000 // 10} ({facts.driver_source})" if driver
           else "no CUDA driver found")
    pin = f"pip install '{row.cuda_python}' (the [{row.extra}] extra)" if row else \
        "pip install 'cuda-python>=M,<M+1' for the driver's CUDA major M"
    if facts.cuda_python is None:
        if not jetson and not driver:
            return Check("cuda-python", "n/a", f"not installed; {drv} (only the TensorRT backend needs it)")
        return Check("cuda-python", "fail" if jetson else "warn",
                     f"not installed; {drv}: the TensorRT backend cannot allocate GPU memory", pin)
    found = f"cuda-python {facts.cuda_python}; {drv}"
    if not driver:
        return Check("cuda-python", "warn" if jetson else "n/a", found,
                     "the driver's CUDA version could not be read (libcuda.so.1 does not load)" if jetson else None)
    from edge_resnet.runtime.tensorrt_backend import cuda_python_refusal

    why = cuda_python_refusal(facts.cuda_python, driver)
    if why:
        return Check("cuda-python", "fail", found + ": its CUDA major is newer than the driver's", pin)
    if int(facts.cuda_python.split(".")[0]) < driver // 1000:
        return Check("cuda-python", "warn", found + ": an older CUDA major than the driver's (works)", pin)
    return Check("cuda-python", "ok", found + ": the pin rule holds (cuda-python's major <= the driver's)")


def _check_onnxruntime(facts: Facts) -> Check:
    if facts.onnxruntime is None:
        return Check("onnxruntime", "fail", f"does not import ({facts.onnxruntime_error})",
                     "pip install onnxruntime (verify, the validation reference and the camera without an engine)")
    found = f"{facts.onnxruntime}, providers {', '.join(facts.providers) or 'none'}"
    if len(facts.onnxruntime_dists) > 1:
        return Check("onnxruntime", "warn", found + f" ({' and '.join(facts.onnxruntime_dists)} both installed: "
                                                    "they share one module)", "pip uninstall onnxruntime, keep one")
    if facts.board is not None and facts.providers and set(facts.providers) <= {"CPUExecutionProvider",
                                                                              "AzureExecutionProvider"}:
        return Check("onnxruntime", "warn", found + ": CPU only",
                     "for ONNX Runtime on the GPU, the onnxruntime-gpu wheel for your JetPack from "
                     "pypi.jetson-ai-lab.io (engines do not need it)")
    return Check("onnxruntime", "ok", found)


def _check_dla(facts: Facts) -> Check:
    b = facts.board
    if b is None:
        return Check("dla", "n/a", "not a Jetson")
    cores = dla_cores(b["compatible"], b["model"])
    seen = facts.tensorrt_dla_cores
    if cores is None and seen is None:
        return Check("dla", "warn", "unknown for this board (its module is not in edge-resnet's table)",
                     "TensorRT's count decides: install TensorRT and run doctor again")
    if seen is not None and cores is not None and seen != cores:
        return Check("dla", "warn", f"TensorRT reports {seen}, the board's data sheet {cores}",
                     "TensorRT's count is what build-engine uses; --dla N must be below it")
    n = seen if seen is not None else cores
    where = " (TensorRT's count)" if seen is not None else " (the module's data sheet)"
    return Check("dla", "ok", (f"{n} DLA core(s)" if n else "none: engines build for the GPU") + where)


def _check_opencv(facts: Facts) -> Check:
    jetson = facts.board is not None
    if facts.opencv is None:
        return Check("opencv", "warn", "cv2 does not import: no camera app",
                     "sudo apt install python3-opencv (JetPack's, with GStreamer) and a venv with "
                     "--system-site-packages" if jetson else "pip install 'edge-resnet[video]'")
    io = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in facts.opencv_io.items())
    if jetson and not facts.opencv_io.get("GStreamer"):
        return Check("opencv", "warn", f"{facts.opencv} ({io}): a build without GStreamer (a PyPI wheel?)",
                     "pip uninstall opencv-python opencv-python-headless, so JetPack's python3-opencv "
                     "(with GStreamer) is used; CSI cameras need it")
    return Check("opencv", "ok", f"{facts.opencv} ({io})")


def _check_gstreamer(facts: Facts) -> Check:
    if facts.board is None:
        return Check("gstreamer", "n/a", "not a Jetson: no CSI cameras (nvarguscamerasrc is Jetson-only)")
    parts = [f"nvarguscamerasrc {'present' if facts.nvarguscamerasrc else 'missing'}",
             f"OpenCV's GStreamer {'yes' if facts.opencv_io.get('GStreamer') else 'no'}"]
    if not facts.nvarguscamerasrc:
        return Check("gstreamer", "warn", "; ".join(parts) + ": no CSI cameras",
                     "sudo apt install nvidia-l4t-gstreamer (gst-inspect-1.0 nvarguscamerasrc must find it)")
    return Check("gstreamer", "ok", "; ".join(parts))


def _check_power(facts: Facts) -> Check:
    if facts.board is None:
        return Check("power mode", "n/a", "not a Jetson")
    mode = facts.board.get("power_mode")
    if mode is None:
        return Check("power mode", "warn", "nvpmodel -q gave nothing", "run sudo nvpmodel -q to see why")
    if mode.upper().startswith("MAXN"):
        return Check("power mode", "ok", mode)
    return Check("power mode", "warn", f"{mode}: not the board's fastest mode, so bench figures are lower",
                 "sudo nvpmodel -q --verbose lists the modes; sudo nvpmodel -m <id of MAXN or MAXN_SUPER>")


def _check_clocks(facts: Facts) -> Check:
    if facts.board is None:
        return Check("clocks", "n/a", "not a Jetson")
    clocks = facts.board.get("clocks") or {}
    parts = [f"{name} {'locked' if part['locked'] else 'scaling'}" for name, part in
             (("CPU", clocks.get("cpu")), ("GPU", clocks.get("gpu"))) if part]
    if clocks.get("locked") is None:
        return Check("clocks", "warn", "cannot read the CPU and GPU frequency limits from /sys",
                     "sudo jetson_clocks --show")
    if clocks["locked"]:
        return Check("clocks", "ok", ", ".join(parts) + " (jetson_clocks)")
    return Check("clocks", "warn", ", ".join(parts) + ": timings vary with the load",
                 "sudo jetson_clocks before benchmarking")


def _check_disk(facts: Facts) -> Check:
    if facts.disk_free is None:
        return Check("disk", "warn", f"cannot read the free space at {facts.disk_path}")
    mib = facts.disk_free / 2**20
    found = f"{mib / 1024:.1f} GiB free at {facts.disk_path}" if mib >= 1024 else f"{mib:.0f} MiB free at " \
                                                                                  f"{facts.disk_path}"
    if mib < DISK_FAIL_MIB:
        return Check("disk", "fail", found, f"free at least {DISK_WARN_MIB} MiB where engines are built")
    if mib < DISK_WARN_MIB:
        return Check("disk", "warn", found, f"free at least {DISK_WARN_MIB} MiB where engines are built")
    return Check("disk", "ok", found)


def capabilities(facts: Facts, row: JetPack | None, checks: list[Check]) -> list[Capability]:
    """What will work: engines (GPU, DLA), INT8 modes, ONNX Runtime, camera sources."""
    status = {c.name: c.status for c in checks}
    trt = _short(facts.tensorrt) if facts.tensorrt else None
    out = []
    if trt is None:
        expect = f" (JetPack {row.release} ships {row.tensorrt}: sudo apt install python3-libnvinfer)" if row else ""
        out.append(Capability("GPU engines (build-engine)", False, "no TensorRT" + expect))
    elif status["cuda-python"] == "fail" or (facts.cuda_python is None and facts.board is not None):
        out.append(Capability("GPU engines (build-engine)", False, f"TensorRT {trt} builds, but checking and running "
                                                                   "an engine needs a working cuda-python"))
    else:
        out.append(Capability("GPU engines (build-engine)", True, f"TensorRT {trt}"))
    out.append(_dla_capability(facts, row, trt))
    version = trt or (row.tensorrt if row else None)
    if trt is None:
        out.append(Capability("INT8 explicit (Q/DQ, model.int8.onnx)", False, "no TensorRT"))
        out.append(Capability("INT8 implicit (calib.cache)", False, "no TensorRT"))
    else:
        major = int(version.split(".")[0])
        out.append(Capability("INT8 explicit (Q/DQ, model.int8.onnx)", True,
                              f"TensorRT {trt}" + (", strongly typed" if major >= 11 else " with --int8 --fp16")))
        out.append(Capability("INT8 implicit (calib.cache)", major < 11,
                              f"TensorRT {trt}" + (": removed in TensorRT 11" if major >= 11 else
                                                   ": model.int8.implicit.onnx + calib.cache")))
    if facts.onnxruntime:
        out.append(Capability("ONNX Runtime (verify --onnx, camera without an engine)", True,
                              ", ".join(facts.providers)))
    else:
        out.append(Capability("ONNX Runtime (verify --onnx, camera without an engine)", False, "onnxruntime missing"))
    out += _camera_capabilities(facts)
    return out


def _dla_capability(facts: Facts, row: JetPack | None, trt: str | None) -> Capability:
    name = "DLA engines (build-engine --dla N)"
    if facts.board is None:
        return Capability(name, False, "not a Jetson")
    cores = facts.tensorrt_dla_cores if facts.tensorrt_dla_cores is not None else \
        dla_cores(facts.board["compatible"], facts.board["model"])
    if cores == 0:
        return Capability(name, False, "this board has no DLA")
    version = trt or (row.tensorrt if row else None)
    if version is None:
        return Capability(name, False, "no TensorRT")
    why = dla_version_refusal(version) or dla_device_refusal(facts.board["model"], version, _jetpack(facts))
    if why:
        return Capability(name, False, why.split(";")[0])
    if trt is None:
        return Capability(name, False, f"no TensorRT (JetPack's {version} would run {cores or 'its'} DLA core(s))")
    return Capability(name, True, f"{cores} core(s) with TensorRT {trt}" if cores else f"TensorRT {trt}")


def _camera_capabilities(facts: Facts) -> list[Capability]:
    if facts.opencv is None:
        return [Capability("camera sources", False, "no OpenCV")]
    io = facts.opencv_io
    streams = io.get("FFMPEG") or io.get("GStreamer")
    out = [Capability("camera: video files", bool(streams), "OpenCV " + ("with FFMPEG" if io.get("FFMPEG") else
                                                                         "with GStreamer" if streams else
                                                                         "without FFMPEG or GStreamer"))]
    if not io.get("V4L"):
        out.append(Capability("camera: USB (V4L2)", False, "OpenCV without V4L2"))
    else:
        devices = [os.path.relpath(c, facts.root) if facts.root != "/" else c for c in facts.cameras]
        out.append(Capability("camera: USB (V4L2)", bool(devices), ", ".join("/" + d.lstrip("/") for d in devices)
                              if devices else "no /dev/video* device"))
    if facts.board is None:
        out.append(Capability("camera: CSI (csi://N)", False, "not a Jetson"))
    elif not (io.get("GStreamer") and facts.nvarguscamerasrc):
        missing = [w for w, ok in (("OpenCV with GStreamer", io.get("GStreamer")),
                                   ("nvarguscamerasrc", facts.nvarguscamerasrc)) if not ok]
        out.append(Capability("camera: CSI (csi://N)", False, "needs " + " and ".join(missing)))
    else:
        out.append(Capability("camera: CSI (csi://N)", True, "nvarguscamerasrc through OpenCV's GStreamer"))
    out.append(Capability("camera: RTSP/HTTP streams", bool(streams), "OpenCV " + ("with FFMPEG or GStreamer"
                                                                                   if streams else "without either")))
    return out


def _short(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return f"{m[1]}.{m[2]}.{m[3] or 0}" if m else version


def run_doctor(root: str = "/", engines: str = ".") -> Diagnosis:
    """``gather`` then ``diagnose``: the whole self-check."""
    return diagnose(gather(root, engines))


__all__ = ["Capability", "Check", "Diagnosis", "Facts", "capabilities", "diagnose", "driver_cuda_version", "gather",
           "run_doctor"]
