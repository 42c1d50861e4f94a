"""Distillation from a Hugging Face teacher with its own tokenizer: a tiny BERT built here
(random init, then a few steps of training so its logits depend on the text), no downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimtext.compress import Distillation, distill
from slimtext.compress.distill import external_teacher_logits, hf_teacher_logits
from slimtext.models import ModelConfig, build_model
from slimtext.train.evaluate import predict_logits
from slimtext.train.trainer import Encoded, TrainConfig

pytest.importorskip("transformers")

HF_LABELS = ["tech", "money", "sport"]  # another order than the student's: mapped by name


def _tokenizer(texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for t in texts for w in t.split()})
    vocab = {w: i for i, w in enumerate(special + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")  # fmt: skip


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, make_toy):
    from transformers import BertConfig, BertForSequenceClassification

    texts, labels = make_toy(30, seed=51)
    tok = _tokenizer(texts)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                     num_labels=3, id2label=dict(enumerate(HF_LABELS)),
                     label2id={lab: i for i, lab in enumerate(HF_LABELS)})  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    y = torch.tensor([HF_LABELS.index(lab) for lab in labels])
    enc = tok(texts, padding=True, return_tensors="pt")
    model.train()
    for _ in range(15):  # a teacher whose logits depend on the text, not a constant
        opt.zero_grad()
        F.cross_entropy(model(**enc).logits, y).backward()
        opt.step()
    path = tmp_path_factory.mktemp("hf") / "bert"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_teacher_logits_map_labels_by_name_and_are_cached(hf_dir, teacher, make_toy, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts, _ = make_toy(4, seed=52)
    got = hf_teacher_logits(hf_dir, texts, teacher.labels, cache=tmp_path / "t.npy")
    assert isinstance(got, np.memmap) and got.shape == (len(texts), 3)
    tok, m = (
        AutoTokenizer.from_pretrained(hf_dir),
        AutoModelForSequenceClassification.from_pretrained(hf_dir),
    )
    with torch.no_grad():
        ref = m.eval()(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    for j, lab in enumerate(teacher.labels):
        np.testing.assert_allclose(got[:, j], ref[:, HF_LABELS.index(lab)], atol=1e-5)
    # The same cache file answers a call through the "hf:" spec.
    again = external_teacher_logits(f"hf:{hf_dir}", texts, teacher.labels,
                                    cache=tmp_path / "t.npy")  # fmt: skip
    np.testing.assert_array_equal(again, got)


def test_hf_teacher_with_other_labels_is_a_clear_error(hf_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["id2label"] = {"0": "tech", "1": "money", "2": "weather"}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"id2label.*weather.*sport"):
        hf_teacher_logits(bad, ["a text"], ["sport", "tech", "money"])


def test_student_with_its_own_tokenizer_learns_the_hf_teacher(hf_dir, teacher, make_toy):
    """KL(teacher || student) on held-out texts falls by distillation on re-tokenized texts."""
    names, pad = teacher.labels, teacher.tokenizer.pad_id
    train_texts, _ = make_toy(30, seed=53)
    test_texts, _ = make_toy(15, seed=54)
    soft = hf_teacher_logits(hf_dir, train_texts, names)
    t_test = torch.from_numpy(hf_teacher_logits(hf_dir, test_texts, names))
    train = Encoded(teacher.tokenizer.encode(train_texts, teacher.max_length), None)
    test_ids = teacher.tokenizer.encode(test_texts, teacher.max_length)
    cfg = ModelConfig(vocab_size=teacher.config.vocab_size, num_labels=3, hidden_size=32,
                      num_layers=1, num_heads=2, ffn_size=64, max_length=32)  # fmt: skip
    torch.manual_seed(0)
    student = build_model(cfg)

    def kl() -> float:
        s = predict_logits(student, test_ids, pad, 64)
        return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t_test, -1),
                              reduction="batchmean", log_target=True))  # fmt: skip

    before = kl()
    _, rec = distill(soft, student, train, None,
                     TrainConfig(epochs=8, batch_size=16, lr=5e-3, keep_best=False),
                     Distillation(alpha=0.0, temperature=1.0), label_names=names,
                     pad_id=pad)  # fmt: skip
    after = kl()
    assert rec["step"] == "distill"
    assert after < 0.5 * before, (before, after)
    agree = (predict_logits(student, test_ids, pad, 64).argmax(-1) == t_test.argmax(-1)).float()
    assert agree.mean() >= 0.8


def test_compress_with_an_hf_teacher_end_to_end(hf_dir, teacher_dir, make_toy, tmp_path):
    import slimtext
    from slimtext.compress.recipe import compress

    out = tmp_path / "student"
    rows = compress(
        teacher_dir, make_toy(15, seed=55), out, recipe="distill:epochs=2,quantize:int8-dynamic",
        teacher=f"hf:{hf_dir}", speed=False,
        train_config={"batch_size": 16, "lr": 5e-3, "threads": 1}, log=lambda s: None,
    )  # fmt: skip
    assert [r["step"] for r in rows] == [
        "input",
        "distill:epochs=2",
        "quantize:method=int8-dynamic",
    ]
    rec = json.loads((out / "config.json").read_text())["compression"][0]
    assert rec["step"] == "distill" and rec["teacher"] == f"hf:{hf_dir}"
    # the ratios' base is the first row, here the model compressed, not the hf teacher
    report = (out / "compression_report.md").read_text(encoding="utf-8")
    assert "against the first row (the input model)" in report
    assert f"Distilled from the teacher `hf:{hf_dir}` (accuracy 0." in report
    assert 0.0 <= rec["teacher_accuracy"] <= 1.0
    assert slimtext.load(out).predict_proba(["goal match team"]).shape == (1, 3)


def test_cli_compress_takes_an_hf_teacher_and_names_a_label_mismatch(
    hf_dir, teacher_dir, make_toy, tmp_path
):
    import csv
    import shutil

    from typer.testing import CliRunner

    from slimtext.cli import app

    data = tmp_path / "train.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(*make_toy(10, seed=56), strict=True)])
    args = ["compress", str(teacher_dir), "--data", str(data), "--recipe", "distill:epochs=1",
            "--batch-size", "16", "--threads", "1", "--no-speed", "--no-progress"]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "--teacher", f"hf:{hf_dir}"])
    assert r.exit_code == 0, r.output
    assert "| input |" in r.output and (tmp_path / "o" / "model.safetensors").is_file()

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (bad / "config.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2"), "--teacher", f"hf:{bad}"])
    assert r.exit_code != 0 and "id2label" in r.output and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("family", ["Roberta", "Data2VecText"])
def test_a_roberta_teacher_reads_long_texts_within_its_positions(make_toy, tmp_path, family):
    # RoBERTa counts positions from pad_token_id + 1: with a tokenizer folder that sets no
    # model_max_length, texts as long as max_position_embeddings crashed inside the model.
    # (data2vec-text too, which a list of family names missed: read from the position table)
    import transformers

    config_cls = getattr(transformers, f"{family}Config")
    model_cls = getattr(transformers, f"{family}ForSequenceClassification")
    texts, _ = make_toy(4, seed=52)
    tok = _tokenizer(texts)
    cfg = config_cls(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=24,
                     pad_token_id=tok.pad_token_id, num_labels=3,
                     id2label=dict(enumerate(HF_LABELS)))  # fmt: skip
    path = tmp_path / family
    model_cls(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    long = [" ".join([t] * 10) for t in texts]  # ~60 tokens: far past 24 positions
    got = hf_teacher_logits(path, long, ["sport", "tech", "money"])
    assert got.shape == (len(long), 3) and np.isfinite(got).all()


@pytest.mark.parametrize("saved", ["BertModel", "BertForMaskedLM"])
def test_an_hf_teacher_without_a_trained_classifier_is_refused(hf_dir, tmp_path, saved):
    # A bare encoder or masked-LM folder whose config.json names the labels loads as a
    # classifier whose head transformers starts at random (a log table said so): the student
    # was distilled from random logits, and the report called it a teacher.
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    path = tmp_path / saved
    getattr(transformers, saved)(AutoConfig.from_pretrained(hf_dir)).save_pretrained(path)
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(path)
    with pytest.raises(ValueError, match=r"not a trained sequence classifier.*classifier\.weight"):
        hf_teacher_logits(path, ["a text"], ["sport", "tech", "money"])


def test_a_wrong_teacher_is_refused_before_the_data_is_read(hf_dir, teacher_dir, tmp_path):
    # A teacher folder of the wrong kind, or with other labels, was found out only after every
    # text had been read, split and encoded (minutes on a large file). The data here does not
    # exist: the teacher's error must come first, and name what to do.
    import shutil

    from slimtext.compress.recipe import compress

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (bad / "config.json").write_text(json.dumps(cfg))
    cases = [
        (f"hf:{bad}", r"id2label.*\['a', 'b', 'c'\]"),
        (str(hf_dir), rf"a Hugging Face model folder.*hf:{hf_dir}"),  # hf: forgotten
        (f"hf:{teacher_dir}", "a slimtext model directory.*without 'hf:'"),
    ]
    for teacher, message in cases:
        with pytest.raises(ValueError, match=message):
            compress(teacher_dir, str(tmp_path / "missing.csv"), tmp_path / "o",
                     recipe="distill", teacher=teacher, log=lambda s: None)  # fmt: skip
    assert not (tmp_path / "o").exists()
