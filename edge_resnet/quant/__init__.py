"""INT8 quantization: the placement plan and the fake-quant simulation of the exact arithmetic."""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "TARGETS": "plan",
    "ActQuant": "plan",
    "QuantPlan": "plan",
    "WeightQuant": "plan",
    "activation_points": "plan",
    "make_plan": "plan",
    "QuantSim": "sim",
    "fake_quantize": "sim",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
