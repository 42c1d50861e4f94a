"""Train or load a subword tokenizer. The only place in slimtext where text becomes ids.

We wrap a Hugging Face `tokenizers.Tokenizer` (Rust, parallel) instead of writing our own:
WordPiece (BERT-style) or byte-level BPE, with `[CLS] ... [SEP]` added around each text so
that [CLS] pooling has a token to read and a BERT-shaped checkpoint sees what it expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
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
        # encode() sets its own truncation on the shared backend; what is saved is the
        # tokenizer with the settings it came with (see to_str)
        self._as_given = (self.backend.truncation, self.backend.padding)

    @property
    def pad_id(self) -> int:
        for name in (PAD, "<pad>"):
            i = self.backend.token_to_id(name)
            if i is not None:
                return i
        return 0  # a model directory written before `with_pad` existed says 0 too

    def with_pad(self) -> TextTokenizer:
        """This tokenizer, given a [PAD] token of its own if it has none: the pad id fell back to
        0, a real token (GPT-2's "!"), whose embedding row then stayed zero in training."""
        if all(self.backend.token_to_id(n) is None for n in (PAD, "<pad>")):
            self.backend.add_special_tokens([PAD])
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
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids for each text, truncated to `max_length` (special tokens included)."""
        tok = self.backend
        tok.no_padding()  # we pad per batch (dynamic padding), never here
        tok.enable_truncation(max_length)
        return [e.ids for e in _encode_batch(tok, texts)]

    def encode_windows(
        self, texts: Sequence[str], max_length: int, long_text: str = "truncate"
    ) -> tuple[list[list[int]], list[int]]:
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
        """
        if check_long_text(long_text) == "truncate":
            ids = self.encode(texts, max_length)
            return ids, list(range(len(ids)))
        tok = self.backend
        tok.no_padding()
        tok.no_truncation()
        windows: list[list[int]] = []
        owner: list[int] = []
        for i, enc in enumerate(_encode_batch(tok, texts)):
            ids = enc.ids
            if len(ids) <= max_length:
                windows.append(ids)
                owner.append(i)
                continue
            # The template's special tokens sit at both ends; the body between them is cut.
            special = enc.special_tokens_mask
            lead = next(j for j, m in enumerate(special) if not m)
            trail = next(j for j, m in enumerate(reversed(special)) if not m)
            prefix, body, suffix = ids[:lead], ids[lead : len(ids) - trail], ids[len(ids) - trail :]
            budget = max_length - lead - trail
            if budget < 1:
                raise TokenizerError(f"max_length {max_length} leaves no room for text tokens")
            if long_text == "head-tail":
                head = budget // 4
                windows.append(prefix + body[:head] + body[len(body) - (budget - head) :] + suffix)
                owner.append(i)
                continue
            k = -(-len(body) // budget)
            gap = (len(body) - budget) / (k - 1)
            for j in range(k):
                start = round(j * gap)
                windows.append(prefix + body[start : start + budget] + suffix)
                owner.append(i)
        return windows, owner

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


def _encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list:
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets, which we never read:
    # ~20% less time for a batch of 64 news texts.
    return getattr(tok, "encode_batch_fast", tok.encode_batch)(list(texts))


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


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 16000,
    kind: str = "bpe",
    lowercase: bool = True,
    min_frequency: int = 2,
) -> TextTokenizer:
    """Learn a byte-level BPE (`kind="bpe"`) or WordPiece (`kind="wordpiece"`) vocabulary.

    BPE is the default because its training is deterministic; WordPiece training in `tokenizers`
    assigns ids in hash-map order, so two runs on the same text can differ
    (huggingface/tokenizers#1794). Both are saved, so a trained model is always reproducible.
    """
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        norm = [normalizers.NFD(), normalizers.StripAccents()]
        if lowercase:
            norm.insert(0, normalizers.Lowercase())
        tok.normalizer = normalizers.Sequence(norm)
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
        tok.normalizer = normalizers.Lowercase() if lowercase else None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected 'wordpiece' or 'bpe'")
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, cls), (SEP, sep)]
    )
    return TextTokenizer(tok)


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Load a `tokenizer.json` file, or a local Hugging Face tokenizer folder.

    A folder may hold `tokenizer.json` (any fast tokenizer) or only a BERT `vocab.txt`.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        elif (p / "vocab.txt").is_file():
            return _from_bert_vocab(p)
        else:
            raise TokenizerError(f"{p}: no tokenizer.json or vocab.txt in this folder")
    if not p.is_file():
        raise TokenizerError(f"{p}: tokenizer file not found")
    try:
        return TextTokenizer(Tokenizer.from_file(str(p)))
    except Exception as e:  # the Rust error text is terse; say which file
        raise TokenizerError(f"{p}: not a valid tokenizer.json ({e})") from e


def _from_bert_vocab(folder: Path) -> TextTokenizer:
    lowercase = True
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            config = json.loads(cfg.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{cfg}: not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise TokenizerError(f"{cfg}: expected a JSON object, got {type(config).__name__}")
        lowercase = bool(config.get("do_lower_case", True))
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
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])]
    )
    return TextTokenizer(tok)
