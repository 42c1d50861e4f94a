"""Compression: in-place verbs with config dataclasses, each recorded in the model directory.

    prune_(model, HeadPruning(0.5), calib=batches)    quantize_(model, Int8Dynamic())
    prune_(model, SemiStructuredPruning())  # 2:4
    qat_(model, QAT(), train, valid, TrainConfig(epochs=1), label_names=..., pad_id=...)
    factorize_(model, LowRank(energy=0.9))            drop_layers_(model, DropLayers((1, 3)))
    distill(teacher, student, train, valid, TrainConfig(), Distillation(alpha=0.5))
    compress(teacher_dir, data, out_dir, recipe="distill,prune:heads=0.5,quantize:int8-dynamic")

Every verb returns a record for config.json's `compression` list; `rebuild_` replays the records
on a freshly built model so that `read_model_dir` can load the compressed weights.
"""

from __future__ import annotations

from torch import nn

from .distill import Distillation, distill, make_student, teacher_logits
from .factorize import DropLayers, LowRank, LowRankLinear, drop_layers_, factorize_
from .prune import (
    FFNPruning,
    HeadPruning,
    MagnitudePruning,
    PrunedSelfAttention,
    SemiStructuredPruning,
    prune_,
    prune_finetune,
    restore_pruned_,
    to_semi_structured_,
)
from .qat import QAT, convert_qat_, prepare_qat_, qat_
from .quantize import (
    Int4WeightOnly,
    Int8Dynamic,
    Int8WeightOnly,
    quantize_,
    quantize_within_budget,
    restore_quantized_,
)


def rebuild_(model: nn.Module, compression: list[dict]) -> nn.Module:
    """Replay the structural effect of recorded compression steps on a freshly built model (in
    order: a quantized layer may have been pruned first), so its state dict matches the saved
    weights. Steps that only change weights (distill, magnitude pruning) need nothing."""
    from .factorize import restore_factorized_

    handlers = {
        "prune": restore_pruned_,
        "factorize": restore_factorized_,
        "quantize": restore_quantized_,
    }
    for rec in compression:
        fn = handlers.get(rec.get("step"))
        if fn is not None:
            fn(model, rec)
    return model


def compress(*args, **kwargs):
    """See `slimtext.compress.recipe.compress`."""
    from .recipe import compress as _compress

    return _compress(*args, **kwargs)


__all__ = [
    "Distillation",
    "DropLayers",
    "FFNPruning",
    "HeadPruning",
    "Int4WeightOnly",
    "Int8Dynamic",
    "Int8WeightOnly",
    "LowRank",
    "LowRankLinear",
    "MagnitudePruning",
    "PrunedSelfAttention",
    "QAT",
    "SemiStructuredPruning",
    "compress",
    "convert_qat_",
    "distill",
    "drop_layers_",
    "factorize_",
    "make_student",
    "prune_",
    "prepare_qat_",
    "prune_finetune",
    "qat_",
    "quantize_",
    "quantize_within_budget",
    "rebuild_",
    "teacher_logits",
    "to_semi_structured_",
]
