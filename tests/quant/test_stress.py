"""The stress transform: the same FP32 function, with outlier channels that per-tensor INT8 suffers from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import trace
from edge_resnet.quant.stress import scalable_pairs, stress
from tests.helpers import randomise_bn, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def _model(name: str, shortcut: str = "B") -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    randomise_bn(model, torch.Generator().manual_seed(1))
    return model.eval()


def _x(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize(("name", "shortcut", "fold"), [("resnet8", "B", False), ("resnet20", "A", True),
                                                       ("resnet20", "B", False)])
def test_logits_unchanged_to_1e5_relative(name: str, shortcut: str, fold: bool) -> None:
    model = _model(name, shortcut)
    if fold:
        model = fold_batchnorm(model)
    stressed, record = stress(model, scale=32.0, channels=2, seed=0)
    with torch.no_grad():
        assert _rel(stressed(_x()), model(_x())) <= 1e-5
    assert record and all(len(c) == 2 for c in record.values())


def test_one_pair_per_basic_block_and_nothing_across_a_residual() -> None:
    graph = trace(_model("resnet20"))
    pairs = scalable_pairs(graph)
    # conv1 -> bn1 -> relu1 -> conv2 in each of the 9 blocks; the stem's ReLU also feeds a shortcut
    assert [p.consumer for p in pairs] == [f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3)]
    assert all(p.producer.endswith(".bn1") for p in pairs)


def _channel_max(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def visit(node, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:
            out[node.name] = t.abs().amax(dim=(0, 2, 3))
        return t

    with torch.no_grad():
        trace(model).run(x, visit)
    return out


def test_scaled_channels_grow_by_the_scale_and_the_rest_stay() -> None:
    model = _model("resnet8")
    stressed, record = stress(model, scale=50.0, channels=1, seed=0)
    before = _channel_max(fold_batchnorm(model), _x())
    after = _channel_max(fold_batchnorm(stressed), _x())
    for name in before:
        expected = before[name].clone()
        if name in record:
            expected[record[name]] *= 50
            # the per-tensor range INT8 uses grows with it
            assert float(after[name].max()) >= 50 * float(before[name][record[name]].max()) * (1 - 1e-5)
        elif name.endswith("conv1"):
            continue  # the pre-ReLU conv output scales too (it is not a quantized tensor on TensorRT)
        torch.testing.assert_close(after[name], expected, rtol=1e-5, atol=1e-6)


def test_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        stress(_model("resnet8"), scale=-2.0)
