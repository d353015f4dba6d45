"""The torch-free environment record: nvpmodel output, clock state from a sysfs tree, versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from edge_resnet.environment import clock_state, describe, library_versions, parse_nvpmodel


def test_parse_nvpmodel() -> None:
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == "MAXN (mode 0)"
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2\n") == "15W (mode 2)"
    assert parse_nvpmodel("NV Power Mode: MODE_30W_ALL\n") == "MODE_30W_ALL"
    assert parse_nvpmodel("nvpmodel: command failed\n") is None


def _sysfs(root: Path, cpus: list[tuple[int, int]], gpu: tuple[int, int] | None) -> None:
    for i, (lo, hi) in enumerate(cpus):
        d = root / f"devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(f"{lo}\n")
        (d / "scaling_max_freq").write_text(f"{hi}\n")
    if gpu is not None:
        d = root / "devices/platform/17000000.gpu/devfreq/17000000.gpu"
        d.mkdir(parents=True)
        (d / "min_freq").write_text(f"{gpu[0]}\n")
        (d / "max_freq").write_text(f"{gpu[1]}\n")


def test_clock_state_locked_only_when_every_min_equals_its_max(tmp_path: Path) -> None:
    # what jetson_clocks leaves behind: min raised to max on every core and on the GPU
    _sysfs(tmp_path / "a", [(1510400, 1510400)] * 4, (1300500000, 1300500000))
    state = clock_state(str(tmp_path / "a"))
    assert state["locked"] is True and state["cpu"] == {"cores": 4, "locked": True}
    assert state["gpu"] == {"min_hz": 1300500000, "max_hz": 1300500000, "locked": True}
    # one core still scaling
    _sysfs(tmp_path / "b", [(1510400, 1510400), (115200, 1510400)], (1300500000, 1300500000))
    assert clock_state(str(tmp_path / "b"))["locked"] is False
    # GPU still scaling
    _sysfs(tmp_path / "c", [(1510400, 1510400)], (306000000, 1300500000))
    assert clock_state(str(tmp_path / "c"))["locked"] is False
    # nothing readable: unknown, not "unlocked"
    assert clock_state(str(tmp_path / "none")) == {"locked": None, "cpu": None, "gpu": None}


def test_describe_records_the_installed_versions() -> None:
    env = describe()
    assert env["libraries"]["numpy"] == np.__version__
    assert env["libraries"]["onnxruntime"] == onnxruntime.__version__
    assert env["cpu"] and env["cpu_count"] >= 1 and env["python"]
    assert "definitely-not-a-package" not in library_versions(("numpy", "definitely-not-a-package"))


def test_clock_state_finds_the_orin_gpu_under_class_devfreq(tmp_path: Path) -> None:
    """JetPack 5/6 name the Orin GPU's devfreq node 17000000.ga10b / 17000000.gpu under /sys/class/devfreq;
    other devfreq devices there (e.g. the EMC) are not the GPU."""
    for node, (lo, hi) in (("17000000.ga10b", (306000000, 1300500000)), ("emc", (204000000, 204000000))):
        d = tmp_path / "class" / "devfreq" / node
        d.mkdir(parents=True)
        (d / "min_freq").write_text(f"{lo}\n")
        (d / "max_freq").write_text(f"{hi}\n")
    state = clock_state(str(tmp_path))
    assert state["gpu"] == {"min_hz": 306000000, "max_hz": 1300500000, "locked": False}
    assert state["locked"] is False
