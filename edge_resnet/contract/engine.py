"""What a TensorRT engine is specific to, and how engine files are named by it: the engine key.

An engine runs only on the GPU model, TensorRT version and JetPack it was built with, with the
precision and batch profile it was built for, from one exact ONNX file. ``EngineKey`` records all
of that; the builder writes it beside the engine (``<engine>.json``), and a loader compares it with
the running system before trusting the file. The engine itself stays plain TensorRT (no bytes
prepended), so trtexec, DeepStream and ``IRuntime.deserialize_cuda_engine`` read it as is.

The key is a contract between the builders (``edge_resnet.export.engine``, and ``build_engine.sh``,
which names engines by the same rule) and the loaders (the runtime, ``edge-resnet verify``, the
benchmark); ``edge_resnet.environment.probe_system`` says what the running machine is. Everything
here is torch-free and TensorRT-free: it runs on the device before TensorRT is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge_resnet import atomic
from edge_resnet.errors import EdgeResNetError

SIDECAR_SUFFIX = ".json"
KEY_FORMAT = "edge-resnet/engine-key-1"
PRECISIONS = ("fp32", "fp16", "int8")


# ---------------------------------------------------------------- TensorRT versions

def version_tuple(version: str) -> tuple[int, int, int]:
    """"10.3.0.30" -> (10, 3, 0); "8.5" -> (8, 5, 0).

    Raises:
        EdgeResNetError: not a dotted version number.
    """
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.\d+)*\s*", str(version))
    if not m:
        raise EdgeResNetError(f"{version!r} is not a TensorRT version; give it as MAJOR.MINOR[.PATCH], e.g. 10.3")
    return int(m[1]), int(m[2] or 0), int(m[3] or 0)


def short_version(version: str) -> str:
    """Three components, as engine names carry them: "10.3.0.30" -> "10.3.0"."""
    return ".".join(map(str, version_tuple(version)))


def version_code(version: str) -> int:
    """NV_TENSORRT_VERSION as TensorRT prints it (trtexec's banner, calibration-cache headers):
    8.5.2 -> 8502 (major * 1000 + minor * 100 + patch), 10.3.0 -> 100300 (major * 10000 + ...)."""
    major, minor, patch = version_tuple(version)
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch


def version_from_code(code: int) -> str:
    """The inverse of ``version_code``: 8502 -> "8.5.2", 100300 -> "10.3.0"."""
    major, rest = (code // 10000, code % 10000) if code >= 10000 else (code // 1000, code % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def strongly_typed_only(version: str) -> bool:
    """TensorRT 11 removed weak typing: no INT8/FP16 builder flags, no calibrators, no --int8/--fp16."""
    return version_tuple(version)[0] >= 11


# ---------------------------------------------------------------- the running system and the key

@dataclass(frozen=True)
class System:
    """The parts of the running machine an engine depends on (None: not found)."""

    gpu: str | None = None
    compute_capability: str | None = None
    tensorrt: str | None = None
    jetpack: str | None = None
    l4t: str | None = None



@dataclass(frozen=True)
class EngineKey:
    """Everything an engine file is valid for. Two engines with equal keys are interchangeable."""

    gpu: str | None
    compute_capability: str | None
    tensorrt: str
    jetpack: str | None
    l4t: str | None
    precision: str
    # the optimization profile's batch sizes (min, opt, max); min == max is a fixed batch
    batch: tuple[int, int, int]
    dla_core: int | None
    # "qdq": explicit Q/DQ graph; "implicit": FP32 graph + calib.cache; None for fp32/fp16
    int8_mode: str | None
    # the exact ONNX file the engine was built from
    onnx: str
    onnx_sha256: str

    @classmethod
    def for_system(cls, system: System, **build: Any) -> EngineKey:
        if system.tensorrt is None:
            raise EdgeResNetError("TensorRT is not installed here; build engines on the device that runs them "
                                  "(JetPack ships it; elsewhere pip install 'edge-resnet[tensorrt-cu12]')")
        return cls(gpu=system.gpu, compute_capability=system.compute_capability, tensorrt=system.tensorrt,
                   jetpack=system.jetpack, l4t=system.l4t, **build)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch"] = list(self.batch)
        return {"format": KEY_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        if d.get("format") != KEY_FORMAT:
            raise EdgeResNetError(f"engine key format {d.get('format')!r} is not {KEY_FORMAT}")
        values = {f.name: d.get(f.name) for f in fields(cls)}
        values["batch"] = tuple(int(b) for b in values["batch"])
        return cls(**values)

    def filename(self, stem: str = "model") -> str:
        """``model.int8.b1-8-32.trt10.3.0.nvidia-jetson-agx-orin-developer-kit.engine``.

        The name says what the engine is for at a glance; the sidecar holds the rest.
        """
        return engine_filename(stem, self.precision, self.batch, self.dla_core, self.int8_mode, self.tensorrt,
                               self.gpu)

    def differences(self, current: EngineKey) -> list[str]:
        """What differs from ``current``, one phrase per field ("TensorRT 8.5.2 here, 10.3.0 in the engine").

        A field the engine's sidecar did not record (None: e.g. the compute capability where
        build_engine.sh could not read it) is not held against it.
        """
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(current, f.name)
            if mine is None and f.name in ("compute_capability", "jetpack", "l4t", "gpu"):
                continue
            if mine != theirs:
                out.append(f"{f.name.replace('_', ' ')} {_show(theirs)} here, {_show(mine)} in the engine")
        return out


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return "-".join(map(str, v))
    if isinstance(v, str) and len(v) == 64:
        return v[:12]
    return str(v)


def gpu_slug(gpu: str | None) -> str:
    """The GPU name as engine file names carry it: lower case, runs of other characters as one '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu or "unknown-gpu").lower()).strip("-")
    return slug or "unknown-gpu"


def engine_filename(stem: str, precision: str, batch: tuple[int, int, int], dla_core: int | None,
                    int8_mode: str | None, tensorrt: str, gpu: str | None) -> str:
    parts = [stem, precision + ("-implicit" if int8_mode == "implicit" else "")]
    if dla_core is not None:
        parts.append(f"dla{dla_core}")
    parts += [f"b{batch[0]}-{batch[1]}-{batch[2]}", f"trt{short_version(tensorrt)}", gpu_slug(gpu)]
    return ".".join(parts) + ".engine"


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def write_sidecar(engine: str | Path, key: EngineKey, extra: dict[str, Any] | None = None) -> Path:
    path = sidecar_path(engine)
    atomic.write_json(path, {**key.to_dict(), **(extra or {})})
    return path


def read_sidecar(engine: str | Path) -> EngineKey | None:
    """The key stored beside ``engine``; None when there is none or it is unreadable (rebuild then)."""
    path = sidecar_path(engine)
    try:
        return EngineKey.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, EdgeResNetError):
        return None


@dataclass(frozen=True)
class Decision:
    """Whether an engine on disk can be used as is."""

    action: str  # "reuse", "build" (no engine yet) or "rebuild" (there is one, for something else)
    engine: Path
    reasons: tuple[str, ...] = ()


def decide(engine: str | Path, wanted: EngineKey) -> Decision:
    """Reuse the engine only when its sidecar key equals ``wanted``; never because the file exists."""
    engine = Path(engine)
    if not engine.is_file():
        return Decision("build", engine)
    saved = read_sidecar(engine)
    if saved is None:
        return Decision("rebuild", engine, (f"{sidecar_path(engine).name} is missing or unreadable, so nothing "
                                            "says what the engine was built for",))
    diffs = saved.differences(wanted)
    return Decision("rebuild", engine, tuple(diffs)) if diffs else Decision("reuse", engine)


def find_engines(folder: str | Path, system: System, precision: str,
                 sha256_of: Callable[[str], str | None]) -> tuple[list[tuple[Path, EngineKey]], list[str]]:
    """The engines in ``folder`` of ``precision`` that are valid on ``system``, and why the others are not.

    Args:
        sha256_of: the sha256 the manifest lists for an ONNX file name (None: not listed).

    Returns:
        (usable engines with their keys, best batch range first; one line per engine passed over).
    """
    usable, skipped = [], []
    for engine in sorted(Path(folder).glob("*.engine")):
        key = read_sidecar(engine)
        if key is None:
            skipped.append(f"{engine.name}: no readable {sidecar_path(engine).name}")
            continue
        if key.precision != precision:
            continue
        current = EngineKey.for_system(system, precision=key.precision, batch=key.batch, dla_core=key.dla_core,
                                       int8_mode=key.int8_mode, onnx=key.onnx,
                                       onnx_sha256=sha256_of(key.onnx) or "not in the manifest")
        diffs = key.differences(current)
        if diffs:
            skipped.append(f"{engine.name}: {'; '.join(diffs)}")
        else:
            usable.append((engine, key))
    usable.sort(key=lambda item: (item[1].dla_core is not None, -item[1].batch[2]))
    return usable, skipped
