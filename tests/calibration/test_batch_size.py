"""Calibrated ranges do not depend on the batch size the images are fed in (issue 16: up to 8.6% before)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edge_resnet.calibration.calibrators import CALIBRATORS, compute_amax
from edge_resnet.calibration.collect import collect

from edge_resnet.fold import fold_batchnorm
from edge_resnet.models import create_model
from edge_resnet.models.graph import trace
from tests.helpers import randomise_bn, torch_threads


@pytest.mark.parametrize("batch", [1, 7, 16])
def test_histograms_are_the_same_for_any_batch_size(batch: int) -> None:
    with torch_threads(1):
        torch.manual_seed(0)
        model = create_model("resnet8", num_classes=10)
        randomise_bn(model, torch.Generator().manual_seed(0))
        graph = trace(fold_batchnorm(model.eval()))
        gen = torch.Generator().manual_seed(1)
        # a growing scale: later images have larger activations, so ranges must double mid-stream
        x = torch.randn(40, 3, 32, 32, generator=gen) * torch.linspace(0.2, 3.0, 40).view(-1, 1, 1, 1)
        ref = collect(graph, [x])
        got = collect(graph, list(x.split(batch)))
    for name in ref.names:
        a, b = ref.histogram(name), got.histogram(name)
        # equal up to float rounding (a convolution of one image and of a batch may round differently)
        assert a.width == pytest.approx(b.width, rel=1e-5) and a.amax == pytest.approx(b.amax, rel=1e-5), name
        # counts equal up to values that land on a bin edge at one range and not the other
        assert np.abs(a.counts - b.counts).sum() <= 1e-3 * a.total, name
        for method in CALIBRATORS:
            assert compute_amax(a, method) == pytest.approx(compute_amax(b, method), rel=1e-3, abs=2 * a.width), \
                (name, method)
