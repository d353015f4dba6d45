"""INT8 quantization: the placement plan and the fake-quant simulation of the exact arithmetic."""

from edge_resnet.quant.plan import TARGETS, ActQuant, QuantPlan, WeightQuant, activation_points, make_plan
from edge_resnet.quant.sim import QuantSim, fake_quantize

__all__ = ["TARGETS", "ActQuant", "QuantPlan", "QuantSim", "WeightQuant", "activation_points",
           "fake_quantize", "make_plan"]
