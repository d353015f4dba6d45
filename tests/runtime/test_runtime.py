"""The torch-free runtime (``edge_resnet.runtime``) against the training side.

Three kinds of check: the runtime's preprocessing against the training pipeline's own
``eval_transform`` on real photographs; the runtime's predictions against the accuracy the export
measured (report.json) on a real run directory written by ``export_run``; and the runtime importing
and classifying in a fresh interpreter with torch out of reach.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.data import eval_transform, load_dataset
from edge_resnet.data.folder import to_rgb as training_to_rgb
from edge_resnet.errors import EdgeResNetError
from edge_resnet.contract.files import EXPORTED, FILES
from edge_resnet.pipeline import ExportOptions, export_run
from edge_resnet.runtime import Classifier, Prediction, Preprocessor, load_manifest, select_model
from edge_resnet.runtime.preprocess import crop_origin, resized_size, to_rgb
from tests.helpers import BLOCK_TORCH
from tests.tiny_model import opencv_checkpoint, tiny_checkpoint

import skimage.data as skdata  # a dev dependency: missing, these tests fail loudly rather than skip

REPO = Path(__file__).resolve().parents[2]
# preprocessing parity: largest |runtime - eval_transform| allowed, in normalised units
PARITY_TOL = 1e-5

SPECS = {
    # the digits/CIFAR default: no crop margin, the dataset's own statistics
    "digits": {"input_size": 32, "resize": 32, "mean": [0.3056, 0.3056, 0.3056], "std": [0.3764, 0.3764, 0.3764]},
    "imagenet": PreprocessSpec.imagenet(224).to_dict(),
    "imagenet-bgr": {**PreprocessSpec.imagenet(224).to_dict(), "channel_order": "BGR",
                     "mean": [0.406, 0.456, 0.485], "std": [0.225, 0.224, 0.229]},
    # odd sizes: 182 * 600 / 400 = 273, so the crop offset is 56.5 and Python's round() decides it
    "bicubic-160": {"input_size": 160, "resize": 182, "interpolation": "bicubic"},
    "nearest-64": {"input_size": 64, "resize": 73, "interpolation": "nearest"},
    # the same with OpenCV resizing on both sides (resampler "opencv")
    "imagenet-opencv": {**PreprocessSpec.imagenet(224).to_dict(), "resampler": "opencv"},
    "imagenet-bgr-opencv": {**PreprocessSpec.imagenet(224).to_dict(), "channel_order": "BGR", "resampler": "opencv",
                            "mean": [0.406, 0.456, 0.485], "std": [0.225, 0.224, 0.229]},
    "digits-opencv": {"input_size": 32, "resize": 32, "mean": [0.3056, 0.3056, 0.3056], "std": [0.3764, 0.3764, 0.3764],
                      "resampler": "opencv"},
    "odd-160-opencv": {"input_size": 160, "resize": 182, "resampler": "opencv"},
}


def _photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs (shipped in the wheel, no download): square, landscape,
    portrait (a landscape photo turned 90 degrees), greyscale and RGBA."""
    coffee, rocket = skdata.coffee(), skdata.rocket()
    return {
        "astronaut 512x512": skdata.astronaut(),
        "coffee 400x600": coffee,
        "coffee 600x400": np.ascontiguousarray(np.rot90(coffee)),
        "chelsea 300x451": skdata.chelsea(),
        "rocket 427x640": rocket,
        "rocket 640x427": np.ascontiguousarray(np.rot90(rocket, k=-1)),
        "camera grey 512x512": skdata.camera(),
        "page grey 191x384": skdata.page(),  # smaller than 224: the resize upsamples
        "logo RGBA 500x500": skdata.logo(),
    }


PHOTOS = _photos()


# ---------------------------------------------------------------- preprocessing parity


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_preprocessing_equals_the_training_transform_on_photographs(spec_name: str) -> None:
    """Runtime vs ``eval_transform(PreprocessSpec.from_dict(spec))`` per photo: max |diff| <= 1e-5.

    Both sides resize with the same implementation (PIL's Image.resize, or with resampler "opencv"
    edge_resnet.imaging.opencv_resize) and do the same float32 arithmetic, so the measured
    difference is 0.0 (bit-identical); 1e-5 is the stated tolerance, far below one 8-bit level
    (1/255/std ~ 0.017).
    """
    spec = SPECS[spec_name]
    pre = Preprocessor(spec)
    reference = eval_transform(PreprocessSpec.from_dict(spec))
    for name, pixels in PHOTOS.items():
        img = Image.fromarray(pixels)
        expected = reference(training_to_rgb(img)).numpy()
        got = pre(img)
        assert got.shape == (1, 3, spec["input_size"], spec["input_size"]) and got.dtype == np.float32
        diff = float(np.abs(got[0] - expected).max())
        assert diff <= PARITY_TOL, (spec_name, name, diff)
        # the two halves a bundle's validation set uses (cropped pixels stored, normalised on the
        # device) give the very same array as the one-step path, which normalises by table
        crops = pre.pixels(img)
        assert crops.dtype == np.uint8 and crops.shape == (spec["input_size"], spec["input_size"], 3)
        assert np.array_equal(pre.normalize(crops[None])[0], got[0]), (spec_name, name)


@pytest.mark.parametrize("spec_name", ["imagenet", "imagenet-bgr", "digits", "imagenet-opencv", "imagenet-bgr-opencv"])
def test_opencv_bgr_frames_equal_the_pil_rgb_path(spec_name: str, tmp_path: Path) -> None:
    """A frame as OpenCV gives it (BGR uint8, here read back with cv2.imread) with order="BGR" is
    preprocessed exactly as the same photo opened with PIL."""
    pre = Preprocessor(SPECS[spec_name])
    for name in ("coffee 400x600", "rocket 640x427", "astronaut 512x512"):
        path = tmp_path / "photo.png"  # PNG: both decoders give the same pixels
        Image.fromarray(PHOTOS[name]).save(path)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        with Image.open(path) as img:
            from_pil = pre(img.convert("RGB"))
        assert np.array_equal(pre(bgr, order="BGR"), from_pil), name
        assert np.array_equal(pre(np.ascontiguousarray(bgr[..., ::-1]), order="RGB"), from_pil), name
        # BGRA frames (cv2.IMREAD_UNCHANGED of a PNG with alpha) drop alpha as the PIL path does
        bgra = np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)])
        assert np.array_equal(pre(bgra, order="BGR"), from_pil), name
    # a batch: an (N, H, W, 3) array and a list give the same rows
    frames = np.stack([PHOTOS["astronaut 512x512"], PHOTOS["astronaut 512x512"][::-1]])
    assert np.array_equal(pre(frames), np.concatenate([pre(f) for f in frames]))


@pytest.mark.parametrize("spec_name", ["digits", "digits-opencv"])
def test_pixels_never_alias_the_callers_frame(spec_name: str) -> None:
    """With nothing to resize (a 32x32 frame, resize 32) the crop is the whole frame; pixels() still
    returns its own array, so writing to it cannot change the caller's frame."""
    frame = PHOTOS["astronaut 512x512"][:32, :32].copy()
    pre = Preprocessor(SPECS[spec_name])
    for order in ("RGB", "BGR"):
        out = pre.pixels(frame, order=order)
        assert not np.shares_memory(out, frame)
        assert np.array_equal(out, frame if order == "RGB" else frame[..., ::-1])


@pytest.mark.parametrize("spec_name", ["imagenet", "imagenet-opencv"])
def test_grey_frames_and_pil_modes_convert_as_training_does(spec_name: str) -> None:
    photo = Image.fromarray(PHOTOS["chelsea 300x451"])
    grey = photo.convert("L")
    images = {
        "L": grey, "LA": grey.convert("LA"), "RGBA": photo.convert("RGBA"), "CMYK": photo.convert("CMYK"),
        "P": photo.convert("P"), "I;16": Image.fromarray(np.asarray(grey).astype(np.uint16) * 257),
        "I": grey.convert("I"), "1": grey.convert("1"),
    }
    assert images["I;16"].mode == "I;16"
    transparent = photo.convert("P")
    transparent.info["transparency"] = 0
    images["P+transparency"] = transparent
    for mode, img in images.items():
        assert np.array_equal(np.asarray(to_rgb(img)), np.asarray(training_to_rgb(img))), mode
    pre = Preprocessor(SPECS[spec_name])
    g = np.asarray(grey)
    assert np.array_equal(pre(g), pre(grey)) and np.array_equal(pre(g[..., None]), pre(grey))
    # a grey frame is resized as one plane and repeated: the same bytes as resizing it as RGB
    assert np.array_equal(pre(g), pre(grey.convert("RGB")))


def test_resize_and_crop_rules_known_answers() -> None:
    # torchvision truncates the long side: 256 * 451 / 300 = 384.85 -> 384
    assert resized_size(300, 451, 256) == (256, 384)
    assert resized_size(451, 300, 256) == (384, 256)
    assert resized_size(427, 640, 256) == (256, 383)
    assert resized_size(8, 8, 32) == (32, 32)  # the digits are upsampled
    # CenterCrop: int(round(x / 2.0)), and round() sends .5 to the even side
    assert crop_origin(182, 273, 160) == (11, 56)  # 56.5 -> 56
    assert crop_origin(73, 109, 64) == (4, 22)  # 4.5 -> 4, 22.5 -> 22
    assert crop_origin(256, 383, 224) == (16, 80)  # 79.5 -> 80


@pytest.mark.parametrize("spec_name", ["digits", "digits-opencv"])
def test_preprocessor_refuses_bad_specs_and_frames(spec_name: str) -> None:
    with pytest.raises(EdgeResNetError, match="crop_pct"):
        Preprocessor({**SPECS["imagenet"], "crop_pct": 0.875})
    with pytest.raises(EdgeResNetError, match="input_size <= resize"):
        Preprocessor({"input_size": 64, "resize": 32})
    with pytest.raises(EdgeResNetError, match="interpolation"):
        Preprocessor({"input_size": 32, "resize": 32, "interpolation": "lanczos"})
    with pytest.raises(EdgeResNetError, match="resampler 'cuda' is not one of"):
        Preprocessor({"input_size": 32, "resize": 32, "resampler": "cuda"})
    with pytest.raises(EdgeResNetError, match="bilinearly only"):
        Preprocessor({"input_size": 32, "resize": 32, "resampler": "opencv", "interpolation": "bicubic"})
    pre = Preprocessor(SPECS[spec_name])
    with pytest.raises(EdgeResNetError, match="uint8"):
        pre(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(EdgeResNetError, match="shape"):
        pre(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(EdgeResNetError, match="shape"):
        pre(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(EdgeResNetError, match="shape"):
        pre(np.zeros((8, 0), np.uint8))
    with pytest.raises(EdgeResNetError, match="order"):
        pre(np.zeros((8, 8, 3), np.uint8), order="YUV")
    with pytest.raises(EdgeResNetError, match="empty"):
        pre([])


# ---------------------------------------------------------------- a real run directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory written by the project's own export: resnet8 trained on the digits, FP32,
    FP16 and both INT8 targets (max calibration on 64 images, to stay fast)."""
    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path_factory.mktemp("runtime") / "run"
    result = export_run(ExportOptions(model=str(ckpt), int8=True, fp16=True, calib_method="max", num_calib=64,
                                      batch_size=64, output=str(out)))
    assert result.passed, result.report.failures
    return out


def _copy_run(run_dir: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run_dir, dest))


def _report_top1(run_dir: Path, key: str) -> float:
    rows = {r["key"]: r for r in json.loads((run_dir / "report.json").read_text())["backends"]}
    return rows[key]["top1"]


@pytest.mark.parametrize(("model", "report_key"), [("fp32", "onnxruntime_fp32"), ("int8-cpu", "onnxruntime_cpu"),
                                                   ("fp16", "onnxruntime_fp16"),
                                                   ("model.int8.onnx", "onnxruntime_tensorrt")])
def test_runtime_accuracy_equals_the_export_report(run_dir: Path, model: str, report_key: str) -> None:
    """Top-1 over the digits test split through the runtime (its own preprocessing from the manifest,
    its own session) is exactly the top-1 the export measured through the training pipeline."""
    test = load_dataset("digits", seed=0).test
    images = [test[i][0] for i in range(len(test))]
    labels = np.asarray([test[i][1] for i in range(len(test))])
    clf = Classifier.from_run(run_dir, model=model, providers=["CPUExecutionProvider"])
    preds = clf.predict(images, top_k=3)
    top1 = float(np.mean(np.asarray([p.indices[0] for p in preds]) == labels))
    assert top1 == _report_top1(run_dir, report_key)
    assert len(preds) == 360 and all(isinstance(p, Prediction) and len(p.labels) == 3 for p in preds)
    p = preds[0]
    assert p.labels == tuple(str(i) for i in p.indices) and list(p.scores) == sorted(p.scores, reverse=True)
    # scores are probabilities over all ten classes
    full = clf.predict(images[:5], top_k=100)
    assert all(len(q.scores) == 10 and abs(sum(q.scores) - 1) < 1e-9 for q in full)
    # numpy frames (N, 8, 8, 3) predict as the PIL images do
    arr = np.stack([np.asarray(img) for img in images[:32]])
    assert np.array_equal(clf.logits(arr), clf.logits(images[:32]))


@pytest.mark.slow
def test_opencv_resampler_from_training_to_the_runtime(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model trained with ``resampler="opencv"`` (the 8x8 digits are upsampled to 32 by cv2.resize in
    training), exported, and classified by the runtime from its manifest: the spec travels, and the
    runtime's top-1 is exactly the export's (FP32 and INT8) on the test split."""
    ckpt = opencv_checkpoint(tmp_path_factory)
    out = tmp_path_factory.mktemp("runtime-opencv") / "run"
    result = export_run(ExportOptions(model=str(ckpt), int8=True, target="cpu", calib_method="max", num_calib=64,
                                      batch_size=64, output=str(out)))
    assert result.passed, result.report.failures
    manifest = load_manifest(out)
    assert manifest.preprocessing["resampler"] == "opencv" and manifest.versions["opencv"] == cv2.__version__
    test = load_dataset("digits", seed=0).test
    images = [test[i][0] for i in range(len(test))]
    labels = np.asarray([test[i][1] for i in range(len(test))])
    for model, key in (("fp32", "onnxruntime_fp32"), ("int8-cpu", "onnxruntime_cpu")):
        clf = Classifier.from_run(out, model=model, providers=["CPUExecutionProvider"])
        assert clf.preprocess.resampler == "opencv"
        top1 = float(np.mean(clf.logits(images).argmax(axis=1) == labels))
        assert top1 == _report_top1(out, key) and top1 > 0.9, (model, top1)


def test_int8_picks_the_cpu_target_on_cpu_and_the_tensorrt_target_on_gpu(run_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(run_dir)
    assert select_model(manifest, "int8", ["CPUExecutionProvider"]).name == FILES["cpu"]
    assert select_model(manifest, "int8", ["CUDAExecutionProvider", "CPUExecutionProvider"]).name == FILES["tensorrt"]
    assert select_model(manifest, "int8", [("TensorrtExecutionProvider", {}), "CPUExecutionProvider"]).name \
        == FILES["tensorrt"]
    assert select_model(manifest, "int8-cpu", ["CUDAExecutionProvider"]).name == FILES["cpu"]
    assert select_model(manifest, "model.fp32.onnx", ["CPUExecutionProvider"]) == run_dir / FILES["fp32"]
    clf = Classifier.from_run(run_dir, model="int8", providers=["CPUExecutionProvider"])
    assert clf.model_path.name == FILES["cpu"] and clf.backend.providers == ["CPUExecutionProvider"]
    # a run exported for one target only: "int8" takes that one whatever the provider
    only = _copy_run(run_dir, tmp_path / "cpu-only")
    raw = json.loads((only / "manifest.json").read_text())
    raw["files"] = {n: e for n, e in raw["files"].items() if e["role"] != "tensorrt"}
    (only / "manifest.json").write_text(json.dumps(raw))
    assert select_model(load_manifest(only), "int8", ["CUDAExecutionProvider"]).name == FILES["cpu"]


def test_manifest_fields_and_checksums(run_dir: Path, tmp_path: Path) -> None:
    m = load_manifest(run_dir / "manifest.json", verify=True)
    assert m.run_dir == run_dir and m.input_name == "input" and m.input_shape == ("batch", 3, 32, 32)
    assert m.layout == "NCHW" and m.labels == tuple(str(d) for d in range(10))
    assert Preprocessor(m.preprocessing).shape == (3, 32, 32)
    assert set(m.files) == set(EXPORTED.values()) - {"manifest.json"}
    assert m.int8 is not None
    assert {name: entry["target"] for name, entry in m.int8["models"].items()} == {
        FILES["tensorrt"]: "tensorrt", FILES["cpu"]: "cpu", FILES["implicit"]: "implicit"}
    assert "zero point 0" in m.int8["models"][FILES["tensorrt"]]["definition"]
    assert "uint8" in m.int8["models"][FILES["cpu"]]["definition"]
    assert "calib.cache" in m.int8["models"][FILES["implicit"]]["definition"]

    tampered = _copy_run(run_dir, tmp_path / "tampered")
    data = bytearray((tampered / FILES["fp32"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / FILES["fp32"]).write_bytes(bytes(data))
    with pytest.raises(EdgeResNetError, match=r"model\.fp32\.onnx does not match.*re-export") as e:
        load_manifest(tampered, verify=True)
    assert "\n" not in str(e.value)
    with pytest.raises(EdgeResNetError, match=r"model\.fp32\.onnx does not match"):
        Classifier.from_run(tampered, model="fp32", providers=["CPUExecutionProvider"])
    # only the file being loaded is checked: the untouched INT8 model still loads
    Classifier.from_run(tampered, model="int8-cpu", providers=["CPUExecutionProvider"])
    (tampered / FILES["cpu"]).unlink()
    with pytest.raises(EdgeResNetError, match=r"model\.int8\.cpu\.onnx is listed in the manifest but missing"):
        Classifier.from_run(tampered, model="int8-cpu", providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- errors


def _one_line_error(fn, match: str) -> str:
    with pytest.raises(EdgeResNetError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    _one_line_error(lambda: Classifier.from_run(missing), r"no manifest\.json at .*nowhere")
    _one_line_error(lambda: load_manifest(tmp_path), "no manifest.json")

    broken = _copy_run(run_dir, tmp_path / "broken")
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text((run_dir / "manifest.json").read_text()[:200])
    _one_line_error(lambda: load_manifest(broken), "cannot read .*re-export")
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format": "edge-resnet/manifest-9"}))
    _one_line_error(lambda: load_manifest(broken), "manifest-9.*this runtime reads edge-resnet/manifest-1")
    (broken / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "input"}))
    _one_line_error(lambda: load_manifest(broken), "lacks a valid 'input'")

    # a run exported without --fp16 / --int8
    files = {n: e for n, e in manifest["files"].items() if e.get("precision") not in ("fp16", "int8")}
    (broken / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    _one_line_error(lambda: Classifier.from_run(broken, model="fp16"), "no fp16 model.*--fp16")
    _one_line_error(lambda: Classifier.from_run(broken, model="int8"), "no int8 model.*--int8")
    _one_line_error(lambda: Classifier.from_run(broken, model="resnet50"), "neither one of int8")
    _one_line_error(lambda: Classifier.from_run(run_dir, providers=["NoSuchExecutionProvider"]), "not available")
    clf = Classifier.from_run(run_dir, model="fp32", providers=["CPUExecutionProvider"])
    _one_line_error(lambda: clf.classify_file(tmp_path / "missing.png"), "no image file")
    (tmp_path / "not-an-image.png").write_text("hello")
    _one_line_error(lambda: clf.classify_file(tmp_path / "not-an-image.png"), "cannot read image")
    _one_line_error(lambda: clf.predict(np.zeros((8, 8, 3), np.uint8), top_k=0), "top_k")


# ---------------------------------------------------------------- no torch


def test_runtime_imports_no_torch_and_classifies(run_dir: Path, tmp_path: Path) -> None:
    """A fresh interpreter where importing torch fails: the runtime loads the run, classifies a file
    and a BGR frame, and never imports torch or torchvision."""
    test = load_dataset("digits", seed=0).test
    img, label = test[0]
    img.save(tmp_path / "digit.png")
    expected = Classifier.from_run(run_dir, model="fp32", providers=["CPUExecutionProvider"]).predict(img)[0]
    script = BLOCK_TORCH + f"""
import numpy as np
from PIL import Image
import edge_resnet.runtime as rt
clf = rt.Classifier.from_run({str(run_dir)!r}, model="fp32", providers=["CPUExecutionProvider"])
p = clf.classify_file({str(tmp_path / "digit.png")!r})
bgr = np.asarray(Image.open({str(tmp_path / "digit.png")!r}).convert("RGB"))[..., ::-1]
q = clf.predict(bgr, order="BGR")[0]
assert p == q, (p, q)
int8 = rt.Classifier.from_run({str(run_dir)!r}, model="int8")
assert int8.model_path.name == "model.int8.cpu.onnx", int8.model_path
int8.predict([bgr, bgr], order="BGR")
assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules), sorted(sys.modules)
print(p.indices[0], repr(p.scores[0]))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    index, score = out.stdout.split()
    assert int(index) == expected.indices[0] == label
    assert float(score) == expected.scores[0]
