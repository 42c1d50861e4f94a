"""Resumable training checkpoints: atomic, checksummed, pickle-free to load.

A checkpoint is a directory `step-000000123/` holding
- `model.safetensors` and the optimizer state inside `state.pt` (single process and ddp), or
- `dcp/`, a `torch.distributed.checkpoint` of model + optimizer shards (fsdp), which loads on any
  number of ranks (DCP reshards), including a single process;
plus `state.pt` (scheduler, scaler, data position, every rank's RNG state, history) and
`best.safetensors` when keep-best has a candidate. `state.pt` holds only tensors and plain
containers and is read with `torch.load(weights_only=True)`, which refuses arbitrary pickled
objects. The directory is written under a temporary name with a manifest of checksums and renamed
when complete; `latest_checkpoint` skips any that fail verification, so a checkpoint being
written when the process died is never the one loaded. (DCP shards of a multi-node run must be on
a filesystem every node sees.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..fileio import IntegrityError, flock, verify_manifest, write_manifest
from .distributed import DistContext, DistributedError, barrier, broadcast_object

PREFIX = "step-"
LOCK = ".lock"  # held by the run using the folder (see `exclusive`)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _raw(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _uses_dcp(ctx: DistContext) -> bool:
    return ctx.distributed and ctx.strategy in ("fsdp", "tp", "pp")


def _dcp_options(flatten: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Flattened, each optimizer entry is keyed by its parameter's name. pp needs it (the stages'
    # optimizers hold different parameters, and DCP keeps one copy of a non-tensor entry per
    # key: "param_groups" would be rank 0's on every rank); written the same way by fsdp and tp,
    # a checkpoint resumes under any of them or in one process. Checkpoints from before
    # (`dcp_flat` absent) were flattened under pp only.
    return StateDictOptions(flatten_optimizer_state_dict=flatten)


def _dcp_module(model: nn.Module, ctx: DistContext) -> nn.Module:
    # pp: the stage, whose state-dict keys are the whole model's names for its own part, so the
    # stages' shards add up to one checkpoint of the whole model.
    return model.stage_module if ctx.strategy == "pp" and hasattr(model, "stage_module") else model


def save_checkpoint(
    folder: str | Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    best_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
    ctx: DistContext | None = None,
) -> Path:
    """Write `folder/step-{step}` atomically (a collective under fsdp: every rank calls it)."""
    ctx = ctx or DistContext()
    folder = Path(folder)
    target = folder / f"{PREFIX}{step:09d}"
    tmp = None
    if ctx.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=folder)
    tmp = Path(broadcast_object(ctx, tmp))
    try:
        if _uses_dcp(ctx):
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            msd, osd = get_state_dict(_dcp_module(model, ctx), optimizer, options=_dcp_options())
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / "dcp"))
            barrier(ctx)
            state = {**state, "dcp_flat": True}
        elif ctx.is_main:
            save_file(_cpu(_raw(model).state_dict()), str(tmp / "model.safetensors"))
            state = {**state, "optimizer": optimizer.state_dict()}
        if ctx.is_main:
            if best_state is not None:
                save_file(_cpu(best_state), str(tmp / "best.safetensors"))
            torch.save(state, tmp / "state.pt")
            write_manifest(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            if keep > 0:
                for old in list_checkpoints(folder)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
            # Half-written checkpoints of a run killed mid-save (this one's is now `target`).
            for stale in folder.glob(f".{PREFIX}*.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier(ctx)
    return target


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def check_fresh_start(folder: str | Path | None, resume: bool) -> None:
    """A fresh run (not `resume`) refuses a folder that holds an earlier run's checkpoints: it
    would prune its own new checkpoints before the old, higher-numbered ones, a later --resume
    would continue the earlier run, and the folder's tokenizer.json is that run's. Called
    before anything is written there."""
    if folder is not None and not resume and (old := list_checkpoints(folder)):
        raise ValueError(
            f"{folder} holds checkpoints of an earlier run (newest {old[-1].name}): resume it "
            "(--resume), or remove the folder to start afresh"
        )


def latest_checkpoint(folder: str | Path, ctx: DistContext | None = None) -> Path | None:
    """Newest checkpoint that verifies (decided on rank 0); broken ones are reported and skipped.
    None if the folder has none; an error if it has some and every one is damaged: a resumed run
    must not quietly start from scratch (and then prune the damaged ones)."""
    ctx = ctx or DistContext()
    chosen, damaged = None, []
    if ctx.is_main:
        for path in reversed(list_checkpoints(folder)):
            try:
                verify_manifest(path, required=("state.pt",))
                chosen = str(path)
                break
            except IntegrityError as e:
                damaged.append(str(e))
                warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    chosen, damaged = broadcast_object(ctx, (chosen, damaged))
    if chosen is None and damaged:
        raise IntegrityError(
            f"cannot resume: every checkpoint in {folder} is damaged ({'; '.join(damaged)}); "
            "remove them (or the folder) to start afresh"
        )
    return Path(chosen) if chosen else None


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: DistContext | None = None,
) -> tuple[dict, dict | None]:
    """Load weights and optimizer state into `model`/`optimizer` in place; returns
    (trainer state, best weights or None). Verifies the manifest first."""
    ctx = ctx or DistContext()
    path = Path(path)
    try:
        verify_manifest(path, required=("state.pt",))
    except IntegrityError as e:
        raise DistributedError(f"cannot resume: {e}") from None
    state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
    saved_tp = int(state.get("tp_size", 1))
    layout = getattr(_raw(model), "_slimtext_layout", None)
    tp_now = layout.tp_size if (layout is not None and ctx.distributed) else 1
    if saved_tp != tp_now and "tp_size" not in state:  # not a tp checkpoint at all
        raise DistributedError(
            f"{path} was not written by --strategy tp, and a tp run (tp size {tp_now}) resumes "
            "only tp checkpoints of its own tp size: resume it with the strategy that wrote it"
        )
    if saved_tp != tp_now:
        # The fused qkv rows are stored permuted for the tp size that wrote them.
        raise DistributedError(
            f"{path} was written with --strategy tp --tp-size {saved_tp}; this run has tp size "
            f"{tp_now}: resume with the same tp size"
        )
    if (path / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        target = _dcp_module(model, ctx)
        opts = _dcp_options(bool(state.get("dcp_flat", ctx.strategy == "pp")))
        msd, osd = get_state_dict(target, optimizer, options=opts)
        sd = {"model": msd, "optim": osd}
        dcp.load(sd, checkpoint_id=str(path / "dcp"))
        set_state_dict(target, optimizer, model_state_dict=sd["model"],
                       optim_state_dict=sd["optim"], options=opts)  # fmt: skip
    elif _uses_dcp(ctx):
        raise DistributedError(
            f"{path} was written without fsdp/tp/pp; resume it with the strategy that wrote it "
            f"(single or ddp), or start this run afresh"
        )
    else:
        _raw(model).load_state_dict(load_file(str(path / "model.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
    best = path / "best.safetensors"
    return state, (load_file(str(best)) if best.is_file() else None)


@contextlib.contextmanager
def exclusive(folder: Path | None, ctx: DistContext | None = None) -> Iterator[None]:
    """Hold a run's checkpoint folder for this run alone (rank 0 holds it for all ranks): two
    runs on one folder deleted each other's checkpoints in progress and overwrote each other's
    tokenizer, leaving checkpoints that could not be resumed. The second one is refused."""
    ctx = ctx or DistContext()
    if folder is None or not ctx.is_main:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if flock(fd, wait=False) is False:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ValueError(
                f"{folder} is in use by another run (pid {other}): wait for it to end, or "
                "write to another --out"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


FINISHED = "FINISHED"  # written once the run's model directory is saved


def mark_finished(folder: Path | None, model_dir: Path) -> None:
    """Note in a run's checkpoint folder that the run wrote its model directory: the next run
    into the same --out then starts afresh over these checkpoints instead of refusing (they
    blocked a nightly retrain, with --resume or without). They stay until then (inspection,
    resharding a DCP checkpoint)."""
    if folder is not None and Path(folder).is_dir():
        (Path(folder) / FINISHED).write_text(f"{model_dir}\n")


def clear_finished(folder: Path | None, say) -> None:
    """Remove a finished run's checkpoints (see `mark_finished`), saying so."""
    folder = Path(folder) if folder is not None else None
    if folder is None or not (folder / FINISHED).is_file():
        return
    for p in folder.iterdir():
        if p.name == LOCK:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    say(f"note: {folder} held the checkpoints of a run that finished; starting afresh")
