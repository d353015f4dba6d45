"""Optional packages, imported where they are used and probed in one place.

TensorRT, cuda-python, OpenCV and onnxruntime are not dependencies of every install: the device gets
TensorRT from JetPack, the workstation may have none, a camera box may have no OpenCV. Every module asks
here instead of writing its own ``try: import`` (TensorRT was probed four ways in four modules), so a
missing package is one answer everywhere: ``None`` from :func:`probe`, or one ``EdgeResNetError`` naming
what to install from :func:`require`. Torch-free; nothing is imported until asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict, Optional, Tuple

from edge_resnet.errors import EdgeResNetError

# what to install, per import name
INSTALL: Dict[str, str] = {
    "tensorrt": "on a Jetson install JetPack's python3-libnvinfer (not the PyPI wheel; docs/jetson.md), elsewhere "
                "pip install 'edge-resnet[tensorrt-cu12]' or '[tensorrt-cu13]'",
    "cv2": "pip install 'edge-resnet[video]' (on a Jetson, JetPack's python3-opencv has GStreamer)",
    "onnxruntime": "pip install onnxruntime (onnxruntime-gpu for CUDA; on a Jetson the wheel for your JetPack "
                   "from the Jetson AI Lab index)",
}
# an import can fail with more than ImportError: TensorRT's bindings raise OSError when libnvinfer is absent
_FAILURES = (ImportError, OSError)


def load(name: str) -> Tuple[Optional[ModuleType], Optional[str]]:
    """(the module, None), or (None, why it does not import: "ModuleNotFoundError: No module named 'x'")."""
    try:
        return importlib.import_module(name), None
    except _FAILURES as e:
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"[:200]


def probe(name: str) -> Optional[ModuleType]:
    """The module, or None where it is not installed or does not import (no error, nothing logged)."""
    return load(name)[0]


def require(name: str, what: str = "") -> ModuleType:
    """The module, or one error line saying it is missing, why, and what to install.

    Args:
        what: what needs it ("building an engine"), for the message.
    """
    module, why = load(name)
    if module is not None:
        return module
    need = f"{what} needs {name}" if what else f"{name} is needed"
    hint = INSTALL.get(name.split(".")[0], f"pip install {name.split('.')[0]}")
    raise EdgeResNetError(f"{need}, which is not importable here ({why}); {hint}")


def version(name: str) -> Optional[str]:
    """The importable module's ``__version__`` (None: not importable, or it has none)."""
    module = probe(name)
    found = getattr(module, "__version__", None) if module is not None else None
    return None if found is None else str(found)


__all__ = ["INSTALL", "load", "probe", "require", "version"]
