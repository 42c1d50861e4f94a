import json
import re
import unicodedata
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from slimtext.tokenizer import CLS, SEP, TokenizerError, load_tokenizer, train_tokenizer

# one learnt BPE tokenizer whose normalizer and pre-tokenizer the split property reads
_BPE_FOR_SPLIT = train_tokenizer(["a few words to learn from"] * 5, vocab_size=300).backend


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizer_round_trips_through_its_file(tmp_path, toy_data, kind):
    texts, _ = toy_data
    tok = train_tokenizer(texts, vocab_size=150, kind=kind)
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode(texts[:20], 64) == tok.encode(texts[:20], 64)
    assert again.vocab_size == tok.vocab_size
    assert tok.pad_id == 0


def test_every_encoding_starts_with_cls_ends_with_sep_and_respects_max_length(toy_data):
    texts, _ = toy_data
    tok = train_tokenizer(texts, vocab_size=150)
    cls, sep = tok.backend.token_to_id(CLS), tok.backend.token_to_id(SEP)
    for ids in tok.encode(texts + ["x " * 500], 16):
        assert ids[0] == cls and ids[-1] == sep and len(ids) <= 16


@pytest.mark.parametrize("long_text", ["truncate", "chunks"])
def test_special_token_spellings_in_user_text_are_text_not_control_tokens(toy_data, long_text):
    import pickle

    texts, _ = toy_data
    tok = train_tokenizer(texts, vocab_size=150)
    cls, sep = tok.backend.token_to_id(CLS), tok.backend.token_to_id(SEP)
    special = {tok.backend.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    # a pasted "[PAD]" used to get the padding id; a text of nothing but them, read in chunks,
    # had no text tokens to find between the template's own and raised StopIteration
    for t in (tok, pickle.loads(pickle.dumps(tok))):  # pickling drops the backend's setting
        rows, _ = t.encode_windows(["hello [PAD] [SEP] world [CLS]", "[PAD] " * 40], 16, long_text)
        for ids in rows:
            assert ids[0] == cls and ids[-1] == sep
            assert not special & set(ids[1:-1]), ids


def test_hf_folder_with_only_vocab_txt_loads(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = load_tokenizer(tmp_path)
    assert tok.encode(["Hello worlds"], 10) == [[2, 5, 6, 7, 3]]


@pytest.mark.parametrize(
    "config",
    [{}, {"do_lower_case": True, "strip_accents": False}, {"do_lower_case": False},
     {"tokenize_chinese_chars": False}, {"do_lower_case": True, "strip_accents": True}],
)  # fmt: skip
@pytest.mark.parametrize("added", [False, True])
def test_a_vocab_txt_folder_gives_the_ids_of_its_own_hf_tokenizer(tmp_path, config, added):
    # only do_lower_case was read: "café" became "cafe" where the checkpoint's tokenizer kept
    # it, CJK was split when tokenize_chinese_chars was off, and added tokens were dropped
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "café", "cafe", "über", "uber",
             "good", "Good", "東", "京", "東京", "##s", "co", "##vid", "##19", "test",
             "[E2]"]  # fmt: skip
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    if added:
        (tmp_path / "added_tokens.json").write_text(json.dumps({"covid19": len(vocab)}))
        # an entity marker added as a special token (tokenizer_config's newer form)
        decoder = {
            str(len(vocab) + 1): {"content": "[E1]", "special": True},
            str(len(vocab)): {"content": "covid19", "special": False},
            "4": {"content": "[MASK]", "special": True},  # a control token: text in a text
            str(len(vocab) - 1): {"content": "[E2]", "special": True},  # one in vocab.txt
        }
        (tmp_path / "tokenizer_config.json").write_text(
            json.dumps({**config, "added_tokens_decoder": decoder})
        )
    texts = ["café über Good", "東京 goods", "covid19 test", "Café good", "Title [E1] good",
             "Hello [E2] said"]  # fmt: skip
    theirs = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    want = [theirs(t)["input_ids"] for t in texts]
    assert load_tokenizer(tmp_path).encode(texts, 64) == want


@pytest.mark.parametrize("extra", [["[E1]", "[E2]"], {"e1": "[E1]", "e2": "[E2]"}])
def test_transformers_5_extra_special_tokens_are_read(tmp_path, extra):
    # transformers 5 writes extra_special_tokens (a list or a map) where 4 wrote
    # additional_special_tokens: the entity markers were split into [UNK]s
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "test", "[E2]", "said"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"extra_special_tokens": extra}))
    texts = ["said [E1] good", "said[E1]good", "said [E2]test"]
    theirs = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).encode(texts, 64) == [theirs(t)["input_ids"] for t in texts]


def test_an_added_tokens_own_flags_are_kept(tmp_path):
    # {"content": "[E1]", "single_word": true}: the flags were dropped, only the text kept
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "said", "[", "]", "e", "##1", "##]"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    marker = {"content": "[E1]", "single_word": True, "normalized": False}
    cfg = {"additional_special_tokens": [marker]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(tmp_path)
    e1 = len(vocab)
    alone, glued = tok.encode(["said [E1] good", "said[E1]good"], 64)
    assert e1 in alone and e1 not in glued  # a single word only where it stands alone


def test_an_added_token_whose_id_cannot_be_kept_is_refused(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "added_tokens.json").write_text(json.dumps({"covid19": 9}))  # a gap: id 5-8?
    with pytest.raises(TokenizerError, match="'covid19' has id 9 there, but would get 5"):
        load_tokenizer(tmp_path)


def test_bad_tokenizer_paths_give_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("missing", ["[UNK]", "[CLS]", "[SEP]"])
def test_vocab_txt_without_a_needed_special_token_names_the_file(tmp_path, missing):
    vocab = [t for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad"] if t != missing]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    with pytest.raises(TokenizerError, match=rf"vocab\.txt: no {re.escape(missing)} token"):
        load_tokenizer(tmp_path)


def test_vocab_txt_not_utf8_names_the_file(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\ncaf\xe9\n")
    with pytest.raises(TokenizerError, match=r"vocab\.txt: not UTF-8"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    "config, problem", [("{bad json", "not valid JSON"), ("[1]", "expected a JSON object")]
)
def test_malformed_tokenizer_config_names_the_file(tmp_path, config, problem):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\ngood\n")
    (tmp_path / "tokenizer_config.json").write_text(config)
    with pytest.raises(TokenizerError, match=rf"tokenizer_config\.json: {problem}"):
        load_tokenizer(tmp_path)


def test_vocab_txt_is_one_token_per_newline_ended_line(tmp_path):
    # str.splitlines would cut "a\x1cb" in two and shift the id of every later token.
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a\x1cb", "\u2028", "hello"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = load_tokenizer(tmp_path)
    assert tok.vocab_size == len(vocab)
    assert tok.backend.token_to_id("hello") == 6
    assert tok.encode(["hello"], 10) == [[2, 6, 3]]


def test_a_given_tokenizer_without_pad_gets_one_and_is_saved_as_given(tmp_path, toy_data):
    # No [PAD]/<pad>: the pad id fell back to 0, a real token (GPT-2's "!"), whose embedding
    # stayed zero; and the saved copy carried the truncation encode() had set on it.
    from safetensors.torch import load_file
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from slimtext.api import TextClassifier

    texts, labels = toy_data
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        [t + "!" for t in texts],
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    given = tmp_path / "bbpe.json"
    bpe.save(str(given))
    assert bpe.token_to_id("[PAD]") is None and bpe.id_to_token(0) == "!"
    clf = TextClassifier(model="transformer", tokenizer=str(given), hidden_size=16,
                         num_layers=1, num_heads=2, ffn_size=32, max_length=16, max_steps=3,
                         verbose=False).fit((texts, labels))  # fmt: skip
    clf.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "tokenizer.json").read_text())
    pad = Tokenizer.from_file(str(tmp_path / "m" / "tokenizer.json")).token_to_id("[PAD]")
    assert (
        pad == 300
        and json.loads((tmp_path / "m" / "config.json").read_text())["model"]["pad_id"] == 300
    )
    assert saved["truncation"] is None and saved["padding"] is None  # as given
    emb = load_file(str(tmp_path / "m" / "model.safetensors"))["embeddings.tok.weight"]
    assert emb[0].abs().sum() > 0 and emb.shape[0] == 301  # "!" learns; [PAD] has a row


@pytest.mark.parametrize("long_text", ["truncate", "head-tail", "chunks"])
def test_encoding_in_chunks_gives_what_one_call_gives(toy_data, monkeypatch, long_text):
    import slimtext.tokenizer as T

    texts = [" ".join(t for _ in range(k % 5 + 1)) for k, t in enumerate(toy_data[0])]
    tok = train_tokenizer(texts, vocab_size=300)
    whole, owner = tok.encode_windows(texts, 16, long_text)
    monkeypatch.setattr(T, "_CHUNK", 7)  # chunk and block boundaries inside the data
    chunked, chunked_owner = tok.encode_windows(texts, 16, long_text, progress=True)
    backend = tok.backend
    backend.no_truncation()
    assert chunked == whole and chunked_owner == owner and len(whole) >= len(texts)
    if long_text == "truncate":  # the reference: the tokenizer's own lists
        backend.enable_truncation(16)
        assert [list(r) for r in chunked] == [e.ids for e in backend.encode_batch(texts)]
    assert chunked.lengths().tolist() == [len(r) for r in chunked] == T.row_lengths(chunked)


@pytest.mark.parametrize("long_text", ["truncate", "chunks"])
def test_encoding_long_documents_holds_a_bounded_number_of_characters_at_once(
    toy_data, monkeypatch, long_text
):
    # 4096 long documents a call kept all their Encodings alive at once (2.4 GB for a 75 MB
    # eval file): a call gets at most _CHUNK_CHARS characters, or one longer text alone.
    import slimtext.tokenizer as T

    texts = [" ".join(t for _ in range(k % 5 + 1)) for k, t in enumerate(toy_data[0])]
    texts.append(" ".join(texts))  # one text over the budget on its own
    tok = train_tokenizer(texts, vocab_size=300)
    whole, owner = tok.encode_windows(texts, 16, long_text)
    budget = 3 * max(len(t) for t in texts[:-1])
    monkeypatch.setattr(T, "_CHUNK_CHARS", budget, raising=False)
    calls: list[int] = []
    real = T._encode_batch

    def spy(backend, batch):
        calls.append(sum(len(t) for t in batch) if len(batch) > 1 else 0)
        return real(backend, batch)

    monkeypatch.setattr(T, "_encode_batch", spy)
    lengths: list[int] = []
    chunked, chunked_owner = tok.encode_windows(texts, 16, long_text, lengths=lengths)
    assert len(calls) > 1 and max(calls) <= budget
    assert list(chunked) == list(whole) and chunked_owner == owner
    assert len(lengths) == len(texts) and lengths[-1] > 16


def test_token_rows_read_back_as_lists():
    from slimtext.tokenizer import TokenRows

    lists = [[2, 5, 3], [2, 3], [], [2, 70000, 9, 3]]
    rows = TokenRows.from_lists(lists)
    assert len(rows) == 4 and rows[1] == [2, 3] and rows[-1] == lists[-1] and list(rows) == lists
    assert rows == lists and lists == rows and rows != lists[:3]
    assert (
        rows[1:3] == lists[1:3]
        and (rows + [[1]]) == [*lists, [1]]
        and [[1]] + rows
        == [
            [1],
            *lists,
        ]
    )
    with pytest.raises(IndexError):
        rows[4]
    assert rows.flat.dtype.itemsize == 4  # 4 bytes a token


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_learned_tokenizers_read_scripts_without_spaces_or_with_marks(kind):
    import unicodedata

    texts = ["应用程序崩溃了请帮忙", "发票金额错误需要更正", "नी ने नया बिल", "Café crème"] * 10
    tok = train_tokenizer(texts, vocab_size=300, kind=kind, min_frequency=1)
    unk = tok.backend.token_to_id("[UNK]")
    # a long line of Chinese was one word over WordPiece's 100-character limit: one [UNK]
    ids = tok.encode(["应用程序崩溃了" * 20], 512)[0]
    assert unk not in ids and len(ids) > 100
    # accents kept: stripping them deleted Hindi vowel signs (नी and ने were both न)
    a, b = tok.encode(["नी", "ने"], 16)
    assert a != b
    # one word however it is encoded: NFD (macOS) and NFC give the same ids
    nfc = tok.encode(["café crème"], 16)
    assert tok.encode([unicodedata.normalize("NFD", "café crème")], 16) == nfc


def test_encoding_changes_no_shared_state_so_threads_with_other_settings_agree(toy_data):
    from concurrent.futures import ThreadPoolExecutor

    texts = [" ".join([t] * (k % 6 + 1)) for k, t in enumerate(toy_data[0])]
    tok = train_tokenizer(texts, vocab_size=300)
    calls = [(12, "truncate"), (16, "chunks"), (20, "head-tail"), (16, "truncate")] * 6
    serial = [tok.encode_windows(texts, n, mode) for n, mode in calls]
    # each call used to set its truncation on the one backend every call shares, so another
    # thread's call could encode with it (two predictors of one model, other long_text)
    assert tok.backend.truncation is None and tok.backend.padding is None
    with ThreadPoolExecutor(8) as ex:
        threaded = list(ex.map(lambda c: tok.encode_windows(texts, *c), calls))
    assert threaded == serial
    # the cut is the tokenizer's own truncation's: the body's head between [CLS] and [SEP]
    tok.backend.enable_truncation(12)
    assert [e.ids for e in tok.backend.encode_batch(texts)] == [list(r) for r in serial[0][0]]


@pytest.mark.parametrize("in_config", [None, ["[E1]"], ["[E2]"]])
@pytest.mark.parametrize("in_map", [None, ["[E1]"], ["[E2]"]])
@pytest.mark.parametrize("added", [False, True])
def test_entity_markers_of_the_older_folder_format_match_transformers(tmp_path, in_config,
                                                                      in_map, added):  # fmt: skip
    # additional_special_tokens (tokenizer_config.json, else special_tokens_map.json) were
    # ignored: "[E1]" in an [unused] row of vocab.txt was read as "[", "e", "##1", "]"
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "[E1]", "[", "]", "e", "##1",
             "said", "x"]  # fmt: skip
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {"do_lower_case": True}
    if in_config:
        config["additional_special_tokens"] = in_config
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    if in_map:
        smap = {"additional_special_tokens": in_map}
        (tmp_path / "special_tokens_map.json").write_text(json.dumps(smap))
    if added:
        (tmp_path / "added_tokens.json").write_text(json.dumps({"[E2]": len(vocab)}))
    texts = ["good [E1] said", "good [e1] said", "x [E2] good", "[E2]x said", "good said [E1]"]
    theirs = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).encode(texts, 64) == [theirs(t)["input_ids"] for t in texts]


def test_additional_special_tokens_as_a_string_is_refused(tmp_path):
    # a string was read one character a token: "E" and "1" became new ids past the vocabulary
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\ngood\n")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"additional_special_tokens": "[E1]"})
    )
    with pytest.raises(TokenizerError, match="additional_special_tokens must be a list"):
        load_tokenizer(tmp_path)


def test_bpe_learns_a_hindi_word_whole_across_its_vowel_signs():
    # GPT-2's split cut भुगतान at every vowel sign (भ ु गत ा न): no merge could join them
    texts = ["भुगतान नहीं हुआ", "भुगतान वापस करें", "refund my payment"] * 30
    tok = train_tokenizer(texts, vocab_size=400)
    assert tok.backend.encode("भुगतान नहीं").tokens[1:-1] == [
        tok.backend.pre_tokenizer.pre_tokenize_str(" भुगतान")[0][0],
        tok.backend.pre_tokenizer.pre_tokenize_str(" नहीं")[0][0],
    ]


# Cn left out: a character Python's Unicode tables do not know yet (U+13447, Unicode 15) may be
# a combining mark in the newer tables of the tokenizers library's regex engine
@given(st.text(st.characters(blacklist_categories=("Mn", "Mc", "Me", "Cs", "Cn")), max_size=40))
@settings(max_examples=200, deadline=None)
def test_bpe_words_split_text_without_combining_marks_as_gpt2_does(text):
    # English and NFC-composed text keep GPT-2's split: only combining marks join words now
    from tokenizers import pre_tokenizers

    tok = _BPE_FOR_SPLIT
    normal = tok.normalizer.normalize_str(text)  # " " + NFKC, lowercased
    assume(not any(unicodedata.category(c).startswith("M") for c in normal))  # İ -> i + U+0307
    ours = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(normal)]
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=True)
    # a text that starts with a space is read as it is, as GPT-2's ByteLevel reads it
    plain = normal if unicodedata.normalize("NFKC", text).startswith(" ") else normal[1:]
    theirs = [p for p, _ in gpt2.pre_tokenize_str(plain)]
    assert ours == theirs


def test_bpe_reads_a_leading_space_as_gpt2_does_with_no_token_of_its_own():
    # Prepend(" ") alone gave " hello" a lone "Ġ" token that "hello" has not (add_prefix_space
    # adds no space to a text that starts with one): a CSV cell after ", " read differently
    tok = _BPE_FOR_SPLIT
    assert tok.encode(" stocks fall").ids == tok.encode("stocks fall").ids
    assert tok.normalizer.normalize_str("  two") == "  two"
    assert tok.normalizer.normalize_str("\nx") == " \nx"


@pytest.mark.parametrize("progress", [True, False])
def test_learning_a_tokenizer_shows_a_bar_only_when_asked(capfd, progress):
    # 21 s without a sign on 270k texts; tokenizers' own bars print empty lines into a log
    train_tokenizer([f"word{i} text" for i in range(200)], vocab_size=300, progress=progress)
    err = capfd.readouterr().err
    assert ("learning tokenizer" in err and "200/200" in err) == progress, err
    assert "\n\n" not in err


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_cased_kinds_keep_upper_case_and_plain_kinds_fold_it(tmp_path, kind):
    texts = ["The US office", "tell us more", "US sales rose", "ask us again"] * 5
    plain = train_tokenizer(texts, vocab_size=300, kind=kind)
    cased = train_tokenizer(texts, vocab_size=300, kind=f"{kind}-cased")
    assert plain.encode(["US"], 8) == plain.encode(["us"], 8)
    assert cased.encode(["US"], 8) != cased.encode(["us"], 8)
    # kept in tokenizer.json: a saved model reads case as it was trained to
    cased.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode(["US", "us"], 8) == cased.encode(["US", "us"], 8)


def test_an_unknown_kind_names_the_kinds_there_are():
    with pytest.raises(TokenizerError, match="bpe-cased"):
        train_tokenizer(["a b c"] * 3, vocab_size=300, kind="BPE-uncased")


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(
        st.tuples(
            st.sampled_from(["goal", "Match", "tax,", "rates", "ünï", "12", "à", "x", "!?"]),
            st.sampled_from([" ", "  ", "\n ", "\t ", " \t "]),
        ),
        min_size=1,
        max_size=60,
    ),
    size=st.integers(20, 60),
)
def test_a_text_over_the_piece_size_is_encoded_in_pieces_to_the_same_ids(words, size):
    # one 5 MB text took ~1 GB inside tokenizers: it is encoded in pieces cut at spaces, and a
    # learnt tokenizer must read it exactly as whole (every half piece holds a word's space
    # here: a cut inside a word or a long run of spaces is the documented exception)
    import slimtext.tokenizer as T

    text = " " + "".join(w + sep for w, sep in words)
    for tok in _LEARNT_FOR_PIECES:
        whole = list(T._encode_batch(tok.backend, [text])[0].ids)
        real = T._PIECE_CHARS
        T._PIECE_CHARS = size  # (not monkeypatch: hypothesis runs many examples per fixture)
        try:
            (joined,) = T._encode_chunk(tok.backend, [text])
            lengths: list[int] = []
            rows = tok.encode(["short", text], 10**6, lengths=lengths)
        finally:
            T._PIECE_CHARS = real
        assert joined.ids == whole
        assert list(rows[1]) == whole and lengths[1] == len(whole)
        assert joined.special_tokens_mask.count(0) == len(whole) - 2


_LEARNT_FOR_PIECES = [
    train_tokenizer(["goal match tax rates ünï 12 à x Match"] * 5, vocab_size=300, kind=k)
    for k in ("bpe", "wordpiece", "bpe-cased")
]


def test_pieces_are_cut_before_a_words_space_and_lose_nothing():
    import slimtext.tokenizer as T

    text = "alpha beta  gamma\tdelta\nepsilon " * 7 + "x" * 50
    pieces = list(T._pieces(text, 20))
    assert "".join(pieces) == text and all(len(p) <= 20 for p in pieces)
    # every cut but the forced ones (the 50 x's) is just before a space followed by a word
    for p in pieces[1:-3]:
        assert p[0] == " " and not p[1].isspace(), pieces


def test_no_single_tokenizer_call_gets_more_than_a_piece_of_a_long_text(monkeypatch):
    import slimtext.tokenizer as T

    tok = _LEARNT_FOR_PIECES[0]
    text = "the match ended in a draw " * 400  # 10,400 characters
    whole = tok.encode([text], 10**6)
    monkeypatch.setattr(T, "_PIECE_CHARS", 1000)
    seen: list[int] = []
    real = T._encode_batch
    monkeypatch.setattr(T, "_encode_batch", lambda b, xs: seen.extend(map(len, xs)) or real(b, xs))
    for long_text in ("truncate", "chunks"):
        seen.clear()
        rows, _ = tok.encode_windows([text], 64, long_text)
        assert max(seen) <= 1000 and sum(seen) == len(text)
        if long_text == "truncate":  # [CLS] + the first 62 text tokens + [SEP], as whole
            assert list(rows[0]) == list(whole[0])[:63] + list(whole[0])[-1:]
        else:  # every text token is in a window
            assert sum(len(r) - 2 for r in rows) >= len(whole[0]) - 2


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "bpe-cased"])
def test_full_width_and_compatibility_forms_read_as_the_plain_text(kind):
    # a Japanese IME types "ｅｒｒｏｒ　４０４" (full width, ideographic space): it was a word
    # apart from "error 404" (NFC keeps it)
    tok = train_tokenizer(["error 404 on the file server"] * 5, vocab_size=300, kind=kind)
    plain, wide, lig = tok.encode(
        ["error 404 file", "ｅｒｒｏｒ\u3000４０４ ﬁle", "error 404 \ufb01le"], 16
    )
    assert wide == plain and lig == plain


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_a_huge_text_is_learnt_from_in_pieces_to_the_same_vocabulary(monkeypatch, kind):
    # the trainer held one 5 MB text whole (~270 MiB): it gets pieces cut before a word's
    # space, whose words are the same, so the vocabulary is the same
    import slimtext.tokenizer as T

    texts = ["short text about a goal", "the match ended in a draw " * 300, "tax rates rose"]
    whole = train_tokenizer(texts, vocab_size=300, kind=kind).backend.get_vocab()
    monkeypatch.setattr(T, "_PIECE_CHARS", 500)
    seen: list[str] = []
    real = T.Tokenizer.train_from_iterator

    def spy(self, iterator, *a, **k):
        return real(self, (seen.append(t) or t for t in iterator), *a, **k)

    monkeypatch.setattr(T.Tokenizer, "train_from_iterator", spy)
    tok = train_tokenizer(texts, vocab_size=300, kind=kind)
    assert max(map(len, seen)) <= 500 and len(seen) > 3

    def words(docs):  # what the trainer counts: the pre-tokenized words of each text
        pre, norm = tok.backend.pre_tokenizer, tok.backend.normalizer
        return Counter(w for d in docs for w, _ in pre.pre_tokenize_str(norm.normalize_str(d)))

    assert words(seen) == words(texts)
    if kind == "bpe":  # deterministic: the same ids too
        assert tok.backend.get_vocab() == whole
    # WordPiece breaks ties between equally frequent pairs in hash-map order, so two runs on
    # the very same texts can learn different vocabularies (tokenizers#1794): the words it
    # counted being equal is the property


@pytest.mark.parametrize(
    "model",
    [dict(model="attention"),
     dict(pooling="cls", hidden_size=16, num_layers=1, num_heads=2, ffn_size=32)],
)  # fmt: skip
def test_a_text_a_given_tokenizer_reads_as_no_tokens_is_answered_alike_alone_or_in_a_batch(
    tmp_path, toy_data, model
):
    # A tokenizer brought by the user with no template whose normalizer deletes non-ASCII
    # characters reads "日本語" as no ids at all: attention pooling gave NaN ("its weights hold
    # NaN/inf") in a batch with other texts, and training on such texts "diverged"; a
    # [CLS]-pooling model alone failed with an IndexError. (A BPE with no unk token did the
    # same; `check_usable` refuses that one now.)
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    from slimtext.api import TextClassifier

    texts, labels = toy_data
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(Regex(r"[^\x00-\x7f]"), "")
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<unk>"])
    bpe.train_from_iterator(texts, trainer)
    bpe.save(str(tmp_path / "bpe.json"))
    assert bpe.encode("日本語").ids == []
    texts = [("日本語" if i % 4 == 0 else t) for i, t in enumerate(texts)]
    clf = TextClassifier(**model, tokenizer=str(tmp_path / "bpe.json"), max_length=16,
                         epochs=2, verbose=False).fit((texts, labels))  # fmt: skip
    alone = clf.predict_proba(["日本語"])
    with_others = clf.predict_proba(["日本語", "goal match team", "bank shares fell"])
    assert np.isfinite(with_others).all()
    np.testing.assert_allclose(with_others[:1], alone, atol=1e-5)


def test_a_given_tokenizer_whose_ids_have_gaps_trains_and_a_pad_never_takes_a_used_id(
    tmp_path, toy_data
):
    # tokenizers counts the tokens (get_vocab_size), not the ids: a vocabulary with an unused id
    # range made the embedding table too small (IndexError in training), and the [PAD] added to
    # one without a pad token took an id already a word's (tokenizers gives it the count).
    from tokenizers import Tokenizer, models, pre_tokenizers

    from slimtext.api import TextClassifier
    from slimtext.tokenizer import load_tokenizer

    texts, labels = toy_data
    words = sorted({w for t in texts for w in t.split()})
    vocab = {"[UNK]": 0, **{w: i + 10 for i, w in enumerate(words)}}  # ids 1..9 unused
    for name, pad in (("padded.json", {"[PAD]": 1}), ("no_pad.json", {})):
        wl = Tokenizer(models.WordLevel({**vocab, **pad}, unk_token="[UNK]"))
        wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        wl.save(str(tmp_path / name))
    tok = load_tokenizer(tmp_path / "padded.json")
    assert tok.vocab_size == len(words) + 10 and tok.pad_id == 1
    clf = TextClassifier(model="attention", tokenizer=str(tmp_path / "padded.json"),
                         max_length=16, max_steps=2, verbose=False)  # fmt: skip
    clf.fit((texts, labels))
    assert clf.predict_proba(texts[:3]).shape == (3, 3)
    with pytest.raises(TokenizerError, match=r"no_pad\.json.*no \[PAD\].*id"):
        TextClassifier(tokenizer=str(tmp_path / "no_pad.json"), max_steps=1,
                       verbose=False).fit((texts, labels))  # fmt: skip


def _brought(tmp_path, name: str, model, pre=None, post=None) -> str:
    """A hand-made tokenizer.json (no download): `model` behind a whitespace split."""
    from tokenizers import Tokenizer, pre_tokenizers

    tok = Tokenizer(model)
    tok.pre_tokenizer = pre or pre_tokenizers.WhitespaceSplit()
    if post is not None:
        tok.post_processor = post
    path = tmp_path / name
    tok.save(str(path))
    return str(path)


_WORDS = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "goal": 4, "bank": 5, "team": 6}


def test_a_brought_tokenizer_that_cannot_encode_an_unseen_character_is_refused(tmp_path, toy_data):
    # With no unk token a BPE read a character it had never seen as nothing (a text in another
    # script trained as an empty one, silently), and WordLevel, WordPiece and Unigram models
    # raised tokenizers' error at the first such text, mid-way through reading the data.
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from slimtext.api import TextClassifier

    no_unk = {k: v for k, v in _WORDS.items() if k != "[UNK]"}
    learnt = Tokenizer(models.BPE())  # learnt from the texts: "☃" and "æ" are not among them
    learnt.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["[PAD]"])
    learnt.train_from_iterator(toy_data[0], trainer)
    bpe = str(tmp_path / "bpe.json")
    learnt.save(bpe)
    refused = {
        bpe: "reads '☃' of the text .* as no token at all .*BPE model has no unk token",
        _brought(tmp_path, "wl.json", models.WordLevel(no_unk)): "cannot encode .*WordLevel",
        _brought(tmp_path, "wp.json", models.WordPiece(no_unk)): "cannot encode .*WordPiece",
        _brought(tmp_path, "uni.json", models.Unigram([("[PAD]", 0.0), ("goal", -1.0)])):
            "cannot encode .*unk_id",
    }  # fmt: skip
    for path, why in refused.items():
        with pytest.raises(TokenizerError, match=f"{re.escape(path)}: {why}.*needs an unk token"):
            load_tokenizer(path).check_usable(path)
    # refused by training, before any step, naming the file
    with pytest.raises(TokenizerError, match=re.escape(bpe)):
        TextClassifier(model="attention", tokenizer=bpe, max_steps=1, verbose=False).fit(toy_data)


def test_the_refusal_names_the_characters_a_brought_bpe_drops(tmp_path):
    # With no pre-tokenizer the whole text is one piece, and tokenizers' BPE moves the offsets
    # of the tokens after a dropped character back by its length: the error blamed 'qxjæ',
    # characters the vocabulary holds, rather than '☃' and 'æ'.
    from tokenizers import Tokenizer, models

    path = str(tmp_path / "bpe.json")
    Tokenizer(models.BPE({"[PAD]": 0, " ": 1, "z": 2, "q": 3, "x": 4, "j": 5}, [])).save(path)
    with pytest.raises(TokenizerError, match=f"{re.escape(path)}: reads '\u2603\u00e6' of the"):
        load_tokenizer(path).check_usable(path)


@pytest.mark.parametrize(
    "post, why",
    [("template", r"\(TemplateProcessing\) adds '\[CLS\]' to every text as id 101, but the "
                  r"vocabulary has '\[CLS\]' at 2:"),
     ("missing", r"\(TemplateProcessing\) adds '<s>' .* as id 2, but '<s>' is not in its vocab"),
     ("bert", r"\(BertProcessing\) adds '\[SEP\]' .* as id 2, but the vocabulary has "
              r"'\[SEP\]' at 3 and '\[CLS\]' at 2"),
     ("roberta", r"\(RobertaProcessing\) adds '\[SEP\]' .* as id 102"),
     ("sequence", r"\(TemplateProcessing\) adds '\[CLS\]' .* as id 101")],
    ids=["template", "missing", "bert", "roberta", "sequence"],
)  # fmt: skip
def test_a_brought_tokenizer_whose_template_ids_are_not_its_vocabularys_is_refused(
    tmp_path, toy_data, post, why
):
    # tokenizers adds a template's special tokens under the ids written in it, unchecked: a
    # [CLS] of id 101 over a vocabulary holding it at 2 trained the model on another token's row
    # (or, past the vocabulary, failed in the embedding lookup).
    from tokenizers import models, processors

    from slimtext.api import TextClassifier

    template = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 101), ("[SEP]", 3)]
    )
    post_processor = {
        "template": template,
        "missing": processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)]),
        "bert": processors.BertProcessing(("[SEP]", 2), ("[CLS]", 2)),
        "roberta": processors.RobertaProcessing(("[SEP]", 102), ("[CLS]", 2)),
        "sequence": processors.Sequence([processors.ByteLevel(), template]),
    }[post]
    path = _brought(tmp_path, "t.json", models.WordLevel(_WORDS, unk_token="[UNK]"),
                    post=post_processor)  # fmt: skip
    with pytest.raises(TokenizerError, match=f"{re.escape(path)}: its post_processor {why}"):
        load_tokenizer(path).check_usable(path)
    if post == "template":
        with pytest.raises(TokenizerError, match=re.escape(path)):
            TextClassifier(model="attention", tokenizer=path, max_steps=1,
                           verbose=False).fit(toy_data)  # fmt: skip


def test_a_usable_brought_tokenizer_is_accepted_as_it_is(tmp_path, toy_data):
    # An unk token (or byte-level BPE, every byte its token) and template ids that are the
    # vocabulary's: what trained before trains now, and check_usable changes nothing.
    from tokenizers import ByteLevelBPETokenizer, models, processors

    from slimtext.api import TextClassifier

    texts, labels = toy_data
    words = {
        **_WORDS,
        **{
            w: len(_WORDS) + i
            for i, w in enumerate(sorted({w for t in texts for w in t.split()} - set(_WORDS)))
        },
    }
    post = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )  # fmt: skip
    wordlevel = _brought(tmp_path, "wl.json", models.WordLevel(words, unk_token="[UNK]"),
                         post=post)  # fmt: skip
    bl = ByteLevelBPETokenizer()  # GPT-2's kind: no unk token, no [PAD]
    bl.train_from_iterator(texts, vocab_size=300, special_tokens=["<s>", "</s>"])
    bl._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    bl.save(str(tmp_path / "bl.json"))
    bytelevel = str(tmp_path / "bl.json")
    for path in (wordlevel, bytelevel):
        tok = load_tokenizer(path)
        before = tok.to_str()
        assert tok.check_usable(path) is tok and tok.to_str() == before
    clf = TextClassifier(model="attention", tokenizer=wordlevel, max_length=16, max_steps=2,
                         verbose=False).fit(toy_data)  # fmt: skip
    assert clf.predict_proba(["goal \u2603 zqxj\u00e6"]).shape == (1, 3)
    # the tokenizers slimtext learns or reads from a BERT vocab.txt pass as well
    for kind in ("bpe", "wordpiece"):
        train_tokenizer(texts, vocab_size=150, kind=kind).check_usable()
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    load_tokenizer(tmp_path / "bert").check_usable(tmp_path / "bert")
