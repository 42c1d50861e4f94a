"""Classifier families. `build_model(config)` is the one way to make a model from a config."""

from __future__ import annotations

from torch import nn

from .attention_pool import AttentionPoolingClassifier
from .config import ModelConfig
from .transformer import TransformerClassifier

MODELS: dict[str, type[nn.Module]] = {
    "transformer": TransformerClassifier,
    "attention": AttentionPoolingClassifier,
}


def build_model(config: ModelConfig) -> nn.Module:
    return MODELS[config.arch](config)


__all__ = [
    "AttentionPoolingClassifier",
    "ModelConfig",
    "TransformerClassifier",
    "build_model",
]
