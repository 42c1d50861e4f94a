"""Small helpers shared by the compression verbs: module surgery, calibration batches, records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, is_dataclass

import torch
from torch import nn

from ..data.batching import Batch, length_sorted_batches, pad_batch
from ..tokenizer import row_lengths
from ..train.trainer import Encoded


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path `name` (e.g. `encoder.blocks.0.attn.qkv`)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a slimtext model (distinct modules: one when layers are shared)."""
    enc = getattr(model, "encoder", None)
    if enc is None or not hasattr(enc, "blocks"):
        raise TypeError(f"{type(model).__name__} has no `encoder.blocks`: not a slimtext model")
    return list(enc.blocks)


def calibration_batches(
    data: Encoded, pad_id: int, n_batches: int = 8, batch_size: int = 32
) -> list[Batch]:
    """The first `n_batches` batches of `data` (length-sorted, so little padding)."""
    rows = list(range(min(len(data), n_batches * batch_size)))
    lengths = [len(data.ids[i]) for i in rows]
    out = []
    for idx in length_sorted_batches(lengths, batch_size):
        out.append(pad_batch(data.ids, [rows[i] for i in idx], pad_id, data.labels))
    return out


def iter_batches(data: Encoded, pad_id: int, batch_size: int = 64) -> Iterator[Batch]:
    for idx in length_sorted_batches(row_lengths(data.ids), batch_size):
        yield pad_batch(data.ids, idx, pad_id, data.labels)


RECORDS = "slimtext_compression"  # the model's own list of the steps applied to it


def recorded(model: nn.Module, rec: dict) -> dict:
    """`rec`, also appended to the model's list of its compression steps (`RECORDS`), which a
    save writes to config.json: a model compressed with the Python verbs and saved through
    `TextClassifier.save` kept the list it was loaded with and could not be read back."""
    steps = getattr(model, RECORDS, None)
    if steps is None:
        steps = []
        setattr(model, RECORDS, steps)
    steps.append(rec)
    # Modules a step built (pruned attention, factorised or quantized linears) start in
    # training mode: inside an eval-mode model their dropout stayed on, unseen (model.training
    # said False), and predictions changed from call to call. They take the model's mode.
    model.train(model.training)
    return rec


def record(step: str, config, **structure) -> dict:
    """One entry of config.json's `compression` list: enough to rebuild the module structure."""
    cfg = asdict(config) if is_dataclass(config) else dict(config or {})
    return {"step": step, "version": getattr(config, "version", 1), "config": cfg, **structure}


def count_params(model: nn.Module) -> int:
    """Parameters plus the weights a quantized module holds as buffers (an int8 weight is
    still a weight: a quantized model must not look parameter-free)."""
    n = sum(p.numel() for p in model.parameters())
    return n + sum(m.n_params() for m in model.modules() if hasattr(m, "n_params"))


def count_nonzero(model: nn.Module) -> int:
    """Nonzero weights, int8 ones included (a pruned zero stays an int8 zero); packed int4
    weights count as all nonzero."""
    n = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    for m in model.modules():
        if not hasattr(m, "n_params"):
            continue
        q = getattr(m, "qweight", None)
        if q is not None and q.dtype == torch.int8:
            bias = getattr(m, "bias", None)
            n += int(torch.count_nonzero(q)) + (0 if bias is None else int(bias.numel()))
        else:
            n += m.n_params()
    return n
