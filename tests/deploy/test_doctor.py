"""``edge-resnet doctor``: known answers on three recorded Jetsons (tests/fixtures/jetson: their
/etc/nv_tegra_release, device tree, sysfs clocks and recorded nvpmodel/dpkg/gst-inspect outputs), the
pin rule and the TensorRT/DLA rules judged on facts, and the command itself on this machine (not a
Jetson), with --json and --report on the committed bundle. Nothing is mocked: a recorded board is read
from its files, and this machine's ONNX Runtime, OpenCV and disk are the real ones.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from edge_resnet.export.boards import ADD_ON_SPANS, ROW_SPANS, dla_cores, jetpack_for_l4t, jetpack_row, tensorrt_releases
from edge_resnet.export.jetson import JETPACKS

from edge_resnet.deploy.doctor import Facts, diagnose, gather
from edge_resnet.environment import board
from tests.export.util import one_line_error, run_cli
from tests.fs import unwritable_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BOARDS = FIXTURES / "jetson"
BUNDLE = FIXTURES / "bundle" / "resnet8-narrow-bundle"

# what each recorded board's files say: (folder, model, L4T, JetPack, its row, DLA cores, driver CUDA)
RECORDED = [
    ("agx-orin-jp51", "NVIDIA Jetson AGX Orin Developer Kit", "35.4.1", "5.1.2", "5.1.x", 2, 11040),
    ("orin-nx-jp62", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "36.4.3", "6.2", "6.1/6.2", 2, 12060),
    ("thor-jp70", "NVIDIA Jetson AGX Thor Developer Kit", "38.2.0", "7.0", "7.0/7.1", 0, 13000),
]


def _checks(diagnosis) -> dict:
    return {c.name: c for c in diagnosis.checks}


def _works(diagnosis) -> dict:
    return {c.name.split(" (")[0]: c for c in diagnosis.capabilities}


def _facts(name: str, **changes) -> Facts:
    """A recorded board's facts with this machine's packages, then ``changes`` (what another install would show)."""
    return dataclasses.replace(gather(str(BOARDS / name)), **changes)


@pytest.mark.parametrize(("name", "model", "l4t", "jetpack", "row", "dla", "driver"), RECORDED)
def test_recorded_boards_known_answers(name: str, model: str, l4t: str, jetpack: str, row: str, dla: int,
                                       driver: int) -> None:
    b = board(str(BOARDS / name))
    assert b is not None and b["model"] == model and b["l4t"] == l4t
    assert jetpack_for_l4t(l4t) == jetpack  # the L4T table alone (thor-jp70 has no nvidia-jetpack package)
    facts = gather(str(BOARDS / name))
    assert facts.driver_cuda == driver  # a recorded board's driver: the one its L4T release ships
    checks = _checks(diagnose(facts))
    assert checks["board"].status == "ok" and model in checks["board"].found
    assert checks["jetpack"].status == "ok"
    assert checks["jetpack"].found.startswith(f"JetPack {jetpack} (L4T R{l4t}")
    assert jetpack_row(jetpack, l4t).release == row
    assert dla_cores(b["compatible"], b["model"]) == dla
    assert checks["dla"].status == "ok" and (f"{dla} DLA core(s)" if dla else "none") in checks["dla"].found


def test_recorded_power_and_clocks() -> None:
    orin = _checks(diagnose(gather(str(BOARDS / "agx-orin-jp51"))))
    assert (orin["power mode"].status, orin["power mode"].found) == ("ok", "MAXN (mode 0)")
    assert orin["clocks"].status == "ok" and "CPU locked, GPU locked" in orin["clocks"].found
    nx = _checks(diagnose(gather(str(BOARDS / "orin-nx-jp62"))))
    assert nx["power mode"].status == "warn" and nx["power mode"].found.startswith("15W (mode 2)")
    assert "nvpmodel -m" in nx["power mode"].fix
    assert nx["clocks"].status == "warn" and nx["clocks"].fix == "sudo jetson_clocks before benchmarking"


def test_recorded_camera_sources() -> None:
    """The Orin NX recording has /dev/video0 and nvarguscamerasrc; Thor's has neither."""
    nx = gather(str(BOARDS / "orin-nx-jp62"))
    assert nx.nvarguscamerasrc is True and [Path(c).name for c in nx.cameras] == ["video0"]
    thor = diagnose(gather(str(BOARDS / "thor-jp70")))
    assert _checks(thor)["gstreamer"].status == "warn" and "nvidia-l4t-gstreamer" in _checks(thor)["gstreamer"].fix
    assert not _works(thor)["camera: CSI"].works
    # with JetPack's OpenCV (GStreamer) and the recorded nvarguscamerasrc, CSI works on the Orin NX
    gst = diagnose(dataclasses.replace(nx, opencv="4.8.0", opencv_io={"GStreamer": True, "FFMPEG": False,
                                                                     "V4L": True}))
    assert _works(gst)["camera: CSI"].works and _works(gst)["camera: USB"].why == "/dev/video0"


def test_l4t_and_jetpack_rows() -> None:
    assert [jetpack_for_l4t(v) for v in ("35.2.1", "36.4.4", "38.4.0", "39.2.1", "36.9.9", "32.7.4")] == \
        ["5.1", "6.2.1", "7.1", "7.2.1", "6.x", "4.x"]
    cases = [("5.1.2", None, "5.1.x"), ("6.0", None, "6.0"), ("6.1", None, "6.1/6.2"), ("6.2.1", None, "6.1/6.2"),
             ("7.1", None, "7.0/7.1"), ("7.2.2", None, "7.2"), ("7.2.1", None, "7.2"), ("5.0", None, None),
             ("4.x", "32.7.4", None), ("6.x", "36.9.9", "6.1/6.2"), ("6.x", "36.3.5", "6.0"), ("7.x", "38.9.0", "7.0/7.1"),
             ("7.x", "39.9.0", "7.2")]
    for jetpack, l4t, release in cases:
        row = jetpack_row(jetpack, l4t)
        assert (row.release if row else None) == release, (jetpack, l4t)
    assert set(ROW_SPANS) | set(ADD_ON_SPANS) == {j.release for j in JETPACKS}
    # JetPack 7.2 ships TensorRT 10.16.2; from 7.2.2 NVIDIA's 11.4.1 package may be installed on top
    assert tensorrt_releases("7.2") == ("10.16.2",) and tensorrt_releases("7.2.2") == ("10.16.2", "11.4.1")
    assert tensorrt_releases("6.2") == ("10.3.0",) and tensorrt_releases("4.6") == ()


def test_dla_cores_by_module_and_name() -> None:
    assert dla_cores(["nvidia,p3768-0000+p3767-0001", "nvidia,p3767-0001", "nvidia,tegra234"], None) == 1
    assert dla_cores(["nvidia,p3768-0000+p3767-0005"], "NVIDIA Jetson Orin Nano Developer Kit") == 0
    assert dla_cores([], "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super") == 0
    assert dla_cores([], "NVIDIA Jetson AGX Xavier") == 2
    assert dla_cores([], "NVIDIA Jetson Orin NX") is None  # 8GB has one, 16GB two: not by name


@pytest.mark.parametrize(("board_name", "bindings", "status"), [
    ("orin-nx-jp62", "12.6.2", "ok"), ("orin-nx-jp62", "13.0.1", "fail"), ("orin-nx-jp62", "11.8.0", "warn"),
    ("orin-nx-jp62", None, "fail"), ("agx-orin-jp51", "12.2.0", "fail"), ("thor-jp70", "13.0.1", "ok")])
def test_cuda_python_pin_rule(board_name: str, bindings: str | None, status: str) -> None:
    """cuda-python's CUDA major must not be newer than the driver's (cuda-python 13 on JetPack 6 fails at the
    first CUDA call); the fix names the pin of the board's JetPack extra."""
    check = _checks(diagnose(_facts(board_name, cuda_python=bindings)))["cuda-python"]
    assert check.status == status, check
    release = next(r[4] for r in RECORDED if r[0] == board_name)
    row = next(j for j in JETPACKS if j.release == release)
    if status != "ok":
        assert row.cuda_python in check.fix and row.extra in check.fix


def test_cuda_python_off_a_jetson_is_not_judged_without_a_driver() -> None:
    facts = dataclasses.replace(gather("/"), board=None, driver_cuda=None, cuda_python="13.0.1")
    assert _checks(diagnose(facts))["cuda-python"].status == "n/a"


def test_tensorrt_and_what_it_makes_possible() -> None:
    jp62 = diagnose(_facts("orin-nx-jp62", tensorrt="10.3.0.30", cuda_python="12.6.2"))
    assert _checks(jp62)["tensorrt"].status == "ok" and "JetPack 6.1/6.2's" in _checks(jp62)["tensorrt"].found
    works = _works(jp62)
    assert works["GPU engines"].works and works["INT8 explicit"].works and works["INT8 implicit"].works
    assert works["DLA engines"].works and works["DLA engines"].why.startswith("2 core(s)")
    # a PyPI wheel on the same board: not JetPack's, and 10.13 has no DLA
    pypi = diagnose(_facts("orin-nx-jp62", tensorrt="10.13.3.9", cuda_python="12.6.2"))
    assert _checks(pypi)["tensorrt"].status == "warn" and "pip uninstall tensorrt" in _checks(pypi)["tensorrt"].fix
    assert not _works(pypi)["DLA engines"].works and "10.7 was the last" in _works(pypi)["DLA engines"].why
    # Thor: no DLA whatever the TensorRT; TensorRT 11 has no implicit INT8
    thor = _works(diagnose(_facts("thor-jp70", tensorrt="11.4.1", cuda_python="13.0.1")))
    assert not thor["DLA engines"].works and thor["DLA engines"].why == "this board has no DLA"
    assert thor["INT8 explicit"].works and not thor["INT8 implicit"].works
    # missing bindings on a Jetson: a failed check whose fix is JetPack's package, and no engines
    missing = diagnose(_facts("agx-orin-jp51", tensorrt=None, tensorrt_error="ModuleNotFoundError: tensorrt"))
    assert _checks(missing)["tensorrt"].status == "fail" and missing.exit_code == 1
    assert "sudo apt install python3-libnvinfer" in _checks(missing)["tensorrt"].fix
    assert "8.5.2" in _checks(missing)["tensorrt"].fix and not _works(missing)["GPU engines"].works


def test_python_must_be_the_jetpack_one() -> None:
    check = _checks(diagnose(_facts("agx-orin-jp51", python="3.10.12")))["python"]
    assert check.status == "warn" and "Python 3.8" in check.found and "/usr/bin/python3" in check.fix
    assert _checks(diagnose(_facts("agx-orin-jp51", python="3.8.10")))["python"].status == "ok"


def test_doctor_here_says_not_a_jetson_and_checks_onnxruntime() -> None:
    rc, out, err = run_cli("doctor")
    lines = out.splitlines()
    assert lines[0].endswith(": not a Jetson")
    status = {ln.split()[1]: ln.split()[0] for ln in lines[1:13]}
    assert status["board"] == "n/a" and status["jetpack"] == "n/a" and status["dla"] == "n/a"
    assert status["onnxruntime"] == "ok" and status["python"] == "ok" and status["disk"] == "ok"
    assert "CPUExecutionProvider" in next(ln for ln in lines if ln.startswith("ok    onnxruntime"))
    assert "what will work here:" in lines and lines[-1].endswith("nothing failed (exit 0)")
    assert rc == 0 and err == ""


def test_doctor_json() -> None:
    rc, out, _ = run_cli("doctor", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["format"] == "edge-resnet/doctor-1" and doc["jetson"] is False and doc["passed"]
    assert [c["name"] for c in doc["checks"]] == ["board", "jetpack", "python", "tensorrt", "cuda-python",
                                                  "onnxruntime", "dla", "opencv", "gstreamer", "power mode",
                                                  "clocks", "disk"]
    assert all(c["status"] in ("ok", "warn", "fail", "n/a") for c in doc["checks"])
    assert doc["facts"]["providers"] and doc["counts"]["fail"] == 0


def test_doctor_on_a_recorded_board() -> None:
    rc, out, _ = run_cli("doctor", "--root", str(BOARDS / "orin-nx-jp62"))
    assert "a recorded board" in out.splitlines()[0]
    assert "ok    jetpack        JetPack 6.2 (L4T R36.4.3; nvidia-jetpack package)" in out
    assert rc == (1 if "\nfail " in "\n" + out else 0)


@pytest.mark.parametrize("argv", [["--bundle", "x"], ["--clip", "x.mp4"], ["--root", "no/such/folder"]])
def test_doctor_bad_options(argv: list[str]) -> None:
    one_line_error(*run_cli("doctor", *argv))


def _bundle_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "resnet8-narrow-bundle"
    shutil.copytree(BUNDLE, folder)
    return folder


@pytest.mark.slow
def test_report_runs_every_step_that_can_run_here(tmp_path: Path) -> None:
    """No TensorRT here: build-engine is "not possible here"; verify (ONNX Runtime), bench and the camera on
    a clip made from the validation images run for real."""
    bundle = _bundle_copy(tmp_path)
    report = tmp_path / "out" / "report.md"
    rc, out, err = run_cli("doctor", "--report", str(report), "--bundle", str(bundle), "--seconds", "3")
    assert rc == 0, (out, err)
    text = report.read_text()
    rows = {ln.split(" | ")[0].strip("| "): ln.split(" | ")[1] for ln in text.splitlines()
            if ln.startswith("| ") and " | " in ln and not ln.startswith("| step")}
    assert rows["build-engine"] == "not possible here" and "no TensorRT" in text
    assert rows["verify"] == "passed" and rows["bench"] == "passed" and rows["camera"] == "passed"
    assert "model.int8.onnx on onnxruntime" in text and "ONNX Runtime INT8 (CPU target)" in text
    assert "top-1 on the classified frames against the clip's labels" in text
    assert "```\nn/a   board          not a Jetson" in text
    assert out.splitlines()[-1] == f"wrote {report}"
    assert (bundle / "device_report.json").is_file()  # what verify writes into the bundle, as the command does


@pytest.mark.parametrize("case", ["under a file", "unwritable folder", "missing bundle", "not a bundle"])
def test_report_bad_input_writes_nothing(tmp_path: Path, case: str) -> None:
    bundle = _bundle_copy(tmp_path)
    before = sorted(p.name for p in bundle.iterdir())
    (tmp_path / "a-file").write_text("x")
    report, target, fragment = tmp_path / "report.md", str(bundle), "--report"
    if case == "under a file":
        report = tmp_path / "a-file" / "report.md"
    elif case == "unwritable folder":
        report = unwritable_dir() / "report.md"
    elif case == "missing bundle":
        target, fragment = str(tmp_path / "nowhere-bundle"), "no bundle at"
    else:
        target, fragment = str(tmp_path), "manifest"
    one_line_error(*run_cli("doctor", "--report", str(report), "--bundle", target), fragment)
    assert not report.exists() and sorted(p.name for p in bundle.iterdir()) == before
