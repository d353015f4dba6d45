"""Calibration results on disk: ``calib.json`` (ours) and ``calib.cache`` (TensorRT's text format).

``calib.json`` holds the calibrated range (amax) of every tensor, the method, the image count and
a fingerprint of the model weights and the data, so a later run can reuse it exactly when
nothing changed. ``calib.cache`` holds the same ranges as TensorRT's calibrators write them: a
header line ``TRT-<version>-EntropyCalibration2``, then ``<tensor>: <scale>`` per tensor with
the scale (amax / 127) as the big-endian hex of its float32 bits. TensorRT reads it for
implicit-INT8 builds (``IInt8EntropyCalibrator2.read_calibration_cache``) and DLA INT8.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_resnet.contract.metrics import db_from_json, db_to_json
from edge_resnet.calibration.calibrators import MIN_AMAX
from edge_resnet import atomic
from edge_resnet.contract.files import FILES
from edge_resnet.errors import EdgeResNetError

FORMAT = "edge-resnet/calib-1"
# the TensorRT a run's calib.cache names by default: JetPack 5.1.x's 8.5.2 (every 5.1 release ships
# 8.5.2.2), the oldest JetPack with implicit INT8 we support. TensorRT skips a cache whose header
# names another version, so the bundle also carries one per JetPack (edge_resnet.export.jetson), and the build
# paths rewrite the header for the TensorRT they run (edge_resnet.export.trtexec.retag_cache).
DEFAULT_CACHE_TENSORRT = "8.5.2"


class CalibrationFileError(EdgeResNetError):
    """A calibration file that is unreadable or belongs to another model or data."""


@dataclass
class Calibration:
    """Calibrated ranges of every tensor of one model, and what they were computed from."""

    method: str
    amax: dict[str, float]
    images: int
    skipped: int = 0
    percentile: float | None = None
    bins: int = 2048
    data: str = ""  # a description of the source, for people
    fingerprint: dict[str, str] = field(default_factory=dict)  # "model", "data" -> sha256
    seconds: float = 0.0
    # per-channel mean of every conv/linear input (for bias correction), by tensor name
    channel_mean: dict[str, list[float]] = field(default_factory=dict)
    # the method asked for: "auto" picks ``method`` by the scores in ``selection`` (SQNR in dB)
    requested: str = ""
    selection: dict[str, float] = field(default_factory=dict)
    # cross-layer equalization of the model the ranges belong to: "requested" (auto, on, off),
    # "applied" (bool), and what auto measured; empty: calibrated without (files before it existed)
    equalization: dict[str, Any] = field(default_factory=dict)
    # set when the ranges were learned by quantization-aware training, not calibrated (what it started from)
    qat: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selection"] = {m: db_to_json(v) for m, v in self.selection.items()}
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Any, path: str | Path = FILES["calib"]) -> Calibration:
        """Raises CalibrationFileError naming what is wrong; the caller adds what to do about it."""
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise CalibrationFileError(f"{path} is not an edge-resnet calibration file (calib.json)")
        try:
            calib = cls(
                method=str(d["method"]), amax={str(k): float(v) for k, v in d["amax"].items()},
                images=int(d["images"]), skipped=int(d.get("skipped", 0)),
                percentile=None if d.get("percentile") is None else float(d["percentile"]),
                bins=int(d.get("bins", 2048)), data=str(d.get("data", "")),
                fingerprint={str(k): str(v) for k, v in d.get("fingerprint", {}).items()},
                seconds=float(d.get("seconds", 0.0)),
                channel_mean={str(k): [float(x) for x in v] for k, v in d.get("channel_mean", {}).items()},
                requested=str(d.get("requested", "")) or str(d["method"]),
                selection={str(k): db_from_json(v) for k, v in d.get("selection", {}).items()},
                equalization=dict(d.get("equalization") or {}), qat=dict(d.get("qat") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"no {e}" if isinstance(e, KeyError) else " ".join(str(e).split()) or type(e).__name__
            raise CalibrationFileError(f"{path} is a damaged calibration file ({what})") from None
        bad = next((k for k, v in calib.amax.items() if not math.isfinite(v) or v < 0), None)
        if not calib.amax or bad is not None:
            what = "no ranges" if bad is None else f"range {calib.amax[bad]} for {bad}"
            raise CalibrationFileError(f"{path} is a damaged calibration file ({what})")
        return calib

    def settings(self) -> dict[str, Any]:
        """What must match for the ranges to be reusable, besides the fingerprints."""
        return {"method": self.requested or self.method, "percentile": self.percentile, "bins": self.bins,
                "equalize": str(self.equalization.get("requested", "off"))}

    @property
    def equalized(self) -> bool:
        """Whether the ranges belong to the cross-layer-equalized model (edge_resnet.quant.equalize)."""
        return bool(self.equalization.get("applied"))


def save_calibration(path: str | Path, calib: Calibration) -> None:
    atomic.write_json(path, calib.to_dict())


def load_calibration(path: str | Path) -> Calibration:
    """Read a calib.json.

    Raises:
        CalibrationFileError: missing, unreadable, or not (or no longer) a calib.json; the message
            says what is wrong, the caller what to do (a pinned file is the user's, one in the run
            directory is ours to recompute).
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise CalibrationFileError(f"no calibration file at {path}") from None
    except IsADirectoryError:
        raise CalibrationFileError(f"{path} is a folder, not a calib.json") from None
    except OSError as e:
        raise CalibrationFileError(f"cannot read {path} ({e.strerror or e})") from None
    if text.startswith(b"TRT-"):
        raise CalibrationFileError(f"{path} is a TensorRT calibration cache (calib.cache), not a calib.json")
    try:
        d = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f"line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "its bytes"
        raise CalibrationFileError(f"{path} is not a calib.json (not JSON, or cut short: {where})") from None
    return Calibration.from_dict(d, path)


def model_fingerprint(state_dict: Mapping[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in key order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def trt_scale_hex(amax: float) -> str:
    """TensorRT's encoding of a range: scale = amax / 127 as big-endian float32 bits in hex."""
    return struct.pack(">f", np.float32(max(float(amax), MIN_AMAX) / 127)).hex()


def trt_cache_header(trt_version: str) -> str:
    """``TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2`` for a TensorRT version: 8.5.2 -> TRT-8502-...,
    10.3.0 -> TRT-100300-... (major * 1000 + minor * 100 + patch before 10, major * 10000 + ... from 10).

    Raises:
        ValueError: not MAJOR.MINOR[.PATCH], or a TensorRT without calibration caches we write for
            (before 8.5, or 11+, which removed implicit quantization).
    """
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*", trt_version.strip())
    if not m:
        raise ValueError(f"unknown TensorRT version {trt_version!r}; give it as MAJOR.MINOR[.PATCH], e.g. 10.3.0")
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    if (major, minor) < (8, 5) or major >= 11:
        raise ValueError(f"unknown TensorRT version {trt_version!r} for a calibration cache: implicit INT8 is "
                         "8.5-10.x")
    code = major * (1000 if major < 10 else 10000) + minor * 100 + patch
    return f"TRT-{code}-EntropyCalibration2"


def trt_cache_text(amax: Mapping[str, float], trt_version: str = DEFAULT_CACHE_TENSORRT) -> str:
    """The calibration cache TensorRT ``trt_version`` reads, for the tensors named in ``amax`` (in that order)."""
    return trt_cache_header(trt_version) + "\n" + "".join(f"{name}: {trt_scale_hex(a)}\n" for name, a in amax.items())


def read_trt_cache(text: str) -> tuple[str, dict[str, float]]:
    """Header and per-tensor scales of a TensorRT calibration cache."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise CalibrationFileError("not a TensorRT calibration cache (the first line must start with TRT-)")
    scales = {}
    for ln in lines[1:]:
        name, sep, value = ln.rpartition(": ")
        try:
            if not sep:
                raise ValueError("no ': '")
            scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
        except (ValueError, struct.error):
            raise CalibrationFileError(f"bad calibration cache line {ln[:80]!r} (expected '<tensor>: <8 hex digits>')") from None
    return lines[0], scales
