from __future__ import annotations

import copy

import pytest
import torch

# QAT is torchao's fake quantization: the `quant` extra (in `dev`, so CI has it).
pytest.importorskip("torchao", reason="QAT needs torchao: pip install slimtext[quant]")

import slimtext
from slimtext.artifact import save_model_dir
from slimtext.compress import QAT, Int8Dynamic, convert_qat_, prepare_qat_, qat_, quantize_
from slimtext.compress.quantize import Int8Embedding, Int8Linear
from slimtext.train.evaluate import evaluate
from slimtext.train.trainer import TrainConfig, fit


def add_outliers_(model, k: float = 300.0) -> None:
    """Scale two channels of the last LayerNorm by k and the head's matching weight columns by
    1/k: the float function is unchanged (mean pooling is linear), but the head's per-tensor
    int8 activations now spend their range on two channels and its weight rows round the two
    shrunken columns to ~0, the outlier pattern that makes post-training int8 lose accuracy.
    The two channels are the ones the head leans on most. How much the construction hurts, and
    how much float fine-tuning can undo it, depends on what the toy teacher learned: with the
    fixture's seed-0 teacher all three claims of the test below hold with margin, but not for
    every teacher seed (2 of 5 tried), so the seed is part of the test."""
    with torch.no_grad():
        ln = model.encoder.blocks[-1].norm2
        for j in model.head.weight.norm(dim=0).topk(2).indices.tolist():
            ln.weight[j] *= k
            ln.bias[j] *= k
            model.head.weight[:, j] /= k


def test_fake_quantized_model_computes_what_the_stored_int8_model_computes(teacher, batches, h):
    """The fake quantization matches fbgemm's int8 dynamic kernel: converting changes nothing."""
    m = teacher.model
    prepare_qat_(m, QAT())
    fake = h.logits(m, batches)
    rec = convert_qat_(m, QAT())
    assert rec["step"] == "quantize" and rec["qat"] is True
    assert isinstance(m.head, Int8Linear) and m.head.dynamic
    assert isinstance(m.embeddings.tok, Int8Embedding)
    # Equal, bar a rare activation that the kernel rounds to the neighbouring int8 level (its
    # vectorised scaling differs by CPU: exact on AMX, 3 of 90 logits off by ~1e-3 on an AVX512
    # AMD). A fake quantizer that simulated another scheme would move most of the logits.
    d = (h.logits(m, batches) - fake).abs()
    assert (d > 1e-5).float().mean() <= 0.1, d
    assert d.max() < 2e-3, d


def test_qat_recovers_what_post_training_int8_loses_and_round_trips(
    teacher, batches, h, make_toy, tmp_path
):
    m, names, pad = teacher.model, teacher.labels, teacher.tokenizer.pad_id
    ref = h.logits(m, batches)
    add_outliers_(m)
    torch.testing.assert_close(h.logits(m, batches), ref, atol=1e-4, rtol=1e-4)
    train = h.encode(teacher, make_toy(20, seed=5))
    test = h.encode(teacher, make_toy(30, seed=6))

    def score(model):
        r = evaluate(model, test.ids, test.labels, names, pad)
        return r["accuracy"], r["loss"]

    acc_float, _ = score(m)
    ptq = copy.deepcopy(m)
    quantize_(ptq, Int8Dynamic())
    acc_ptq, _ = score(ptq)
    assert acc_ptq < acc_float - 0.05, "the construction must make post-training int8 hurt"

    tc = TrainConfig(epochs=2, batch_size=16, lr=5e-3, keep_best=False)
    # Fair baseline: the same fine-tuning in float, then post-training int8.
    ft = copy.deepcopy(m)
    fit(ft, train, None, tc, label_names=names, pad_id=pad, progress=False)
    quantize_(ft.cpu().eval(), Int8Dynamic())
    acc_ft_ptq, loss_ft_ptq = score(ft)

    result, rec = qat_(m, QAT(), train, None, tc, label_names=names, pad_id=pad)
    acc_qat, loss_qat = score(m)
    assert result.steps > 0 and rec["qat_steps"] == result.steps
    assert acc_qat >= acc_ptq + 0.05, (acc_qat, acc_ptq)
    assert acc_qat >= acc_ft_ptq and loss_qat < loss_ft_ptq, (loss_qat, loss_ft_ptq)

    out = h.logits(m, batches)
    save_model_dir(tmp_path / "qat", m, m.config, teacher.tokenizer, names,
                   max_length=teacher.max_length, compression=[rec])  # fmt: skip
    loaded = slimtext.load(tmp_path / "qat").model
    assert isinstance(loaded.head, Int8Linear) and loaded.head.dynamic
    torch.testing.assert_close(h.logits(loaded, batches), out, atol=0, rtol=0)


def test_weight_only_qat_stores_int8_weight_format(teacher, batches, h, tmp_path):
    m = teacher.model
    prepare_qat_(m, QAT("int8-weight", embeddings=False, skip=("head",)))
    assert m.encoder.blocks[0].ffn_in.activation_fake_quantizer is None
    rec = convert_qat_(m, QAT("int8-weight", embeddings=False, skip=("head",)))
    assert type(m.head) is torch.nn.Linear and type(m.embeddings.tok) is torch.nn.Embedding
    assert not m.encoder.blocks[0].ffn_in.dynamic
    out = h.logits(m, batches)
    save_model_dir(tmp_path / "w", m, m.config, teacher.tokenizer, teacher.labels,
                   max_length=teacher.max_length, compression=[rec])  # fmt: skip
    torch.testing.assert_close(h.logits(slimtext.load(tmp_path / "w").model, batches), out)


def test_qat_config_validates_and_convert_needs_prepare(teacher):
    with pytest.raises(ValueError, match="QAT method"):
        QAT("int4-weight")
    with pytest.raises(ValueError, match="prepare_qat_"):
        convert_qat_(teacher.model, QAT())


def test_qat_takes_the_word_pair_table_to_int8_after_training(h, tmp_path):
    from slimtext.api import TextClassifier

    clf = TextClassifier(model="attention", vocab_size=400, max_length=32, ngram_buckets=512,
                         epochs=1, verbose=False, threads=1).fit(h.toy(40, seed=1))  # fmt: skip
    clf.save(tmp_path / "a")
    md = slimtext.load(tmp_path / "a").model_dir
    cfg = QAT("int8-dynamic")
    prepare_qat_(md.model, cfg)
    assert type(md.model.embeddings.ngram) is torch.nn.Embedding  # trained in float (sparse)
    rec = convert_qat_(md.model, cfg)
    assert type(md.model.embeddings.ngram) is Int8Embedding and type(md.model.embeddings.tok) is (
        Int8Embedding
    )
    assert rec["post_training"] == ["embeddings.ngram"]
    batches = h.batches_of(md, h.toy(10, seed=7), 2)
    out = h.logits(md.model, batches)
    save_model_dir(tmp_path / "q", md.model, md.model.config, md.tokenizer, md.labels,
                   max_length=md.max_length, compression=[rec])  # fmt: skip
    torch.testing.assert_close(h.logits(slimtext.load(tmp_path / "q").model, batches), out)
