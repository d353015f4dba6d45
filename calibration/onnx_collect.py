"""Calibration statistics with ONNX Runtime: the FP32 model cut into segments that return their tensors.

The FP32 ONNX model written from the graph (``build_onnx``: tensors named as the graph names them)
is cut, in node order, into segments whose tensors needing statistics fit ``budget_mb`` for one
image; each segment becomes a model of its own that returns those tensors and the ones later
segments read (a ResNet block's input, say), and one ONNX Runtime session runs it. An image batch
goes through the segments in turn, each output streaming into the same ``TensorStats`` and
per-channel sums the PyTorch collector fills, then dropped. So the model runs once per batch
(ONNX Runtime computes the whole graph on every run, whichever outputs are asked for: fetching the
outputs in chunks of the whole model would run it once per chunk), and memory is the sessions
(the weights, once), the histograms and one segment's outputs for one batch: the batch is sized so
that those fit the budget. Nothing grows with the number of images. No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from edge_resnet.calibration.statistics import Statistics, observed, weighted_inputs
from onnx import TensorProto, helper

from edge_resnet.models.dataflow import INPUT, Graph
from edge_resnet.models.onnx_import import weightless
from edge_resnet.sessions import open_session

DEFAULT_BUDGET_MB = 64.0
MAX_BATCH = 64


def wanted_tensors(graph: Graph) -> list[str]:
    """Graph tensors the statistics read, in graph order (the input comes from the data itself)."""
    need = {n.name for n in observed(graph)} | weighted_inputs(graph)
    return [n.name for n in graph if n.name in need and n.name != INPUT]


def tensor_info(model: onnx.ModelProto) -> dict[str, tuple[int, int | None]]:
    """(element type, float32 bytes of one image's value or None when a shape is not inferred) of every
    tensor of ``model`` (batch axis left out), inferred without copying the weights."""
    inferred = onnx.shape_inference.infer_shapes(weightless(model))
    info = {}
    for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = v.type.tensor_type.shape.dim[1:]
        known = bool(dims) and all(d.HasField("dim_value") for d in dims)
        info[v.name] = (v.type.tensor_type.elem_type, 4 * int(np.prod([d.dim_value for d in dims])) if known else None)
    return info


@dataclass
class Segment:
    """Consecutive nodes of the model as a model of their own (``session`` runs it)."""

    inputs: list[str]
    outputs: list[str]
    session: object
    wanted_bytes: int  # one image's bytes of the outputs that need statistics
    keep: frozenset[str] = frozenset()  # tensors later segments read: held after this one runs


def plan_segments(model: onnx.ModelProto, wanted: Sequence[str], sizes: dict[str, int | None],
                  budget: int) -> list[tuple[list[onnx.NodeProto], list[str], list[str], int]]:
    """Cut ``model``'s nodes (in their order) into runs whose ``wanted`` outputs take at most ``budget``
    bytes for one image (a run of one node when that node alone takes more): (nodes, inputs, outputs,
    wanted bytes) each, the inputs being the tensors produced earlier (or the model's input) that the
    run reads, the outputs its wanted tensors and the ones later runs or the model's output need."""
    want = set(wanted)
    fallback = max((b for b in sizes.values() if b is not None), default=0)
    sizes = {k: fallback if b is None else b for k, b in sizes.items()}  # a shape not inferred: the largest
    runs: list[list[onnx.NodeProto]] = [[]]
    used = 0
    for node in model.graph.node:
        cost = sum(sizes.get(o, fallback) for o in node.output if o in want)
        if runs[-1] and used + cost > budget:
            runs.append([])
            used = 0
        runs[-1].append(node)
        used += cost
    weights = {t.name for t in model.graph.initializer}
    final = {o.name for o in model.graph.output}
    produced_in = {o: i for i, run in enumerate(runs) for n in run for o in n.output}
    read_in: dict[str, set[int]] = {}
    for i, run in enumerate(runs):
        for n in run:
            for t in n.input:
                if t and t not in weights:
                    read_in.setdefault(t, set()).add(i)
    out = []
    for i, run in enumerate(runs):
        made = [o for n in run for o in n.output]
        inputs = list(dict.fromkeys(t for n in run for t in n.input
                                    if t and t not in weights and produced_in.get(t, -1) < i))
        outputs = [o for o in made if o in want or o in final or max(read_in.get(o, {i})) > i]
        out.append((run, inputs, outputs, sum(sizes.get(o, fallback) for o in made if o in want)))
    return out


def segment_model(model: onnx.ModelProto, nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str],
                  types: dict[str, int]) -> onnx.ModelProto:
    """The model of ``nodes`` alone: ``inputs`` in, ``outputs`` out (``types``: their element types, float
    when not known), the weights they read (copied once, straight into the new model)."""
    sub = onnx.ModelProto()
    sub.ir_version = model.ir_version
    sub.opset_import.extend(model.opset_import)
    g = sub.graph
    g.name = "segment"
    g.node.extend(nodes)
    g.input.extend(helper.make_tensor_value_info(t, types.get(t) or TensorProto.FLOAT, None) for t in inputs)
    g.output.extend(helper.make_tensor_value_info(t, types.get(t) or TensorProto.FLOAT, None) for t in outputs)
    reads = {t for n in nodes for t in n.input}
    for t in model.graph.initializer:
        if t.name in reads:
            g.initializer.add().CopyFrom(t)
    return sub


def _session(model: onnx.ModelProto, threads: int, providers: Sequence[str]) -> Any:
    """A session for one segment: no NCHWc layout (with every tensor an output it gains nothing and keeps a
    second copy of the weights: resnet50 at 224, 123 instead of 275 MB per session, as fast), and no arena
    (it keeps the largest batch's buffers for the session's life)."""
    return open_session(model, providers=providers, threads=threads, optimization="extended", memory_arena=False)


class OnnxCollector:
    """Streams images through ONNX Runtime into ``Statistics`` (see the module docstring)."""

    def __init__(self, graph: Graph, fp32_model: onnx.ModelProto, *, bins: int = 2048, threads: int = 0,
                 budget_mb: float = DEFAULT_BUDGET_MB, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.graph = graph
        self.names = wanted_tensors(graph)
        self.stats = Statistics.for_graph(graph, bins)
        self.weighted = weighted_inputs(graph)
        self.budget = int(budget_mb * 2**20)
        self.segments: list[Segment] = []
        info = tensor_info(fp32_model)
        types = {name: t for name, (t, _) in info.items()}
        sizes = {name: b for name, (_, b) in info.items()}
        for nodes, inputs, outputs, wanted_bytes in plan_segments(fp32_model, self.names, sizes, self.budget):
            sub = segment_model(fp32_model, nodes, inputs, outputs, types)
            self.segments.append(Segment(inputs, outputs, _session(sub, threads, providers), wanted_bytes))
            del sub
        for i, seg in enumerate(self.segments):
            seg.keep = frozenset(t for later in self.segments[i + 1:] for t in later.inputs)
        largest = max((s.wanted_bytes for s in self.segments), default=1)
        self.batch = max(1, min(MAX_BATCH, self.budget // max(largest, 1)))

    def _observe(self, name: str, x: np.ndarray) -> None:
        stats = self.stats.stats.get(name)
        if stats is not None:
            stats.update(x)
        if name in self.weighted:
            axes = (0, 2, 3) if x.ndim == 4 else (0,)
            s = x.sum(axis=axes, dtype=np.float64)
            self.stats.add_channel_sums(name, s, x.size // s.size)

    def _run(self, x: np.ndarray) -> None:
        if INPUT in self.stats.stats or INPUT in self.weighted:
            self._observe(INPUT, x)
        live = {INPUT: x}
        for seg in self.segments:
            outputs = seg.session.run(seg.outputs, {t: live[t] for t in seg.inputs})
            live = {t: v for t, v in live.items() if t in seg.keep}
            for name, y in zip(seg.outputs, outputs):
                if name in self.stats.stats or name in self.weighted:
                    self._observe(name, y)
                if name in seg.keep:
                    live[name] = y
            del outputs
        self.stats.images += len(x)

    def run(self, images: Iterable[np.ndarray], on_image: Callable[[int], None] | None = None) -> Statistics:
        """Statistics over ``images`` (preprocessed (3, S, S) float32 arrays), in the order given.

        The first image runs alone: every histogram's range starts on it, as the PyTorch collector
        does, so the ranges do not depend on the batch size.
        """
        it = iter(images)
        first = next(it, None)
        if first is None:
            return self.stats
        self._run(first[None])
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


__all__ = ["DEFAULT_BUDGET_MB", "OnnxCollector", "tensor_info", "plan_segments", "segment_model",
           "wanted_tensors"]
