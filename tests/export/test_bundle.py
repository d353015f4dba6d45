"""The Jetson bundle on disk (export/bundle.py, edge_resnet.deploy.make_bundle/open_bundle): its files and
manifest, the .tar.gz and its .sha256, checksum refusal, and safe unpacking of crafted archives."""

from __future__ import annotations

import io
import json
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_resnet.calibration.files import read_trt_cache, trt_cache_header

from edge_resnet.data import load_dataset
from edge_resnet.deploy import DEFAULT_SAMPLES, make_bundle, open_bundle
from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.manifest import load_manifest
from edge_resnet.runtime.preprocess import Preprocessor
from edge_resnet.runtime.validate import DEFAULT_MIN_AGREEMENT, ValidationSet
from edge_resnet.export.bundle import MAX_FILES, safe_extract
from tests.export.util import entries, one_line_error, run_cli, sha256, tree

BUNDLED = ["build_engine.sh", "calib.cache", "calib.trt100300.cache", "calib.trt101303.cache", "calib.trt101602.cache", "calib.trt8502.cache",
           "calib.trt8602.cache", "manifest.json", "model.fp16.onnx", "model.fp32.onnx", "model.int8.cpu.onnx",
           "model.int8.implicit.onnx", "model.int8.onnx", "validation.npz"]
VERSIONED_CACHES = {"calib.trt8502.cache": "8.5.2", "calib.trt8602.cache": "8.6.2", "calib.trt100300.cache": "10.3.0",
                    "calib.trt101303.cache": "10.13.3", "calib.trt101602.cache": "10.16.2"}


def _normalize(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """The training pipeline's arithmetic (ToDtype(scale=True) then Normalize), written out in numpy."""
    x = np.transpose(pixels, (0, 3, 1, 2)).astype(np.float32) * np.float32(1.0 / 255)
    mean = np.asarray(spec["mean"], np.float32)[:, None, None]
    std = np.asarray(spec["std"], np.float32)[:, None, None]
    return (x - mean) / std


# ---------------------------------------------------------------- contents and manifest


def test_bundle_files_and_manifest(bundle_src: Path, engine_run: Path) -> None:
    assert sorted(p.name for p in bundle_src.iterdir()) == BUNDLED
    run = json.loads((engine_run / "manifest.json").read_text())
    m = json.loads((bundle_src / "manifest.json").read_text())
    # every file but the manifest is listed, with its real sha256 and size; nothing else is listed
    assert sorted(m["files"]) == sorted(set(BUNDLED) - {"manifest.json"})
    for name, entry in m["files"].items():
        assert entry["sha256"] == sha256(bundle_src / name), name
        assert entry["bytes"] == (bundle_src / name).stat().st_size, name
        if name in run["files"]:  # copied as exported, byte for byte
            assert entry["sha256"] == run["files"][name]["sha256"] and entry["role"] == run["files"][name]["role"]
    assert {m["files"][n]["role"] for n in m["files"]} == {"fp32", "fp16", "tensorrt", "cpu", "implicit", "cache",
                                                           "cache_version", "validation", "script"}
    # calib.cache under the header of each JetPack's TensorRT (TensorRT skips a cache of another version),
    # the ranges unchanged, for trtexec --calib / DeepStream / Polygraphy by hand
    _, ranges = read_trt_cache((bundle_src / "calib.cache").read_text())
    for name, version in VERSIONED_CACHES.items():
        assert m["files"][name]["role"] == "cache_version" and m["files"][name]["tensorrt"] == version
        header, scales = read_trt_cache((bundle_src / name).read_text())
        assert header == trt_cache_header(version) and scales == ranges
    # the workstation-side files stay home
    for name in ("model.pt", "calib.json", "report.json", "report.md"):
        assert name in run["files"] or (engine_run / name).exists()
        assert name not in m["files"] and not (bundle_src / name).exists()
    # what the device needs, unchanged from the run's manifest
    for field in ("format", "input", "output", "preprocessing", "labels", "versions", "accuracy", "model", "int8",
                  "opset"):
        assert m[field] == run[field], field
    assert m["input"] == {"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert m["labels"] == [str(i) for i in range(10)]
    assert m["accuracy"]["passed"] is True and m["accuracy"]["tolerance_top1_points"] == 1.0
    assert {"torch", "onnx", "onnxruntime", "edge_resnet"} <= set(m["versions"])
    # the bundle's own section
    b = m["bundle"]
    assert b["edge_resnet"] == m["versions"]["edge_resnet"] and b["source_run"] == str(engine_run)
    v = b["validation"]
    assert v["file"] == "validation.npz" and v["samples"] == DEFAULT_SAMPLES and v["split"] == "test"
    assert v["dataset"] == "digits" and v["seed"] == 0
    assert v["max_top1_drop_points"] == 1.0 and v["min_top1_agreement"] == DEFAULT_MIN_AGREEMENT
    assert v["reference"] == "model.fp32.onnx on ONNX Runtime (CPU)"
    # the runtime reads it, and every checksum holds
    manifest = load_manifest(bundle_src, verify=True)
    assert manifest.bundle == b and manifest.input_name == "input"


def test_validation_set_is_held_out_test_images_with_fp32_logits(bundle_src: Path) -> None:
    """validation.npz: cropped uint8 pixels of test-split images (each found among the test images, with
    its label), and logits equal to an independent ONNX Runtime run of model.fp32.onnx."""
    m = json.loads((bundle_src / "manifest.json").read_text())
    vs = ValidationSet.load(bundle_src / "validation.npz")
    assert vs.pixels.shape == (DEFAULT_SAMPLES, 32, 32, 3) and vs.pixels.dtype == np.uint8
    assert vs.labels.shape == (DEFAULT_SAMPLES,) and vs.labels.dtype == np.int64
    assert vs.logits.shape == (DEFAULT_SAMPLES, 10) and vs.logits.dtype == np.float32
    pre = Preprocessor(m["preprocessing"])
    test = load_dataset("digits", seed=0).test
    by_pixels: dict[bytes, set[int]] = {}
    for i in range(len(test)):
        img, label = test[i]
        by_pixels.setdefault(pre.pixels(img).tobytes(), set()).add(int(label))
    for px, label in zip(vs.pixels, vs.labels, strict=True):
        assert int(label) in by_pixels.get(px.tobytes(), set())
    assert len({px.tobytes() for px in vs.pixels}) > 0.9 * DEFAULT_SAMPLES  # distinct images, not one repeated
    session = ort.InferenceSession(str(bundle_src / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": _normalize(vs.pixels, m["preprocessing"])})[0]
    np.testing.assert_allclose(vs.logits, logits, rtol=1e-4, atol=1e-4)
    fp32_top1 = float(np.mean(logits.argmax(1) == vs.labels))
    assert m["bundle"]["validation"]["fp32_top1"] == pytest.approx(fp32_top1, abs=1e-9)
    assert fp32_top1 > 0.9  # a trained model, so the tolerance check downstream means something


def test_archive_and_its_checksum(bundle_src: Path, tmp_path: Path) -> None:
    archive = bundle_src.with_name(bundle_src.name + ".tar.gz")
    checksum = archive.with_name(archive.name + ".sha256")
    assert checksum.read_text() == f"{sha256(archive)}  {archive.name}\n"
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", checksum.name], cwd=archive.parent, capture_output=True, text=True)
        assert done.returncode == 0 and f"{archive.name}: OK" in done.stdout
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [bundle_src.name] + [f"{bundle_src.name}/{n}" for n in BUNDLED]
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root")
            assert m.isdir() or m.isfile()
            assert m.mode == (0o755 if m.isdir() or m.name.endswith(".sh") else 0o644), (m.name, oct(m.mode))
            if m.isfile():
                assert tar.extractfile(m).read() == (bundle_src / Path(m.name).name).read_bytes()
    # unpacked into a fresh folder: the same bytes, the script executable, every checksum holding
    folder = safe_extract(archive, tmp_path / "fresh")
    assert folder == tmp_path / "fresh" / bundle_src.name
    assert tree(folder) == tree(bundle_src)
    assert stat.S_IMODE((folder / "build_engine.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "model.int8.onnx").stat().st_mode) == 0o644
    assert entries(tmp_path / "fresh") == [bundle_src.name] + [f"{bundle_src.name}/{n}" for n in BUNDLED]
    assert open_bundle(folder).bundle is not None
    # open_bundle on the archive itself unpacks it beside it (here: a copy) and verifies it
    copy = Path(shutil.copy2(archive, tmp_path / archive.name))
    manifest = open_bundle(copy)
    assert manifest.run_dir == tmp_path / bundle_src.name
    # unpacked before: the same bundle is used as it is (its files are verified against the manifest);
    # a tampered file in it is still refused by open_bundle
    assert safe_extract(copy, tmp_path) == tmp_path / bundle_src.name
    (tmp_path / bundle_src.name / "calib.cache").write_text("TRT-8501-EntropyCalibration2\n")
    with pytest.raises(EdgeResNetError, match="calib.cache does not match the sha256"):
        open_bundle(copy)
    # a different folder of that name (another manifest) is refused, not merged
    (tmp_path / bundle_src.name / "manifest.json").write_text("{}")
    with pytest.raises(EdgeResNetError, match="already exists"):
        safe_extract(copy, tmp_path)


def test_rebundling_replaces_a_bundle_but_not_another_folder(engine_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    first = make_bundle(engine_run, out, samples=8)
    (out / "stale.txt").write_text("left over")
    second = make_bundle(engine_run, out, samples=16)
    assert second.folder == first.folder and not (out / "stale.txt").exists()
    assert ValidationSet.load(out / "validation.npz").labels.shape == (16,)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(EdgeResNetError, match="exists and is not a bundle"):
        make_bundle(engine_run, other, samples=8)
    assert tree(other) == {"cat.jpg": b"jpeg"}
    assert not (tmp_path / "photos.tar.gz").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


# ---------------------------------------------------------------- checksum refusal


@pytest.mark.parametrize(("name", "damage"), [
    ("model.int8.onnx", "flip"), ("model.fp32.onnx", "truncate"), ("validation.npz", "flip"),
    ("calib.cache", "truncate"), ("build_engine.sh", "flip"), ("model.fp16.onnx", "delete"),
])
def test_open_bundle_refuses_a_changed_file_by_name(fresh_bundle: Path, name: str, damage: str) -> None:
    path = fresh_bundle / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) - 1]))
    else:
        path.unlink()
    with pytest.raises(EdgeResNetError) as e:
        open_bundle(fresh_bundle)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    assert ("missing" if damage == "delete" else "does not match the sha256") in message


# ---------------------------------------------------------------- crafted archives


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def _archive(path: Path, build, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        build(tar)
    return path


def _good(tar: tarfile.TarFile) -> None:
    _add(tar, "b", type=tarfile.DIRTYPE, mode=0o755)
    _add(tar, "b/manifest.json", b"{}")
    _add(tar, "b/model.onnx", b"onnx" * 100)


CRAFTED = {
    "absolute path": (lambda t: (_good(t), _add(t, "/tmp/edge-resnet-evil.txt")), "unsafe path"),
    "dot-dot path": (lambda t: (_good(t), _add(t, "b/../../edge-resnet-evil.txt")), "unsafe path"),
    "leading dot-dot": (lambda t: (_add(t, "../edge-resnet-evil/x"),), "unsafe path"),
    "symlink leaving the folder": (lambda t: (_good(t), _add(t, "b/evil", type=tarfile.SYMTYPE, linkname="/etc/passwd")),
                                   "holds a link 'b/evil'"),
    "symlink inside the folder": (lambda t: (_good(t), _add(t, "b/alias", type=tarfile.SYMTYPE,
                                                            linkname="model.onnx")), "holds a link"),
    "hardlink": (lambda t: (_good(t), _add(t, "b/hard", type=tarfile.LNKTYPE, linkname="b/model.onnx")),
                 "holds a link 'b/hard'"),
    "hardlink outside": (lambda t: (_good(t), _add(t, "b/hard", type=tarfile.LNKTYPE, linkname="/etc/shadow")),
                         "holds a link"),
    "character device": (lambda t: (_good(t), _add(t, "b/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
                         "holds a special file 'b/null'"),
    "block device": (lambda t: (_good(t), _add(t, "b/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
                     "special file"),
    "fifo": (lambda t: (_good(t), _add(t, "b/pipe", type=tarfile.FIFOTYPE)), "holds a special file 'b/pipe'"),
    "two top-level folders": (lambda t: (_good(t), _add(t, "c/other.txt")), "2 top-level entries (b, c)"),
    "a file at the top": (lambda t: (_add(t, "loose.txt"),), "outside the bundle's one folder"),
    "a nested file": (lambda t: (_good(t), _add(t, "b/sub/deep.txt")), "outside the bundle's one folder"),
    "backslash path": (lambda t: (_good(t), _add(t, "b\\..\\..\\evil.txt")), "unsafe path"),
    "empty": (lambda t: None, "is empty"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_archives_are_refused_with_nothing_written(case: str, tmp_path: Path) -> None:
    build, message = CRAFTED[case]
    (tmp_path / "in").mkdir()
    archive = _archive(tmp_path / "in" / "bundle.tar.gz", build)
    target = tmp_path / "target"
    with pytest.raises(EdgeResNetError) as e:
        safe_extract(archive, target)
    assert message in str(e.value), str(e.value)
    assert entries(target) == []  # nothing inside the target, not even a temp folder
    assert entries(tmp_path) == ["in", "in/bundle.tar.gz"] + (["target"] if target.exists() else [])
    assert not Path("/tmp/edge-resnet-evil.txt").exists()


def test_the_good_crafted_archive_unpacks(tmp_path: Path) -> None:
    """The control for the cases above: the same builder without the bad member is accepted."""
    archive = _archive(tmp_path / "ok.tar.gz", _good)
    folder = safe_extract(archive, tmp_path / "t")
    assert tree(folder) == {"manifest.json": b"{}", "model.onnx": b"onnx" * 100}
    # and plain (uncompressed) tar too
    folder = safe_extract(_archive(tmp_path / "ok.tar", _good, "w"), tmp_path / "u")
    assert tree(folder) == {"manifest.json": b"{}", "model.onnx": b"onnx" * 100}


def test_size_and_count_limits(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "big.tar.gz", lambda t: (_good(t), _add(t, "b/weights.bin", bytes(5000))))
    with pytest.raises(EdgeResNetError, match="over the .* limit"):
        safe_extract(archive, tmp_path / "t", max_bytes=4096)
    assert entries(tmp_path / "t") == []
    assert safe_extract(archive, tmp_path / "t", max_bytes=6000).name == "b"  # the limit counts bytes, not members

    def many(tar: tarfile.TarFile) -> None:
        for i in range(MAX_FILES + 1):
            _add(tar, f"b/f{i:03d}.txt", b"")

    archive = _archive(tmp_path / "many.tar.gz", many)
    with pytest.raises(EdgeResNetError, match=f"has {MAX_FILES + 1} members, more than a bundle's {MAX_FILES}"):
        safe_extract(archive, tmp_path / "m")
    assert entries(tmp_path / "m") == []
    with pytest.raises(EdgeResNetError, match="more than a bundle's 2"):
        safe_extract(_archive(tmp_path / "three.tar.gz", _good), tmp_path / "n", max_files=2)
    assert entries(tmp_path / "n") == []


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_is_refused(bundle_src: Path, tmp_path: Path, keep: float) -> None:
    """The real bundle archive cut short (an interrupted copy): refused, nothing left in the target."""
    data = bundle_src.with_name(bundle_src.name + ".tar.gz").read_bytes()
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(EdgeResNetError, match="truncated|corrupt|cannot read"):
        safe_extract(archive, tmp_path / "t")
    assert entries(tmp_path / "t") == []


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"this is not gzip")
    with pytest.raises(EdgeResNetError, match="cannot read .* as a tar archive"):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "t")
    with pytest.raises(EdgeResNetError, match="no archive at"):
        safe_extract(tmp_path / "missing.tar.gz", tmp_path / "t")
    assert entries(tmp_path / "t") == []


def test_output_never_replaces_a_run_directory(engine_run: Path, tmp_path: Path) -> None:
    """--output naming the run itself, a folder inside it, or another run directory (it has a manifest,
    but not a bundle's) is refused, and the runs keep every file."""
    run = Path(shutil.copytree(engine_run, tmp_path / "runA"))
    other = Path(shutil.copytree(engine_run, tmp_path / "runB"))
    before_run, before_other = tree(run), tree(other)
    for out, message in ((run, "is the run directory, inside it or above it"),
                         (run / "sub", "is the run directory, inside it or above it"),
                         (other, "exists and is not a bundle")):
        rc, stdout, stderr = run_cli("bundle", str(run), "--output", str(out), "--samples", "4")
        one_line_error(rc, stdout, stderr, message)
    assert tree(run) == before_run and tree(other) == before_other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runA", "runB"]


def test_bundle_of_dot_is_named_after_the_folder(engine_run: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = Path(shutil.copytree(engine_run, tmp_path / "myrun"))
    monkeypatch.chdir(run)
    rc, stdout, stderr = run_cli("bundle", ".", "--samples", "4")
    assert rc == 0, stderr
    assert (tmp_path / "myrun-bundle" / "manifest.json").is_file()
    assert (tmp_path / "myrun-bundle.tar.gz").is_file()
    assert not any(p.name.startswith("-bundle") for p in run.iterdir())


def test_archive_of_dot_members_is_refused_cleanly(bundle_src: Path, tmp_path: Path) -> None:
    """`tar czf b.tgz -C bundle .` makes members "./" and "./manifest.json": one line, not a traceback."""
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_src, arcname=".")
    rc, stdout, stderr = run_cli("verify", "--bundle", str(archive), "--onnx", "model.int8.onnx")
    one_line_error(rc, stdout, stderr, "instead of one top-level folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz"]


def test_an_archive_where_a_run_directory_is_wanted(bundle_src: Path, tmp_path: Path) -> None:
    archive = Path(shutil.copy(bundle_src.with_name(bundle_src.name + ".tar.gz"), tmp_path / "b.tar.gz"))
    for argv in (("trtexec-cmd", str(archive), "--trt", "10.3"), ("bench", str(archive))):
        rc, stdout, stderr = run_cli(*argv)
        one_line_error(rc, stdout, stderr, "is a bundle archive; unpack it first")


def test_the_committed_bundle_is_what_the_code_writes(bundle_src: Path, prebuilt_bundle: Path) -> None:
    """tests/fixtures/bundle (the bundle the TensorRT tests use on a device without torch) has the files,
    roles and manifest sections of a bundle made now, its checksums hold, its build_engine.sh is the one
    the code writes today, and ONNX Runtime on its INT8 model passes its own validation set. When this
    fails: .venv/bin/python tests/fixtures/bundle/regenerate.py"""
    from edge_resnet.deploy import check_model
    from edge_resnet.export.build_plan import BuildOptions
    from edge_resnet.export.trtexec import build_script

    ours = load_manifest(prebuilt_bundle, verify=True)
    now = load_manifest(bundle_src)
    assert sorted(p.name for p in prebuilt_bundle.iterdir()) == sorted(p.name for p in bundle_src.iterdir())
    assert {n: e.role for n, e in ours.files.items()} == {n: e.role for n, e in now.files.items()}
    raw_ours = json.loads((prebuilt_bundle / "manifest.json").read_text())
    raw_now = json.loads((bundle_src / "manifest.json").read_text())
    assert set(raw_ours) == set(raw_now) and set(raw_ours["int8"]) == set(raw_now["int8"])
    assert raw_ours["int8"]["engines"] == raw_now["int8"]["engines"]
    script = build_script(BuildOptions(), set(ours.files), ours.input_name, ours.input_shape[1:], ours.model["arch"])
    assert (prebuilt_bundle / "build_engine.sh").read_text() == script
    check = check_model(prebuilt_bundle, "model.int8.onnx")
    assert check.result.passed, check.result.failures
