"""INT8 quantization: the arithmetic, the placement plan, the simulation, bias correction, the choice.

The arithmetic is checked against an independent numpy implementation of DESIGN.md's INT8
definition; the simulation against what ONNX Runtime computes from our QDQ export, tensor by
tensor. Networks are random (random BatchNorm statistics), so logits have near ties.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from edge_resnet.calibration.files import Calibration
from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import INPUT, OUTPUT, Graph, Node, trace
from edge_resnet.quant import ActQuant, QuantSim, activation_points, fake_quantize, make_plan
from edge_resnet.quant.plan import quantize_weight, scale_for
from edge_resnet.quant.select import pick, score_calibrations
from edge_resnet.export.onnx_writer import build_onnx
from tests.helpers import observed_amax, randomise_bn, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@dataclass(frozen=True)
class Net:
    model: nn.Module  # unfolded
    folded: nn.Module
    graph: Graph
    amax: dict[str, float]  # max |x| of every tensor over a random batch


def _batch(n: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


_amax = observed_amax


@functools.cache
def _net(name: str = "resnet20", shortcut: str = "B") -> Net:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    randomise_bn(model, torch.Generator().manual_seed(0))
    model.eval()
    folded = fold_batchnorm(model)
    graph = trace(folded)
    return Net(model, folded, graph, _amax(graph, _batch(16, 2)))


# ------------------------------------------------------------------------------------- the arithmetic


def _np_fake_quantize(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """DESIGN.md: q = saturate(round_half_even(x / s) + z); x' = (q - z) * s, in float32."""
    s = np.float32(scale)
    q = np.clip(np.round(x.astype(np.float32) / s) + np.float32(zero_point), qmin, qmax)
    return ((q - np.float32(zero_point)) * s).astype(np.float32)


def test_act_quant_ranges() -> None:
    assert (ActQuant(0.1).qmin, ActQuant(0.1).qmax) == (-128, 127)
    assert (ActQuant(0.1, 128, "uint8").qmin, ActQuant(0.1, 128, "uint8").qmax) == (0, 255)


def test_ties_round_half_to_even() -> None:
    s = 2.0**-4  # x / s is exact
    steps = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49, 0.51], dtype=np.float32)
    out = fake_quantize(torch.from_numpy(steps * s), ActQuant(s)).numpy() / s
    np.testing.assert_array_equal(out, [0, 2, 2, 4, 0, -2, -2, 0, 1])


@pytest.mark.parametrize(
    ("q", "steps", "expected"),
    [
        (ActQuant(2.0**-3), [1000, 127.4, 127.6, -1000, -128.4, -128.6], [127, 127, 127, -128, -128, -128]),
        (ActQuant(2.0**-3, 0, "uint8"), [-5, -0.4, 254.6, 1000], [0, 0, 255, 255]),
        (ActQuant(2.0**-3, 128, "uint8"), [-1000, -128.4, 127.4, 1000], [-128, -128, 127, 127]),
        (ActQuant(2.0**-3, 100, "uint8"), [-1000, -99.6, 155.4, 1000], [-100, -100, 155, 155]),
    ],
    ids=["int8", "uint8-zp0", "uint8-zp128", "uint8-zp100"],
)
def test_saturation(q: ActQuant, steps: list[float], expected: list[int]) -> None:
    x = torch.tensor(steps, dtype=torch.float32) * q.scale
    np.testing.assert_array_equal(fake_quantize(x, q).numpy() / q.scale, expected)


@pytest.mark.parametrize("q", [ActQuant(scale_for(3.7)), ActQuant(scale_for(0.01)),
                               ActQuant(scale_for(5.0, 255), 0, "uint8"), ActQuant(scale_for(2.2), 128, "uint8")],
                         ids=["int8", "int8-small", "uint8-zp0", "uint8-zp128"])
def test_fake_quantize_matches_numpy(q: ActQuant) -> None:
    gen = torch.Generator().manual_seed(0)
    amax = q.scale * (127 if q.zero_point or q.dtype == "int8" else 255)
    x = (torch.rand(20_000, generator=gen) * 2.6 - 1.3) * amax  # beyond the range on both sides
    ties = (torch.arange(-140, 140, dtype=torch.float32) + 0.5) * q.scale  # half-way points (up to rounding)
    x = torch.cat([x, ties])
    got = fake_quantize(x, q)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), _np_fake_quantize(x.numpy(), q.scale, q.zero_point, q.qmin, q.qmax))


def test_scale_for_is_float32() -> None:
    assert scale_for(1.0) == float(np.float32(1.0 / 127))
    assert scale_for(1.0, 255) == float(np.float32(1.0 / 255))
    assert scale_for(0.0) > 0  # a tensor that never moved still gets a usable scale


# -------------------------------------------------------------------------------------------- weights


def test_quantize_weight_per_output_channel() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=gen) * torch.tensor([1.0, 0.01, 5.0, 0.3, 0.0, 2.0]).view(-1, 1, 1, 1)
    wq = quantize_weight(w)
    assert wq.q.dtype == np.int8 and wq.q.shape == (6, 4, 3, 3)
    assert wq.scale.dtype == np.float32 and wq.scale.shape == (6,)
    assert wq.q.min() >= -127 and wq.q.max() <= 127
    deq = wq.dequantized()
    assert torch.isfinite(deq).all()
    for c in range(6):
        amax = float(w[c].abs().max())
        if amax == 0:
            assert (wq.q[c] == 0).all() and np.isfinite(wq.scale[c]) and wq.scale[c] > 0
            continue
        assert wq.scale[c] == np.float32(np.float32(amax) / np.float32(127))
        assert np.abs(wq.q[c]).max() == 127  # the largest weight uses the full range
        err = float((deq[c] - w[c]).abs().max())
        assert err <= wq.scale[c] / 2 * (1 + 1e-5)
        np.testing.assert_array_equal(wq.q[c], np.round(w[c].numpy() / wq.scale[c]).astype(np.int8))


def test_quantize_weight_linear() -> None:
    w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.7]])
    wq = quantize_weight(w)
    np.testing.assert_array_equal(wq.q[0], [64, -127, 32])  # 63.5 -> 64 (half to even), 31.75 -> 32
    assert wq.q[1, 0] == 127 and wq.scale[1] == np.float32(2.0 / 127)


# ------------------------------------------------------------------------------------------ placement


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_tensorrt_points(shortcut: str) -> None:
    g = _net("resnet20", shortcut).graph
    points = activation_points(g, "tensorrt")
    expected: set[str] = set()
    for node in g:
        if node.op in ("conv", "linear", "avgpool"):
            expected.add(node.inputs[0])
        if node.op == "add":
            shortcut_in = g.shortcut_input(node)
            assert f"{node.name.rsplit('.', 1)[0]}.conv2" != shortcut_in  # never the main path's conv
            expected.add(shortcut_in)
    assert set(points) == expected
    assert "input" in points and "flatten" in points and "layer3.2.relu2" in points  # avgpool's input
    assert OUTPUT not in points
    for node in g.of_op("conv"):
        consumers = g.consumers(node.name)
        if consumers and all(c.op == "relu" for c in consumers):
            assert node.name not in points, node.name
    for name, source in points.items():
        if g[name].op == "zeropad":
            assert source == g[name].inputs[0] and source in points and points[source] == source
        else:
            assert source == name
    ops = {g[p].op for p in points}
    if shortcut == "A":
        assert g.of_op("zeropad") and all(n.name in points for n in g.of_op("zeropad"))
        assert "conv" not in ops
    else:
        # B and C: the 1x1 projection's output is the quantized shortcut, no other conv output is
        assert {p for p in points if g[p].op == "conv"} == {n.name for n in g.of_op("conv") if "downsample" in n.name}


def test_cpu_points() -> None:
    net = _net("resnet20", "B")
    g = net.graph
    points = activation_points(g, "cpu")
    plan = make_plan(g, net.amax, "cpu")
    assert set(plan.activations) == set(points)
    for node in g.of_op("relu"):
        q = plan.activations[node.name]
        assert (q.dtype, q.zero_point) == ("uint8", 0)
        assert q.scale == scale_for(net.amax[node.name], 255)
    adds = g.of_op("add")
    fed_to_add = {i for a in adds for i in a.inputs if g[i].op == "conv"}
    assert fed_to_add >= {"layer1.0.conv2", "layer2.0.downsample.0"}
    for name in fed_to_add:
        q = plan.activations[name]
        assert (q.dtype, q.zero_point, q.scale) == ("uint8", 128, scale_for(net.amax[name]))
    for node in g.of_op("conv"):  # a conv output read only by a ReLU: the ReLU's output is quantized
        if all(c.op == "relu" for c in g.consumers(node.name)):
            assert node.name not in points
    for add in adds:  # every Add here feeds only a ReLU
        assert add.name not in points
    assert plan.activations["input"].zero_point == 128
    # the pooled vector is quantized where it is produced (QLinearGlobalAveragePool); Flatten keeps its grid
    assert points["avgpool"] == "avgpool" and points["flatten"] == "avgpool" and OUTPUT not in points
    assert plan.activations["flatten"] == plan.activations["avgpool"]
    assert plan.activations["avgpool"].zero_point == 0


def test_plan_weights_and_scales() -> None:
    net = _net("resnet20", "B")
    plan = make_plan(net.graph, net.amax, "tensorrt")
    assert plan.target == "tensorrt"
    assert set(plan.weights) == {n.name for n in net.graph.of_op("conv", "linear")}
    for name, q in plan.activations.items():
        assert (q.dtype, q.zero_point) == ("int8", 0)
        assert q.scale == scale_for(net.amax[name])
    np.testing.assert_array_equal(plan.weights["conv1"].q, quantize_weight(net.folded.conv1.weight).q)
    assert plan.biases == {}  # no channel means: biases unchanged


def test_zero_pad_shortcut_reuses_its_input_range() -> None:
    net = _net("resnet20", "A")
    plan = make_plan(net.graph, net.amax, "tensorrt")
    for node in net.graph.of_op("zeropad"):
        assert plan.activations[node.name] == plan.activations[node.inputs[0]]
        amax = {k: v for k, v in net.amax.items() if k != node.name}  # its own range is not needed
        make_plan(net.graph, amax, "tensorrt")


def test_make_plan_errors() -> None:
    net = _net("resnet20", "B")
    with pytest.raises(ValueError, match="fold"):
        make_plan(trace(net.model), net.amax, "tensorrt")
    amax = {k: v for k, v in net.amax.items() if k != "layer2.0.relu1"}
    with pytest.raises(KeyError, match=r"layer2\.0\.relu1.*recalibrate"):
        make_plan(net.graph, amax, "tensorrt")
    with pytest.raises(ValueError, match="unknown target"):
        make_plan(net.graph, net.amax, "tpu")
    with pytest.raises(ValueError, match="unknown target"):
        activation_points(net.graph, "tpu")


# ------------------------------------------------------------------------------------------ simulation


def test_simulation_leaves_the_folded_model_alone() -> None:
    net = _net("resnet20", "B")
    before = {k: v.clone() for k, v in net.folded.state_dict().items()}
    plan = make_plan(net.graph, net.amax, "tensorrt")
    sim = QuantSim(net.folded, plan)
    assert all(torch.equal(v, net.folded.state_dict()[k]) for k, v in before.items())
    assert torch.equal(sim.model.conv1.weight, plan.weights["conv1"].dequantized())
    x = _batch(4, 5)
    with torch.no_grad():
        out, ref = sim(x), net.folded(x)
    assert not torch.equal(out, ref)
    assert float((out - ref).abs().max()) < 0.1 * float(ref.abs().max())


@functools.cache
def _ort_int8() -> dict[str, object]:
    """resnet20 (B): the simulation and ONNX Runtime on the tensorrt-target INT8 model, 64 inputs."""
    net = _net("resnet20", "B")
    plan = make_plan(net.graph, net.amax, "tensorrt")
    sim = QuantSim(net.folded, plan)
    model = build_onnx(net.graph, input_size=32, precision="int8", plan=plan)
    x = _batch(64, 7)
    raw: dict[str, torch.Tensor] = {}

    def visit(node: Node, out: torch.Tensor) -> torch.Tensor:  # the simulation, recording every tensor
        raw[node.name] = out
        q = plan.activations.get(node.name)
        return out if q is None else fake_quantize(out, q)

    with torch.no_grad():
        sim_logits = sim(x)
        recorded = sim.graph.run(x, visit)
        fp32 = net.folded(x)
    # every graph tensor, the dequantized activations and the dequantized weights as extra outputs
    names = [n.name for n in net.graph if n.name not in (INPUT, OUTPUT)]
    names += [f"{p}_dequantized" for p in plan.activations]
    names += [f"{n.target}.weight" for n in net.graph.of_op("conv", "linear")]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for name in names:
        exposed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    results = {}
    for level in ("default", "none"):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        if level == "none":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
            outs = session.run([OUTPUT, *names], {INPUT: x.numpy()})
            results["tensors"] = dict(zip(names, outs[1:], strict=True))
        else:  # the deployed model as ONNX Runtime optimises it, without extra outputs that block fusion
            session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            outs = session.run([OUTPUT], {INPUT: x.numpy()})
        results[level] = outs[0]
    return {"net": net, "plan": plan, "sim": sim, "x": x, "sim_logits": sim_logits.numpy(),
            "recorded": recorded.numpy(), "raw": {k: v.numpy() for k, v in raw.items()}, "fp32": fp32.numpy(),
            **results}


def test_simulation_predicts_onnx_runtime_logits() -> None:
    r = _ort_int8()
    sim, ort_logits, fp32 = r["sim_logits"], r["default"], r["fp32"]
    np.testing.assert_array_equal(r["recorded"], sim)  # the recording visit is the simulation
    scale = np.abs(sim).max()
    # A random network has near ties between classes, so a difference in the last bit can flip a
    # prediction; a trained one is held to 99.5% by the verification step.
    assert (sim.argmax(1) == ort_logits.argmax(1)).mean() >= 0.95
    assert np.abs(sim - ort_logits).max() <= 0.05 * scale
    assert np.abs(sim - r["none"]).max() <= 0.05 * scale
    # the INT8 model really differs from FP32 (else the comparisons above prove nothing)
    assert np.abs(fp32 - ort_logits).max() > 1e-3 * scale


def test_simulation_equals_onnx_runtime_to_float_rounding_for_most_inputs() -> None:
    """Rounding is discontinuous: where ONNX Runtime's float conv lands a value on the other side of
    a half-way point than ours (a difference in the last bit), one INT8 step differs, and that
    difference spreads through every later quantizer. So the logits of a whole batch differ by
    about the quantization noise, but most single inputs hit no such point and agree to float
    rounding; the FP32 model agrees on none of them."""
    r = _ort_int8()
    sim, ort_logits, fp32 = r["sim_logits"], r["none"], r["fp32"]
    scale = np.abs(sim).max()
    exact = np.abs(sim - ort_logits).max(axis=1) <= 1e-5 * scale
    assert exact.mean() >= 0.25
    assert not (np.abs(fp32 - ort_logits).max(axis=1) <= 1e-5 * scale).any()


def test_intermediate_tensors_agree() -> None:
    r = _ort_int8()
    net, plan, sim, raw, ours = r["net"], r["plan"], r["sim"], r["raw"], r["tensors"]
    # before any rounding difference can arise: the first conv (on the quantized input) and its ReLU
    for name in ("conv1", "relu"):
        assert np.abs(ours[name] - raw[name]).max() <= 1e-5 * np.abs(raw[name]).max(), name
    modules = dict(sim.model.named_modules())
    for node in net.graph.of_op("conv", "linear"):
        # ONNX Runtime's dequantized weights are exactly the simulation's
        np.testing.assert_array_equal(ours[f"{node.target}.weight"], modules[node.target].weight.detach().numpy())
        # each layer, fed ONNX Runtime's own (dequantized) input, computes ONNX Runtime's output
        inp = torch.from_numpy(ours[f"{node.inputs[0]}_dequantized"])
        with torch.no_grad():
            mine = modules[node.target](inp if node.op == "conv" else inp.flatten(1)).numpy()
        theirs = ours[node.name] if node.name != OUTPUT else r["none"]
        assert np.abs(mine - theirs).max() <= 1e-5 * np.abs(theirs).max(), node.name
    # and every Q/DQ pair rounds exactly like fake_quantize, ties and saturation included
    for name, q in plan.activations.items():
        source = r["x"].numpy() if name == INPUT else ours[name]
        np.testing.assert_array_equal(ours[f"{name}_dequantized"], fake_quantize(torch.from_numpy(source), q).numpy(),
                                      err_msg=name)


# ------------------------------------------------------------------------------------- bias correction


def test_bias_correction_removes_the_mean_output_shift() -> None:
    net = _net("resnet20", "B")
    gen = torch.Generator().manual_seed(3)
    # a "real-looking" input: per-channel offsets, as normalised images have
    x = torch.randn(32, 3, 32, 32, generator=gen) * 0.5 + torch.tensor([0.8, -0.5, 0.3]).view(1, 3, 1, 1)
    acts: dict[str, torch.Tensor] = {}

    def visit(node: Node, out: torch.Tensor) -> torch.Tensor:
        acts[node.name] = out
        return out

    with torch.no_grad():
        net.graph.run(x, visit)
    means = {n.inputs[0]: acts[n.inputs[0]].mean(dim=(0, 2, 3)).tolist() for n in net.graph.of_op("conv")}
    plain = make_plan(net.graph, net.amax, "tensorrt")
    corrected = make_plan(net.graph, net.amax, "tensorrt", channel_mean=means)
    assert plain.biases == {}
    assert set(corrected.biases) == {n.name for n in net.graph.of_op("conv")}  # the fc input has no mean here
    for name in ("conv1", "layer1.0.conv1", "layer2.0.conv1"):
        conv = net.graph[name].module
        inp = acts[net.graph[name].inputs[0]]
        w = plain.weights[name].dequantized()
        with torch.no_grad():
            ref = conv(inp)
            errors = []
            for bias in (conv.bias, torch.from_numpy(corrected.biases[name])):
                out = F.conv2d(inp, w, bias, conv.stride, conv.padding)
                errors.append(float((out - ref).mean(dim=(0, 2, 3)).abs().mean()))
        assert errors[1] < 0.25 * errors[0], (name, errors)


def test_simulation_uses_corrected_biases() -> None:
    net = _net("resnet20", "B")
    means = {"input": [0.5, -0.2, 0.1], "relu": [0.3] * 16}  # conv1 and layer1.0.conv1 only
    plan = make_plan(net.graph, net.amax, "tensorrt", channel_mean=means)
    assert set(plan.biases) == {"conv1", "layer1.0.conv1"}
    sim = QuantSim(net.folded, plan)
    for name, bias in plan.biases.items():
        np.testing.assert_array_equal(sim.model.get_submodule(name).bias.detach().numpy(), bias)
        assert not np.array_equal(bias, net.folded.get_submodule(name).bias.detach().numpy())
    assert torch.equal(sim.model.layer1[0].conv2.bias, net.folded.layer1[0].conv2.bias)


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_bias_correction_of_grouped_conv_is_exact_on_a_constant_input(groups: int) -> None:
    """Known answer: on an input equal to its channel means everywhere (no padding), the corrected INT8
    weights give the float conv's output exactly. A grouped conv's channel c reads its own group's means."""
    gen = torch.Generator().manual_seed(groups)
    conv = nn.Conv2d(16, 32, 3, groups=groups, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(32, generator=gen))
    graph = Graph([Node(INPUT, "input", ()), Node("conv", "conv", (INPUT,), "conv", module=conv)])
    mu = torch.randn(16, generator=gen) * 2 + 1  # per-channel offsets differing across groups
    plan = make_plan(graph, {INPUT: 4.0, "conv": 10.0}, "tensorrt", channel_mean={INPUT: mu.tolist()})
    assert set(plan.biases) == {"conv"}
    x = mu.view(1, 16, 1, 1).expand(1, 16, 5, 5).double()
    with torch.no_grad():
        ref = F.conv2d(x, conv.weight.double(), conv.bias.double(), groups=groups)
        wq = plan.weights["conv"].dequantized().double()
        out = F.conv2d(x, wq, torch.from_numpy(plan.biases["conv"]).double(), groups=groups)
        uncorrected = F.conv2d(x, wq, conv.bias.double(), groups=groups)
    assert float((uncorrected - ref).abs().max()) > 1e-3  # rounding the weights did shift the output
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5)


def test_bias_correction_checks_channel_count() -> None:
    net = _net("resnet20", "B")
    with pytest.raises(ValueError, match="recalibrate"):
        make_plan(net.graph, net.amax, "tensorrt", channel_mean={"input": [0.0, 0.0]})


# ------------------------------------------------------------------------------------- choosing ranges


def test_score_and_pick_prefer_the_proper_calibration() -> None:
    net = _net("resnet20", "B")
    proper = Calibration(method="max", amax=dict(net.amax), images=16)
    terrible = Calibration(method="bad", amax={k: v / 50 for k, v in net.amax.items()}, images=16)
    batches = [_batch(4, 11), _batch(4, 12)]
    seen: list[int] = []
    scores = score_calibrations(net.folded, net.graph, [terrible, proper], batches, on_batch=seen.append)
    assert seen == [4, 4]
    assert set(scores) == {"max", "bad"}
    assert scores["max"] > scores["bad"] + 10
    assert math.isfinite(scores["max"]) and scores["max"] > 20
    chosen = pick([terrible, proper], scores)
    assert chosen.method == "max" and chosen.amax == proper.amax and proper.requested != "auto"  # a new one
    assert chosen.requested == "auto"
    assert set(chosen.selection) == {"max", "bad"}
    assert chosen.selection["max"] == round(scores["max"], 3)
