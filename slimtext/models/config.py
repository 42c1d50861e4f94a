"""Model configuration: one dataclass for both classifier families, stored in the model dir."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

import numpy as np

ARCHS = ("transformer", "attention")
EMBEDDINGS = ("bert", "bag")
POOLINGS = ("cls", "mean")


MAX_POSITIONS = 1 << 20  # tokens a text may have: far past what attention over it could afford


@dataclass
class ModelConfig:
    """Shape of a slimtext classifier.

    `arch="transformer"`: token + position embeddings -> `num_layers` encoder blocks -> pooling
    (`cls` with a BERT-style tanh pooler, or masked `mean`) -> linear head.
    `arch="attention"`: embeddings -> `num_layers` (often 0) encoder blocks -> additive attention
    pooling -> linear head. The default transformer shape is BERT-mini.
    """

    vocab_size: int
    num_labels: int
    arch: str = "transformer"
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_size: int = 1024
    max_length: int = 128  # number of learned positions; longer inputs are truncated
    dropout: float = 0.1
    pooling: str = "mean"  # masked mean learns faster from scratch; "cls" = BERT layout
    attention_size: int = 0  # additive-attention width for arch="attention"; 0 = hidden_size
    # arch="attention": hashed token-bigram embeddings added to each token's (fastText's word
    # n-grams, on sub-word ids); 0 = off. Word order a bag of embeddings cannot see otherwise.
    ngram_buckets: int = 0
    # "bert": token + position embeddings, then LayerNorm. "bag" (arch="attention"): token
    # (+ n-gram) embeddings summed as they are, fastText's representation: on IMDB the
    # LayerNorm let a 0-layer model memorise its training set (0.891 vs 0.907 test accuracy).
    embeddings: str = "bert"
    pad_id: int = 0
    layer_norm_eps: float = 1e-12  # BERT's value, so weights convert to BertModel unchanged
    share_layers: bool = (
        False  # ALBERT-style cross-layer sharing: one block applied num_layers times
    )
    gradient_checkpointing: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for name, low in (("vocab_size", 1), ("num_labels", 1), ("hidden_size", 1),
                          ("max_length", 1), ("num_heads", 1), ("num_layers", 0),
                          ("ffn_size", 1), ("attention_size", 0), ("ngram_buckets", 0),
                          ("pad_id", 0)):  # fmt: skip
            v = getattr(self, name)
            # 32.0 would fail deep in torch; numpy's ints (a scikit-learn grid) are kept as int
            if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name} must be a whole number, got {v!r}")
            v = int(v)
            setattr(self, name, v)
            if v < low:
                raise ValueError(f"{name} must be >= {low}, got {v}")
        for name in ("share_layers", "gradient_checkpointing"):  # "yes" was taken as true
            v = getattr(self, name)
            if isinstance(v, str) or v not in (True, False):  # numpy's bools and 0/1 too
                raise ValueError(f"{name} must be true or false, got {v!r}")
            setattr(self, name, bool(v))
        for name in ("dropout", "layer_norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"{name} must be a number, got {v!r}")
            setattr(self, name, float(v))  # np.float32 is no JSON number
        self.version = _check_version(self.version)
        if self.max_length > MAX_POSITIONS:  # 1e9 ended in a 128 GB allocation traceback
            raise ValueError(
                f"max_length must be <= {MAX_POSITIONS:,} tokens, got {self.max_length:,}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be in [0, vocab_size), got {self.pad_id}")
        if self.num_layers > 0 and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {self.num_labels}")
        if self.ngram_buckets < 0 or self.ngram_buckets == 1:
            raise ValueError(f"ngram_buckets must be 0 (off) or >= 2, got {self.ngram_buckets}")
        if self.ngram_buckets and self.arch != "attention":
            # A Transformer's attention learns its own n-grams; the table would also break the
            # one-to-one mapping onto BERT weights (models/hf.py) and the fused ONNX graph.
            raise ValueError('ngram_buckets is for arch="attention" only')
        if self.embeddings not in EMBEDDINGS:
            raise ValueError(f"embeddings must be one of {EMBEDDINGS}, got {self.embeddings!r}")
        if self.embeddings == "bag" and self.arch != "attention":
            raise ValueError('embeddings="bag" is for arch="attention" only')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        # A newer record is said to be one before its new fields are found unknown (which read
        # as a damaged file, not as "upgrade")
        if isinstance(d, dict) and "version" in d:
            _check_version(d["version"])
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)


def _check_version(v: object) -> int:
    """The record's version `v` as an int, if this slimtext reads it: 1, the only shape of the
    record so far. Anything but a positive integer is a damaged record, not a newer one (0 and
    "1" were said to be newer; true and 1.0, equal to 1 in Python, were read as 1)."""
    if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)) or v < 1:
        raise ValueError(f"version must be a positive integer, got {v!r}")
    if v != 1:
        raise ValueError(f"version {int(v)}: written by a newer slimtext; upgrade")
    return int(v)
