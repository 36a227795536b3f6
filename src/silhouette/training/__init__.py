"""silhouette.training: the alternating obfuscator/deobfuscator game with a frozen detector."""

from silhouette.training.config import Config, config_from_dict, load_config
from silhouette.training.engine import AdversarialEngine, TrainingDiverged
from silhouette.training.trainer import Trainer, evaluate, train

__all__ = ["AdversarialEngine", "Config", "Trainer", "TrainingDiverged", "config_from_dict", "evaluate", "load_config", "train"]
