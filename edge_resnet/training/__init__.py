"""Training and evaluation loops, checkpoints, torchrun support."""

from edge_resnet.training.checkpoint import Checkpoint, load_checkpoint, read_weights, save_checkpoint
from edge_resnet.training.config import TrainConfig, learning_rate
from edge_resnet.training.evaluate import EvalResult, evaluate
from edge_resnet.training.loop import EpochStats, TrainMonitor, TrainResult, train

__all__ = [
    "Checkpoint", "EpochStats", "EvalResult", "TrainConfig", "TrainMonitor", "TrainResult",
    "evaluate", "learning_rate", "load_checkpoint", "read_weights", "save_checkpoint", "train",
]
