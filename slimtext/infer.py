"""Predictor: a loaded model directory that turns texts into labels and probabilities.

Texts are tokenized once, batched by length (so short texts are not padded to long ones) and the
results are returned in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .artifact import ModelDir, read_model_dir
from .train.evaluate import predict_logits

BACKENDS = ("torch",)


class Predictor:
    """`predict(texts) -> labels`, `predict_proba(texts) -> (N, C) array`, over one backend."""

    def __init__(
        self,
        model_dir: ModelDir,
        backend: str = "torch",
        device: str = "cpu",
        batch_size: int = 64,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model_dir = model_dir
        self.backend = backend
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = model_dir.model.to(self.device).eval()

    @property
    def labels(self) -> list[str]:
        return list(self.model_dir.labels)

    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.model_dir.labels)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.model_dir.tokenizer.encode(_check_texts(texts), self.model_dir.max_length)

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.encode(texts)
        if not ids:
            return torch.empty(0, len(self.labels))
        return predict_logits(
            self.model, ids, self.model_dir.tokenizer.pad_id, self.batch_size, self.device
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return torch.softmax(self.logits(texts), dim=-1).numpy()

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in self.logits(texts).argmax(-1).tolist()]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string: predict([text])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
    return texts


def load(
    path: str | os.PathLike, backend: str = "torch", device: str = "cpu", batch_size: int = 64
) -> Predictor:
    """Load a model directory for prediction."""
    return Predictor(read_model_dir(path), backend=backend, device=device, batch_size=batch_size)
