"""The traced tensor graph (edge_resnet/models/graph.py): names, execution, visiting, errors.

The names matter beyond this module: calibration ranges, the quantization plan, the ONNX
value names and the TensorRT calibration cache all key on them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import INPUT, OUTPUT, Graph, Node, trace
from tests.helpers import randomise_bn, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def _model(name: str, shortcut: str = "B") -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    randomise_bn(model, torch.Generator().manual_seed(0))
    return model.eval()


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    return _model("resnet20", "B")


@pytest.fixture(scope="module")
def folded20(resnet20: nn.Module) -> nn.Module:
    return fold_batchnorm(resnet20)


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return fold_batchnorm(_model("resnet18", "B"))


def _x(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_names_of_a_folded_cifar_net(folded20: nn.Module) -> None:
    graph = trace(folded20)
    names = [n.name for n in graph]
    assert len(names) == len(set(names))
    assert graph.nodes[0].name == INPUT == "input" and graph.nodes[0].op == "input"
    assert graph.output == OUTPUT == "logits" and graph[OUTPUT].op == "linear" and graph[OUTPUT].target == "fc"
    convs = [name for name, m in folded20.named_modules() if isinstance(m, nn.Conv2d)]
    assert [n.name for n in graph.of_op("conv")] == convs  # named by module path, in execution order
    assert all(graph[c].target == c for c in convs)
    assert "layer1.0.conv1" in names and "layer2.0.downsample.0" in names
    # folded BNs and the CIFAR stem's Identity max-pool are gone, not renamed
    assert not graph.of_op("batchnorm", "maxpool")
    assert not any("bn" in n or n == "maxpool" for n in names)
    assert graph["layer1.0.conv1"].inputs == ("relu",)  # the stem conv -> relu, no max-pool between
    assert {n.op for n in graph} == {"input", "conv", "relu", "add", "avgpool", "flatten", "linear"}


def test_names_of_an_imagenet_net_and_of_an_unfolded_one(resnet18: nn.Module, resnet20: nn.Module) -> None:
    graph = trace(resnet18)
    assert graph["maxpool"].op == "maxpool" and graph["maxpool"].inputs == ("relu",)
    assert graph["layer1.0.conv1"].inputs == ("maxpool",)
    unfolded = trace(resnet20)
    bns = [name for name, m in resnet20.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert [n.name for n in unfolded.of_op("batchnorm")] == bns
    assert unfolded["bn1"].inputs == ("conv1",) and unfolded["relu"].inputs == ("bn1",)


@pytest.mark.parametrize("which", ["folded", "unfolded", "imagenet"])
def test_run_equals_forward_exactly(which: str, resnet20: nn.Module, folded20: nn.Module,
                                    resnet18: nn.Module) -> None:
    model, size = {"folded": (folded20, 32), "unfolded": (resnet20, 32), "imagenet": (resnet18, 64)}[which]
    x = _x(size)
    with torch.no_grad():
        assert torch.equal(trace(model).run(x), model(x))


def test_visit_sees_every_tensor_once_in_order(folded20: nn.Module) -> None:
    graph = trace(folded20)
    seen: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}

    def visit(node: Node, out: torch.Tensor) -> torch.Tensor:
        seen.append(node.name)
        shapes[node.name] = tuple(out.shape)
        return out

    with torch.no_grad():
        graph.run(_x(), visit)
    assert seen == [n.name for n in graph]
    assert shapes["input"] == (2, 3, 32, 32) and shapes["layer3.0.conv1"] == (2, 64, 8, 8)
    assert shapes["logits"] == (2, 10)


def test_visit_replaces_tensors(folded20: nn.Module) -> None:
    graph = trace(folded20)
    x = _x()
    with torch.no_grad():
        ref = graph.run(x)
        same = graph.run(x, lambda node, out: out.clone())
        zeroed = graph.run(x, lambda node, out: torch.zeros_like(out) if node.name == "conv1" else out)
        # the replacement is what the consumers read: zeroing conv1's output is the model with conv1 zeroed
        model = fold_batchnorm(_model("resnet20", "B"))
        model.conv1.weight.zero_()
        model.conv1.bias.zero_()
        expected = model(x)
    assert torch.equal(same, ref)
    assert not torch.allclose(zeroed, ref)
    assert torch.equal(zeroed, expected)


def test_visit_replacing_the_output(folded20: nn.Module) -> None:
    graph = trace(folded20)
    with torch.no_grad():
        out = graph.run(_x(), lambda node, t: t + 1 if node.name == OUTPUT else t)
        ref = folded20(_x())
    assert torch.equal(out, ref + 1)


@pytest.mark.parametrize(
    ("shortcut", "block", "expected"),
    [
        ("B", "layer1.0", "relu"),  # identity shortcut: the block's input (the stem's relu)
        ("B", "layer1.1", "layer1.0.relu2"),
        ("B", "layer2.0", "layer2.0.downsample.0"),  # projection: the 1x1 conv, not conv2
        ("C", "layer1.0", "layer1.0.downsample.0"),  # both inputs are convs
        ("A", "layer2.0", "layer2.0.downsample"),  # the zero-pad shortcut
    ],
)
def test_shortcut_input(shortcut: str, block: str, expected: str) -> None:
    graph = trace(fold_batchnorm(_model("resnet20", shortcut)))
    add = graph[f"{block}.add"]
    assert add.op == "add" and f"{block}.conv2" in add.inputs
    assert graph.shortcut_input(add) == expected
    assert expected in add.inputs


def test_consumers(folded20: nn.Module) -> None:
    graph = trace(folded20)
    assert [n.name for n in graph.consumers("relu")] == ["layer1.0.conv1", "layer1.0.add"]
    assert [n.name for n in graph.consumers("layer1.2.relu2")] == [
        "layer2.0.conv1", "layer2.0.downsample.0"]
    assert [n.name for n in graph.consumers("layer1.0.conv1")] == ["layer1.0.relu1"]
    assert graph.consumers(OUTPUT) == []
    assert [n.name for n in graph.consumers("layer3.2.relu2")] == ["avgpool"]
    assert graph["flatten"].inputs == ("avgpool",) and graph[OUTPUT].inputs == ("flatten",)


def test_zero_pad_shortcut_node() -> None:
    model = fold_batchnorm(_model("resnet20", "A"))
    graph = trace(model)
    pads = graph.of_op("zeropad")
    assert [n.name for n in pads] == ["layer2.0.downsample", "layer3.0.downsample"]
    assert pads[0].inputs == ("layer1.2.relu2",)
    with torch.no_grad():
        assert torch.equal(graph.run(_x()), model(_x()))


def test_tensors_are_freed_after_last_use(folded20: nn.Module) -> None:
    graph = trace(folded20)
    index = {n.name: i for i, n in enumerate(graph)}
    last_use = {n.name: max((index[c.name] for c in graph.consumers(n.name)), default=len(graph.nodes))
                for n in graph}
    refs: dict[str, weakref.ref] = {}
    alive_too_long: list[tuple[str, str]] = []

    def visit(node: Node, out: torch.Tensor) -> torch.Tensor:
        for name, ref in refs.items():
            if last_use[name] < index[node.name] and ref() is not None:
                alive_too_long.append((name, node.name))
        if node.op == "conv":  # conv outputs are never views of another tensor
            refs[node.name] = weakref.ref(out)
        return out

    with torch.no_grad():
        graph.run(_x(), visit)
    assert refs and not alive_too_long


class _Tiny(nn.Module):
    def __init__(self, act: nn.Module, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act
        self.pool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        side = self.pool.output_size if isinstance(self.pool.output_size, int) else self.pool.output_size[0]
        self.fc = nn.Linear(4 * side * side, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


def test_a_tiny_supported_model_traces() -> None:
    model = _Tiny(nn.ReLU()).eval()
    graph = trace(model)
    assert isinstance(graph, Graph)
    assert [n.name for n in graph] == ["input", "conv", "act", "pool", "flatten", "logits"]
    x = _x(8)
    with torch.no_grad():
        assert torch.equal(graph.run(x), model(x))


def test_unsupported_module_is_named() -> None:
    with pytest.raises(ValueError, match=r"act.*Sigmoid"):
        trace(_Tiny(nn.Sigmoid()))


def test_non_global_average_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="global average pooling"):
        trace(_Tiny(nn.ReLU(), nn.AdaptiveAvgPool2d(2)))


def test_unsupported_function_is_refused() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.sigmoid(x))

    with pytest.raises(ValueError, match="sigmoid"):
        trace(Functional())
