"""Knowledge distillation (Hinton et al. 2015) through the ordinary training loop.

    loss = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))

The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows. Teacher
logits are computed once and cached in a memory-mapped `.npy` (row i = example i), and the loss
looks rows up by `batch.index`, so distillation costs one teacher pass, not one per epoch. On
unlabelled transfer texts use `alpha=0`: the labels the trainer wants are then the teacher's
argmax and never enter the loss.

A student that keeps the teacher's width starts from a subset of its layers (and its embeddings
and head), as DistilBERT does: a much better start than random weights.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import Batch
from ..models import ModelConfig, build_model
from ..train.evaluate import predict_logits
from ..train.trainer import Encoded, TrainConfig, TrainResult, fit
from ._util import record
from .factorize import DropLayers, drop_layers_, every_other


@dataclass
class Distillation:
    alpha: float = 0.5  # weight of the hard-label cross-entropy; 0 = soft labels only
    temperature: float = 2.0
    version: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def teacher_logits(
    teacher: nn.Module,
    data: Encoded,
    pad_id: int,
    cache: str | os.PathLike | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """(N, C) float32 teacher logits, computed once; with `cache`, stored as `.npy` and returned
    memory-mapped (reused when it already holds N rows)."""
    if cache is not None:
        cache = Path(cache)
        if cache.is_file():
            arr = np.load(cache, mmap_mode="r")
            if arr.shape[0] == len(data):
                return arr
    logits = predict_logits(teacher, data.ids, pad_id, batch_size).numpy().astype(np.float32)
    if cache is None:
        return logits
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, logits)
    os.replace(tmp, cache)
    return np.load(cache, mmap_mode="r")


def distillation_loss(soft: np.ndarray | torch.Tensor, config: Distillation):
    """`loss_fn(logits, batch)` for `fit`: rows of the cached teacher logits by `batch.index`."""
    T, a = config.temperature, config.alpha

    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        idx = batch.index.numpy()
        t = torch.as_tensor(np.asarray(soft[np.sort(idx)]), device=logits.device)
        # np.sort + inverse permutation: memmap fancy indexing wants sorted rows to stay cheap.
        t = t[torch.as_tensor(np.argsort(np.argsort(idx)), device=logits.device)]
        kl = F.kl_div(
            F.log_softmax(logits / T, -1), F.log_softmax(t / T, -1), reduction="batchmean",
            log_target=True,
        )  # fmt: skip
        loss = (1.0 - a) * T * T * kl
        if a > 0:
            loss = loss + a * F.cross_entropy(logits, batch.labels)
        return loss

    return loss_fn


def make_student(teacher: nn.Module, **overrides) -> nn.Module:
    """A student from the teacher's config with `overrides` (e.g. num_layers=2). With the same
    width it starts as a copy of the teacher keeping evenly spread layers; otherwise it is
    freshly initialised (same vocabulary: it shares the teacher's tokenizer)."""
    tcfg: ModelConfig = teacher.config
    scfg = replace(tcfg, **overrides)
    same_width = all(
        getattr(scfg, k) == getattr(tcfg, k)
        for k in ("arch", "hidden_size", "num_heads", "ffn_size", "pooling", "share_layers",
                  "max_length", "vocab_size", "num_labels")
    ) and scfg.num_layers <= tcfg.num_layers  # fmt: skip
    if same_width:
        student = copy.deepcopy(teacher)
        if scfg.num_layers < tcfg.num_layers:
            drop_layers_(student, DropLayers(every_other(tcfg.num_layers, scfg.num_layers)))
        return student
    return build_model(scfg)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train: Encoded,
    valid: Encoded | None,
    train_config: TrainConfig,
    config: Distillation | None = None,
    *,
    label_names: Sequence[str],
    pad_id: int,
    cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[TrainResult, dict]:
    """Train `student` in place on `train` against the teacher's cached logits; returns the
    training result and the `compression` record. `train.labels` may be None (unlabelled
    transfer texts): then only the soft term is used."""
    config = config or Distillation()
    soft = teacher_logits(teacher, train, pad_id, cache)
    if train.labels is None:
        if config.alpha > 0:
            config = replace(config, alpha=0.0)
        # fit wants labels; the teacher's argmax fills them, the loss ignores them (alpha=0).
        train = Encoded(train.ids, np.asarray(soft).argmax(-1).tolist())
    result = fit(
        student, train, valid, train_config, label_names=label_names, pad_id=pad_id,
        loss_fn=distillation_loss(soft, config), progress=progress,
    )  # fmt: skip
    student.cpu().eval()
    return result, record("distill", config, student=student.config.to_dict())
