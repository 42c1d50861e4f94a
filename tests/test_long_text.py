"""Texts longer than max_length: truncate, head-tail and chunks windows, pooled per text."""

import json
import random
import shutil

import pytest
import torch

from slimtext import TextClassifier, load
from slimtext.artifact import ModelDirError, read_model_dir
from slimtext.fileio import write_manifest
from slimtext.tokenizer import CLS, SEP, pool_windows, train_tokenizer

# Numbered words are each their own token in a vocabulary trained on them, so any window's body
# can be located in the whole text's token sequence.
WORDS = [f"w{i}" for i in range(120)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([" ".join(WORDS)] * 5, vocab_size=400, kind="wordpiece")


def _body(tok, text):
    ids = tok.encode([text], 10_000)[0]
    return ids[1:-1]


@pytest.mark.parametrize("n_words", [3, 13, 14, 15, 40, 119])
@pytest.mark.parametrize("max_length", [8, 16])
def test_chunks_cover_every_token_in_contiguous_overlapping_windows(tok, n_words, max_length):
    text = " ".join(WORDS[:n_words])
    body = _body(tok, text)
    windows, owner = tok.encode_windows([text], max_length, "chunks")
    cls, sep = tok.backend.token_to_id(CLS), tok.backend.token_to_id(SEP)
    assert owner == [0] * len(windows)
    assert len(windows) == max(1, -(-len(body) // (max_length - 2)))
    prev_end = 0
    for w in windows:
        assert w[0] == cls and w[-1] == sep
        assert len(w) == min(max_length, len(body) + 2)  # every window full-length
        start = body.index(w[1])
        assert body[start : start + len(w) - 2] == w[1:-1]  # a contiguous slice of the text
        assert start <= prev_end  # no gap after the previous window
        prev_end = start + len(w) - 2
    assert body.index(windows[0][1]) == 0 and prev_end == len(body)  # first to last token


@pytest.mark.parametrize(("n_words", "max_length"), [(85, 5), (40, 8), (119, 16)])
def test_chunk_starts_are_the_documented_formula_rounded_half_to_even(tok, n_words, max_length):
    # README ("Running an export without slimtext"): window j starts at
    # round(j * (len(body) - budget) / (k - 1)). The code multiplied j by the rounded quotient
    # instead: 21 * (82 / 28) is 61.49999..., where 21 * 82 / 28 is 61.5, which rounds to 62;
    # a service following the README read another window than slimtext did.
    text = " ".join(WORDS[:n_words])
    body = _body(tok, text)
    budget = max_length - 2
    k = -(-len(body) // budget)
    windows, _ = tok.encode_windows([text], max_length, "chunks")
    starts = [body.index(w[1]) for w in windows]
    assert starts == [round(j * (len(body) - budget) / (k - 1)) for j in range(k)]


def test_head_tail_keeps_a_quarter_from_the_start_and_the_rest_from_the_end(tok):
    text = " ".join(WORDS[:50])
    body = _body(tok, text)
    (w,), owner = tok.encode_windows([text], 18, "head-tail")
    assert owner == [0] and len(w) == 18
    assert w[1:-1] == body[:4] + body[-12:]


@pytest.mark.parametrize("mode", ["truncate", "head-tail", "chunks"])
def test_lengths_are_the_whole_texts_token_counts_in_every_mode(tok, mode):
    texts = [" ".join(WORDS[:k]) for k in (1, 14, 50, 119)]
    lengths: list[int] = []
    tok.encode_windows(texts, 16, mode, lengths=lengths)
    assert lengths == [len(_body(tok, t)) + 2 for t in texts]


def test_fit_says_how_long_texts_are_read(toy_data, capsys):
    from slimtext.api import long_text_note

    texts, labels = toy_data
    long = [t + " " + " ".join(WORDS) for t in texts[:12]]  # 12 of the texts far too long
    kw = dict(vocab_size=400, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32,
              max_length=32, max_steps=1, threads=1, valid_fraction=0)  # fmt: skip
    for mode, says in [("truncate", "only their first 32 tokens are read"),
                       ("chunks", "each is read whole, as several windows")]:  # fmt: skip
        TextClassifier(long_text=mode, **kw).fit(long + texts[12:], labels, progress=False)
        err = capsys.readouterr().err
        assert f"note: {12 / len(texts):.0%} of the {len(texts)} training texts" in err
        assert says in err
    TextClassifier(**kw).fit(texts, labels, progress=False)  # none too long: no note
    assert "longer than max_length" not in capsys.readouterr().err
    assert long_text_note([40] * 4 + [10] * 96, 32, "truncate", 100) == ""  # under 5%: quiet
    # an --init encoder's positions bound it: "a larger --max-length" would be no help there
    assert "a larger --max-length" in long_text_note([40] * 50, 32, "truncate", 50)
    capped = long_text_note([40] * 50, 32, "truncate", 50, limit=32)
    assert "the encoder's positions stop at 32" in capped and "larger" not in capped


def test_short_texts_give_the_same_single_window_in_every_mode(tok):
    texts = [" ".join(WORDS[:k]) for k in (1, 5, 14)]
    ref = tok.encode(texts, 16)
    for mode in ("truncate", "head-tail", "chunks"):
        assert tok.encode_windows(texts, 16, mode) == (ref, [0, 1, 2])
    with pytest.raises(ValueError, match="long_text"):
        tok.encode_windows(texts, 16, "middle")


def test_pool_windows_is_the_mean_per_text_and_the_identity_for_one_window_each():
    logits = torch.arange(12.0).reshape(6, 2)
    pooled = pool_windows(logits, [0, 1, 1, 2, 2, 2], 3)
    torch.testing.assert_close(pooled, torch.stack([logits[0], logits[1:3].mean(0),
                                                    logits[3:].mean(0)]))  # fmt: skip
    assert pool_windows(logits, range(6), 6) is logits


def _ending_matters(n, seed):
    """The label is in the last two words, after 40 words of filler."""
    rng = random.Random(seed)
    filler = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with"]
    texts, labels = [], []
    for i in range(n):
        ending = "great movie" if i % 2 else "awful movie"
        texts.append(" ".join(rng.choice(filler) for _ in range(40)) + " " + ending)
        labels.append("pos" if i % 2 else "neg")
    return texts, labels


@pytest.fixture(scope="module")
def ending_models(tmp_path_factory):
    train, test = _ending_matters(400, 0), _ending_matters(100, 1)
    out = {}
    for mode in ("truncate", "head-tail", "chunks"):
        clf = TextClassifier(model="attention", max_length=16, long_text=mode, epochs=3,
                             vocab_size=200, verbose=False).fit(train)  # fmt: skip
        path = clf.save(tmp_path_factory.mktemp("long") / mode)
        out[mode] = (clf, path)
    return out, test


def test_only_windows_that_reach_the_end_can_learn_a_label_written_there(ending_models):
    models, test = ending_models
    assert models["truncate"][0].score(test) < 0.7  # the first 14 tokens are all filler
    assert models["head-tail"][0].score(test) > 0.95
    assert models["chunks"][0].score(test) > 0.95
    # validation scored texts, not windows
    assert models["chunks"][0].result_.best["n"] == 40


def test_a_saved_model_reads_long_texts_as_it_was_trained(ending_models):
    models, (texts, labels) = ending_models
    clf, path = models["chunks"]
    assert json.loads((path / "config.json").read_text())["long_text"] == "chunks"
    pred = load(path)
    assert pred.long_text == "chunks"
    texts = texts[:10] + ["great", "awful movie"]  # mixed: long and short, order kept
    got = pred.logits(texts)
    ids, owner = pred.encode(texts)
    with torch.inference_mode():
        for i in range(len(texts)):
            rows = [ids[j] for j in range(len(ids)) if owner[j] == i]
            per_window = [pred.model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.bool))
                          for r in rows]  # fmt: skip
            torch.testing.assert_close(got[i], torch.cat(per_window).mean(0), atol=1e-5, rtol=0)
    # overriding at load: the same weights read only the start of each text
    assert load(path, long_text="truncate").encode(texts)[1] == list(range(len(texts)))


def test_an_unknown_long_text_mode_in_config_json_is_a_clear_error(ending_models, tmp_path):
    models, _ = ending_models
    bad = tmp_path / "bad"
    shutil.copytree(models["chunks"][1], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["long_text"] = "sideways"
    (bad / "config.json").write_text(json.dumps(cfg))
    write_manifest(bad)  # re-sign, so the integrity check passes and the config check runs
    with pytest.raises(ModelDirError, match="long_text"):
        read_model_dir(bad)
