"""The ResNet family: torchvision equivalence, registry, paper sizes, shortcuts, (conv, bn) pairs.

Known answers come from the paper (He et al. 2015, Tables 1 and 6); parameter and MAC counts are
also recomputed independently from the layer shapes; torchvision's own ResNets are the reference
for the ImageNet nets.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from edge_resnet.errors import ModelError
from edge_resnet.models import (
    Add,
    BasicBlock,
    Bottleneck,
    ModelSpec,
    ZeroPadShortcut,
    count_macs,
    count_params,
    create_model,
    get_spec,
    list_models,
)
from edge_resnet.models.registry import register
from tests.helpers import randomise_bn

IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
# blocks per stage and block type of the ImageNet nets (paper Table 1)
IMAGENET_LAYOUT = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


# ---------------------------------------------------------------- torchvision equivalence

@pytest.mark.parametrize(("name", "batch", "size"), [("resnet18", 2, 224), ("resnet50", 1, 160)])
def test_torchvision_weights_give_torchvision_logits(name: str, batch: int, size: int) -> None:
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)
    reference = getattr(torchvision.models, name)(weights=None)
    randomise_bn(reference, gen)
    reference.eval()
    ours = create_model(name, num_classes=1000)
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        want = reference(x)
        got = ours(x)
    assert got.shape == (batch, 1000)
    # the logits carry information (BN is not a no-op, images differ)
    assert want.std() > 1e-3
    if batch > 1:
        assert (want[0] - want[1]).abs().max() > 1e-3
    assert (got - want).abs().max().item() <= 1e-5


def test_torchvision_comparison_detects_a_changed_bn() -> None:
    """The equivalence check above is sensitive to the BN statistics it randomises."""
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(4)
    reference = torchvision.models.resnet18(weights=None)
    randomise_bn(reference, gen)
    reference.eval()
    ours = create_model("resnet18", num_classes=1000)
    sd = reference.state_dict()
    sd["layer3.1.bn2.running_var"] = sd["layer3.1.bn2.running_var"] * 2
    ours.load_state_dict(sd, strict=True)
    ours.eval()
    x = torch.randn(1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() > 1e-5


# ---------------------------------------------------------------- registry

def test_registry_has_every_paper_network() -> None:
    names = set(list_models())
    for depth in IMAGENET_DEPTHS + CIFAR_DEPTHS:
        assert f"resnet{depth}" in names
        assert f"plain{depth}" in names
    for depth in IMAGENET_DEPTHS:
        spec = get_spec(f"resnet{depth}")
        assert (spec.family, spec.depth, spec.residual, spec.input_size) == ("imagenet", depth, True, 224)
        plain = get_spec(f"plain{depth}")
        assert (plain.family, plain.depth, plain.residual) == ("imagenet", depth, False)
    for depth in CIFAR_DEPTHS:
        spec = get_spec(f"resnet{depth}")
        assert (spec.family, spec.depth, spec.residual, spec.input_size) == ("cifar", depth, True, 32)
        assert get_spec(f"plain{depth}").residual is False


@pytest.mark.parametrize("name", ["resnet19", "ResNet18", "", "vgg16"])
def test_unknown_name_raises_model_error_listing_valid_names(name: str) -> None:
    with pytest.raises(ModelError) as exc:
        get_spec(name)
    msg = str(exc.value)
    assert repr(name) in msg
    for valid in list_models():
        assert valid in msg
    with pytest.raises(ModelError):
        create_model(name, num_classes=10)


def test_registering_a_duplicate_name_raises_and_keeps_the_original() -> None:
    original = get_spec("resnet18")
    impostor = ModelSpec(name="resnet18", family="cifar", depth=18, residual=False, input_size=32,
                         builder=lambda **kw: nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        register(impostor)
    assert get_spec("resnet18") is original


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_classes": 10, "shortcut": "D"}, "shortcut"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": -3}, "num_classes"),
])
def test_create_model_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        create_model("resnet20", **kwargs)


def test_shortcut_option_is_case_insensitive() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, shortcut="a")
    assert any(isinstance(m, ZeroPadShortcut) for m in model.modules())


# ---------------------------------------------------------------- sizes from the paper

def _bn(c: int) -> int:
    return 2 * c


def cifar_params(depth: int, shortcut: str, num_classes: int = 10) -> int:
    """Parameters of the CIFAR net of section 4.2, counted by hand from its layer shapes."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + _bn(16)  # stem
    c_in = 16
    for stage, width in enumerate((16, 32, 64)):
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            total += c_in * width * 9 + _bn(width) + width * width * 9 + _bn(width)
            changes = stride != 1 or c_in != width
            if shortcut == "C" or (shortcut == "B" and changes):
                total += c_in * width + _bn(width)
            c_in = width
    return total + 64 * num_classes + num_classes


def test_resnet20_option_a_parameter_count_by_hand() -> None:
    # stem 432+32; stage 1: 3 blocks of 2x(2304+32); stage 2: 4608+64 + 9216+64 + 2 blocks of
    # 2x(9216+64); stage 3: 18432+128 + 36864+128 + 2 blocks of 2x(36864+128); fc 650
    assert cifar_params(20, "A") == 269_722
    torch.manual_seed(0)
    assert count_params(create_model("resnet20", num_classes=10, shortcut="A")) == 269_722


@pytest.mark.parametrize(("depth", "paper_millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_option_a_parameter_counts_match_paper_table6(depth: int, paper_millions: float) -> None:
    torch.manual_seed(0)
    n = count_params(create_model(f"resnet{depth}", num_classes=10, shortcut="A"))
    assert n == cifar_params(depth, "A")
    # the paper rounds to two significant digits
    digits = 2 if paper_millions < 1 else 1
    assert round(n / 1e6, digits) == pytest.approx(paper_millions)


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
@pytest.mark.parametrize("depth", [20, 32])
def test_cifar_parameter_counts_per_shortcut_option(depth: int, shortcut: str) -> None:
    torch.manual_seed(0)
    model = create_model(f"resnet{depth}", num_classes=10, shortcut=shortcut)
    assert count_params(model) == cifar_params(depth, shortcut)


def test_plain_net_has_exactly_the_parameters_of_option_a() -> None:
    torch.manual_seed(0)
    plain = create_model("plain20", num_classes=10)
    residual_a = create_model("resnet20", num_classes=10, shortcut="A")
    assert count_params(plain) == count_params(residual_a) == cifar_params(20, "A")


def _projection_blocks(model: nn.Module) -> list[str]:
    return [name for name, blk in model.blocks() if isinstance(blk.downsample, nn.Sequential)]


@pytest.mark.parametrize(("name", "where_shapes_change"), [
    ("resnet20", ["layer2.0", "layer3.0"]),
    ("resnet18", ["layer2.0", "layer3.0", "layer4.0"]),
    ("resnet50", ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]),
])
def test_shortcut_options_place_projections_as_in_section_3_3(name: str, where_shapes_change: list[str]) -> None:
    torch.manual_seed(0)
    a = create_model(name, num_classes=10, shortcut="A")
    assert _projection_blocks(a) == []
    assert all(count_params(blk.downsample) == 0 for _, blk in a.blocks() if blk.downsample is not None)
    assert [n for n, blk in a.blocks() if isinstance(blk.downsample, ZeroPadShortcut)] == where_shapes_change
    b = create_model(name, num_classes=10, shortcut="B")
    assert _projection_blocks(b) == where_shapes_change
    c = create_model(name, num_classes=10, shortcut="C")
    assert _projection_blocks(c) == [n for n, _ in c.blocks()]
    for _, blk in c.blocks():
        conv, bn = blk.downsample
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels


def imagenet_macs(depth: int, size: int, num_classes: int = 1000) -> int:
    """Multiply-adds of a torchvision-style ImageNet ResNet, from its layer shapes."""
    kind, layers = IMAGENET_LAYOUT[depth]
    s = size // 2  # 7x7/2 stem
    total = s * s * 7 * 7 * 3 * 64
    s //= 2  # 3x3/2 max pool
    c_in = 64
    for stage, n_blocks in enumerate(layers):
        width = 64 * 2**stage
        for j in range(n_blocks):
            stride = 2 if stage > 0 and j == 0 else 1
            s_out = s // stride
            if kind == "basic":
                c_out = width
                total += s_out**2 * 9 * c_in * width + s_out**2 * 9 * width * width
            else:
                c_out = 4 * width
                total += s**2 * c_in * width + s_out**2 * 9 * width * width + s_out**2 * width * c_out
            if stride != 1 or c_in != c_out:
                total += s_out**2 * c_in * c_out
            c_in, s = c_out, s_out
    return total + c_in * num_classes


@pytest.mark.parametrize(("name", "paper"), [("resnet18", 1.8e9), ("resnet34", 3.6e9)])
def test_imagenet_macs_match_paper_table1(name: str, paper: float) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000)
    macs = count_macs(model, 224)
    assert macs == imagenet_macs(int(name[6:]), 224)
    assert abs(macs - paper) / paper < 0.03


def test_bottleneck_macs_match_layer_shapes() -> None:
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=10)
    assert count_macs(model, 64) == imagenet_macs(50, 64, num_classes=10)


def test_count_macs_restores_training_mode() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10).train()
    count_macs(model, 32)
    assert model.training
    # running statistics are untouched by the dummy forward
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# ---------------------------------------------------------------- structure and shapes

@pytest.mark.parametrize("name", ["plain20", "plain8", "plain18", "plain50"])
def test_plain_nets_have_no_add_and_no_shortcut(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut="C")  # the option is ignored for plain nets
    assert not any(isinstance(m, (Add, ZeroPadShortcut)) for m in model.modules())
    assert all(blk.downsample is None and blk.add is None and not blk.residual for _, blk in model.blocks())


@pytest.mark.parametrize(("name", "n_blocks"), [("resnet20", 9), ("resnet56", 27), ("resnet18", 8), ("resnet50", 16)])
@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_residual_nets_have_one_add_per_block(name: str, n_blocks: int, shortcut: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    adds = [n for n, m in model.named_modules() if isinstance(m, Add)]
    assert len(model.blocks()) == n_blocks
    assert adds == [f"{b}.add" for b, _ in model.blocks()]


def test_add_runs_once_per_block_in_forward() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, shortcut="A").eval()
    calls: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, Add):
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert calls == [f"{b}.add" for b, _ in model.blocks()]


@pytest.mark.parametrize(("name", "shortcut", "size", "features"), [
    ("resnet8", "A", 32, (64, 8, 8)),
    ("resnet8", "B", 32, (64, 8, 8)),
    ("resnet8", "C", 32, (64, 8, 8)),
    ("resnet20", "A", 32, (64, 8, 8)),
    ("plain20", "B", 32, (64, 8, 8)),
    ("resnet8", "A", 33, (64, 9, 9)),  # odd sides: the strided slice must match the strided conv
    ("resnet18", "A", 64, (512, 2, 2)),
    ("resnet18", "B", 64, (512, 2, 2)),
    ("resnet18", "C", 64, (512, 2, 2)),
    ("plain18", "B", 64, (512, 2, 2)),
    ("resnet50", "A", 32, (2048, 1, 1)),
    ("resnet50", "B", 32, (2048, 1, 1)),
    ("resnet50", "C", 32, (2048, 1, 1)),
    ("resnet18", "A", 72, (512, 3, 3)),
])
def test_forward_shapes(name: str, shortcut: str, size: int, features: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, shortcut=shortcut).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, *features)
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_reset_classifier_changes_only_the_head() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model.reset_classifier(3)
    assert model.num_classes == 3 and model.fc.out_features == 3 and model.fc.in_features == 64
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


# ---------------------------------------------------------------- option A shortcut

@pytest.mark.parametrize(("c_in", "c_out", "stride", "side"), [(16, 32, 2, 8), (16, 32, 2, 9), (32, 64, 2, 5),
                                                               (8, 8, 1, 6), (8, 12, 1, 6)])
def test_zero_pad_shortcut_is_strided_slice_plus_zero_channels(c_in: int, c_out: int, stride: int, side: int) -> None:
    torch.manual_seed(5)
    x = torch.randn(2, c_in, side, side)
    got = ZeroPadShortcut(c_in, c_out, stride)(x)
    rows = list(range(0, side, stride))
    sub = x[:, :, rows][:, :, :, rows]
    want = torch.cat([sub, torch.zeros(2, c_out - c_in, len(rows), len(rows))], dim=1)
    assert torch.equal(got, want)
    assert count_params(ZeroPadShortcut(c_in, c_out, stride)) == 0


def test_zero_pad_shortcut_cannot_shrink_channels() -> None:
    with pytest.raises(ValueError, match="shrink"):
        ZeroPadShortcut(32, 16, 2)


def test_option_a_block_equals_functional_computation() -> None:
    torch.manual_seed(6)
    gen = torch.Generator().manual_seed(7)
    blk = BasicBlock(16, 32, stride=2, shortcut="A")
    randomise_bn(blk, gen)
    blk.eval()
    x = torch.randn(2, 16, 9, 9, generator=gen)

    def bn(t: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        return ((t - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
                * m.weight.view(shape) + m.bias.view(shape))

    with torch.no_grad():
        h = torch.relu(bn(torch.nn.functional.conv2d(x, blk.conv1.weight, stride=2, padding=1), blk.bn1))
        h = bn(torch.nn.functional.conv2d(h, blk.conv2.weight, padding=1), blk.bn2)
        shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 5, 5)], dim=1)
        want = torch.relu(h + shortcut)
        got = blk(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- (conv, bn) pairs

def _consumers(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """For every BatchNorm, the name of the conv whose output tensor it receives, found by running."""
    # the tensors are kept alive so that their ids cannot be reused by later ones
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    consumed: dict[str, str] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(
                lambda mod, i, out, name=name: produced.__setitem__(id(out), (name, out))))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(
                lambda mod, inp, name=name: consumed.__setitem__(name, produced.get(id(inp[0]), ("?",))[0])))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return consumed


@pytest.mark.parametrize(("name", "shortcut", "size"), [
    ("resnet20", "A", 32), ("resnet20", "B", 32), ("resnet20", "C", 32),
    ("resnet18", "B", 64), ("resnet50", "B", 64), ("plain20", "B", 32),
])
def test_conv_bn_pairs_cover_every_conv_with_the_bn_that_consumes_it(name: str, shortcut: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut=shortcut).eval()
    pairs = model.conv_bn_pairs()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    paired_convs = [c for c, _ in pairs]
    assert sorted(paired_convs) == sorted(convs)
    assert len(set(paired_convs)) == len(paired_convs)
    assert sorted(b for _, b in pairs) == sorted(bns)
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        bn = model.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        assert conv.out_channels == bn.num_features
    consumers = _consumers(model, torch.randn(1, 3, size, size))
    assert consumers == {b: c for c, b in pairs}


@pytest.mark.parametrize(("name", "size"), [("resnet20", 32), ("resnet50", 64)])
def test_conv_bn_pairs_are_in_execution_order(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, shortcut="B").eval()
    order: list[str] = []
    for conv_name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_pre_hook(lambda mod, i, conv_name=conv_name: order.append(conv_name))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    assert [c for c, _ in model.conv_bn_pairs()] == order


def test_blocks_are_basic_or_bottleneck_as_in_table1() -> None:
    torch.manual_seed(0)
    for depth, kind in ((18, BasicBlock), (34, BasicBlock), (50, Bottleneck)):
        model = create_model(f"resnet{depth}", num_classes=10)
        blocks = model.blocks()
        assert all(type(b) is kind for _, b in blocks)
        assert [sum(1 for n, _ in blocks if n.startswith(f"layer{i}.")) for i in range(1, 5)] == list(
            IMAGENET_LAYOUT[depth][1])
