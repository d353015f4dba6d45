"""Training and evaluation loops, checkpoints, torchrun support."""

from edge_resnet._lazy import lazy_exports

_EXPORTS = {
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_weights": "checkpoint",
    "save_checkpoint": "checkpoint",
    "TrainConfig": "config",
    "learning_rate": "config",
    "EvalResult": "evaluate",
    "evaluate": "evaluate",
    "EpochStats": "loop",
    "TrainMonitor": "loop",
    "TrainResult": "loop",
    "train": "loop",
}
lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
