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
from typing import Any, Collection

import numpy as np
import onnx
from onnx import numpy_helper

from edge_resnet.errors import ModelError
from edge_resnet.models.dataflow import INPUT, OUTPUT, Graph, Node, fold_bn

# ops we look through: their output is their first input
_ALIASES = ("Identity", "Dropout")
# shape arithmetic evaluated at import (numpy), for every value a Shape node or a constant feeds: the
# exporters' dynamic-batch reshapes (Shape -> Gather -> Concat -> Reshape) and ECA's view before its 1-D
# conv become constants for the fixed image size, with the batch axis kept symbolic (see _fold)
_FOLDABLE = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Add", "Sub", "Mul", "Div",
             "Equal", "Where", "ConstantOfShape", "Reshape", "Expand", "Range", "Identity", "Abs", "Neg",
             "Max", "Min")
# two batch sizes the shape arithmetic is evaluated at: a dimension that differs between them is the batch
_BATCHES = (2, 3)
# what the placement covers, for the refusal of anything else
_COVERED = ("Conv, BatchNormalization (folded into the conv before it, or kept as a scale layer), Relu, Sigmoid, "
            "HardSigmoid, HardSwish, SiLU (Sigmoid + Mul), Add, Mul (squeeze-excitation), MaxPool, AveragePool, "
            "GlobalAveragePool/ReduceMean, Flatten/Reshape and Gemm/MatMul")
# the nearest supported pattern of ops that are not, by op
_NEAREST = {
    **dict.fromkeys(("GroupNormalization", "InstanceNormalization", "LayerNormalization", "LpNormalization"),
                    "BatchNormalization (folded into the conv before it, or kept as a per-channel scale layer)"),
    **dict.fromkeys(("Tanh", "Elu", "Selu", "LeakyRelu", "PRelu", "Gelu", "Softplus", "Mish", "Clip", "Erf",
                     "ThresholdedRelu", "Celu", "Softsign"),
                    "an activation: Relu, Sigmoid, HardSigmoid, HardSwish or SiLU (Sigmoid + Mul)"),
    **dict.fromkeys(("ReduceMax", "GlobalMaxPool", "ReduceSum", "ReduceL2", "LpPool", "GlobalLpPool"),
                    "global average pooling (GlobalAveragePool, or ReduceMean over H and W)"),
    **dict.fromkeys(("Concat", "Split", "Slice", "Pad", "Transpose", "Tile"),
                    "the residual Add of two branches (a ResNet block); a Transpose only on an NHWC input"),
    **dict.fromkeys(("Softmax", "LogSoftmax"), "a Softmax only as the last node, after the classifier"),
    **dict.fromkeys(("Div", "Sub", "Pow", "Sqrt", "Reciprocal", "Exp", "Log"),
                    "squeeze-excitation's Mul of a feature map by its gate; arithmetic on activations is not covered"),
}


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
    # HardSigmoid's y = max(0, min(1, alpha x + beta))
    alpha: float = 0.2
    beta: float = 0.5
    # a BatchNormalization kept as a per-channel scale layer ("affine"): weight and bias are its scale and
    # shift, written back as the source's own BatchNormalization so the FP32 file computes what it did
    mean: np.ndarray | None = None
    var: np.ndarray | None = None
    eps: float = 1e-5
    # a node the user kept in float with --float-layers ("float_op"): the source node, written as it is,
    # and the constants it reads
    proto: Any = None
    consts: dict[str, np.ndarray] = field(default_factory=dict)

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
    layout: str = "NCHW"  # the source's input layout: "NHWC" when it transposes its input itself
    input_dtype: str = "float32"  # "float16" for an FP16 source (our files compute in FP32)
    softmax: bool = False  # the source ends in a Softmax over the logits (our files return the logits)
    kept_bn: int = 0  # BatchNormalization nodes kept as scale layers (pre-activation ResNets)
    folded_shapes: int = 0  # shape-arithmetic nodes evaluated at import (dynamic batch, ECA)


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


def import_onnx(model: onnx.ModelProto | str | Path, float_ops: Collection[str] = ()) -> ImportedModel:
    """The graph of an FP32 ONNX ResNet-family classifier, BatchNorms folded.

    ``float_ops``: node names the user keeps in float (``--float-layers``); such a node, if its op is
    outside the placement but it reads one activation, is carried into our files as it is ("float_op").

    Raises:
        ModelError: one line naming the first node (and op) outside what the Q/DQ placement covers, its
            block and the nearest supported pattern, or what else makes the file no single-input classifier.
    """
    where = str(model) if isinstance(model, (str, Path)) else "the model"
    proto = load_onnx(model) if isinstance(model, (str, Path)) else model
    try:
        return _Importer(proto, frozenset(float_ops)).run()
    except _Refused as e:
        raise ModelError(f"{where}: {e}") from None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _label(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'} ({node.op_type})"


def _evaluate(op: str, args: list, a: dict[str, Any]) -> np.ndarray:
    """One shape-arithmetic node in numpy (the ops of _FOLDABLE, as ONNX defines them)."""
    x = args[0]
    if op == "Identity":
        return np.asarray(x)
    if op == "Gather":
        return np.take(x, np.asarray(args[1]).astype(np.int64), axis=int(a.get("axis", 0)))
    if op in ("Unsqueeze", "Squeeze"):
        axes = a.get("axes")
        if axes is None and len(args) > 1 and args[1] is not None:
            axes = np.asarray(args[1]).tolist()
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(int(i) % x.ndim for i in axes))
        out = np.asarray(x)
        rank = out.ndim + len(axes)
        for ax in sorted(int(i) % rank for i in axes):
            out = np.expand_dims(out, ax)
        return out
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in args if v is not None], axis=int(a.get("axis", 0)))
    if op == "Slice":
        starts, ends = np.asarray(args[1]).tolist(), np.asarray(args[2]).tolist()
        axes = np.asarray(args[3]).tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = np.asarray(args[4]).tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
        idx = [slice(None)] * np.ndim(x)
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            idx[int(ax)] = slice(int(st), int(en), int(sp))
        return np.asarray(x)[tuple(idx)]
    if op == "Cast":
        return np.asarray(x).astype(onnx.helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if op in ("Add", "Sub", "Mul", "Equal"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal}[op](x, args[1])
    if op == "Div":
        q = np.true_divide(x, args[1])
        return np.trunc(q).astype(np.asarray(x).dtype) if np.asarray(x).dtype.kind in "iu" else q
    if op in ("Max", "Min"):
        return (np.maximum if op == "Max" else np.minimum).reduce([np.asarray(v) for v in args])
    if op in ("Abs", "Neg"):
        return np.abs(x) if op == "Abs" else np.negative(x)
    if op == "Where":
        return np.where(x, args[1], args[2])
    if op == "ConstantOfShape":
        value = numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
        return np.full(np.asarray(x).astype(np.int64).tolist(), value[0], dtype=value.dtype)
    if op == "Reshape":
        shape = [d if d != 0 or a.get("allowzero", 0) else np.shape(x)[i]
                 for i, d in enumerate(np.asarray(args[1]).astype(np.int64).tolist())]
        return np.reshape(x, shape)
    if op == "Expand":
        return np.asarray(x) * np.ones(np.asarray(args[1]).astype(np.int64).tolist(), dtype=np.asarray(x).dtype)
    if op == "Range":
        return np.arange(np.asarray(x).item(), np.asarray(args[1]).item(), np.asarray(args[2]).item())
    raise ValueError(f"no evaluation for {op}")


def _block(node: onnx.NodeProto) -> str:
    """The block a node belongs to: its name scope (``/layer1/layer1.0/se`` of ``/layer1/layer1.0/se/gate/Sigmoid``;
    the dynamo exporter's names have none)."""
    parts = node.name.strip("/").split("/")
    return "/" + "/".join(parts[:-2] if len(parts) > 2 else parts[:-1]) if len(parts) > 1 else "(top level)"


class _Importer:
    def __init__(self, model: onnx.ModelProto, float_ops: frozenset = frozenset()) -> None:
        self.model = model
        self.float_ops = float_ops
        g = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        # batch-dependent shape values: (value at _BATCHES[0], value at _BATCHES[1])
        self.sym: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.seq_views: set[str] = set()  # ONNX tensors that are a pooled (N, C) map viewed as (N, 1, C) (ECA)
        self.readers: dict[str, list[str]] = {}  # ONNX tensor -> op types reading it
        for n in g.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n.op_type)
        self._shapes: dict[str, list] | None = None
        self.layout, self.softmax, self.kept_bn, self.folded_shapes = "NCHW", False, 0, 0
        self.fixed_batch: int | None = None
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
            if node.op_type in _FOLDABLE and self._foldable(node):
                self._fold(node)
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if node.name and node.name in self.float_ops and node.op_type not in ("Conv", "Gemm", "MatMul", "Add"):
                handler = self._float_op
            if handler is None:
                raise _Refused(self._unsupported(node))
            handler(node)
        out = g.output[0].name
        if out not in self.alias:
            raise _Refused(f"the output {out!r} is not computed by the graph")
        last = self.producer.get(self.alias[out])
        if last is None or last["op"] != "linear":
            raise _Refused(f"the output {out!r} is not a fully connected layer's (Gemm/MatMul, or a 1x1 Conv on the "
                           "pooled features); a classifier ends in its logits or their Softmax")
        return self._finish(inp.name, out, size, last)

    def _input_size(self, inp: onnx.ValueInfoProto) -> int | None:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        if inp.type.tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            raise _Refused(f"the input {inp.name!r} is not float32 or float16; pass the FP32 model")
        if len(dims) == 4 and dims[3] == 3 and dims[1] != 3 and self.readers.get(inp.name) == ["Transpose"]:
            self.layout = "NHWC"  # the model transposes its input itself (checked at the Transpose)
            dims = [dims[0], dims[3], dims[1], dims[2]]
        self.fixed_batch = dims[0] if dims else None
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
        dtype = self.model.graph.input[0].type.tensor_type.elem_type
        inputs = [i for i in self.model.graph.input if i.name not in self.consts]
        dtype = inputs[0].type.tensor_type.elem_type if inputs else dtype
        return ImportedModel(Graph(nodes), input_name, output_name, size, last["module"].out_features,
                             self.folded, len(self.model.graph.node), layout=self.layout,
                             input_dtype="float16" if dtype == onnx.TensorProto.FLOAT16 else "float32",
                             softmax=self.softmax, kept_bn=self.kept_bn, folded_shapes=self.folded_shapes)

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
        b = self.const(node.input[2], node, "bias").astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        if w.ndim == 3 and node.input[0] in self.seq_views:
            self._eca_conv(node, w, b, a)
            return
        if w.ndim != 4:
            raise _Refused(f"{_label(node)} is a {w.ndim - 2}-D convolution; only 2-D (and ECA's 1-D conv across the "
                           "pooled channels) is supported")
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
        scale, beta, mean, var = (self.const(n, node, what) for n, what in
                                  zip(node.input[1:5], ("scale", "bias", "mean", "variance")))
        if conv is None or conv["op"] != "conv" or self.uses.get(node.input[0], 0) != 1:
            # pre-activation (ResNet v2: BN -> ReLU -> conv after the residual Add, and the final norm): kept as a
            # per-channel scale layer, not folded into the conv after it (a ReLU lies between, and a BN shift
            # folded into a zero-padded conv is wrong at the borders); TensorRT imports it as a Scale layer
            f32 = np.float32
            layer = Layer(weight=scale.astype(f32), bias=beta.astype(f32), mean=mean.astype(f32), var=var.astype(f32),
                          eps=float(_attrs(node).get("epsilon", 1e-5)))
            self._unary(node, "affine", layer)
            self.kept_bn += 1
            return
        layer = conv["module"]
        layer.weight, layer.bias = fold_bn(layer.weight, layer.bias, scale, beta, mean, var,
                                           float(_attrs(node).get("epsilon", 1e-5)))
        del self.producer[conv["name"]]
        conv["name"] = node.output[0]
        self.producer[node.output[0]] = conv
        self.alias[node.output[0]] = node.output[0]
        self.folded += 1

    def _unary(self, node: onnx.NodeProto, op: str, layer: Layer | None = None) -> None:
        """An element-wise op on one activation; on ECA's (N, 1, C) view its output is that view too."""
        self.emit(node, op, [self.act(node.input[0], node)], layer)
        if node.input[0] in self.seq_views:
            self.seq_views.add(node.output[0])

    def _op_Relu(self, node: onnx.NodeProto) -> None:
        self._unary(node, "relu")

    def _op_Sigmoid(self, node: onnx.NodeProto) -> None:
        self._unary(node, "sigmoid")

    def _op_HardSigmoid(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        self._unary(node, "hardsigmoid", Layer(alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5))))

    def _op_HardSwish(self, node: onnx.NodeProto) -> None:
        self._unary(node, "hardswish")

    def _op_Mul(self, node: onnx.NodeProto) -> None:
        a, b = node.input
        if a in self.consts or b in self.consts or a in self.sym or b in self.sym:
            raise _Refused(f"{_label(node)} in block {_block(node)} multiplies by a constant; not supported: the "
                           "nearest supported patterns are a Mul of two activations (a squeeze-excitation gate, SiLU) "
                           "and BatchNormalization")
        self.emit(node, "mul", [self.act(a, node), self.act(b, node)])

    # -------------------------------------------------------------- shapes, views and the source's interface

    def _foldable(self, node: onnx.NodeProto) -> bool:
        ins = [i for i in node.input if i]
        return bool(ins) and all(i in self.consts or i in self.sym for i in ins)

    def _fold(self, node: onnx.NodeProto) -> None:
        """Evaluate shape arithmetic at both _BATCHES: equal results are constants, others batch-dependent."""
        a = _attrs(node)
        vals = []
        for k in range(2):
            args = [None if not i else (self.sym[i][k] if i in self.sym else self.consts[i]) for i in node.input]
            try:
                vals.append(np.asarray(_evaluate(node.op_type, args, a)))
            except Exception as e:  # noqa: BLE001 - numpy's errors for shapes ONNX would reject too
                raise _Refused(f"{_label(node)}: its shape arithmetic cannot be evaluated ({e})") from None
        out = node.output[0]
        if vals[0].shape == vals[1].shape and np.array_equal(vals[0], vals[1]):
            self.consts[out] = vals[0]
        else:
            self.sym[out] = (vals[0], vals[1])
        self.folded_shapes += 1

    def _shape_of(self, name: str, node: onnx.NodeProto) -> list:
        if self._shapes is None:  # inferred once, on the model without its weights
            # data_prop carries Shape values through Gather/Concat into Reshape and Expand outputs (opset 13
            # ECA views), so the tensors after them have shapes too
            inferred = onnx.shape_inference.infer_shapes(weightless(self.model), data_prop=True)
            self._shapes = {}
            for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                    self._shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None
                                            for d in v.type.tensor_type.shape.dim]
        dims = self._shapes.get(name)
        if dims is None:  # inference lost it (a legacy opset-13 export's computed views): the rank is ours to say
            rank = 3 if name in self.seq_views else 2 if self._is_matrix(self.act(name, node)) else 4
            dims = [self.fixed_batch] + [None] * (rank - 1)
        return dims

    def _op_Shape(self, node: onnx.NodeProto) -> None:
        dims = self._shape_of(node.input[0], node)
        a = _attrs(node)
        start, end = int(a.get("start", 0)), a.get("end")
        # a dim inference left open takes a different made-up value in each evaluation, like the batch: whatever
        # depends on it comes out batch-dependent, and a Reshape refuses a target that depends on more than the batch
        vals = [np.array([d if d is not None else (b if i == 0 else (10007, 20011)[k] + i) for i, d in enumerate(dims)],
                         np.int64)[start:None if end is None else int(end)] for k, b in enumerate(_BATCHES)]
        if np.array_equal(vals[0], vals[1]):
            self.consts[node.output[0]] = vals[0]
        else:
            self.sym[node.output[0]] = (vals[0], vals[1])
        self.folded_shapes += 1

    def _op_Expand(self, node: onnx.NodeProto) -> None:
        # expand_as before an element-wise Mul/Add: broadcasting there does the same
        if any(op not in ("Mul", "Add") for op in self.readers.get(node.output[0], [])):
            raise _Refused(self._unsupported(node))
        self.alias[node.output[0]] = self.act(node.input[0], node)

    def _op_Cast(self, node: onnx.NodeProto) -> None:
        # an FP16 model's casts around its FP32 parts, or the reverse: our files compute in FP32
        if int(_attrs(node).get("to", 0)) not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                    onnx.TensorProto.DOUBLE):
            raise _Refused(self._unsupported(node))
        self._alias(node)

    def _op_Transpose(self, node: onnx.NodeProto) -> None:
        perm = [int(p) for p in _attrs(node).get("perm", [])]
        if self.layout != "NHWC" or self.alias.get(node.input[0]) != INPUT or perm != [0, 3, 1, 2]:
            raise _Refused(self._unsupported(node))
        self.alias[node.output[0]] = INPUT

    def _op_Softmax(self, node: onnx.NodeProto) -> None:
        x = self.act(node.input[0], node)
        src = self.producer.get(x)
        out = self.model.graph.output[0].name
        if src is None or src["op"] != "linear" or node.output[0] != out or int(_attrs(node).get("axis", -1)) not in (1, -1):
            raise _Refused(self._unsupported(node))
        self.softmax = True  # our files return the logits; the verification compares log-probabilities
        self.alias[node.output[0]] = x

    def _op_Unsqueeze(self, node: onnx.NodeProto) -> None:
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.const(node.input[1], node, "axes").tolist()
        x = self.act(node.input[0], node)
        if axes is None or sorted(int(i) % 4 for i in axes) != [2, 3] or not self._is_matrix(x):
            raise _Refused(f"{_label(node)} unsqueezes axes {axes}; only (N, C) -> (N, C, 1, 1) of a squeeze-excitation "
                           "gate is supported")
        self.emit(node, "unflatten", [x])

    def _is_matrix(self, x: str) -> bool:
        """Whether graph tensor ``x`` is (N, C): a flatten or linear output, or an activation of one."""
        rec = self.producer.get(x)
        if rec is None:
            return False
        if rec["op"] in ("flatten", "linear"):
            return True
        return rec["op"] in ("relu", "sigmoid", "hardsigmoid", "hardswish") and self._is_matrix(rec["inputs"][0])

    def _channels(self, x: str) -> int:
        """The channel count of graph tensor ``x``, from the layer that set it."""
        rec = self.producer.get(x)
        if rec is None:
            return 3
        if rec["op"] in ("conv", "linear"):
            return int(rec["module"].weight.shape[0])
        return self._channels(rec["inputs"][0])

    def _unsupported(self, node: onnx.NodeProto) -> str:
        """The one-line refusal: the node, its block, the nearest supported pattern and, where it would work,
        --float-layers."""
        near = _NEAREST.get(node.op_type)
        msg = f"{_label(node)} in block {_block(node)} is not supported: " + (
            f"the nearest supported pattern is {near}" if near else f"the INT8 placement covers {_COVERED}")
        acts = [i for i in node.input if i and i not in self.consts and i not in self.sym]
        if node.name and len(acts) == 1 and len([o for o in node.output if o]) == 1 and acts[0] in self.alias:
            msg += f"; `--float-layers {node.name}` keeps it in float, with INT8 layers around it"
        return msg

    def _float_op(self, node: onnx.NodeProto) -> None:
        """A node the user keeps in float: carried into our files as it is, reading its one activation."""
        acts = [i for i in node.input if i and i not in self.consts]
        if len(acts) != 1 or len([o for o in node.output if o]) != 1:
            raise _Refused(f"{_label(node)} reads {len(acts)} activations and writes {len(node.output)} outputs; "
                           "--float-layers keeps only a node with one activation input and one output in float")
        consts = {i: self.consts[i] for i in node.input if i and i in self.consts}
        self.emit(node, "float_op", [self.act(acts[0], node)], Layer(proto=node, consts=consts))

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
        if src is not None and self._is_head_conv(src):
            # timm's ResNet v2 head: a 1x1 Conv on the pooled map, then the flatten: the classifier
            pooled = src["inputs"][0]
            flat = {"name": f"{pooled}_flat", "op": "flatten", "inputs": [pooled], "target": None, "module": None}
            m = src["module"]
            layer = Layer(weight=np.ascontiguousarray(m.weight.reshape(m.weight.shape[0], -1)), bias=m.bias)
            rec = {"name": node.output[0], "op": "linear", "inputs": [flat["name"]], "target": src["target"],
                   "module": layer}
            for r in (flat, rec):
                self.nodes.append(r)
                self.producer[r["name"]] = r
            self.alias[node.output[0]] = node.output[0]
            return
        if src is not None and src["op"] == "flatten":  # ReduceMean without keepdims is (N, C) already
            self.alias[node.output[0]] = x
            return
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

    def _is_head_conv(self, rec: dict[str, Any]) -> bool:
        m = rec["module"]
        pooled = self.producer.get(rec["inputs"][0])
        return (rec["op"] == "conv" and pooled is not None and pooled["op"] == "avgpool" and m.weight.shape[2:] == (1, 1)
                and tuple(m.stride) == (1, 1) and not any(m.pads) and m.groups == 1)

    def _target(self, node: onnx.NodeProto) -> list[int]:
        """The dims after the batch axis a Reshape asks for: its shape evaluated at both _BATCHES (a dynamic
        batch makes it batch-dependent), whose first dim must be the batch."""
        name = node.input[1]
        if name in self.sym:
            ta, tb = (v.astype(np.int64).tolist() for v in self.sym[name])
            if len(ta) != len(tb) or any(x != y for x, y in zip(ta[1:], tb[1:])) or (ta[0], tb[0]) != _BATCHES:
                raise _Refused(f"{_label(node)} reshapes to a shape that depends on the batch other than in its first "
                               "dimension; only reshapes that keep the batch axis first are supported")
            return ta[1:]
        shape = self.const(node.input[1], node, "shape").astype(np.int64).tolist()
        allowzero = int(_attrs(node).get("allowzero", 0))
        if not shape or shape[0] not in (-1, self.fixed_batch) and not (shape[0] == 0 and not allowzero):
            raise _Refused(f"{_label(node)} reshapes to {shape}; only reshapes that keep the batch axis first are supported")
        return shape[1:]

    def _op_Reshape(self, node: onnx.NodeProto) -> None:
        rest = self._target(node)
        x = self.act(node.input[0], node)
        if len(rest) == 1:
            self._to_matrix(node)
            return
        src = self.producer.get(x)
        if len(rest) == 2 and rest[0] == 1 and src is not None and src["op"] == "flatten" and \
                self.producer[src["inputs"][0]]["op"] == "avgpool":
            # ECA: the pooled (N, C) viewed as a sequence (N, 1, C) for its 1-D conv across channels; the graph
            # keeps the pooled (N, C, 1, 1) map, and the conv becomes a 1x1 conv with a banded weight
            self.alias[node.output[0]] = src["inputs"][0]
            self.seq_views.add(node.output[0])
            return
        if len(rest) == 3 and rest[1:] == [1, 1]:
            if node.input[0] in self.seq_views:  # ECA's gate back to (N, C, 1, 1): the map it already is
                self.alias[node.output[0]] = x
                return
            if self._is_matrix(x):  # a Gemm squeeze-excitation's gate
                self.emit(node, "unflatten", [x])
                return
        raise _Refused(f"{_label(node)} in block {_block(node)} reshapes to (N, {', '.join(map(str, rest))}); the "
                       "supported reshapes are the flatten before the classifier, ECA's (N, 1, C) view and a gate's "
                       "(N, C, 1, 1)")

    def _eca_conv(self, node: onnx.NodeProto, w: np.ndarray, b: np.ndarray | None, a: dict[str, Any]) -> None:
        """ECA's 1-D conv across the channels of the pooled map, as the 1x1 conv it equals: output channel o
        reads input channels o - pad .. o - pad + k - 1 (zeros outside), a banded (C, C) weight. Exact; its
        cost, C^2 multiply-adds per image, is a few thousandths of a ResNet-50's."""
        pads = [int(p) for p in a.get("pads", (0, 0))]
        if (w.shape[:2] != (1, 1) or int(a.get("group", 1)) != 1 or list(a.get("strides", [1])) != [1]
                or list(a.get("dilations", [1])) != [1] or len(pads) != 2):
            raise _Refused(f"{_label(node)}: a 1-D conv is supported only as ECA's (one channel, stride 1) across "
                           "the pooled channels")
        x = self.act(node.input[0], node)
        c, k = self._channels(x), w.shape[2]
        if c + pads[0] + pads[1] - k + 1 != c:
            raise _Refused(f"{_label(node)}: ECA's conv must keep the {c} channels (pads {pads}, kernel {k})")
        band = np.zeros((c, c), np.float32)
        for o in range(c):
            for j in range(k):
                if 0 <= o + j - pads[0] < c:
                    band[o, o + j - pads[0]] = w[0, 0, j]
        bias = None if b is None else np.full(c, b.reshape(-1)[0], np.float32)
        self.emit(node, "conv", [x], Layer(weight=band.reshape(c, c, 1, 1), bias=bias))
        self.seq_views.add(node.output[0])

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
