"""The ResNet family of He et al. (2015): blocks, networks, registry, weights."""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "SHORTCUTS": "blocks",
    "Add": "blocks",
    "BasicBlock": "blocks",
    "Bottleneck": "blocks",
    "ZeroPadShortcut": "blocks",
    "create_model": "factory",
    "count_macs": "profile",
    "count_params": "profile",
    "ModelSpec": "registry",
    "get_spec": "registry",
    "list_models": "registry",
    "ResNet": "resnet",
    "extract_state_dict": "weights",
    "load_file": "weights",
    "load_weights": "weights",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
