from __future__ import annotations

import numpy as np
import pytest
import torch

import slimtext
from slimtext.artifact import save_model_dir
from slimtext.compress import FFNPruning, HeadPruning, MagnitudePruning, prune_, prune_finetune
from slimtext.compress._util import count_params
from slimtext.compress.prune import cubic_schedule, sparsity
from slimtext.train.trainer import TrainConfig


def _prunable(model) -> int:
    n = 0
    for b in model.encoder.blocks:
        n += b.attn.qkv.weight.numel() + b.attn.out.weight.numel()
        n += b.ffn_in.weight.numel() + b.ffn_out.weight.numel()
    return n


@pytest.mark.parametrize("cfg", [HeadPruning(0.0), FFNPruning(0.0), MagnitudePruning(0.0)])
def test_pruning_at_ratio_zero_changes_nothing(teacher, batches, cfg, h):
    before = h.logits(teacher.model, batches)
    n = count_params(teacher.model)
    prune_(teacher.model, cfg, calib=batches)
    torch.testing.assert_close(h.logits(teacher.model, batches), before)
    assert count_params(teacher.model) == n


@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_structured_pruning_removes_the_asked_share(teacher, batches, importance, h):
    m = teacher.model
    before = _prunable(m)
    prune_(m, HeadPruning(0.5, importance), calib=batches)  # 8 heads -> 4
    prune_(m, FFNPruning(0.5, importance), calib=batches)  # 128 neurons -> 64
    assert sum(b.attn.n_head for b in m.encoder.blocks) == 4
    assert sum(b.ffn_out.in_features for b in m.encoder.blocks) == 64
    assert _prunable(m) == pytest.approx(0.5 * before, rel=0.01)
    assert h.logits(m, batches).shape == (len(torch.cat([b.index for b in batches])), 3)


def test_pruned_model_saves_loads_and_predicts_the_same(teacher, batches, tmp_path, make_toy, h):
    m = teacher.model
    # Heads are ranked globally: force unequal per-layer counts so the round trip must carry them.
    from slimtext.compress._util import record
    from slimtext.compress.prune import keep_heads_, structure

    keep_heads_(m.encoder.blocks[0], [1])
    keep_heads_(m.encoder.blocks[1], [0, 2, 3])
    recs = [record("prune", HeadPruning(0.5), kind="heads", **structure(m))]
    recs.append(prune_(m, FFNPruning(0.3), calib=batches))
    texts, _ = make_toy(5, seed=3)
    before = slimtext.Predictor(teacher).predict_proba(texts)
    save_model_dir(tmp_path / "p", m, m.config, teacher.tokenizer, teacher.labels,
                   max_length=teacher.max_length, compression=recs)  # fmt: skip
    loaded = slimtext.load(tmp_path / "p")
    assert [b.attn.n_head for b in loaded.model.encoder.blocks] == [1, 3]
    np.testing.assert_allclose(loaded.predict_proba(texts), before, atol=1e-6)
    assert count_params(loaded.model) == count_params(m)


def test_unstructured_pruning_reaches_sparsity_and_keeps_zeros_through_finetuning(
    teacher, make_toy, h
):
    m = teacher.model
    assert cubic_schedule(0.8, 3)[-1] == pytest.approx(0.8)
    train = h.encode(teacher, make_toy(10, seed=5))
    rec = prune_finetune(
        m, MagnitudePruning(0.8, steps=2), train, None, TrainConfig(epochs=1, batch_size=16),
        label_names=teacher.labels, pad_id=teacher.tokenizer.pad_id,
    )  # fmt: skip
    assert sparsity(m) == pytest.approx(0.8, abs=0.01)
    assert rec["sparsity"] == pytest.approx(sparsity(m))


def test_configs_validate():
    with pytest.raises(ValueError):
        HeadPruning(1.0)
    with pytest.raises(ValueError):
        FFNPruning(0.5, importance="random")
    with pytest.raises(ValueError):
        MagnitudePruning(0.5, steps=0)
