"""The builder's timing-cache guard (edge_resnet/export/engine.py ``attach_timing_cache``), against a
stand-in ``IBuilderConfig`` that behaves as TensorRT's bindings do where it matters: the method and
argument names are the real ones (checked against every recorded bindings table below),
``create_timing_cache`` returns None for bytes it cannot read, and ``set_timing_cache`` takes the cache
by reference, so None is a TypeError (pybind11 refuses it), and answers False for another device's cache.
TensorRT itself cannot run here; tests/export/test_tensorrt_engine.py does the same with the real one."""

from __future__ import annotations

import logging

import pytest

from edge_resnet.export.engine import attach_timing_cache
from tests.export.tensorrt_api import tables


class _Cache:
    def __init__(self, data: bytes) -> None:
        self.data = data


class StrictConfig:
    def __init__(self) -> None:
        self.attached: _Cache | None = None

    def create_timing_cache(self, serialized_timing_cache: bytes) -> _Cache | None:
        data = bytes(serialized_timing_cache)
        if data and not data.startswith(b"TIMING"):
            return None  # TensorRT: "failed to deserialize", a null pointer
        return _Cache(data)

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, _Cache):
            raise TypeError("set_timing_cache(): incompatible function arguments")
        if cache.data.startswith(b"TIMING other-gpu") and not ignore_mismatch:
            return False
        self.attached = cache
        return True


def test_the_stand_in_has_the_real_signatures() -> None:
    for version, table in tables().items():
        create, setter = table.member("IBuilderConfig", "create_timing_cache"), table.member("IBuilderConfig",
                                                                                             "set_timing_cache")
        assert create is not None and setter is not None, version
        if create.args:  # tables read from the wheels carry signatures
            assert create.args == (("serialized_timing_cache",),), version
            assert setter.args == (("cache", "ignore_mismatch"),) and setter.returns == ("bool",), version
            assert create.returns == ("ITimingCache",), version


def test_a_good_cache_is_used() -> None:
    config = StrictConfig()
    cache = attach_timing_cache(config, b"TIMING this-gpu", "timing.cache")
    assert cache is config.attached and cache.data == b"TIMING this-gpu"


@pytest.mark.parametrize("data", [b"\x00garbage" * 8, b"TIMING other-gpu"])
def test_a_corrupt_or_foreign_cache_falls_back_to_an_empty_one(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    config = StrictConfig()
    with caplog.at_level(logging.WARNING):
        cache = attach_timing_cache(config, data, "timing.cache")
    assert cache is config.attached and cache.data == b""
    assert "timing.cache cannot be used" in caplog.text


def test_no_file_starts_empty() -> None:
    config = StrictConfig()
    assert attach_timing_cache(config, b"", "timing.cache").data == b""


def test_when_even_an_empty_cache_fails_the_build_goes_on_without(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(StrictConfig):
        def create_timing_cache(self, serialized_timing_cache: bytes) -> None:
            return None

    with caplog.at_level(logging.WARNING):
        assert attach_timing_cache(Broken(), b"TIMING x", "timing.cache") is None
    assert "building without one" in caplog.text
