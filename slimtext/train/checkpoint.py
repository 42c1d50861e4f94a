"""Resumable training checkpoints: atomic, checksummed, pickle-free to load.

A checkpoint is a directory `step-000000123/` holding
- `model.safetensors` and the optimizer state inside `state.pt` (single process and ddp), or
- `dcp/`, a `torch.distributed.checkpoint` of model + optimizer shards (fsdp), which loads on any
  number of ranks (DCP reshards), including a single process;
plus `state.pt` (scheduler, scaler, data position, every rank's RNG state, history) and
`best.safetensors` when keep-best has a candidate. `state.pt` holds only tensors and plain
containers and is read with `torch.load(weights_only=True)`, which refuses arbitrary pickled
objects; the `dcp/` metadata, which DCP pickles, is read by an unpickler that admits only
DCP's own metadata classes (`_dcp_read`). The directory is written under a temporary name with
a manifest of checksums and renamed when complete; `latest_checkpoint` skips any that fail
verification, so a checkpoint being written when the process died is never the one loaded.
(DCP shards of a multi-node run must be on a filesystem every node sees.)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..fileio import (
    IntegrityError,
    flock,
    readable_path,
    set_default_modes,
    verify_manifest,
    write_manifest,
)
from .distributed import (
    DistContext,
    DistributedError,
    barrier,
    broadcast_object,
    launched_by_torchrun,
)

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


def _dcp_read(sd: dict, folder: Path, no_dist: bool = False) -> None:
    """`dcp.load(sd)` from `folder` without running what a doctored checkpoint could put there:
    torch's reader unpickles the `.metadata` file and `torch.load(weights_only=False)`s every
    non-tensor entry, so a checkpoint folder from someone else ran their code on --resume.
    Here the metadata may name only DCP's own metadata classes, torch sizes, dtypes and paths,
    and the entries load with `weights_only=True`."""
    import pickle

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import metadata as dcp_meta
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    def allowed(module: str, name: str):
        if module == dcp_meta.__name__ and isinstance(getattr(dcp_meta, name, None), type):
            return getattr(dcp_meta, name)
        if (module, name) == ("torch.distributed.checkpoint.filesystem", "_StorageInfo"):
            from torch.distributed.checkpoint.filesystem import _StorageInfo

            return _StorageInfo
        value = getattr(torch, name, None) if module == "torch" else None
        if value is torch.Size or isinstance(
            value, (torch.dtype, torch.layout, torch.memory_format)
        ):
            return value
        if (module, name) == ("torch.serialization", "_get_layout"):
            return torch.serialization._get_layout
        if module == "pathlib" and name in ("PosixPath", "WindowsPath", "PurePosixPath",
                                            "PureWindowsPath"):  # fmt: skip
            import pathlib

            return getattr(pathlib, name)
        if (module, name) in (("collections", "OrderedDict"), ("builtins", "set"),
                              ("builtins", "frozenset")):  # fmt: skip
            import builtins
            import collections

            return getattr(collections if module == "collections" else builtins, name)
        raise IntegrityError(
            f"{folder}: its DCP metadata names {module}.{name}, which a checkpoint has no use "
            "for: not loaded (a doctored checkpoint?)"
        )

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            return allowed(module, name)

    def read(path: Path):
        try:
            with open(path, "rb") as f:
                metadata = Unpickler(f).load()
        except IntegrityError:
            raise
        except Exception as e:
            raise IntegrityError(f"{path}: unreadable DCP metadata ({e})") from None
        if not isinstance(metadata, dcp_meta.Metadata):
            raise IntegrityError(f"{path}: not DCP metadata")
        return metadata

    class Reader(dcp.FileSystemReader):
        def read_metadata(self):  # no per-rank fallback: one .metadata, checked below first
            metadata = read(Path(self._get_metadata_path()))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = dcp_meta.StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    read(folder / ".metadata")  # here, as dcp.load turns a reader's error into another one
    try:
        # no_dist in one process: a resharded resume there is by design, and torch warns of
        # it even when told so (`no_dist=True`): that warning reached the user's terminal
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(sd, storage_reader=Reader(str(folder)), planner=Planner(), no_dist=no_dist)
    except dcp.api.CheckpointException as e:  # {rank: (error, traceback)}
        why = next(iter(getattr(e, "failures", {}).values()), e)
        lines = str(why[0] if isinstance(why, tuple) else why).strip().splitlines() or [str(e)]
        # weights_only's refusal names the global on one of its many lines
        line = next((x for x in lines if "GLOBAL" in x), lines[0])
        raise IntegrityError(f"{folder}: cannot load: {line} (a doctored checkpoint?)") from None


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
            # the umask's modes, as a model directory gets (mkdtemp and safetensors give 0700
            # and 0600): a group-shared run folder stays resumable by the group
            set_default_modes(tmp)
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


# A checkpoint's folder name, and that of its temporary copy while written (".step-N.tmp-X"):
# not any name starting "step-" (a user's "step-by-step/" beside them is theirs).
_CHECKPOINT_NAME = re.compile(rf"{re.escape(PREFIX)}\d+")
_OURS = re.compile(rf"\.?{re.escape(PREFIX)}\d+(\.tmp-.*)?")


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name))


def check_fresh_start(folder: str | Path | None, resume: bool) -> None:
    """A fresh run (not `resume`) refuses a folder that holds an earlier run's checkpoints: it
    would prune its own new checkpoints before the old, higher-numbered ones, a later --resume
    would continue the earlier run, and the folder's tokenizer.json is that run's. Called
    before anything is written there."""
    if folder is None or (Path(folder) / FINISHED).is_file():  # cleared when the run starts
        return
    if not resume and (old := list_checkpoints(folder)):
        if (pid := _holder(Path(folder) / LOCK)) is not None:  # not earlier: still running
            raise ValueError(
                f"{folder} is in use by another run (pid {pid}): wait for it to end, or write "
                "elsewhere (another --out; checkpoint_dir= in Python)"
            )
        raise ValueError(
            f"{folder} holds checkpoints of an earlier run (newest {old[-1].name}): resume it "
            "(--resume; resume=True in Python), or remove the folder to start afresh"
        )


def _holder(lock: Path) -> str | None:
    """The pid written in `lock` while another process holds its flock, else None (this
    process's own lock too: a fresh CLI run checks its folder after taking it)."""
    if (holder := _HELD.get(os.path.realpath(lock))) is not None:
        return None if holder == threading.get_ident() else f"{os.getpid()}, another thread"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        if flock(fd, wait=False) is False:
            return _pid_in(fd)
        return None
    finally:
        os.close(fd)  # (a lock taken here goes with the descriptor)


def _pid_in(fd: int) -> str:
    """The pid a lock's holder writes just after taking it (a moment later, at worst)."""
    for _ in range(20):
        if pid := os.pread(fd, 32, 0).decode(errors="replace").strip():
            return pid
        time.sleep(0.005)
    return "?"


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
    try:  # weights_only: plain values and tensors, but not necessarily ours
        state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
    except Exception as e:
        raise IntegrityError(f"{path}/state.pt: unreadable ({_first_line(e)})") from None
    if not isinstance(state, dict) or not ("optimizer" in state or (path / "dcp").is_dir()):
        raise IntegrityError(f"{path}/state.pt: not a checkpoint's state (no optimizer state)")
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
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        target = _dcp_module(model, ctx)
        opts = _dcp_options(bool(state.get("dcp_flat", ctx.strategy == "pp")))
        msd, osd = get_state_dict(target, optimizer, options=opts)
        sd = {"model": msd, "optim": osd}
        _dcp_read(sd, path / "dcp", no_dist=not ctx.distributed)
        set_state_dict(target, optimizer, model_state_dict=sd["model"],
                       optim_state_dict=sd["optim"], options=opts)  # fmt: skip
    elif _uses_dcp(ctx):
        raise DistributedError(
            f"{path} was written without fsdp/tp/pp; resume it with the strategy that wrote it "
            f"(single or ddp), or start this run afresh"
        )
    else:
        _raw(model).load_state_dict(_weights(path / "model.safetensors"))
        optimizer.load_state_dict(state["optimizer"])
    best = path / "best.safetensors"
    return state, (_weights(best) if best.is_file() else None)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        with readable_path(path) as name:
            return load_file(name)
    except Exception as e:  # SafetensorError: truncated or not safetensors at all
        raise IntegrityError(f"{path}: unreadable weights ({_first_line(e)})") from None


@contextlib.contextmanager
def exclusive(
    folder: Path | None, ctx: DistContext | None = None, out: Path | None = None
) -> Iterator[None]:
    """Hold a run's checkpoint folder for this run alone (rank 0 holds it for all ranks): two
    runs on one folder deleted each other's checkpoints in progress and overwrote each other's
    tokenizer, leaving checkpoints that could not be resumed. The second one is refused. A run
    without checkpoints holds its output `out` so (by a lock file in the temporary folder): two
    such runs into one --out both trained, and the one that finished last was the model."""
    ctx = ctx or DistContext()
    if not ctx.is_main or (folder is None and out is None):
        yield
        return
    with contextlib.ExitStack() as held:
        if out is not None:  # with checkpoints or without: one lock per output
            key = hashlib.sha256(os.fsencode(os.path.realpath(out))).hexdigest()[:24]
            lock = Path(tempfile.gettempdir()) / f"slimtext-out-{key}.lock"
            # (another user's lock file, a read-only /tmp: unguarded, as before)
            held.enter_context(_locked(lock, f"{out} is being written by another run", True))
        if folder is not None:
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                held.enter_context(_locked(folder / LOCK, f"{folder} is in use by another run"))
            except PermissionError as e:
                raise ValueError(
                    f"{folder}: cannot use this run's checkpoints ({e.strerror})"
                ) from None
        yield


# Lock files this process holds, and the thread holding each: that thread taking one again is
# a no-op; another thread of the process is refused, as another process would be.
_HELD: dict[str, int] = {}


def holds_checkpoints(f):
    """Run `f` (a training entry point taking `checkpoint_dir=` and `dist=`) holding its
    checkpoint folder (`exclusive`): from Python too, a second run on a folder in use is
    refused before it writes a tokenizer or a checkpoint there. Under torchrun without a `dist`
    yet, rank 0 holds it for all."""

    @functools.wraps(f)
    def run(*args, **kwargs):
        dist = kwargs.get("dist")
        if dist is None and launched_by_torchrun() and os.environ["RANK"] != "0":
            return f(*args, **kwargs)  # (a RANK alone, set by a job scheduler, is no torchrun)
        with exclusive(kwargs.get("checkpoint_dir"), dist):
            return f(*args, **kwargs)

    return run


@contextlib.contextmanager
def _locked(lock: Path, busy: str, temporary: bool = False) -> Iterator[None]:
    """An exclusive flock on the file `lock` (made if missing, holding our pid), or ValueError
    `busy` when another process holds it. `temporary`: a lock file of the temporary folder,
    removed when released (hundreds piled up), and skipped rather than an error when it cannot
    be opened (another user's, a read-only /tmp). Re-entrant: the CLI holds a run's folder,
    and `fit` inside it takes the same lock (a flock on a second descriptor would refuse it)."""
    key, me = os.path.realpath(lock), threading.get_ident()
    if _HELD.get(key) == me:
        yield
        return
    if key in _HELD:  # (a flock is per process: it would not keep the other thread out)
        raise ValueError(f"{busy} (pid {os.getpid()}, another thread): wait for it to end")
    _HELD[key] = me
    try:
        with _locked_once(lock, busy, temporary):
            yield
    finally:
        del _HELD[key]


@contextlib.contextmanager
def _locked_once(lock: Path, busy: str, temporary: bool) -> Iterator[None]:
    for _ in range(10):
        try:  # 0o666 less the umask, as any new file
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            if not temporary:
                raise
            yield
            return
        try:
            if flock(fd, wait=False) is False:
                raise ValueError(
                    f"{busy} (pid {_pid_in(fd)}): wait for it to end, or write elsewhere "
                    "(another --out; checkpoint_dir= in Python)"
                )
            # the file may have been removed by its last holder after we opened it: a lock on
            # that one excludes nobody, so take the one now at the path
            if temporary and not _same_file(fd, lock):
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            if temporary:  # before the lock goes: a newcomer then finds no file, or a new one
                with contextlib.suppress(OSError):
                    os.unlink(lock)
            os.close(fd)
        return
    yield  # (ten races in a row: run unguarded, as without a lock)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


FINISHED = "FINISHED"  # written once the run's model directory is saved


def mark_finished(folder: Path | None, model_dir: Path | str) -> None:
    """Note in a run's checkpoint folder that the run is done (its model directory written, or
    its `fit()` returned): the next run into the same folder then starts afresh over these
    checkpoints instead of refusing (they blocked a nightly retrain, with --resume or without).
    They stay until then (inspection, resharding a DCP checkpoint)."""
    if folder is not None and Path(folder).is_dir():
        (Path(folder) / FINISHED).write_text(f"{model_dir}\n", "utf-8", "surrogateescape")


def unmark_finished(folder: Path | None) -> None:
    """Take back `mark_finished`: the command that called `fit()` has yet to save its model, and
    if that fails, --resume must still find these checkpoints."""
    if folder is not None:
        with contextlib.suppress(FileNotFoundError):
            (Path(folder) / FINISHED).unlink()


def clear_finished(folder: Path | None, say, everything: bool = False) -> None:
    """Remove a finished run's checkpoints (see `mark_finished`), saying so: its checkpoints,
    their temporary copies, its tokenizer and the mark; and with `everything` (the CLI's own
    OUT.checkpoints, its run log too) all else but the lock. A folder the Python caller named
    may hold their own files (their data, notes): those stay."""
    folder = Path(folder) if folder is not None else None
    if folder is None or not (folder / FINISHED).is_file():
        return
    for p in folder.iterdir():
        ours = _OURS.fullmatch(p.name) or p.name in ("tokenizer.json", FINISHED)
        if p.name == LOCK or not (ours or everything):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    say(f"note: {folder} held the checkpoints of a run that finished; starting afresh")
