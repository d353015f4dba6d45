"""The statistics one calibration pass streams, whatever ran the model (PyTorch or ONNX Runtime).

One ``TensorStats`` per tensor of the graph except ReLU outputs (a ReLU's histogram is the positive
half of its input's signed one), and the per-channel sums of every conv/linear input (for bias
correction). ``ranges`` turns them into one amax per tensor by a calibrator: a pure function of
the statistics, so the two collectors (``collect``: PyTorch, ``onnx_collect``: ONNX Runtime) feed
the same calibrators the same way. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from edge_resnet.calibration.calibrators import compute_amax
from edge_resnet.calibration.stats import Histogram, TensorStats

from edge_resnet.models.dataflow import INPUT, Graph


@dataclass
class Statistics:
    """Streamed statistics of one graph; ``histogram(name)`` serves every tensor, ReLUs included."""

    graph: Graph
    stats: dict[str, TensorStats] = field(default_factory=dict)
    images: int = 0
    # per-channel sums (float64) and element counts per channel of every conv/linear input, for bias correction
    channel_sums: dict[str, np.ndarray] = field(default_factory=dict)
    channel_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_graph(cls, graph: Graph, bins: int) -> Statistics:
        return cls(graph, {n.name: TensorStats(bins) for n in observed(graph)})

    def channel_means(self) -> dict[str, list[float]]:
        return {k: (v / max(self.channel_counts[k], 1)).tolist() for k, v in self.channel_sums.items()}

    def add_channel_sums(self, name: str, sums: np.ndarray, per_channel: int) -> None:
        self.channel_sums[name] = self.channel_sums.get(name, 0) + np.asarray(sums, dtype=np.float64)
        self.channel_counts[name] = self.channel_counts.get(name, 0) + per_channel

    def histogram(self, name: str) -> Histogram:
        node = self.graph[name]
        if node.op == "relu":
            return self.stats[node.inputs[0]].histogram("relu")
        return self.stats[name].histogram("abs")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.graph]


def observed(graph: Graph) -> list:
    """The nodes whose outputs need statistics of their own (every one but ReLUs)."""
    return [n for n in graph if n.op != "relu"]


def weighted_inputs(graph: Graph) -> set[str]:
    """Tensors read by a conv or linear layer: their per-channel means correct the biases."""
    return {n.inputs[0] for n in graph.of_op("conv", "linear")}


def ranges(stats: Statistics, method: str, *, percentile: float = 99.99) -> dict[str, float]:
    """amax of every tensor by ``method``: a pure function of the statistics.

    The network input always gets its full range (max): it is the image itself, with a range
    fixed by the preprocessing, and clipping it erases content no later layer can recover (the
    entropy search, for one, clips the few grey levels of the digits to half their range).
    """
    out = {name: compute_amax(stats.histogram(name), method, percentile=percentile) for name in stats.names}
    out[INPUT] = compute_amax(stats.histogram(INPUT), "max")
    return out
