"""Attention-pooling classifier: embeddings (+ an optional light encoder) -> additive attention
pooling -> linear head. Fast (a fastText-sized model with a learned weighting of tokens).

Additive attention (Bahdanau et al. 2015; Yang et al. 2016): score_t = v^T tanh(W h_t + b).
Padded tokens are excluded by setting their score to -inf *before* the softmax, so their weight
is exactly 0. (Multiplying scores by the mask, as the sketch this grew from did, leaves a padded
score at 0, and exp(0) = 1 still takes a share of the softmax.)
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .dropout import Dropout
from .transformer import Embeddings, Encoder, init_weights


class AdditiveAttentionPool(nn.Module):
    def __init__(self, hidden: int, attn: int):
        super().__init__()
        self.proj = nn.Linear(hidden, attn)  # W and b; b has shape (attn,)
        self.score = nn.Linear(attn, 1, bias=False)  # v

    def weights(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        s = self.score(torch.tanh(self.proj(h))).squeeze(-1)  # (B, T)
        s = s.float().masked_fill(~attention_mask, float("-inf"))
        # A row without tokens (a user's tokenizer with no [UNK] and no template reads a text of
        # unknown characters as nothing) is all -inf, whose softmax is NaN: its weights are 0
        # instead, a zero vector as mean pooling gives (NaN made the whole batch fail, and the
        # training loss "diverge")
        return torch.softmax(s, dim=-1).masked_fill(~attention_mask, 0.0)  # (B, T), 0 on padding

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        w = self.weights(h, attention_mask).to(h.dtype)
        return torch.einsum("bt,btc->bc", w, h)  # (B, C)


class AttentionPoolingClassifier(nn.Module):
    """`forward(input_ids, attention_mask) -> logits`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)  # num_layers=0 gives a bag of embeddings with attention
        self.pool = AdditiveAttentionPool(cfg.hidden_size, cfg.attention_size or cfg.hidden_size)
        self.drop = Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.num_labels)
        self.apply(init_weights)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embeddings(input_ids), attention_mask.bool())

    def attention_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Pooling weights (B, T): which tokens the prediction rests on."""
        mask = attention_mask.bool()
        return self.pool.weights(self.encode(input_ids, mask), mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()
        return self.head(self.drop(self.pool(self.encode(input_ids, mask), mask)))
