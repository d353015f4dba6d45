"""Names and codes both sides share: the workstation (torch) and the device (no torch, Python 3.8).

One home for each, imported by both; nothing here imports numpy, so the command line can build
its parser from these names and stay quick to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from edge_resnet.contract.files import BY_ROLE, RunFile

# exit status of a command whose accuracy check failed (its report is still written)
EXIT_TOLERANCE = 3
# exit status of a bug of ours (an unexpected exception): EX_SOFTWARE of BSD's sysexits.h, "internal software
# error"; the traceback goes to a file and one line names it. A user's mistake is 1, an argparse usage error 2.
EXIT_BUG = 70

# range calibrators (edge_resnet.calibration.calibrators); "auto" tries them all and keeps the best
CALIBRATORS: Tuple[str, ...] = ("max", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class BenchRow:
    """One kind of benchmark row: which file of a run directory it measures and how to name it."""

    label: str
    role: Optional[str]  # the file's role (edge_resnet.contract.files); None: the run's *.engine files

    @property
    def file(self) -> Optional[RunFile]:
        return None if self.role is None else BY_ROLE[self.role]

    @property
    def precision(self) -> Optional[str]:
        return None if self.file is None else self.file.precision

    @property
    def accuracy_key(self) -> Optional[str]:
        """The file's row in the export's accuracy report."""
        return None if self.file is None else self.file.report_key

    @property
    def export_hint(self) -> str:
        """What writes the file."""
        return "the TensorRT engine builder" if self.file is None else self.file.writer


BENCH_ROWS: Dict[str, BenchRow] = {
    "pytorch": BenchRow("PyTorch FP32", "checkpoint"),
    "onnx-fp32": BenchRow("ONNX Runtime FP32", "fp32"),
    "onnx-fp16": BenchRow("ONNX Runtime FP16", "fp16"),
    "onnx-int8": BenchRow("ONNX Runtime INT8 (TensorRT target)", "tensorrt"),
    "onnx-int8-cpu": BenchRow("ONNX Runtime INT8 (CPU target)", "cpu"),
    "tensorrt": BenchRow("TensorRT", None),
}
