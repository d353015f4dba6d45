"""The ResNet family of He et al. (2015): blocks, networks, registry, weights."""

from edge_resnet.models.blocks import SHORTCUTS, Add, BasicBlock, Bottleneck, ZeroPadShortcut
from edge_resnet.models.factory import create_model
from edge_resnet.models.profile import count_macs, count_params
from edge_resnet.models.registry import ModelSpec, get_spec, list_models
from edge_resnet.models.resnet import ResNet
from edge_resnet.models.weights import extract_state_dict, load_file, load_weights

__all__ = [
    "SHORTCUTS", "Add", "BasicBlock", "Bottleneck", "ModelSpec", "ResNet", "ZeroPadShortcut",
    "count_macs", "count_params", "create_model", "extract_state_dict", "get_spec",
    "list_models", "load_file", "load_weights",
]
