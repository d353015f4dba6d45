"""Tests for the TensorRT QDQ lint (export/lint.py).

One hand-built reference graph (a tiny ResNet block plus classifier head) must lint clean, pass the ONNX
checker and compute in ONNX Runtime exactly what a numpy simulation of the dequantized graph computes, so
the lint is judged against a graph that is really valid. Each broken variant changes one thing through a
flag of the same builder and must produce exactly the expected (node, rule) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_resnet.export.lint import MODEL, Violation, errors, lint_model, manifest_float_layers

C = 4  # channels of both convs (equal in and out, so a wrong DQ axis still gives a valid graph)
K = 5  # classes
H = W = 6
ACT_SCALE = {"in": 2.0**-5, "r1": 2.0**-4, "r2": 2.0**-4, "f": 2.0**-5}  # powers of two: x / s is exact


@dataclass(frozen=True)
class Params:
    """The reference model's numbers, shared by the ONNX builder and the numpy reference."""

    w1: np.ndarray  # int8 (C, C, 3, 3)
    s_w1: np.ndarray  # float32 (C,)
    b1: np.ndarray
    w2: np.ndarray
    s_w2: np.ndarray
    b2: np.ndarray
    wfc: np.ndarray  # int8 (K, C)
    s_wfc: np.ndarray  # float32 (K,)
    bfc: np.ndarray


def make_params(seed: int = 0) -> Params:
    rng = np.random.default_rng(seed)

    def q_weight(*shape: int) -> np.ndarray:
        return rng.integers(-127, 128, size=shape).astype(np.int8)

    def scales(n: int) -> np.ndarray:
        return rng.uniform(0.001, 0.004, size=n).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, size=n).astype(np.float32)

    return Params(
        q_weight(C, C, 3, 3),
        scales(C),
        bias(C),
        q_weight(C, C, 3, 3),
        scales(C),
        bias(C),
        q_weight(K, C),
        scales(K),
        bias(K),
    )


class _Builder:
    """Collects nodes and constants; constants become initializers or Constant nodes."""

    def __init__(self, constants_as_nodes: bool) -> None:
        self.constants_as_nodes = constants_as_nodes
        self.const_nodes: list[onnx.NodeProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if self.constants_as_nodes:
            self.const_nodes.append(helper.make_node("Constant", [], [name], name=f"const_{name}", value=tensor))
        else:
            self.inits.append(tensor)
        return name

    def node(
        self, op: str, inputs: list[str], output: str, name: str | None = None, domain: str = "", **attrs: Any
    ) -> str:
        self.nodes.append(
            helper.make_node(op, inputs, [output], name=name if name is not None else output, domain=domain, **attrs)
        )
        return output

    def zero_point(self, tag: str, kind: str = "int8", n: int | None = None) -> list[str]:
        """Zero-point input list: [] when missing, else one (per-tensor) or n (per-channel) zeros/threes."""
        shape: tuple[int, ...] = () if n is None else (n,)
        if kind == "missing":
            return []
        value = {
            "int8": np.zeros(shape, np.int8),
            "nonzero": np.full(shape, 3, np.int8),
            "uint8": np.zeros(shape, np.uint8),
        }[kind]
        return [self.const(f"zp_{tag}", value)]

    def qdq(self, x: str, tag: str, scale: float | np.ndarray, zp: str = "int8", axis: int | None = None) -> str:
        """x -> QuantizeLinear 'q_<tag>' -> DequantizeLinear 'dq_<tag>'; returns the DQ output."""
        scale = np.asarray(scale, np.float32)
        s = self.const(f"s_{tag}", scale)
        zps = self.zero_point(tag, zp, None if scale.ndim == 0 else scale.size)
        kw = {} if axis is None else {"axis": axis}
        q = self.node("QuantizeLinear", [x, s, *zps], f"{tag}_q", name=f"q_{tag}", **kw)
        return self.node("DequantizeLinear", [q, s, *zps], f"{tag}_dq", name=f"dq_{tag}", **kw)

    def weight(
        self, tag: str, w: np.ndarray, scale: np.ndarray, *, axis: int | None, as_float: bool, per_tensor: bool = False
    ) -> str:
        """A per-channel DQ'd weight: DQ(int8 initializer), or DQ(Q(float initializer)) when ``as_float``."""
        if per_tensor:
            scale = np.asarray(scale.max(), np.float32)
        zps = self.zero_point(f"w{tag}", "int8", None if scale.ndim == 0 else scale.size)
        s = self.const(f"s_w{tag}", scale)
        kw = {} if axis is None else {"axis": axis}
        if as_float:
            bshape = [1] * w.ndim
            if scale.ndim:
                bshape[axis or 0] = -1
            wf = self.const(f"W{tag}_f", (w.astype(np.float32) * scale.reshape(bshape)).astype(np.float32))
            src = self.node("QuantizeLinear", [wf, s, *zps], f"W{tag}_q", name=f"q_w{tag}", **kw)
        else:
            src = self.const(f"W{tag}", w)
        return self.node("DequantizeLinear", [src, s, *zps], f"W{tag}_dq", name=f"dq_w{tag}", **kw)


def build_model(
    *,
    opset: int = 13,
    quantized: bool = True,
    zp_r1: str = "int8",
    act_per_channel: bool = False,
    conv1_input_dq: bool = True,
    identity_before_conv1: bool = False,
    w2_scale: str = "per-channel",
    conv2_op: str = "Conv",
    q_after_conv1: bool = False,
    q_after_conv2: bool = False,
    shortcut_quantized: bool = True,
    q_after_pool: bool = True,
    fc_trans_b: bool = True,
    quantized_bias1: bool = False,
    float_weights: bool = False,
    constants_as_nodes: bool = False,
    float_classifier: bool = False,
    float_conv2: bool = False,
    pool_input_dq: bool = False,
    p: Params | None = None,
) -> onnx.ModelProto:
    """The reference graph, or one variant of it (every default gives the clean graph).

    x -> Q/DQ -> conv1 -> relu1 -> Q/DQ -> conv2 -> add(shortcut = the input's DQ) -> relu2 -> Q/DQ
      -> gap -> flatten -> Q/DQ -> fc (Gemm) -> logits

    ``float_classifier``: as NVIDIA Model Optimizer writes it, no Q/DQ around the pool and a float Gemm.
    ``float_conv2``: conv2 reads relu1 unquantized, with float weights (a mixed-precision fallback).
    """
    p = p or make_params()
    g = _Builder(constants_as_nodes)

    def qdq(x: str, tag: str, **kw: Any) -> str:
        return g.qdq(x, tag, ACT_SCALE[tag], **kw) if quantized else x

    def weight(tag: str, w: np.ndarray, s: np.ndarray, axis: int | None = 0, per_tensor: bool = False) -> str:
        if not quantized:
            bshape = (-1,) + (1,) * (w.ndim - 1) if axis in (0, None) else (1, -1)
            return g.const(f"W{tag}_f", (w.astype(np.float32) * s.reshape(bshape)).astype(np.float32))
        return g.weight(tag, w, s, axis=axis, as_float=float_weights, per_tensor=per_tensor)

    if act_per_channel:
        s_in = np.full(C, ACT_SCALE["in"], np.float32)
        x_dq = g.qdq("x", "in", s_in, axis=1)
    else:
        x_dq = qdq("x", "in")
    conv1_in = x_dq if conv1_input_dq else "x"
    if identity_before_conv1:
        conv1_in = g.node("Identity", [conv1_in], "x_id", name="identity")
    b1 = g.const("B1", p.b1)
    if quantized_bias1:  # what ONNX Runtime's quantizer does by default: int32 bias, scale = s_x * s_w
        s_b1 = (ACT_SCALE["in"] * p.s_w1).astype(np.float32)
        b1_i32 = g.const("B1_i32", np.rint(p.b1 / s_b1).astype(np.int32))
        b1 = g.node(
            "DequantizeLinear",
            [b1_i32, g.const("s_b1", s_b1), g.const("zp_b1", np.zeros(C, np.int32))],
            "B1_dq",
            name="dq_b1",
            axis=0,
        )
    c1 = g.node("Conv", [conv1_in, weight("1", p.w1, p.s_w1), b1], "c1", name="conv1", pads=[1] * 4)
    if q_after_conv1:
        c1 = g.qdq(c1, "c1", ACT_SCALE["r1"])
    r1 = g.node("Relu", [c1], "r1", name="relu1")

    if conv2_op == "Conv" and float_conv2:
        w2f = (p.w2.astype(np.float32) * p.s_w2.reshape(-1, 1, 1, 1)).astype(np.float32)
        c2 = g.node("Conv", [r1, g.const("W2_f", w2f), g.const("B2", p.b2)], "c2", name="conv2", pads=[1] * 4)
    elif conv2_op == "Conv":
        r1_dq = qdq(r1, "r1", zp=zp_r1)
        axis = {"per-channel": 0, "per-tensor": 0, "default-axis": None}[w2_scale]
        w2 = weight("2", p.w2, p.s_w2, axis=axis, per_tensor=w2_scale == "per-tensor")
        c2 = g.node("Conv", [r1_dq, w2, g.const("B2", p.b2)], "c2", name="conv2", pads=[1] * 4)
    elif conv2_op == "QLinearConv":
        r1_q = g.node(
            "QuantizeLinear",
            [r1, g.const("s_r1", np.float32(ACT_SCALE["r1"])), g.const("zp_r1", np.int8(0))],
            "r1_q",
            name="q_r1",
        )
        w_zp = g.const("zp_w2", np.zeros(C, np.int8))
        c2_q = g.node(
            "QLinearConv",
            [
                r1_q,
                "s_r1",
                "zp_r1",
                g.const("W2", p.w2),
                g.const("s_w2", p.s_w2),
                w_zp,
                g.const("s_c2", np.float32(0.1)),
                g.const("zp_c2", np.int8(0)),
            ],
            "c2_q",
            name="conv2",
            pads=[1] * 4,
        )
        c2 = g.node("DequantizeLinear", [c2_q, "s_c2", "zp_c2"], "c2", name="dq_c2")
    elif conv2_op == "ConvInteger":
        r1_q = g.node(
            "QuantizeLinear",
            [r1, g.const("s_r1", np.float32(ACT_SCALE["r1"])), g.const("zp_r1", np.int8(0))],
            "r1_q",
            name="q_r1",
        )
        acc = g.node(
            "ConvInteger",
            [r1_q, g.const("W2", p.w2), "zp_r1", g.const("zp_w2", np.int8(0))],
            "c2_i32",
            name="conv2",
            pads=[1] * 4,
        )
        acc_f = g.node("Cast", [acc], "c2_f", name="cast_c2", to=TensorProto.FLOAT)
        rescale = g.const("rescale_c2", (p.s_w2 * ACT_SCALE["r1"]).reshape(1, C, 1, 1).astype(np.float32))
        c2 = g.node("Mul", [acc_f, rescale], "c2", name="mul_c2")
    else:
        raise ValueError(conv2_op)
    if q_after_conv2:
        c2 = g.qdq(c2, "c2", ACT_SCALE["r2"])

    a = g.node("Add", [c2, x_dq if shortcut_quantized else "x"], "a", name="add")
    r2 = g.node("Relu", [a], "r2", name="relu2")
    r2_dq = r2 if float_classifier and not pool_input_dq else qdq(r2, "r2")
    gap = g.node("GlobalAveragePool", [r2_dq], "gap", name="gap")
    f = g.node("Flatten", [gap], "f", name="flatten")
    f_dq = qdq(f, "f") if q_after_pool and not float_classifier else f
    if float_classifier:
        wfc = g.const("Wfc_f", (p.wfc.astype(np.float32) * p.s_wfc.reshape(-1, 1)).astype(np.float32))
    elif fc_trans_b:
        wfc = weight("fc", p.wfc, p.s_wfc)
    else:
        wfc = weight("fc", p.wfc.T.copy(), p.s_wfc, axis=1)
    g.node("Gemm", [f_dq, wfc, g.const("Bfc", p.bfc)], "logits", name="fc", transB=int(fc_trans_b))

    graph = helper.make_graph(
        g.const_nodes + g.nodes,
        "lint_ref",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K])],
        g.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


# --------------------------------------------------------------------------------------- numpy reference


def _fake_quant(x: np.ndarray, scale: float) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear, int8, zero point 0, round half to even."""
    s = np.float32(scale)
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N, C, H, W, 3, 3
    return (np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]).astype(np.float32)


def reference(x: np.ndarray, p: Params, float_classifier: bool = False) -> np.ndarray:
    """The dequantized graph computed directly: what ONNX Runtime must produce for the clean model."""

    def deq(w: np.ndarray, s: np.ndarray) -> np.ndarray:
        return (w.astype(np.float32) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)

    xq = _fake_quant(x, ACT_SCALE["in"])
    r1 = _fake_quant(np.maximum(_conv3x3(xq, deq(p.w1, p.s_w1), p.b1), 0), ACT_SCALE["r1"])
    a = np.maximum(_conv3x3(r1, deq(p.w2, p.s_w2), p.b2) + xq, 0)
    if float_classifier:
        return a.mean(axis=(2, 3)) @ deq(p.wfc, p.s_wfc).T + p.bfc
    f = _fake_quant(_fake_quant(a, ACT_SCALE["r2"]).mean(axis=(2, 3)), ACT_SCALE["f"])
    return f @ deq(p.wfc, p.s_wfc).T + p.bfc


def _pairs(model: onnx.ModelProto | Path) -> list[tuple[str, str]]:
    return sorted((v.node, v.rule) for v in lint_model(model))


# ------------------------------------------------------------------------------------------------- tests

CLEAN_VARIANTS = {
    "initializers": {},
    "constant-nodes": {"constants_as_nodes": True},
    "float-weights-with-q": {"float_weights": True},
    "identity": {"identity_before_conv1": True},
    "gemm-transB0": {"fc_trans_b": False},
    "float-classifier": {"float_classifier": True},
}


@pytest.mark.parametrize("variant", CLEAN_VARIANTS)
def test_reference_graph_is_clean_valid_and_computes_the_dequantized_function(variant: str) -> None:
    model = build_model(**CLEAN_VARIANTS[variant])
    float_layers = ["fc"] if variant == "float-classifier" else []
    assert errors(lint_model(model, float_layers)) == [] and errors(lint_model(model)) == []
    assert [(v.node, v.rule) for v in lint_model(model, float_layers)] == [("fc", "float-layer")] * len(float_layers)
    onnx.checker.check_model(model, full_check=True)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run Q/DQ literally, no QLinear fusion
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, C, H, W)).astype(np.float32)
    (got,) = sess.run(None, {"x": x})
    want = reference(x, make_params(), float_classifier=variant == "float-classifier")
    assert got.shape == (2, K)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"zp_r1": "nonzero"}, [("dq_r1", "zero-point"), ("q_r1", "zero-point")]),
        ({"zp_r1": "uint8"}, [("dq_r1", "int8-type"), ("q_r1", "int8-type")]),
        ({"zp_r1": "missing"}, [("dq_r1", "int8-type"), ("q_r1", "int8-type")]),
        ({"shortcut_quantized": False}, [("add", "add-shortcut")]),
        ({"w2_scale": "per-tensor"}, [("dq_w2", "weight-per-channel")]),
        ({"w2_scale": "default-axis"}, [("dq_w2", "weight-per-channel")]),
        (
            {"w2_scale": "per-tensor", "float_weights": True},
            [("dq_w2", "weight-per-channel"), ("q_w2", "weight-per-channel")],
        ),
        ({"conv2_op": "QLinearConv"}, [("conv2", "qlinear-op")]),
        ({"conv2_op": "ConvInteger"}, [("conv2", "qlinear-op")]),
        ({"conv1_input_dq": False}, [("conv1", "conv-input")]),
        ({"q_after_conv1": True}, [("q_c1", "conv-output")]),
        # Removing the Q after the pool also leaves the Gemm's input unquantized: both are reported.
        ({"q_after_pool": False}, [("fc", "gemm-input"), ("gap", "pool-pair")]),
        ({"act_per_channel": True}, [("dq_in", "activation-per-tensor"), ("q_in", "activation-per-tensor")]),
        ({"quantized_bias1": True}, [("dq_b1", "bias-float")]),
        ({"opset": 12}, [(MODEL, "opset")]),
        ({"quantized": False}, [(MODEL, "no-qdq")]),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_each_broken_variant_reports_exactly_its_rule(flags: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert _pairs(build_model(**flags)) == sorted(expected)


def test_conv_output_q_that_only_feeds_a_residual_add_is_allowed() -> None:
    """A quantized 1x1-projection-style shortcut: Q on a Conv output whose DQ feeds only the Add."""
    model = build_model(q_after_conv2=True)
    onnx.checker.check_model(model, full_check=True)
    assert lint_model(model) == []


def test_weight_per_channel_message_names_the_default_axis() -> None:
    (v,) = lint_model(build_model(w2_scale="default-axis"))
    assert "axis 1 (default)" in v.message and "axis=0" in v.message and "conv2" in v.message


def test_gemm_transB0_with_axis0_scales_is_flagged() -> None:
    model = build_model(fc_trans_b=False)
    dq = next(n for n in model.graph.node if n.name == "dq_wfc")
    for a in dq.attribute:
        if a.name == "axis":
            a.i = 0
    assert _pairs(model) == [("dq_wfc", "weight-per-channel")]


def test_unnamed_node_is_reported_by_op_and_output() -> None:
    model = build_model(conv1_input_dq=False)
    next(n for n in model.graph.node if n.name == "conv1").name = ""
    assert _pairs(model) == [("Conv -> c1", "conv-input")]


def test_float_weight_without_qdq_is_a_conv_weight_violation() -> None:
    model = build_model()
    conv = next(n for n in model.graph.node if n.name == "conv1")
    model.graph.initializer.append(numpy_helper.from_array(np.ones((C, C, 3, 3), np.float32), "W1_float"))
    conv.input[1] = "W1_float"
    assert _pairs(model) == [("conv1", "conv-weight")]


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_non_positive_scale_is_flagged(bad: float) -> None:
    model = build_model()
    init = next(t for t in model.graph.initializer if t.name == "s_r2")
    init.CopyFrom(numpy_helper.from_array(np.float32(bad), "s_r2"))
    assert _pairs(model) == [("dq_r2", "scale"), ("q_r2", "scale")]


@pytest.mark.parametrize(
    ("op", "domain"),
    [
        ("QLinearAdd", "com.microsoft"),
        ("QLinearGlobalAveragePool", "com.microsoft"),
        ("QGemm", "com.microsoft"),
        ("MatMulInteger", ""),
    ],
)
def test_integer_ops_are_rejected_in_any_domain(op: str, domain: str) -> None:
    model = build_model()
    model.graph.node.append(helper.make_node(op, ["f"], ["extra"], name="extra", domain=domain))
    assert _pairs(model) == [("extra", "qlinear-op")]


def test_constant_bias_add_is_not_a_residual() -> None:
    model = build_model()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(K, np.float32), "bias2"))
    model.graph.node.append(helper.make_node("Add", ["logits", "bias2"], ["logits2"], name="bias_add"))
    assert lint_model(model) == []


def test_lint_accepts_a_path(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(build_model(shortcut_quantized=False), path)
    assert _pairs(path) == [("add", "add-shortcut")]
    assert lint_model(str(path)) == lint_model(path)


def test_violation_str() -> None:
    v = Violation("conv1", "conv-input", "input is not from DequantizeLinear")
    assert str(v) == "conv1: [conv-input] input is not from DequantizeLinear"


# ------------------------------------------------------------------ float layers: warnings, and the manifest


def _found(model: onnx.ModelProto, float_layers: list[str] | None) -> list[tuple[str, str, str]]:
    return sorted((v.node, v.rule, v.severity) for v in lint_model(model, float_layers))


@pytest.mark.parametrize(
    ("flags", "float_layers", "expected"),
    [
        # TensorRT accepts a float layer; without a manifest the lint cannot tell whether it is deliberate
        ({"float_classifier": True}, None, [("fc", "float-layer", "warning")]),
        ({"float_classifier": True}, ["fc"], [("fc", "float-layer", "warning")]),
        ({"float_classifier": True}, [], [("fc", "float-unlisted", "error")]),
        ({"float_conv2": True}, ["conv2"], [("conv2", "float-layer", "warning")]),
        ({"float_conv2": True, "float_classifier": True}, ["fc"], [("conv2", "float-unlisted", "error"),
                                                                  ("fc", "float-layer", "warning")]),
        ({}, ["fc"], [("fc", "float-mismatch", "error")]),
        ({}, ["add"], [("add", "float-mismatch", "error")]),
        ({"shortcut_quantized": False}, ["add"], [("add", "float-layer", "warning")]),
        ({"float_classifier": True}, ["fc", "conv9"], [("conv9", "float-missing", "error"),
                                                       ("fc", "float-layer", "warning")]),
        # Model Optimizer's head: DQ -> pool -> float Gemm. TensorRT runs the pool in float: a warning,
        # unless a manifest (ours never writes half a pair) says what the file should be
        ({"q_after_pool": False, "float_classifier": True, "pool_input_dq": True}, None,
         [("fc", "float-layer", "warning"), ("gap", "pool-pair", "warning")]),
        ({"q_after_pool": False, "float_classifier": True, "pool_input_dq": True}, ["fc"],
         [("fc", "float-layer", "warning"), ("gap", "pool-pair", "error")]),
    ],
    ids=lambda v: repr(v) if not isinstance(v, list) else None,
)
def test_float_layers_are_accepted_exactly_as_listed(flags, float_layers, expected) -> None:
    assert _found(build_model(**flags), float_layers) == sorted(expected)


def test_float_conv2_computes_the_float_layer() -> None:
    """The float layer reads relu1 unquantized and uses the float weights: check it against numpy."""
    p = make_params()
    sess = ort.InferenceSession(build_model(float_conv2=True).SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, C, H, W)).astype(np.float32)
    (got,) = sess.run(None, {"x": x})
    deq = [(w.astype(np.float32) * s.reshape(-1, 1, 1, 1)) for w, s in ((p.w1, p.s_w1), (p.w2, p.s_w2))]
    xq = _fake_quant(x, ACT_SCALE["in"])
    r1 = np.maximum(_conv3x3(xq, deq[0], p.b1), 0)
    a = np.maximum(_conv3x3(r1, deq[1], p.b2) + xq, 0)
    f = _fake_quant(_fake_quant(a, ACT_SCALE["r2"]).mean(axis=(2, 3)), ACT_SCALE["f"])
    want = f @ (p.wfc.astype(np.float32) * p.s_wfc.reshape(-1, 1)).T + p.bfc
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_warnings_print_their_severity() -> None:
    v = Violation("fc", "float-layer", "left in float", "warning")
    assert str(v) == "fc: warning [float-layer] left in float"
    assert errors([v]) == []


def test_manifest_float_layers(tmp_path: Path) -> None:
    onnx_path = tmp_path / "model.int8.onnx"
    assert manifest_float_layers(onnx_path) is None  # no manifest
    (tmp_path / "manifest.json").write_text('{"int8": {"models": {"model.int8.onnx": '
                                            '{"float_layers": {"fc": {"precision": {}}}}}}}')
    assert manifest_float_layers(onnx_path) == ["fc"]
    assert manifest_float_layers(tmp_path / "other.onnx") is None
    (tmp_path / "manifest.json").write_text("not json")
    assert manifest_float_layers(onnx_path) is None
