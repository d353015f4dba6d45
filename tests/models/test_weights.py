"""Reading weights files: torchvision ``.pth``, training checkpoints, ours; and refusing bad files.

Every file is real: written with ``torch.save`` (or cut, or filled with garbage) under tmp_path.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edge_resnet.contract.preprocess import PreprocessSpec
from edge_resnet.errors import CheckpointError, ModelError
from edge_resnet.models import create_model, extract_state_dict, load_file, load_weights
from edge_resnet.training.checkpoint import Checkpoint, read_weights, save_checkpoint
from tests.helpers import randomise_bn

# ---------------------------------------------------------------- payloads that carry code

# Set by the payloads below if unpickling ever runs them.
SIDE_EFFECTS: list[str] = []


def _side_effect(marker: str) -> str:
    SIDE_EFFECTS.append(marker)
    Path(marker).write_text("pickled code ran")
    return "payload"


class ReducePayload:
    """Unpickling calls ``_side_effect`` (the classic ``__reduce__`` exploit)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_side_effect, (self.marker,))


class SetstatePayload:
    """Unpickling rebuilds this class and calls its ``__setstate__``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getstate__(self) -> dict:
        return {"marker": self.marker}

    def __setstate__(self, state: dict) -> None:
        _side_effect(state["marker"])
        self.__dict__.update(state)


# ---------------------------------------------------------------- helpers

@pytest.fixture
def tv_resnet18() -> nn.Module:
    torch.manual_seed(10)
    model = torchvision.models.resnet18(weights=None)
    randomise_bn(model, torch.Generator().manual_seed(11))
    return model.eval()


def _small_checkpoint(path: Path, *, legacy: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(12)
    sd = create_model("resnet8", num_classes=10).state_dict()
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    return sd


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- foreign weights that load

def test_torchvision_pth_loads_and_gives_torchvision_logits(tmp_path: Path, tv_resnet18: nn.Module) -> None:
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv_resnet18.state_dict(), path)
    state = read_weights(path)
    _assert_same_state(state, tv_resnet18.state_dict())

    from_file = create_model("resnet18", num_classes=1000)
    assert load_weights(from_file, state) is False
    from_memory = create_model("resnet18", num_classes=1000)
    from_memory.load_state_dict(tv_resnet18.state_dict(), strict=True)

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        got = from_file.eval()(x)
        assert torch.equal(got, from_memory.eval()(x))
        want = tv_resnet18(x)
    assert want.std() > 1e-3
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("nest", ["state_dict", "model", "state_dict_ema", "model_ema"])
@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", ""])
def test_training_checkpoint_is_unwrapped_and_unprefixed(tmp_path: Path, nest: str, prefix: str) -> None:
    torch.manual_seed(14)
    source = create_model("resnet8", num_classes=10)
    sd = source.state_dict()
    path = tmp_path / "checkpoint-3.pth.tar"
    torch.save({nest: {prefix + k: v for k, v in sd.items()}, "epoch": 3, "arch": "resnet8",
                "optimizer": {"lr": 0.1}}, path)
    state = read_weights(path)
    _assert_same_state(state, sd)
    target = create_model("resnet8", num_classes=10)
    assert load_weights(target, state) is False
    _assert_same_state(target.state_dict(), sd)


def test_ddp_prefix_on_a_bare_state_dict_is_stripped(tmp_path: Path) -> None:
    torch.manual_seed(15)
    sd = create_model("resnet8", num_classes=10).state_dict()
    path = tmp_path / "ddp.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    _assert_same_state(read_weights(path), sd)


def test_our_checkpoint_format_reads_back(tmp_path: Path) -> None:
    torch.manual_seed(16)
    sd = create_model("resnet8", num_classes=3, shortcut="A").state_dict()
    ckpt = Checkpoint(arch="resnet8", shortcut="A", classes=["a", "b", "c"],
                      preprocessing=PreprocessSpec(input_size=32, resize=32), state_dict=sd, extra={"epoch": 2})
    path = tmp_path / "model.pt"
    save_checkpoint(path, ckpt)
    _assert_same_state(read_weights(path), sd)


def test_head_of_another_size_is_replaced_and_the_rest_loaded(tv_resnet18: nn.Module) -> None:
    sd = tv_resnet18.state_dict()
    torch.manual_seed(17)
    model = create_model("resnet18", num_classes=10)
    fresh_fc = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    assert load_weights(model, sd) is True
    own = model.state_dict()
    assert own.keys() == sd.keys()
    for k, v in sd.items():
        if k.startswith("fc."):
            continue
        assert torch.equal(own[k], v), k
    assert model.fc.out_features == 10 and model.fc.in_features == 512
    assert own["fc.weight"].shape == (10, 512)
    # the new head is the model's own fresh one, not a slice of the 1000-class head
    assert torch.equal(own["fc.weight"], fresh_fc["fc.weight"])
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_weights_of_another_depth_raise_naming_the_keys(tv_resnet18: nn.Module) -> None:
    torch.manual_seed(18)
    sd34 = create_model("resnet34", num_classes=1000).state_dict()
    model18 = create_model("resnet18", num_classes=1000)
    own18 = set(model18.state_dict())
    unexpected = set(sd34) - own18
    assert unexpected and not own18 - set(sd34)
    with pytest.raises(ModelError) as exc:
        load_weights(model18, sd34, source="resnet34.pth")
    msg = str(exc.value)
    assert "resnet34.pth" in msg
    assert f"{len(unexpected)} unexpected" in msg
    assert "missing" not in msg
    named = re.findall(r"layer[\w.]+", msg)
    assert named and set(named) <= unexpected

    # the other way round: resnet18 weights lack resnet34's extra blocks
    model34 = create_model("resnet34", num_classes=1000)
    with pytest.raises(ModelError) as exc:
        load_weights(model34, tv_resnet18.state_dict())
    msg = str(exc.value)
    assert f"{len(unexpected)} missing" in msg
    named = re.findall(r"layer[\w.]+", msg)
    assert named and set(named) <= unexpected
    # nothing was loaded into the model that refused the weights
    assert not torch.equal(model34.state_dict()["conv1.weight"], tv_resnet18.state_dict()["conv1.weight"])


def test_weights_with_wrong_shapes_raise(tv_resnet18: nn.Module) -> None:
    torch.manual_seed(19)
    # the right keys, but a stem conv of another kernel size
    model = create_model("resnet18", num_classes=1000)
    sd = dict(tv_resnet18.state_dict())
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(ModelError, match="wrong shape.*conv1.weight"):
        load_weights(model, sd)


def test_bottleneck_weights_do_not_fit_a_basic_net(tv_resnet18: nn.Module) -> None:
    torch.manual_seed(20)
    model = create_model("resnet50", num_classes=1000)
    with pytest.raises(ModelError, match="missing"):
        load_weights(model, tv_resnet18.state_dict())


def test_extract_state_dict_rejects_things_that_are_not_state_dicts() -> None:
    for obj in ({}, [torch.zeros(1)], {"epoch": 3}, {"state_dict": {"a": 1}}, torch.zeros(3)):
        with pytest.raises(CheckpointError, match="no state dict"):
            extract_state_dict(obj, source="x.pth")


# ---------------------------------------------------------------- files that carry code

@pytest.mark.parametrize("payload", [ReducePayload, SetstatePayload])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, payload: type) -> None:
    torch.manual_seed(21)
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    sd = create_model("resnet8", num_classes=10).state_dict()
    torch.save({"state_dict": sd, "x": payload(str(marker))}, path)
    SIDE_EFFECTS.clear()
    with pytest.raises(CheckpointError, match="refused") as exc:
        read_weights(path)
    assert str(path) in str(exc.value)
    assert not marker.exists() and SIDE_EFFECTS == []
    with pytest.raises(CheckpointError, match="refused"):
        load_file(path)
    assert not marker.exists() and SIDE_EFFECTS == []
    # the payload is live: an unrestricted load does run it
    torch.load(path, weights_only=False)
    assert marker.exists() and SIDE_EFFECTS == [str(marker)]
    SIDE_EFFECTS.clear()


class _SystemPayload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_global_of_a_blocked_module_is_named_as_unsafe_not_as_damage(tmp_path: Path) -> None:
    """torch words this refusal differently ("whose module posix is blocked"): still unsafe, still named."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": create_model("resnet8", num_classes=10).state_dict(), "x": _SystemPayload()}, path)
    with pytest.raises(CheckpointError) as exc:
        load_file(path)
    assert "refused as unsafe" in str(exc.value) and "posix.system" in str(exc.value)
    assert "truncated" not in str(exc.value)


def test_argparse_namespace_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(22)
    path = tmp_path / "with-args.pth"
    sd = create_model("resnet8", num_classes=10).state_dict()
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1, arch="resnet8")}, path)
    with pytest.raises(CheckpointError, match="refused") as exc:
        read_weights(path)
    assert "argparse.Namespace" in str(exc.value)


# ---------------------------------------------------------------- broken files

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.5, 0.1, 0.9, 300, 1000, 5000])
def test_truncated_checkpoint_raises_checkpoint_error(tmp_path: Path, legacy: bool, keep: float) -> None:
    path = tmp_path / "cut.pth"
    _small_checkpoint(path, legacy=legacy)
    data = path.read_bytes()
    n = int(len(data) * keep) if keep < 1 else int(keep)
    assert 0 < n < len(data)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated"):
        read_weights(path)


def test_missing_file_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        read_weights(path)
    assert str(path) in str(exc.value)


def test_random_bytes_raise_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.pth"
    for seed in range(40):
        path.write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(CheckpointError):
            read_weights(path)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"<html><body>404 Not Found</body></html>\n",
                                     b"PK\x03\x04" + bytes(100)], ids=["empty", "text", "html", "zip-header"])
def test_files_that_are_not_checkpoints_raise_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "resnet18.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        read_weights(path)
    assert str(path) in str(exc.value)


def test_garbage_is_not_reported_as_refused_pickled_code(tmp_path: Path) -> None:
    """A file of noise is "not a PyTorch file", not a checkpoint "carrying pickled Python objects"."""
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as exc:
        read_weights(path)
    assert "not a PyTorch file" in str(exc.value)
    assert "refused" not in str(exc.value)
