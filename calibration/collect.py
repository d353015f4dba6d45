"""Run the FP32 model over calibration images and stream statistics for every tensor it computes.

One ``TensorStats`` per tensor of the traced graph, updated batch by batch: the memory is the
histograms (a few KB per tensor), whatever the number of images. A ReLU output needs no pass of
its own: its histogram is the positive half of its input's signed histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from edge_resnet.calibration.statistics import Statistics, weighted_inputs
from edge_resnet.torch_settings import exact_fp32
from edge_resnet.models.graph import Graph, Node

__all__ = ["Statistics", "collect"]


def collect(
    graph: Graph,
    batches: Iterable[Tensor],
    *,
    bins: int = 2048,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> Statistics:
    """Statistics of every tensor of ``graph`` (an FP32, folded model) over ``batches``.

    ``on_batch(n)`` is called after each batch of n images (progress bars).
    """
    result = Statistics.for_graph(graph, bins)
    weighted = weighted_inputs(graph)

    def visit(node: Node, out: Tensor) -> Tensor:
        stats = result.stats.get(node.name)
        if stats is not None and result.images == 0 and out.shape[0] > 1:
            # the histogram's range starts at its first update's max and only doubles: start it on
            # the first image alone, so the ranges do not depend on the batch size
            stats.update(out[:1])
            stats.update(out[1:])
        elif stats is not None:
            stats.update(out)
        if node.name in weighted:
            dims = (0, 2, 3) if out.dim() == 4 else (0,)
            s = out.sum(dim=dims, dtype=torch.float64).cpu()
            result.add_channel_sums(node.name, s.numpy(), out.numel() // s.numel())
        return out

    device = torch.device(device)
    with torch.inference_mode(), exact_fp32():
        for batch in batches:
            graph.run(batch.to(device), visit)
            result.images += int(batch.shape[0])
            if on_batch is not None:
                on_batch(int(batch.shape[0]))
    return result
