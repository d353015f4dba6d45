"""evaluate(): exact counts from known logits; evaluate_checkpoint against training's own report;
check_classes guards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.data import DatasetSplits
from edge_resnet.errors import CheckpointError
from edge_resnet.training import Checkpoint, TrainConfig, evaluate, train
from edge_resnet.training.evaluate import check_classes, evaluate_checkpoint


class FixedLogits(nn.Module):
    """Input i (an index) -> row i of a fixed logits table; records the mode it was called in."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.table[x.long()]


def _batches(labels: list[int], size: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for s in range(0, len(labels), size):
        idx = torch.arange(s, min(s + size, len(labels)))
        out.append((idx, torch.tensor(labels[s:s + size])))
        out.append(None)  # a batch whose images were all unreadable: skipped
    return out


def test_hand_computed_case() -> None:
    classes = ["cat", "dog", "eel", "fox"]
    table = torch.tensor([
        [2.0, 1.0, 0.0, 0.0],  # true cat -> cat
        [0.0, 3.0, 1.0, 0.0],  # true cat -> dog
        [0.0, 3.0, 1.0, 0.0],  # true dog -> dog
        [5.0, 0.0, 1.0, 0.0],  # true eel -> cat
    ])
    labels = [0, 0, 1, 2]
    model = FixedLogits(table)
    r = evaluate(model, _batches(labels, 3), classes)
    assert r.confusion == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert (r.n, r.correct) == (4, 2)
    assert r.top1 == 0.5
    assert r.top5 == 1.0  # 4 classes: "top-5" is all of them
    assert r.per_class() == [
        {"class": "cat", "images": 2, "correct": 1, "accuracy": 0.5},
        {"class": "dog", "images": 1, "correct": 1, "accuracy": 1.0},
        {"class": "eel", "images": 1, "correct": 0, "accuracy": 0.0},
        {"class": "fox", "images": 0, "correct": 0, "accuracy": None},
    ]
    expected_loss = np.mean([
        -np.log(np.exp(2) / (np.exp(2) + np.exp(1) + 2)),
        -np.log(1 / (np.exp(3) + np.exp(1) + 2)),
        -np.log(np.exp(3) / (np.exp(3) + np.exp(1) + 2)),
        -np.log(np.exp(1) / (np.exp(5) + np.exp(1) + 2)),
    ])
    assert r.loss == pytest.approx(expected_loss, rel=1e-6)


def test_random_logits_against_numpy() -> None:
    rng = np.random.default_rng(7)
    n, k = 53, 8
    logits = rng.normal(size=(n, k)).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    classes = [f"c{i}" for i in range(k)]

    model = FixedLogits(torch.from_numpy(logits))
    model.train()
    r = evaluate(model, _batches(labels.tolist(), 10), classes)

    pred = logits.argmax(1)
    confusion = np.zeros((k, k), dtype=int)
    for t, p in zip(labels, pred, strict=True):
        confusion[t, p] += 1
    top5 = sum(int(t in np.argsort(-row)[:5]) for row, t in zip(logits, labels, strict=True))
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    loss = -logp[np.arange(n), labels].mean()

    assert r.confusion == confusion.tolist()
    assert r.top1 == pytest.approx((pred == labels).mean())
    assert r.top5_correct == top5 and r.top5 == pytest.approx(top5 / n)
    assert 0 < r.top1 < r.top5 < 1  # the case is not degenerate
    assert r.loss == pytest.approx(loss, rel=1e-5)
    for i, row in enumerate(r.per_class()):
        m = labels == i
        assert row["images"] == int(m.sum())
        assert row["correct"] == int((pred[m] == i).sum())
    d = r.to_dict()
    assert d["images"] == n and d["confusion"] == confusion.tolist() and d["classes"] == classes
    # evaluated in eval mode, handed back in the mode it came in
    assert model.modes and not any(model.modes)
    assert model.training


def test_no_images() -> None:
    r = evaluate(FixedLogits(torch.zeros(1, 3)), [None], ["a", "b", "c"])
    assert (r.n, r.top1, r.top5, r.loss) == (0, 0.0, 0.0, 0.0)
    assert [row["accuracy"] for row in r.per_class()] == [None, None, None]


# ---------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    train(TrainConfig(model="resnet8", epochs=2, batch_size=32, output=str(out), device="cpu", seed=1))
    return out


def test_evaluate_checkpoint_reproduces_the_training_report(run: Path) -> None:
    report = json.loads((run / "eval-digits-test.json").read_text())
    assert report["images"] == 360 and report["dataset"] == "digits" and report["split"] == "test"
    # the same batches as training's test pass: identical numbers
    result, ckpt, data = evaluate_checkpoint(run / "model.pt", batch_size=32)
    assert ckpt.extra["seed"] == 1  # the split of the training run was used
    assert result.confusion == report["confusion"]
    assert result.top1 == report["top1"] and result.top5 == report["top5"]
    assert result.per_class() == report["per_class"]
    assert result.loss == pytest.approx(report["loss"], rel=1e-9)
    assert result.top1 > 0.5  # a trained model, not a constant predictor
    # other batch sizes change only float rounding
    other, _, _ = evaluate_checkpoint(run / "model.pt", batch_size=256)
    assert other.confusion == report["confusion"]
    assert other.loss == pytest.approx(report["loss"], rel=1e-5)


def test_evaluate_checkpoint_other_split(run: Path) -> None:
    val, _, _ = evaluate_checkpoint(run / "model.pt", split="val")
    history = json.loads((run / "train.json").read_text())["epochs"]
    best = max(history, key=lambda h: (h["val_top1"], -h["val_loss"]))
    assert val.n == 179
    assert val.top1 == pytest.approx(best["val_top1"])


def _ckpt(classes: list[str]) -> Checkpoint:
    return Checkpoint(arch="resnet8", shortcut="B", classes=classes,
                      preprocessing=PreprocessSpec(input_size=32, resize=32), state_dict={})


def _data(classes: list[str]) -> DatasetSplits:
    return DatasetSplits(name="pets", classes=classes, train=[], val=[], test=[])  # type: ignore[arg-type]


def test_check_classes_accepts_the_same_classes() -> None:
    check_classes(_ckpt(["a", "b", "c"]), _data(["a", "b", "c"]), "m.pt")


def test_check_classes_count_mismatch() -> None:
    with pytest.raises(CheckpointError, match="has 10 classes but pets has 3"):
        check_classes(_ckpt([str(i) for i in range(10)]), _data(["a", "b", "c"]), "m.pt")


@pytest.mark.parametrize("names", [["a", "b", "x"], ["b", "a", "c"]], ids=["renamed", "reordered"])
def test_check_classes_name_mismatch(names: list[str]) -> None:
    with pytest.raises(CheckpointError, match="differ"):
        check_classes(_ckpt(["a", "b", "c"]), _data(names), "m.pt")
