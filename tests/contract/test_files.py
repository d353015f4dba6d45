"""The run directory's file table (edge_resnet/contract/files.py) and the one rule for --model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_resnet.contract import BENCH_ROWS
from edge_resnet.contract.files import BY_CHOICE, BY_ROLE, FILES, RUN_FILES, checkpoint_reference


def test_every_name_in_the_table_names_one_file() -> None:
    for attr in ("role", "name", "choice", "report_key"):
        values = [getattr(f, attr) for f in RUN_FILES if getattr(f, attr) is not None]
        assert len(values) == len(set(values)), attr
    assert FILES == {f.role: f.name for f in RUN_FILES}
    # an INT8 target is an INT8 model; the runtime's choices are model files
    assert all(f.precision == "int8" for f in RUN_FILES if f.target is not None)
    assert all(BY_CHOICE[c].name.endswith(".onnx") for c in BY_CHOICE)


def test_benchmark_rows_measure_files_of_the_table() -> None:
    for key, row in BENCH_ROWS.items():
        if row.role is None:  # the engines
            assert row.accuracy_key is None and "TensorRT" in row.export_hint
            continue
        assert BY_ROLE[row.role].report_key == row.accuracy_key, key
        assert row.precision == BY_ROLE[row.role].precision, key


def test_manifest_entry_carries_role_precision_and_target() -> None:
    assert BY_ROLE["cpu"].entry("ab" * 32, 10) == {"sha256": "ab" * 32, "bytes": 10, "role": "cpu",
                                                    "precision": "int8", "target": "cpu"}
    assert BY_ROLE["calib"].entry("cd" * 32, 3) == {"sha256": "cd" * 32, "bytes": 3, "role": "calib"}


def test_model_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train, eval and export read --model by this one rule (they disagreed on a run directory)."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    assert checkpoint_reference(str(run)) == run / "model.pt"
    assert checkpoint_reference("runs/x") == Path("runs/x/model.pt")
    assert checkpoint_reference("resnet20") is None
    assert checkpoint_reference("missing.pt") == Path("missing.pt")
    assert checkpoint_reference("elsewhere/weights") == Path("elsewhere/weights")
    (tmp_path / "weights").write_bytes(b"x")
    assert checkpoint_reference("weights") == Path("weights")
