"""What each JetPack ships, and where a DLA exists: facts the build plan, build_engine.sh, the
bundle and docs/jetson.md share (a test keeps the page's table equal to ``JETPACKS``).

Sources: NVIDIA's JetPack release pages (components per release); the TensorRT 11.4.1 "Working
with DLA" page and release notes (DLA: "TensorRT 10.7 was the last 10.x release that supported
DLA"; "unavailable in TensorRT 11.0 through 11.3"; 11.4.0 had it on Windows on ARM only; 11.4.1
on Jetson AGX Orin with JetPack 7.2.2 or later; "Jetson Thor has no DLA"); TensorRT 11.5.0's pages ("NVIDIA
JetPack is not supported in TensorRT 11.5.0 ... Jetson deployments remain on TensorRT 11.4.1"; its DLA is
a Windows-on-ARM beta only); JetPack 7.2 (L4T R39.2: CUDA 13.2, TensorRT 10.16.2, Orin and Thor on one
stack, as read from flashed devices in roboflow/inference#2531 and OE4T/meta-tegra#2224); the Orin module data
sheets (Orin Nano has no DLA); NVIDIA's TensorRT Python samples and cuda-python's install notes
(cuda-python is pinned to the CUDA major of the driver: cuda-bindings 13.x needs driver 580+).
Torch-free and TensorRT-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_resnet.contract.engine import short_version, version_tuple


@dataclass(frozen=True)
class JetPack:
    """One JetPack line as edge-resnet supports it."""

    release: str  # "6.1/6.2"
    boards: str
    ubuntu: str
    python: str  # the system Python (python3-libnvinfer is built for it)
    cuda: str
    tensorrt: str  # the TensorRT it ships (three components: what engine keys record)
    cuda_python: str  # the requirement the matching extra installs
    extra: str  # pip install 'edge-resnet[<extra>]'
    implicit_int8: bool  # calib.cache (implicit quantization) available


JETPACKS: tuple[JetPack, ...] = (
    JetPack("5.1.x", "AGX Orin, Orin NX/Nano, AGX Xavier, Xavier NX", "20.04", "3.8", "11.4", "8.5.2",
            "cuda-python>=11.4,<12", "jetpack5", True),
    JetPack("6.0", "AGX Orin, Orin NX/Nano", "22.04", "3.10", "12.2", "8.6.2", "cuda-python>=12.2,<13", "jetpack6",
            True),
    JetPack("6.1/6.2", "AGX Orin, Orin NX/Nano", "22.04", "3.10", "12.6", "10.3.0", "cuda-python>=12.2,<13",
            "jetpack6", True),
    JetPack("7.0/7.1", "Thor", "24.04", "3.12", "13.0", "10.13.3", "cuda-python>=13,<14", "jetpack7", True),
    JetPack("7.2", "AGX Orin, Orin NX/Nano, Thor", "24.04", "3.12", "13.2", "10.16.2", "cuda-python>=13,<14",
            "jetpack7", True),
    # not shipped with JetPack: NVIDIA's TensorRT 11.4.1 SBSA package, installed on JetPack 7.2.2 or later
    JetPack("7.2.2+", "AGX Orin, Thor", "24.04", "3.12", "13.x", "11.4.1", "cuda-python>=13,<14", "jetpack7", False),
)

# Boards without a DLA, as their names appear in /proc/device-tree/model or nvidia-smi (lower case)
NO_DLA_BOARDS = {"orin nano": "Jetson Orin Nano", "thor": "Jetson Thor"}
LAST_10X_DLA = (10, 7)
FIRST_11X_DLA = (11, 4, 1)
# the newest TensorRT minor NVIDIA supports on JetPack: 11.5.0 "does not support JetPack" (DLA there is a
# Windows-on-ARM beta); raise it when NVIDIA lists a newer Jetson release
LAST_JETSON_11X = (11, 4)
DLA_JETPACK_11 = (7, 2, 2)


def calib_cache_versions() -> tuple[str, ...]:
    """The TensorRT versions of the JetPacks that read calib.cache: the bundle carries a cache whose
    header names each, because TensorRT skips a cache written for another version."""
    return tuple(dict.fromkeys(j.tensorrt for j in JETPACKS if j.implicit_int8))


def dla_version_refusal(tensorrt: str) -> str | None:
    """Why TensorRT ``tensorrt`` cannot build for a DLA on a Jetson (None: it can, where one exists)."""
    version = short_version(tensorrt)
    v = version_tuple(version)
    if v[0] == 10 and v[:2] > LAST_10X_DLA:
        return (f"TensorRT {version} has no DLA support (10.7 was the last 10.x with DLA); drop --dla to build for "
                "the GPU, or use JetPack 6's TensorRT 10.3 (or TensorRT 11.4.1 on Jetson AGX Orin with JetPack "
                "7.2.2+)")
    if v[0] == 11 and v < FIRST_11X_DLA:
        return (f"TensorRT {version} has no DLA support on Jetson (it returned in 11.4.1, on Jetson AGX Orin "
                "with JetPack 7.2.2+); drop --dla to build for the GPU")
    if v[:2] > LAST_JETSON_11X:
        return (f"TensorRT {version} does not support JetPack, so it has no Jetson DLA (NVIDIA lists its DLA for "
                "Windows on ARM only); use TensorRT 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+, or drop --dla "
                "to build for the GPU")
    return None


def dla_device_refusal(device: str | None, tensorrt: str, jetpack: str | None = None) -> str | None:
    """Why ``device`` (a board or GPU name) cannot run a DLA build with TensorRT ``tensorrt``; None
    where nothing known rules it out (the builder's DLA core count has the last word)."""
    name = (device or "").lower()
    for key, board in NO_DLA_BOARDS.items():
        if key in name:
            return f"{board} has no DLA; drop --dla to build for the GPU"
    if version_tuple(tensorrt) >= FIRST_11X_DLA:
        if jetpack is not None and version_tuple(jetpack) < DLA_JETPACK_11:
            return (f"TensorRT {short_version(tensorrt)} runs DLA only with JetPack 7.2.2 or later; this device "
                    f"has JetPack {jetpack}; drop --dla to build for the GPU")
        if "orin" in name and "agx" not in name:
            return (f"TensorRT {short_version(tensorrt)} runs DLA on Jetson AGX Orin only; drop --dla to build "
                    "for the GPU")
    return None


def dla_core_refusal(core: int, available: int) -> str | None:
    """Why DLA core ``core`` cannot be used on a device whose builder reports ``available`` cores."""
    if available <= 0:
        return "this device has no DLA (TensorRT reports 0 DLA cores); drop --dla to build for the GPU"
    if core >= available:
        return (f"DLA core {core} does not exist here: this device has {available} "
                f"(core{'s 0-' + str(available - 1) if available > 1 else ' 0'}); pass --dla 0"
                + (f" or --dla {available - 1}" if available > 1 else ""))
    return None
