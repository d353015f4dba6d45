"""Fake-quant simulation: the INT8 model's arithmetic, computed in float32 by PyTorch.

Every quantized tensor goes through q = saturate(round(x / s) + z), x' = (q - z) * s exactly
as ONNX QuantizeLinear/DequantizeLinear define it (round half to even, float32 scale), and the
weights are replaced by their dequantized int8 values. Between the quantization points the
float ops are those of the deployed graph, so the simulation predicts the deployed model's
outputs to within float rounding, and it runs anywhere PyTorch does.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from edge_resnet.torch_settings import exact_fp32
from edge_resnet.models.graph import Graph, Node, trace
from edge_resnet.quant.plan import ActQuant, QuantPlan


def fake_quantize(x: Tensor, q: ActQuant) -> Tensor:
    """QuantizeLinear followed by DequantizeLinear, in float32."""
    y = torch.clamp(torch.round(x / q.scale) + q.zero_point, q.qmin, q.qmax)
    return (y - q.zero_point) * q.scale


class QuantSim(nn.Module):
    """A folded model running the INT8 arithmetic of ``plan``; the folded model is not changed."""

    def __init__(self, folded: nn.Module, plan: QuantPlan) -> None:
        super().__init__()
        self.model = copy.deepcopy(folded).eval()
        self.graph: Graph = trace(self.model)
        self.plan = plan
        with torch.no_grad():
            for node in self.graph.of_op("conv", "linear"):
                if node.name not in plan.weights:
                    continue  # a layer kept in float keeps its float weights and bias
                wq = plan.weights[node.name]
                node.module.weight.copy_(wq.dequantized().to(node.module.weight.device))
                if node.name in plan.biases:
                    if node.module.bias is None:
                        node.module.bias = nn.Parameter(torch.zeros(node.module.weight.shape[0]))
                    node.module.bias.copy_(torch.from_numpy(plan.biases[node.name]))

    def _visit(self, node: Node, out: Tensor) -> Tensor:
        q = self.plan.activations.get(node.name)
        return out if q is None else fake_quantize(out, q)

    def forward(self, x: Tensor) -> Tensor:
        with exact_fp32():
            return self.graph.run(x, self._visit, self.plan.reads_float if self.plan.float_layers else None)
