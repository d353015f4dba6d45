"""Experiments that reproduce the paper's findings with the model zoo."""

from edge_resnet.experiments.degradation import DegradationResult, ModelCurves, load_result, run_degradation

__all__ = ["DegradationResult", "ModelCurves", "load_result", "run_degradation"]
