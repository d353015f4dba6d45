"""Shared fixtures. Hardware tests carry a marker and skip without the hardware."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_trt = pytest.mark.skip(reason="needs TensorRT (`import tensorrt` fails here)")
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "tensorrt" in item.keywords and not (has_trt and torch.cuda.is_available()):
            item.add_marker(skip_trt)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
