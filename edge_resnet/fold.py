"""BatchNorm folding: a new model whose convolutions carry the BN scale and shift.

In eval mode BN is an affine map per channel, y = gamma * (x - mean) / sqrt(var + eps) + beta,
so it merges into the preceding convolution: W' = W * s, b' = (b - mean) * s + beta with
s = gamma / sqrt(var + eps). The folded network computes the same function with one op fewer
per conv, and it is what gets quantized: TensorRT folds BN before quantizing too, so the INT8
weights must be the folded ones.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from edge_resnet.models.dataflow import array, fold_bn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm has {bn.num_features} channels, the conv {conv.out_channels}")
    ones = np.ones(conv.out_channels)
    w, b = fold_bn(array(conv.weight), None if conv.bias is None else array(conv.bias),
                   array(bn.weight) if bn.affine else ones, array(bn.bias) if bn.affine else 0 * ones,
                   array(bn.running_mean), array(bn.running_var), bn.eps)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(torch.from_numpy(w))
        folded.bias.copy_(torch.from_numpy(b))
    return folded.eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every (conv, BN) pair it names merged; the input is left untouched.

    The model must say which pairs it owns (``conv_bn_pairs()``, as every registry model does);
    BN uses its running statistics, so the result matches the model in eval mode. Folded BNs
    become ``nn.Identity``.
    """
    if not hasattr(model, "conv_bn_pairs"):
        raise TypeError(f"{type(model).__name__} does not name its (conv, BatchNorm) pairs; cannot fold it")
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in model.conv_bn_pairs():
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"{conv_name}/{bn_name} is not a Conv2d/BatchNorm2d pair")
        folded.set_submodule(conv_name, fold_conv_bn(conv, bn))
        folded.set_submodule(bn_name, nn.Identity())
    return folded
