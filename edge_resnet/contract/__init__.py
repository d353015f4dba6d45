"""Names and codes both sides share: the workstation (torch) and the device (no torch, Python 3.8).

One home for each, imported by both; nothing here imports numpy, so the command line can build
its parser from these names and stay quick to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# exit status of a command whose accuracy check failed (its report is still written)
EXIT_TOLERANCE = 3

# range calibrators (edge_resnet.calibration.calibrators); "auto" tries them all and keeps the best
CALIBRATORS: Tuple[str, ...] = ("max", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class BenchRow:
    """One kind of benchmark row: which file of a run directory it measures and how to name it."""

    label: str
    role: Optional[str]  # the file's role in the manifest; None: the run's *.engine files
    precision: Optional[str]
    accuracy_key: Optional[str]  # the backend's key in the export's accuracy report
    export_hint: str  # what writes the file


BENCH_ROWS: Dict[str, BenchRow] = {
    "pytorch": BenchRow("PyTorch FP32", "checkpoint", "fp32", "pytorch_fp32", "edge-resnet train"),
    "onnx-fp32": BenchRow("ONNX Runtime FP32", "fp32", "fp32", "onnxruntime_fp32", "edge-resnet export"),
    "onnx-fp16": BenchRow("ONNX Runtime FP16", "fp16", "fp16", "onnxruntime_fp16", "edge-resnet export --fp16"),
    "onnx-int8": BenchRow("ONNX Runtime INT8 (TensorRT target)", "tensorrt", "int8", "onnxruntime_tensorrt",
                          "edge-resnet export --int8"),
    "onnx-int8-cpu": BenchRow("ONNX Runtime INT8 (CPU target)", "cpu", "int8", "onnxruntime_cpu",
                              "edge-resnet export --int8 --target cpu"),
    "tensorrt": BenchRow("TensorRT", None, None, None, "the TensorRT engine builder"),
}
