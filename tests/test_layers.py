"""The import contract, read from the source: each layer imports only itself and the layers below it,
and the device side (runtime, bench) never imports torch or a torch-side stage.

DESIGN.md's flow is models -> training -> fold -> calibration -> quant -> export -> verify/bench ->
runtime; the benchmark measures the runtime's own backends, so it sits above it. The jobs (the
export pipeline, the deploy job, the experiments) and the command line are the top of the house.
"""

from __future__ import annotations

import pytest

from tests.import_graph import closure, project

# bottom to top; a module's layer is its subpackage (or module) under edge_resnet
LAYERS = [
    {"edge_resnet", "errors", "atomic", "runs", "_lazy", "contract", "imaging", "environment", "torch_settings",
     "sessions", "optional"},
    {"models"}, {"data"}, {"training"}, {"fold"}, {"calibration"}, {"quant"}, {"export"}, {"accuracy"},
    {"runtime"}, {"bench"},
    {"experiments", "pipeline", "deploy", "analysis", "ptq", "qat"},
    {"cli"},
]
# (importer, imported): deliberate, each with its reason
EXCEPTIONS = {
    # the PyTorch row of the benchmark loads model.pt in its own child process, where torch is installed
    ("edge_resnet.bench.measure", "edge_resnet.training.checkpoint"),
}
TORCH_SIDE = ("edge_resnet.models", "edge_resnet.data", "edge_resnet.training", "edge_resnet.fold",
              "edge_resnet.calibration", "edge_resnet.quant", "edge_resnet.accuracy", "edge_resnet.torch_settings",
              "edge_resnet.pipeline", "edge_resnet.experiments", "edge_resnet.analysis", "edge_resnet.qat")


def _layer(module: str) -> int:
    parts = module.split(".")
    key = "cli" if parts[0] == "cli" else (parts[1] if len(parts) > 1 else "edge_resnet")
    return next(i for i, layer in enumerate(LAYERS) if key in layer)


def _resolve(name: str) -> str | None:
    modules = project()
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


def _edges() -> list[tuple[str, str]]:
    out = []
    for name, m in project().items():
        for imported in m.top_level | m.deferred:
            target = _resolve(imported) if imported.split(".")[0] in ("edge_resnet", "cli") else None
            if target is not None and target != name:
                out.append((name, target))
    return out


def test_every_module_has_a_layer() -> None:
    for name in project():
        _layer(name)


def test_no_layer_imports_a_higher_one() -> None:
    upward = sorted((a, b) for a, b in _edges() if _layer(b) > _layer(a) and (a, b) not in EXCEPTIONS)
    assert not upward, "\n".join(f"{a} imports {b}" for a, b in upward)


def test_exceptions_are_still_needed() -> None:
    """An exception nobody needs any more is removed, not kept as a standing permission."""
    assert EXCEPTIONS <= set(_edges())


@pytest.mark.parametrize("package", ["edge_resnet.runtime", "edge_resnet.bench"])
def test_device_side_imports_no_torch_side_stage(package: str) -> None:
    """Module-level imports of the runtime and the benchmark reach no torch-side stage and no torch."""
    modules = project()
    entries = [m for m in modules if m.startswith(package)]
    reached = closure(entries)
    assert not sorted(m for m in reached if m.startswith(TORCH_SIDE))
    for m in reached:
        assert not {i.split(".")[0] for i in modules[m].top_level} & {"torch", "torchvision"}, m


def test_runtime_defers_no_torch_either() -> None:
    """Not even inside a function: the runtime runs where torch is not installed."""
    for name, m in project().items():
        if name.startswith("edge_resnet.runtime"):
            assert not {i.split(".")[0] for i in m.deferred} & {"torch", "torchvision"}, name
            assert not [i for i in m.deferred if i.startswith(TORCH_SIDE)], name
