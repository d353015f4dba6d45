"""BatchNorm folding (edge_resnet/fold.py).

The folded model must compute the unfolded model's eval-mode function: logits agree to
<= 1e-5 x max |logit| (issue 6). BN statistics are randomised (tests/helpers.randomise_bn) so a
fold that drops the shift, the scale or eps is caught; a fresh BN is nearly an identity.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from edge_resnet.fold import fold_batchnorm, fold_conv_bn
from edge_resnet.models import create_model, get_spec, list_models
from tests.helpers import randomise_bn, torch_threads

TOL = 1e-5  # relative to max |logit|, from the issue


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def _size(name: str) -> int:
    return 32 if get_spec(name).family == "cifar" else 64


def _model(name: str, shortcut: str = "B", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    randomise_bn(model, torch.Generator().manual_seed(seed))
    return model.eval()


def _input(name: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = _size(name)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture
def flush_denormals() -> Iterator[None]:
    # Deep random networks produce denormal floats, which make CPU convolutions 10-100x slower
    # (the registry loop takes ~60 s instead of a few). The fold is checked the same either way.
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.mark.parametrize(
    ("name", "shortcut"),
    [(n, s) for n in ("resnet20", "resnet18", "resnet50") for s in ("A", "B", "C")] + [("plain20", "B")],
)
def test_folded_logits_match(name: str, shortcut: str) -> None:
    model = _model(name, shortcut)
    x = _input(name)
    with torch.no_grad():
        ref = model(x)
        out = fold_batchnorm(model)(x)
    assert _rel(out, ref) <= TOL


def test_every_registry_model_folds(flush_denormals: None) -> None:
    """Every registry model folds to the same function, up to float32 rounding.

    Deep random networks are ill-conditioned: for plain110 (seed 2, say) the *unfolded* float32
    model is already 2e-5 x max |logit| away from its own float64 evaluation, so no float32
    computation in another order can meet 1e-5 there. The bound is therefore 1e-5 or three times
    the model's own float32 error, whichever is larger; a wrong fold is off by orders more.
    """
    failures = []
    for name in list_models():
        model = _model(name)
        x = _input(name)
        with torch.no_grad():
            ref = model(x)
            out = fold_batchnorm(model)(x)
            ref64 = copy.deepcopy(model).double()(x.double())
        tol = max(TOL, 3 * _rel(ref, ref64))
        err = _rel(out, ref)
        if not err <= tol:
            failures.append(f"{name}: {err:.3g} > {tol:.3g}")
    assert not failures, failures


def test_no_batchnorm_left_and_convs_carry_bias() -> None:
    model = _model("resnet20", "C")
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    for conv_name, bn_name in model.conv_bn_pairs():
        assert type(folded.get_submodule(bn_name)) is nn.Identity
        conv = folded.get_submodule(conv_name)
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    assert not folded.training


def test_input_model_unchanged() -> None:
    model = _model("resnet18", "B")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(model.conv_bn_pairs())


def test_train_mode_model_folds_with_running_stats() -> None:
    model = _model("resnet20", "B").train()
    x = _input("resnet20", batch=4)
    folded = fold_batchnorm(model)
    assert model.training  # the input keeps its mode
    assert not folded.training
    with torch.no_grad():
        out = folded(x)
        ref = model.eval()(x)
    assert _rel(out, ref) <= TOL


def test_model_without_pairs_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="conv, BatchNorm"):
        fold_batchnorm(model)


def test_fold_conv_bn_with_conv_bias_and_non_affine_bn() -> None:
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    for affine in (True, False):
        bn = nn.BatchNorm2d(5, affine=affine, eps=1e-3).eval()
        with torch.no_grad():
            bn.running_mean.copy_(torch.rand(5, generator=gen) - 0.5)
            bn.running_var.copy_(torch.rand(5, generator=gen) + 0.1)
            if affine:
                bn.weight.copy_(torch.rand(5, generator=gen) + 0.5)
                bn.bias.copy_(torch.rand(5, generator=gen) - 0.5)
        x = torch.randn(2, 3, 8, 8, generator=gen)
        with torch.no_grad():
            assert _rel(fold_conv_bn(conv, bn)(x), bn(conv(x))) <= TOL


def test_fold_conv_bn_refuses_bn_without_running_stats_or_wrong_width() -> None:
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="running statistics"):
        fold_conv_bn(conv, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="channels"):
        fold_conv_bn(conv, nn.BatchNorm2d(5))


def test_fold_keeps_dtype() -> None:
    model = _model("resnet8").double()
    folded = fold_batchnorm(model)
    assert folded.conv1.weight.dtype == torch.float64
    x = _input("resnet8").double()
    with torch.no_grad():
        assert _rel(folded(x), model(x)) <= 1e-12
