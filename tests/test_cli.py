"""The real `edge-resnet` console script, run as a subprocess on real small inputs.

Every command runs in a tmp_path working directory, so a stray default (runs/...) can never land
in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edge_resnet.data.digits import read_digits
from edge_resnet.models import create_model

# the slow lane: the command line in child processes, training and exporting real runs (`pytest -m "not slow"` leaves them out)
pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "edge-resnet"
RUN_FILES = {"last.pt", "model.pt", "train.json", "eval-digits-test.json"}
RESULT_LINE = re.compile(r"top-1 (\d+\.\d\d)%  top-5 (\d+\.\d\d)%  \((\d+)/(\d+) images, loss (\d+\.\d{4})\)")


def cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1, exactly one `edge-resnet: error:` line, last on stderr, no traceback anywhere."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edge-resnet: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == errors[0]  # nothing continues it
    assert "edge-resnet: error:" not in proc.stdout
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def listing(d: Path) -> dict[str, bytes]:
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d))}


def no_tmp(d: Path) -> None:
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")], os.listdir(d)


def image_folder(root: Path, classes: list[str], per_class: int = 6) -> Path:
    """An ImageFolder of real PNGs: digit images of 0, 1, 2... under the given class names."""
    images, labels = read_digits()
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j, idx in enumerate(np.flatnonzero(labels == c)[:per_class]):
            Image.fromarray(images[idx]).resize((32, 32)).save(root / name / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def trained(work: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`edge-resnet train --model resnet8 --epochs 1` into a fresh folder."""
    out = work / "run"
    proc = ok(cli("train", "--model", "resnet8", "--epochs", "1", "--batch-size", "32", "--output", out, cwd=work))
    return out, proc


# ---------------------------------------------------------------- help and models

@pytest.mark.parametrize("args, expect", [
    ((), ["train", "eval", "models"]),
    (("train",), ["--resume", "--model", "--epochs", "torchrun"]),
    (("eval",), ["--model", "--split", "--json"]),
    (("models",), ["--json"]),
])
def test_help(args: tuple[str, ...], expect: list[str], tmp_path: Path) -> None:
    proc = ok(cli(*args, "--help", cwd=tmp_path))
    assert proc.stdout.startswith("usage: edge-resnet")
    for word in expect:
        assert word in proc.stdout


def test_version(tmp_path: Path) -> None:
    from edge_resnet import __version__

    assert ok(cli("--version", cwd=tmp_path)).stdout.strip() == f"edge-resnet {__version__}"


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = cli("train", "--schedule", "linear", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert os.listdir(tmp_path) == []


def _params(name: str) -> int:
    return sum(p.numel() for p in create_model(name, num_classes=10).parameters())


def test_models_table(tmp_path: Path) -> None:
    out = ok(cli("models", cwd=tmp_path)).stdout
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[2:] if ln.strip()}
    # the paper's count (He et al. 2016, table 6): ResNet-20 0.27M
    assert rows["resnet20"][1:6] == ["cifar", "20", "residual", "32x32", "0.27M"]
    assert rows["plain56"][1:6] == ["cifar", "56", "plain", "32x32", f"{_params('plain56') / 1e6:.2f}M"]
    # option B (the default) adds two projection shortcuts to the paper's 0.85M of option A
    assert rows["resnet56"][5] == f"{_params('resnet56') / 1e6:.2f}M" == "0.86M"
    assert rows["resnet50"][1:6] == ["imagenet", "50", "residual", "224x224", "25.56M"]


def test_models_json(tmp_path: Path) -> None:
    records = {r["name"]: r for r in json.loads(ok(cli("models", "--json", cwd=tmp_path)).stdout)}
    assert {"resnet8", "resnet20", "plain56", "resnet50"} <= set(records)
    assert records["resnet20"]["params"] == _params("resnet20")
    assert records["plain56"] == records["plain56"] | {"family": "cifar", "depth": 56, "residual": False,
                                                       "input_size": 32, "params": _params("plain56")}
    assert records["resnet50"]["params"] == 25_557_032  # torchvision's ResNet-50
    assert records["resnet20"]["flops"] < records["resnet56"]["flops"]


# ---------------------------------------------------------------- train then eval

def test_train_writes_the_run_and_prints_the_test_result(trained) -> None:
    out, proc = trained
    assert set(os.listdir(out)) == RUN_FILES
    assert "edge-resnet: error" not in proc.stderr
    assert re.search(r"^epoch +1/1 ", proc.stdout, re.M)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("test (best epoch 1):"))
    top1, top5, correct, n, loss = RESULT_LINE.search(line).groups()
    report = json.loads((out / "eval-digits-test.json").read_text())
    assert int(n) == report["images"] == 360
    assert f"{100 * report['top1']:.2f}" == top1
    assert f"{100 * report['top5']:.2f}" == top5
    assert int(correct) == sum(report["confusion"][i][i] for i in range(10))
    assert f"{report['loss']:.4f}" == loss
    assert f"checkpoint {out / 'model.pt'}" in proc.stdout


def test_eval_json_agrees_with_what_it_printed_and_with_training(trained, tmp_path: Path) -> None:
    out, train_proc = trained
    report_json = tmp_path / "sub" / "report.json"
    proc = ok(cli("eval", "--model", out / "model.pt", "--json", report_json, cwd=tmp_path))
    rep = json.loads(report_json.read_text())
    assert {"top1", "top5", "per_class", "confusion", "images", "loss", "classes"} <= set(rep)
    assert rep["checkpoint"] == str(out / "model.pt") and rep["split"] == "test" and rep["dataset"] == "digits"

    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("digits test:"))
    top1, top5, correct, n, _ = RESULT_LINE.search(line).groups()
    assert f"{100 * rep['top1']:.2f}" == top1 and f"{100 * rep['top5']:.2f}" == top5
    assert int(n) == rep["images"] == 360

    conf = np.array(rep["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 360
    assert int(correct) == int(np.trace(conf))
    assert rep["top1"] == pytest.approx(np.trace(conf) / 360)
    for i, row in enumerate(rep["per_class"]):
        assert row["class"] == str(i)
        assert row["images"] == conf[i].sum() and row["correct"] == conf[i, i]
    # the table printed below the summary line carries the same per-class counts
    for row in rep["per_class"]:
        assert re.search(rf"^{row['class']} +{row['images']} +{row['correct']} ", proc.stdout, re.M)
    # the same checkpoint on the same split: the numbers training printed
    train_line = next(ln for ln in train_proc.stdout.splitlines() if ln.startswith("test (best epoch"))
    assert RESULT_LINE.search(train_line).groups()[:4] == (top1, top5, correct, n)
    assert f"wrote {report_json}" in proc.stdout
    no_tmp(report_json.parent)


def test_eval_default_json_beside_the_checkpoint(trained, tmp_path: Path) -> None:
    out, _ = trained
    run = tmp_path / "copy"
    run.mkdir()
    shutil.copy(out / "model.pt", run / "model.pt")
    ok(cli("eval", "--model", run / "model.pt", "--split", "val", cwd=tmp_path))
    assert sorted(os.listdir(run)) == ["eval-digits-val.json", "model.pt"]
    assert json.loads((run / "eval-digits-val.json").read_text())["images"] == 179


# ---------------------------------------------------------------- errors: one line, exit 1, nothing left behind

def test_unknown_model(tmp_path: Path) -> None:
    line = user_error(cli("train", "--model", "resnet9", "--epochs", "1", "--output", tmp_path / "o", cwd=tmp_path),
                      "resnet9", "resnet20")
    assert "unknown model" in line
    assert not (tmp_path / "o").exists()


def test_missing_data_folder(tmp_path: Path) -> None:
    user_error(cli("train", "--model", "resnet8", "--epochs", "1", "--data", tmp_path / "nope",
                   "--output", tmp_path / "o", cwd=tmp_path), str(tmp_path / "nope"), "does not exist")
    assert not (tmp_path / "o").exists()


def test_folder_without_class_subfolders(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    images, _ = read_digits()
    for i in range(4):
        Image.fromarray(images[i]).save(flat / f"{i}.png")
    user_error(cli("train", "--model", "resnet8", "--epochs", "1", "--data", flat, "--output", tmp_path / "o",
                   cwd=tmp_path), "no class subfolders")
    assert not (tmp_path / "o").exists()


def test_eval_on_a_folder_with_another_class_count(trained, tmp_path: Path) -> None:
    out, _ = trained
    data = image_folder(tmp_path / "abc", ["a", "b", "c"])
    before = listing(out)
    report = tmp_path / "r.json"
    user_error(cli("eval", "--model", out / "model.pt", "--data", data, "--json", report, cwd=tmp_path),
               "10 classes", "3")
    assert not report.exists()
    assert listing(out) == before  # no eval-abc-test.json, no temp file


def test_eval_on_a_folder_with_other_class_names(trained, tmp_path: Path) -> None:
    out, _ = trained
    names = [f"n{i}" for i in range(10)]  # ten classes, but not named as in training
    data = image_folder(tmp_path / "named", names, per_class=3)
    before = listing(out)
    user_error(cli("eval", "--model", out / "model.pt", "--data", data, cwd=tmp_path), "differ")
    assert listing(out) == before


def test_truncated_checkpoint(trained, tmp_path: Path) -> None:
    out, _ = trained
    cut = tmp_path / "cut"
    cut.mkdir()
    blob = (out / "model.pt").read_bytes()
    (cut / "model.pt").write_bytes(blob[: len(blob) // 2])
    user_error(cli("eval", "--model", cut / "model.pt", cwd=tmp_path), "truncated")
    assert os.listdir(cut) == ["model.pt"]


class _Payload:
    """Unpickling this would run open(marker, "w"): a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_pickled_code_is_refused_not_run(trained, tmp_path: Path) -> None:
    out, _ = trained
    obj = torch.load(out / "model.pt", weights_only=True)
    marker = tmp_path / "PWNED"
    obj["payload"] = _Payload(marker)
    evil = tmp_path / "evil" / "model.pt"
    evil.parent.mkdir()
    torch.save(obj, evil)
    user_error(cli("eval", "--model", evil, cwd=tmp_path), "refused as unsafe", "io.open")
    assert not marker.exists()
    assert os.listdir(evil.parent) == ["model.pt"]
    # as the starting point of a training run too
    user_error(cli("train", "--model", evil, "--epochs", "1", "--output", tmp_path / "o", cwd=tmp_path),
               "refused as unsafe")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    user_error(cli("eval", "--model", tmp_path / "none.pt", cwd=tmp_path), "does not exist")
    user_error(cli("eval", cwd=tmp_path), "edge-resnet train")  # the default run was never trained
    assert os.listdir(tmp_path) == []


def test_resume_with_nothing_to_resume(tmp_path: Path) -> None:
    user_error(cli("train", "--model", "resnet8", "--epochs", "1", "--output", tmp_path / "o", "--resume",
                   cwd=tmp_path), "nothing to resume")
    assert not (tmp_path / "o").exists()


def test_training_twice_into_the_same_output(trained, tmp_path: Path) -> None:
    out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = listing(run)
    user_error(cli("train", "--model", "resnet8", "--epochs", "1", "--output", run, cwd=tmp_path),
               "already holds", "--resume")
    assert listing(run) == before


def test_resume_with_a_conflicting_option(trained, tmp_path: Path) -> None:
    out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = listing(run)
    user_error(cli("train", "--model", "plain8", "--output", run, "--resume", cwd=tmp_path), "model")
    assert listing(run) == before


def test_num_classes_that_contradicts_the_data(tmp_path: Path) -> None:
    user_error(cli("train", "--model", "resnet8", "--epochs", "1", "--num-classes", "3", "--output", tmp_path / "o",
                   cwd=tmp_path), "--num-classes 3", "10 classes")
    assert not (tmp_path / "o").exists()


def test_amp_on_cpu(tmp_path: Path) -> None:
    user_error(cli("train", "--model", "resnet8", "--epochs", "1", "--device", "cpu", "--amp",
                   "--output", tmp_path / "o", cwd=tmp_path), "--amp")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- resume and fine-tune through the CLI

@pytest.mark.slow
def test_resume_extends_a_finished_run(trained, tmp_path: Path) -> None:
    out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    proc = ok(cli("train", "--output", run, "--resume", "--epochs", "2", cwd=tmp_path))
    assert re.search(r"^epoch +2/2 ", proc.stdout, re.M)
    assert not re.search(r"^epoch +1/", proc.stdout, re.M)  # epoch 1 is not trained again
    history = json.loads((run / "train.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["config"]["model"] == "resnet8" and history["config"]["epochs"] == 2
    no_tmp(run)


@pytest.mark.slow
def test_fine_tune_on_a_new_folder(trained, tmp_path: Path) -> None:
    out, _ = trained
    data = image_folder(tmp_path / "abc", ["a", "b", "c"], per_class=10)
    ft = tmp_path / "ft"
    proc = ok(cli("train", "--model", out / "model.pt", "--data", data, "--num-classes", "3", "--epochs", "1",
                  "--output", ft, cwd=tmp_path))
    assert set(os.listdir(ft)) == {"last.pt", "model.pt", "train.json", "eval-abc-test.json"}
    ckpt = torch.load(ft / "model.pt", weights_only=True)
    assert ckpt["arch"] == "resnet8" and ckpt["classes"] == ["a", "b", "c"]
    assert ckpt["state_dict"]["fc.weight"].shape[0] == 3
    assert "abc: " in proc.stdout
    ok(cli("eval", "--model", ft / "model.pt", "--data", data, cwd=tmp_path))
    assert (ft / "eval-abc-test.json").exists()
