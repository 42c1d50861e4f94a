"""Batched forward passes over encoded data, in input order, and the evaluation report."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import length_sorted_batches, pad_batch
from ..metrics import classification_report
from ..tokenizer import pool_windows, row_lengths
from .distributed import DistContext, all_gather_object
from .precision import autocast


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's weights (CPU for one without tensors, e.g. packed int8)."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


@torch.no_grad()  # not inference_mode: sharded (fsdp) params must stay usable for autograd
def predict_logits(
    model: nn.Module,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (N, num_labels) in float32, rows in the order of `ids`.

    Rows are batched longest-first so each batch pads only to similar lengths; the result is
    scattered back to input order. `device`: where the inputs go; None = where the model is.
    """
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    try:
        for rows in length_sorted_batches(row_lengths(ids), batch_size):
            b = pad_batch(ids, rows, pad_id).to(device)
            with autocast(device, precision):
                logits = model(b.input_ids, b.attention_mask)
            if out is None:
                out = torch.empty(len(ids), logits.shape[-1], dtype=torch.float32)
            out[b.index] = logits.float().cpu()
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("nothing to predict: the input is empty")
    return out


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           weight: torch.Tensor | None = None,
                           label_smoothing: float = 0.0) -> torch.Tensor:  # fmt: skip
    """The cross-entropy, each row's loss weighted by its label's `weight` (one per label id,
    from `class_weights`; None: unweighted)."""
    if weight is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    # The mean over rows of each row's weighted loss, not torch's weighted mean (which divides
    # by the batch's weight sum): a row then counts the same whichever batch, micro-batch or
    # rank it lands in, so accumulation and DDP still give one process's gradient; "balanced"
    # weights average 1 over the data, so the lr means the same.
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    return (ce * weight.to(ce.device)[labels]).mean()


def evaluate(
    model: nn.Module,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    label_names: Sequence[str],
    pad_id: int,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    dist: DistContext | None = None,
    owner: Sequence[int] | None = None,
    weight: torch.Tensor | None = None,
) -> dict:
    """`classification_report` of the model on encoded data, plus the mean cross-entropy
    (each text's weighted by its label's `weight` as in training, when given).

    Under a distributed context each rank scores an equal share of the rows (fsdp needs every
    rank to run the same number of forwards) and the logits are gathered, so every rank returns
    the same report. The ranks of a tp group (`dist.replicas`) score the same rows together.
    """
    if dist is not None and dist.distributed:
        n, world = len(ids), dist.data_world
        per = -(-n // world)
        mine = [(dist.data_rank + world * j) % n for j in range(per)]
        local = predict_logits(model, [ids[i] for i in mine], pad_id, batch_size, device, precision)
        logits = torch.empty(n, local.shape[1])
        for rows, part in all_gather_object(dist, (mine, local)):
            logits[torch.tensor(rows)] = part
    else:
        logits = predict_logits(model, ids, pad_id, batch_size, device, precision)
    y = torch.tensor(list(labels), dtype=torch.long)
    if owner is not None:
        n = max(owner) + 1
        logits = pool_windows(logits, owner, n)
        y = torch.zeros(n, dtype=torch.long).index_copy_(0, torch.as_tensor(owner), y)
    report = classification_report(y.tolist(), logits.argmax(-1).tolist(), label_names)
    # the training objective's own weighting: `--metric loss` then stops on what is trained
    report["loss"] = float(weighted_cross_entropy(logits, y, weight))
    return report
