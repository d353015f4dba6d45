"""Experiments that reproduce the paper's findings with the model zoo."""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "DegradationResult": "degradation",
    "ModelCurves": "degradation",
    "load_result": "degradation",
    "run_degradation": "degradation",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
