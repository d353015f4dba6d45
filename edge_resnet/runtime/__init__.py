"""Device-side inference without torch: a run directory's model, preprocessing and labels.

    from edge_resnet.runtime import Classifier
    clf = Classifier.from_run("runs/resnet20-digits")       # INT8 on the best ONNX Runtime provider
    clf.predict(bgr_frame, order="BGR")[0].label            # OpenCV frames are BGR

Nothing here imports torch or the torch-side stages (a test runs it with torch out of reach),
so a Jetson or an embedded box needs only numpy, Pillow and onnxruntime.
"""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "OnnxRuntimeBackend": "backends",
    "available_providers": "backends",
    "default_providers": "backends",
    "Classifier": "classifier",
    "Prediction": "classifier",
    "select_model": "classifier",
    "FileEntry": "manifest",
    "Manifest": "manifest",
    "load_manifest": "manifest",
    "Preprocessor": "preprocess",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
