"""A ResNet as a small dataflow graph of named tensors.

Calibration, the quantization simulation and the ONNX writer all need the same thing: every
tensor the network computes, under one stable name, with its producer and its consumers. The
graph is traced once with torch.fx (our ``Add`` and ``ZeroPadShortcut`` stay whole), Identity
modules (folded BatchNorms, the CIFAR stem's missing max-pool) disappear, and each tensor is
named after the module that produces it: ``layer1.0.conv1`` is that convolution's output. The
network's input is ``input`` and its output ``logits``; those names are also the ONNX names, so
a calibration range computed here keys a TensorRT calibration cache directly.
"""

from __future__ import annotations

import operator

import torch
import torch.fx
from torch import nn

from edge_resnet.models.blocks import Add, ZeroPadShortcut
from edge_resnet.models.dataflow import INPUT, OUTPUT, Graph, Node

__all__ = ["INPUT", "OUTPUT", "Graph", "Node", "trace"]

# module type -> op name; anything else is refused with a clear error
_MODULE_OPS: dict[type[nn.Module], str] = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.ReLU: "relu",
    nn.MaxPool2d: "maxpool",
    nn.AdaptiveAvgPool2d: "avgpool",
    nn.BatchNorm2d: "batchnorm",
    Add: "add",
    ZeroPadShortcut: "zeropad",
}


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (Add, ZeroPadShortcut)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> Graph:
    """The graph of a ResNet-like model built from the supported modules.

    Raises:
        ValueError: the model uses an operation the graph (and so the ONNX writer) does not know.
    """
    fx_graph = _Tracer().trace(model)
    alias: dict[str, str] = {}  # fx node name -> tensor name
    nodes: list[Node] = []
    names: set[str] = set()

    def ref(arg: object) -> str:
        if not isinstance(arg, torch.fx.Node):
            raise ValueError(f"unsupported constant argument {arg!r} in the traced graph")
        return alias[arg.name]

    def emit(fx_node: torch.fx.Node, node: Node) -> None:
        if node.name in names:
            raise ValueError(f"module {node.name} is called twice; the graph needs one tensor per module")
        names.add(node.name)
        nodes.append(node)
        alias[fx_node.name] = node.name

    for f in fx_graph.nodes:
        if f.op == "placeholder":
            if nodes:
                raise ValueError("the model takes more than one input")
            emit(f, Node(INPUT, "input", ()))
        elif f.op == "call_module":
            module = model.get_submodule(f.target)
            if isinstance(module, nn.Identity):
                alias[f.name] = ref(f.args[0])
                continue
            op = _MODULE_OPS.get(type(module))
            if op is None:
                raise ValueError(f"module {f.target} ({type(module).__name__}) is not supported")
            if op == "avgpool" and tuple(_pair(module.output_size)) != (1, 1):
                raise ValueError(f"{f.target}: only global average pooling (output 1x1) is supported")
            emit(f, Node(f.target, op, tuple(ref(a) for a in f.args), f.target, module))
        elif f.op == "call_function":
            if f.target is torch.flatten and _flatten_dims(f) == (1, -1):
                emit(f, Node(f"flatten{_count(nodes, 'flatten')}", "flatten", (ref(f.args[0]),)))
            elif f.target in (operator.add, torch.add) and len(f.args) == 2 and not f.kwargs:
                emit(f, Node(f"add{_count(nodes, 'add')}", "add", (ref(f.args[0]), ref(f.args[1]))))
            else:
                raise ValueError(f"function {getattr(f.target, '__name__', f.target)} is not supported")
        elif f.op == "output":
            out = ref(f.args[0])
            last = nodes[-1]
            if out != last.name:
                raise ValueError("the model's output must be its last operation")
            nodes[-1] = Node(OUTPUT, last.op, last.inputs, last.target, last.module)
        else:
            raise ValueError(f"unsupported traced operation {f.op} {f.target}")
    return Graph(nodes)


def _flatten_dims(f: torch.fx.Node) -> tuple[object, object]:
    args = list(f.args[1:]) + [None, None]
    start = args[0] if args[0] is not None else f.kwargs.get("start_dim", 0)
    end = args[1] if args[1] is not None else f.kwargs.get("end_dim", -1)
    return start, end


def _pair(v: int | tuple[int, ...] | None) -> tuple[int, ...]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _count(nodes: list[Node], op: str) -> str:
    n = sum(1 for x in nodes if x.op == op)
    return "" if n == 0 else f"_{n}"
