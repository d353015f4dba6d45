"""Write a folded ResNet graph as ONNX: FP32, FP16, or INT8 with explicit Q/DQ.

We emit the ONNX graph ourselves from the traced network rather than through torch.onnx: every
tensor keeps the name the graph gave it (so calibration ranges and TensorRT's calibration cache
line up with what TensorRT's parser sees), biases are plain initializers (torch's legacy
exporter can hide them behind Identity nodes, which ONNX Runtime's quantized kernels refuse),
and the Q/DQ nodes go exactly where the quantization plan says, nowhere else.

Opset 17 and IR version 8: the newest both TensorRT 8.5 (JetPack 5.1) and 10.x parse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_resnet import __version__, atomic
from edge_resnet.models.dataflow import INPUT, OUTPUT, Graph, Node, array
from edge_resnet.models.onnx_import import weightless
from edge_resnet.quant.plan import ActQuant, QuantPlan

OPSET = 17
IR_VERSION = 8
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

_DTYPES = {"int8": (np.int8, TensorProto.INT8), "uint8": (np.uint8, TensorProto.UINT8)}


class _Writer:
    """Builds the model in place: each weight goes straight into the model's initializers, so a model is
    held once while it is written (assembling a graph and then a model from lists copies every weight
    twice, five times a model's size at the peak for resnet50)."""

    def __init__(self, float_type: type) -> None:
        self.model = onnx.ModelProto()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, int] = {}  # name -> index in the initializers
        self.float_type = float_type

    def init(self, name: str, array: np.ndarray) -> str:
        inits = self.model.graph.initializer
        if name not in self.inits:
            self.inits[name] = len(inits)
            inits.add()
        inits[self.inits[name]].CopyFrom(numpy_helper.from_array(np.asarray(array), name))
        return name

    def finish(self, name: str, input_size: int, num_classes: int) -> onnx.ModelProto:
        """The model: nodes, the input and output, opset and producer; checked (shapes too)."""
        model, g = self.model, self.model.graph
        g.name = name
        g.node.extend(self.nodes)
        g.input.append(helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, input_size, input_size]))
        g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", num_classes]))
        model.opset_import.append(helper.make_opsetid("", OPSET))
        model.producer_name, model.producer_version = "edge-resnet", __version__
        model.ir_version = IR_VERSION
        onnx.checker.check_model(weightless(model), full_check=True)  # the weights' shapes, not their copies
        return model

    def weight(self, name: str, array: np.ndarray) -> str:
        return self.init(name, np.asarray(array, dtype=self.float_type))

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def qdq(self, tensor: str, q: ActQuant) -> str:
        """QuantizeLinear + DequantizeLinear on ``tensor``; returns the dequantized name."""
        np_type, _ = _DTYPES[q.dtype]
        scale = self.init(f"{tensor}_scale", np.array(q.scale, dtype=np.float32))
        zero = self.init(f"{tensor}_zero_point", np.array(q.zero_point, dtype=np_type))
        qname = self.node("QuantizeLinear", [tensor, scale, zero], f"{tensor}_quantized", f"{tensor}_quantize")
        return self.node("DequantizeLinear", [qname, scale, zero], f"{tensor}_dequantized", f"{tensor}_dequantize")


def _ints(v: int | tuple[int, ...]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def _pads(m: object, name: str) -> list[int]:
    """ONNX pads (top, left, bottom, right) of a conv or pool: an imported layer's own (which may be
    asymmetric), or a PyTorch module's symmetric zero padding."""
    pads = getattr(m, "pads", None)
    if pads is not None:
        return [int(p) for p in pads]
    if getattr(m, "padding_mode", "zeros") != "zeros" or isinstance(m.padding, str):
        raise ValueError(f"{name}: only explicit zero padding is supported")
    ph, pw = _ints(m.padding)
    return [ph, pw, ph, pw]


def _stored_weight(q: np.ndarray, target: str) -> tuple[np.ndarray, int]:
    """The plan's int8 weights as the file stores them, and the zero point that restores them.

    The TensorRT file stores them as they are. The CPU file stores q + 128 as uint8 with zero point
    128: the same values, but ONNX Runtime then runs its u8u8 kernels. Its u8s8 kernels on x86
    without VNNI (AVX2, AVX-512F) add pairs of uint8 x int8 products in int16 and saturate: measured
    3.9 dB of logit SQNR instead of 40.6 on an AVX2 EPYC, where u8u8 stays exact.
    """
    if target == "cpu":
        return (q.astype(np.int16) + 128).astype(np.uint8), 128
    return q, 0


def _weight_input(w: _Writer, node: Node, plan: QuantPlan | None) -> str:
    prefix = node.target or node.name
    module = node.module
    if plan is None or node.name not in plan.weights:  # FP32/FP16, or a layer the plan keeps in float
        return w.weight(f"{prefix}.weight", array(module.weight))
    wq = plan.weights[node.name]
    q_stored, zero_point = _stored_weight(wq.q, plan.target)
    q = w.init(f"{prefix}.weight_quantized", q_stored)
    scale = w.init(f"{prefix}.weight_scale", wq.scale)
    zero = w.init(f"{prefix}.weight_zero_point", np.full(wq.scale.shape, zero_point, dtype=q_stored.dtype))
    return w.node("DequantizeLinear", [q, scale, zero], f"{prefix}.weight", f"{prefix}.weight_dequantize", axis=0)


def _bias_input(w: _Writer, node: Node, plan: QuantPlan | None) -> list[str]:
    name = node.target or node.name
    if plan is not None and node.name in plan.biases:
        return [w.weight(f"{name}.bias", plan.biases[node.name])]
    if node.module.bias is not None:
        return [w.weight(f"{name}.bias", array(node.module.bias))]
    return []


def _emit(w: _Writer, node: Node, args: list[str], out: str, plan: QuantPlan | None) -> None:
    m = node.module
    name = node.target or node.name
    if node.op == "conv":
        inputs = [args[0], _weight_input(w, node, plan), *_bias_input(w, node, plan)]
        w.node("Conv", inputs, out, name, kernel_shape=_ints(m.kernel_size), strides=_ints(m.stride),
               pads=_pads(m, name), dilations=_ints(m.dilation), group=m.groups)
    elif node.op == "linear":
        inputs = [args[0], _weight_input(w, node, plan), *_bias_input(w, node, plan)]
        w.node("Gemm", inputs, out, name, transB=1)
    elif node.op == "relu":
        w.node("Relu", args, out, name)
    elif node.op == "add":
        w.node("Add", args, out, name)
    elif node.op == "maxpool":
        w.node("MaxPool", args, out, name, kernel_shape=_ints(m.kernel_size),
               strides=_ints(m.stride or m.kernel_size), pads=_pads(m, name),
               dilations=_ints(m.dilation), ceil_mode=int(m.ceil_mode))
    elif node.op == "avgpool2d":  # an imported AveragePool (ResNet-D's downsampling shortcut)
        w.node("AveragePool", args, out, name, kernel_shape=_ints(m.kernel_size), strides=_ints(m.stride),
               pads=_pads(m, name), ceil_mode=int(m.ceil_mode), count_include_pad=int(m.count_include_pad))
    elif node.op == "avgpool":
        w.node("GlobalAveragePool", args, out, name)
    elif node.op == "flatten":
        w.node("Flatten", args, out, name, axis=1)
    elif node.op == "zeropad":
        x = args[0]
        if m.stride > 1:
            big = np.iinfo(np.int64).max
            x = w.node("Slice", [x, w.init(f"{name}.starts", np.array([0, 0], np.int64)),
                                 w.init(f"{name}.ends", np.array([big, big], np.int64)),
                                 w.init(f"{name}.axes", np.array([2, 3], np.int64)),
                                 w.init(f"{name}.steps", np.array([m.stride, m.stride], np.int64))],
                       f"{name}_subsampled", f"{name}_subsample")
        pads = np.array([0, 0, 0, 0, 0, m.extra, 0, 0], np.int64)
        w.node("Pad", [x, w.init(f"{name}.pads", pads)], out, name, mode="constant")
    elif node.op == "sigmoid":
        w.node("Sigmoid", args, out, name)
    elif node.op == "hardsigmoid":
        w.node("HardSigmoid", args, out, name, alpha=float(m.alpha), beta=float(m.beta))
    elif node.op == "hardswish":
        w.node("HardSwish", args, out, name)
    elif node.op == "mul":
        w.node("Mul", args, out, name)
    elif node.op == "unflatten":  # (N, C) -> (N, C, 1, 1): a Gemm squeeze-excitation's gate
        w.node("Unsqueeze", [args[0], w.init(f"{name}.axes", np.array([2, 3], np.int64))], out, name)
    elif node.op == "affine":  # a BatchNormalization kept as a scale layer (pre-activation), written as the source's
        w.node("BatchNormalization", [args[0], w.weight(f"{name}.weight", m.weight), w.weight(f"{name}.bias", m.bias),
                                      w.weight(f"{name}.running_mean", m.mean), w.weight(f"{name}.running_var", m.var)],
               out, name, epsilon=float(m.eps))
    elif node.op == "float_op":  # a source node kept in float (--float-layers), written as it is
        _emit_float_op(w, node, args[0], out)
    elif node.op == "batchnorm":
        raise ValueError(f"{name} is a BatchNorm; fold it first (edge_resnet.fold.fold_batchnorm)")
    else:
        raise ValueError(f"{name}: no ONNX form for op {node.op!r}")


def _emit_float_op(w: _Writer, node: Node, x: str, out: str) -> None:
    proto, consts = node.module.proto, node.module.consts
    name = node.target or node.name
    inputs = []
    for i, t in enumerate(proto.input):
        if not t:
            inputs.append("")
        elif t in consts:
            c = consts[t]
            inputs.append(w.init(f"{name}.input{i}", c.astype(w.float_type) if c.dtype.kind == "f" else c))
        else:
            inputs.append(x)
    copy = onnx.NodeProto()
    copy.CopyFrom(proto)
    del copy.input[:]
    copy.input.extend(inputs)
    del copy.output[:]
    copy.output.append(out)
    copy.name = name
    w.nodes.append(copy)


def build_onnx(graph: Graph, *, input_size: int, precision: str = "fp32",
               plan: QuantPlan | None = None, num_classes: int | None = None) -> onnx.ModelProto:
    """The ONNX model of ``graph`` (a folded model) with a dynamic batch axis.

    ``precision`` "int8" needs ``plan``: its activations get Q/DQ pairs where they are produced,
    its weights are stored as int8 with a per-channel DequantizeLinear. "fp16" stores FP16
    weights and computes in FP16 between a Cast on the input and one on the output, so the
    model's interface stays float32 (TensorRT 11 builds it strongly typed as written).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if (precision == "int8") != (plan is not None):
        raise ValueError("an int8 model needs a quantization plan, and only an int8 model takes one")
    w = _Writer(np.float16 if precision == "fp16" else np.float32)
    current: dict[str, str] = {}  # graph tensor -> the ONNX value its consumers read
    raw: dict[str, str] = {}  # graph tensor -> the ONNX value before Q/DQ (what float layers read)
    for node in graph:
        if node.op == "input":
            name = INPUT
            if precision == "fp16":
                name = w.node("Cast", [INPUT], f"{INPUT}_fp16", f"{INPUT}_cast", to=TensorProto.FLOAT16)
        else:
            out = node.name
            if precision == "fp16" and node.name == OUTPUT:
                out = f"{OUTPUT}_fp16"
            source = raw if plan is not None and plan.reads_float(node) else current
            _emit(w, node, [source[i] for i in node.inputs], out, plan)
            name = out
        raw[node.name] = name
        if plan is not None and node.name in plan.activations:
            name = w.qdq(name, plan.activations[node.name])
        current[node.name] = name
    if precision == "fp16":
        w.node("Cast", [current[OUTPUT]], OUTPUT, f"{OUTPUT}_cast", to=TensorProto.FLOAT)
    elif current[OUTPUT] != OUTPUT:
        raise ValueError("the network's output must not be quantized")
    if num_classes is None:
        num_classes = int(graph[OUTPUT].module.out_features)
    return w.finish(f"edge-resnet-{precision}", input_size, num_classes)


def build_implicit_onnx(graph: Graph, *, input_size: int, plan: QuantPlan) -> onnx.ModelProto:
    """The FP32 graph TensorRT's implicit INT8 builds from, with calib.cache (DLA on 8.5-10.x).

    It carries ``plan``'s bias-corrected biases, so the engine starts from the same corrected model as
    model.int8.onnx; the weights stay float (TensorRT quantizes them per output channel itself, from
    their max, as the plan does). The classifier is written as a 1x1 convolution on the pooled
    (N, C, 1, 1) map, then a Flatten: TensorRT's ONNX parser makes a Gemm into a constant, a matrix
    multiply, a reshaped bias and an add whose tensors get generated names ("(Unnamed Layer* 57)
    [Matrix Multiply]_output") that no calibration cache written beforehand can name, so the FC would
    run outside INT8 (onnx-tensorrt builtin_op_importers.cpp, Gemm, 8.5-GA and 10.1-GA). A Conv with
    initializer weights becomes one convolution layer whose output is the node's own, named tensor.
    """
    inner = QuantPlan(target=plan.target, biases=dict(plan.biases))  # biases only: no Q/DQ, float weights
    w = _Writer(np.float32)
    current: dict[str, str] = {}
    pooled: set[str] = set()  # Flatten nodes left out: their consumer reads the (N, C, 1, 1) map
    for node in graph:
        if node.op == "input":
            current[node.name] = INPUT
            continue
        args = [current[i] for i in node.inputs]
        if node.op == "flatten" and graph[node.inputs[0]].op == "avgpool":
            pooled.add(node.name)
            current[node.name] = args[0]
        elif node.op == "linear":
            if node.inputs[0] not in pooled:
                raise ValueError(f"{node.name}: the classifier must follow global average pooling to be written "
                                 "as a 1x1 convolution")
            current[node.name] = _fc_as_conv(w, node, args[0], inner)
        else:
            _emit(w, node, args, node.name, inner)
            current[node.name] = node.name
    if current[OUTPUT] != OUTPUT:
        raise ValueError("the network's output must be the classifier's")
    num_classes = int(graph[OUTPUT].module.out_features)
    return w.finish("edge-resnet-implicit-int8", input_size, num_classes)


def _fc_as_conv(w: _Writer, node: Node, pooled: str, plan: QuantPlan) -> str:
    m = node.module
    name = node.target or node.name
    weight = array(m.weight).reshape(m.out_features, m.in_features, 1, 1)
    inputs = [pooled, w.weight(f"{name}.weight", weight), *_bias_input(w, node, plan)]
    conv_out = w.node("Conv", inputs, f"{node.name}_nchw", f"{name}_as_conv", kernel_shape=[1, 1])
    return w.node("Flatten", [conv_out], node.name, f"{name}_flatten", axis=1)


def implicit_tensors(model: onnx.ModelProto) -> list[str]:
    """The float tensors TensorRT's ONNX parser creates for ``model`` that a calibration cache must name
    for every layer to run INT8: the input and each node's outputs, in graph order.

    Raises:
        ValueError: a node the parser expands into tensors with generated names (Gemm, MatMul), which no
            cache can cover.
    """
    unnamed = [n.name or n.op_type for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    if unnamed:
        raise ValueError(f"{', '.join(unnamed)}: TensorRT's parser expands these into unnamed tensors that a "
                         "calibration cache cannot cover")
    return [model.graph.input[0].name] + [o for n in model.graph.node for o in n.output]


def save_onnx(model: onnx.ModelProto, path: str | Path) -> None:
    """Write atomically (an interrupted write leaves no half file under ``path``)."""
    with atomic.atomic_open(path, "wb") as f:
        f.write(model.SerializeToString())
