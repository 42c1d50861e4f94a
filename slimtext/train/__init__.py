"""Training: the loop, precision decisions, checkpoints."""

from .evaluate import evaluate, predict_logits
from .trainer import Encoded, TrainConfig, TrainResult, fit

__all__ = ["Encoded", "TrainConfig", "TrainResult", "evaluate", "fit", "predict_logits"]
