"""``edge-resnet quantize``: INT8-quantize an FP32 ONNX ResNet without torch, on the workstation or the Jetson.

``frames``: the calibration and held-out images (a folder, a video file, a live camera through the
camera app's reader); ``job``: import, calibrate with ONNX Runtime, write the run directory, verify.
"""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "QuantizeOptions": "job",
    "QuantizeResult": "job",
    "quantize": "job",
    "open_frames": "frames",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
