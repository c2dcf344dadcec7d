"""Training: configuration, the engine (checkpoints, exact resume, progress log), schedules."""

from .config import TrainConfig, load_config
from .engine import Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer", "load_config"]
