"""Latency, throughput, memory and power of a run directory's models (``edge-resnet bench``).

    from edge_resnet.bench import BenchOptions, benchmark_run
    result = benchmark_run("runs/resnet20-digits", BenchOptions(batches=(1, 8, 32)))
    result.table(), result.verdicts                      # bench.json and bench.png are in the run dir

Imports no torch (only the PyTorch row does, in its own process), so it runs on a torch-free Jetson.
It measures the runtime's own backends (``edge_resnet.runtime``), which is what a device runs.
"""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "BenchOptions": "benchmark",
    "benchmark_run": "benchmark",
    "BenchResult": "report",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
