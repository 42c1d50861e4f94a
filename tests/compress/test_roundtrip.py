"""Every compression step, alone and chained, saves to a model directory and loads back to the
same outputs (the issue's "every compressed model round-trips")."""

from __future__ import annotations

import pytest
import torch

import slimtext
from slimtext.artifact import save_model_dir
from slimtext.compress import (
    QAT,
    Distillation,
    DropLayers,
    FFNPruning,
    HeadPruning,
    Int4WeightOnly,
    Int8Dynamic,
    LowRank,
    MagnitudePruning,
    SemiStructuredPruning,
    convert_qat_,
    distill,
    drop_layers_,
    factorize_,
    make_student,
    prepare_qat_,
    prune_,
    quantize_,
)
from slimtext.train.trainer import TrainConfig


def _distilled(md, batches, h, make_toy):
    train = h.encode(md, make_toy(5, seed=71))
    student = make_student(md.model, num_layers=1)
    _, rec = distill(md.model, student, train, None, TrainConfig(epochs=1, batch_size=16),
                     Distillation(hidden=1.0), label_names=md.labels,
                     pad_id=md.tokenizer.pad_id)  # fmt: skip
    md.model = student
    return [rec]


CHAINS = {
    "magnitude": lambda md, b, h, t: [prune_(md.model, MagnitudePruning(0.6))],
    "2:4": lambda md, b, h, t: [prune_(md.model, SemiStructuredPruning())],
    "distill": _distilled,
    "heads+ffn+lowrank+int8": lambda md, b, h, t: [
        prune_(md.model, HeadPruning(0.5), calib=b),
        prune_(md.model, FFNPruning(0.5), calib=b),
        factorize_(md.model, LowRank(energy=0.8, only_if_smaller=False)),
        quantize_(md.model, Int8Dynamic()),
    ],
    "drop+int4": lambda md, b, h, t: [
        drop_layers_(md.model, DropLayers((1,))),
        quantize_(md.model, Int4WeightOnly(16)),
    ],
    "2:4+qat": lambda md, b, h, t: [
        prune_(md.model, SemiStructuredPruning()),
        convert_qat_(prepare_qat_(md.model, QAT()), QAT()),
    ],
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_compressed_model_round_trips_with_identical_outputs(
    teacher, batches, h, make_toy, tmp_path, chain
):
    if "qat" in chain:
        pytest.importorskip("torchao", reason="QAT needs torchao: pip install slimtext[quant]")
    recs = CHAINS[chain](teacher, batches, h, make_toy)
    m = teacher.model
    out = h.logits(m, batches)
    save_model_dir(tmp_path / "m", m, m.config, teacher.tokenizer, teacher.labels,
                   max_length=teacher.max_length, compression=recs)  # fmt: skip
    loaded = slimtext.load(tmp_path / "m").model
    assert sorted(loaded.state_dict()) == sorted(m.state_dict())
    torch.testing.assert_close(h.logits(loaded, batches), out, atol=0, rtol=0)


def test_the_python_verbs_on_a_loaded_classifier_save_a_directory_that_loads(
    tiny_model_dir, tmp_path
):
    # TextClassifier.save wrote the compression list the model was loaded with: pruned and
    # quantized weights with an empty list, which read_model_dir could not rebuild.
    import numpy as np

    import slimtext
    from slimtext.api import TextClassifier
    from slimtext.compress import (
        HeadPruning,
        Int8Dynamic,
        prune_,
        quantize_,
    )

    clf = TextClassifier.load(tiny_model_dir)
    model = clf.model_dir_.model
    prune_(model, HeadPruning(0.5))
    quantize_(model, Int8Dynamic())
    texts = ["goal match team", "bank profit shares", "chip software data"]
    before = clf.predict_proba(texts)
    clf.save(tmp_path / "small")
    again = slimtext.load(tmp_path / "small")
    np.testing.assert_allclose(again.predict_proba(texts), before, atol=1e-6)
    steps = [r["step"] for r in again.model_dir.meta["compression"]]
    assert steps[0] == "prune" and steps[-1] == "quantize"
