"""Structural compression: low-rank factorisation of Linear layers and dropping whole layers.

    factorize_(model, LowRank(energy=0.9))     # W (out, in) ~ B (out, r) @ A (r, in), by SVD
    drop_layers_(model, DropLayers(keep=(0, 2)))

The rank is the smallest r whose singular values keep `energy` of sum(sigma^2) (the squared
Frobenius norm of W). A factorised layer only saves work when r * (in + out) < in * out, so by
default layers where it would not are left alone. Fine-tune afterwards to recover accuracy.
(ALBERT-style cross-layer sharing is a model option: `ModelConfig(share_layers=True)`.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ._util import RECORDS, blocks, record, recorded, set_module


@dataclass
class LowRank:
    energy: float = 0.9
    only_if_smaller: bool = True  # skip layers whose factors would hold more weights
    include_head: bool = False  # the classifier head is tiny and sensitive
    version: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")


@dataclass
class DropLayers:
    """Keep only the encoder blocks `keep` (indices, in order), e.g. every other layer."""

    keep: tuple[int, ...]
    version: int = 1

    def __post_init__(self) -> None:
        self.keep = tuple(int(i) for i in self.keep)
        if not self.keep:
            raise ValueError("keep at least one layer")
        if len(set(self.keep)) != len(self.keep) or min(self.keep) < 0:
            raise ValueError(f"keep must be distinct non-negative indices, got {self.keep}")


class LowRankLinear(nn.Module):
    """x -> b(a(x)): `a` (in -> rank, no bias), `b` (rank -> out, with the original bias)."""

    def __init__(self, in_features: int, rank: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.rank, self.out_features = in_features, rank, out_features
        self.a = nn.Linear(in_features, rank, bias=False)
        self.b = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def energy_rank(s: torch.Tensor, energy: float) -> int:
    if energy >= 1.0:
        return int(s.numel())
    cum = torch.cumsum(s.double() ** 2, 0)
    return int(torch.searchsorted(cum, energy * cum[-1]).item()) + 1


@torch.no_grad()
def factorize_(model: nn.Module, config: LowRank) -> dict:
    """Replace Linear layers by `LowRankLinear` in place; returns the `compression` record."""
    ranks: dict[str, list[int]] = {}
    for name, m in list(model.named_modules()):
        if type(m) is not nn.Linear or (name == "head" and not config.include_head):
            continue
        w = m.weight.detach().double()
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        r = energy_rank(S, config.energy)
        if config.only_if_smaller and r * (m.in_features + m.out_features) >= m.weight.numel():
            continue
        new = LowRankLinear(m.in_features, r, m.out_features, m.bias is not None)
        root = S[:r].sqrt()  # split sigma evenly so both factors have similar scale
        new.a.weight.copy_((root[:, None] * Vh[:r]).to(m.weight.dtype))
        new.b.weight.copy_((U[:, :r] * root[None, :]).to(m.weight.dtype))
        if m.bias is not None:
            new.b.bias.copy_(m.bias)
        set_module(model, name, new.to(m.weight.device))
        ranks[name] = [m.in_features, r, m.out_features]
    return recorded(model, record("factorize", config, ranks=ranks))


def restore_factorized_(model: nn.Module, rec: dict) -> None:
    for name, (i, r, o) in rec["ranks"].items():
        old = model.get_submodule(name)
        set_module(model, name, LowRankLinear(i, r, o, getattr(old, "bias", None) is not None))


def drop_layers_(model: nn.Module, config: DropLayers) -> dict:
    """Keep the blocks `config.keep`; `model.config.num_layers` follows, so the saved config
    alone rebuilds the right shape."""
    bl = blocks(model)
    if model.config.share_layers:
        raise ValueError("layers are shared: there is one block, nothing to drop")
    if max(config.keep) >= len(bl):
        raise ValueError(f"keep {config.keep} but the model has {len(bl)} layers")
    model.encoder.blocks = nn.ModuleList(bl[i] for i in config.keep)
    model.encoder.num_layers = len(config.keep)
    model.config = replace(model.config, num_layers=len(config.keep))
    # the earlier steps' records now describe the kept blocks only
    setattr(model, RECORDS, records_after_drop(getattr(model, RECORDS, []), config.keep))
    return recorded(model, record("drop_layers", config))


def records_after_drop(records: list[dict], keep: Sequence[int]) -> list[dict]:
    """Earlier `compression` records as they apply once only blocks `keep` remain, renumbered
    from 0: `rebuild_` replays them on a model built with the new layer count. Per-block lists
    (pruned shapes) keep the kept blocks' entries; per-module maps (factorized ranks, quantized
    modules) rename the kept blocks' modules and forget the dropped ones'."""
    renumber = {old: new for new, old in enumerate(keep)}

    def rename(name: str) -> str | None:
        m = _BLOCK.match(name)
        if m is None:
            return name  # outside the blocks: embeddings, pooling, head
        new = renumber.get(int(m.group(1)))
        return None if new is None else f"encoder.blocks.{new}.{name[m.end() :]}"

    out = []
    for rec in records:
        rec = dict(rec)
        for key in ("heads", "head_dim", "ffn"):  # `structure`: one entry per block
            if isinstance(rec.get(key), list):
                rec[key] = [rec[key][i] for i in keep]
        for key in ("ranks", "modules"):
            if isinstance(rec.get(key), dict):
                pairs = ((rename(k), v) for k, v in rec[key].items())
                rec[key] = {k: v for k, v in pairs if k is not None}
        out.append(rec)
    return out


_BLOCK = re.compile(r"encoder\.blocks\.(\d+)\.")


def every_other(n_layers: int, n_keep: int) -> Sequence[int]:
    """`n_keep` layer indices spread evenly over `n_layers`, always including the last
    (its output is what the head was trained on)."""
    if n_keep < 1:  # zero layers would divide by zero below, and leave nothing to run
        raise ValueError(f"keep at least one layer, got n_keep={n_keep}")
    if n_keep >= n_layers:
        return tuple(range(n_layers))
    step = n_layers / n_keep
    return tuple(sorted({min(n_layers - 1, round(n_layers - 1 - i * step)) for i in range(n_keep)}))
