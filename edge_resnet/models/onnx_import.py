"""An FP32 ONNX ResNet-family classifier as our dataflow graph, without torch.

Reads Conv (grouped too), BatchNormalization (folded into the conv before it), Relu, Add, MaxPool,
AveragePool (ResNet-D's downsampling shortcut), GlobalAveragePool / ReduceMean over H and W,
Flatten / Reshape / Squeeze to (N, C), Gemm or MatMul (+ Add) for the classifier, and looks through
Identity, Dropout and Constant nodes. Anything else is refused naming the node and its op: the Q/DQ
placement rules (``edge_resnet.quant.plan``) cover exactly these.

Tensor names are the file's own (a graph tensor is named after the ONNX tensor it stands for), layer
names are the ONNX node names; the input becomes ``input`` and the classifier's output ``logits``, the
names every file we write uses. Our own ``model.fp32.onnx`` thus imports to the graph its PyTorch
model traces to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edge_resnet.errors import ModelError
from edge_resnet.models.dataflow import INPUT, OUTPUT, Graph, Node, fold_bn

# ops we look through: their output is their first input
_ALIASES = ("Identity", "Dropout")


@dataclass
class Layer:
    """A conv, pool or fully connected layer's parameters, under the attribute names of the PyTorch
    modules the plan and the writer also read (``weight``, ``bias``, ``groups``, ``out_features``...)."""

    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # ONNX order: top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = False

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])


@dataclass
class ImportedModel:
    """The graph of an ONNX classifier and what the file says about its interface."""

    graph: Graph
    input_name: str  # the file's own names (the graph uses INPUT and OUTPUT)
    output_name: str
    input_size: int | None  # H (= W) when the file fixes it
    num_classes: int
    folded_bn: int = 0  # BatchNormalization nodes merged into convolutions
    source_nodes: int = 0
    notes: list[str] = field(default_factory=list)


class _Refused(Exception):
    pass


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file; a missing or unreadable one is a one-line ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no ONNX model at {path}" + ("; it is a folder" if path.is_dir() else ""))
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends do not share a base we can name
        raise ModelError(f"{path} is not a readable ONNX model ({' '.join(str(e).split())[:200] or type(e).__name__})"
                         ) from None


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every initializer turned into a graph input of the same type and shape: what the
    checker and shape inference need, without copying the weights (a resnet50 is 100 MB of them)."""
    light = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "producer_version", "model_version", "domain"):
        setattr(light, name, getattr(model, name))
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    g.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer)
    return light


def import_onnx(model: onnx.ModelProto | str | Path) -> ImportedModel:
    """The graph of an FP32 ONNX ResNet-family classifier, BatchNorms folded.

    Raises:
        ModelError: one line naming the first node (and op) outside what the Q/DQ placement covers,
            or what else makes the file no single-input classifier.
    """
    where = str(model) if isinstance(model, (str, Path)) else "the model"
    proto = load_onnx(model) if isinstance(model, (str, Path)) else model
    try:
        return _Importer(proto).run()
    except _Refused as e:
        raise ModelError(f"{where}: {e}") from None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _label(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'} ({node.op_type})"


class _Importer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.alias: dict[str, str] = {}  # ONNX tensor -> graph tensor
        self.nodes: list[dict[str, Any]] = []  # mutable records, frozen into Nodes at the end
        self.producer: dict[str, dict[str, Any]] = {}
        self.uses: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        self.targets: set[str] = set()
        self.folded = 0

    # ------------------------------------------------------------------ helpers

    def const(self, name: str, node: onnx.NodeProto, what: str) -> np.ndarray:
        if name not in self.consts:
            raise _Refused(f"{_label(node)}: its {what} {name!r} is computed, not a constant; only constant "
                           "weights are supported")
        return self.consts[name]

    def act(self, name: str, node: onnx.NodeProto) -> str:
        if name in self.consts:
            raise _Refused(f"{_label(node)} takes the constant {name!r} where an activation is expected; "
                           "not supported")
        if name not in self.alias:
            raise _Refused(f"{_label(node)} reads {name!r}, which no supported node produces")
        return self.alias[name]

    def target(self, node: onnx.NodeProto) -> str:
        base = node.name or f"{node.op_type}_{len(self.nodes)}"
        name, k = base, 1
        while name in self.targets:
            name, k = f"{base}_{k}", k + 1
        self.targets.add(name)
        return name

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], layer: Layer | None = None,
             output: str | None = None) -> dict[str, Any]:
        out = output or node.output[0]
        rec = {"name": out, "op": op, "inputs": inputs, "target": self.target(node), "module": layer}
        self.nodes.append(rec)
        self.producer[out] = rec
        self.alias[node.output[0]] = out
        return rec

    # ------------------------------------------------------------------ the walk

    def run(self) -> ImportedModel:
        g = self.model.graph
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise _Refused(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a classifier "
                           "takes one image batch")
        if len(g.output) != 1:
            raise _Refused(f"the model has {len(g.output)} outputs; a classifier returns one logits tensor")
        inp = inputs[0]
        size = self._input_size(inp)
        self.alias[inp.name] = INPUT
        self.nodes.append({"name": INPUT, "op": "input", "inputs": [], "target": None, "module": None})
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                raise _Refused(f"{_label(node)} is in the custom domain {node.domain!r}; not supported")
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise _Refused(f"{_label(node)} is not supported: the INT8 placement covers Conv, "
                               "BatchNormalization, Relu, Add, MaxPool, AveragePool, GlobalAveragePool/ReduceMean, "
                               "Flatten/Reshape and Gemm/MatMul")
            handler(node)
        out = g.output[0].name
        if out not in self.alias:
            raise _Refused(f"the output {out!r} is not computed by the graph")
        last = self.producer.get(self.alias[out])
        if last is None or last["op"] != "linear":
            raise _Refused(f"the output {out!r} is not a fully connected layer's (Gemm/MatMul); a classifier ends in "
                           "its logits (leave out any Softmax)")
        return self._finish(inp.name, out, size, last)

    def _input_size(self, inp: onnx.ValueInfoProto) -> int | None:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise _Refused(f"the input {inp.name!r} is not float32; pass the FP32 model")
        if len(dims) != 4 or dims[1] not in (3, None):
            raise _Refused(f"the input {inp.name!r} has shape {dims}; an NCHW image batch with 3 channels is expected")
        if dims[2] is not None and dims[3] is not None and dims[2] != dims[3]:
            raise _Refused(f"the input {inp.name!r} is {dims[2]}x{dims[3]}; only square inputs are supported")
        return dims[2] if dims[2] is not None else dims[3]

    def _finish(self, input_name: str, output_name: str, size: int | None, last: dict[str, Any]) -> ImportedModel:
        taken = {r["name"] for r in self.nodes}
        rename = {last["name"]: OUTPUT}
        if OUTPUT in taken and last["name"] != OUTPUT:  # an inner tensor already called "logits"
            rename[OUTPUT] = f"{OUTPUT}_inner"
        nodes = []
        live = self._live(last["name"])
        for r in self.nodes:
            if r["op"] != "input" and r["name"] not in live:
                continue  # a branch the output does not depend on
            nodes.append(Node(rename.get(r["name"], r["name"]), r["op"], tuple(rename.get(i, i) for i in r["inputs"]),
                              r["target"], r["module"]))
        if nodes[-1].name != OUTPUT:
            raise _Refused("the classifier must be the last operation of the graph")
        return ImportedModel(Graph(nodes), input_name, output_name, size, last["module"].out_features,
                             self.folded, len(self.model.graph.node))

    def _live(self, out: str) -> set[str]:
        live, todo = set(), [out]
        while todo:
            name = todo.pop()
            if name in live or name not in self.producer:
                continue
            live.add(name)
            todo.extend(self.producer[name]["inputs"])
        return live

    # ------------------------------------------------------------------ ops

    def _op_Constant(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if "value" not in a:
            raise _Refused(f"{_label(node)}: only tensor constants are supported")
        self.consts[node.output[0]] = numpy_helper.to_array(a["value"])

    def _alias(self, node: onnx.NodeProto) -> None:
        src = node.input[0]
        if src in self.consts:
            self.consts[node.output[0]] = self.consts[src]
        else:
            self.alias[node.output[0]] = self.act(src, node)

    _op_Identity = _alias
    _op_Dropout = _alias

    def _op_Conv(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        w = self.const(node.input[1], node, "weight").astype(np.float32)
        if w.ndim != 4:
            raise _Refused(f"{_label(node)} is a {w.ndim - 2}-D convolution; only 2-D is supported")
        b = self.const(node.input[2], node, "bias").astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        layer = Layer(weight=w, bias=b, kernel_size=tuple(a.get("kernel_shape", w.shape[2:])),
                      stride=tuple(a.get("strides", (1, 1))), pads=self._pads(node, a),
                      dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)))
        self.emit(node, "conv", [self.act(node.input[0], node)], layer)

    def _pads(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[int, int, int, int]:
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto not in ("NOTSET", "VALID"):
            raise _Refused(f"{_label(node)} uses auto_pad={auto}; only explicit pads are supported (re-export "
                           "with explicit padding)")
        pads = tuple(int(p) for p in a.get("pads", (0, 0, 0, 0)))
        if len(pads) != 4:
            raise _Refused(f"{_label(node)} has pads {list(pads)}; 2-D pads (4 values) are expected")
        return pads  # type: ignore[return-value]

    def _op_BatchNormalization(self, node: onnx.NodeProto) -> None:
        if _attrs(node).get("training_mode", 0):
            raise _Refused(f"{_label(node)} is in training mode; export the model in eval mode")
        src = self.act(node.input[0], node)
        conv = self.producer.get(src)
        if conv is None or conv["op"] != "conv" or self.uses.get(node.input[0], 0) != 1:
            raise _Refused(f"{_label(node)} does not directly follow a convolution whose output only it reads, so it "
                           "cannot be folded (a pre-activation ResNet); not supported")
        scale, beta, mean, var = (self.const(n, node, what) for n, what in
                                  zip(node.input[1:5], ("scale", "bias", "mean", "variance")))
        layer = conv["module"]
        layer.weight, layer.bias = fold_bn(layer.weight, layer.bias, scale, beta, mean, var,
                                           float(_attrs(node).get("epsilon", 1e-5)))
        del self.producer[conv["name"]]
        conv["name"] = node.output[0]
        self.producer[node.output[0]] = conv
        self.alias[node.output[0]] = node.output[0]
        self.folded += 1

    def _op_Relu(self, node: onnx.NodeProto) -> None:
        self.emit(node, "relu", [self.act(node.input[0], node)])

    def _op_Add(self, node: onnx.NodeProto) -> None:
        a, b = node.input
        if a in self.consts or b in self.consts:
            self._bias_add(node, b if a in self.consts else a, a if a in self.consts else b)
            return
        self.emit(node, "add", [self.act(a, node), self.act(b, node)])

    def _bias_add(self, node: onnx.NodeProto, x: str, c: str) -> None:
        """MatMul + Add: the Add's constant is the classifier's bias."""
        rec = self.producer.get(self.act(x, node))
        if rec is None or rec["op"] != "linear" or rec["module"].bias is not None or self.uses.get(x, 0) != 1:
            raise _Refused(f"{_label(node)} adds a constant to a tensor that is not a MatMul's output; not supported")
        bias = self.consts[c].astype(np.float32).reshape(-1)
        if bias.size != rec["module"].out_features:
            raise _Refused(f"{_label(node)}: bias of {bias.size} values for {rec['module'].out_features} outputs")
        rec["module"].bias = bias
        del self.producer[rec["name"]]
        rec["name"] = node.output[0]
        self.producer[node.output[0]] = rec
        self.alias[node.output[0]] = node.output[0]

    def _op_MaxPool(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if len(node.output) > 1 and node.output[1]:
            raise _Refused(f"{_label(node)} returns indices; not supported")
        k = tuple(a["kernel_shape"])
        layer = Layer(kernel_size=k, stride=tuple(a.get("strides", (1, 1))), pads=self._pads(node, a),
                      dilation=tuple(a.get("dilations", (1, 1))), ceil_mode=bool(a.get("ceil_mode", 0)))
        self.emit(node, "maxpool", [self.act(node.input[0], node)], layer)

    def _op_AveragePool(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise _Refused(f"{_label(node)} is dilated; not supported")
        layer = Layer(kernel_size=tuple(a["kernel_shape"]), stride=tuple(a.get("strides", (1, 1))),
                      pads=self._pads(node, a), ceil_mode=bool(a.get("ceil_mode", 0)),
                      count_include_pad=bool(a.get("count_include_pad", 0)))
        self.emit(node, "avgpool2d", [self.act(node.input[0], node)], layer)

    def _op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        self.emit(node, "avgpool", [self.act(node.input[0], node)])

    def _op_ReduceMean(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1], node, "axes").tolist()
        if axes is None or sorted(int(x) % 4 for x in axes) != [2, 3]:
            raise _Refused(f"{_label(node)} averages over axes {axes}; only the spatial mean (axes 2, 3) is supported")
        x = self.act(node.input[0], node)
        if a.get("keepdims", 1):
            self.emit(node, "avgpool", [x])
            return
        pooled = self.emit(node, "avgpool", [x], output=f"{node.output[0]}_pooled")
        self.nodes.append({"name": node.output[0], "op": "flatten", "inputs": [pooled["name"]],
                           "target": None, "module": None})
        self.producer[node.output[0]] = self.nodes[-1]
        self.alias[node.output[0]] = node.output[0]

    def _to_matrix(self, node: onnx.NodeProto) -> None:
        x = self.act(node.input[0], node)
        src = self.producer.get(x)
        if src is None or src["op"] != "avgpool":
            raise _Refused(f"{_label(node)} reshapes a tensor that is not the pooled features; only the flatten "
                           "after global average pooling is supported")
        rec = {"name": node.output[0], "op": "flatten", "inputs": [x], "target": None, "module": None}
        self.nodes.append(rec)
        self.producer[node.output[0]] = rec
        self.alias[node.output[0]] = node.output[0]

    def _op_Flatten(self, node: onnx.NodeProto) -> None:
        if _attrs(node).get("axis", 1) != 1:
            raise _Refused(f"{_label(node)} flattens from axis {_attrs(node)['axis']}; only axis 1 is supported")
        self._to_matrix(node)

    def _op_Reshape(self, node: onnx.NodeProto) -> None:
        shape = self.const(node.input[1], node, "shape").tolist()
        if len(shape) != 2:
            raise _Refused(f"{_label(node)} reshapes to {shape}; only (N, C) after pooling is supported")
        self._to_matrix(node)

    def _op_Squeeze(self, node: onnx.NodeProto) -> None:
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.const(node.input[1], node, "axes").tolist()
        if axes is None or sorted(int(x) % 4 for x in axes) != [2, 3]:
            raise _Refused(f"{_label(node)} squeezes axes {axes}; only (N, C, 1, 1) -> (N, C) is supported")
        self._to_matrix(node)

    def _op_Gemm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if a.get("transA", 0):
            raise _Refused(f"{_label(node)} transposes its input (transA); not supported")
        w = self.const(node.input[1], node, "weight").astype(np.float32)
        w = (w if a.get("transB", 0) else w.T) * np.float32(a.get("alpha", 1.0))
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = (self.const(node.input[2], node, "bias").astype(np.float32) * np.float32(a.get("beta", 1.0)))
            b = np.broadcast_to(b.reshape(-1), (w.shape[0],)).copy()
        self._linear(node, w, b)

    def _op_MatMul(self, node: onnx.NodeProto) -> None:
        w = self.const(node.input[1], node, "weight").astype(np.float32)
        if w.ndim != 2:
            raise _Refused(f"{_label(node)} multiplies by a {w.ndim}-D tensor; a classifier's weight is 2-D")
        self._linear(node, np.ascontiguousarray(w.T), None)

    def _linear(self, node: onnx.NodeProto, w: np.ndarray, b: np.ndarray | None) -> None:
        x = self.act(node.input[0], node)
        src = self.producer.get(x)
        if src is None or src["op"] != "flatten":
            raise _Refused(f"{_label(node)} does not read the flattened pooled features; only the classifier "
                           "after global average pooling is supported")
        self.emit(node, "linear", [x], Layer(weight=np.ascontiguousarray(w), bias=b))


__all__ = ["ImportedModel", "Layer", "import_onnx", "load_onnx"]
