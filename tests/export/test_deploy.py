"""The deployment jobs end to end (edge_resnet.deploy, `edge-resnet bundle / verify / build-engine`), with
ONNX Runtime standing in for the engine: the same validation code path a TensorRT engine goes through.

The validation-set comparison (edge_resnet.runtime.validate.check_backend) is checked against an
independent numpy computation, and against deliberately broken models: real ONNX Runtime runs of a
damaged copy of the model, or a wrapper that changes a real backend's logits for chosen samples.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edge_resnet.deploy import REPORT, build_and_check, check_model, open_bundle, verify_engine
from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.backends import OnnxRuntimeBackend
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.contract.metrics import sqnr_db
from edge_resnet.runtime.validate import ValidationSet, check_backend
from edge_resnet.export.build_plan import BuildOptions, plan_build
from edge_resnet.export.engine import engine_key
from edge_resnet.contract.engine import System, read_sidecar, sidecar_path, write_sidecar
from tests.export.util import entries, one_line_error, run_cli, tree
from tests.helpers import BLOCK_TORCH

REPO = Path(__file__).resolve().parents[2]
HAS_TRT = __import__("importlib.util").util.find_spec("tensorrt") is not None
ORIN = System(gpu="NVIDIA Jetson AGX Orin Developer Kit", compute_capability="8.7", tensorrt="10.3.0",
              jetpack="6.2", l4t="36.4.3")


def _normalize(pixels: np.ndarray, spec: dict) -> np.ndarray:
    x = np.transpose(pixels, (0, 3, 1, 2)).astype(np.float32) * np.float32(1.0 / 255)
    return (x - np.asarray(spec["mean"], np.float32)[:, None, None]) / np.asarray(spec["std"], np.float32)[:, None, None]


def _independent(bundle: Path, onnx_path: Path) -> dict[str, float]:
    """top-1, FP32 top-1, drop, agreement, SQNR and max |diff| computed here with numpy and a plain ORT session."""
    m = json.loads((bundle / "manifest.json").read_text())
    with np.load(bundle / "validation.npz") as z:
        pixels, labels, ref = z["pixels"], z["labels"], z["logits"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": _normalize(pixels, m["preprocessing"])})[0]
    top1 = float(np.mean(logits.argmax(1) == labels))
    fp32_top1 = float(np.mean(ref.argmax(1) == labels))
    noise = float(np.sum((ref.astype(np.float64) - logits) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return {"top1": top1, "fp32_top1": fp32_top1, "drop_points": 100 * (fp32_top1 - top1),
            "agreement": float(np.mean(logits.argmax(1) == ref.argmax(1))),
            "sqnr_db": math.inf if noise == 0 else 10 * math.log10(signal / noise),
            "max_abs_diff": float(np.max(np.abs(logits - ref)))}


def _broken_copy(src: Path, dest: Path) -> Path:
    """model.fp32.onnx with the classifier's rows rotated by one class: a real model, confidently wrong."""
    model = onnx.load(str(src))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    for name in gemm.input[1:]:
        init = next(i for i in model.graph.initializer if i.name == name)
        init.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(init), 1, axis=0), name))
    onnx.save(model, str(dest))
    return dest


# ---------------------------------------------------------------- the validation comparison


@pytest.mark.parametrize("model", ["model.int8.onnx", "model.fp32.onnx", "model.fp16.onnx", "model.int8.cpu.onnx"])
def test_bundle_models_pass_and_numbers_match_numpy(fresh_bundle: Path, model: str) -> None:
    check = check_model(fresh_bundle, model, providers=["CPUExecutionProvider"])
    r = check.result
    assert r.passed, r.failures
    expected = _independent(fresh_bundle, fresh_bundle / model)
    assert (r.top1, r.fp32_top1, r.agreement) == (expected["top1"], expected["fp32_top1"], expected["agreement"])
    assert r.drop_points == pytest.approx(expected["drop_points"], abs=1e-9)
    assert r.sqnr_db == pytest.approx(expected["sqnr_db"], abs=0.01)
    assert r.max_abs_diff == pytest.approx(expected["max_abs_diff"], rel=1e-3, abs=1e-5)
    assert r.samples == 256 and r.model == model and r.backend == "onnxruntime (CPUExecutionProvider)"
    assert r.precision == {"model.fp32.onnx": "fp32", "model.fp16.onnx": "fp16"}.get(model, "int8")
    assert r.min_agreement == {"fp32": 0.99, "fp16": 0.99, "int8": 0.98}[r.precision] and r.max_drop_points == 1.0
    if model == "model.fp32.onnx":
        assert r.agreement == 1.0 and r.sqnr_db > 80  # the very model that made the reference logits
    report = json.loads((fresh_bundle / REPORT).read_text())
    assert report["passed"] is True and report["validation"] == json.loads(json.dumps(r.to_dict()))
    assert report["backend"] == {"kind": "onnxruntime", "providers": ["CPUExecutionProvider"], "model": model}


class _Flip:
    """A real backend whose logits get their top-2 swapped on the chosen samples (by index in the set)."""

    def __init__(self, inner: OnnxRuntimeBackend, flip: set[int], batch_size: int) -> None:
        self.inner, self.flip, self.batch_size, self.seen = inner, flip, batch_size, 0
        self.name = "flipper"

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.run(batch).copy()
        for row in range(len(out)):
            if self.seen + row in self.flip:
                a, b = np.argsort(out[row])[-2:]
                out[row, [a, b]] = out[row, [b, a]]
        self.seen += len(out)
        return out


def test_tolerance_boundaries_with_a_logit_changing_wrapper(bundle_src: Path) -> None:
    """Flipping k samples that FP32 gets right costs exactly k/N of agreement and 100k/N points of top-1:
    2 of 256 (0.78 points) passes a 1-point limit, 3 (1.17 points) fails on the drop alone; the agreement
    limit fails on its own when it is set above 1 - k/N."""
    manifest = open_bundle(bundle_src)
    vs = ValidationSet.load(bundle_src / "validation.npz")
    pre = Preprocessor(manifest.preprocessing)
    inner = OnnxRuntimeBackend(bundle_src / "model.fp32.onnx", providers=["CPUExecutionProvider"])
    right = [i for i in range(len(vs)) if vs.logits[i].argmax() == vs.labels[i]]

    def check(k: int, **kw):
        return check_backend(_Flip(inner, set(right[5:5 + k]), 32), vs, pre, model="m", precision="int8", **kw)

    base = check(0)
    assert base.passed and base.agreement == 1.0 and base.drop_points == 0.0
    r = check(2)
    assert r.passed and r.agreement == 1 - 2 / 256 and r.drop_points == pytest.approx(100 * 2 / 256)
    r = check(3)
    assert r.agreement == 1 - 3 / 256 and r.drop_points == pytest.approx(100 * 3 / 256)
    assert r.failures == ["top-1 drops 1.17 points (limit 1)"]
    r = check(3, max_drop_points=2.0, min_agreement=0.99)
    assert r.failures == ["top-1 agrees with FP32 on 98.83% (needs 99.0%)"]
    r = check(3, max_drop_points=2.0)
    assert r.passed  # int8's default agreement minimum is 98%
    # wrong-to-right flips raise top-1 above FP32 (a negative drop) yet still cost agreement
    wrong = [i for i in range(len(vs)) if vs.logits[i].argmax() != vs.labels[i]]
    fixed = [i for i in wrong if np.argsort(vs.logits[i])[-2] == vs.labels[i]]
    if fixed:
        r = check_backend(_Flip(inner, set(fixed), 32), vs, pre, model="m", precision="int8")
        assert r.drop_points == pytest.approx(-100 * len(fixed) / 256) and r.agreement == 1 - len(fixed) / 256
    assert "agreement 98.83% (min 99.0%)" in check(3, max_drop_points=2.0, min_agreement=0.99).summary()


def test_broken_model_fails_with_reasons(fresh_bundle: Path, tmp_path: Path) -> None:
    broken = _broken_copy(fresh_bundle / "model.fp32.onnx", tmp_path / "broken.onnx")
    check = check_model(fresh_bundle, str(broken), providers=["CPUExecutionProvider"])
    r = check.result
    expected = _independent(fresh_bundle, broken)
    assert not r.passed and r.agreement == expected["agreement"] < 0.2 and r.top1 == expected["top1"]
    assert r.failures == [f"top-1 drops {expected['drop_points']:.2f} points (limit 1)",
                          f"top-1 agrees with FP32 on {100 * expected['agreement']:.2f}% (needs 99.0%)"]
    assert r.sqnr_db == pytest.approx(expected["sqnr_db"], abs=0.01) and r.sqnr_db < 5
    assert sqnr_db(np.ones(3), np.ones(3)) == math.inf


def test_validation_set_shape_mismatches_are_errors(fresh_bundle: Path) -> None:
    manifest = open_bundle(fresh_bundle)
    vs = ValidationSet.load(fresh_bundle / "validation.npz")
    backend = OnnxRuntimeBackend(fresh_bundle / "model.fp32.onnx", providers=["CPUExecutionProvider"])
    with pytest.raises(EdgeResNetError, match="the bundle is inconsistent"):
        check_backend(backend, replace(vs, pixels=np.zeros((len(vs), 16, 16, 3), np.uint8)),
                      Preprocessor(manifest.preprocessing), model="m", precision="fp32")
    with pytest.raises(EdgeResNetError, match=r"returns logits \[256, 10\], the validation set holds \[256, 5\]"):
        check_backend(backend, replace(vs, logits=vs.logits[:, :5]), Preprocessor(manifest.preprocessing),
                      model="m", precision="fp32")
    (fresh_bundle / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(EdgeResNetError, match="cannot read the validation set"):
        ValidationSet.load(fresh_bundle / "bad.npz")
    np.savez(fresh_bundle / "wrong.npz", pixels=vs.pixels.astype(np.float32), labels=vs.labels, logits=vs.logits)
    with pytest.raises(EdgeResNetError, match="is not a validation set"):
        ValidationSet.load(fresh_bundle / "wrong.npz")


# ---------------------------------------------------------------- the CLI, end to end


def test_bundle_unpack_verify_end_to_end(engine_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-resnet bundle` on the tiny run; the .tar.gz unpacked into a fresh folder with safe_extract;
    `edge-resnet verify --bundle <unpacked> --onnx model.int8.onnx` passes and writes device_report.json."""
    from edge_resnet.export.bundle import safe_extract

    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli("bundle", str(engine_run), "--output", str(tmp_path / "ws" / "resnet8-jetson"),
                           "--samples", "120", "--dla", "0")
    assert rc == 0, err
    folder, archive = tmp_path / "ws" / "resnet8-jetson", tmp_path / "ws" / "resnet8-jetson.tar.gz"
    lines = out.splitlines()
    assert lines[0].startswith(f"bundle {folder} (build_engine.sh, calib.cache, calib.trt100300.cache, ")
    assert lines[1].startswith(f"archive {archive} (") and "sha256 in resnet8-jetson.tar.gz.sha256" in lines[1]
    assert lines[2].startswith("validation set: 120 test images, FP32 top-1 ")
    assert "edge-resnet build-engine resnet8-jetson" in lines[3]
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == [
        "resnet8-jetson", "resnet8-jetson.tar.gz", "resnet8-jetson.tar.gz.sha256"]
    assert 'DLA_CORE="${2:-0}"' in (folder / "build_engine.sh").read_text()  # --dla 0 is the script's default

    unpacked = safe_extract(archive, tmp_path / "jetson")
    assert tree(unpacked) == tree(folder)
    rc, out, err = run_cli("verify", "--bundle", str(unpacked), "--onnx", "model.int8.onnx")
    assert rc == 0, err
    expected = _independent(unpacked, unpacked / "model.int8.onnx")
    summary = out.splitlines()[0]
    assert summary.startswith(f"model.int8.onnx on onnxruntime (CPUExecutionProvider): top-1 "
                              f"{100 * expected['top1']:.2f}% vs FP32 {100 * expected['fp32_top1']:.2f}% "
                              f"(drop {expected['drop_points']:+.2f} points, limit 1), agreement "
                              f"{100 * expected['agreement']:.2f}% (min 98.0%)")
    assert summary.endswith("over 120 samples: PASS")
    assert out.splitlines()[1] == f"wrote {unpacked / REPORT}"
    report = json.loads((unpacked / REPORT).read_text())
    assert report["passed"] is True and report["edge_resnet"] == "0.1.0" and "created" in report and "host" in report
    v = report["validation"]
    assert (v["model"], v["precision"], v["samples"], v["passed"], v["failures"]) == (
        "model.int8.onnx", "int8", 120, True, [])
    assert v["agreement"] == expected["agreement"] and v["top1"] == expected["top1"]
    # the archive itself works as --bundle too (unpacked beside it)
    shutil.copy2(archive, tmp_path / "jetson2.tar.gz")
    rc, out, err = run_cli("verify", "--bundle", str(tmp_path / "jetson2.tar.gz"), "--onnx", "model.fp32.onnx")
    assert rc == 0, err
    assert (tmp_path / "resnet8-jetson" / REPORT).is_file()


def test_verify_exits_3_on_a_broken_model_and_still_reports(fresh_bundle: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broken = _broken_copy(fresh_bundle / "model.fp32.onnx", tmp_path / "broken.onnx")
    rc, out, err = run_cli("verify", "--bundle", str(fresh_bundle), "--onnx", str(broken))
    assert rc == 3, err
    assert "broken.onnx on onnxruntime" in out and ": FAIL: top-1 drops " in out and "; top-1 agrees with FP32 on" in out
    report = json.loads((fresh_bundle / REPORT).read_text())
    assert report["passed"] is False and report["backend"]["model"] == "broken.onnx"
    assert len(report["validation"]["failures"]) == 2


def test_verify_argument_errors(fresh_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = tree(fresh_bundle)
    one_line_error(*run_cli("verify", "--bundle", str(fresh_bundle)), "give exactly one of --engine FILE")
    one_line_error(*run_cli("verify", "--bundle", str(fresh_bundle), "--onnx", "model.int8.onnx", "--engine", "x.engine"),
                   "give exactly one of --engine FILE")
    one_line_error(*run_cli("verify", "--bundle", str(fresh_bundle), "--onnx", "model.int4.onnx"),
                   "no ONNX model model.int4.onnx in", "choose one of model.fp32.onnx")
    one_line_error(*run_cli("verify", "--bundle", str(tmp_path / "nowhere"), "--onnx", "model.int8.onnx"),
                   "no manifest.json at")
    one_line_error(*run_cli("verify", "--bundle", str(fresh_bundle), "--engine", "model.int8.engine"),
                   "no engine file at")
    assert tree(fresh_bundle) == before and entries(tmp_path) == ["device", "device/resnet8-bundle"] + [
        f"device/resnet8-bundle/{n}" for n in sorted(before)]


@pytest.mark.parametrize("command", ["verify", "build-engine"])
@pytest.mark.parametrize(("name", "damage"), [("model.int8.onnx", "flip"), ("validation.npz", "truncate"),
                                              ("calib.cache", "flip")])
def test_cli_refuses_a_tampered_bundle_by_name(fresh_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               command: str, name: str, damage: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = fresh_bundle / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-7] ^= 0x80
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    before = tree(fresh_bundle)
    argv = (["verify", "--bundle", str(fresh_bundle), "--onnx", "model.fp32.onnx"] if command == "verify"
            else ["build-engine", str(fresh_bundle)])
    one_line_error(*run_cli(*argv), str(path), "does not match the sha256")
    assert tree(fresh_bundle) == before  # no report, no engine


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: build-engine would build")
def test_build_engine_without_tensorrt_is_one_line(fresh_bundle: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = tree(fresh_bundle)
    one_line_error(*run_cli("build-engine", str(fresh_bundle)), "building a TensorRT engine needs tensorrt, which is not importable")
    (fresh_bundle / "x.engine").write_bytes(b"plan")
    write_sidecar(fresh_bundle / "x.engine", engine_key(fresh_bundle, plan_build("10.3", BuildOptions(), {
        "model.int8.onnx"}), ORIN))
    one_line_error(*run_cli("verify", "--bundle", str(fresh_bundle), "--engine", "x.engine"),
                   "TensorRT is not installed here")
    assert tree(fresh_bundle) == {**before, "x.engine": b"plan",
                                  "x.engine.json": (fresh_bundle / "x.engine.json").read_bytes()}


@pytest.mark.parametrize(("argv", "message"), [
    (["--samples", "0"], "--samples must be between 1 and 5000, got 0"),
    (["--samples", "5001"], "--samples must be between 1 and 5000, got 5001"),
    (["--batch", "4", "2", "8"], "batch profile needs 1 <= min <= opt <= max"),
    (["--precision", "fp32", "--dla", "0"], "DLA runs FP16 and INT8 only"),
    (["--data", "nowhere"], "data folder nowhere does not exist"),
])
def test_bundle_option_errors_write_nothing(engine_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    run_before = tree(engine_run)
    one_line_error(*run_cli("bundle", str(engine_run), "--output", str(tmp_path / "b"), *argv), message)
    assert entries(tmp_path) == []
    assert tree(engine_run) == run_before


def test_bundle_with_another_datasets_images_is_refused(engine_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The validation set must come from the classes the model was trained on."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    for cls in ("cat", "dog"):
        for split in ("train", "test"):
            (tmp_path / "pets" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), (60 * i, 100, 50)).save(tmp_path / "pets" / split / cls / f"{i}.png")
    one_line_error(*run_cli("bundle", str(engine_run), "--output", str(tmp_path / "b"), "--data",
                            str(tmp_path / "pets")), "has classes ['cat', 'dog']", "but the model has ['0', '1'")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.tar.gz").exists()


def test_bundle_input_errors_write_nothing(engine_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.tiny_model import copy_checkpoint

    monkeypatch.chdir(tmp_path)
    # a folder that does not exist (default output beside it)
    one_line_error(*run_cli("bundle", str(tmp_path / "missing")), "no manifest.json at")
    # a run that was trained but never exported: no manifest, no ONNX
    trained = tmp_path / "trained"
    copy_checkpoint(engine_run / "model.pt", trained)
    one_line_error(*run_cli("bundle", str(trained)), "no manifest.json at", "edge-resnet export")
    # an exported run whose ONNX models were removed together with their manifest entries
    bare = Path(shutil.copytree(engine_run, tmp_path / "bare"))
    m = json.loads((bare / "manifest.json").read_text())
    for name in [n for n in m["files"] if n.endswith(".onnx")]:
        del m["files"][name]
        (bare / name).unlink()
    (bare / "manifest.json").write_text(json.dumps(m))
    one_line_error(*run_cli("bundle", str(bare)), "has no model.fp32.onnx", "edge-resnet export --int8")
    # a run whose model changed after the export: refused by name, before anything is written
    changed = Path(shutil.copytree(engine_run, tmp_path / "changed"))
    with (changed / "model.int8.onnx").open("ab") as f:
        f.write(b"\0")
    one_line_error(*run_cli("bundle", str(changed)), str(changed / "model.int8.onnx"), "does not match the sha256")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "changed", "trained"]  # no *-bundle, no archive
    assert not [p for p in tmp_path.rglob("*") if "bundle" in p.name or p.name.endswith(".tar.gz")]


# ---------------------------------------------------------------- engines: the decision, without TensorRT


def _fake_engine(bundle: Path, system: System, **options) -> tuple[Path, object]:
    """A file named and keyed as build-engine would write it on ``system`` (the bytes are not an engine)."""
    plan = plan_build(system.tensorrt, BuildOptions(**options), {p.name for p in bundle.iterdir()})
    key = engine_key(bundle, plan, system)
    engine = bundle / key.filename()
    engine.write_bytes(b"not a real plan")
    write_sidecar(engine, key, {"built_by": "test"})
    return engine, key


def test_no_rebuild_names_what_differs(fresh_bundle: Path) -> None:
    """An engine on disk for an older TensorRT (the sidecar edited, as after a JetPack upgrade): with
    --no-rebuild, build-engine and verify --engine refuse it naming the field; an engine from another
    ONNX (the bundle re-exported) names the checksum."""
    engine, key = _fake_engine(fresh_bundle, ORIN)
    raw = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**raw, "tensorrt": "8.6.1"}))
    with pytest.raises(EdgeResNetError) as e:
        build_and_check(fresh_bundle, BuildOptions(), rebuild=False, system=ORIN)
    assert f"{engine.name} does not match this system: tensorrt 10.3.0 here, 8.6.1 in the engine; drop --no-rebuild" \
        in str(e.value)
    with pytest.raises(EdgeResNetError, match="tensorrt 10.3.0 here, 8.6.1 in the engine; drop --no-rebuild"):
        verify_engine(fresh_bundle, engine.name, rebuild=False, system=ORIN)
    sidecar_path(engine).write_text(json.dumps({**raw, "onnx_sha256": "0" * 64}))
    with pytest.raises(EdgeResNetError, match=f"onnx sha256 {key.onnx_sha256[:12]} here, 000000000000 in the engine"):
        verify_engine(fresh_bundle, engine, rebuild=False, system=ORIN)
    # another board: the GPU and compute capability both named
    nx = replace(ORIN, gpu="NVIDIA Jetson Orin NX Engineering Reference Developer Kit", compute_capability="8.7")
    sidecar_path(engine).write_text(json.dumps(raw))
    with pytest.raises(EdgeResNetError, match="gpu NVIDIA Jetson Orin NX Engineering Reference Developer Kit here, "
                                              "NVIDIA Jetson AGX Orin Developer Kit in the engine"):
        verify_engine(fresh_bundle, engine, rebuild=False, system=nx)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: these would load or build real engines")
def test_matching_engine_is_loaded_and_a_mismatch_rebuilt(fresh_bundle: Path) -> None:
    """Without TensorRT the last step fails, which shows which step was reached: a matching key goes
    straight to loading the engine (reuse); a differing one (rebuild allowed) goes to the builder."""
    engine, _ = _fake_engine(fresh_bundle, ORIN)
    with pytest.raises(EdgeResNetError, match="running a TensorRT engine needs tensorrt, which is not importable"):  # TensorRTBackend: loading
        build_and_check(fresh_bundle, BuildOptions(), rebuild=False, system=ORIN)
    with pytest.raises(EdgeResNetError, match="running a TensorRT engine needs tensorrt, which is not importable"):
        verify_engine(fresh_bundle, engine, rebuild=False, system=ORIN)
    with pytest.raises(EdgeResNetError, match="building a TensorRT engine needs tensorrt, which is not importable"):  # the builder
        build_and_check(fresh_bundle, BuildOptions(), force=True, system=ORIN)
    raw = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**raw, "tensorrt": "8.6.1"}))
    with pytest.raises(EdgeResNetError, match="building a TensorRT engine needs tensorrt, which is not importable"):
        build_and_check(fresh_bundle, BuildOptions(), system=ORIN)
    with pytest.raises(EdgeResNetError, match="building a TensorRT engine needs tensorrt, which is not importable"):
        verify_engine(fresh_bundle, engine, system=ORIN)
    assert read_sidecar(engine).tensorrt == "8.6.1"  # nothing rewritten by a build that never happened
    assert not (fresh_bundle / REPORT).exists()


def test_verify_engine_without_a_key(fresh_bundle: Path) -> None:
    (fresh_bundle / "mystery.engine").write_bytes(b"plan")
    with pytest.raises(EdgeResNetError, match=r"mystery.engine has no readable key \(mystery.engine.json\)"):
        verify_engine(fresh_bundle, "mystery.engine", system=ORIN)


def test_run_directory_is_not_a_bundle(engine_run: Path) -> None:
    with pytest.raises(EdgeResNetError, match="is a run directory, not a bundle"):
        check_model(engine_run, "model.int8.onnx", providers=["CPUExecutionProvider"])
    assert not (engine_run / REPORT).exists()


# ---------------------------------------------------------------- torch-free on the device


def test_verify_runs_without_torch(bundle_src: Path, tmp_path: Path) -> None:
    """A fresh interpreter where importing torch fails runs `edge-resnet verify --bundle ... --onnx ...`
    through cli.main, as a Jetson without PyTorch would, and never imports torch."""
    bundle = Path(shutil.copytree(bundle_src, tmp_path / "b"))
    script = BLOCK_TORCH + f"""
from edge_resnet import cli
rc = cli.main(["verify", "--bundle", {str(bundle)!r}, "--onnx", "model.int8.onnx"])
assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules), sorted(sys.modules)
rc2 = cli.main(["verify", "--bundle", {str(bundle)!r}, "--onnx", "model.int8.onnx", "--engine", "x"])
print("RC", rc, rc2)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "RC 0 1", out.stdout + out.stderr
    assert ": PASS" in out.stdout and "edge-resnet: error: give exactly one of" in out.stderr
    assert json.loads((bundle / REPORT).read_text())["passed"] is True


def test_a_failed_check_leaves_no_earlier_verdict(fresh_bundle: Path) -> None:
    """device_report.json from a passing run must not survive a later check that fails before writing."""
    rc, _, stderr = run_cli("verify", "--bundle", str(fresh_bundle), "--onnx", "model.int8.onnx")
    assert rc == 0, stderr
    assert json.loads((fresh_bundle / "device_report.json").read_text())["passed"] is True
    rc, stdout, stderr = run_cli("verify", "--bundle", str(fresh_bundle), "--onnx", "nonexistent.onnx")
    one_line_error(rc, stdout, stderr, "no ONNX model nonexistent.onnx")
    assert not (fresh_bundle / "device_report.json").exists()
