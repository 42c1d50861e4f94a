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


class TokenizerError(ValueError):
    """A tokenizer file or folder that cannot be used."""


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the few facts the models need (pad id, vocab size)."""

    backend: Tokenizer

    @property
    def pad_id(self) -> int:
        for name in (PAD, "<pad>"):
            i = self.backend.token_to_id(name)
            if i is not None:
                return i
        return 0

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
        return [e.ids for e in tok.encode_batch(list(texts))]

    def save(self, path: str | os.PathLike) -> None:
        self.backend.save(str(path))


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
        lowercase = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
    vocab = {}
    for i, line in enumerate((folder / "vocab.txt").read_text(encoding="utf-8").splitlines()):
        vocab[line.rstrip("\n")] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])]
    )
    return TextTokenizer(tok)
