"""Encoder-only Transformer classifier, top to bottom: embeddings -> blocks -> pooling -> head.

Post-LayerNorm blocks with exact GELU, the BERT layout, so that weights map one to one onto
Hugging Face `BertForSequenceClassification` (see `slimtext.models.hf`). Attention runs on
`F.scaled_dot_product_attention` with a key-padding mask: a padded key gets no weight, so adding
padding to a batch never changes a real token's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .dropout import Dropout, dropout


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_id)
        bag = cfg.embeddings == "bag"
        self.pos = None if bag else nn.Embedding(cfg.max_length, cfg.hidden_size)
        # Row 0 is padding's (see bigram_ids): always zero, and never in a gradient.
        self.ngram = (
            nn.Embedding(cfg.ngram_buckets, cfg.hidden_size, padding_idx=0)
            if cfg.ngram_buckets
            else None
        )
        self.pad_id = cfg.pad_id
        self.norm = nn.Identity() if bag else nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        if self.pos is not None:
            # Batches are padded up to a multiple of 8, which may pass max_length (e.g. 20 ->
            # 24): slots past the table are padding, whose output nothing reads.
            pos = pos.clamp_max(self.pos.num_embeddings - 1)
        return self.drop(self.packed(input_ids, pos))  # (B, T, C)

    def packed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token + position (+ hashed bigram) embeddings, normalised (`embeddings="bag"`: no
        positions, no normalisation): ids (..., T) at positions broadcasting against them; for
        packed inference, (N,) ids at their (N,) positions."""
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(positions)
        if self.ngram is not None:
            x = x + self.ngram(bigram_ids(ids, positions, self.ngram.num_embeddings, self.pad_id))
        return self.norm(x)


def bigram_ids(ids: torch.Tensor, positions: torch.Tensor, buckets: int, pad_id: int):
    """Bucket of each (previous token, token) pair, like fastText's hashed word n-grams: 1 to
    buckets - 1 for a real token (the first of a sequence, at position 0, pairs with `pad_id`),
    0 for padding. Tensor ops only, so ONNX export and torch.compile carry it.

    Padding gets the table's padding row so that it is in no gradient: a lazy optimizer
    (SparseAdam, see train.trainer.sparse_tables) moves every row a gradient lists, even with a
    zero value, and how much padding a batch has must not change training."""
    prev = F.pad(ids[..., :-1], (1, 0), value=pad_id).masked_fill(positions == 0, pad_id)
    # 1,000,003 (a prime above any vocabulary) keeps the pairs distinct before the modulo.
    h = (prev * 1_000_003 + ids) % (buckets - 1) + 1
    return h.masked_fill(ids == pad_id, 0)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        # q, k and v in one matmul: one GEMM of width 3C is faster than three of width C.
        # Rows are laid out [q | k | v]; under tensor parallelism (train/parallel.py) each rank
        # holds [q_r | k_r | v_r] for its own heads, so forward reads the width it is given.
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.p_drop = cfg.dropout
        self.max_t = cfg.max_length  # the attention path a compiled graph takes (see attend)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, cls_only: bool = False):
        """(B, T, C) -> (B, T, C); (B, 1, C), the first position's output only, if `cls_only`."""
        B, T, _ = x.shape
        qkv = self.qkv(x)  # (B, T, 3W): W = C, or C / tp on a tensor-parallel rank
        W = qkv.shape[-1] // 3
        nh = W // self.head_dim  # heads computed here: all of them, or this rank's share
        q, k, v = qkv.split(W, dim=2)
        if cls_only:  # one query a sequence against every key
            q = q[:, :1]
        q = q.reshape(B, -1, nh, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, nh, self.head_dim).transpose(1, 2) for t in (k, v))
        # key_mask: (B, 1, 1, T) bool, True = real token. Padded queries still attend to real
        # keys (no all-masked row, so no NaN); their outputs are ignored by pooling.
        p = self.p_drop if self.training else 0.0
        y = attend(q, k, v, key_mask, p, self.max_t)  # (B, nh, Tq, hs)
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], W))


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    p: float,
    max_t: int | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ/√hs, over the keys `mask` allows) · v, with attention dropout `p`.

    `F.scaled_dot_product_attention` does it, except in two CPU cases, which run the same math
    here (softmax in fp32, as SDPA does under bf16): dropout, where SDPA falls back to its math
    path and draws the mask with `bernoulli_`, the slowest op of a training step (here:
    `dropout.keep_mask`'s cheaper draws); and bf16/fp16 up to a score-matrix size, where SDPA's
    CPU kernel is the slower one: 1.5-4x as long forward + backward in training (BENCHMARKS.md
    section 1), and 1.2-2x as long in inference, where it was a third of a compile-bf16 batch
    (section 5, session 12). `max_t`, the longest sequence the model takes, decides inside
    `torch.compile` (see `_math_is_faster`)."""
    if q.device.type != "cpu" or (p == 0.0 and not _math_is_faster(q, k, max_t)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, nh, T, T)
    # finfo.min, not -inf: a query row with no allowed key (padding in a packed batch) stays
    # finite; an allowed row still gives a disallowed key exactly 0 weight.
    scores = scores.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    return dropout(scores.softmax(-1), p).to(v.dtype) @ v


# Longest sequence (queries x keys up to its square) for which bf16 attention on CPU is faster on
# the math path. Training: measured crossover 192-256 tokens on a 2-core AMX machine. Inference:
# math wins from 48 to 448 tokens and loses at 512 (2-core AMD EPYC, eager and compiled alike; the
# fp32 scores then outgrow the cache). fp32 is level with SDPA in inference and up to ~160 tokens
# in training, and slower after, so it keeps SDPA. A [CLS]-only query row is always small.
_MATH_MAX_T_TRAIN = 192
_MATH_MAX_T_INFER = 384


def _math_is_faster(q: torch.Tensor, k: torch.Tensor, max_t: int | None = None) -> bool:
    if q.dtype not in (torch.bfloat16, torch.float16):
        return False
    training = q.requires_grad and torch.is_grad_enabled()
    longest = _MATH_MAX_T_TRAIN if training else _MATH_MAX_T_INFER
    if torch.compiler.is_compiling():
        # Lengths are symbolic there: a test on them would become a guard, and each side of
        # the bound its own graph, compiled mid-prediction (warm-up sees only the longest
        # batch). The model's own maximum length decides once per graph instead.
        return max_t is not None and max_t <= longest
    return q.shape[-2] * k.shape[-2] <= longest**2


def packed_attention(attn: nn.Module, x: torch.Tensor, p: Packing, cls_only: bool) -> torch.Tensor:
    """Self-attention for inference on packed rows: x (N, C) real tokens -> (N, C), or (B, C)
    for the sequences' first tokens only (`cls_only`). The projections run on the N rows; only
    q·kᵀ and ·v see a padded layout, one per group of sequences. Any attention module with
    `qkv`, `out` and `head_dim` (pruned ones too, whose width differs from C)."""
    qkv = attn.qkv(x)  # (N, 3W)
    W = qkv.shape[-1] // 3
    max_t = getattr(attn, "max_t", None)
    outs = []
    for g in p.groups:
        B, T = g.shape
        k, v = (
            t.view(B, T, -1, attn.head_dim).transpose(1, 2) for t in qkv[g.gather, W:].split(W, 1)
        )
        if cls_only:  # one query a sequence (its [CLS]) against every key
            q = qkv[g.first, :W].view(B, 1, -1, attn.head_dim).transpose(1, 2)
            outs.append(attend(q, k, v, g.key_mask, 0.0, max_t).reshape(B, W))
        else:
            q = qkv[g.gather, :W].view(B, T, -1, attn.head_dim).transpose(1, 2)
            y = attend(q, k, v, g.key_mask, 0.0, max_t)
            outs.append(y.transpose(1, 2).reshape(B * T, W))
    y = _cat(outs)
    return attn.out(y if cls_only else y[p.index])


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.ffn_size)
        self.ffn_out = nn.Linear(cfg.ffn_size, cfg.hidden_size)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, cls_only: bool = False):
        """(B, T, C) -> (B, T, C); (B, 1, C) if `cls_only` (see `Encoder.forward`)."""
        return self._residuals(x[:, :1] if cls_only else x, self.attn(x, key_mask, cls_only))

    def packed(self, x: torch.Tensor, p: Packing, cls_only: bool) -> torch.Tensor:
        y = packed_attention(self.attn, x, p, cls_only)
        return self._residuals(x[p.first] if cls_only else x, y)

    def _residuals(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """Post-LN: x + attention, then x + feed-forward; any leading shape."""
        x = self.norm1(x + self.drop(attn_out))
        return self.norm2(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Encoder(nn.Module):
    """A stack of blocks; with `share_layers` one block is applied `num_layers` times (ALBERT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n_distinct = 1 if (cfg.share_layers and cfg.num_layers > 0) else cfg.num_layers
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_distinct))
        self.num_layers = cfg.num_layers
        self.checkpointing = cfg.gradient_checkpointing

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor, cls_only: bool = False
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). `attention_mask`: (B, T) bool key-padding mask, or a ready
        (B, 1, T, T) mask of the allowed query -> key pairs (packed documents in pretraining).

        `cls_only` returns (B, 1, C), the first position's states, and the last block computes
        only what they depend on: keys and values of every token, the rest for position 0.
        The same numbers as `forward(...)[:, :1]`, for about a quarter less work with four
        blocks: [CLS] pooling, training included (BENCHMARKS.md section 1)."""
        key_mask = attention_mask
        if key_mask.dim() == 2:
            key_mask = key_mask[:, None, None, :]  # (B, 1, 1, T)
        for i in range(self.num_layers):
            block = self.blocks[i % len(self.blocks)]
            last = cls_only and i == self.num_layers - 1
            if self.checkpointing and self.training:
                # Recompute activations in backward: trades ~30% more compute for memory.
                x = checkpoint(block, x, key_mask, last, use_reentrant=False)
            else:
                x = block(x, key_mask, last)
        return x[:, :1] if cls_only and self.num_layers == 0 else x

    def packed(self, x: torch.Tensor, p: Packing, cls_only: bool) -> torch.Tensor:
        """Inference on packed rows (N, C) -> (N, C); (B, C) [CLS] states when `cls_only`: the
        last block then computes only what the [CLS] outputs depend on."""
        for i in range(self.num_layers):
            last = cls_only and i == self.num_layers - 1
            x = self.blocks[i % len(self.blocks)].packed(x, p, last)
        if cls_only and self.num_layers == 0:
            x = x[p.first]
        return x


@dataclass
class Group:
    """Consecutive sequences of a packed batch that attention sees as one padded (B, T) layout."""

    shape: tuple[int, int]  # (B, T)
    gather: torch.Tensor  # (B·T,) packed row of each slot (a padding slot: an earlier real row)
    key_mask: torch.Tensor  # (B, 1, 1, T) bool, True = real token
    first: torch.Tensor  # (B,) packed row of each sequence's first token ([CLS])


@dataclass
class Packing:
    """Where the real tokens of a batch sit once packed into N rows: the batch is one or more
    groups of sequences, each a padded layout, laid end to end ("slots"); `index` (N,) is the
    slot of each real token, in order, so packed row r is slot index[r]."""

    groups: list[Group]
    index: torch.Tensor
    first: torch.Tensor  # (B,) packed row of every sequence's first token, group after group

    @classmethod
    def from_masks(cls, masks: Sequence[torch.Tensor], index: torch.Tensor) -> Packing:
        groups, before = [], 0
        for m in masks:
            # A padding slot reads some real row: finite values, which attention gives zero
            # weight (padded key) or whose output nothing reads (padded query). cumsum - 1 is
            # the row of the last real token at or before each slot; sequences start with a
            # real token, so the clamp only guards a degenerate all-padding first row.
            flat = m.reshape(-1)
            gather = (flat.cumsum(0) - 1 + before).clamp_min(0)
            before = before + flat.sum()
            first = gather.view(m.shape)[:, 0]
            groups.append(Group(tuple(m.shape), gather, m[:, None, None, :], first))
        first = _cat([g.first for g in groups])
        return cls(groups, index, first)

    def positions(self) -> torch.Tensor:
        """(N,) position of each real token within its sequence."""
        slots = [torch.arange(g.shape[1], device=self.index.device).repeat(g.shape[0])
                 for g in self.groups]  # fmt: skip
        return _cat(slots)[self.index]

    def pad(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Packed rows (N, C) -> each group's padded (B, T, C), padding slots filled."""
        return [x[g.gather].view(*g.shape, -1) for g in self.groups]


def _cat(ts: list[torch.Tensor]) -> torch.Tensor:
    """Per-group results end to end; a single group as it is (no copy)."""
    return ts[0] if len(ts) == 1 else torch.cat(ts)


def masked_mean(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TransformerClassifier(nn.Module):
    """`forward(input_ids, attention_mask) -> logits`; nothing else (losses live in training)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.pooling == "cls" else None
        self.drop = Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.num_labels)
        self.apply(init_weights)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Contextual token states (B, T, C): the part pretraining and distillation reuse."""
        attention_mask = attention_mask.bool()
        return self.encoder(self.embeddings(input_ids), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        attention_mask = attention_mask.bool()
        x = self.embeddings(input_ids)
        if self.pooler is not None:  # [CLS] is position 0, never padding
            h = self.encoder(x, attention_mask, cls_only=True)  # (B, 1, C)
            pooled = torch.tanh(self.pooler(h[:, 0]))
        else:
            pooled = masked_mean(self.encoder(x, attention_mask), attention_mask)
        return self.head(self.drop(pooled))  # (B, num_labels)

    def forward_packed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | Sequence[torch.Tensor],
        index: torch.Tensor,
    ) -> torch.Tensor:
        """`forward`'s logits, for inference, computing on real tokens only. `index` (N,): the
        flat positions of `attention_mask`'s real tokens (`np.flatnonzero(mask)`), given rather
        than computed so that a compiled graph has no data-dependent shape.

        `attention_mask` may also be a list of (B_g, T_g) masks, groups of consecutive sequences
        each padded to its own length, with `input_ids` and `index` over the groups' flattened
        layouts end to end: attention then costs Σ B_g·T_g² instead of B·T² (sort a batch by
        length and split it: `slimtext.infer` does, at batch >= 32).

        The linear layers, LayerNorms and GELUs (~95% of the FLOPs) run on the N real tokens
        instead of B·T slots; only attention sees the padded layout. With [CLS] pooling the last
        block computes keys and values for every token but the rest for [CLS] only. AG News,
        BERT-mini shape, batches of 64 texts of similar length in characters: 1.3x `forward`
        under compile-bf16, 1.25x under bf16 autocast, 1.5x in fp32 (BENCHMARKS.md §5)."""
        if self.training:
            raise RuntimeError("forward_packed is for inference (no dropout): call .eval() first")
        masks = [attention_mask] if isinstance(attention_mask, torch.Tensor) else attention_mask
        masks = [m.bool() for m in masks]
        p = Packing.from_masks(masks, index)
        x = self.embeddings.packed(input_ids.reshape(-1)[index], p.positions())
        x = self.encoder.packed(x, p, cls_only=self.pooler is not None)
        if self.pooler is not None:
            return self.head(torch.tanh(self.pooler(x)))
        pooled = [masked_mean(h, m) for h, m in zip(p.pad(x), masks, strict=True)]
        return self.head(_cat(pooled))


def init_weights(m: nn.Module) -> None:
    # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm.
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
