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
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_resnet.contract.metrics import db_from_json, db_to_json
from edge_resnet.calibration.calibrators import MIN_AMAX
from edge_resnet import atomic
from edge_resnet.errors import EdgeResNetError

FORMAT = "edge-resnet/calib-1"
# NV_TENSORRT_VERSION as TensorRT writes it in the header: 8.5.x -> 8501 style, 10.x -> 100300 style
TRT_HEADERS = {"8.5": "TRT-8501-EntropyCalibration2", "10.3": "TRT-100300-EntropyCalibration2"}


class CalibrationCacheError(EdgeResNetError):
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selection"] = {m: db_to_json(v) for m, v in self.selection.items()}
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | Path = "calib.json") -> Calibration:
        if d.get("format") != FORMAT:
            raise CalibrationCacheError(f"{path} is not an edge-resnet calibration file; delete it to recalibrate")
        try:
            return cls(
                method=str(d["method"]), amax={str(k): float(v) for k, v in d["amax"].items()},
                images=int(d["images"]), skipped=int(d.get("skipped", 0)),
                percentile=None if d.get("percentile") is None else float(d["percentile"]),
                bins=int(d.get("bins", 2048)), data=str(d.get("data", "")),
                fingerprint={str(k): str(v) for k, v in d.get("fingerprint", {}).items()},
                seconds=float(d.get("seconds", 0.0)),
                channel_mean={str(k): [float(x) for x in v] for k, v in d.get("channel_mean", {}).items()},
                requested=str(d.get("requested", "")) or str(d["method"]),
                selection={str(k): db_from_json(v) for k, v in d.get("selection", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CalibrationCacheError(f"{path} is damaged ({e}); delete it to recalibrate") from None

    def settings(self) -> dict[str, Any]:
        """What must match for the ranges to be reusable, besides the fingerprints."""
        return {"method": self.requested or self.method, "percentile": self.percentile, "bins": self.bins}


def save_calibration(path: str | Path, calib: Calibration) -> None:
    atomic.write_json(path, calib.to_dict())


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationCacheError(f"no calibration file at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationCacheError(f"cannot read {path} ({e}); delete it to recalibrate") from None
    return Calibration.from_dict(d, path)


def model_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def trt_scale_hex(amax: float) -> str:
    """TensorRT's encoding of a range: scale = amax / 127 as big-endian float32 bits in hex."""
    return struct.pack(">f", np.float32(max(float(amax), MIN_AMAX) / 127)).hex()


def trt_cache_text(amax: Mapping[str, float], trt_version: str = "8.5") -> str:
    """The calibration cache TensorRT reads, for the tensors named in ``amax`` (in that order)."""
    try:
        header = TRT_HEADERS[trt_version]
    except KeyError:
        raise ValueError(f"unknown TensorRT version {trt_version!r}; choose one of {', '.join(TRT_HEADERS)}") from None
    return header + "\n" + "".join(f"{name}: {trt_scale_hex(a)}\n" for name, a in amax.items())


def read_trt_cache(text: str) -> tuple[str, dict[str, float]]:
    """Header and per-tensor scales of a TensorRT calibration cache."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise CalibrationCacheError("not a TensorRT calibration cache (the first line must start with TRT-)")
    scales = {}
    for ln in lines[1:]:
        name, sep, value = ln.rpartition(": ")
        if not sep:
            raise CalibrationCacheError(f"bad calibration cache line {ln!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return lines[0], scales
