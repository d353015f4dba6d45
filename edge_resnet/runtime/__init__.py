"""Device-side inference without torch: a run directory's model, preprocessing and labels.

    from edge_resnet.runtime import Classifier
    clf = Classifier.from_run("runs/resnet20-digits")       # INT8 on the best ONNX Runtime provider
    clf.predict(bgr_frame, order="BGR")[0].label            # OpenCV frames are BGR

Nothing here imports torch or the torch-side stages (a test runs it with torch out of reach),
so a Jetson or an embedded box needs only numpy, Pillow and onnxruntime.
"""

from edge_resnet.runtime.backends import OnnxRuntimeBackend, available_providers, default_providers
from edge_resnet.runtime.classifier import Classifier, Prediction, select_model
from edge_resnet.runtime.manifest import FileEntry, Manifest, load_manifest
from edge_resnet.runtime.preprocess import Preprocessor

__all__ = [
    "Classifier", "FileEntry", "Manifest", "OnnxRuntimeBackend", "Prediction", "Preprocessor",
    "available_providers", "default_providers", "load_manifest", "select_model",
]
