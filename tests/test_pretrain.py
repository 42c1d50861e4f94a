"""Masked-LM self-pretraining, and fine-tuning from a pretrained encoder (--init, layer-wise LR
decay, freezing). Tiny models (hidden 32, 1-2 layers) on ~100 short texts."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from slimtext.api import TextClassifier
from slimtext.artifact import read_model_dir
from slimtext.cli import app
from slimtext.models import ModelConfig, TransformerClassifier
from slimtext.pretrain import IGNORE, init_classifier, mask_tokens, pretrain
from slimtext.train import Encoded, TrainConfig, fit
from slimtext.train.trainer import param_groups

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, max_length=32,
            batch_size=16, dropout=0.0, threads=1, precision="fp32", device="cpu")  # fmt: skip


def corpus(n: int = 120) -> list[str]:
    # Repetitive sentences: the masked word is predictable from its neighbours.
    frames = ["the cat sat on the mat", "a dog ran in the park", "we eat bread with butter",
              "she reads a book at night", "rain falls on the roof"]  # fmt: skip
    return [frames[i % len(frames)] + (" today" if i % 3 else " again") for i in range(n)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    result = pretrain(corpus(), d / "enc", tokenizer="wordpiece", vocab_size=120, max_steps=200,
                      lr=3e-3, warmup=10, log_every=10, progress=False, run_dir=d / "run",
                      **{**TINY, "num_layers": 1})  # fmt: skip
    return d / "enc", d / "run", result


def test_masking_selects_15_percent_of_real_tokens_80_10_10():
    torch.manual_seed(0)
    B, T, V, mask_id, specials = 64, 40, 100, 4, [0, 1, 2, 3, 4]  # pad, unk?, cls, sep, mask
    ids = torch.randint(5, V, (B, T))
    lengths = torch.randint(5, T + 1, (B,))
    attn = torch.arange(T)[None, :] < lengths[:, None]
    ids[:, 0] = 2
    ids[torch.arange(B), lengths - 1] = 3  # [SEP] at each row's end
    ids[~attn] = 0
    maskable = attn & (ids >= 5)
    sel = masked = randomised = kept = 0
    for _ in range(30):
        out, labels = mask_tokens(ids, attn, mask_id=mask_id, special_ids=specials,
                                  vocab_size=V, mask_prob=0.15)  # fmt: skip
        chosen = labels != IGNORE
        assert not (chosen & ~maskable).any(), "special or padding token selected"
        assert torch.equal(out[~chosen], ids[~chosen]), "an unselected token changed"
        assert torch.equal(labels[chosen], ids[chosen])
        sel += int(chosen.sum())
        masked += int((out[chosen] == mask_id).sum())
        randomised += int(((out != ids) & (out != mask_id) & chosen).sum())
        kept += int((out[chosen] == ids[chosen]).sum())
        assert int(((out < 5) & (out != mask_id) & chosen).sum()) == 0  # random ones non-special
    total = int(maskable.sum()) * 30
    assert abs(sel / total - 0.15) < 0.01
    assert abs(masked / sel - 0.8) < 0.02
    assert abs(randomised / sel - 0.1 * 94 / 95) < 0.015  # a random pick can equal the original
    assert abs(kept / sel - (0.1 + 0.1 / 95)) < 0.015


def test_masks_are_new_each_time():
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (8, 30))
    attn = torch.ones_like(ids, dtype=torch.bool)
    a = mask_tokens(ids, attn, mask_id=4, special_ids=[0, 2, 3, 4], vocab_size=50)[1]
    b = mask_tokens(ids, attn, mask_id=4, special_ids=[0, 2, 3, 4], vocab_size=50)[1]
    assert not torch.equal(a, b)


def test_mlm_loss_falls_on_a_repetitive_corpus(pretrained):
    _, run, result = pretrained
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 200
    assert losses[-1] < 0.5 * losses[0], losses
    assert (run / "training_curve.png").is_file()


def test_pretrained_dir_has_encoder_and_tied_mlm_head(pretrained):
    enc, _, _ = pretrained
    md = read_model_dir(enc)
    assert md.config.pooling == "cls" and md.meta["train"]["pretrain"]["objective"] == "mlm"
    head = load_file(str(enc / "mlm_head.safetensors"))
    # Tied decoder: only its bias is stored; the weight is the token embedding matrix.
    assert set(head) == {"dense.weight", "dense.bias", "norm.weight", "norm.bias", "bias"}
    assert head["bias"].shape == (md.config.vocab_size,)
    card = (enc / "README.md").read_text()  # says what it is, and how to fine-tune it
    assert "pretrained by masked-language modelling" in card and "classifier (" not in card
    assert f"slimtext train --init {enc.name}" in card and "pretrain-0" not in card


def test_init_loads_every_encoder_weight_and_only_the_head_is_new(pretrained, toy_data):
    enc, _, _ = pretrained
    src = read_model_dir(enc).model
    texts, labels = toy_data
    # All encoder parameters frozen: after fine-tuning they must still equal the pretrained ones.
    rest = {k: v for k, v in TINY.items() if k not in ("hidden_size", "num_layers")}
    # another shape cannot be honoured: an error (it was a warning, easy to miss)
    with pytest.raises(ValueError, match=r"hidden_size 64 \(the encoder's: 32\)"):
        TextClassifier(init=enc, max_steps=3, verbose=False, hidden_size=64, **rest).fit(
            (texts, labels)
        )
    with pytest.raises(ValueError, match="embeddings 'bag'.*ngram_buckets 64"):  # were ignored
        TextClassifier(init=enc, max_steps=3, verbose=False, embeddings="bag", ngram_buckets=64,
                       **rest).fit((texts, labels))  # fmt: skip
    clf = TextClassifier(init=enc, max_steps=3, freeze="embeddings+1", verbose=False, **rest)
    clf.fit((texts, labels))
    model = clf.model_dir_.model
    assert model.config.hidden_size == 32 and model.head.out_features == 3
    # the encoder's tokenizer (its truncation setting is whatever the last encode left)
    ours, theirs = clf.model_dir_.tokenizer.backend, read_model_dir(enc).tokenizer.backend
    assert ours.get_vocab() == theirs.get_vocab() and ours.model.__class__ is theirs.model.__class__
    src_state, new_state = src.state_dict(), model.state_dict()
    for k, v in src_state.items():
        if k.startswith(("embeddings.", "encoder.")):
            torch.testing.assert_close(new_state[k], v, rtol=0, atol=0, msg=k)
    # Directly: every weight but the head (pooler included) comes from the init model.
    fresh = init_classifier(src, ModelConfig(**{**src.config.to_dict(), "num_labels": 5}))
    for k, v in fresh.state_dict().items():
        if k.startswith("head."):
            assert v.shape[0] == 5
        else:
            assert torch.equal(v, src_state[k]), k


def test_init_takes_another_pooling_keeping_every_encoder_weight(pretrained, toy_data):
    # `--init ENC --pooling mean` was refused as a shape change: but MLM never trains the [CLS]
    # pooler, and mean pooling over the tokens it did train is a fair choice to fine-tune with.
    enc, _, _ = pretrained
    src = read_model_dir(enc).model
    assert src.config.pooling == "cls"
    rest = {k: v for k, v in TINY.items() if k not in ("hidden_size", "num_layers")}
    clf = TextClassifier(init=enc, max_steps=2, pooling="mean", verbose=False, **rest)
    model = clf.fit(toy_data).model_dir_.model
    assert model.config.pooling == "mean" and model.pooler is None
    mean = init_classifier(src, ModelConfig(**{**src.config.to_dict(), "pooling": "mean"}))
    src_state = src.state_dict()
    for k, v in mean.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, src_state[k]), k
    # and back: a mean-pooled model as the start of a [CLS] one gets a fresh pooler, the rest kept
    back = init_classifier(mean, ModelConfig(**{**src.config.to_dict(), "pooling": "cls"}))
    assert back.pooler is not None
    for k, v in mean.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(back.state_dict()[k], v), k


def test_layer_lr_decay_gives_each_depth_its_lr():
    model = TransformerClassifier(ModelConfig(vocab_size=50, num_labels=2, hidden_size=32,
                                              num_layers=2, num_heads=2, ffn_size=64,
                                              pooling="cls"))  # fmt: skip
    groups = param_groups(model, 0.01, lr=1.0, layer_lr_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    expected = {"embeddings.": 0.125, "encoder.blocks.0.": 0.25, "encoder.blocks.1.": 0.5,
                "pooler.": 1.0, "head.": 1.0}  # fmt: skip
    for name, p in model.named_parameters():
        want = next(v for k, v in expected.items() if name.startswith(k))
        assert lr_of[id(p)] == pytest.approx(want), name
    assert groups[0]["lr"] == 1.0  # the logged lr is the head's
    assert len(lr_of) == sum(1 for _ in model.parameters())


def test_frozen_params_do_not_change_after_a_step():
    torch.manual_seed(0)
    model = TransformerClassifier(ModelConfig(vocab_size=50, num_labels=2, hidden_size=32,
                                              num_layers=2, num_heads=2, ffn_size=64))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = [[2] + [5 + (i * j) % 40 for j in range(6)] + [3] for i in range(32)]
    cfg = TrainConfig(max_steps=2, batch_size=16, lr=1e-2, freeze="embeddings+1", threads=1,
                      device="cpu", precision="fp32")  # fmt: skip
    fit(model, Encoded(ids, [i % 2 for i in range(32)]), None, cfg, label_names=["a", "b"],
        pad_id=0, progress=False)  # fmt: skip
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith(("embeddings.", "encoder.blocks.0.")):
            assert torch.equal(after[k], v), k
    assert not torch.equal(
        after["encoder.blocks.1.ffn_in.weight"], before["encoder.blocks.1.ffn_in.weight"]
    )
    assert not torch.equal(after["head.weight"], before["head.weight"])


@pytest.mark.parametrize("spec", ["blocks", "embeddings+", "embeddings+x", "embeddings+\u00b2"])
def test_bad_freeze_spec_is_refused(spec):
    with pytest.raises(ValueError, match="freeze"):
        TrainConfig(freeze=spec)


def test_resumed_pretraining_draws_the_same_masks(tmp_path):
    kw = dict(tokenizer="wordpiece", vocab_size=120, max_steps=6, checkpoint_every=3,
              progress=False, **{**TINY, "num_layers": 1, "dropout": 0.1})  # fmt: skip
    pretrain(corpus(48), tmp_path / "a", checkpoint_dir=tmp_path / "ck", **kw)
    shutil.rmtree(tmp_path / "ck" / "step-000000006")  # as if killed after step 3
    (tmp_path / "ck" / "FINISHED").unlink()  # (so not finished)
    pretrain(corpus(48), tmp_path / "b", checkpoint_dir=tmp_path / "ck", resume=True, **kw)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_cli_pretrain_then_train_init(tmp_path, toy_data, monkeypatch):
    texts, labels = toy_data
    monkeypatch.chdir(tmp_path)  # --init given relative below
    (tmp_path / "corpus.txt").write_text("\n".join(corpus(60)) + "\n")
    tiny = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--ffn-size", "64",
            "--max-length", "32", "--batch-size", "16", "--threads", "1", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    r = CliRunner().invoke(app, ["pretrain", "--data", str(tmp_path / "corpus.txt"),
                                 "--out", str(tmp_path / "enc"), "--max-steps", "5",
                                 "--vocab-size", "120", *tiny])  # fmt: skip
    assert r.exit_code == 0, r.output
    with open(tmp_path / "train.csv", "w") as f:
        f.write("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True)))
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "train.csv"),
                                 "--out", str(tmp_path / "clf"), "--init", "enc",
                                 "--max-steps", "3", "--layer-lr-decay", "0.8",
                                 "--freeze", "embeddings", *tiny])  # fmt: skip
    assert r.exit_code == 0, r.output
    md = read_model_dir(tmp_path / "clf")
    assert md.config.num_labels == 3 and md.config.pooling == "cls"
    # recorded absolute: read from another folder, "enc" named another encoder or none
    assert md.meta["train"]["init"] == str((tmp_path / "enc").resolve())
    assert str((tmp_path / "enc").resolve()) in (tmp_path / "clf" / "README.md").read_text()
    assert md.meta["train"]["layer_lr_decay"] == 0.8
    # --out the encoder it starts from: refused before training, the encoder intact
    before = (tmp_path / "enc" / "model.safetensors").read_bytes()
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "train.csv"),
                                 "--out", str(tmp_path / "enc"), "--init", str(tmp_path / "enc"),
                                 "--max-steps", "3", *tiny])  # fmt: skip
    assert r.exit_code != 0 and "would delete it" in r.output, r.output
    assert (tmp_path / "enc" / "model.safetensors").read_bytes() == before


def test_pretrain_reads_data_as_train_does_and_drops_nothing_silently(tmp_path):
    tiny = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--ffn-size", "64",
            "--max-length", "32", "--batch-size", "16", "--threads", "1", "--device", "cpu",
            "--no-progress", "--max-steps", "1", "--vocab-size", "120"]  # fmt: skip
    path = tmp_path / "corpus.txt"
    path.write_bytes("\n".join(corpus(30)).encode() + b"\ncaf\xe9 au lait\n\n  \n")
    args = ["pretrain", "--data", str(path), "--out", str(tmp_path / "enc"), *tiny]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--encoding-errors replace" in r.output  # the option it names
    r = CliRunner().invoke(app, [*args, "--encoding-errors", "replace"])
    assert r.exit_code == 0, r.output
    assert "2 blank line" in r.output and "31 texts" in r.output  # the blanks are counted
    # in memory: an item that is not a text is an error, as in fit(), not silently dropped
    for bad, error in ((None, TypeError), ("  ", ValueError)):
        with pytest.raises(error, match="text 1"):
            pretrain(["a b c", bad, "d e f"], tmp_path / "x", max_steps=1, hidden_size=32,
                     num_layers=1, num_heads=2, ffn_size=64, vocab_size=120,
                     progress=False)  # fmt: skip


def test_packed_documents_never_attend_across_documents():
    from slimtext.pretrain import MLMModel, pack_documents
    from slimtext.tokenizer import train_tokenizer

    tok = train_tokenizer(corpus(), vocab_size=120, kind="wordpiece")
    torch.manual_seed(0)
    clf = TransformerClassifier(ModelConfig(vocab_size=tok.vocab_size, num_labels=2,
                                            hidden_size=32, num_layers=2, num_heads=2,
                                            ffn_size=64, max_length=32)).eval()  # fmt: skip
    mlm = MLMModel(clf, tok, 0.15, packed=True).eval()
    docs = tok.encode(["the cat sat on the mat", "rain falls", "we eat bread with butter"], 32)
    rows = pack_documents(docs, 32)
    assert len(rows) == 1 and rows[0] == docs[0] + docs[1] + docs[2]
    ids = torch.tensor([rows[0] + [tok.pad_id] * 3])
    attn = torch.tensor([[True] * len(rows[0]) + [False] * 3])
    with torch.no_grad():
        packed = mlm.encode(ids, attn)[0]
        start = 0
        for d in docs:  # each document's states equal those of the document alone
            alone = clf.encode(torch.tensor([d]), torch.ones(1, len(d), dtype=torch.bool))[0]
            torch.testing.assert_close(packed[start : start + len(d)], alone)
            start += len(d)
        # and changing one document leaves the others' states untouched
        ids2 = ids.clone()
        ids2[0, len(docs[0]) + 1] = 7
        other = mlm.encode(ids2, attn)[0]
    torch.testing.assert_close(other[: len(docs[0])], packed[: len(docs[0])])
    assert not torch.allclose(other[len(docs[0]) : len(docs[0]) + len(docs[1])],
                              packed[len(docs[0]) : len(docs[0]) + len(docs[1])])  # fmt: skip


@pytest.mark.parametrize(("option", "tokenizer"), [("pack", "wordpiece"), ("whole_word", "bpe")])
def test_pretraining_option_runs_and_is_recorded(tmp_path, option, tokenizer):
    r = pretrain(corpus(40), tmp_path / "p", tokenizer=tokenizer, vocab_size=120, max_steps=3,
                 progress=False, **{option: True}, **{**TINY, "num_layers": 1})  # fmt: skip
    assert r.steps == 3
    info = json.loads((tmp_path / "p" / "config.json").read_text())["train"]["pretrain"]
    assert info[option] is True


# ---- whole-word masking ----------------------------------------------------------------------


def _words_of(tok, text: str):
    """(ids, word index per id) from the tokenizer's own word ids, [CLS]/[SEP] = None."""
    enc = tok.backend.encode(text)
    return enc.ids, enc.word_ids


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_word_start_table_marks_the_first_piece_of_every_word(kind):
    from slimtext.pretrain import word_start_table
    from slimtext.tokenizer import train_tokenizer

    texts = ["unbelievably windsurfing championships", "a cat sat", "reconsideration matters"]
    # Small vocabularies, so long words split into pieces (BPE starts from 256 bytes).
    tok = train_tokenizer(texts * 5, kind=kind, vocab_size=60 if kind == "wordpiece" else 300)
    table = word_start_table(tok)
    for text in ["unbelievably windsurfing championships", "reconsideration matters a cat"]:
        ids, words = _words_of(tok, text)
        pieces = [(i, w) for i, w in zip(ids, words, strict=True) if w is not None]
        assert len(pieces) > len(text.split()), "the test needs words split into pieces"
        for j, (i, w) in enumerate(pieces):
            first = j == 0 or pieces[j - 1][1] != w
            assert bool(table[i]) == first, (tok.backend.id_to_token(i), j)


def test_whole_word_masking_selects_every_piece_of_a_word_or_none():
    torch.manual_seed(0)
    V, specials = 60, [0, 1, 2, 3, 4]
    starts = torch.zeros(V, dtype=torch.bool)
    starts[5:30] = True  # ids 5..29 begin a word, 30..59 continue one
    starts[:5] = True
    B, T = 64, 48
    ids = torch.where(torch.rand(B, T) < 0.5, torch.randint(5, 30, (B, T)),
                      torch.randint(30, V, (B, T)))  # fmt: skip
    ids[:, 0], ids[:, -1] = 2, 3
    attn = torch.ones(B, T, dtype=torch.bool)
    word = (starts[ids] | (ids < 5)).long().cumsum(1)  # word number of each token
    total_words = sel_words = 0
    for _ in range(20):
        _, labels = mask_tokens(ids, attn, mask_id=4, special_ids=specials, vocab_size=V,
                                mask_prob=0.15, word_starts=starts)  # fmt: skip
        chosen = labels != IGNORE
        assert not chosen[ids < 5].any()
        for b in range(B):
            w = word[b][ids[b] >= 5]
            c = chosen[b][ids[b] >= 5]
            for k in w.unique():
                part = c[w == k]
                assert part.all() or not part.any(), "a word was only partly selected"
                total_words += 1
                sel_words += int(part.all())
    assert abs(sel_words / total_words - 0.15) < 0.015


def test_whole_word_masking_refuses_a_vocabulary_without_word_marks():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slimtext.pretrain import word_start_table
    from slimtext.tokenizer import TextTokenizer

    bare = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="whole-word masking needs"):
        word_start_table(TextTokenizer(bare))


def test_lengths_past_a_max_length_off_the_multiple_of_8_train_and_pretrain(tmp_path):
    # Batches are padded to a multiple of 8: with max_length 20 a batch is 24 wide, and the
    # position table (20 rows) must still serve it.
    long = [t + " and then " + t for t in corpus(40)]
    kw = {**TINY, "max_length": 20, "num_layers": 1}
    for pack in (False, True):
        r = pretrain(long, tmp_path / f"e{pack}", tokenizer="wordpiece", vocab_size=120,
                     max_steps=2, progress=False, pack=pack, **kw)  # fmt: skip
        assert r.steps == 2
    labels = ["a", "b"] * 20
    clf = TextClassifier(max_steps=2, verbose=False, **kw).fit((long, labels))
    assert len(clf.predict(long[:3])) == 3


def test_pretrain_resume_refuses_other_masking_options(tmp_path):
    kw = dict(tokenizer="wordpiece", vocab_size=120, max_steps=4, checkpoint_every=2,
              progress=False, **{**TINY, "num_layers": 1})  # fmt: skip
    pretrain(corpus(48), tmp_path / "a", checkpoint_dir=tmp_path / "ck", **kw)
    shutil.rmtree(tmp_path / "ck" / "step-000000004")
    (tmp_path / "ck" / "FINISHED").unlink()  # as if killed after step 2
    with pytest.raises(ValueError, match=r"mask_prob 0\.15 -> 0\.3"):
        pretrain(corpus(48), tmp_path / "b", checkpoint_dir=tmp_path / "ck", resume=True,
                 mask_prob=0.3, **kw)  # fmt: skip
    # the tokenizer asked for, too (the checkpoint's was reused without a word)
    with pytest.raises(ValueError, match=r"tokenizer 'wordpiece' -> 'bpe'"):
        pretrain(corpus(48), tmp_path / "b", checkpoint_dir=tmp_path / "ck", resume=True,
                 **{**kw, "tokenizer": "bpe"})  # fmt: skip
    with pytest.raises(TypeError, match="no init="):
        pretrain(corpus(48), tmp_path / "c", init=str(tmp_path / "a"), **kw)
    with pytest.raises(TypeError, match="no model="):  # was a "multiple values" TypeError
        pretrain(corpus(48), tmp_path / "c", model="attention", **kw)


def test_packing_refuses_a_tokenizer_that_adds_no_cls(tmp_path):
    from tokenizers import Tokenizer

    from slimtext.tokenizer import train_tokenizer

    tok = train_tokenizer(corpus(48), vocab_size=120, kind="wordpiece").backend
    bare = Tokenizer.from_str(tok.to_str())
    bare.post_processor = None  # [CLS] in the vocabulary, never added to a text
    bare.save(str(tmp_path / "bare.json"))
    # documents were found by their [CLS]: a row of several was one, attention crossing them
    with pytest.raises(ValueError, match="--pack needs each document to start with"):
        pretrain(corpus(48), tmp_path / "p", tokenizer=str(tmp_path / "bare.json"), pack=True,
                 max_steps=2, progress=False, **{**TINY, "num_layers": 1})  # fmt: skip


def test_init_warns_when_it_caps_max_length(pretrained, toy_data):
    enc, _, _ = pretrained
    texts, labels = toy_data
    with pytest.warns(UserWarning, match="max_length 64 capped to 32"):
        TextClassifier(
            init=str(enc),
            max_steps=1,
            max_length=64,
            verbose=False,
            **{k: v for k, v in TINY.items() if k not in ("max_length", "num_layers")},
        ).fit((texts, labels))


def test_init_caps_the_default_max_length_without_a_warning(pretrained, toy_data):
    import warnings

    enc, _, _ = pretrained
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default was not asked for: nothing to warn about
        clf = TextClassifier(init=str(enc), max_steps=1, batch_size=8, verbose=False)
        clf.fit(toy_data)
    assert clf.model_dir_.max_length == 32


def test_init_without_max_length_reads_every_position_of_the_encoder(tmp_path, toy_data):
    # It was capped at the default 128, where the help says "or the positions of --init's".
    pretrain(corpus(20), tmp_path / "enc", tokenizer="wordpiece", vocab_size=120, max_steps=1,
             progress=False, **{**TINY, "num_layers": 1, "max_length": 160})  # fmt: skip
    clf = TextClassifier(init=str(tmp_path / "enc"), max_steps=1, batch_size=8, verbose=False)
    assert clf.fit(toy_data).model_dir_.max_length == 160


def test_long_documents_are_pretrained_on_whole_in_windows(tmp_path):
    # They were cut at max_length: most of a corpus of long documents was never seen.
    long_doc = " ".join(f"word{i % 50}" for i in range(200))  # ~200 tokens
    texts = [long_doc, *corpus(20)]
    kw = dict(tokenizer="wordpiece", vocab_size=120, max_steps=1, progress=False,
              **{**TINY, "num_layers": 1, "max_length": 16})  # fmt: skip
    pretrain(texts, tmp_path / "chunks", **kw)
    info = read_model_dir(tmp_path / "chunks").meta["train"]["pretrain"]
    assert info["long_text"] == "chunks" and info["long_texts"] >= 1
    assert info["windows"] >= len(texts) - 1 + 200 // 14  # the long one alone gives >= 14 rows
    pretrain(texts, tmp_path / "cut", long_text="truncate", **kw)
    info = read_model_dir(tmp_path / "cut").meta["train"]["pretrain"]
    assert info["windows"] == len(texts) and info["long_texts"] == 0


def test_predicting_with_a_pretrained_encoder_warns_that_its_head_is_a_placeholder(pretrained):
    import slimtext

    enc, _, _ = pretrained
    with pytest.warns(UserWarning, match="untrained placeholder.*train --init"):
        slimtext.load(enc)


def test_init_says_its_tokenizer_replaces_the_one_asked_for(pretrained, toy_data, capsys):
    enc, _, _ = pretrained
    rest = {k: v for k, v in TINY.items() if k not in ("hidden_size", "num_layers")}
    clf = TextClassifier(init=enc, max_steps=1, tokenizer="wordpiece", vocab_size=500, **rest)
    clf.fit(toy_data, progress=False)
    err = capsys.readouterr().err
    assert f"init: {enc} (its tokenizer and shape; tokenizer 'wordpiece', vocab size 500" in err
    TextClassifier(init=enc, max_steps=1, **rest).fit(toy_data, progress=False)
    err = capsys.readouterr().err
    assert f"init: {enc} (its tokenizer and shape)\n" in err and "ignored" not in err


def test_pretrain_takes_texts_as_a_series_or_generator_like_a_list(tmp_path):
    pd = pytest.importorskip("pandas")
    # BPE: WordPiece's ids differ from run to run (huggingface/tokenizers#1794)
    kw = dict(tokenizer="bpe", vocab_size=300, max_steps=2, progress=False,
              **{**TINY, "num_layers": 1})  # fmt: skip
    texts = corpus(48)
    pretrain(texts, tmp_path / "list", **kw)
    pretrain(pd.Series(texts), tmp_path / "series", **kw)  # was a TypeError from pathlib
    pretrain((t for t in texts), tmp_path / "gen", **kw)
    want = load_file(str(tmp_path / "list" / "model.safetensors"))
    for other in ("series", "gen"):
        got = load_file(str(tmp_path / other / "model.safetensors"))
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{other}: {k}")
    with pytest.raises(TypeError, match="not int"):
        pretrain(3, tmp_path / "x", **kw)


def test_a_missing_init_is_refused_before_the_data_is_read(tmp_path, monkeypatch):
    import sys

    never = tmp_path / "never-read.jsonl"  # does not exist either: the init is checked first
    with pytest.raises(FileNotFoundError, match="nope: --init needs a model directory"):
        TextClassifier(init=tmp_path / "nope", verbose=False).fit(never)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"slimtext\[hf\]"):
        TextClassifier(init=f"hf:{tmp_path}", verbose=False).fit(never)


def test_an_unsupported_hf_init_is_refused_before_the_data_is_read_naming_the_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "electra"
    transformers.ElectraConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64).save_pretrained(folder)  # fmt: skip
    never = tmp_path / "never-read.jsonl"  # does not exist: the init is checked first
    with pytest.raises(ValueError, match=r"electra: model_type='electra' is not supported"):
        TextClassifier(init=f"hf:{folder}", verbose=False).fit(never)


def test_a_diverged_pretraining_saves_nothing(tmp_path):
    # it saved a NaN encoder, exit 0, with "final_loss": NaN (not JSON) in metrics.json
    from slimtext.train.trainer import DivergedError

    with pytest.raises(DivergedError, match="training diverged"):
        pretrain(corpus(48), tmp_path / "enc", tokenizer="wordpiece", vocab_size=120,
                 max_steps=20, lr=1e6, progress=False, **{**TINY, "num_layers": 1})  # fmt: skip
    assert not (tmp_path / "enc").exists()


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [("--threads", 0, "threads must be >= 1"), ("--batch-size", 0, "batch_size must be >= 1"),
     ("--num-heads", 3, r"hidden_size \(256\) must be divisible by num_heads \(3\)")],
)  # fmt: skip
def test_bad_pretrain_options_are_refused_before_the_corpus_is_read(tmp_path, flag, value, why):
    # they were checked only after the whole corpus had been read (a minute of a large one),
    # the model's shape only after the tokenizer was learned from it
    never = tmp_path / "never-read.jsonl"  # does not exist: the options must fail first
    r = CliRunner().invoke(app, ["pretrain", "--data", str(never), "--out", str(tmp_path / "e"),
                                 flag, str(value)])  # fmt: skip
    assert r.exit_code == 2 and re.search(why, r.output) and "not found" not in r.output, r.output
    with pytest.raises(ValueError, match=why):
        pretrain(never, tmp_path / "e", **{flag[2:].replace("-", "_"): value})


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_missing_pretrain_tokenizer_file_is_said_before_the_corpus_is_read(tmp_path, resume):
    # train said it first; pretrain read the whole corpus (a minute of a large one: its
    # "data: corpus.csv" line came first), then "tok.jsn: not found". A --resume with no
    # checkpoint to continue from reads the option too.
    bad = tmp_path / "corpus.csv"
    bad.write_text("text\n" + "".join(f"a text {i}\n" for i in range(50)))
    tok = str(tmp_path / "tok.jsn")
    r = CliRunner().invoke(app, ["pretrain", "--data", str(bad), "--out", str(tmp_path / "e"),
                                 "--tokenizer", tok, "--no-progress", *resume])  # fmt: skip
    assert r.exit_code == 2 and "tok.jsn: tokenizer file not found" in r.output, r.output
    assert "corpus.csv" not in r.output
    never = tmp_path / "never-read.txt"  # does not exist: the tokenizer must fail first
    with pytest.raises(ValueError, match="tok.jsn: tokenizer file not found"):
        pretrain(never, tmp_path / "e", tokenizer=tok, checkpoint_dir=tmp_path / "ck",
                 resume=bool(resume), progress=False)  # fmt: skip


@pytest.mark.parametrize("extra", [[], ["--nproc", "2"]])
@pytest.mark.parametrize("strategy", ["tp", "PP"])
def test_a_model_parallel_strategy_is_refused_before_processes_start_or_data_is_read(
    tmp_path, strategy, extra
):
    # --nproc 2 --strategy pp started two ranks, read the corpus, then refused; without
    # --nproc the message told the user to launch `slimtext train` under torchrun
    never = tmp_path / "never-read.txt"
    r = CliRunner().invoke(app, ["pretrain", "--data", str(never), "--out", str(tmp_path / "e"),
                                 "--strategy", strategy, *extra])  # fmt: skip
    assert r.exit_code == 2, r.output
    assert f"pretrain runs single, ddp or fsdp, not --strategy {strategy.lower()}" in r.output
    assert "not found" not in r.output and "rank" not in r.output, r.output
    with pytest.raises(ValueError, match="pretrain runs single, ddp or fsdp"):
        pretrain(never, tmp_path / "e", strategy=strategy)


@pytest.mark.parametrize(
    "option",
    [{"patience": 2}, {"label_smoothing": 0.1}, {"valid_fraction": 0.5}, {"keep_best": False},
     {"metric": "loss"}, {"verbose": False}, {"class_weight": "balanced"}],
)  # fmt: skip
def test_pretrain_refuses_supervised_options_it_would_ignore(tmp_path, option):
    # pretraining holds out no validation data and its loss is the MLM cross-entropy: these
    # were accepted and did nothing (verbose= failed with "got multiple values")
    never = tmp_path / "never-read.txt"  # refused before any data is read
    name = next(iter(option))
    with pytest.raises(TypeError, match=rf"pretrain\(\) (does not use|has no) {name}"):
        pretrain(never, tmp_path / "e", **option)
    assert not (tmp_path / "e").exists()


def _roberta_tokenizer_file(folder, texts) -> str:
    """A RoBERTa-spelled byte-level BPE (<s> ... </s>, <pad>, <mask>) as a tokenizer.json."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    bl = ByteLevelBPETokenizer()
    bl.train_from_iterator(texts, vocab_size=300, min_frequency=1,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    bl._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    path = folder / "roberta.json"
    bl.save(str(path))
    return str(path)


def test_packing_finds_the_documents_of_a_roberta_tokenizer_by_its_s_token(tmp_path):
    # --pack refused a RoBERTa-spelled tokenizer ("packing needs a [CLS] token"), whose <s>
    # opens every document as [CLS] does; its <pad> and <mask> were already read
    from slimtext.pretrain import MLMModel, pack_documents
    from slimtext.tokenizer import load_tokenizer

    path = _roberta_tokenizer_file(tmp_path, corpus())
    r = pretrain(corpus(40), tmp_path / "p", tokenizer=path, pack=True, max_steps=2,
                 progress=False, **{**TINY, "num_layers": 1})  # fmt: skip
    assert r.steps == 2
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    clf = TransformerClassifier(ModelConfig(vocab_size=tok.vocab_size, num_labels=2,
                                            hidden_size=32, num_layers=1, num_heads=2,
                                            ffn_size=64, max_length=32,
                                            pad_id=tok.pad_id)).eval()  # fmt: skip
    mlm = MLMModel(clf, tok, 0.15, packed=True).eval()
    docs = tok.encode(["the cat sat on the mat", "rain falls"], 32)
    (row,) = pack_documents(docs, 32)
    with torch.no_grad():
        packed = mlm.encode(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.bool))[0]
        start = 0
        for d in docs:  # each document as it would be alone: attention stayed within it
            alone = clf.encode(torch.tensor([d]), torch.ones(1, len(d), dtype=torch.bool))[0]
            torch.testing.assert_close(packed[start : start + len(d)], alone)
            start += len(d)


def _tokenizer_without(what: str, folder) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from slimtext.tokenizer import train_tokenizer

    if what == "mask":  # a GPT-2-like byte-level BPE: no [MASK], nothing to corrupt with
        from tokenizers import ByteLevelBPETokenizer

        bl = ByteLevelBPETokenizer()
        bl.train_from_iterator(corpus(), vocab_size=300, special_tokens=["<|endoftext|>"])
        tok = bl._tokenizer
    elif what == "word marks":  # WordLevel: nothing says where a word starts
        words = sorted({w for t in corpus() for w in t.split()})
        vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    else:  # [CLS] in the vocabulary, never added to a text
        tok = Tokenizer.from_str(train_tokenizer(corpus(), 120, kind="wordpiece").backend.to_str())
        tok.post_processor = None
    path = folder / f"no-{what.replace(' ', '-')}.json"
    tok.save(str(path))
    return str(path)


@pytest.mark.parametrize(
    ("what", "option", "why"),
    [("mask", None, r"no \[MASK\]"), ("word marks", "whole-word", "whole-word masking needs"),
     ("cls", "pack", "--pack needs each document to start with")],
)  # fmt: skip
def test_a_tokenizer_pretraining_cannot_use_is_refused_before_the_corpus_is_read(
    tmp_path, what, option, why
):
    # refused only once the whole corpus had been read (minutes of a large one), in an error
    # that did not name the tokenizer file
    path = _tokenizer_without(what, tmp_path)
    never = tmp_path / "never-read.txt"  # does not exist: the tokenizer must fail first
    flags = [f"--{option}"] if option else []
    r = CliRunner().invoke(app, ["pretrain", "--data", str(never), "--out", str(tmp_path / "e"),
                                 "--tokenizer", path, "--no-progress", *flags])  # fmt: skip
    assert r.exit_code == 2 and re.search(why, r.output), r.output
    assert path in r.output and "never-read" not in r.output, r.output
    kw = {option.replace("-", "_"): True} if option else {}
    with pytest.raises(ValueError, match=f"{re.escape(path)}: .*{why}"):
        pretrain(never, tmp_path / "e", tokenizer=path, progress=False, **kw)


def test_an_init_that_cannot_be_fine_tuned_as_asked_is_refused_before_the_data_is_read(
    tmp_path, pretrained, toy_data
):
    # an attention model, a folder that is no model directory, --model attention, another
    # shape or a --freeze deeper than the encoder were refused only after the data had been
    # read and split (minutes of a large file)
    enc, _, _ = pretrained  # one block, hidden 32
    attention = tmp_path / "attention"
    TextClassifier(model="attention", vocab_size=120, max_steps=1, verbose=False).fit(
        toy_data
    ).save(attention)
    (tmp_path / "empty").mkdir()
    never = tmp_path / "never-read.jsonl"  # does not exist: the init is checked first
    cases = [
        ({"init": str(attention)}, "--init needs a transformer model, not arch='attention'"),
        ({"init": str(tmp_path / "empty")}, "no manifest.json"),
        ({"init": str(enc), "model": "attention"}, "init= needs model='transformer'"),
        ({"init": str(enc), "hidden_size": 64}, r"keeps its shape.*hidden_size 64"),
        ({"init": str(enc), "freeze": "embeddings+2"}, r"freeze='embeddings\+2'.*1 block"),
    ]
    for params, why in cases:
        with pytest.raises(ValueError, match=why):
            TextClassifier(verbose=False, **params).fit(never)
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in params.items()]
        r = CliRunner().invoke(app, ["train", "--data", str(never), "--out",
                                     str(tmp_path / "clf"), "--no-progress", *flags])  # fmt: skip
        assert r.exit_code == 2 and re.search(why, r.output), (params, r.output)
        assert "never-read" not in r.output, r.output
