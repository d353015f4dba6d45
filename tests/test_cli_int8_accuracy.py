"""`edge-resnet export --int8` with the mixed-precision fallback, and `edge-resnet sensitivity`, through ``cli.main``.

A calibration with one range cut to 2% (``layer2.0.relu1``, read only by ``layer2.0.conv2``) is pinned
with ``--calib``: INT8 then misses the tolerance, the fallback must keep exactly ``layer2.0.conv2`` in
float, the TensorRT file must have no Q/DQ on it, and the lint must accept it because the manifest
lists it.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from edge_resnet.calibration.files import load_calibration, save_calibration

import cli
from edge_resnet.contract import EXIT_TOLERANCE
from tests.test_cli_export import FAST, user_error
from tests.export.util import run_cli
from tests.tiny_model import listing, tiny_checkpoint

# the slow lane: trains and exports models where INT8 loses accuracy (`pytest -m "not slow"` leaves them out)
pytestmark = pytest.mark.slow

SABOTAGED, SENSITIVE = "layer2.0.relu1", "layer2.0.conv2"


def _main(argv: list) -> tuple[int, str, str]:
    return run_cli(*map(str, argv))


@pytest.fixture(scope="module")
def bad_calib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, a calib.json of it with one range sabotaged)."""
    ckpt = tiny_checkpoint(tmp_path_factory)
    base = tmp_path_factory.mktemp("int8_accuracy")
    rc, out, err = _main(["export", "--model", ckpt, "--int8", "--calib-method", "max", "--target", "tensorrt",
                          *FAST, "--output", base / "clean"])
    assert rc == 0, out[-2000:] + err[-2000:]
    calib = load_calibration(base / "clean" / "calib.json")
    calib.amax[SABOTAGED] *= 0.02
    save_calibration(base / "bad.json", calib)
    return ckpt, base / "bad.json"


@pytest.fixture(scope="module")
def fell_back(bad_calib: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    ckpt, bad = bad_calib
    out_dir = tmp_path_factory.mktemp("fell_back") / "run"
    rc, out, err = _main(["export", "--model", ckpt, "--int8", "--calib", bad, *FAST, "--output", out_dir])
    assert rc == 0, out[-2000:] + err[-2000:]
    return out_dir, out


def test_fallback_keeps_the_sensitive_layer_float(fell_back: tuple[Path, str]) -> None:
    run, printed = fell_back
    assert f"kept in float: fc (classifier), {SENSITIVE} (fallback)" in printed
    assert "mixed-precision fallback on digits val" in printed and "within 1 top-1 points with 1 layer" in printed
    manifest = json.loads((run / "manifest.json").read_text())
    for name in ("model.int8.onnx", "model.int8.cpu.onnx"):
        assert set(manifest["int8"]["models"][name]["float_layers"]) == {"fc", SENSITIVE}
    assert manifest["int8"]["models"]["model.int8.onnx"]["float_layers"][SENSITIVE]["reason"] == "fallback"
    assert manifest["int8"]["fallback"]["float_layers"] == [SENSITIVE]
    assert "## Mixed precision" in (run / "report.md").read_text()
    for name in ("model.int8.onnx", "model.int8.cpu.onnx"):
        nodes = {n.name: n for n in onnx.load(str(run / name)).graph.node}
        conv = nodes[SENSITIVE]
        assert conv.input[0] == SABOTAGED and conv.input[1] == f"{SENSITIVE}.weight", name  # no Q/DQ at all
        assert f"{SABOTAGED}_quantize" not in nodes, name


def test_lint_accepts_exactly_the_manifest_float_layers(fell_back: tuple[Path, str]) -> None:
    run, _ = fell_back
    rc, out, _ = _main(["lint", run / "model.int8.onnx"])
    assert rc == 0 and f"{SENSITIVE}: warning [float-layer]" in out and "fc: warning [float-layer]" in out
    assert "as manifest.json lists" in out
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["int8"]["models"]["model.int8.onnx"]["float_layers"][SENSITIVE]
    (run / "manifest.json").write_text(json.dumps(manifest))
    try:
        rc, out, err = _main(["lint", run / "model.int8.onnx"])
        assert rc == 1 and f"{SENSITIVE}: [float-unlisted]" in out and "1 violation(s)" in err
    finally:
        manifest["int8"]["models"]["model.int8.onnx"]["float_layers"][SENSITIVE] = {}
        (run / "manifest.json").write_text(json.dumps(manifest))


def test_without_fallback_the_gate_fails(bad_calib: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, bad = bad_calib
    rc, out, err = _main(["export", "--model", ckpt, "--int8", "--calib", bad, "--fallback-max", "0", *FAST,
                          "--output", tmp_path / "run"])
    assert rc == EXIT_TOLERANCE, out[-2000:] + err[-2000:]
    assert "kept in float: fc (classifier)" in out and SENSITIVE not in out.split("kept in float:")[1].splitlines()[0]
    assert (tmp_path / "run" / "report.json").exists()


def test_sensitivity_command(fell_back: tuple[Path, str]) -> None:
    run, _ = fell_back
    rc, out, err = _main(["sensitivity", run, "--images", "100"])
    assert rc == 0, out[-2000:] + err[-2000:]
    assert "Per-layer INT8 sensitivity (tensorrt placement, 100 held-out images of digits val" in out
    assert out.split("helps most for: ")[1].startswith(SENSITIVE)
    data = json.loads((run / "sensitivity.json").read_text())
    assert data["ranking"][0] == SENSITIVE and data["images"] == 100
    assert (run / "sensitivity.md").exists()


def test_sensitivity_needs_a_calibrated_run(bad_calib: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ckpt, _ = bad_calib
    (tmp_path / "model.pt").write_bytes(ckpt.read_bytes())
    user_error(cli.main(["sensitivity", str(tmp_path)]), capsys.readouterr(), "no calib.json",
               "edge-resnet export --int8")
    user_error(cli.main(["sensitivity", str(tmp_path / "nope")]), capsys.readouterr(), "no model.pt")


@pytest.mark.parametrize(("args", "fragment"), [(["--float-layers", "layer9.conv1"], "--float-layers: not a quantizable"),
                                                (["--fallback-max", "-1"], "--fallback-max must be >= 0, got -1")])
def test_bad_mixed_precision_options(args: list[str], fragment: str, bad_calib: tuple[Path, Path], tmp_path: Path,
                                     capsys) -> None:
    ckpt, _ = bad_calib
    out = tmp_path / "run"
    user_error(cli.main(["export", "--model", str(ckpt), "--int8", *args, *FAST, "--output", str(out)]),
               capsys.readouterr(), fragment)
    assert listing(out) == {}
