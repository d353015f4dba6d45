"""Choose among calibrations by measuring: the one whose simulated INT8 logits are closest to FP32.

No single range calibrator wins everywhere: entropy and percentile clip outliers that matter
in one network and waste resolution in another. With the statistics already collected, every
calibrator is nearly free, so ``--calib-method auto`` simulates each resulting INT8 model on the
calibration images and keeps the best logit SQNR against the FP32 model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from edge_resnet.calibration.files import Calibration
from edge_resnet.contract.metrics import sqnr_from_sums
from edge_resnet.models.dataflow import Graph
from edge_resnet.quant.plan import make_plan

if TYPE_CHECKING:  # torch only where the simulation scores (``pick`` runs without it)
    import torch
    from torch import Tensor, nn


def score_calibrations(folded: nn.Module, graph: Graph, calibs: Sequence[Calibration], batches: Iterable[Tensor],
                       *, target: str = "tensorrt", device: torch.device | str = "cpu",
                       on_batch: Callable[[int], None] | None = None) -> dict[str, float]:
    """Logit SQNR (dB) against ``folded`` of the INT8 simulation of each calibration, by method."""
    import torch

    from edge_resnet.torch_settings import exact_fp32
    from edge_resnet.quant.sim import QuantSim

    sims = {c.method: QuantSim(folded, make_plan(graph, c.amax, target, c.channel_mean or None)).to(device)
            for c in calibs}
    folded = folded.eval().to(device)
    signal = 0.0
    noise = dict.fromkeys(sims, 0.0)
    with torch.inference_mode(), exact_fp32():
        for x in batches:
            x = x.to(device)
            ref = folded(x).double()
            signal += float((ref ** 2).sum())
            for method, sim in sims.items():
                noise[method] += float(((sim(x).double() - ref) ** 2).sum())
            if on_batch is not None:
                on_batch(int(x.shape[0]))
    return {m: sqnr_from_sums(signal, n) for m, n in noise.items()}


def pick(calibs: Sequence[Calibration], scores: dict[str, float]) -> Calibration:
    """The best-scoring calibration, as a new one marked as chosen by "auto" (ties: the earlier method).

    The candidates are left as they are: the caller may still compare or save them.
    """
    best = max(calibs, key=lambda c: scores[c.method])
    return dataclasses.replace(
        best, requested="auto",
        # the percentile candidate took part in the choice: its setting belongs to the result
        percentile=next((c.percentile for c in calibs if c.method == "percentile"), None),
        selection={m: s if math.isinf(s) else round(s, 3) for m, s in scores.items()})
