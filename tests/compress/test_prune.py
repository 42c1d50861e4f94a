from __future__ import annotations

import numpy as np
import pytest
import torch

import slimtext
from slimtext.artifact import save_model_dir
from slimtext.compress import (
    FFNPruning,
    HeadPruning,
    MagnitudePruning,
    SemiStructuredPruning,
    prune_,
    prune_finetune,
    to_semi_structured_,
)
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


def test_a_loaded_classifier_pruned_in_place_predicts_the_same_each_time(teacher_dir, tmp_path,
                                                                         make_toy):  # fmt: skip
    # README's flow: load, prune_ the model in place, predict/save. The pruned attention and the
    # rebuilt FFN layers came in training mode: dropout on, a new answer on every call.
    from slimtext.api import TextClassifier

    clf = TextClassifier.load(teacher_dir)
    prune_(clf.model_dir_.model, HeadPruning(0.5))
    prune_(clf.model_dir_.model, FFNPruning(0.5))
    assert not any(m.training for m in clf.model_dir_.model.modules())
    texts, _ = make_toy(10, seed=5)
    first = clf.predict_proba(texts)
    np.testing.assert_array_equal(clf.predict_proba(texts), first)
    clf.save(tmp_path / "pruned")
    np.testing.assert_allclose(slimtext.load(tmp_path / "pruned").predict_proba(texts), first,
                               atol=1e-6)  # fmt: skip


def test_a_classifier_saved_after_in_memory_compression_loads_and_claims_no_old_figures(
    teacher_dir, tmp_path, make_toy
):
    # save() wrote the config as loaded (4 layers for a 2-layer model after drop_layers_: a
    # directory that did not load) and the uncompressed model's valid/test accuracy.
    import json

    from slimtext.api import TextClassifier
    from slimtext.compress import DropLayers, drop_layers_

    clf = TextClassifier.load(teacher_dir)
    assert "valid" in json.loads((teacher_dir / "metrics.json").read_text())
    drop_layers_(clf.model_dir_.model, DropLayers((1,)))
    texts, _ = make_toy(10, seed=5)
    first = clf.predict_proba(texts)
    clf.save(tmp_path / "dropped")
    again = TextClassifier.load(tmp_path / "dropped")
    assert again.model_dir_.config.num_layers == 1
    np.testing.assert_allclose(again.predict_proba(texts), first, atol=1e-6)
    metrics = json.loads((tmp_path / "dropped" / "metrics.json").read_text())
    assert "valid" not in metrics and "valid" in metrics["before_changes_in_memory"]
    assert "valid:" not in (tmp_path / "dropped" / "README.md").read_text()
    # unchanged since loading: the figures stay
    TextClassifier.load(teacher_dir).save(tmp_path / "same")
    assert "valid" in json.loads((tmp_path / "same" / "metrics.json").read_text())


def test_pruning_without_calibration_data_records_the_importance_it_used(teacher, batches):
    # README's `prune_(model, HeadPruning(0.5))` has no calibration batches, so heads were
    # ranked by weight magnitude while config.json and the model card said "importance=taylor"
    cfg = HeadPruning(0.5)
    rec = prune_(teacher.model, cfg)
    assert rec["config"]["importance"] == "magnitude"
    assert cfg.importance == "taylor"  # the caller's config is left as it was
    rec = prune_(teacher.model, FFNPruning(0.5), calib=batches)
    assert rec["config"]["importance"] == "taylor"


def test_pruning_what_is_not_there_is_refused_not_recorded(teacher, tmp_path, make_toy):
    # an attention model without encoder layers: prune_ recorded heads [] and "100% sparse";
    # an N:M pattern whose M divides no width pruned nothing and reported success
    from slimtext.api import TextClassifier

    att = TextClassifier(model="attention", vocab_size=200, hidden_size=16, epochs=1,
                         verbose=False).fit(make_toy(20, seed=2))  # fmt: skip
    for cfg in (HeadPruning(0.5), FFNPruning(0.5), MagnitudePruning(0.5)):
        with pytest.raises(ValueError, match="no encoder"):
            prune_(att.model_dir_.model, cfg)
    with pytest.raises(ValueError, match="2:3 sparsity: 3 divides no layer's input width"):
        prune_(teacher.model, SemiStructuredPruning(2, 3))


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


def _assert_two_of_four(model, names):
    lins = [model.get_submodule(n) for n in names]
    assert lins and all(type(m) is torch.nn.Linear for m in lins)
    for name, m in zip(names, lins, strict=True):
        zeros = (m.weight.detach().view(m.out_features, -1, 4) == 0).sum(-1)
        assert bool((zeros == 2).all()), name


def test_two_four_sparsity_zeroes_two_of_every_four_and_round_trips(teacher, batches, h, tmp_path):
    m = teacher.model
    encoder = [
        n for n, x in m.named_modules() if n.startswith("encoder.") and type(x) is torch.nn.Linear
    ]
    rec = prune_(m, SemiStructuredPruning())
    assert rec["kind"] == "semi-structured" and rec["pattern"] == "2:4"
    assert sorted(rec["modules"]) == sorted(encoder)  # every encoder Linear (widths 32, 64)
    _assert_two_of_four(m, rec["modules"])
    assert sparsity(m) == pytest.approx(0.5) and rec["sparsity"] == pytest.approx(0.5)
    out = h.logits(m, batches)
    assert torch.isfinite(out).all()
    save_model_dir(tmp_path / "s", m, m.config, teacher.tokenizer, teacher.labels,
                   max_length=teacher.max_length, compression=[rec])  # fmt: skip
    loaded = slimtext.load(tmp_path / "s")
    _assert_two_of_four(loaded.model, rec["modules"])
    torch.testing.assert_close(h.logits(loaded.model, batches), out, atol=0, rtol=0)


def test_two_four_keeps_the_two_largest_magnitudes():
    from slimtext.compress.prune import nm_masks

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Module()
            self.encoder.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 2, bias=False)])

    t = Tiny()
    with torch.no_grad():
        t.encoder.blocks[0].weight.copy_(
            torch.tensor(
                [
                    [0.1, -3.0, 2.0, 0.5, 4.0, -0.2, 0.3, -5.0],
                    [1.0, 1.1, -1.2, 0.9, 0.0, 0.0, 0.7, 0.0],
                ]
            )  # fmt: skip
        )
    ((_, mask),) = nm_masks(t)
    expect = torch.tensor([[0, 1, 1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 0, 1, 0]], dtype=torch.bool)
    assert bool((mask[0] == expect[0]).all()) and bool((mask[1, :4] == expect[1, :4]).all())
    assert int(mask[1, 4:].sum()) == 2 and bool(mask[1, 6])  # ties among zeros: any, still two


def test_two_four_pattern_holds_through_finetuning(teacher, make_toy, h):
    m = teacher.model
    train = h.encode(teacher, make_toy(10, seed=5))
    before = m.encoder.blocks[0].ffn_in.weight.detach().clone()
    rec = prune_finetune(
        m, SemiStructuredPruning(), train, None, TrainConfig(epochs=1, batch_size=16, lr=5e-3),
        label_names=teacher.labels, pad_id=teacher.tokenizer.pad_id,
    )  # fmt: skip
    _assert_two_of_four(m, rec["modules"])
    kept = before != 0
    after = m.encoder.blocks[0].ffn_in.weight.detach()
    assert not torch.equal(after[kept & (after != 0)], before[kept & (after != 0)])  # it trained


def test_two_four_kernels_refuse_a_cpu_model(teacher):
    with pytest.raises(ValueError, match="no 2:4|compute capability"):
        to_semi_structured_(teacher.model)
    with pytest.raises(ValueError, match="0 < n < m"):
        SemiStructuredPruning(4, 4)


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="2:4 sparse kernels need a CUDA GPU with compute capability >= 8.0",
)
def test_two_four_runs_on_sparse_tensor_cores_with_the_same_outputs():
    from slimtext.models import ModelConfig, build_model

    torch.manual_seed(0)
    m = build_model(ModelConfig(vocab_size=100, num_labels=3, hidden_size=256, num_layers=1,
                                num_heads=4, ffn_size=1024, max_length=64))  # fmt: skip
    prune_(m, SemiStructuredPruning())
    m = m.cuda().half().eval()
    ids = torch.randint(1, 100, (64, 64), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        ref = m(ids, mask)
        assert to_semi_structured_(m)
        torch.testing.assert_close(m(ids, mask), ref, atol=2e-2, rtol=2e-2)
