"""Distributed set-up around the one training loop: process group, strategy, model wrapping.

    torchrun --nproc-per-node 2 -m slimtext train --data ... --out ... --strategy ddp
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m slimtext train ... --strategy fsdp

`torchrun` launches and sets RANK / WORLD_SIZE / LOCAL_RANK; `torch.distributed` does the work
(NCCL on CUDA, gloo on CPU). Strategies differ only in how the model is wrapped and how state is
saved; the loop in `trainer.py` is the same for all of them:
- ddp:  `DistributedDataParallel`, every rank holds the whole model, gradients all-reduced.
- fsdp: FSDP2 `fully_shard` per encoder block then the root: parameters, gradients and optimizer
        state sharded across ranks; bf16 params / fp32 reduce on GPU; optional CPU offload;
        checkpoints through `torch.distributed.checkpoint` (DCP), loadable on any world size.
- tp:   tensor parallel over a (dp, tp) mesh, FSDP2 over dp when world > --tp-size;
- pp:   pipeline parallel, one stage of blocks per rank (both in `parallel.py`; DCP checkpoints).
Without torchrun (WORLD_SIZE unset or 1) this is the single-process path, unchanged.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .precision import resolve_device

STRATEGIES = ("auto", "single", "ddp", "fsdp", "tp", "pp")
# torch.distributed.pipelining before this marks every tensor passed between stages as requiring
# grad, which fails on the integer attention mask ("only Tensors of floating point dtype can
# require gradients"; pytorch/pytorch#183024). Seen failing on 2.11, working on 2.13.
PP_MIN_TORCH = "2.13"
# FSDP2 (`fully_shard`, `CPUOffloadPolicy`) and DTensor tensor parallelism are public
# `torch.distributed.fsdp` / `torch.distributed.tensor` APIs from 2.6 (the package's floor is 2.4).
SHARDED_MIN_TORCH = "2.6"


class DistributedError(RuntimeError):
    """Ranks that cannot work together: different configs, a dead peer, a missing shard."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "single"
    # Ranks that compute on the same batch (a tp group; the whole pipeline under pp): the data
    # and the evaluation rows are split over world_size // replicas "data ranks".
    replicas: int = 1

    @property
    def data_rank(self) -> int:
        return self.rank // self.replicas

    @property
    def data_world(self) -> int:
        return self.world_size // self.replicas

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    # Also true for `torchrun --nproc-per-node 1`: a one-rank group is still a group (fsdp on one
    # rank writes DCP checkpoints that a bigger run can load).
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def init_distributed(
    strategy: str = "auto", device: str = "auto", timeout_s: float | None = None
) -> DistContext:
    """Join the process group torchrun prepared (or return the single-process context).

    Collectives time out after `timeout_s` (env SLIMTEXT_DIST_TIMEOUT, default 600 s), so a dead
    rank gives an error instead of a hang.
    """
    check_strategy(strategy)
    if not launched_by_torchrun():
        if strategy in ("ddp", "fsdp", "tp", "pp"):
            raise DistributedError(
                f"--strategy {strategy} needs several processes: launch with "
                f"`torchrun --nproc-per-node N -m slimtext train ...` or `slimtext train --nproc N`"
            )
        return DistContext(device=resolve_device(device))
    check_torch_for(strategy)
    _stop_with_launcher()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    check_node_devices(int(os.environ.get("LOCAL_WORLD_SIZE", local + 1)), device)
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    timeout = timeout_s or dist_timeout()
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout),
            device_id=dev if use_cuda else None,
        )
    return DistContext(
        rank, world, local, dev, "ddp" if strategy in ("auto", "single") else strategy
    )


def dist_timeout() -> float:
    """Seconds a collective may wait (SLIMTEXT_DIST_TIMEOUT, default 600)."""
    raw = os.environ.get("SLIMTEXT_DIST_TIMEOUT", "600")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):  # "abc" was a bare float() error, 0 a gloo traceback
        raise DistributedError(
            f"SLIMTEXT_DIST_TIMEOUT must be a number of seconds > 0, got {raw!r}"
        )
    return seconds


def check_torch_for(strategy: str) -> None:
    version = torch.torch_version.TorchVersion(torch.__version__)
    if strategy == "pp" and version < PP_MIN_TORCH:
        raise DistributedError(
            f"--strategy pp needs torch >= {PP_MIN_TORCH} (this is {torch.__version__}): older "
            "pipelining cannot pass the attention mask between stages; use fsdp or tp"
        )
    if strategy in ("fsdp", "tp") and version < SHARDED_MIN_TORCH:
        raise DistributedError(
            f"--strategy {strategy} needs torch >= {SHARDED_MIN_TORCH} (this is "
            f"{torch.__version__}): its FSDP2/DTensor APIs; use ddp, or upgrade torch"
        )


def check_node_devices(ranks: int, device: str) -> None:
    """Refuse `device` cuda without a GPU (rather than train on CPU ranks), and more ranks on
    this node than it has GPUs: NCCL puts one rank on each GPU (two on one GPU fail with a
    "duplicate GPU" error) and a rank past the last GPU died in `cuda.set_device` with "invalid
    device ordinal"."""
    if device != "auto":
        resolve_device(device.split(":")[0])  # torchrun's LOCAL_RANK picks the GPU, not `:N`
    if device == "cpu" or not torch.cuda.is_available():
        return
    gpus = torch.cuda.device_count()
    if ranks > gpus:
        raise DistributedError(
            f"{ranks} ranks on this node but {gpus} CUDA device{'s' * (gpus != 1)}: one rank "
            f"per GPU; use --nproc {gpus} (--nproc-per-node {gpus}), or --device cpu for "
            "CPU ranks (gloo)"
        )


def _stop_with_launcher() -> None:
    """Have the kernel end this rank when its parent, torchrun's agent, dies. torchrun starts
    ranks in sessions of their own, so killing the command (even its whole process group) left
    them training as orphans, writing checkpoints beside a `--resume` started after the kill."""
    from ..fileio import die_with_parent

    die_with_parent()


def shutdown(ctx: DistContext) -> None:
    if not (ctx.distributed and dist.is_initialized()):
        return
    dist.destroy_process_group()
    if ctx.device.type == "cpu":
        # A gloo worker thread that finished this rank's last collective may still have to drop
        # the tensors it held, which needs the GIL. DTensor keeps the process group alive past
        # destroy_process_group, so its threads outlive this call; if such a thread gets the GIL
        # only once the interpreter is finalising, it is killed mid-unwind and the process
        # aborts ("terminate called without an active exception", SIGABRT, after a run that
        # succeeded: 8 of 20 tp and 2 of 20 fsdp runs on 2 CPU ranks). Hand it the GIL now.
        time.sleep(0.1)


def check_same_config(ctx: DistContext, config: dict) -> None:
    """Every rank must train the same thing; a mismatch is an error naming the first field."""
    if not ctx.distributed:
        return
    blob = json.dumps(config, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    everyone: list = [None] * ctx.world_size
    dist.all_gather_object(everyone, (digest, config))
    ref_digest, ref = everyone[0]
    for r, (d, cfg) in enumerate(everyone):
        if d != ref_digest:
            diff = []
            for k in sorted(set(ref) | set(cfg)):
                a, b = ref.get(k), cfg.get(k)
                if a == b:
                    continue
                if isinstance(a, dict) and isinstance(b, dict):  # name the field inside
                    diff += [f"{k}.{f} {a.get(f)!r} vs {b.get(f)!r}"
                             for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]  # fmt: skip
                else:
                    diff.append(k)
            raise DistributedError(
                f"rank {r} has a different configuration than rank 0 (fields: {', '.join(diff)})"
            )


def broadcast_object(ctx: DistContext, obj):
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(ctx: DistContext, obj) -> list:
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap_model(
    model: nn.Module,
    ctx: DistContext,
    precision: str,
    cpu_offload: bool = False,
    *,
    tp_size: int | None = None,
    microbatches: int = 4,
    pp_schedule: str = "1f1b",
) -> nn.Module:
    """The module the loop calls forward/backward on. For fsdp and tp the model is sharded in
    place and returned itself; for ddp a `DistributedDataParallel` around it; for pp a
    `parallel.PipelineModel` (whose `train_step` replaces forward/backward)."""
    model.to(ctx.device)
    if not ctx.distributed:
        return model
    if ctx.strategy == "tp":
        from .parallel import parallelize_tp

        return parallelize_tp(model, ctx, tp_size, precision)
    if ctx.strategy == "pp":
        from .parallel import PipelineModel

        return PipelineModel(model, ctx, microbatches, pp_schedule)
    if ctx.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if ctx.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        kw: dict = {"mesh": mesh}
        if ctx.device.type == "cuda" and precision == "bf16":
            # bf16 compute and all-gathers, fp32 gradient reduction for accuracy.
            kw["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        if cpu_offload:
            # Pinned memory speeds host<->GPU copies and needs a GPU: without one it raises.
            kw["offload_policy"] = CPUOffloadPolicy(pin_memory=ctx.device.type == "cuda")
        for block in model.encoder.blocks:  # one all-gather per block: overlap comms with compute
            fully_shard(block, **kw)
        fully_shard(model, **kw)
        return model
    raise ValueError(f"unknown strategy {ctx.strategy!r}")


def no_grad_sync(wrapped: nn.Module, ctx: DistContext, skip: bool):
    """Context for a micro-batch: skip the gradient all-reduce on all but the last micro-batch
    of an accumulation group (DDP `no_sync`; FSDP2 `set_requires_gradient_sync`)."""
    import contextlib

    if not (ctx.distributed and skip):
        return contextlib.nullcontext()
    if ctx.strategy == "ddp":
        return wrapped.no_sync()
    if ctx.strategy == "pp" or (ctx.strategy == "tp" and ctx.replicas == ctx.world_size):
        # pp stages and a lone tp group have no data-parallel gradient reduction to defer.
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def fsdp_no_sync():
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)

    return fsdp_no_sync()


def full_state_dict(model: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain CPU tensors, in the ordinary (single-process) layout:
    on rank 0, {} on other ranks under fsdp and tp; on every rank under pp. A collective under
    fsdp, tp and pp: every rank must call it."""
    if ctx.distributed and ctx.strategy == "pp":
        from .parallel import pp_full_state_dict

        return pp_full_state_dict(model, ctx)
    if ctx.distributed and ctx.strategy == "tp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from .parallel import from_tp_layout, layout_of

        raw = model.module if hasattr(model, "module") else model
        full = get_model_state_dict(
            raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        # Replicated (non-DTensor) parameters come back as the live CPU tensors: a snapshot
        # (keep-best) must copy them, or training goes on changing it.
        full = {k: v.detach().clone() for k, v in full.items()}
        return from_tp_layout(full, raw.config.hidden_size, layout_of(raw).tp_size) if full else {}
    if ctx.strategy != "fsdp" or not ctx.distributed:
        raw = model.module if hasattr(model, "module") else model
        return {k: v.detach().cpu().clone() for k, v in raw.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_full_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor] | None, ctx: DistContext
) -> None:
    """Inverse of `full_state_dict`: under fsdp, rank 0's full weights are scattered as shards
    (`distribute_tensor` sends rank 0's data; other ranks only supply the shape). Under tp,
    rank 0's weights are put in the tp layout and broadcast/sharded by `set_model_state_dict`;
    under pp, rank 0's are broadcast and every rank loads the whole model (its stage shares it).
    """
    if ctx.distributed and ctx.strategy in ("tp", "pp"):
        raw = model.module if hasattr(model, "module") else model
        if ctx.strategy == "pp":
            raw.load_state_dict(broadcast_object(ctx, state if ctx.is_main else None))
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from .parallel import layout_of, to_tp_layout

        full = (
            to_tp_layout(state, raw.config.hidden_size, layout_of(raw).tp_size)
            if ctx.is_main
            else {}
        )
        set_model_state_dict(
            raw, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        )
        return
    if ctx.strategy != "fsdp" or not ctx.distributed:
        raw = model.module if hasattr(model, "module") else model
        raw.load_state_dict(state)
        return
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for name, p in model.state_dict().items():
            full = state[name] if ctx.is_main else torch.empty(p.shape, dtype=p.dtype)
            if isinstance(p, DTensor):
                full = full.to(device=p.device, dtype=p.dtype)
                p.copy_(distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=0))
            else:
                p.copy_(broadcast_object(ctx, full if ctx.is_main else None))
