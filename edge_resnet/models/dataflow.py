"""The network as a dataflow graph of named tensors, without torch.

Calibration, the quantization plan and the ONNX writer all need the same thing: every tensor the
network computes, under one stable name, with its producer and its consumers. Two sources fill
it: ``edge_resnet.models.graph.trace`` (a PyTorch model, its nodes carry ``nn.Module``\\ s) and
``edge_resnet.models.onnx_import`` (an ONNX file, its nodes carry numpy ``Layer``\\ s with the same
attribute names). Everything downstream reads a node's parameters through those names and
``array()``, so one plan and one writer serve both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INPUT = "input"
OUTPUT = "logits"
# ops that only move values (or average them) and keep a tensor on its grid
POOL_OPS = ("avgpool", "avgpool2d")
# element-wise activations that run in float between Q/DQ pairs (fused with the conv before them by
# TensorRT, as ReLU is): no Q/DQ of their own in the TensorRT placement
ACTIVATION_OPS = ("relu", "sigmoid", "hardsigmoid", "hardswish")
# ops that end a residual block's main path (the other input of the residual Add is the shortcut)
MAIN_PATH_OPS = ("conv", "mul")


@dataclass(frozen=True)
class Node:
    """One operation and the tensor it produces (``name``)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    target: str | None = None  # qualified module (or ONNX node) name, None for functions and the input
    module: Any = field(default=None, compare=False, repr=False)  # nn.Module or onnx_import.Layer


def array(value: Any) -> np.ndarray:
    """A parameter (torch tensor or numpy array) as a float numpy array on the CPU."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) not in ("torch.float32", "torch.float64"):
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def groups(node: Node) -> int:
    return int(getattr(node.module, "groups", 1))


class Graph:
    """The network: nodes in execution order, ``nodes[0]`` the input."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = tuple(nodes)
        self.by_name = {n.name: n for n in nodes}
        self.output = nodes[-1].name
        consumers: dict[str, list[Node]] = {n.name: [] for n in nodes}
        for n in nodes:
            for i in n.inputs:
                consumers[i].append(n)
        self._consumers = consumers
        last_use = {}
        for idx, n in enumerate(nodes):
            for i in n.inputs:
                last_use[i] = idx
        self._last_use = last_use

    def __getitem__(self, name: str) -> Node:
        return self.by_name[name]

    def __iter__(self):
        return iter(self.nodes)

    def consumers(self, name: str) -> list[Node]:
        return list(self._consumers[name])

    def of_op(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes if n.op in ops]

    def shortcut_input(self, node: Node) -> str:
        """Which input of a residual Add is the shortcut: the one the main path did not produce directly
        (the main path ends in a conv, or in the Mul of a squeeze-excitation block); with both from a
        conv (a projection), the second, as torchvision and timm write ``out + shortcut``."""
        a, b = node.inputs
        main_a, main_b = self[a].op in MAIN_PATH_OPS, self[b].op in MAIN_PATH_OPS
        if main_a and not main_b:
            return b
        if main_b and not main_a:
            return a
        return b

    def is_activation_mul(self, node: Node) -> bool:
        """A Mul that is an activation: x * sigmoid(x) (SiLU) or x * hardsigmoid(x) (hard-swish at opset
        < 14). TensorRT fuses it into the conv before it (as ModelOpt's Conv-Sigmoid-Mul partition does), so
        it gets no Q/DQ; any other Mul of two activations is a gate (squeeze-excitation) with both inputs
        quantized."""
        if node.op != "mul":
            return False
        a, b = node.inputs
        return any(self[g].op in ("sigmoid", "hardsigmoid") and self[g].inputs[0] == x for g, x in ((a, b), (b, a)))

    def run(self, x: Any, visit: Callable[[Node, Any], Any] | None = None,
            reads_original: Callable[[Node], bool] | None = None) -> Any:
        """Execute the graph with PyTorch; ``visit(node, output)`` may observe or replace every tensor.

        Nodes for which ``reads_original(node)`` is true read their inputs as computed, before
        ``visit`` replaced them (a layer kept in float beside quantized ones). Tensors are dropped
        after their last use, so calibration at large batches keeps only the live activations,
        as the plain forward pass would.
        """
        env: dict[str, Any] = {}
        original: dict[str, Any] = {}  # only tensors that ``visit`` replaced
        for idx, node in enumerate(self.nodes):
            if node.op == "input":
                out = x
            else:
                raw = reads_original is not None and reads_original(node)
                args = [original.get(i, env[i]) if raw else env[i] for i in node.inputs]
                out = _apply(node, args)
            if visit is not None:
                seen = visit(node, out)
                if seen is not out and reads_original is not None:
                    original[node.name] = out
                out = seen
            env[node.name] = out
            for i in node.inputs:
                if self._last_use.get(i) == idx:
                    del env[i]
                    original.pop(i, None)
        return env[self.output]


def _apply(node: Node, args: list[Any]) -> Any:
    import torch

    if node.op == "relu":
        # never in place: the conv output it reads may still be observed or quantized
        return torch.relu(args[0])
    if node.op == "flatten":
        return torch.flatten(args[0], 1)
    if node.op == "add" and node.module is None:
        return args[0] + args[1]
    if not isinstance(node.module, torch.nn.Module):
        raise ValueError(f"{node.name}: an imported ONNX graph runs on ONNX Runtime, not PyTorch")
    return node.module(*args)


def fold_bn(weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
            var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A conv's (weight, bias) with the BatchNorm after it merged in: W' = W s, b' = (b - mean) s + beta,
    s = gamma / sqrt(var + eps). float64 arithmetic, so the result differs from the exact product by
    one rounding to the weight's dtype."""
    dtype = weight.dtype
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    b = np.zeros(weight.shape[0], np.float64) if bias is None else bias.astype(np.float64)
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return w.astype(dtype), ((b - mean.astype(np.float64)) * scale + beta.astype(np.float64)).astype(dtype)
