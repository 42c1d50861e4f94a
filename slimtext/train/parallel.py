"""Tensor and pipeline parallelism: how the model is prepared for `--strategy tp|pp`.

    torchrun --nproc-per-node 4 -m slimtext train ... --strategy tp --tp-size 2   # 2 dp x 2 tp
    torchrun --nproc-per-node 2 -m slimtext train ... --strategy pp --microbatches 4

The loop in `trainer.py` is the same as for ddp/fsdp; only the preparation (here) and, for pp,
the body of one micro-batch step (`PipelineModel.train_step`) differ.

tp: Megatron-style sharding of every encoder block over the "tp" dimension of a (dp, tp)
    DeviceMesh with `parallelize_module`: q/k/v and `ffn_in` column-wise, `attn.out` and `ffn_out`
    row-wise (one all-reduce after attention, one after the FFN). Embeddings, LayerNorms, pooler
    and head stay replicated: every rank of a tp group computes them on the same batch, with the
    same RNG stream (seeded by dp rank), so their activations and gradients agree without
    communication. With world > tp size, FSDP2 `fully_shard` on the "dp" sub-mesh composes with
    it (the torchtitan recipe) and the batch sampler is sharded by dp rank only.
    The fused qkv weight is the catch: a column-wise shard of rows [q | k | v] would give rank 0
    [q; half of k]. Its rows are permuted before sharding so rank r's contiguous chunk is
    [q_r; k_r; v_r] (its own heads), and permuted back whenever a full state dict leaves or
    enters the model (`distributed.full_state_dict` / `load_full_state_dict`): a model directory
    always has the ordinary layout.
pp: `torch.distributed.pipelining`: the blocks are cut into contiguous stages, one per rank
    (stage 0: embeddings + first blocks; last stage: last blocks + pooling + head, where the
    schedule computes the loss per micro-batch; the loss is their mean). The attention
    mask travels with the hidden states. Every rank builds the whole (small) model but trains
    only its stage's parameters; before evaluation and saving, the stages' weights are gathered
    so every rank holds the current full model and evaluation is the plain code path (simpler
    than evaluating through the schedule, and exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from .distributed import DistContext, DistributedError, all_gather_object

LAYOUT_ATTR = "_slimtext_layout"


@dataclass
class Layout:
    """How a model is split across ranks; attached to the prepared model as `LAYOUT_ATTR`."""

    strategy: str  # tp | pp
    tp_size: int = 1
    dp_size: int = 1
    mesh: object | None = None  # the (dp, tp) DeviceMesh under tp
    pp_size: int = 1
    pp_stage: int = 0
    owned: frozenset[str] = field(default_factory=frozenset)  # pp: state-dict names of my stage


def layout_of(model: nn.Module) -> Layout | None:
    raw = model.module if hasattr(model, "module") else model
    return getattr(raw, LAYOUT_ATTR, None)


# ---- tensor parallel ---------------------------------------------------------------------------


def qkv_permutation(hidden: int, tp: int) -> torch.Tensor:
    """Row order that puts [q_r; k_r; v_r] in rank r's contiguous chunk of the fused qkv rows
    ([q | k | v], each `hidden` rows; heads are contiguous inside q, k and v)."""
    w = hidden // tp
    return torch.cat([torch.arange(part * hidden + r * w, part * hidden + (r + 1) * w)
                      for r in range(tp) for part in range(3)])  # fmt: skip


def _is_qkv(name: str) -> bool:
    return name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias")


def to_tp_layout(state: dict[str, torch.Tensor], hidden: int, tp: int) -> dict[str, torch.Tensor]:
    """A full state dict in the ordinary layout -> the tp layout (qkv rows permuted)."""
    idx = qkv_permutation(hidden, tp)
    return {k: (v[idx] if _is_qkv(k) else v) for k, v in state.items()}


def from_tp_layout(state: dict[str, torch.Tensor], hidden: int, tp: int) -> dict[str, torch.Tensor]:
    """Inverse of `to_tp_layout`."""
    inv = torch.argsort(qkv_permutation(hidden, tp))
    return {k: (v[inv] if _is_qkv(k) else v) for k, v in state.items()}


def parallelize_tp(
    model: nn.Module, ctx: DistContext, tp_size: int | None, precision: str
) -> nn.Module:
    """Shard `model` in place over a (dp, tp) mesh; returns it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "arch", "transformer") != "transformer":
        raise DistributedError("--strategy tp needs the transformer model (--model transformer)")
    tp = tp_size or ctx.world_size
    if tp < 1 or ctx.world_size % tp:
        raise DistributedError(f"--tp-size {tp} must divide the number of ranks ({ctx.world_size})")
    if tp == 1 and ctx.world_size > 1:
        raise DistributedError(
            f"--tp-size 1 on {ctx.world_size} ranks splits nothing: that is plain data "
            "parallelism, use --strategy fsdp (or ddp)"
        )
    if cfg.num_heads % tp:
        raise DistributedError(
            f"--strategy tp: num_heads={cfg.num_heads} is not divisible by the tp size {tp} "
            f"(each tp rank computes whole attention heads)"
        )
    if cfg.ffn_size % tp:
        raise DistributedError(
            f"--strategy tp: ffn_size={cfg.ffn_size} is not divisible by the tp size {tp}"
        )
    dp = ctx.world_size // tp
    # tp innermost: the ranks of a tp group are neighbours (on GPUs, the same node's NVLink).
    mesh = init_device_mesh(ctx.device.type, (dp, tp), mesh_dim_names=("dp", "tp"))
    idx = qkv_permutation(cfg.hidden_size, tp)
    plan = {
        "attn.qkv": ColwiseParallel(),
        "attn.out": RowwiseParallel(),
        "ffn_in": ColwiseParallel(),
        "ffn_out": RowwiseParallel(),
    }
    for block in model.encoder.blocks:
        with torch.no_grad():
            qkv = block.attn.qkv
            qkv.weight.copy_(qkv.weight[idx])
            qkv.bias.copy_(qkv.bias[idx])
        parallelize_module(block, mesh["tp"], plan)
    if dp > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kw: dict = {"mesh": mesh["dp"]}
        if ctx.device.type == "cuda" and precision == "bf16":
            kw["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        for block in model.encoder.blocks:
            fully_shard(block, **kw)
        fully_shard(model, **kw)
    setattr(model, LAYOUT_ATTR, Layout("tp", tp_size=tp, dp_size=dp, mesh=mesh))
    return model


def clip_grad_norm_(
    params: Iterable[torch.Tensor], max_norm: float, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """`nn.utils.clip_grad_norm_` for a mix of DTensor (sharded) and plain (replicated) grads,
    or for one pipeline stage's grads (`group`: the stages whose norms add up). torch's own
    refuses to stack norms of plain tensors and DTensors on different meshes."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.zeros((), dtype=torch.float32)
    for g in grads:
        n = torch.linalg.vector_norm(g, dtype=torch.float32)
        if isinstance(n, DTensor):
            n = n.full_tensor()  # the reduction over the shards
        sq = sq.to(n.device) + n.square()
    if group is not None:
        dist.all_reduce(sq, group=group)
    total = sq.sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.item() if isinstance(g, DTensor) else coef.to(g.device))
    return total


# ---- pipeline parallel -------------------------------------------------------------------------


def stage_bounds(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """Contiguous block ranges [lo, hi) per stage, the first stages one block longer if uneven
    (the last stage also runs pooling and the head)."""
    per, extra = divmod(num_layers, stages)
    out, lo = [], 0
    for s in range(stages):
        hi = lo + per + (1 if s < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


class _Stage(nn.Module):
    """One pipeline stage: the original submodules under their original names (the blocks in a
    ModuleDict keyed by global index), so state-dict and optimizer keys are those of the whole
    model and a stage's DCP shard merges with the others'."""

    def __init__(self, model: nn.Module, lo: int, hi: int, first: bool, last: bool):
        super().__init__()
        self.first, self.last = first, last
        if first:
            self.embeddings = model.embeddings
        self.encoder = nn.Module()
        self.encoder.blocks = nn.ModuleDict(
            {str(i): model.encoder.blocks[i] for i in range(lo, hi)}
        )
        self.checkpointing = model.encoder.checkpointing
        if last:
            self.pooler, self.drop, self.head = model.pooler, model.drop, model.head

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        # Stage 0 gets (input_ids, mask); the others (hidden (B, T, C), mask). The mask travels
        # as int64: it is not differentiable, so the schedule sends no gradient back for it.
        from torch.utils.checkpoint import checkpoint

        from ..models.transformer import masked_mean

        h = self.embeddings(x) if self.first else x
        key_mask = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        blocks = list(self.encoder.blocks.values())
        for i, block in enumerate(blocks):
            # [CLS] pooling: the model's last block computes for [CLS] only (Encoder.forward)
            cls_only = self.last and self.pooler is not None and i == len(blocks) - 1
            if self.checkpointing and self.training:
                h = checkpoint(block, h, key_mask, cls_only, use_reentrant=False)
            else:
                h = block(h, key_mask, cls_only)
        if not self.last:
            return h, mask
        if self.pooler is not None:
            pooled = torch.tanh(self.pooler(h[:, 0]))
        else:
            pooled = masked_mean(h, mask.bool())
        return self.head(self.drop(pooled))  # (B, num_labels)


class PipelineModel(nn.Module):
    """The whole model (`module`, for evaluation and saving) plus this rank's stage and the
    schedules that drive it. `train_step` replaces the loop's forward/backward under pp."""

    def __init__(self, model: nn.Module, ctx: DistContext, microbatches: int, schedule: str):
        super().__init__()
        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "arch", "transformer") != "transformer":
            raise DistributedError(
                "--strategy pp needs the transformer model (--model transformer)"
            )
        if cfg.share_layers:
            raise DistributedError("--strategy pp cannot split shared layers (share_layers=True)")
        n = ctx.world_size
        if n > cfg.num_layers:
            raise DistributedError(
                f"--strategy pp: {n} pipeline stages (ranks) but the model has only "
                f"{cfg.num_layers} layers; use at most {cfg.num_layers} ranks"
            )
        if schedule not in ("gpipe", "1f1b"):
            raise DistributedError(f"--pp-schedule must be gpipe or 1f1b, not {schedule!r}")
        if microbatches < 1:
            raise DistributedError(f"--microbatches must be >= 1, got {microbatches}")
        if schedule == "1f1b" and microbatches < n:
            # torch's Schedule1F1B refuses it (when the first batch builds the schedule) in
            # words that name neither option.
            raise DistributedError(
                f"--pp-schedule 1f1b needs at least one micro-batch per pipeline stage: "
                f"--microbatches {microbatches} on {n} stages (ranks); give --microbatches {n} "
                "or more, or --pp-schedule gpipe"
            )
        self.module = model
        self.ctx = ctx
        self.microbatches = microbatches
        self.schedule_name = schedule
        lo, hi = stage_bounds(cfg.num_layers, n)[ctx.rank]
        self.stage_module = _Stage(model, lo, hi, ctx.rank == 0, ctx.rank == n - 1)
        owned = frozenset(self.stage_module.state_dict().keys())
        setattr(model, LAYOUT_ATTR, Layout("pp", pp_size=n, pp_stage=ctx.rank, owned=owned))
        self._schedules: dict[tuple, object] = {}
        self._loss: Callable | None = None

    def _schedule(self, shape: tuple):
        # A stage infers its send/recv buffers from the first micro-batch it sees, so batches
        # of another padded length get their own stage object (same submodule, no copy).
        if shape not in self._schedules:
            from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

            stage = PipelineStage(self.stage_module, self.ctx.rank, self.ctx.world_size,
                                  self.ctx.device)  # fmt: skip
            cls = ScheduleGPipe if self.schedule_name == "gpipe" else Schedule1F1B
            # Not scale_grads=True: it divides every .grad after the step, including gradients
            # accumulated by earlier batches of a --grad-accum group; the loss is divided instead.
            self._schedules[shape] = cls(stage, self.microbatches, loss_fn=self._mb_loss,
                                         scale_grads=False)  # fmt: skip
        return self._schedules[shape]

    def _mb_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._loss(logits, target)

    def train_step(self, batch, loss_fn: Callable, weight: float) -> torch.Tensor:
        """Forward and backward of one batch through the pipeline; returns the batch's mean
        loss x `weight` on every rank. `loss_fn(logits, batch)` sees a batch with the
        micro-batch's labels and index (no input_ids/attention_mask under pp)."""
        from ..data.batching import Batch

        b, M = batch, self.microbatches
        B = len(b.input_ids)
        # The schedule cuts the batch into M equal micro-batches (a stage sizes its buffers on
        # the first), so the rows are padded to a multiple of M with copies of row 0 that a
        # flag keeps out of the loss; each micro-batch's mean is weighted by its share of the
        # real rows, so the sum is the batch mean for any B (also B < M).
        P = -(-B // M) * M
        if P != B:
            rep = torch.cat([torch.arange(B), torch.zeros(P - B, dtype=torch.long)])
            b = Batch(b.input_ids[rep], b.attention_mask[rep], b.labels[rep], b.index[rep])
        real = (torch.arange(P) < B).to(b.labels.device, b.labels.dtype)
        # (P, 3) labels, row positions and the real-row flag, cut into micro-batches like the
        # inputs
        target = torch.stack([b.labels, b.index.to(b.labels.device), real], 1)

        def loss(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
            keep = tgt[:, 2].bool()
            n = int(keep.sum())
            if n == 0:  # padding only: no loss, but a graph for the schedule's backward
                return logits.float().sum() * 0.0
            empty = torch.empty(0)
            mb = Batch(empty, empty, tgt[keep, 0], tgt[keep, 1].cpu())
            return loss_fn(logits.float()[keep], mb) * (weight * n / B)

        self._loss = loss
        sched = self._schedule(tuple(b.input_ids.shape))
        losses: list = []
        stage = self.stage_module
        if stage.first:
            sched.step(b.input_ids, b.attention_mask.long(), target=target, losses=losses)
        else:
            sched.step(target=target, losses=losses)
        out = (
            torch.stack(losses).sum().detach()
            if losses
            else torch.zeros((), device=b.labels.device)
        )
        # The last stage has the loss; every rank logs the same number.
        dist.broadcast(out, src=self.ctx.world_size - 1)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Outside the schedule (evaluation, prediction) the whole model runs locally: call
        # `sync_full_model` first so every stage's weights are current on this rank.
        return self.module(input_ids, attention_mask)


def pp_full_state_dict(model: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """Every stage's own weights, gathered onto every rank (a collective)."""
    raw = model.module if hasattr(model, "module") else model
    owned = layout_of(raw).owned
    mine = {k: v.detach().cpu().clone() for k, v in raw.state_dict().items() if k in owned}
    full: dict[str, torch.Tensor] = {}
    for part in all_gather_object(ctx, mine):
        full.update(part)
    return full


def sync_full_model(model: nn.Module, ctx: DistContext) -> None:
    """pp: make this rank's whole-model copy current (its stage's tensors are shared, so
    loading rewrites them with their own values)."""
    raw = model.module if hasattr(model, "module") else model
    raw.load_state_dict(pp_full_state_dict(raw, ctx))
