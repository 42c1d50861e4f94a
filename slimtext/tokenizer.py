"""Train or load a subword tokenizer. The only place in slimtext where text becomes ids.

We wrap a Hugging Face `tokenizers.Tokenizer` (Rust, parallel) instead of writing our own:
WordPiece (BERT-style) or byte-level BPE, with `[CLS] ... [SEP]` added around each text so
that [CLS] pooling has a token to read and a BERT-shaped checkpoint sees what it expects.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"

# GPT-2's word split (what `ByteLevel(use_regex=True)` applies) with combining marks counted as
# letters: its `\p{L}+` cut a Hindi word at every vowel sign (भुगतान -> भ ु गत ा न), a Thai or
# Arabic one at its marks, so BPE could never learn such a word whole. Text without combining
# marks (English, NFC-composed European text) splits exactly as GPT-2's does.
BPE_WORDS = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]
# What happens to a text longer than max_length (see `TextTokenizer.encode_windows`).
LONG_TEXT = ("truncate", "head-tail", "chunks")


def check_long_text(mode: str) -> str:
    """`mode` if it is one of LONG_TEXT, else a ValueError saying which are."""
    if mode not in LONG_TEXT:
        raise ValueError(f"long_text must be one of {LONG_TEXT}, not {mode!r}")
    return mode


class TokenizerError(ValueError):
    """A tokenizer file or folder that cannot be used."""


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the few facts the models need (pad id, vocab size)."""

    backend: Tokenizer

    def __post_init__(self) -> None:
        # Encoding switches the backend's own truncation and padding off (we cut and pad
        # ourselves); what is saved is the tokenizer with the settings it came with (to_str)
        self._as_given = (self.backend.truncation, self.backend.padding)
        self._rows: tuple[int, int] | None = None  # (token count, vocab_size) last read

    @property
    def pad_id(self) -> int:
        for name in (PAD, "<pad>"):
            i = self.backend.token_to_id(name)
            if i is not None:
                return i
        return 0  # a model directory written before `with_pad` existed says 0 too

    def with_pad(self, source: str | os.PathLike = "the tokenizer") -> TextTokenizer:
        """This tokenizer, given a [PAD] token of its own if it has none: the pad id fell back to
        0, a real token (GPT-2's "!"), whose embedding row then stayed zero in training.
        `source` (the file it came from) names it in the error for one that cannot have one."""
        if all(self.backend.token_to_id(n) is None for n in (PAD, "<pad>")):
            self.backend.add_special_tokens([PAD])
            # tokenizers numbers an added token by the count of tokens: in a vocabulary whose
            # ids have gaps that id is already a word's, which would then read as padding
            pad = self.backend.token_to_id(PAD)
            same = [t for t, i in self.backend.get_vocab(with_added_tokens=True).items()
                    if i == pad and t != PAD]  # fmt: skip
            if same:
                raise TokenizerError(
                    f"{source}: no [PAD] or <pad> token, and the id a new [PAD] gets, {pad}, "
                    f"is already the id of {same[0]!r} (the vocabulary's ids have gaps): add a "
                    "[PAD] token to it"
                )
        return self

    def check_usable(self, source: str | os.PathLike = "the tokenizer") -> TextTokenizer:
        """This tokenizer, if a model can be trained on the ids it gives; else a TokenizerError
        naming `source` (the file it came from) and why. Refused: a vocabulary model (BPE,
        WordPiece, WordLevel, Unigram) with no usable unk token, which drops an unseen character
        without a word or fails on it mid-training, and a post-processor whose special tokens'
        ids are not those of the vocabulary (the model would read other tokens' rows for them)."""
        _check_unseen_text(self.backend, source)
        _check_template_ids(self.backend, source)
        return self

    @property
    def mask_id(self) -> int | None:
        for name in (MASK, "<mask>"):
            i = self.backend.token_to_id(name)
            if i is not None:
                return i
        return None

    @property
    def vocab_size(self) -> int:
        """Rows the embedding table needs: the largest id + 1. tokenizers' get_vocab_size
        counts tokens, fewer where the ids have gaps (a hand-made or pruned vocabulary), and an
        id past the table failed training with an IndexError."""
        n = self.backend.get_vocab_size(with_added_tokens=True)
        rows = getattr(self, "_rows", None)  # (absent from one pickled before it existed)
        if rows is None or rows[0] != n:  # read again after a token is added
            ids = self.backend.get_vocab(with_added_tokens=True).values()
            self._rows = (n, max(ids, default=-1) + 1)
        return self._rows[1]

    def encode(
        self, texts: Sequence[str], max_length: int, progress: bool = False,
        lengths: list[int] | None = None,
    ) -> TokenRows:  # fmt: skip
        """Token ids for each text, truncated to `max_length` (special tokens included).
        `lengths`, when given, receives each text's whole length in tokens (before the cut)."""
        rows = _RowsBuilder()
        for _, chunk in in_chunks(texts, _CHUNK, progress, "encoding"):
            for e in _encode_chunk(self.backend, chunk):
                if lengths is not None:
                    lengths.append(len(e.ids))
                rows.append(_head(e, max_length))
        return rows.result()

    def encode_windows(
        self, texts: Sequence[str], max_length: int, long_text: str = "truncate",
        progress: bool = False, lengths: list[int] | None = None,
    ) -> tuple[Sequence[list[int]], list[int]]:  # fmt: skip
        """Token ids of one or more windows per text, and the index of the text of each window.

        Texts that fit in `max_length` give one window, themselves, in every mode. Longer ones:
          truncate   their first max_length tokens (what `encode` does);
          head-tail  the first quarter of the budget from the start and the rest from the end:
                     reviews and tickets often conclude at the end (Sun et al. 2019, "How to
                     fine-tune BERT for text classification", found head+tail best on IMDB);
          chunks     ceil(n / budget) full-length windows spread evenly from the first token to
                     the last (neighbours overlap by what the division leaves over), so nothing
                     of the text is dropped; `pool_windows` averages their logits.
        Each window keeps the tokenizer's own special tokens ([CLS] ... [SEP], <s> ... </s>).
        `progress`: a progress bar (on stderr) over the texts. `lengths`, when given, receives
        each text's whole length in tokens.
        """
        if check_long_text(long_text) == "truncate":
            ids = self.encode(texts, max_length, progress, lengths)
            return ids, list(range(len(ids)))
        tok = self.backend
        windows = _RowsBuilder()
        owner: list[int] = []
        i = -1
        for _, chunk in in_chunks(texts, _CHUNK, progress, "encoding"):
            for enc in _encode_chunk(tok, chunk):
                i += 1
                ids = enc.ids
                if lengths is not None:
                    lengths.append(len(ids))
                if len(ids) <= max_length:
                    windows.append(ids)
                    owner.append(i)
                    continue
                prefix, body, suffix, budget = _split_template(enc, max_length)
                if long_text == "head-tail":
                    head = budget // 4
                    windows.append(
                        prefix + body[:head] + body[len(body) - (budget - head) :] + suffix
                    )
                    owner.append(i)
                    continue
                k = -(-len(body) // budget)
                for j in range(k):
                    # j * spread / (k - 1), one division (README's formula): j times a rounded
                    # quotient lands beside a .5 (61.4999... for 61.5) and rounds the other way
                    start = round(j * (len(body) - budget) / (k - 1))
                    windows.append(prefix + body[start : start + budget] + suffix)
                    owner.append(i)
        return windows.result(), owner

    def to_str(self) -> str:
        """tokenizer.json's text, with the truncation and padding the tokenizer came with."""
        t = Tokenizer.from_str(self.backend.to_str())
        t.no_truncation()
        t.no_padding()
        trunc, pad = self._as_given
        if trunc:
            t.enable_truncation(**trunc)
        if pad:
            t.enable_padding(**pad)
        return t.to_str()

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")


# Characters no vocabulary learnt from ordinary text holds (a snowman, "zqxj", "æ"): a tokenizer
# must give each a token, its own or the unk one. A byte-level BPE holds every byte.
_UNSEEN_PROBE = "\u2603 zqxj\u00e6"


def _check_unseen_text(tok: Tokenizer, source) -> None:
    """Refuse a tokenizer that fails on, or drops, characters it has never seen. Read through
    its model piece by piece (after its normalizer and pre-tokenizer), so that what those remove
    on purpose (BERT's control characters) is not counted as dropped."""
    need = "a brought tokenizer needs an unk token in its vocabulary, or byte-level BPE"
    try:
        tok.encode(_UNSEEN_PROBE)  # (any error of the whole pipeline: a missing unk token)
        text = tok.normalizer.normalize_str(_UNSEEN_PROBE) if tok.normalizer else _UNSEEN_PROBE
        pieces = (tok.pre_tokenizer.pre_tokenize_str(text) if tok.pre_tokenizer
                  else [(text, (0, len(text)))])  # fmt: skip
        for piece, _ in pieces:
            if _uncovered(piece, tok.model.tokenize(piece)):
                # Named one character at a time: a BPE gives the tokens after a dropped one
                # offsets moved back by its length, which blamed its neighbours ("qxjæ" for
                # "☃" and "æ" in a piece that kept "zqxj").
                dropped = "".join(ch for ch in dict.fromkeys(piece)
                                  if _uncovered(ch, tok.model.tokenize(ch))) or piece  # fmt: skip
                raise TokenizerError(
                    f"{source}: reads {dropped!r} of the text {_UNSEEN_PROBE!r} as no token at "
                    f"all (its {type(tok.model).__name__} model has no unk token), so unseen "
                    f"characters would be dropped without a word; {need}"
                )
    except TokenizerError:
        raise
    except Exception as e:  # the Rust error text ("Missing [UNK] token from the vocabulary")
        raise TokenizerError(
            f"{source}: cannot encode the text {_UNSEEN_PROBE!r}, characters it has never seen "
            f"({e}); {need}"
        ) from e


def _uncovered(piece: str, tokens) -> str:
    """The characters of `piece` that no token covers (a token's offsets are UTF-8 bytes)."""
    covered = bytearray(len(piece.encode("utf-8")))
    for t in tokens:
        start, end = t.offsets
        covered[start:end] = b"\x01" * (end - start)
    out, at = [], 0
    for ch in piece:
        n = len(ch.encode("utf-8"))
        if not all(covered[at : at + n]):
            out.append(ch)
        at += n
    return "".join(out)


def _template_tokens(processor: dict | None) -> Iterator[tuple[str, str, int]]:
    """(processor type, token, id) of every special token a post-processor's JSON adds."""
    if not processor:
        return
    kind = processor.get("type")
    if kind == "Sequence":
        for p in processor.get("processors") or []:
            yield from _template_tokens(p)
    elif kind == "TemplateProcessing":
        for special in (processor.get("special_tokens") or {}).values():
            for token, i in zip(special.get("tokens", []), special.get("ids", []), strict=True):
                yield kind, token, i
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("cls", "sep"):
            token, i = processor[key]
            yield kind, token, i


def _check_template_ids(tok: Tokenizer, source) -> None:
    """Refuse a post-processor that adds a special token under an id the vocabulary gives to
    another token, or to none: tokenizers takes the template's ids as written."""
    processor = json.loads(tok.to_str()).get("post_processor")
    for kind, token, i in _template_tokens(processor):
        have = tok.token_to_id(token)
        if have == i:
            continue
        if have is None:
            where = f"{token!r} is not in its vocabulary"
        else:
            other = tok.id_to_token(i)
            where = f"the vocabulary has {token!r} at {have}" + (
                f" and {other!r} at {i}" if other is not None else "")  # fmt: skip
        raise TokenizerError(
            f"{source}: its post_processor ({kind}) adds {token!r} to every text as id {i}, "
            f"but {where}: the model would read wrong ids; make the post_processor's ids "
            "those of the vocabulary"
        )


# Texts are encoded this many at a time: the tokenizer's Encoding objects (ids, type ids, token
# strings, masks) of a whole 1M-row dataset held ~8 GB at once (session 17).
_CHUNK = 4096
# ... and at most this many characters at a time: the Encoding objects cost ~45 bytes a
# character, so 4096 long documents (IMDB reviews pasted ten times, 13 kB each) held 2.4 GB
# during `eval` for a 75 MB file, where news headlines hold ~50 MB.
_CHUNK_CHARS = 2_000_000
# A single text longer than this is encoded in pieces of at most this many characters, cut
# before a word's space: `tokenizers` holds ~120 bytes a character while encoding one text (a
# 5 MB cell, a book pasted into a CSV: 599 MiB at its peak; 83 MiB in pieces, BENCHMARKS §9).
# A learnt BPE or WordPiece reads each piece as it reads it inside the whole text (a test); a
# run this long without a space is cut where it must be.
_PIECE_CHARS = 250_000
_PIECE_CUT = re.compile(r" (?=\S)")


def in_chunks(
    items: Sequence, size: int, progress: bool = False, desc: str = ""
) -> Iterator[tuple[int, Sequence]]:
    """(start, items[start:start + size]) over `items`, with a progress bar on stderr when asked
    and there is more than one chunk (a wait to see)."""
    bar = None
    if progress and len(items) > size:
        from .progress import progress_bar

        bar = progress_bar(total=len(items), unit="text", desc=desc)
    try:
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            yield start, chunk
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


class TokenRows(Sequence):
    """Token ids of many texts, in one flat int32 array plus row offsets: 4 bytes a token where
    lists of Python ints take ~36 (1M news texts: ~0.2 GB instead of several). A row reads back
    as a list of ints, so it is used as the `list[list[int]]` it replaces."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets  # row i: flat[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int]]) -> TokenRows:
        b = _RowsBuilder()
        b.extend(rows)
        return b.build()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TokenRows.from_lists(self[j] for j in range(*i.indices(len(self))))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} of {n}")
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __add__(self, other) -> TokenRows:
        return TokenRows.from_lists([*self, *other])

    def __radd__(self, other) -> TokenRows:
        return TokenRows.from_lists([*other, *self])

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a == list(b) for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"TokenRows({len(self)} rows, {len(self.flat)} tokens)"


class _RowsBuilder:
    """Collects rows into int32 blocks as they come (never the whole list of lists at once)."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self._rows: list[Sequence[int]] = []

    def append(self, row: Sequence[int]) -> None:
        self._rows.append(row)
        if len(self._rows) >= _CHUNK:
            self._flush()

    def extend(self, rows: Iterable[Sequence[int]]) -> None:
        for r in rows:
            self.append(r)

    def _flush(self) -> None:
        if self._rows:
            lengths = np.fromiter((len(r) for r in self._rows), np.int64, len(self._rows))
            flat = np.fromiter(itertools.chain.from_iterable(self._rows), np.int32,
                               int(lengths.sum()))  # fmt: skip
            self.blocks.append(flat)
            self.lengths.append(lengths)
            self._rows = []

    def result(self) -> Sequence[list[int]]:
        """What `encode` returns: `TokenRows`, or for one chunk's worth the lists as they are
        (a prediction's batch: no packing cost on the hot path, nothing big to save)."""
        return self._rows if not self.blocks else self.build()

    def build(self) -> TokenRows:
        self._flush()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.int32)
        return TokenRows(flat, offsets)


def row_lengths(ids: Sequence[Sequence[int]]) -> list[int]:
    """len() of every row, without reading the rows back when they are `TokenRows`."""
    return ids.lengths().tolist() if isinstance(ids, TokenRows) else [len(r) for r in ids]


def _split_template(enc, max_length: int) -> tuple[list[int], list[int], list[int], int]:
    """(prefix, body, suffix, budget) of an encoding: the template's special tokens sit at both
    ends ([CLS] ... [SEP], <s> ... </s>) and stay; the body between them is what is cut, to
    `budget` tokens a window."""
    ids, special = enc.ids, enc.special_tokens_mask
    lead = next((j for j, m in enumerate(special) if not m), len(ids))
    trail = next((j for j, m in enumerate(reversed(special)) if not m), 0)
    budget = max_length - lead - trail
    if budget < 1:
        raise TokenizerError(f"max_length {max_length} leaves no room for text tokens")
    return ids[:lead], ids[lead : len(ids) - trail], ids[len(ids) - trail :], budget


def _head(enc, max_length: int) -> list[int]:
    """The encoding's ids cut to `max_length` as the tokenizer's own truncation cuts them: the
    body's first tokens between the template's special ones. Cut here rather than by setting
    the shared tokenizer's truncation before each call, which raced: two predictors of one
    model with other `long_text` (or max lengths) changed it under each other in threads."""
    ids = enc.ids
    if len(ids) <= max_length:
        return ids
    prefix, body, suffix, budget = _split_template(enc, max_length)
    return prefix + body[:budget] + suffix


def _encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list:
    # We cut and pad ourselves (per batch: dynamic padding); a tokenizer.json given with its
    # own truncation or padding has it switched off here, once: saving restores it (to_str).
    if tok.truncation is not None:
        tok.no_truncation()
    if tok.padding is not None:
        tok.no_padding()
    # A literal "[SEP]" or "<pad>" in a user's text is text, not a control token (Hugging Face's
    # default reads it as one: a pasted "[PAD]" got the padding id). Not saved in
    # tokenizer.json, nor kept by pickling, so set here, on every call.
    tok.encode_special_tokens = True
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets, which we never read:
    # ~20% less time for a batch of 64 news texts.
    return getattr(tok, "encode_batch_fast", tok.encode_batch)(list(texts))


def _encode_chunk(tok: Tokenizer, texts: Sequence[str]) -> Iterator:
    """The Encodings of `texts`, in order, from `_encode_batch` calls of at most
    `_CHUNK_CHARS` characters each (a text over `_PIECE_CHARS` alone, in pieces): the chunk's
    Encodings are dropped a call at a time, so memory follows the characters, not the rows."""
    start, chars = 0, 0
    for j, t in enumerate(texts):
        if len(t) > _PIECE_CHARS:
            if j > start:
                yield from _encode_batch(tok, texts[start:j])
            yield _encode_in_pieces(tok, t)
            start, chars = j + 1, 0
            continue
        if j > start and chars + len(t) > _CHUNK_CHARS:
            yield from _encode_batch(tok, texts[start:j])
            start, chars = j, 0
        chars += len(t)
    if start < len(texts):
        yield from _encode_batch(tok, texts[start:])


@dataclass
class _Joined:
    """What slimtext reads of an Encoding, for a text encoded in pieces."""

    ids: list[int]
    special_tokens_mask: list[int]


def _pieces(text: str, size: int) -> Iterator[str]:
    """`text` in pieces of at most `size` characters, each cut just before a space (U+0020)
    that starts a word, in the last half of the piece: the word keeps the leading space BPE
    reads with it (a piece starting with a newline got one more, a space token)."""
    start = 0
    while len(text) - start > size:
        end = start + size
        # (to end + 1: the lookahead must see the character after a space at the last place)
        cuts = [m.start() for m in _PIECE_CUT.finditer(text, start + size // 2, end + 1)]
        cut = cuts[-1] if cuts else end
        yield text[start:cut]
        start = cut
    yield text[start:]


def _encode_in_pieces(tok: Tokenizer, text: str) -> _Joined:
    """One long text's ids, encoded a piece at a time: each piece's own template tokens are
    dropped and the first piece's put around the whole."""
    prefix: list[int] | None = None
    suffix: list[int] = []
    body: list[int] = []
    enc = None
    for piece in _pieces(text, _PIECE_CHARS):
        (enc,) = _encode_batch(tok, [piece])
        ids, special = enc.ids, enc.special_tokens_mask
        lead = next((j for j, m in enumerate(special) if not m), None)
        if lead is None:  # a piece of only spaces: no text token, its template told apart nothing
            continue
        trail = next(j for j, m in enumerate(reversed(special)) if not m)
        if prefix is None:
            prefix, suffix = ids[:lead], ids[len(ids) - trail :]
        body += ids[lead : len(ids) - trail]
    if prefix is None:  # only spaces: what encoding it whole gives
        return _Joined(list(enc.ids), list(enc.special_tokens_mask))
    return _Joined(prefix + body + suffix, [1] * len(prefix) + [0] * len(body) + [1] * len(suffix))


def pool_windows(logits: torch.Tensor, owner: Sequence[int], n: int) -> torch.Tensor:
    """(n, C) mean of the window logits of each text: the inverse of `encode_windows`, whose
    `owner` lists every text at least once, in order."""
    if len(owner) == n:
        # One window per text, so owner is 0..n-1: nothing to pool. Checked without torch ops:
        # at batch 1 they cost ~70 us here, right after an ONNX Runtime call.
        return logits
    index = torch.as_tensor(owner, dtype=torch.long)
    out = torch.zeros(n, logits.shape[1], dtype=logits.dtype).index_add_(0, index, logits)
    return out / torch.bincount(index, minlength=n).clamp_min(1).unsqueeze(1).to(logits.dtype)


# The tokenizers `train_tokenizer` learns; "-cased" keeps upper case (an error code "ERR-IT" and
# "it", or "US" and "us", stay apart), the plain names lowercase.
LEARNT_KINDS = ("bpe", "wordpiece", "bpe-cased", "wordpiece-cased")


def is_learnt_kind(value: object) -> bool:
    """Whether a `tokenizer` option names a kind to learn rather than a file or folder."""
    return isinstance(value, str) and value in LEARNT_KINDS


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 16000,
    kind: str = "bpe",
    lowercase: bool = True,
    min_frequency: int = 2,
    progress: bool = False,
) -> TextTokenizer:
    """Learn a byte-level BPE (`kind="bpe"`) or WordPiece (`kind="wordpiece"`) vocabulary;
    `kind="bpe-cased"` / `"wordpiece-cased"` is the same with `lowercase=False`.

    BPE is the default because its training is deterministic; WordPiece training in `tokenizers`
    assigns ids in hash-map order, so two runs on the same text can differ
    (huggingface/tokenizers#1794). Both are saved, so a trained model is always reproducible.
    """
    if kind not in LEARNT_KINDS:
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; expected one of {', '.join(LEARNT_KINDS)}"
        )
    if kind.endswith("-cased"):
        kind, lowercase = kind.removesuffix("-cased"), False
    if kind == "wordpiece":
        # Words of up to 200 characters (the default 100 made a run of Japanese or Thai without
        # spaces one [UNK]).
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=200))
        # BERT's normalizer with its CJK step: each Chinese character is a word, as BERT reads
        # them (without it a line of Chinese was one word, one [UNK]). Accents are kept:
        # stripping them deleted Hindi vowel signs and Japanese voicing marks (が -> か).
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=False,
                lowercase=lowercase)]
        )  # fmt: skip
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        # NFKC: one word however it is encoded (macOS and some keyboards give decomposed forms)
        # or typed (a Japanese IME's full-width "ｅｒｒｏｒ ４０４" is "error 404", "ﬁle" "file").
        # The leading space GPT-2's ByteLevel adds ("hello" read as in "say hello") comes from
        # the normalizer, as ByteLevel after a Split adds one to every piece. Like ByteLevel's,
        # only to a text that does not start with a space: Prepend alone gave " hello" one more
        # token than "hello" (a lone "Ġ"), so a CSV cell after ", " read apart from the same text.
        norm = [normalizers.NFKC(), *([normalizers.Lowercase()] if lowercase else []),
                normalizers.Prepend(" "), normalizers.Replace(Regex(r"\A  "), " ")]  # fmt: skip
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(BPE_WORDS), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )  # fmt: skip
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:  # pragma: no cover - LEARNT_KINDS checked above
        raise AssertionError(kind)
    # A bar over the texts the trainer reads (counting words: most of the wait on large data,
    # 21 s for 270k news texts on 2 cores, silent before); the merges that follow are quick.
    # tokenizers' own bars print empty lines into a log file.
    if progress:
        from .progress import progress_bar

        size = len(texts) if isinstance(texts, Sized) else None
        texts = progress_bar(iterable=texts, total=size, desc="learning tokenizer", unit="text")
    # a huge text in pieces, as encoding reads it: the trainer held it whole (~270 MiB more for
    # one 5 MB text); cut before a word's space, the words it counts are the same
    pieces = (p for t in texts for p in (_pieces(t, _PIECE_CHARS) if len(t) > _PIECE_CHARS
                                         else (t,)))  # fmt: skip
    tok.train_from_iterator(pieces, trainer=trainer)
    cls, sep = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, cls), (SEP, sep)]
    )
    return TextTokenizer(tok)


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Load a `tokenizer.json` file, or a local Hugging Face tokenizer folder.

    A folder may hold `tokenizer.json` (any fast tokenizer) or only a BERT `vocab.txt`.
    """
    p = Path(path).expanduser()  # "~/tok.json" from the Python API as from a shell
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        elif (p / "vocab.txt").is_file():
            return _from_bert_vocab(p)
        else:
            raise TokenizerError(f"{p}: no tokenizer.json or vocab.txt in this folder")
    if not p.is_file():
        raise TokenizerError(f"{p}: tokenizer file not found")
    try:  # read here: from_file cannot open a non-ASCII path under a C locale
        return TextTokenizer(Tokenizer.from_str(p.read_text(encoding="utf-8")))
    except Exception as e:  # the Rust error text is terse; say which file
        raise TokenizerError(f"{p}: not a valid tokenizer.json ({e})") from e


def _read_json_object(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TokenizerError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


_ADDED_FLAGS = ("lstrip", "rstrip", "single_word", "normalized")


def _bert_added_tokens(folder: Path, config: dict, vocab: dict[str, int]) -> dict[int, dict]:
    """{id: {"content", "special", ...}} of the tokens a BERT folder adds to its vocab.txt:
    tokenizer_config.json's added_tokens_decoder, else the older added_tokens.json with the
    `additional_special_tokens` of tokenizer_config.json and special_tokens_map.json (entity
    markers such as "[E1]", often put in an [unused] row of vocab.txt)."""
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        try:
            return {int(i): dict(t) for i, t in decoder.items() if isinstance(t, dict)}
        except ValueError:
            raise TokenizerError(f"{folder}: added_tokens_decoder has a non-integer id") from None
    # transformers' order: tokenizer_config.json's list when it has one (transformers 5 calls
    # it extra_special_tokens, a list or a {name: token} map), else the map file's
    smap = folder / "special_tokens_map.json"
    listed = config.get("additional_special_tokens")
    if listed is None:
        listed = config.get("extra_special_tokens")
        if isinstance(listed, dict):
            listed = list(listed.values())
    if listed is None and smap.is_file():
        listed = _read_json_object(smap).get("additional_special_tokens")
    if listed is not None and not isinstance(listed, list):  # a string: one per character
        raise TokenizerError(
            f"{folder}: additional_special_tokens must be a list of tokens, got "
            f"{type(listed).__name__}"
        )
    # each with its flags (lstrip, rstrip, single_word) when written as an AddedToken's dict
    specials: dict[str, dict] = {}
    for t in listed or []:
        content = t.get("content") if isinstance(t, dict) else t
        if isinstance(content, str) and content and content not in specials:
            flags = {k: t[k] for k in _ADDED_FLAGS if k in t} if isinstance(t, dict) else {}
            specials[content] = {**flags, "content": content, "special": True}
    out = {vocab[t]: dict(specials[t]) for t in specials if t in vocab}
    path = folder / "added_tokens.json"
    added: dict = {}
    if path.is_file():
        added = _read_json_object(path)
        if not all(isinstance(i, int) for i in added.values()):
            raise TokenizerError(f"{path}: expected {{token: integer id}}")
        out.update({i: dict(specials.get(t, {"content": t, "special": False}))
                    for t, i in added.items()})  # fmt: skip
    # a special token in neither file gets the next id, as transformers adds it
    after = max([len(vocab) - 1, *out]) + 1
    for t in specials:
        if t not in vocab and t not in added:
            out[after] = dict(specials[t])
            after += 1
    return out


def _from_bert_vocab(folder: Path) -> TextTokenizer:
    cfg = folder / "tokenizer_config.json"
    config = _read_json_object(cfg) if cfg.is_file() else {}
    vocab_file = folder / "vocab.txt"
    try:
        text = vocab_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{vocab_file}: not UTF-8 ({e})") from None
    # One token per "\n"-ended line, as transformers' load_vocab reads it: str.splitlines
    # would also break at \x0c, \x1c, \x85, U+2028, ... inside a token and shift every id after.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    vocab = {token: i for i, token in enumerate(lines)}
    # Every text is wrapped in [CLS] ... [SEP], and unknown words become [UNK].
    missing = [t for t in (UNK, CLS, SEP) if t not in vocab]
    if missing:
        raise TokenizerError(
            f"{vocab_file}: no {', '.join(missing)} token; a BERT vocab.txt needs "
            f"{UNK}, {CLS} and {SEP}"
        )
    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK))
    # The options transformers' BertTokenizer reads (and its converter to the fast tokenizer
    # passes on): lower-casing alone gave "café" -> "cafe" where the checkpoint's own
    # tokenizer kept it, so the encoder was fine-tuned on ids it was not trained on.
    strip = config.get("strip_accents")
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=None if strip is None else bool(strip),  # None: as lowercase
        lowercase=bool(config.get("do_lower_case", True)),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])]
    )
    for i, t in sorted(_bert_added_tokens(folder, config, vocab).items()):
        content, special = t.get("content"), bool(t.get("special", False))
        if not isinstance(content, str) or not content:
            raise TokenizerError(f"{folder}: added token {i} has no text")
        if content in SPECIAL_TOKENS and vocab.get(content) == i:
            continue  # the control tokens: the template adds them, and in text they are text
        # Added as ordinary tokens, the special ones unnormalised as transformers keeps them:
        # slimtext reads special-token spellings in a text as text (`_encode_batch`), which is
        # for the control tokens, and would never match an entity marker such as "[E1]".
        added = AddedToken(content, single_word=bool(t.get("single_word", False)),
                           lstrip=bool(t.get("lstrip", False)), rstrip=bool(t.get("rstrip", False)),
                           normalized=False if special else bool(t.get("normalized", True)),
                           special=False)  # fmt: skip
        tok.add_tokens([added])
        if tok.token_to_id(content) != i:  # ids of a checkpoint's embedding rows: must match
            raise TokenizerError(
                f"{folder}: added token {content!r} has id {i} there, but would get "
                f"{tok.token_to_id(content)} on top of vocab.txt's {len(vocab)} tokens"
            )
    return TextTokenizer(tok)
