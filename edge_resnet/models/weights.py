"""Reading weights from local files: torchvision ``.pth``, timm checkpoints and our own.

Everything goes through ``torch.load(weights_only=True)``: a file that needs to run pickled
code to load is refused, never executed.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edge_resnet.errors import CheckpointError, ModelError

log = logging.getLogger(__name__)

# Where common training scripts nest the weights inside a checkpoint dict, most specific first.
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Prefixes added by DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def load_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and errors a user can act on.

    Raises:
        CheckpointError: missing, truncated/corrupt, or carrying pickled code.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}; pass the path of a .pt/.pth file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused is None:
            raise _unreadable(path, e) from None
        raise CheckpointError(
            f"checkpoint {path} was refused as unsafe: its pickle needs {refused}, which could run code when "
            "loaded (nothing was run); if you trust it, re-save just its tensors: torch.save(sd, 'clean.pth') "
            "with sd a plain state dict"
        ) from None
    except Exception as e:  # torch raises many types (IndexError, KeyError...) for damaged files
        raise _unreadable(path, e) from None


# How torch's weights-only unpickler names what it refused (torch/_weights_only_unpickler.py): a global
# that is not allow-listed, one from a blocked module (os, posix, subprocess...), an object of a class
_REFUSALS = (r"Unsupported global: GLOBAL ([\w.]+)", r"unsupported GLOBAL ([\w.]+) whose module",
             r"but got <class '([\w.]+)'>")


def _refused_global(message: str) -> str | None:
    """The global a weights-only load refused, as torch names it; None when it refused something else
    (a damaged pickle: an unknown opcode, a string too long)."""
    for pattern in _REFUSALS:
        found = re.search(pattern, message)
        if found is not None:
            return found.group(1)
    return None


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is truncated or not a PyTorch file ({type(e).__name__}); "
        "copy it again or point to another file"
    )


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The tensor dict inside a loaded checkpoint, unwrapped and with training prefixes stripped."""
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict (expected a dict of tensors)")
    state = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    return state


def load_weights(model: nn.Module, state: dict[str, Tensor], *, source: str = "weights") -> bool:
    """Load ``state`` into ``model`` strictly, except a classifier of another size.

    Returns:
        True when the head (``fc``) was left freshly initialised because its shape differs.

    Raises:
        ModelError: keys or shapes that do not belong to this architecture.
    """
    own = model.state_dict()
    head_replaced = False
    if "fc.weight" in state and "fc.weight" in own and state["fc.weight"].shape != own["fc.weight"].shape:
        log.info("%s: classifier has %d classes, the model %d; keeping a new head",
                 source, state["fc.weight"].shape[0], own["fc.weight"].shape[0])
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        head_replaced = True
    missing = [k for k in own if k not in state and not (head_replaced and k.startswith("fc."))]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ModelError(
            f"{source} do not fit this architecture: {'; '.join(parts)}; "
            "check --model (depth, shortcut option) matches the file"
        )
    model.load_state_dict(state, strict=not head_replaced)
    return head_replaced
