"""The model-family x export-form matrix (issue 23): every family imports from every exporter's form, our FP32
rewrite computes the source's function, both INT8 files are written, and the TensorRT one lints clean.

Families and forms: tests/ptq/families.py (real timm/torchvision code at tiny widths; hand-built stand-ins of
the same structure without timm). The dynamo exporter is slow (seconds per export), so its forms run on the
families they change something for; the CLI runs end to end on the forms the issue saw fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from edge_resnet.calibration.onnx_collect import OnnxCollector
from edge_resnet.calibration.statistics import ranges
from edge_resnet.export.lint import errors, lint_model
from edge_resnet.export.onnx_writer import build_onnx

from edge_resnet.contract.metrics import sqnr_db
from edge_resnet.errors import ModelError
from edge_resnet.models.onnx_import import import_onnx
from edge_resnet.quant.plan import classifier_layers, make_plan
from tests.ptq.families import FAMILIES, FORMS, SIZE, build, export

pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")



@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # smooth random images: low-frequency noise upsampled, so convolutions see structure
    small = torch.randn(40, 3, 8, 8, generator=gen)
    return torch.nn.functional.interpolate(small, size=SIZE, mode="bilinear", align_corners=False)


class _Models(dict):
    """Each family built on first use (torchvision's fixed widths make its build the slow one)."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images

    def __missing__(self, name: str) -> torch.nn.Module:
        self[name] = build(name, self.images[:32])
        return self[name]


@pytest.fixture(scope="module")
def models(images: torch.Tensor) -> dict[str, torch.nn.Module]:
    return _Models(images)


def _source_logits(path: Path, x: np.ndarray, form: str) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    feed = (x.transpose(0, 2, 3, 1).copy() if form == "nhwc" else x).astype(
        np.float16 if "float16" in inp.type else np.float32)
    step = inp.shape[0] if isinstance(inp.shape[0], int) else len(feed)  # a fixed-batch export: that batch at a time
    out = np.concatenate([sess.run(None, {inp.name: feed[i:i + step]})[0] for i in range(0, len(feed), step)])
    out = out.astype(np.float32)
    return np.log(np.maximum(out, 1e-30)) if form == "softmax" else out


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _check(family: str, form: str, models: dict, images: torch.Tensor, tmp_path: Path) -> None:
    src = export(models[family], form, tmp_path / "model.onnx")
    if form.startswith("dynamo"):
        assert (tmp_path / "model.onnx.data").exists() or onnx.load(str(src), load_external_data=False).graph.initializer
    imported = import_onnx(src)
    x = images[32:].numpy()  # 8 images: a multiple of the fixed-batch export's 2
    fp32 = build_onnx(imported.graph, input_size=SIZE, precision="fp32")
    ours = _run(fp32, x)
    if imported.softmax:
        ours = ours - np.log(np.exp(ours - ours.max(1, keepdims=True)).sum(1, keepdims=True)) - ours.max(1, keepdims=True)
    ref = _source_logits(src, x, form)
    # the rewrite computes the source's function (an FP16 source to FP16 rounding)
    assert sqnr_db(ref, ours) > (40 if form == "fp16" else 80), (family, form)
    path = tmp_path / "fp32.onnx"
    path.write_bytes(fp32.SerializeToString())
    stats = OnnxCollector(imported.graph, fp32).run(list(images[:32].numpy()))
    amax = ranges(stats, "max")
    float_layers = classifier_layers(imported.graph)
    for target in ("tensorrt", "cpu"):
        plan = make_plan(imported.graph, amax, target, channel_mean=stats.channel_means(), float_layers=float_layers)
        int8 = build_onnx(imported.graph, input_size=SIZE, precision="int8", plan=plan)
        if target == "tensorrt":
            found = errors(lint_model(int8, sorted(float_layers)))
            assert not found, [str(v) for v in found]
        assert sqnr_db(_run(fp32, x), _run(int8, x)) > 8, (family, form, target)  # Q/DQ kept the function


# the fast lane: every family in the plain export, every form on a family where it changes the graph
FAST = [(f, "legacy-op17") for f in FAMILIES if f != "torchvision-resnet10"] + [
    ("timm-seresnet", "nhwc"), ("timm-ecaresnet-d", "softmax"), ("timm-resnetv2-preact", "fp16"),
    ("timm-resnet-hardswish", "legacy-op13"), ("timm-ecaresnet-d", "legacy-op13"), ("timm-ecaresnet-d", "legacy-static")]
# the dynamo exporter takes tens of seconds per export here: its forms are in the slow lane
SLOW = [(f, form) for f in FAMILIES for form in FORMS if (f, form) not in FAST]


@pytest.mark.parametrize(("family", "form"), FAST)
def test_matrix(family: str, form: str, models: dict, images: torch.Tensor, tmp_path: Path) -> None:
    _check(family, form, models, images, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "form"), SLOW)
def test_matrix_full(family: str, form: str, models: dict, images: torch.Tensor, tmp_path: Path) -> None:
    _check(family, form, models, images, tmp_path)


@pytest.mark.parametrize("family", ["timm-seresnet", "timm-resnetv2-preact"])
def test_bn_kept(family: str, models: dict, images: torch.Tensor, tmp_path: Path) -> None:
    """BatchNorm left in the file: folded into the conv before it, or (pre-activation) kept as a scale layer."""
    _check(family, "legacy-bn-kept", models, images, tmp_path)
    imported = import_onnx(tmp_path / "model.onnx")
    assert imported.folded_bn > 0
    assert (imported.kept_bn > 0) == (family == "timm-resnetv2-preact")


def test_se_placement(models: dict, tmp_path: Path) -> None:
    """The SE block's Q/DQ: the pooled-and-scaled map and the gate quantized (both Mul inputs), the Sigmoid
    and the SiLU-style activation Mul not; the Mul's output not (the residual Add's shortcut is)."""
    imported = import_onnx(export(models["timm-seresnet"], "legacy-op17", tmp_path / "m.onnx"))
    g = imported.graph
    amax = {n.name: 1.0 for n in g}
    plan = make_plan(g, amax, "tensorrt", float_layers=classifier_layers(g))
    for mul in g.of_op("mul"):
        assert all(t in plan.activations for t in mul.inputs)
        assert g[mul.inputs[1]].op == "sigmoid" and mul.name not in plan.activations


def test_activation_muls_get_no_qdq(models: dict, tmp_path: Path) -> None:
    imported = import_onnx(export(models["timm-resnet-silu"], "legacy-op17", tmp_path / "m.onnx"))
    g = imported.graph
    plan = make_plan(g, {n.name: 1.0 for n in g}, "tensorrt", float_layers=classifier_layers(g))
    muls = g.of_op("mul")
    assert muls and all(g.is_activation_mul(m) for m in muls)
    assert not any(t in plan.activations for m in muls for t in m.inputs if g[t].op == "sigmoid")


class _Tanh(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.act(self.conv(x)), 1), 1))


def test_unknown_op_refused_with_block_pattern_and_float_layers(tmp_path: Path) -> None:
    path = tmp_path / "tanh.onnx"
    torch.onnx.export(_Tanh().eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17)
    with pytest.raises(ModelError) as e:
        import_onnx(path)
    msg = str(e.value)
    assert "\n" not in msg and "node /act/Tanh (Tanh) in block /act is not supported" in msg
    assert "nearest supported pattern is an activation" in msg and "`--float-layers /act/Tanh`" in msg
    imported = import_onnx(path, float_ops=["/act/Tanh"])
    assert [n.op for n in imported.graph][2] == "float_op"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    ours = _run(build_onnx(imported.graph, input_size=16, precision="fp32"), x)
    np.testing.assert_allclose(ours, _source_logits(path, x, "legacy-op17"), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_quantize_dynamo_dynamic_batch(models: dict, tmp_path: Path, photos: Path) -> None:
    """The issue's failing case end to end: a dynamo export with a dynamic batch, through the command."""
    src = export(models["timm-ecaresnet-d"], "dynamo-op18-dynbatch", tmp_path / "eca.onnx")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "edge_resnet.cli", "quantize", str(src), "--calib-data", str(photos),
                        "--num-calib", "24", "--num-verify", "8", "--output", str(out)], capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    assert not errors(lint_model(out / "model.int8.onnx", _listed(out)))


def _listed(run: Path) -> list[str]:
    from edge_resnet.export.lint import manifest_float_layers

    return manifest_float_layers(run / "model.int8.onnx") or []


def test_lint_learns_the_gate_and_activation_rules(models: dict, tmp_path: Path) -> None:
    """Half a gate Mul quantized, or Q/DQ inside a SiLU, are lint errors; our placement has neither."""
    from edge_resnet.quant.plan import ActQuant

    g = import_onnx(export(models["timm-seresnet"], "legacy-op17", tmp_path / "se.onnx")).graph
    plan = make_plan(g, {n.name: 1.0 for n in g}, "tensorrt", float_layers=classifier_layers(g))
    gate = g.of_op("mul")[0].inputs[1]
    del plan.activations[gate]
    rules = {v.rule for v in errors(lint_model(build_onnx(g, input_size=SIZE, precision="int8", plan=plan)))}
    assert "mul-inputs" in rules
    g = import_onnx(export(models["timm-resnet-silu"], "legacy-op17", tmp_path / "silu.onnx")).graph
    plan = make_plan(g, {n.name: 1.0 for n in g}, "tensorrt", float_layers=classifier_layers(g))
    plan.activations[g.of_op("sigmoid")[0].name] = ActQuant(0.01)
    rules = {v.rule for v in errors(lint_model(build_onnx(g, input_size=SIZE, precision="int8", plan=plan)))}
    assert "activation-qdq" in rules


def test_dynamic_batch_head_folded(tmp_path: Path) -> None:
    """The dynamo exporter's dynamic-batch head, hand-built: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    before the classifier (the form that failed on "node_Shape_0"): folded, the rewrite exact."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(a, n) for n, a in (
        ("w", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)), ("axes", np.array([2, 3], np.int64)),
        ("zero", np.array(0, np.int64)), ("ax0", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64)),
        ("fc", rng.standard_normal((8, 4)).astype(np.float32)), ("b", rng.standard_normal(4).astype(np.float32)))]
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="node_Shape_0"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="node_Conv_1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="node_relu"),
             helper.make_node("ReduceMean", ["r", "axes"], ["m"], name="node_mean", keepdims=0),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="node_Gather_2"),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="node_Unsqueeze_3"),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], name="node_Concat_4", axis=0),
             helper.make_node("Reshape", ["m", "shape"], ["flat"], name="node_view"),
             helper.make_node("MatMul", ["flat", "fc"], ["mm"], name="node_MatMul_5"),
             helper.make_node("Add", ["mm", "b"], ["y"], name="node_Add_6")]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], init)
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    imported = import_onnx(path)
    assert imported.folded_shapes >= 4 and [n.op for n in imported.graph][-2:] == ["flatten", "linear"]
    x = rng.standard_normal((5, 3, 16, 16)).astype(np.float32)
    ours = _run(build_onnx(imported.graph, input_size=16, precision="fp32"), x)
    np.testing.assert_allclose(ours, _source_logits(path, x, "dynamo"), rtol=1e-5, atol=1e-5)
