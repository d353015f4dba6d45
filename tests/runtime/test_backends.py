"""The runtime backends' lifecycle and the one session factory they open ONNX Runtime through, on the
committed bundle's models (no torch): results equal a plain ONNX Runtime session's, close() frees and is
final, a context manager closes on the way out, and every way a session cannot open is one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_resnet.errors import EdgeResNetError
from edge_resnet.runtime.backends import Backend, OnnxRuntimeBackend
from edge_resnet.runtime.classifier import Classifier
from edge_resnet.sessions import open_session
from tests.export.conftest import PREBUILT

FP32 = PREBUILT / "model.fp32.onnx"


def _batch(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _plain(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_the_backend_computes_what_onnx_runtime_computes_and_closes() -> None:
    x = _batch()
    with OnnxRuntimeBackend(FP32, providers=["CPUExecutionProvider"], threads=1) as backend:
        assert isinstance(backend, Backend)
        np.testing.assert_allclose(backend.run(x), _plain(FP32, x), rtol=1e-5, atol=1e-5)
    assert backend.session is None
    with pytest.raises(EdgeResNetError, match="was closed"):
        backend.run(x)
    backend.close()  # twice is fine


def test_the_context_manager_closes_on_an_error() -> None:
    with pytest.raises(ZeroDivisionError):
        with OnnxRuntimeBackend(FP32, providers=["CPUExecutionProvider"]) as backend:
            raise ZeroDivisionError
    assert backend.session is None


def test_a_classifier_closes_its_backend() -> None:
    with Classifier.from_run(PREBUILT, model="fp32", providers=["CPUExecutionProvider"]) as clf:
        frame = np.zeros((40, 40, 3), np.uint8)
        assert clf.predict([frame])[0].to_dict()
    assert clf.backend.session is None


def test_sessions_from_memory_equal_sessions_from_the_file() -> None:
    x = _batch(2)
    model = onnx.load(str(FP32))
    for source in (model, model.SerializeToString(), FP32, str(FP32)):
        for optimization in ("all", "extended", "none"):
            sess = open_session(source, optimization=optimization, memory_arena=False, threads=1)
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            np.testing.assert_allclose(got, _plain(FP32, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"providers": ["NoSuchExecutionProvider"]}, "execution provider(s) ['NoSuchExecutionProvider'] not available"),
    ({"providers": []}, "not available in this onnxruntime"),
    ({"threads": -1}, "threads must be 0 (ONNX Runtime's default) or more, got -1"),
    ({"optimization": "max"}, "unknown graph optimization 'max'"),
])
def test_a_session_that_cannot_open_is_one_error(kwargs: dict, message: str) -> None:
    with pytest.raises(EdgeResNetError) as e:
        open_session(FP32, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_model_names_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(FP32.read_bytes()[:1000])
    with pytest.raises(EdgeResNetError) as e:
        open_session(bad, fix="re-export it")
    assert str(e.value).startswith(f"onnxruntime cannot load {bad} (") and str(e.value).endswith("; re-export it")
    with pytest.raises(EdgeResNetError, match="onnxruntime cannot load the model in memory"):
        open_session(FP32.read_bytes()[:1000])
