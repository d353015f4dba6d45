"""The training loop: learning-rate schedule, run artifacts, learning, resume, guards, torchrun.

Every run is a real resnet8/plain8 on the bundled digits, written under tmp_path.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from edge_resnet.errors import ConfigError, EdgeResNetError
from edge_resnet.models import create_model
from edge_resnet.training import TrainConfig, learning_rate, load_checkpoint, train
from edge_resnet.training.evaluate import evaluate_checkpoint

RUN_FILES = {"last.pt", "model.pt", "train.json", "eval-digits-test.json"}
BIN = Path(sys.executable).parent


def _files(d: Path) -> set[str]:
    return set(os.listdir(d))


def _no_tmp(d: Path) -> None:
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")], os.listdir(d)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0 or not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0.0, msg=k)


# ---------------------------------------------------------------- learning-rate schedule

class TestLearningRate:
    def test_warmup_starts_at_a_tenth_and_ramps_linearly(self) -> None:
        cfg = TrainConfig(lr=0.1, epochs=10, warmup_epochs=2)
        spe = 50  # warm-up is 100 steps
        assert learning_rate(cfg, 0, spe) == pytest.approx(0.01)
        assert learning_rate(cfg, 50, spe) == pytest.approx(0.01 + 0.09 * 0.5)
        assert learning_rate(cfg, 25, spe) == pytest.approx(0.01 + 0.09 * 0.25)
        ramp = [learning_rate(cfg, s, spe) for s in range(100)]
        steps = [b - a for a, b in pairwise(ramp)]
        assert steps == pytest.approx([0.09 / 100] * 99)  # constant increment: linear

    def test_cosine_peaks_after_warmup_and_ends_near_zero(self) -> None:
        cfg = TrainConfig(lr=0.2, epochs=10, warmup_epochs=1, schedule="cosine")
        spe = 40
        total, warm = 400, 40
        assert learning_rate(cfg, warm, spe) == pytest.approx(0.2)
        # half-way through the cosine part: lr/2
        assert learning_rate(cfg, warm + (total - warm) // 2, spe) == pytest.approx(0.1)
        last = learning_rate(cfg, total - 1, spe)
        assert 0 < last < 0.2 * 1e-4
        assert last == pytest.approx(0.5 * 0.2 * (1 + math.cos(math.pi * (total - 1 - warm) / (total - warm))))
        after = [learning_rate(cfg, s, spe) for s in range(warm, total)]
        assert all(b < a for a, b in pairwise(after))  # strictly decreasing

    def test_cosine_without_warmup_starts_at_peak(self) -> None:
        cfg = TrainConfig(lr=0.1, epochs=4, warmup_epochs=0)
        assert learning_rate(cfg, 0, 10) == pytest.approx(0.1)

    def test_step_divides_by_ten_at_half_and_three_quarters(self) -> None:
        cfg = TrainConfig(lr=0.1, epochs=8, warmup_epochs=0, schedule="step")
        spe = 25  # 200 steps: drops at 100 and 150
        assert learning_rate(cfg, 0, spe) == pytest.approx(0.1)
        assert learning_rate(cfg, 99, spe) == pytest.approx(0.1)
        assert learning_rate(cfg, 100, spe) == pytest.approx(0.01)
        assert learning_rate(cfg, 149, spe) == pytest.approx(0.01)
        assert learning_rate(cfg, 150, spe) == pytest.approx(0.001)
        assert learning_rate(cfg, 199, spe) == pytest.approx(0.001)

    def test_step_with_warmup_uses_warmup_first(self) -> None:
        cfg = TrainConfig(lr=0.1, epochs=8, warmup_epochs=1, schedule="step")
        assert learning_rate(cfg, 0, 25) == pytest.approx(0.01)
        assert learning_rate(cfg, 25, 25) == pytest.approx(0.1)
        assert learning_rate(cfg, 100, 25) == pytest.approx(0.01)


# ---------------------------------------------------------------- a real run

@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """resnet8, 2 epochs, batch 32 on the bundled digits (about 3 s)."""
    out = tmp_path_factory.mktemp("run") / "resnet8"
    cfg = TrainConfig(model="resnet8", epochs=2, batch_size=32, output=str(out), device="cpu", seed=0)
    return cfg, train(cfg)


def test_run_writes_the_run_files(run) -> None:
    cfg, result = run
    out = Path(cfg.output)
    assert _files(out) == RUN_FILES
    assert result.run_dir == out and result.checkpoint == out / "model.pt"
    assert len(result.history) == 2 and [h.epoch for h in result.history] == [1, 2]


def test_model_pt_is_a_plain_weights_only_dict(run) -> None:
    cfg, result = run
    obj = torch.load(Path(cfg.output) / "model.pt", weights_only=True)
    assert obj["arch"] == "resnet8"
    assert obj["classes"] == [str(d) for d in range(10)]
    assert obj["num_classes"] == 10
    pre = obj["preprocessing"]
    assert isinstance(pre, dict) and pre["input_size"] == 32
    assert "train_state" not in obj  # only last.pt carries the resume state
    assert obj["epoch"] == result.best_epoch
    model = create_model("resnet8", num_classes=10)
    model.load_state_dict(obj["state_dict"], strict=True)  # every key, every shape
    assert all(t.device.type == "cpu" for t in obj["state_dict"].values())


def test_last_pt_holds_the_resume_state(run) -> None:
    cfg, _ = run
    last = load_checkpoint(Path(cfg.output) / "last.pt")
    state = last.extra["train_state"]
    assert state["epoch"] == 2
    assert TrainConfig.from_dict(state["config"]) == cfg
    assert len(state["history"]) == 2


def test_training_learns(run) -> None:
    _, result = run
    val = [h.val_top1 for h in result.history]
    # chance is 10%; resnet8 at batch 32 is near 80% after two epochs
    assert max(val) > 0.5
    assert result.test.top1 > 0.5
    assert result.history[1].train_loss < result.history[0].train_loss
    assert result.best_epoch == 1 + max(range(2), key=lambda i: (val[i], -result.history[i].val_loss))


def test_train_json_matches_history(run) -> None:
    cfg, result = run
    doc = json.loads((Path(cfg.output) / "train.json").read_text())
    assert doc["config"]["model"] == "resnet8"
    assert [e["val_top1"] for e in doc["epochs"]] == [h.val_top1 for h in result.history]


def test_fine_tune_from_our_checkpoint(run, tmp_path: Path) -> None:
    cfg, _ = run
    base = load_checkpoint(Path(cfg.output) / "model.pt")
    # lr so small the weights can barely move: what comes out must be what went in
    ft_cfg = TrainConfig(model=str(Path(cfg.output) / "model.pt"), epochs=1, lr=1e-9, warmup_epochs=0,
                         output=str(tmp_path / "ft"), device="cpu")
    result = train(ft_cfg)
    tuned = load_checkpoint(result.checkpoint)
    assert tuned.arch == "resnet8"
    assert tuned.preprocessing == base.preprocessing
    weights = [k for k, v in base.state_dict.items() if k.endswith("weight") and v.dim() == 4]
    assert weights
    for k in weights:
        torch.testing.assert_close(tuned.state_dict[k], base.state_dict[k], atol=1e-6, rtol=0)
    # and the trained weights are not what a fresh model starts from
    fresh = create_model("resnet8", num_classes=10).state_dict()
    assert not torch.allclose(fresh[weights[0]], tuned.state_dict[weights[0]], atol=1e-3)
    # starting from an 80% model, one epoch that does nothing keeps it well above chance
    assert result.test.top1 > 0.5


def test_resampler_is_kept_or_replaced_when_fine_tuning(run, tmp_path: Path) -> None:
    """--resampler reaches the checkpoint's spec: a fresh model gets it, a fine-tuned one keeps its
    own unless one is asked for (then only that field changes)."""
    from edge_resnet.data import load_dataset
    from edge_resnet.training.loop import default_preprocessing
    cfg, _ = run
    base = load_checkpoint(Path(cfg.output) / "model.pt").preprocessing
    assert base.resampler == "pil"
    digits = load_dataset(None)
    assert default_preprocessing("resnet18", digits, None).resampler == "pil"
    fresh = default_preprocessing("resnet18", digits, None, "opencv")
    assert (fresh.resampler, fresh.input_size, fresh.resize) == ("opencv", 224, 256)
    ft_cfg = TrainConfig(model=str(Path(cfg.output) / "model.pt"), epochs=1, lr=1e-9, warmup_epochs=0,
                         output=str(tmp_path / "ft"), device="cpu", resampler="opencv")
    tuned = load_checkpoint(train(ft_cfg).checkpoint).preprocessing
    assert tuned.resampler == "opencv" and tuned.to_dict() == {**base.to_dict(), "resampler": "opencv"}


# ---------------------------------------------------------------- resume

class _StopAfter:
    """A monitor that interrupts the run once ``epoch`` is done (as Ctrl-C would)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float, top1: float, images_per_s: float) -> None:
        pass

    def epoch_end(self, stats) -> None:
        if stats.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    common = dict(model="resnet8", epochs=2, batch_size=64, device="cpu", seed=3)
    a = TrainConfig(**common, output=str(tmp_path / "a"))
    result_a = train(a)

    b = TrainConfig(**common, output=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train(b, monitor=_StopAfter(1))
    assert load_checkpoint(tmp_path / "b" / "last.pt").extra["train_state"]["epoch"] == 1
    assert "eval-digits-test.json" not in _files(tmp_path / "b")
    _no_tmp(tmp_path / "b")

    result_b = train(b, resume=True)
    assert _files(tmp_path / "b") == RUN_FILES
    _assert_same_state(load_checkpoint(tmp_path / "a" / "last.pt").state_dict,
                       load_checkpoint(tmp_path / "b" / "last.pt").state_dict, atol=1e-6)
    _assert_same_state(load_checkpoint(tmp_path / "a" / "model.pt").state_dict,
                       load_checkpoint(tmp_path / "b" / "model.pt").state_dict, atol=1e-6)
    assert [h.epoch for h in result_b.history] == [1, 2]
    assert [h.val_top1 for h in result_b.history] == [h.val_top1 for h in result_a.history]
    assert result_b.test.confusion == result_a.test.confusion


def test_resume_may_extend_the_epochs(tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    train(TrainConfig(model="plain8", epochs=1, batch_size=128, output=out, device="cpu"))
    result = train(TrainConfig(model="resnet20", epochs=2, output=out, device="cpu"),
                   resume=True, explicit={"epochs", "output"})
    # resnet20 was not explicit: the saved run's plain8 continues, now for 2 epochs
    assert load_checkpoint(result.checkpoint).arch == "plain8"
    assert [h.epoch for h in result.history] == [1, 2]
    assert load_checkpoint(tmp_path / "r" / "last.pt").extra["train_state"]["config"]["epochs"] == 2


# ---------------------------------------------------------------- guards

@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("guard") / "plain8"
    train(TrainConfig(model="plain8", epochs=1, batch_size=128, output=str(out), device="cpu"))
    return out


def test_resume_with_a_conflicting_explicit_option_is_refused(one_epoch_run: Path) -> None:
    before = (one_epoch_run / "last.pt").read_bytes()
    cfg = TrainConfig(model="resnet8", epochs=1, output=str(one_epoch_run), device="cpu")
    with pytest.raises(ConfigError, match="model"):
        train(cfg, resume=True, explicit={"model", "output"})
    cfg = TrainConfig(model="plain8", epochs=1, lr=0.05, output=str(one_epoch_run), device="cpu")
    with pytest.raises(ConfigError, match="lr"):
        train(cfg, resume=True, explicit={"lr", "output"})
    assert (one_epoch_run / "last.pt").read_bytes() == before


def test_resume_without_last_pt_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(model="resnet8", epochs=1, output=str(tmp_path / "none"), device="cpu")
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg, resume=True)
    assert not (tmp_path / "none").exists()


def test_training_into_an_existing_run_is_refused(one_epoch_run: Path) -> None:
    before = {f: (one_epoch_run / f).read_bytes() for f in _files(one_epoch_run)}
    cfg = TrainConfig(model="plain8", epochs=1, output=str(one_epoch_run), device="cpu")
    with pytest.raises(ConfigError, match="already holds"):
        train(cfg)
    assert {f: (one_epoch_run / f).read_bytes() for f in _files(one_epoch_run)} == before


def test_num_classes_that_contradicts_the_data_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(model="resnet8", epochs=1, num_classes=5, output=str(tmp_path / "o"), device="cpu")
    with pytest.raises(ConfigError, match="--num-classes 5"):
        train(cfg)
    assert not (tmp_path / "o").exists()


def test_amp_on_cpu_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(model="resnet8", epochs=1, amp=True, output=str(tmp_path / "o"), device="cpu")
    with pytest.raises(ConfigError, match="amp"):
        train(cfg)
    assert not (tmp_path / "o").exists()


def test_weights_and_checkpoint_model_together_are_refused(one_epoch_run: Path, tmp_path: Path) -> None:
    ckpt = str(one_epoch_run / "model.pt")
    with pytest.raises(ConfigError, match="--weights"):
        train(TrainConfig(model=ckpt, weights=ckpt, epochs=1, output=str(tmp_path / "o"), device="cpu"))


def test_unknown_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeResNetError, match="resnet9"):
        train(TrainConfig(model="resnet9", epochs=1, output=str(tmp_path / "o"), device="cpu"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0), dict(lr=float("nan")),
                                 dict(schedule="linear"), dict(device="tpu"), dict(warmup_epochs=-1),
                                 dict(resampler="torch")])
def test_config_rejects_impossible_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


# ---------------------------------------------------------------- torchrun

@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
           str(BIN / "edge-resnet"), "train", "--model", "resnet8", "--epochs", "1", "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _files(out) == RUN_FILES  # one model.pt, no stray temp files from a second writer
    # each rank saw half of the test split; the summed counts must cover it exactly once
    report = json.loads((out / "eval-digits-test.json").read_text())
    assert report["images"] == 360
    single, _, _ = evaluate_checkpoint(out / "model.pt", batch_size=64)
    assert report["confusion"] == single.confusion
    assert report["top5"] == pytest.approx(single.top5)
    assert report["loss"] == pytest.approx(single.loss, rel=1e-4)
    # only rank 0 reports: one test line and one line per epoch
    tops = [ln for ln in proc.stdout.splitlines() if ln.startswith("test (best epoch")]
    assert len(tops) == 1
    assert sum(ln.lstrip().startswith("epoch") for ln in proc.stdout.splitlines()) == 1


# ---------------------------------------------------------------- CUDA

@pytest.mark.cuda
def test_cuda_amp_channels_last(tmp_path: Path) -> None:
    out = tmp_path / "cuda"
    cfg = TrainConfig(model="resnet8", epochs=4, device="cuda", amp=True, channels_last=True,
                      batch_size=32, output=str(out))
    result = train(cfg)
    assert _files(out) == RUN_FILES
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["state_dict"].values())
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    model = create_model("resnet8", num_classes=10)
    model.load_state_dict(ckpt["state_dict"])
    assert result.test.n == 360 and result.test.top1 > 0.2
    on_cpu, _, _ = evaluate_checkpoint(out / "model.pt", device="cpu")
    assert on_cpu.top1 == pytest.approx(result.test.top1, abs=0.02)  # fp16 vs fp32 may flip a few
