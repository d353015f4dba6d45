"""Cross-layer equalization: the FP32 function is unchanged, and it undoes the stress transform's outliers."""

from __future__ import annotations

import pytest
import torch

from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import trace
from edge_resnet.quant.equalize import equalize
from edge_resnet.quant.stress import stress
from tests.helpers import observed_amax, randomise_bn, torch_threads


def _model(name: str = "resnet20", shortcut: str = "B") -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    randomise_bn(model, torch.Generator().manual_seed(1))
    return model.eval()


def _x() -> torch.Tensor:
    return torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_fp32_logits_unchanged(shortcut: str) -> None:
    with torch_threads(1):
        folded = fold_batchnorm(_model(shortcut=shortcut))
        eq = equalize(folded)
        with torch.no_grad():
            ref, out = folded(_x()), eq.model(_x())
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert len(eq.pairs) == 9 and eq.max_scale > 1.0
    # the input model is untouched
    assert not torch.equal(eq.model.layer1[0].conv1.weight, folded.layer1[0].conv1.weight)


def test_equalized_pairs_have_equal_channel_ranges() -> None:
    eq = equalize(fold_batchnorm(_model()))
    m = dict(eq.model.named_modules())
    for first, second in eq.pairs:
        r1 = m[first].weight.abs().amax(dim=(1, 2, 3))
        r2 = m[second].weight.abs().amax(dim=(0, 2, 3))
        torch.testing.assert_close(r1, r2, rtol=1e-5, atol=1e-7)


def test_equalization_undoes_the_stress_outliers() -> None:
    with torch_threads(1):
        model = _model()
        folded = fold_batchnorm(model)
        stressed = fold_batchnorm(stress(model, scale=64.0, channels=2)[0])
        before = observed_amax(trace(folded), _x())
        worse = observed_amax(trace(stressed), _x())
        fixed = observed_amax(trace(equalize(stressed).model), _x())
        plain = observed_amax(trace(equalize(folded).model), _x())
    for name in (f"layer{s}.{b}.relu1" for s in (1, 2, 3) for b in range(3)):
        assert worse[name] > 4 * before[name]
        # equalizing the stressed model lands where equalizing the original does
        assert fixed[name] == pytest.approx(plain[name], rel=1e-3)


def test_refuses_an_unfolded_model() -> None:
    with pytest.raises(ValueError, match="fold"):
        equalize(_model())
