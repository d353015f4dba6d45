"""Our TensorRT Python calls against the real bindings of every version the build plan supports.

``tests/export/tensorrt_api.py`` reads our modules and lists every TensorRT name they touch, with the
conditions each runs under; the name tables in tests/fixtures/tensorrt/api come from NVIDIA's own
bindings (the PyPI wheels, introspected; 8.5.2 from its pybind11 sources). A name is required in a
version when some build the plan makes for that version reaches it.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from edge_resnet.export.build_plan import REMOVED_IN_11
from tests.export import tensorrt_api as api

FOUND = api.scan()


def test_every_name_we_use_exists_where_a_build_reaches_it() -> None:
    missing = [f"{f.use.where} ({f.use.function}): {f.use.label()} is not in TensorRT {v}"
               for f in FOUND for v in api.tables() if api.needed(f, v) and api.present(f, v) is False]
    assert not missing, "\n".join(missing)


def test_the_scan_sees_every_module_that_imports_tensorrt() -> None:
    """Each module of ours that mentions the tensorrt module yields uses, and the builder and the runtime
    backend (the two that drive TensorRT) yield many: a scanner that silently lost track of types would
    pass the check above for nothing."""
    by_module: dict[str, int] = {}
    for f in FOUND:
        path = f.use.where.split(":")[0]
        by_module[path] = by_module.get(path, 0) + 1
    for path in api._modules():
        text = path.read_text()
        if re.search(r"\bimport tensorrt\b|[(,]\s*trt\s*[,):]|(require|probe|load)\(\"tensorrt\"", text):
            assert by_module.get(str(path.relative_to(api.ROOT)), 0) > 0, path
    assert by_module["export/engine.py"] >= 40 and by_module["edge_resnet/runtime/tensorrt_backend.py"] >= 20


def test_plan_flags_exist_as_builder_flags() -> None:
    """``config.set_flag(getattr(trt.BuilderFlag, flag))`` takes its names from the plan: each flag of each
    plan is a BuilderFlag of that version (the one use the scanner reports by name only)."""
    dynamic = {f.use.name for f in FOUND if f.use.kind == "dynamic"}
    assert dynamic == {"BuilderFlag.*"}
    for version, table in api.tables().items():
        for plan in api.plans(version):
            for flag in plan.flags:
                assert table.has(f"BuilderFlag.{flag}"), (version, flag)


def test_what_the_plan_says_11_removed_is_gone_and_was_there() -> None:
    """REMOVED_IN_11 is absent from the 11.x bindings, present in every 8.5-10.x table, and no use of
    them is reached by an 11.x build."""
    assert REMOVED_IN_11
    for name in REMOVED_IN_11:
        assert not api.tables()["11.4.0"].has(name), name
        for version in ("8.5.2", "8.6.1", "10.3.0", "10.7.0", "10.13.3"):
            assert api.tables()[version].has(name), (version, name)
    # the list names what we really call (BuilderFlag members by the plan's flag names)
    flags = {f"BuilderFlag.{flag}" for v in api.tables() for plan in api.plans(v) for flag in plan.flags}
    used = {f.use.name for f in FOUND} | flags
    assert set(REMOVED_IN_11) <= used, set(REMOVED_IN_11) - used
    for f in FOUND:
        if f.use.name in REMOVED_IN_11:
            assert not api.needed(f, "11.4.0"), f.use
    assert not {f"BuilderFlag.{flag}" for plan in api.plans("11.4.0") for flag in plan.flags} & set(REMOVED_IN_11)


def test_conformance_table_is_recorded() -> None:
    text = api.render(*api.conformance(FOUND))
    assert "MISSING" not in text
    assert api.CONFORMANCE.read_text() == text, (
        "tests/fixtures/tensorrt/CONFORMANCE.md is out of date: python -m tests.export.tensorrt_api --write")


# ---------------------------------------------------------------- the scanner itself, on known answers

SAMPLE = '''
import time


def import_tensorrt():
    import tensorrt
    return tensorrt


def build(plan, folder):
    trt = import_tensorrt()
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    if plan.int8_mode == "implicit":
        config.int8_calibrator = calibrator(trt)
    if plan.dla_core is not None:
        config.DLA_core = plan.dla_core
    attach(trt, config)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    config.no_such_method()


def calibrator(trt):
    class C(trt.IInt8EntropyCalibrator2):
        def get_batch(self, names):
            return None
    return C()


def attach(trt, config):
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return

    class P(base):
        def phase_finish(self, name):
            return None

    config.progress_monitor = P()
'''


@pytest.fixture
def sample(tmp_path: Path) -> list[api.Found]:
    path = api.ROOT / "tests" / "export" / f"_sample_{tmp_path.name}.py"
    path.write_text(textwrap.dedent(SAMPLE))
    try:
        return api.scan([path])
    finally:
        path.unlink()


def test_scanner_known_answers(sample: list[api.Found]) -> None:
    names = {(f.use.name, f.use.kind) for f in sample}
    assert {("Builder", "attribute"), ("Logger", "attribute"), ("Logger.WARNING", "attribute"),
            ("Builder.create_builder_config", "attribute"), ("IBuilderConfig.int8_calibrator", "attribute"),
            ("IBuilderConfig.DLA_core", "attribute"), ("IBuilderConfig.set_timing_cache", "attribute"),
            ("IBuilderConfig.create_timing_cache", "attribute"),
            ("IBuilderConfig.set_timing_cache(ignore_mismatch=)", "keyword"),
            ("IBuilderConfig.no_such_method", "attribute"), ("IInt8EntropyCalibrator2.get_batch", "override"),
            ("IProgressMonitor", "probe"), ("IProgressMonitor.phase_finish", "override"),
            ("IBuilderConfig.progress_monitor", "attribute")} <= names, names
    found = {f.use.name: f for f in sample}
    # the calibrator runs under the caller's implicit test: 8.5-10.x plans only
    calib = found["IInt8EntropyCalibrator2.get_batch"]
    assert [api.needed(calib, v) for v in api.tables()] == [True, True, True, True, True, False]
    # DLA: only versions with a DLA build; progress monitor: only where IProgressMonitor exists
    assert [api.needed(found["IBuilderConfig.DLA_core"], v) for v in api.tables()] == [True] * 4 + [False] * 2
    assert [api.needed(found["IBuilderConfig.progress_monitor"], v) for v in api.tables()] == \
        [False, False, True, True, True, True]
    # a name no TensorRT has is reported for every version
    bogus = found["IBuilderConfig.no_such_method"]
    assert all(api.needed(bogus, v) and api.present(bogus, v) is False for v in api.tables())
    assert [ast.unparse(g) for g in calib.contexts[0]] == ["plan.int8_mode == 'implicit'"]
