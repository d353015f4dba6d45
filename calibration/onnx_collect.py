"""Calibration statistics with ONNX Runtime: every tensor the graph names becomes an extra output.

The FP32 ONNX model written from the graph (``build_onnx``: tensors named as the graph names them)
gets each tensor that needs statistics as a graph output; one session runs the images in batches
and each output streams into the same ``TensorStats`` and per-channel sums the PyTorch collector
fills, then is dropped. Memory is the session, the histograms and one batch's outputs: the batch is
sized so that its outputs fit ``budget_mb``, and when a single image's outputs do not, the outputs
are fetched in chunks (one run per chunk). No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx
from edge_resnet.calibration.statistics import Statistics, observed, weighted_inputs
from onnx import TensorProto, helper

from edge_resnet.models.dataflow import INPUT, Graph

DEFAULT_BUDGET_MB = 64.0


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the tensors ``names``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return out


def wanted_tensors(graph: Graph) -> list[str]:
    """Graph tensors the statistics read, in graph order (the input comes from the data itself)."""
    need = {n.name for n in observed(graph)} | weighted_inputs(graph)
    return [n.name for n in graph if n.name in need and n.name != INPUT]


def _session(model: onnx.ModelProto, threads: int, providers: Sequence[str]):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # the arena keeps the largest batch's buffers for the session's life; without it they are freed
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(model.SerializeToString(), opts, providers=list(providers))


class OnnxCollector:
    """Streams images through ONNX Runtime into ``Statistics`` (see the module docstring)."""

    def __init__(self, graph: Graph, fp32_model: onnx.ModelProto, *, bins: int = 2048, threads: int = 0,
                 budget_mb: float = DEFAULT_BUDGET_MB, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.graph = graph
        self.names = wanted_tensors(graph)
        self.session = _session(with_outputs(fp32_model, self.names), threads, providers)
        self.stats = Statistics.for_graph(graph, bins)
        self.weighted = weighted_inputs(graph)
        self.budget = int(budget_mb * 2**20)
        self.chunks: list[list[str]] = [self.names]
        self.batch = 1

    def _plan(self, sizes: dict[str, int]) -> None:
        """From one image's output sizes: the chunks of outputs and the batch that fit the budget."""
        chunks, current, used = [], [], 0
        for name in self.names:
            if current and used + sizes[name] > self.budget:
                chunks.append(current)
                current, used = [], 0
            current.append(name)
            used += sizes[name]
        chunks.append(current)
        self.chunks = chunks
        self.batch = max(1, min(64, self.budget // max(max(sum(sizes[n] for n in c) for c in chunks), 1)))

    def _observe(self, name: str, x: np.ndarray) -> None:
        stats = self.stats.stats.get(name)
        if stats is not None:
            stats.update(x)
        if name in self.weighted:
            axes = (0, 2, 3) if x.ndim == 4 else (0,)
            s = x.sum(axis=axes, dtype=np.float64)
            self.stats.add_channel_sums(name, s, x.size // s.size)

    def _run(self, x: np.ndarray) -> dict[str, int]:
        sizes = {}
        if INPUT in self.stats.stats or INPUT in self.weighted:
            self._observe(INPUT, x)
        for chunk in self.chunks:
            outputs = self.session.run(chunk, {INPUT: x})
            for name in chunk:
                y = outputs.pop(0)
                sizes[name] = y.nbytes // max(len(x), 1)
                self._observe(name, y)
                del y
        self.stats.images += len(x)
        return sizes

    def run(self, images: Iterable[np.ndarray], on_image: Callable[[int], None] | None = None) -> Statistics:
        """Statistics over ``images`` (preprocessed (3, S, S) float32 arrays), in the order given.

        The first image runs alone (every histogram's range starts on it, as the PyTorch collector
        does, so the ranges do not depend on the batch size); it also measures the outputs' sizes
        that decide the batch and the chunks.
        """
        it = iter(images)
        first = next(it, None)
        if first is None:
            return self.stats
        self._plan(self._run(first[None]))
        if on_image is not None:
            on_image(1)
        for batch in _batched(it, self.batch):
            self._run(batch)
            if on_image is not None:
                on_image(len(batch))
        return self.stats


def _batched(images: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    for img in images:
        pending.append(img)
        if len(pending) == size:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


__all__ = ["DEFAULT_BUDGET_MB", "OnnxCollector", "wanted_tensors", "with_outputs"]
