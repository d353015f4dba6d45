"""Lint an INT8 QDQ ONNX model against TensorRT's explicit-quantization rules.

TensorRT builds an INT8 engine from an ONNX model only through QuantizeLinear/DequantizeLinear (Q/DQ)
pairs, and it fuses them with the neighbouring layers by pattern. A graph that ONNX Runtime runs happily
can still be rejected by TensorRT's parser (QLinearConv, a uint8 or non-zero zero point) or, worse, build
an engine that silently runs layers in float or with extra reformat kernels (Q/DQ on a Conv output, an
unquantized residual shortcut, an average pool with only half a Q/DQ pair). Checking the exported graph
here, where TensorRT cannot be installed, catches those before the model reaches a Jetson.

The rules follow ``DESIGN.md`` ("INT8 semantics"): symmetric int8 (zero point 0), activations per-tensor,
weights per output channel, Q/DQ on every Conv/Gemm input and on the shortcut of each residual Add, not on
Conv outputs, AveragePool/GlobalAveragePool with both a DQ before and a Q after or neither, opset >= 13.

Two kinds of finding. An *error* is something TensorRT rejects or mis-fuses (it builds, but runs layers
with reformats or outside the fused INT8 kernels nobody asked for). A *warning* is a layer deliberately
left in float: a Conv/Gemm with neither a Q/DQ'd input nor Q/DQ'd weights (or a residual Add with no
Q/DQ'd input) is accepted by TensorRT, which runs it in FP16 where the build enables FP16 (8.5/10.x)
and as written (FP32) on the strongly typed 11.x. When the caller passes the layers the manifest lists
as float (``float_layers``), exactly those are accepted: an unlisted float layer, or a listed layer
that is quantized or missing, is an error. Without a list (a file from elsewhere), float Conv/Gemm
layers and average pools with half a Q/DQ pair (which then run in float) are warnings.

Only the main graph is checked (control-flow subgraphs are out of scope for a ResNet). Identity nodes are
looked through; weights and Q/DQ parameters may be initializers or Constant nodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge_resnet.errors import EdgeResNetError
from edge_resnet.contract.files import MANIFEST

__all__ = ["Violation", "errors", "lint_model", "load_model", "manifest_float_layers"]

MODEL = "<model>"
"""Node name used for violations that belong to the model as a whole (opset, no Q/DQ at all)."""

MIN_OPSET = 13
"""Opset 13 added the ``axis`` attribute of QuantizeLinear/DequantizeLinear, which per-channel weights need."""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_Q = "QuantizeLinear"
_DQ = "DequantizeLinear"
_QDQ = (_Q, _DQ)

# Integer-arithmetic ("QOperator") ops: TensorRT's ONNX parser has no importer for them in any domain.
_INTEGER_OPS = frozenset(
    {
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
    }
)
# Ops that change only the shape, so a Q after them still belongs to the pool before them.
_SHAPE_ONLY = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
# Ops whose outputs are known at build time although their input is an activation (shape arithmetic).
_STATIC_SOURCES = frozenset({"Shape", "Size"})
_POOLS = frozenset({"AveragePool", "GlobalAveragePool"})


@dataclass(frozen=True)
class Violation:
    """One finding at one node; ``rule`` is a short stable id that tests and tools can match on.

    ``severity`` "error": TensorRT rejects or mis-fuses it; "warning": a layer left in float on purpose.
    """

    node: str
    rule: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else f"{self.severity} "
        return f"{self.node}: {tag}[{self.rule}] {self.message}"


def errors(found: Iterable[Violation]) -> list[Violation]:
    """The findings that are errors (TensorRT rejects or mis-fuses them)."""
    return [v for v in found if v.severity == "error"]


def lint_model(model: onnx.ModelProto | str | os.PathLike[str],
               float_layers: Collection[str] | None = None) -> list[Violation]:
    """Return every finding in ``model``: errors, and warnings for layers left in float (none: clean).

    ``model`` is a loaded ModelProto or a path to an ``.onnx`` file. ``float_layers``: the node names
    the manifest lists as float; given, exactly those may be float. Findings come in graph order,
    model-level ones first, each reported once.
    """
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    graph = _Graph(model.graph)
    if not any(n.op_type in _QDQ for n in graph.nodes) and not any(_is_integer_op(n) for n in graph.nodes):
        # Everything else would fire on every layer; one clear message is more useful.
        return [Violation(MODEL, "no-qdq", "no QuantizeLinear/DequantizeLinear: not a quantized (QDQ) model")]
    listed = None if float_layers is None else frozenset(float_layers)
    found: list[Violation] = list(_check_opset(model))
    names = {n.name for n in graph.nodes}
    for layer in sorted((listed or frozenset()) - names):
        found.append(Violation(layer, "float-missing", "listed as a float layer in the manifest, but the model "
                               "has no node of that name: the manifest belongs to another file"))
    for node in graph.nodes:
        found.extend(_check_node(graph, node, listed))
    return list(dict.fromkeys(found))


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The ONNX model at ``path``, or an EdgeResNetError saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise EdgeResNetError(f"no ONNX file at {path}; pass the path of a .onnx model")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises its own DecodeError; any failure here means "not ONNX"
        raise EdgeResNetError(f"{path} is not a readable ONNX model ({type(e).__name__}); "
                              "pass a .onnx file written by an ONNX exporter") from None
    if not model.graph.node:  # protobuf reads an empty or foreign file as an empty model
        raise EdgeResNetError(f"{path} is not a readable ONNX model (it has no graph nodes); "
                              "pass a .onnx file written by an ONNX exporter")
    return model


def manifest_float_layers(onnx_path: str | os.PathLike[str]) -> list[str] | None:
    """The float layers ``manifest.json`` beside ``onnx_path`` lists for that file; None when there is
    no manifest or it says nothing about the file (a model from elsewhere)."""
    path = Path(onnx_path)
    try:
        manifest = json.loads((path.parent / MANIFEST).read_text())
        entry = manifest["int8"]["models"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    layers = entry.get("float_layers") if isinstance(entry, dict) else None
    return None if layers is None else [str(k) for k in layers]


# --------------------------------------------------------------------------------------------- graph view


def _name(node: onnx.NodeProto) -> str:
    """A node's name, or ``"<op_type> -> <output0>"`` for unnamed nodes so reports still point somewhere."""
    if node.name:
        return node.name
    return f"{node.op_type} -> {node.output[0] if node.output else '?'}"


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The value of a Constant node as a TensorProto (None for string/sparse constants, which we never need)."""
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32))
        if attr.name == "value_int":
            return numpy_helper.from_array(np.array(attr.i, dtype=np.int64))
        if attr.name == "value_ints":
            return numpy_helper.from_array(np.array(list(attr.ints), dtype=np.int64))
    return None


def _values(tensor: onnx.TensorProto) -> np.ndarray | None:
    """Tensor contents, or None when they cannot be read (external data that was not loaded)."""
    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001 - an unreadable constant only skips the value checks
        return None


def _numel(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _is_integer_op(node: onnx.NodeProto) -> bool:
    op = node.op_type
    return op.startswith(("QLinear", "QOrdered")) or "Integer" in op or op in _INTEGER_OPS


class _Graph:
    """Producer/consumer/constant lookups over one GraphProto, looking through Identity nodes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.outputs: set[str] = {o.name for o in graph.output}
        self._consts: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self._producer: dict[str, onnx.NodeProto] = {}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for out in node.output:
                if out:
                    self._producer[out] = node
            for inp in node.input:
                if inp:
                    self._consumers.setdefault(inp, []).append(node)
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
                value = _constant_tensor(node)
                if value is not None:
                    self._consts[node.output[0]] = value
        # Tensors known at build time: constants and anything computed only from them or from shapes.
        # One pass suffices because ONNX requires nodes in topological order.
        self._static: set[str] = set(self._consts)
        for node in self.nodes:
            inputs = [i for i in node.input if i]
            if node.op_type in _STATIC_SOURCES or (inputs and all(i in self._static for i in inputs)):
                self._static.update(o for o in node.output if o)

    def _through_identity(self, tensor: str) -> str:
        seen: set[str] = set()
        while tensor not in self._consts and tensor not in seen:
            seen.add(tensor)
            node = self._producer.get(tensor)
            if node is None or node.op_type != "Identity" or not node.input:
                break
            tensor = node.input[0]
        return tensor

    def const(self, tensor: str) -> onnx.TensorProto | None:
        """The initializer or Constant value behind ``tensor`` (through Identity), else None."""
        return self._consts.get(self._through_identity(tensor))

    def source(self, tensor: str) -> onnx.NodeProto | None:
        """The first non-Identity node producing ``tensor``; None for graph inputs and initializers."""
        tensor = self._through_identity(tensor)
        if tensor in self._consts and self._producer.get(tensor) is None:
            return None
        return self._producer.get(tensor)

    def is_static(self, tensor: str) -> bool:
        return tensor in self._static

    def consumers(
        self, tensor: str, through: frozenset[str] = frozenset({"Identity"})
    ) -> tuple[list[onnx.NodeProto], bool]:
        """Consumers of ``tensor`` looking through ops in ``through``; flag whether a graph output is reached."""
        found: list[onnx.NodeProto] = []
        is_output = False
        stack, seen = [tensor], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            is_output |= t in self.outputs
            for node in self._consumers.get(t, []):
                if node.op_type in through and node.output:
                    stack.append(node.output[0])
                else:
                    found.append(node)
        return found, is_output


# --------------------------------------------------------------------------------------------- the rules


def _check_opset(model: onnx.ModelProto) -> Iterator[Violation]:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        yield Violation(
            MODEL, "opset", f"no default-domain opset import; TensorRT's Q/DQ import needs opset >= {MIN_OPSET}"
        )
    elif max(versions) < MIN_OPSET:
        yield Violation(
            MODEL,
            "opset",
            f"default-domain opset is {max(versions)}; TensorRT needs >= {MIN_OPSET} (Q/DQ 'axis' for per-channel weights)",
        )


def _check_node(graph: _Graph, node: onnx.NodeProto, listed: frozenset[str] | None) -> Iterable[Violation]:
    op = node.op_type
    if _is_integer_op(node):
        domain = node.domain or "ai.onnx"
        return [
            Violation(
                _name(node),
                "qlinear-op",
                f"{domain}.{op} is an integer (QOperator) op that TensorRT cannot import; use float ops between Q/DQ pairs",
            )
        ]
    if op in _QDQ:
        return _check_qdq(graph, node)
    kind = {"Conv": "conv", "Gemm": "gemm", "MatMul": "gemm"}.get(op)
    if kind is not None and len(node.input) >= 2 and (op != "MatMul" or _is_weight(graph, node.input[1])):
        if _is_float_layer(graph, node):
            return _check_float(node, listed)
        return [*_check_listed_but_quantized(node, listed), *_check_weighted(graph, node, kind)]
    if op == "Add" and len(node.input) == 2:
        return _check_add(graph, node, listed)
    if op == "Mul" and len(node.input) == 2:
        return _check_mul(graph, node, listed)
    if op in _POOLS and node.input and node.output:
        return _check_pool(graph, node, listed)
    return []


def _check_qdq(graph: _Graph, node: onnx.NodeProto) -> Iterator[Violation]:
    """Zero point (explicit int8 zeros), scale (positive constant), per-tensor on activations, Q on Conv outputs.

    A DQ over an int32 constant is a quantized bias and gets its own rule ("bias-float") instead of zero-point ones.
    """
    name, op = _name(node), node.op_type
    if node.domain not in _DEFAULT_DOMAINS:
        yield Violation(
            name, "qdq-domain", f"{op} is in domain '{node.domain}'; TensorRT imports only the default-domain {op}"
        )

    x_const = graph.const(node.input[0]) if op == _DQ else None
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if x_const is not None and x_const.data_type == onnx.TensorProto.INT32:
        # ONNX Runtime's quantizer emits this for Conv/Gemm biases; TensorRT's parser rejects it
        # ("only activation types allowed as input to this layer"). The zero-point checks would only repeat it.
        yield Violation(
            name,
            "bias-float",
            "dequantizes an int32 constant (a quantized bias); TensorRT's DequantizeLinear takes only int8: keep biases float",
        )
    elif not zp_name:
        implied = "uint8" if op == _Q else "x's type"
        yield Violation(
            name, "int8-type", f"no zero point, so ONNX uses {implied}; TensorRT needs an explicit int8 zero point of 0"
        )
    else:
        zp = graph.const(zp_name)
        if zp is None:
            yield Violation(
                name,
                "zero-point",
                f"zero point '{zp_name}' is not a constant; TensorRT needs a constant int8 zero point of 0",
            )
        elif zp.data_type != onnx.TensorProto.INT8:
            dtype = onnx.TensorProto.DataType.Name(zp.data_type).lower()
            yield Violation(
                name, "int8-type", f"zero point '{zp_name}' is {dtype}; TensorRT needs int8 (symmetric, zero point 0)"
            )
        else:
            values = _values(zp)
            if values is not None and np.any(values != 0):
                yield Violation(
                    name,
                    "zero-point",
                    f"zero point '{zp_name}' is non-zero ({values.ravel()[np.flatnonzero(values)[0]]}); TensorRT supports only symmetric quantization (all zeros)",
                )

    scale_name = node.input[1] if len(node.input) > 1 else ""
    scale = graph.const(scale_name) if scale_name else None
    if scale is None:
        yield Violation(
            name,
            "scale",
            f"scale '{scale_name}' is not a constant initializer; TensorRT needs constant, positive scales",
        )
    else:
        values = _values(scale)
        if values is not None and not np.all(np.isfinite(values) & (values > 0)):
            yield Violation(
                name,
                "scale",
                f"scale '{scale_name}' has non-positive or non-finite values (min {values.min()}); TensorRT needs positive scales",
            )
        x = node.input[0]
        # TensorRT quantizes activations per-tensor only; per-channel is for the weights of Conv/Gemm/MatMul.
        if not graph.is_static(x) and _numel(scale) != 1:
            yield Violation(
                name,
                "activation-per-tensor",
                f"{_numel(scale)} scales on activation '{x}'; TensorRT quantizes activations per-tensor only (scalar scale)",
            )

    if op == _Q:
        yield from _check_conv_output(graph, node)


def _check_conv_output(graph: _Graph, q: onnx.NodeProto) -> Iterator[Violation]:
    """Q on a Conv output blocks Conv+ReLU/Add fusion, except as the quantized shortcut of a residual Add."""
    conv = graph.source(q.input[0])
    if conv is None or conv.op_type != "Conv":
        return
    dqs, q_is_output = graph.consumers(q.output[0])
    ok = bool(dqs) and not q_is_output and all(n.op_type == _DQ for n in dqs)
    users: list[onnx.NodeProto] = []
    for dq in dqs if ok else []:
        after, dq_is_output = graph.consumers(dq.output[0])
        users.extend(after)
        ok = ok and bool(after) and not dq_is_output
    ok = ok and (all(n.op_type == "Add" for n in users) or _is_excitation_input(graph, users))
    if not ok:
        feeds = {n.op_type for n in (users or dqs)} | ({"graph output"} if q_is_output else set())
        yield Violation(
            _name(q),
            "conv-output",
            f"quantizes the output of Conv '{_name(conv)}' (then feeds {', '.join(sorted(feeds)) or 'nothing'}); Q/DQ on a Conv output blocks "
            "TensorRT's Conv+ReLU/Add fusion: quantize the next layer's input instead (only a residual Add's shortcut, "
            "or the feature map a squeeze-excitation block pools and scales, may)",
        )


def _is_weight(graph: _Graph, tensor: str) -> bool:
    """A constant, or a DQ (optionally over a Q) of a constant: the second input of a weighted MatMul."""
    if graph.const(tensor) is not None:
        return True
    dq = graph.source(tensor)
    return dq is not None and dq.op_type in _QDQ and graph.is_static(dq.input[0])


def _check_weighted(graph: _Graph, node: onnx.NodeProto, kind: str) -> Iterator[Violation]:
    """Conv/Gemm/MatMul: activation from a DQ, weight from DQ(int8 const) or DQ(Q(float const)) per channel."""
    name, op = _name(node), node.op_type
    x = node.input[0]
    src = graph.source(x)
    if src is None or src.op_type != _DQ:
        origin = f"{src.op_type} '{_name(src)}'" if src is not None else "a graph input or constant"
        yield Violation(
            name,
            f"{kind}-input",
            f"input '{x}' comes from {origin}, not DequantizeLinear; TensorRT runs {op} in INT8 only with a Q/DQ'd input",
        )

    w = node.input[1]
    dq = graph.source(w)
    if dq is None or dq.op_type != _DQ:
        yield Violation(
            name,
            f"{kind}-weight",
            f"weight '{w}' is not produced by DequantizeLinear; use DQ(int8 initializer) or DQ(Q(float initializer))",
        )
        return
    weight = graph.const(dq.input[0])
    quantizers = [dq]
    if weight is not None:
        if weight.data_type != onnx.TensorProto.INT8:
            dtype = onnx.TensorProto.DataType.Name(weight.data_type).lower()
            yield Violation(
                name,
                f"{kind}-weight",
                f"weight DequantizeLinear '{_name(dq)}' reads a {dtype} constant; it must be int8",
            )
            return
    else:
        q = graph.source(dq.input[0])
        weight = graph.const(q.input[0]) if q is not None and q.op_type == _Q else None
        if q is None or weight is None:
            yield Violation(
                name,
                f"{kind}-weight",
                f"weight DequantizeLinear '{_name(dq)}' reads neither an int8 constant nor QuantizeLinear over a float constant",
            )
            return
        quantizers = [q, dq]

    dims = list(weight.dims)
    if op == "Conv":
        axis, what = 0, "Conv weights have output channels on axis 0"
    elif op == "Gemm" and _attr(node, "transB", 0):
        axis, what = 0, "Gemm with transB=1 has output channels on axis 0"
    elif op == "Gemm":
        axis, what = 1, "Gemm with transB=0 has output channels on axis 1"
    else:
        axis, what = len(dims) - 1, f"MatMul weights have output channels on the last axis ({len(dims) - 1})"
    if not dims or axis >= len(dims):
        return
    channels = dims[axis]
    for qn in quantizers:
        yield from _check_per_channel(graph, qn, node, axis, channels, what, len(dims))


def _check_per_channel(
    graph: _Graph, qn: onnx.NodeProto, user: onnx.NodeProto, axis: int, channels: int, what: str, rank: int
) -> Iterator[Violation]:
    scale = graph.const(qn.input[1])
    if scale is None:
        return  # reported by the "scale" rule
    n = _numel(scale)
    name = _name(qn)
    if n == 1:
        if channels != 1:
            yield Violation(
                name,
                "weight-per-channel",
                f"per-tensor weight scale for {user.op_type} '{_name(user)}'; use one scale per output channel ({channels}, axis {axis})",
            )
        return
    got = _attr(qn, "axis", 1)  # ONNX's default axis is 1, which is wrong for Conv weights
    got = got + rank if got < 0 else got
    if got != axis or n != channels or len(scale.dims) != 1:
        explicit = any(a.name == "axis" for a in qn.attribute)
        yield Violation(
            name,
            "weight-per-channel",
            f"weight scale has {n} values on axis {got}{'' if explicit else ' (default)'} for {user.op_type} '{_name(user)}'; "
            f"{what}: need axis={axis} and {channels} scales",
        )


def _is_float_layer(graph: _Graph, node: onnx.NodeProto) -> bool:
    """Neither the input nor the weight comes from a DequantizeLinear: the whole layer is float."""
    def from_dq(tensor: str) -> bool:
        src = graph.source(tensor)
        return src is not None and src.op_type == _DQ

    return not from_dq(node.input[0]) and not from_dq(node.input[1])


_FLOAT_RUNS = ("TensorRT runs it in higher precision (FP16 where the build enables FP16, on 8.5/10.x; "
               "FP32 as written on the strongly typed 11.x)")


def _check_float(node: onnx.NodeProto, listed: frozenset[str] | None) -> Iterator[Violation]:
    name = _name(node)
    if listed is None:
        yield Violation(name, "float-layer", f"{node.op_type} is left in float: {_FLOAT_RUNS}; no manifest "
                        "was given to say whether that is deliberate", "warning")
    elif node.name in listed:
        yield Violation(name, "float-layer", f"{node.op_type} is left in float, as the manifest lists: {_FLOAT_RUNS}",
                        "warning")
    else:
        yield Violation(name, "float-unlisted", f"{node.op_type} runs in float, but the manifest does not list it "
                        "as a float layer: quantize its input and weights, or list it")


def _check_listed_but_quantized(node: onnx.NodeProto, listed: frozenset[str] | None) -> Iterator[Violation]:
    if listed is not None and node.name in listed:
        yield Violation(_name(node), "float-mismatch", f"the manifest lists {node.op_type} '{node.name}' as a float "
                        "layer, but the model quantizes it: the manifest belongs to another file")


def _check_add(graph: _Graph, node: onnx.NodeProto, listed: frozenset[str] | None) -> Iterator[Violation]:
    """A residual Add needs one input from a DQ so TensorRT fuses Conv+Add(+ReLU) in INT8."""
    a, b = node.input
    if graph.is_static(a) or graph.is_static(b):
        return  # a bias or other constant add, not a residual
    sources = [graph.source(t) for t in (a, b)]
    quantized = any(s is not None and s.op_type == _DQ for s in sources)
    if listed is not None and node.name in listed:
        if quantized:
            yield from _check_listed_but_quantized(node, listed)
        else:
            yield Violation(_name(node), "float-layer", f"residual Add is left in float, as the manifest lists: "
                            f"{_FLOAT_RUNS}", "warning")
        return
    if not quantized:
        yield Violation(
            _name(node),
            "add-shortcut",
            "no input comes from DequantizeLinear; Q/DQ the shortcut input so TensorRT fuses Conv+Add(+ReLU) in INT8",
        )


_EXCITATION_POOLS = frozenset({"GlobalAveragePool", "AveragePool", "ReduceMean"})
_GATES = frozenset({"Sigmoid", "HardSigmoid"})


def _is_excitation_input(graph: _Graph, users: list[onnx.NodeProto]) -> bool:
    """A conv output read only by a squeeze-excitation block (its pool and its quantized gate Mul): no
    Conv+ReLU/Add fusion to block, so TensorRT fuses the Q into the conv (INT8 output), as NVIDIA Model
    Optimizer places it (the Mul's inputs quantized, the pool's input shared)."""
    muls = [n for n in users if n.op_type == "Mul"]
    return bool(muls) and all(n.op_type == "Mul" or n.op_type in _EXCITATION_POOLS for n in users) and all(
        _from_dq(graph, t) for m in muls for t in m.input)


def _from_dq(graph: _Graph, tensor: str) -> bool:
    src = graph.source(tensor)
    return src is not None and src.op_type == _DQ


def _is_activation_mul(graph: _Graph, node: onnx.NodeProto) -> bool:
    """x * sigmoid(x) (SiLU) or x * hardsigmoid(x) (hard-swish before opset 14): an activation TensorRT
    fuses into the conv before it (ModelOpt's Conv-Sigmoid-Mul partition), not a gate."""
    a, b = (_before_qdq(graph, t) for t in node.input)
    for gate, x in ((a, b), (b, a)):
        src = graph.source(gate)
        if src is not None and src.op_type in _GATES and src.input and _before_qdq(graph, src.input[0]) == x:
            return True
    return False


def _before_qdq(graph: _Graph, tensor: str) -> str:
    """The tensor a DQ(Q(t)) pair reads (``tensor`` itself when it is no such pair's output)."""
    dq = graph.source(tensor)
    if dq is not None and dq.op_type == _DQ:
        q = graph.source(dq.input[0])
        if q is not None and q.op_type == _Q:
            return q.input[0]
    return tensor


def _check_mul(graph: _Graph, node: onnx.NodeProto, listed: frozenset[str] | None) -> Iterator[Violation]:
    """A gate's Mul (squeeze-excitation: feature map x gate) runs in INT8 in TensorRT's element-wise layer
    only with both inputs from DQ (ModelOpt quantizes both); half a pair leaves one input a float->int8
    reformat. An activation Mul (SiLU, hard-swish) takes no Q/DQ: it fuses into the conv before it."""
    a, b = node.input
    if graph.is_static(a) or graph.is_static(b):
        return
    quantized = [_from_dq(graph, t) for t in (a, b)]
    if _is_activation_mul(graph, node):
        if any(quantized):
            yield Violation(_name(node), "activation-qdq", "Q/DQ inside a SiLU/hard-swish (x * sigmoid(x)): it splits "
                            "the activation TensorRT fuses into the conv before it; quantize the next layer's input "
                            "instead")
        return
    if listed is not None and node.name in listed:
        if any(quantized):
            yield from _check_listed_but_quantized(node, listed)
        else:
            yield Violation(_name(node), "float-layer", f"gate Mul is left in float, as the manifest lists: {_FLOAT_RUNS}",
                            "warning")
        return
    if all(quantized):
        return
    if any(quantized):
        yield Violation(_name(node), "mul-inputs", "one input of a gate Mul (squeeze-excitation) comes from "
                        "DequantizeLinear and the other does not; quantize both (TensorRT fuses DQ inputs into an "
                        "INT8 element-wise layer) or neither")
    elif listed is None:
        yield Violation(_name(node), "float-layer", f"gate Mul is left in float: {_FLOAT_RUNS}; no manifest was "
                        "given to say whether that is deliberate", "warning")
    else:
        yield Violation(_name(node), "float-unlisted", "gate Mul runs in float, but the manifest does not list it as "
                        "a float layer: quantize both inputs, or list it")


def _check_pool(graph: _Graph, node: onnx.NodeProto, listed: frozenset[str] | None) -> Iterator[Violation]:
    """AveragePool runs in INT8 only as DQ -> pool -> Q; with half a pair it runs in float.

    TensorRT accepts half a pair (NVIDIA Model Optimizer writes DQ -> pool -> float Gemm): without a
    manifest that is a warning. Our own files never have one, so with a manifest it is an error.
    """
    src = graph.source(node.input[0])
    dq_before = src is not None and src.op_type == _DQ
    after, _ = graph.consumers(node.output[0], through=_SHAPE_ONLY)
    q_after = any(n.op_type == _Q for n in after)
    severity = "warning" if listed is None else "error"
    if dq_before and not q_after:
        yield Violation(
            _name(node),
            "pool-pair",
            f"{node.op_type} input is dequantized but its output is not quantized, so it runs in float; "
            "TensorRT runs it in INT8 only with DQ before and Q after",
            severity,
        )
    elif q_after and not dq_before:
        yield Violation(
            _name(node),
            "pool-pair",
            f"{node.op_type} output is quantized but its input is not from DequantizeLinear, so it runs in float; "
            "TensorRT runs it in INT8 only with DQ before and Q after",
            severity,
        )
