"""Shared bits of the benchmark scripts: the machine description (from the library)."""

from __future__ import annotations

from edge_resnet.environment import machine

__all__ = ["machine"]
