"""The JetPack table (edge_resnet/export/jetson.py) against docs/jetson.md and pyproject.toml's extras,
and the version rules for DLA, calibration-cache headers and cuda-python."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_resnet.export.jetson import JETPACKS, calib_cache_versions, dla_core_refusal
from edge_resnet.runtime.tensorrt_backend import cuda_python_refusal

ROOT = Path(__file__).resolve().parents[2]


def _doc_rows() -> list[list[str]]:
    """The rows of the page's JetPack table (the one whose header starts with "| JetPack |")."""
    lines = (ROOT / "docs" / "jetson.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| JetPack |"))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def test_docs_table_is_the_code_table() -> None:
    expected = [[j.release, j.boards, j.ubuntu, j.python, j.cuda, j.tensorrt, j.cuda_python, j.extra,
                 "yes" if j.implicit_int8 else "no"] for j in JETPACKS]
    assert _doc_rows() == expected


def test_extras_pin_cuda_python_per_jetpack() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for j in JETPACKS:
        assert extras[j.extra] == [j.cuda_python], j
    # every cuda-python requirement names an upper bound: an unpinned one resolves to a CUDA major the
    # driver may not have (cuda-python 13 on JetPack 6's CUDA 12.6 driver fails at cudaSetDevice)
    for name, reqs in extras.items():
        for req in reqs:
            if req.startswith("cuda-python"):
                assert "<" in req, (name, req)
    # TensorRT from PyPI is for x86-64/SBSA machines only, by CUDA major; no extra offers it as "the" wheel
    assert "tensorrt" not in extras
    assert extras["tensorrt-cu12"][0].startswith("tensorrt-cu12") and "cuda-python>=12.2,<13" in extras["tensorrt-cu12"]
    assert extras["tensorrt-cu13"][0].startswith("tensorrt-cu13") and "cuda-python>=13,<14" in extras["tensorrt-cu13"]


def test_the_readme_points_to_the_page() -> None:
    assert "docs/jetson.md" in (ROOT / "README.md").read_text()


def test_bundle_cache_versions_are_the_jetpacks_with_implicit_int8() -> None:
    assert calib_cache_versions() == ("8.5.2", "8.6.2", "10.3.0", "10.13.3", "10.16.2")


def test_dla_core_refusal() -> None:
    assert dla_core_refusal(0, 2) is None and dla_core_refusal(1, 2) is None
    assert dla_core_refusal(0, 0) == ("this device has no DLA (TensorRT reports 0 DLA cores); drop --dla to build "
                                      "for the GPU")
    assert dla_core_refusal(2, 2) == "DLA core 2 does not exist here: this device has 2 (cores 0-1); pass --dla 0 or --dla 1"
    assert dla_core_refusal(1, 1) == "DLA core 1 does not exist here: this device has 1 (core 0); pass --dla 0"


@pytest.mark.parametrize(("bindings", "driver", "refused"), [
    ("13.0.1", 12060, True),   # JetPack 6.1/6.2: CUDA 12.6 driver, cuda-python 13 -> the failure
    ("13.4.4", 12020, True),
    ("12.9.0", 12060, False),  # newer 12.x on a 12.6 driver: minor-version compatibility
    ("12.2.0", 13000, False),  # JetPack 7's CUDA 13 driver runs CUDA 12 code
    ("11.8.7", 11040, False),
    ("12.6.0", 11040, True),
    (None, 12060, False), ("13.0.0", 0, False),  # unknown: say nothing, cudaSetDevice reports
])
def test_cuda_python_must_not_be_newer_than_the_driver(bindings: str | None, driver: int, refused: bool) -> None:
    why = cuda_python_refusal(bindings, driver)
    assert (why is not None) == refused
    if why:
        major = driver // 1000
        assert f"cuda-python {bindings} is built for CUDA {bindings.split('.')[0]}" in why
        assert f"this driver supports CUDA {major}.{driver % 1000 // 10}" in why
        assert f"'cuda-python>={major},<{major + 1}'" in why and "docs/jetson.md" in why


def test_the_stream_handed_to_tensorrt_is_the_raw_handle() -> None:
    """execute_async_v3 takes the stream's raw value: read through cuda-bindings' own accessor where it has one
    (``int(stream)`` is deprecated from 12.9.1/13.0), the same number either way. No GPU is needed to wrap a value."""
    cudart = pytest.importorskip("cuda.bindings.runtime")
    from edge_resnet.runtime.tensorrt_backend import stream_handle

    for raw in (0, 1234, 2**40 + 7):
        stream = cudart.cudaStream_t(raw)
        assert stream_handle(stream) == raw and isinstance(stream_handle(stream), int)
