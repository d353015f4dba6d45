"""Small instances of the ResNet families `edge-resnet quantize` covers, and the forms their ONNX exports take.

Each family is real timm/torchvision code at tiny widths when the package is installed (timm is in the dev
extra), else a hand-built module of the same structure (the same ONNX ops in the same order). Weights are
random; BatchNorm statistics are re-estimated on the calibration images' distribution so activations have
a realistic scale (fresh BNs leave near-tied logits that make every agreement figure noise).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

SIZE = 32
CLASSES = 5


def _timm():
    try:
        import timm  # noqa: F401
        from timm.models import resnet, resnetv2
    except ImportError:
        return None
    return resnet, resnetv2


# ------------------------------------------------------------------ hand-built stand-ins (no timm)


class _SE(nn.Module):
    """timm's SEModule: mean over H, W (keepdim) -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> x * gate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(c, max(c // 4, 4), 1), nn.ReLU(), nn.Conv2d(max(c // 4, 4), c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class _ECA(nn.Module):
    """timm's EcaModule: a 1-D conv across the pooled channels, views built from x.shape."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x * torch.sigmoid(y).view(x.shape[0], -1, 1, 1).expand_as(x)


class _Block(nn.Module):
    def __init__(self, cin: int, c: int, stride: int, attn: Callable[[int], nn.Module] | None,
                 act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), act()
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.attn = attn(c) if attn else nn.Identity()
        self.down = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                     if stride != 1 or cin != c else nn.Identity())
        self.act2 = act()

    def forward(self, x):
        return self.act2(self.attn(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))) + self.down(x))


class _PreAct(nn.Module):
    """timm's PreActBasic: BN -> ReLU before each conv, the projection reads the pre-activation."""

    def __init__(self, cin: int, c: int, stride: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()), nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()), nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.down = nn.Conv2d(cin, c, 1, stride, bias=False) if stride != 1 or cin != c else None

    def forward(self, x):
        pre = self.norm1(x)
        shortcut = x if self.down is None else self.down(pre)
        return self.conv2(self.norm2(self.conv1(pre))) + shortcut


class _Net(nn.Module):
    def __init__(self, blocks: list[nn.Module], c: int, preact: bool = False, act=nn.ReLU) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), act(), nn.MaxPool2d(3, 2, 1))
        if preact:
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) if preact else nn.Identity()
        self.fc = nn.Linear(c, CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.norm(self.blocks(self.stem(x))).mean((2, 3), keepdim=True), 1))


def _hand(attn=None, act=nn.ReLU) -> nn.Module:
    return _Net([_Block(8, 8, 1, attn, act), _Block(8, 16, 2, attn, act)], 16, act=act)


# ------------------------------------------------------------------ the families


def _family(name: str) -> nn.Module:
    tm = _timm()
    torch.manual_seed(0)
    small = dict(num_classes=CLASSES, channels=(8, 16, 16, 16), stem_width=8)
    if name == "torchvision-resnet10":
        from torchvision.models.resnet import BasicBlock, ResNet
        return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES)  # torchvision fixes the widths (64-512)
    if tm is None:
        return {"timm-seresnet": lambda: _hand(_SE), "timm-ecaresnet-d": lambda: _hand(_ECA),
                "timm-resnet-silu": lambda: _hand(act=nn.SiLU), "timm-resnet-hardswish": lambda: _hand(act=nn.Hardswish),
                "timm-resnetv2-preact": lambda: _Net([_PreAct(8, 8, 1), _PreAct(8, 16, 2)], 16, preact=True)}[name]()
    resnet, resnetv2 = tm
    if name == "timm-seresnet":
        return resnet.ResNet(resnet.Bottleneck, (1, 1, 1, 1), block_args=dict(attn_layer="se"), **small)
    if name == "timm-ecaresnet-d":
        return resnet.ResNet(resnet.Bottleneck, (1, 1, 1, 1), stem_type="deep", avg_down=True,
                             block_args=dict(attn_layer="eca"), **small)
    if name == "timm-resnet-silu":
        return resnet.ResNet(resnet.BasicBlock, (1, 1, 1, 1), act_layer="silu", **small)
    if name == "timm-resnet-hardswish":
        return resnet.ResNet(resnet.BasicBlock, (1, 1, 1, 1), act_layer="hard_swish", **small)
    if name == "timm-resnetv2-preact":
        from timm.layers import BatchNormAct2d, create_conv2d
        return resnetv2.ResNetV2((1, 2, 1, 1), channels=(16, 32, 32, 32), num_classes=CLASSES, stem_chs=8,
                                 conv_layer=create_conv2d, norm_layer=BatchNormAct2d)
    raise KeyError(name)


FAMILIES = ("torchvision-resnet10", "timm-seresnet", "timm-ecaresnet-d", "timm-resnet-silu", "timm-resnet-hardswish",
            "timm-resnetv2-preact")


def build(name: str, images: torch.Tensor) -> nn.Module:
    """``name`` at tiny widths, random weights, BatchNorm statistics re-estimated on ``images`` (N, 3, S, S)."""
    model = _family(name)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            with torch.no_grad():  # timm zero-initialises the last BN of each block: a block would be the identity
                m.weight.fill_(1.0)
                m.bias.zero_()
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), 16):
            model(images[i:i + 16])
    return model.eval()


class _NHWC(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2))


class _Softmax(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x), dim=1)


# export form -> (exporter, opset, dynamic batch, wrapper, dtype)
FORMS = {
    "legacy-op17": ("legacy", 17, True, None, torch.float32),
    "legacy-op13": ("legacy", 13, True, None, torch.float32),
    "legacy-static": ("legacy", 17, False, None, torch.float32),
    "legacy-bn-kept": ("legacy-nofold", 17, True, None, torch.float32),
    "dynamo-op20": ("dynamo", 20, False, None, torch.float32),
    "dynamo-op21-dynbatch": ("dynamo", 21, True, None, torch.float32),
    "dynamo-op18-dynbatch": ("dynamo", 18, True, None, torch.float32),
    "nhwc": ("legacy", 17, True, _NHWC, torch.float32),
    "softmax": ("legacy", 17, True, _Softmax, torch.float32),
    "fp16": ("legacy", 17, True, None, torch.float16),
}


def export(model: nn.Module, form: str, path: Path) -> Path:
    """``model`` exported the way ``form`` says, to ``path`` (the dynamo exporter writes its weights to
    ``path``.data beside it, as it does for users)."""
    exporter, opset, dynamic, wrap, dtype = FORMS[form]
    m = wrap(model) if wrap else model
    m = m.to(dtype).eval()
    x = torch.randn(2, 3, SIZE, SIZE, dtype=dtype)
    if wrap is _NHWC:
        x = x.permute(0, 2, 3, 1).contiguous()
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        if exporter.startswith("legacy"):
            torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=opset, input_names=["pixels"],
                              output_names=["out"], do_constant_folding=exporter == "legacy",
                              dynamic_axes={"pixels": {0: "n"}} if dynamic else None)
        else:
            shapes = {"x": {0: torch.export.Dim("n", min=1, max=64)}} if dynamic else None
            torch.onnx.export(m, (x,), str(path), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                              external_data=True, verbose=False)
    return path
