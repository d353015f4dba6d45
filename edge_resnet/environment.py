"""What a measured figure ran on: CPU, cores, torch and its threads, GPU, Python."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """One line, enough to read a wall time or a speed against."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}")
