"""Layers left in float beside INT8 ones: the plan, the simulation, the ONNX files and the lint agree.

A float layer has float weights and reads its inputs before any Q/DQ, while the other consumers of
the same tensors still read them quantized. Checked against ONNX Runtime (an independent computation
of the file we write) and against known answers (every layer float is the FP32 model).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import torch
from edge_resnet.export.lint import errors, lint_model
from edge_resnet.export.onnx_writer import build_onnx

from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import INPUT, OUTPUT, trace
from edge_resnet.quant import QuantSim, activation_points, make_plan
from edge_resnet.quant.plan import classifier_layers, units
from tests.helpers import observed_amax, randomise_bn, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def _batch(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@functools.cache
def _net(shortcut: str = "B"):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, shortcut=shortcut)
    randomise_bn(model, torch.Generator().manual_seed(0))
    folded = fold_batchnorm(model.eval())
    graph = trace(folded)
    return folded, graph, observed_amax(graph, _batch(16, 2))


def _ort(model, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {INPUT: x})[0]


def test_units_and_classifier() -> None:
    _, graph, _ = _net()
    names = units(graph)
    assert names[0] == "conv1" and names[-1] == "fc" and "layer1.0.add" in names
    assert len(names) == 19 + 1 + 9 + 2  # convs (with two projections), fc, adds
    assert classifier_layers(graph) == {"fc"}


def test_float_classifier_drops_the_pool_pair_and_the_fc_weights() -> None:
    _, graph, amax = _net()
    full, floated = activation_points(graph, "tensorrt"), activation_points(graph, "tensorrt", frozenset({"fc"}))
    assert set(full) - set(floated) == {"flatten", "layer3.2.relu2"}  # the pool's input and (flattened) output
    plan = make_plan(graph, amax, "tensorrt", float_layers={"fc"})
    assert OUTPUT not in plan.weights and "layer3.2.conv2" in plan.weights
    cpu = make_plan(graph, amax, "cpu", float_layers={"fc"})
    assert "flatten" not in cpu.activations and "avgpool" not in cpu.activations


def test_every_layer_float_is_the_fp32_model() -> None:
    folded, graph, amax = _net()
    x = _batch(8, 4)
    for target in ("tensorrt", "cpu"):
        plan = make_plan(graph, amax, target, float_layers=units(graph))
        assert plan.activations == {} and plan.weights == {}
        with torch.no_grad():
            torch.testing.assert_close(QuantSim(folded, plan)(x), folded(x), rtol=0, atol=0)
        np.testing.assert_allclose(_ort(build_onnx(graph, input_size=32, precision="int8", plan=plan), x.numpy()),
                                   folded(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_a_float_layer_reads_its_input_unquantized_while_the_shortcut_stays_quantized() -> None:
    folded, graph, amax = _net()
    layer = "layer1.1.conv1"  # reads layer1.0.relu2, which is also the shortcut of layer1.1.add
    plan = make_plan(graph, amax, "tensorrt", float_layers={layer})
    assert "layer1.0.relu2" in plan.activations and layer not in plan.weights
    model = build_onnx(graph, input_size=32, precision="int8", plan=plan)
    nodes = {n.name: n for n in model.graph.node}
    assert nodes[layer].input[0] == "layer1.0.relu2"  # the raw tensor
    assert nodes[layer].input[1] == f"{layer}.weight" and nodes["layer1.1.add"].input[1].endswith("_dequantized")
    inits = {t.name for t in model.graph.initializer}
    assert f"{layer}.weight" in inits  # a float initializer, no DequantizeLinear
    seen: list[torch.Tensor] = []
    sim = QuantSim(folded, plan)
    sim.model.layer1[1].conv1.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        sim(_batch(4, 6))
    # the float conv received the value before Q/DQ: it is off the quantization grid
    s = plan.activations["layer1.0.relu2"].scale
    assert not torch.isclose(seen[0] / s, torch.round(seen[0] / s), atol=1e-3).all()


@pytest.mark.parametrize("float_layers", [{"fc"}, {"fc", "layer2.0.conv2"}, {"layer1.0.add", "layer3.1.conv1"},
                                          {"conv1", "layer2.0.downsample.0"}])
def test_simulation_equals_onnx_runtime_with_float_layers(float_layers: set[str]) -> None:
    folded, graph, amax = _net()
    plan = make_plan(graph, amax, "tensorrt", float_layers=float_layers)
    model = build_onnx(graph, input_size=32, precision="int8", plan=plan)
    x = _batch(32, 7)
    with torch.no_grad():
        sim = QuantSim(folded, plan)(x).numpy()
        fp32 = folded(x).numpy()
    got = _ort(model, x.numpy())
    scale = np.abs(sim).max()
    exact = np.abs(sim - got).max(axis=1) <= 1e-5 * scale
    assert exact.mean() >= 0.25  # as in test_quant: most inputs hit no rounding tie
    assert (np.abs(fp32 - got).max(axis=1) > 1e-5 * scale).all()  # and it is not the FP32 model
    found = lint_model(model, sorted(float_layers))
    assert errors(found) == []
    assert sorted(v.node for v in found) == sorted(float_layers)


def test_lint_flags_a_float_layer_the_list_leaves_out() -> None:
    _, graph, amax = _net()
    model = build_onnx(graph, input_size=32, precision="int8",
                       plan=make_plan(graph, amax, "tensorrt", float_layers={"fc", "layer2.1.conv2"}))
    assert [(v.node, v.rule) for v in errors(lint_model(model, ["fc"]))] == [("layer2.1.conv2", "float-unlisted")]


def test_cpu_target_keeps_the_same_layers_float() -> None:
    folded, graph, amax = _net()
    layers = {"fc", "layer2.0.conv2"}
    plan = make_plan(graph, amax, "cpu", float_layers=layers)
    assert not (set(plan.weights) & {"logits", "layer2.0.conv2"})
    model = build_onnx(graph, input_size=32, precision="int8", plan=plan)
    nodes = {n.name: n for n in model.graph.node}
    assert nodes["layer2.0.conv2"].input[0] == "layer2.0.relu1" and nodes["fc"].input[0] == "flatten"
    x = _batch(16, 8)
    got = _ort(model, x.numpy())
    with torch.no_grad():
        fp32 = folded(x).numpy()
    assert 10 * np.log10((fp32**2).sum() / ((got - fp32) ** 2).sum()) > 15


def test_unknown_float_layer_is_refused() -> None:
    _, graph, amax = _net()
    with pytest.raises(ValueError, match=r"layer9\.conv1.*choose among"):
        make_plan(graph, amax, "tensorrt", float_layers={"layer9.conv1"})
