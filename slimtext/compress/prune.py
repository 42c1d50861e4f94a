"""Pruning: structured (whole heads and FFN neurons, the model physically shrinks) and global
unstructured magnitude pruning (weights zeroed in place; smaller only once compressed, and no
faster on dense CPU kernels, which multiply the zeros anyway).

    prune_(model, HeadPruning(0.5), calib=batches)      # half the heads, chosen globally
    prune_(model, FFNPruning(0.5), calib=batches)       # half the FFN neurons
    prune_(model, MagnitudePruning(0.8))                # 80% of encoder weights set to 0
    prune_(model, SemiStructuredPruning())              # 2 of every 4 consecutive weights set to 0

Importance is the first-order Taylor estimate of the loss change when a unit is removed,
|sum over a batch of activation x gradient| accumulated over calibration batches (Molchanov et al.
2017; for heads, Michel et al. 2019 "Are Sixteen Heads Really Better than One?"), normalised per
layer (Michel et al.) so layers compete on a common scale. Without calibration data we fall back
to weight magnitude. Heads are ranked globally, so layers end with different head counts: the
pruned attention module carries its own `n_head`, and its q/k/v width `n_head * head_dim` no
longer equals the hidden size (the output projection maps back to it).

2:4 semi-structured sparsity (N:M in general) keeps the 2 largest |w| of every 4 consecutive
weights along the input dimension: the pattern NVIDIA's sparse tensor cores (sm80+) multiply at
up to 2x speed (`to_semi_structured_`, which uses `torch.sparse.to_sparse_semi_structured`). On
CPU there is no such kernel: the model stays dense, exactly as fast as before, and the zeros
are stored (no size saving either); the compression report says so next to the measured speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import Batch
from ..models.transformer import SelfAttention
from ._util import blocks, record, recorded

IMPORTANCE = ("taylor", "magnitude")


# ---- configs ------------------------------------------------------------------------------------
@dataclass
class HeadPruning:
    """Remove `ratio` of all attention heads (global ranking, at least one head per layer)."""

    ratio: float
    importance: str = "taylor"
    version: int = 1

    def __post_init__(self) -> None:
        _check_ratio(self.ratio, "ratio")
        _check_importance(self.importance)


@dataclass
class FFNPruning:
    """Remove `ratio` of all FFN intermediate neurons (global ranking, at least one per layer)."""

    ratio: float
    importance: str = "taylor"
    version: int = 1

    def __post_init__(self) -> None:
        _check_ratio(self.ratio, "ratio")
        _check_importance(self.importance)


@dataclass
class MagnitudePruning:
    """Zero the `sparsity` share of encoder Linear weights with the smallest |w| (one global
    threshold). `steps` > 1 reaches it gradually (cubic schedule of Zhu & Gupta 2017) when used
    through `prune_finetune`."""

    sparsity: float
    steps: int = 1
    version: int = 1

    def __post_init__(self) -> None:
        _check_ratio(self.sparsity, "sparsity")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def _check_ratio(x: float, name: str) -> None:
    if not 0.0 <= x < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {x}")


def _check_importance(x: str) -> None:
    if x not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {x!r}")


@dataclass
class SemiStructuredPruning:
    """Keep the `n` largest |w| in every group of `m` consecutive weights along the input
    dimension of each encoder Linear (2:4 by default); layers whose input width is not a
    multiple of `m` are left dense (the record lists the pruned ones)."""

    n: int = 2
    m: int = 4
    version: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise ValueError(f"need 0 < n < m for n:m sparsity, got {self.n}:{self.m}")

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}"


PruneConfig = HeadPruning | FFNPruning | MagnitudePruning | SemiStructuredPruning


# ---- the attention module with its own head count ------------------------------------------------
class PrunedSelfAttention(nn.Module):
    """Self-attention with `n_head` heads of `head_dim`: q/k/v width `W = n_head * head_dim`
    (need not equal the hidden size C); `out` maps W back to C. Same maths as `SelfAttention`
    (scaled by 1/sqrt(head_dim), unchanged by pruning)."""

    def __init__(
        self, hidden: int, n_head: int, head_dim: int, dropout: float, max_t: int | None = None
    ):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        self.max_t = max_t  # as SelfAttention's: the model's max length
        width = n_head * head_dim
        self.qkv = nn.Linear(hidden, 3 * width)
        self.out = nn.Linear(width, hidden)
        self.p_drop = dropout

    # SelfAttention's forward reads the width from qkv's output and the head count from
    # head_dim, so it serves any width (its [CLS]-only path included).
    forward = SelfAttention.forward


def _head_dim(attn: nn.Module) -> int:
    return getattr(attn, "head_dim", None) or attn.out.in_features // attn.n_head


def _linear(m: nn.Module, what: str) -> nn.Linear:
    if type(m) is not nn.Linear:
        raise TypeError(
            f"{what} is a {type(m).__name__}: structured pruning needs plain Linear layers "
            "(prune before factorizing or quantizing)"
        )
    return m


def _sliced(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None):
    w = lin.weight.detach()
    b = None if lin.bias is None else lin.bias.detach()
    if rows is not None:
        w, b = w[rows], (None if b is None else b[rows])
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new.to(lin.weight.device)


def keep_heads_(block: nn.Module, keep: Sequence[int]) -> None:
    """Replace `block.attn` by a `PrunedSelfAttention` holding only the heads `keep`."""
    attn = block.attn
    hs, nh = _head_dim(attn), attn.n_head
    qkv, out = _linear(attn.qkv, "attn.qkv"), _linear(attn.out, "attn.out")
    W = nh * hs
    keep_t = torch.tensor(sorted(keep), dtype=torch.long)
    within = (keep_t[:, None] * hs + torch.arange(hs)[None, :]).reshape(-1)  # rows of one of q|k|v
    rows = torch.cat([within + b * W for b in range(3)])
    new = PrunedSelfAttention(qkv.in_features, len(keep_t), hs, getattr(attn, "p_drop", 0.0),
                              getattr(attn, "max_t", None))  # fmt: skip
    new.qkv = _sliced(qkv, rows=rows)
    new.out = _sliced(out, cols=within)
    block.attn = new


def keep_neurons_(block: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the FFN intermediate neurons `keep` (rows of ffn_in, columns of ffn_out)."""
    keep_t = torch.tensor(sorted(keep), dtype=torch.long)
    block.ffn_in = _sliced(_linear(block.ffn_in, "ffn_in"), rows=keep_t)
    block.ffn_out = _sliced(_linear(block.ffn_out, "ffn_out"), cols=keep_t)


# ---- importance ----------------------------------------------------------------------------------
def _magnitude_scores(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    heads, neurons = [], []
    for blk in blocks(model):
        attn = blk.attn
        hs, nh = _head_dim(attn), attn.n_head
        W = nh * hs
        qkv = attn.qkv.weight.detach().abs().sum(1).view(3, nh, hs).sum((0, 2))  # (nh,)
        out = attn.out.weight.detach().abs().sum(0).view(nh, hs).sum(1)
        heads.append(qkv / (3 * hs * attn.qkv.in_features) + out / (hs * W))
        fin = blk.ffn_in.weight.detach().abs().mean(1)
        fout = blk.ffn_out.weight.detach().abs().mean(0)
        neurons.append(fin + fout)
    return heads, neurons


def _taylor_scores(
    model: nn.Module, calib: Sequence[Batch]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """|sum(activation * dL/dactivation)| per head / neuron and batch, summed over batches.

    A gate of ones multiplies the input of `attn.out` (the concatenated heads) and of `ffn_out`
    (the GELU outputs); the gate's gradient is exactly sum(activation * gradient) over the batch.
    """
    bl = blocks(model)
    gates_a = [torch.ones(b.attn.out.in_features, requires_grad=True) for b in bl]
    gates_f = [torch.ones(b.ffn_out.in_features, requires_grad=True) for b in bl]
    heads = [torch.zeros(b.attn.n_head) for b in bl]
    neurons = [torch.zeros(b.ffn_out.in_features) for b in bl]
    handles = []
    for blk, ga, gf in zip(bl, gates_a, gates_f, strict=True):
        handles.append(blk.attn.out.register_forward_pre_hook(lambda m, a, g=ga: (a[0] * g,)))
        handles.append(blk.ffn_out.register_forward_pre_hook(lambda m, a, g=gf: (a[0] * g,)))
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval()  # no dropout: the estimate is of the deployed model
    for p in model.parameters():
        p.requires_grad_(False)  # only the gates need gradients
    try:
        for b in calib:
            logits = model(b.input_ids, b.attention_mask)
            # Unlabelled calibration data: the model's own predictions stand in for labels.
            y = b.labels if b.labels is not None else logits.argmax(-1).detach()
            loss = F.cross_entropy(logits.float(), y)
            for g in gates_a + gates_f:
                g.grad = None
            loss.backward()
            for i, blk in enumerate(bl):
                nh = blk.attn.n_head
                heads[i] += gates_a[i].grad.view(nh, -1).sum(1).abs()
                neurons[i] += gates_f[i].grad.abs()
    finally:
        for h in handles:
            h.remove()
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
        model.train(was_training)
    return heads, neurons


def importance(
    model: nn.Module, calib: Sequence[Batch] | None, kind: str = "taylor"
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(head scores per layer, neuron scores per layer), each normalised to unit L2 per layer."""
    if kind == "taylor" and calib:
        heads, neurons = _taylor_scores(model, calib)
    else:
        heads, neurons = _magnitude_scores(model)

    def norm(xs):
        return [x / x.norm().clamp_min(1e-12) for x in xs]

    return norm(heads), norm(neurons)


def _global_keep(scores: list[torch.Tensor], ratio: float) -> list[list[int]]:
    """Drop the round(ratio * total) lowest-scoring units across layers, at least one kept each."""
    total = sum(len(s) for s in scores)
    n_drop = min(round(ratio * total), total - len(scores))
    order = sorted(
        ((float(v), li, j) for li, s in enumerate(scores) for j, v in enumerate(s.tolist())),
    )
    left = [len(s) for s in scores]
    dropped: list[set[int]] = [set() for _ in scores]
    for _, li, j in order:
        if n_drop == 0:
            break
        if left[li] > 1:
            dropped[li].add(j)
            left[li] -= 1
            n_drop -= 1
    return [[j for j in range(len(s)) if j not in d] for s, d in zip(scores, dropped, strict=True)]


# ---- unstructured -------------------------------------------------------------------------------
def _prunable_linears(model: nn.Module) -> list[nn.Linear]:
    lins = [m for blk in blocks(model) for m in blk.modules() if type(m) is nn.Linear]
    if not lins:  # e.g. an attention model without encoder layers: nothing to prune
        raise ValueError(
            f"{type(model).__name__} has no encoder Linear layers to prune (num_layers=0?)"
        )
    return lins


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float) -> list[tuple[nn.Linear, torch.Tensor]]:
    """One global |w| threshold over the encoder's Linear weights; masks (True = kept)."""
    lins = _prunable_linears(model)
    if sparsity <= 0 or not lins:
        return [(m, torch.ones_like(m.weight, dtype=torch.bool)) for m in lins]
    flat = torch.cat([m.weight.abs().flatten() for m in lins])
    k = int(sparsity * flat.numel())
    if k == 0:
        return [(m, torch.ones_like(m.weight, dtype=torch.bool)) for m in lins]
    thr = flat.kthvalue(k).values
    return [(m, m.weight.abs() > thr) for m in lins]


@torch.no_grad()
def nm_masks(model: nn.Module, n: int = 2, m: int = 4) -> list[tuple[nn.Linear, torch.Tensor]]:
    """Masks (True = kept) holding the `n` largest |w| of every `m` consecutive input weights,
    for the encoder Linears whose input width `m` divides."""
    out = []
    lins = _prunable_linears(model)
    if all(lin.weight.shape[1] % m for lin in lins):  # it would prune nothing, and say it had
        widths = sorted({lin.weight.shape[1] for lin in lins})
        raise ValueError(f"{n}:{m} sparsity: {m} divides no layer's input width {widths}")
    for lin in lins:
        n_out, n_in = lin.weight.shape
        if n_in % m:
            continue
        groups = lin.weight.detach().abs().view(n_out, n_in // m, m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
        out.append((lin, keep.view(n_out, n_in)))
    return out


def _sparse_record(model: nn.Module, config, masks) -> dict:
    if isinstance(config, SemiStructuredPruning):
        names = {id(m): n for n, m in model.named_modules()}
        return record("prune", config, kind="semi-structured", pattern=config.pattern,
                      modules=[names[id(lin)] for lin, _ in masks],
                      sparsity=sparsity(model))  # fmt: skip
    return record("prune", config, kind="magnitude", sparsity=sparsity(model))


def to_semi_structured_(model: nn.Module) -> list[str]:
    """Store the 2:4-pruned encoder weights of a CUDA model in the compressed layout of
    `torch.sparse.to_sparse_semi_structured`, so its matmuls run on the sparse tensor cores
    (sm80+, fp16/bf16). For inference after loading: such weights are tensor subclasses that
    the model directory (safetensors) does not store. Returns the converted module names;
    layers whose shape the kernel rejects stay dense. A `ValueError` on CPU: there is no 2:4
    CPU kernel, the dense model is as fast as it gets there."""
    from torch.sparse import to_sparse_semi_structured

    dev = next(model.parameters()).device
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev) < (8, 0):
        raise ValueError(
            f"2:4 sparse kernels need a CUDA GPU with compute capability >= 8.0; the model is on "
            f"{dev}: keep it dense (same speed, same outputs)"
        )
    done = []
    for name, lin in model.named_modules():
        if type(lin) is not nn.Linear or not name.startswith("encoder."):
            continue
        w = lin.weight.detach()
        if w.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"{name}: 2:4 kernels take fp16/bf16 weights, not {w.dtype}")
        groups = w.view(w.shape[0], -1, 4) if w.shape[1] % 4 == 0 else None
        if groups is None or bool(((groups != 0).sum(-1) > 2).any()):
            continue  # not 2:4-pruned
        try:
            lin.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
        except (RuntimeError, ValueError):  # shape or dtype the kernel does not take
            continue
        done.append(name)
    return done


def sparsity(model: nn.Module) -> float:
    """Share of exact zeros among the encoder's Linear weights."""
    lins = _prunable_linears(model)
    n = sum(m.weight.numel() for m in lins)
    return 1.0 - sum(int(torch.count_nonzero(m.weight)) for m in lins) / max(1, n)


class _MaskHooks:
    """Keep pruned weights at zero while fine-tuning: re-apply the masks before each forward
    (the optimizer may move a zero; the next forward, and the end of training, zero it again)."""

    def __init__(self, masks: list[tuple[nn.Linear, torch.Tensor]]):
        self.masks = masks
        self.handles = [m.register_forward_pre_hook(self._hook(mask)) for m, mask in masks]

    @staticmethod
    def _hook(mask: torch.Tensor):
        def f(m: nn.Module, args):
            with torch.no_grad():
                m.weight.mul_(mask.to(m.weight.device))

        return f

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        with torch.no_grad():
            for m, mask in self.masks:
                m.weight.mul_(mask.to(m.weight.device))


def cubic_schedule(final: float, steps: int) -> list[float]:
    """Sparsity after each of `steps` stages: s_f * (1 - (1 - t)^3) (Zhu & Gupta 2017): prune
    fast while many redundant weights remain, slowly near the target."""
    return [final * (1.0 - (1.0 - (i + 1) / steps) ** 3) for i in range(steps)]


# ---- the verb -----------------------------------------------------------------------------------
def prune_(model: nn.Module, config: PruneConfig, calib: Sequence[Batch] | None = None) -> dict:
    """Prune `model` in place; returns the record for config.json's `compression` list.

    `calib`: a few labelled (or unlabelled) batches for Taylor importance; without them the
    weight-magnitude fallback is used.
    """
    if isinstance(config, (MagnitudePruning, SemiStructuredPruning)):
        if isinstance(config, MagnitudePruning):
            masks = magnitude_masks(model, config.sparsity)
        else:
            masks = nm_masks(model, config.n, config.m)
        with torch.no_grad():
            for m, mask in masks:
                m.weight.mul_(mask)
        return recorded(model, _sparse_record(model, config, masks))
    if not isinstance(config, (HeadPruning, FFNPruning)):
        raise TypeError(f"prune_ does not handle {type(config).__name__}")
    bl = blocks(model)
    if not bl:  # it would record pruning it had not done
        raise ValueError(f"{type(model).__name__} has no encoder blocks to prune (num_layers=0?)")
    if config.importance == "taylor" and not calib:
        # ranked by the magnitude fallback: config.json and the model card say so, not "taylor"
        config = replace(config, importance="magnitude")
    heads, neurons = importance(model, calib, config.importance)
    if isinstance(config, HeadPruning):
        keep = _global_keep(heads, config.ratio)
        for blk, k in zip(bl, keep, strict=True):
            if len(k) < blk.attn.n_head or not isinstance(blk.attn, PrunedSelfAttention):
                keep_heads_(blk, k)
        kind = "heads"
    else:
        keep = _global_keep(neurons, config.ratio)
        for blk, k in zip(bl, keep, strict=True):
            if len(k) < blk.ffn_out.in_features:
                keep_neurons_(blk, k)
        kind = "ffn"
    return recorded(model, record("prune", config, kind=kind, **structure(model)))


def structure(model: nn.Module) -> dict:
    """Per-layer head counts, head size and FFN widths: what `restore_pruned_` needs."""
    bl = blocks(model)
    return {
        "heads": [b.attn.n_head for b in bl],
        "head_dim": [_head_dim(b.attn) for b in bl],
        "ffn": [b.ffn_out.in_features for b in bl],
    }


def restore_pruned_(model: nn.Module, rec: dict) -> None:
    """Give a freshly built model the pruned shapes in `rec` (weights are loaded afterwards)."""
    if rec.get("kind") in ("magnitude", "semi-structured"):
        return  # zeros live in the weights; the shapes are unchanged
    for blk, nh, hs, ffn in zip(
        blocks(model), rec["heads"], rec["head_dim"], rec["ffn"], strict=True
    ):
        hidden = blk.ffn_out.out_features
        if nh != blk.attn.n_head or not isinstance(blk.attn, PrunedSelfAttention):
            blk.attn = PrunedSelfAttention(hidden, nh, hs, getattr(blk.attn, "p_drop", 0.0),
                                           getattr(blk.attn, "max_t", None))  # fmt: skip
        if ffn != blk.ffn_out.in_features:
            blk.ffn_in = nn.Linear(hidden, ffn)
            blk.ffn_out = nn.Linear(ffn, hidden)


def prune_finetune(
    model: nn.Module,
    config: MagnitudePruning | SemiStructuredPruning,
    train,
    valid,
    train_config,
    *,
    label_names: Sequence[str],
    pad_id: int,
    loss_fn=None,
    progress: bool = False,
) -> dict:
    """Gradual magnitude pruning: `config.steps` stages of (raise sparsity per the cubic schedule,
    fine-tune `train_config` with the pruned weights held at zero). N:M pruning: one stage (the
    pattern fixes the share; masks chosen once, then fine-tuned with them held). Returns the
    record."""
    from dataclasses import replace

    from ..train.trainer import fit

    if isinstance(config, SemiStructuredPruning):
        stages = [config]
    else:
        stages = cubic_schedule(config.sparsity, config.steps)
    per_stage = replace(train_config, keep_best=False)
    if train_config.max_steps:
        per_stage = replace(
            per_stage, max_steps=max(1, math.ceil(train_config.max_steps / len(stages)))
        )
    for s in stages:
        if isinstance(s, SemiStructuredPruning):
            masks = nm_masks(model, s.n, s.m)
        else:
            masks = magnitude_masks(model, s)
        hooks = _MaskHooks(masks)
        hooks.remove()  # zero now ...
        hooks = _MaskHooks(masks)  # ... and keep zero through the fine-tune
        try:
            fit(model, train, valid, per_stage, label_names=label_names, pad_id=pad_id,
                loss_fn=loss_fn, progress=progress)  # fmt: skip
        finally:
            hooks.remove()
    model.cpu().eval()
    return _sparse_record(model, config, masks)
