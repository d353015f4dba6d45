"""Where the INT8 model quantizes, and with which scale: the one INT8 definition of DESIGN.md.

Symmetric, zero-point 0, int8: activations per tensor with scale amax/127, weights per output
channel with scale amax_c/127, round half to even, saturate. A plan names every quantized
tensor (quantized once, where it is produced, so every consumer reads the same INT8 values)
and every quantized weight. Two placements share it:

- ``tensorrt``: what TensorRT's explicit quantization wants. Q/DQ on every Conv/Gemm input and
  on the shortcut input of every residual Add (so TensorRT fuses Conv+Add+ReLU and the next Q);
  none on conv outputs; global average pooling gets a pair on its input and (after Flatten) on
  its output. ReLU runs in float between them.
- ``cpu``: what ONNX Runtime's CPU kernels need to run a convolution in integers: Q/DQ on conv
  outputs and on ReLU outputs too, with uint8 activations (ReLU outputs use [0, amax] over 255
  levels, signed tensors a zero point of 128 and amax/127). It is a different function from
  the same calibration, verified on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge_resnet.calibration.calibrators import MIN_AMAX, weight_amax
from edge_resnet.models.dataflow import POOL_OPS, Graph, Node, array, groups

Target = Literal["tensorrt", "cpu"]
TARGETS: tuple[str, ...] = ("tensorrt", "cpu")
# ops that only move values: their output lies on their input's grid
_MOVES = ("maxpool", "flatten", "zeropad", "unflatten")



@dataclass(frozen=True)
class ActQuant:
    """How one activation tensor is quantized: q = saturate(round(x / scale) + zero_point)."""

    scale: float
    zero_point: int = 0
    dtype: str = "int8"

    @property
    def qmin(self) -> int:
        return -128 if self.dtype == "int8" else 0

    @property
    def qmax(self) -> int:
        return 127 if self.dtype == "int8" else 255


@dataclass(frozen=True)
class WeightQuant:
    """Per-output-channel symmetric int8 weights: w ~ q * scale[c]."""

    q: np.ndarray  # int8, the weight's shape
    scale: np.ndarray  # float32, one per output channel

    def dequantized_array(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.q.ndim - 1)
        return self.q.astype(np.float32) * self.scale.reshape(shape)

    def dequantized(self) -> Any:
        """As a torch tensor (the simulation's weights)."""
        import torch

        return torch.from_numpy(self.dequantized_array())


@dataclass
class QuantPlan:
    target: str
    activations: dict[str, ActQuant] = field(default_factory=dict)
    weights: dict[str, WeightQuant] = field(default_factory=dict)  # node name -> weights
    # node name -> float32 bias replacing the layer's own (bias correction); absent: unchanged
    biases: dict[str, np.ndarray] = field(default_factory=dict)
    # layers (unit names, see ``units``) computed in float: float weights, and they read their
    # inputs before any Q/DQ; every other consumer of those tensors still reads them quantized
    float_layers: frozenset[str] = frozenset()
    # other nodes (by graph name) that read their input before Q/DQ: a pool whose output no quantized
    # layer reads, beside a quantized reader of the same tensor (it would otherwise hold half a pair)
    raw_readers: frozenset[str] = frozenset()

    def reads_float(self, node: Node) -> bool:
        return unit_name(node) in self.float_layers or node.name in self.raw_readers


# the ops a mixed-precision choice can leave in float: weighted layers, the residual add, the Mul of a
# squeeze-excitation gate, and a node carried in float from an ONNX source (always float)
UNIT_OPS = ("conv", "linear", "add", "mul", "float_op")


def unit_name(node: Node) -> str:
    """A layer's name for people, the manifest and the ONNX node: its module path (``fc``, not ``logits``)."""
    return node.target or node.name


def is_unit(graph: Graph, node: Node) -> bool:
    """Whether ``node`` is a layer INT8 quantizes (or, a float_op, one kept in float by request)."""
    return node.op in UNIT_OPS and not graph.is_activation_mul(node)


def units(graph: Graph) -> list[str]:
    """Every layer that INT8 quantizes (conv, linear, residual add, a gate's Mul), by module path, in graph order."""
    return [unit_name(n) for n in graph if is_unit(graph, n)]


def classifier_layers(graph: Graph) -> frozenset[str]:
    """The final fully connected layer(s): the ones producing the network output.

    Left in float by default in both INT8 files, as NVIDIA Model Optimizer does: quantizing the
    pooled features and the FC weights costs about 1 dB of logit SQNR on ResNet-20 and 4 dB on
    resnet18 at 224 (the issue's measurement), for a layer that is a rounding error of the FLOPs.
    """
    return frozenset(unit_name(n) for n in graph.of_op("linear") if n.name == graph.output)


def check_float_layers(graph: Graph, float_layers: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """``float_layers`` as a frozenset, every name checked against ``units(graph)``."""
    known = set(units(graph))
    unknown = sorted(set(float_layers) - known)
    if unknown:
        raise ValueError(f"not a quantizable layer of this model: {', '.join(unknown)}; "
                         f"choose among {', '.join(sorted(known))}")
    return frozenset(float_layers)


def scale_for(amax: float, levels: int = 127) -> float:
    """The float32 scale for a calibrated range; ONNX stores float32, so round to it here."""
    return float(np.float32(max(float(amax), MIN_AMAX) / levels))


def quantize_weight(w: Any) -> WeightQuant:
    """Symmetric per-output-channel int8 (axis 0 for Conv OIHW and Gemm with transB); ``w`` a torch
    tensor or a numpy array."""
    w = array(w).astype(np.float32, copy=False)
    amax = np.maximum(weight_amax(w), np.float32(MIN_AMAX))
    scale = (amax / np.float32(127)).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    # float32 division and round half to even (as torch.round), and |w| <= amax keeps q within [-127, 127]
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127)
    return WeightQuant(q.astype(np.int8), scale)


def _is_nonnegative(graph: Graph, node: Node) -> bool:
    if node.op in ("relu", "sigmoid", "hardsigmoid"):
        return True
    if node.op in _MOVES or node.op in POOL_OPS:
        return _is_nonnegative(graph, graph[node.inputs[0]])
    return False


def _feeds_quantized_layer(graph: Graph, name: str, float_layers: frozenset[str]) -> bool:
    """Whether tensor ``name`` reaches a quantized conv/linear through shape-only ops (flatten)."""
    for c in graph.consumers(name):
        if c.op == "flatten" and _feeds_quantized_layer(graph, c.name, float_layers):
            return True
        if c.op in ("conv", "linear") and unit_name(c) not in float_layers:
            return True
    return False


def activation_points(graph: Graph, target: str, float_layers: frozenset[str] = frozenset()) -> dict[str, str]:
    """Tensors the target quantizes, each mapped to the tensor whose calibrated range it uses.

    Most use their own range. A zero-padded shortcut and (for ``cpu``) a max-pool or flatten
    output reuse their input's: the op only moves values already on that grid, so requantizing
    with the same scale is exact, and ONNX Runtime needs equal scales to run them in integers.
    A tensor that only ``float_layers`` read is not quantized at all (for ``tensorrt`` global
    average pooling then gets no pair either: it keeps a pair only while it feeds a quantized layer).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    points: dict[str, str] = {}
    if target == "tensorrt":
        for node in graph:
            quantized = unit_name(node) not in float_layers
            if (node.op in ("conv", "linear") and quantized) or (
                    node.op in POOL_OPS and _feeds_quantized_layer(graph, node.name, float_layers)):
                points.setdefault(node.inputs[0], node.inputs[0])
            elif node.op == "add" and quantized:
                points.setdefault(graph.shortcut_input(node), graph.shortcut_input(node))
            elif node.op == "mul" and quantized and not graph.is_activation_mul(node):
                # a squeeze-excitation gate: the feature map and the gate both quantized, as NVIDIA Model
                # Optimizer places a Mul outside a Conv-Sigmoid-Mul partition (TensorRT's element-wise layer
                # fuses DQ inputs); the map is then also the pool's quantized input
                for t in node.inputs:
                    points.setdefault(t, t)
        for node in graph:
            if node.op == "zeropad" and node.name in points:
                # the padded shortcut shares the grid of the tensor it pads (itself a point)
                points[node.inputs[0]] = node.inputs[0]
                points[node.name] = node.inputs[0]
        return points
    for node in graph:
        if node.name == graph.output:
            continue  # logits stay float
        consumers = graph.consumers(node.name)
        if node.op in ("conv", "add") and consumers and all(c.op == "relu" for c in consumers):
            continue  # ONNX Runtime folds the ReLU into the next Q: quantize the ReLU output instead
        if node.op in _MOVES:
            points[node.name] = points.get(node.inputs[0], node.inputs[0])
        else:
            points[node.name] = node.name
    # a tensor that reaches only float layers (through ops that move values) needs no Q/DQ
    return {t: src for t, src in points.items() if _read_quantized(graph, t, float_layers)}


def _read_quantized(graph: Graph, name: str, float_layers: frozenset[str]) -> bool:
    for c in graph.consumers(name):
        if unit_name(c) in float_layers:
            continue
        # ops that only move or average values keep a Q/DQ pair only when their output needs one
        if c.op not in (*_MOVES, *POOL_OPS) or _read_quantized(graph, c.name, float_layers):
            return True
    return False


def corrected_bias(node: Node, wq: WeightQuant, mean: Sequence[float]) -> np.ndarray:
    """The bias that cancels the mean output shift of rounding the weights.

    Rounding moves each output channel by sum_i (Wq - W)[c, i, ...] * x_i; over the data that
    shift has the mean sum_i (Wq - W)[c, i, ...] * E[x_i], which the bias can absorb exactly
    (Nagel et al. 2019, "bias correction"). E[x] is the per-channel input mean measured during
    calibration; the INT8 arithmetic is unchanged, only the float bias differs. In a grouped
    convolution output channel c reads only its group's input channels, so its shift uses their means.
    """
    w = array(node.module.weight).astype(np.float64)
    dw = wq.dequantized_array().astype(np.float64) - w
    mu = np.asarray(list(mean), dtype=np.float64)
    g = groups(node)
    if mu.size != dw.shape[1] * g:
        raise ValueError(f"{node.name}: calibration has {mu.size} input channel means, the layer "
                         f"{dw.shape[1] * g} input channels; recalibrate this model")
    dw = dw.sum(axis=tuple(range(2, dw.ndim))) if dw.ndim > 2 else dw  # (out, in per group)
    # output channel c belongs to group c // (out / g) and reads that group's slice of the means
    mu_of = mu.reshape(g, -1)[np.arange(dw.shape[0]) // (dw.shape[0] // g)]
    shift = (dw * mu_of).sum(axis=1)
    bias = node.module.bias
    base = array(bias).astype(np.float64) if bias is not None else np.zeros(dw.shape[0], dtype=np.float64)
    return (base - shift).astype(np.float32)


def make_plan(graph: Graph, amax: Mapping[str, float], target: str = "tensorrt",
              channel_mean: Mapping[str, Sequence[float]] | None = None,
              float_layers: frozenset[str] | set[str] | tuple[str, ...] = frozenset()) -> QuantPlan:
    """The plan for ``target`` from calibrated ranges (``amax`` covers every tensor of ``graph``).

    ``graph`` must be the folded model's: its conv weights are the ones quantized. With
    ``channel_mean`` (per-channel means of each conv/linear input), biases are corrected for the
    weight rounding (grouped convolutions too, each output channel from its group's means). ``float_layers`` (module paths, see
    ``units``) stay in float: no weight quantization, and their inputs are read unquantized.
    """
    if graph.of_op("batchnorm"):
        raise ValueError("the model still has BatchNorm layers; fold them first (edge_resnet.fold.fold_batchnorm)")
    float_layers = check_float_layers(graph, float_layers)
    points = activation_points(graph, target, float_layers)
    raw = frozenset(n.name for n in graph.of_op(*POOL_OPS) if target == "tensorrt" and n.inputs[0] in points
                    and not _feeds_quantized_layer(graph, n.name, float_layers))
    plan = QuantPlan(target, float_layers=float_layers, raw_readers=raw)
    for name, source in points.items():
        if source not in amax:
            raise KeyError(f"no calibrated range for tensor {source!r}; recalibrate this model")
        node = graph[name]
        if target == "tensorrt":
            plan.activations[name] = ActQuant(scale_for(amax[source]))
        elif _is_nonnegative(graph, node):
            plan.activations[name] = ActQuant(scale_for(amax[source], 255), 0, "uint8")
        else:
            plan.activations[name] = ActQuant(scale_for(amax[source]), 128, "uint8")
    for node in graph.of_op("conv", "linear"):
        if unit_name(node) in float_layers:
            continue
        wq = plan.weights[node.name] = quantize_weight(node.module.weight)
        mean = None if channel_mean is None else channel_mean.get(node.inputs[0])
        if mean is not None:
            plan.biases[node.name] = corrected_bias(node, wq, mean)
    return plan
