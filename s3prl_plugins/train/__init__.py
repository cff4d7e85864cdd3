"""The one trainer and its pluggable objectives (tasks)."""

from s3prl_plugins.train.trainer import Trainer, TrainerConfig, TrainingError

__all__ = ["Trainer", "TrainerConfig", "TrainingError"]
