"""The training loop: one loop for every model, device and precision.

AdamW (SparseAdam for hashed n-gram tables: `sparse_tables`) with warm-up then linear/cosine
decay, gradient clipping and accumulation, autocast mixed precision, length-bucketed dynamic
padding, evaluation each epoch with early stopping and keep-best, a progress bar, a JSONL
metrics log (and TensorBoard when installed), a training-curve plot, and checkpoints that
resume exactly: the batches of an epoch are a pure function of (seed, epoch), and a checkpoint
stores the position in the epoch, optimizer, scheduler, scaler and RNG states, so a resumed run
takes the same steps with the same dropout masks.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import sys
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.batching import Batch, bucketed_batches, global_batches, pad_batch
from ..data.sources import read_label
from ..fileio import IntegrityError, atomic_write_text
from ..progress import progress_bar
from ..tokenizer import check_long_text, row_lengths
from .checkpoint import (
    check_fresh_start,
    holds_checkpoints,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .distributed import (
    STRATEGIES,
    DistContext,
    all_gather_object,
    full_state_dict,
    load_full_state_dict,
    no_grad_sync,
    wrap_model,
)
from .evaluate import evaluate, weighted_cross_entropy
from .precision import (
    PRECISIONS,
    autocast,
    check_device,
    grad_scaler,
    resolve_device,
    resolve_precision,
)


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06  # < 1: fraction of all steps; >= 1: number of steps
    schedule: str = "linear"  # linear | cosine | constant
    grad_clip: float = 1.0  # 0 = off
    grad_accum: int = 1
    precision: str = "auto"
    seed: int = 0
    max_length: int = 128
    long_text: str = "truncate"  # truncate | head-tail | chunks (see TextTokenizer.encode_windows)
    label_smoothing: float = 0.0
    # Imbalanced classes: "balanced" weighs each row's loss by n_rows / (classes x its class's
    # rows), scikit-learn's rule; a mapping {label: weight} sets them (unnamed labels 1.0).
    class_weight: str | dict | None = None
    patience: int | None = None  # early stopping: epochs without improvement on `metric`
    keep_best: bool = True
    metric: str = "accuracy"  # accuracy | macro_f1 | loss
    checkpoint_every: int = (
        0  # optimizer steps; 0 = only at epoch ends when a checkpoint dir is set
    )
    keep_checkpoints: int = 2
    log_every: int = 20
    bucket_batches: int = 50  # batches per length-sorting bucket
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None = torch's default (physical cores)
    strategy: str = "auto"  # auto | single | ddp | fsdp | tp | pp (several processes: torchrun)
    cpu_offload: bool = False  # fsdp: keep sharded params and optimizer state in CPU memory
    tp_size: int | None = None  # tp: ranks per tensor-parallel group (None = all); dp = rest
    microbatches: int = 4  # pp: micro-batches per batch (the pipeline's depth of overlap)
    pp_schedule: str = "1f1b"  # pp: gpipe | 1f1b
    # Fine-tuning a pretrained encoder: lr x decay^(depth from the top) per layer (ELECTRA,
    # BEiT), and parameters kept fixed: "embeddings" or "embeddings+N" (and the first N blocks).
    layer_lr_decay: float = 1.0
    freeze: str | None = None
    # The token embedding table too gets sparse gradients and the lazy SparseAdam (see
    # sparse_tables): a step then touches only the rows of its tokens instead of the whole table.
    sparse_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:  # here, not after minutes of tokenizer learning
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"schedule must be linear, cosine or constant, not {self.schedule!r}")
        check_long_text(self.long_text)
        if self.metric not in ("accuracy", "macro_f1", "loss"):
            raise ValueError(f"metric must be accuracy, macro_f1 or loss, not {self.metric!r}")
        # Values the loop would misread instead of rejecting: a negative checkpoint_every still
        # checkpoints (Python's %), epochs=1.5 runs a partial epoch, log_every=0 divides by 0.
        # seed too: np.int64 from a grid over np.arange(3) was refused, as a whole number
        whole = ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length",
                 "log_every", "bucket_batches", "keep_checkpoints", "checkpoint_every",
                 "microbatches", "max_steps", "patience", "threads", "tp_size", "seed")  # fmt: skip
        for name in whole:
            v = getattr(self, name)
            optional = name in ("max_steps", "patience", "threads", "tp_size")
            if v is None and optional:
                continue
            # numbers.Integral: numpy's ints too (a scikit-learn grid over np.arange), kept as int
            if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name} must be a whole number, got {v!r}")
            setattr(self, name, int(v))
        # A number given as text (PyYAML reads `lr: 1e-3` as the string "1e-3") or None failed
        # below as "'>' not supported between 'str' and 'int'", naming no option.
        for name in ("lr", "weight_decay", "warmup", "grad_clip", "label_smoothing",
                     "layer_lr_decay"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"{name} must be a number, got {v!r}")
            setattr(self, name, float(v))  # np.float32 is no JSON number: config.json failed
        # "false" (a string) was taken as true: sparse_embeddings="false" turned them on
        for name in ("keep_best", "cpu_offload", "sparse_embeddings"):
            v = getattr(self, name)
            if isinstance(v, str) or v not in (True, False):  # numpy's bools and 0/1 too
                raise ValueError(f"{name} must be true or false, got {v!r}")
            setattr(self, name, bool(v))
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length",
                     "log_every", "bucket_batches", "microbatches"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 3:  # below, truncation keeps [CLS] [SEP] and no text at all
            raise ValueError(
                f"max_length must be >= 3 ([CLS], [SEP] and a text token), got {self.max_length}"
            )
        # torch seeds are 64-bit: a larger one failed after the tokenizer was learned, with an
        # "Overflow when unpacking long long" that did not name the seed
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or abs(self.seed) >= 2**63:
            raise ValueError(f"seed must be a whole number below 2**63, got {self.seed!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        frozen_blocks(self.freeze)  # validates
        if self.tp_size is not None and self.tp_size < 1:
            raise ValueError(f"tp_size must be >= 1, got {self.tp_size}")
        if self.pp_schedule not in ("gpipe", "1f1b"):
            raise ValueError(f"pp_schedule must be gpipe or 1f1b, not {self.pp_schedule!r}")
        # A strategy's own options under another strategy would be accepted and do nothing.
        own = {"cpu_offload": ("fsdp", self.cpu_offload), "tp_size": ("tp", self.tp_size),
               "microbatches": ("pp", self.microbatches != 4),
               "pp_schedule": ("pp", self.pp_schedule != "1f1b")}  # fmt: skip
        # M micro-batches of a B-row batch, M > B: every step ran M - B micro-batches of
        # padding rows that carry no loss (a B < M last batch is fine: see PipelineModel)
        if str(self.strategy).lower() == "pp" and self.microbatches > self.batch_size:
            raise ValueError(
                f"microbatches ({self.microbatches}) must not exceed batch_size "
                f"({self.batch_size}), the rows a pipeline step cuts into micro-batches: "
                f"give --microbatches {self.batch_size} or fewer"
            )
        for name, (strategy, given) in own.items():
            if given and str(self.strategy).lower() != strategy:
                raise ValueError(
                    f"{name} applies to strategy {strategy} only (this run: {self.strategy}): "
                    f"add --strategy {strategy}, or drop --{name.replace('_', '-')}"
                )
        for name in ("checkpoint_every", "keep_checkpoints", "warmup", "grad_clip", "weight_decay"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):  # also catches NaN
                raise ValueError(f"{name} must be a number >= 0, got {v}")
        if self.warmup >= 1 and self.warmup != int(self.warmup):  # 2.5 became 2 steps
            raise ValueError(
                f"warmup is a fraction of the steps (< 1) or a number of steps, got {self.warmup}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        check_class_weight(self.class_weight)
        if isinstance(self.class_weight, dict):  # as config.json keeps it: a resume compares
            self.class_weight = {weight_label(k): float(v) for k, v in self.class_weight.items()}
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 (or None), got {self.patience}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None), got {self.threads}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        check_device(self.device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_class_weight(value: object) -> None:
    """`class_weight`: None, "balanced" or a mapping of labels to positive weights."""
    if value is None or value == "balanced":
        return
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"class_weight must be 'balanced' or a mapping of labels to weights, got {value!r}"
        )
    seen: dict[str, object] = {}
    for label, w in value.items():
        # numbers.Real: numpy's scalars too, as the other number options take them
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 < w < math.inf:
            raise ValueError(
                f"class_weight: the weight of label {label!r} must be a positive number, got {w!r}"
            )
        name = weight_label(label)
        if name in seen:  # " spam" and "spam": one class, two weights
            raise ValueError(f"class_weight: labels {seen[name]!r} and {label!r} are one label")
        seen[name] = label


def weight_label(key: object) -> str:
    """A `class_weight` key spelled as the data loaders spell labels (labels.json): stripped,
    NFC, 1.0 as "1". With str(key), the keys of np.unique(y) of a float label column (1.0) or
    a padded " spam " named labels that no data has."""
    return read_label(key, f"class_weight: label {key!r}")


# The label of a training row that has none (distillation's unlabelled transfer texts, trained
# on the teacher's soft labels only): F.cross_entropy's default ignore_index.
IGNORE_LABEL = -100


def class_weights(value: str | dict | None, labels: Sequence[int],
                  label_names: Sequence[str]) -> torch.Tensor | None:  # fmt: skip
    """One weight per label id for `value` (TrainConfig.class_weight), or None: "balanced"
    counts the labelled training rows (windows of long texts under --long-text chunks, as the
    loss sees them; not those labelled `IGNORE_LABEL`); a mapping's keys are labels as
    labels.json spells them (`weight_label`)."""
    if value is None:
        return None
    k = len(label_names)
    if value == "balanced":
        y = np.asarray(labels, dtype=np.int64)
        y = y[y != IGNORE_LABEL]  # rows without a label (distillation's transfer texts)
        counts = np.bincount(y, minlength=k)
        return torch.tensor(len(y) / (k * np.maximum(counts, 1)), dtype=torch.float32)
    check_unknown_weight_labels(value, label_names)
    index = {str(name): i for i, name in enumerate(label_names)}
    w = torch.ones(k)
    for key, weight in value.items():
        w[index[weight_label(key)]] = float(weight)
    return w


def check_unknown_weight_labels(value: str | dict | None, label_names: Sequence[str]) -> None:
    """A ValueError naming the `class_weight` labels that are not in `label_names`."""
    if not isinstance(value, dict):
        return
    index = {str(name) for name in label_names}
    unknown = [key for key in value if weight_label(key) not in index]
    if unknown:
        raise ValueError(
            f"class_weight names labels the training data does not have: "
            f"{', '.join(map(repr, unknown))}; its labels: {', '.join(map(str, label_names))}"
        )


@dataclass
class Encoded:
    """Token ids (and label ids) of a dataset: what the trainer consumes.

    One row per window of a text (`long_text="chunks"` gives long texts several, each with the
    text's label); `owner[i]` is the text of row i, so evaluation scores texts, not windows.
    A label `IGNORE_LABEL` marks a row without one, for a `loss_fn` that trains it otherwise
    (distillation's transfer texts).
    """

    ids: list[list[int]]
    labels: list[int] | None = None
    owner: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one entry per evaluation
    best: dict | None = None  # validation report of the kept model
    best_epoch: float | None = None  # fractional when a step budget ended mid-epoch
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    precision: str = "fp32"
    device: str = "cpu"
    stopped_early: bool = False
    resumed_at: int = 0  # the step a resumed run continued from (0: a fresh run)
    world_size: int = 1
    threads: int = 0  # torch intra-op threads of each rank (samples/s depends on it)
    peak_rss_mb: list[float] = field(default_factory=list)  # per rank, whole-process peak

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    def summary(self) -> dict:
        """JSON-ready figures of the run (saved as `metrics.json["training"]`)."""
        return {
            "steps": self.steps, "samples": self.samples, "tokens": self.tokens,
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_second": round(self.samples_per_second, 2),
            "precision": self.precision, "device": self.device, "world_size": self.world_size,
            "threads": self.threads, "peak_rss_mb": self.peak_rss_mb, "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }  # fmt: skip


def _peak_rss_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):  # not on Windows
        return float("nan")


def frozen_blocks(freeze: str | None) -> int | None:
    """None (nothing frozen) or the number of encoder blocks frozen along with the embeddings."""
    if freeze is None or freeze == "":
        return None
    head, plus, n = freeze.partition("+")
    # "embeddings+" (a count forgotten) must not pass as "embeddings"; isascii keeps out "²",
    # which isdigit accepts and int() does not.
    if head != "embeddings" or (plus and not (n.isascii() and n.isdigit())):
        raise ValueError(f"freeze must be 'embeddings' or 'embeddings+N', not {freeze!r}")
    return int(n or 0)


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter: 0 = embeddings, i + 1 = encoder block i, num_layers + 1 = the rest
    (pooler, head), the numbering of layer-wise LR decay (ELECTRA, BEiT)."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def _num_blocks(model: nn.Module) -> int:
    blocks = getattr(getattr(model, "encoder", None), "blocks", None)
    return len(blocks) if blocks is not None else 0


def freeze_(model: nn.Module, freeze: str | None) -> list[str]:
    """Set `requires_grad=False` on the embeddings (and the first N blocks); returns the names.
    Done before the optimizer and any DDP/FSDP wrapper see the parameters."""
    n = frozen_blocks(freeze)
    if n is None:
        return []
    if n > _num_blocks(model):
        raise ValueError(f"freeze={freeze!r}: the model has only {_num_blocks(model)} blocks")
    names = []
    for name, p in model.named_parameters():
        if layer_id(name, _num_blocks(model)) <= n:
            p.requires_grad_(False)
            names.append(name)
    return names


def param_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, layer_lr_decay: float = 1.0
) -> list[dict]:
    """AdamW groups: no decay on biases, LayerNorm and embeddings (the usual BERT recipe); with
    `layer_lr_decay` < 1, a group per depth with lr x decay^(L + 1 - depth) (see `layer_id`),
    so the head trains at `lr` and the embeddings at lr x decay^(L+1). Frozen params are left
    out. The first group always holds the top (undecayed) layer, so it is the logged lr."""
    L = _num_blocks(model)
    groups: dict[tuple[int, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name or "embeddings" in name
        depth = layer_id(name, L) if layer_lr_decay != 1.0 else L + 1
        groups.setdefault((depth, no_decay), []).append(p)
    if layer_lr_decay == 1.0:  # the plain two groups (also what older checkpoints hold)
        return [
            {"params": groups.get((L + 1, False), []), "weight_decay": weight_decay},
            {"params": groups.get((L + 1, True), []), "weight_decay": 0.0},
        ]
    out = []
    for (depth, no_decay), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        g = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay}
        if lr is not None:
            g["lr"] = lr * layer_lr_decay ** (L + 1 - depth)
        g["layer"] = depth
        out.append(g)
    return out


def sparse_tables(model: nn.Module, ctx: DistContext, tokens: bool = False) -> list[nn.Embedding]:
    """The embedding tables that train with sparse gradients and a lazy Adam
    (`torch.optim.SparseAdam`, which updates only the rows a step touched): the hashed n-gram
    tables (`ModelConfig.ngram_buckets`) always, the token table too with `tokens`
    (`TrainConfig.sparse_embeddings`).

    A step reads a few thousand of their up to millions of rows; AdamW's dense update, the dense
    gradient and its norm cost ~150 of 170 ms an IMDB step at 2^20 x 64 on 2 cores (23 ms
    sparse); for BERT-mini's 16k x 256 token table, ~8% of a step. Only where a gradient
    reaches the optimizer as it is: one process, or DDP over gloo (whose all-reduce takes sparse
    tensors). FSDP, TP and PP shard or split parameters and keep the dense AdamW. Embeddings
    have no weight decay in `param_groups` either, so only the laziness differs: a row's Adam
    moments move when its token is in a batch, not at every step."""
    from ..models.transformer import Embeddings

    if ctx.distributed:
        import torch.distributed as tdist

        if ctx.strategy != "ddp" or tdist.get_backend() != "gloo":
            if tokens and ctx.is_main:  # asked for, and not what this run will do: say so
                warnings.warn(
                    f"--sparse-embeddings has no effect under {ctx.strategy} over "
                    f"{tdist.get_backend()}: the token table trains densely (sparse gradients "
                    "need one process or ddp over gloo)",
                    stacklevel=2,
                )
            return []
    tables = []
    for m in model.modules():
        if isinstance(m, Embeddings):
            tables += [m.ngram] if m.ngram is not None else []
            tables += [m.tok] if tokens else []
    tables = [t for t in tables if t.weight.requires_grad]
    if tokens:
        # A table shared with another layer (the masked-LM decoder ties it) gets dense
        # gradients from there, and a parameter's gradient is either sparse or dense.
        uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
        tied = [t for t in tables if uses[id(t.weight)] > 1]
        if tied:
            raise ValueError(
                "sparse_embeddings: the token embedding table is shared with another layer "
                "(tied weights), whose gradient is dense; train without --sparse-embeddings"
            )
    return tables


# TrainConfig fields a resumed run must share with the run that wrote the checkpoint, for the
# rest of it to be the run it continues (the batches, the schedule, the loss, which epoch is
# kept and when it stops). Others (threads, logging, checkpointing, device, strategy) may change
# between the two.
_RESUME_FIELDS = ("epochs", "max_steps", "lr", "weight_decay", "warmup", "schedule", "grad_clip",
                  "grad_accum", "seed", "max_length", "long_text", "label_smoothing",
                  "class_weight", "bucket_batches", "layer_lr_decay", "freeze",
                  "sparse_embeddings", "patience", "keep_best", "metric")  # fmt: skip


def _fingerprint(data: Encoded) -> str:
    """Rows, and a CRC of their token counts and labels (not of the texts: the ids are all a
    run keeps, and a changed file almost surely changes them)."""
    lengths = row_lengths(data.ids)
    raw = json.dumps([lengths, list(data.labels) if data.labels is not None else None]).encode()
    return f"{len(lengths)} rows, crc32 {zlib.crc32(raw):08x}"


def _resume_key(cfg, ctx, model, label_names, train, valid, extra=None) -> dict:
    """What must not change between a run and its resumption, as plain JSON values (`extra`:
    the caller's own, e.g. pretraining's masking options)."""
    key = {k: getattr(cfg, k) for k in _RESUME_FIELDS}
    key["batch_size x data ranks"] = cfg.batch_size * ctx.data_world  # the global batch
    key["labels"] = list(label_names)
    mc = getattr(model, "config", None)
    key["model"] = asdict(mc) if mc is not None and hasattr(mc, "__dataclass_fields__") else None
    key["training data"] = _fingerprint(train)
    # early stopping and keep-best compare its scores across the resumption
    key["validation data"] = _fingerprint(valid) if valid is not None else None
    return {**key, **(extra or {})}


def _saved_resume_key(ck: Path) -> str | None:
    """The resume key a checkpoint recorded, read on its own: when its weights do not load,
    the key says which option differs (a changed --hidden-size, rather than PyTorch's size
    mismatch of some tensor)."""
    try:
        return torch.load(ck / "state.pt", weights_only=True, map_location="cpu").get("resume_key")
    except Exception:  # unreadable: the caller's own error stands
        return None


def _check_resume_key(ck: Path, saved: str | None, key: dict) -> None:
    if not saved:  # written before checkpoints recorded it
        return
    try:
        old = json.loads(saved)
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (ValueError, TypeError) as e:
        raise IntegrityError(f"{ck}/state.pt: its resume key is unreadable ({e})") from None
    diffs = []
    for k in sorted(set(old) & set(key)):  # what an older version did not record, it can't
        a, b = old.get(k), key.get(k)
        if k == "model" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"model.{f} {a.get(f)!r} -> {b.get(f)!r}"
                      for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]  # fmt: skip
        elif a != b:
            diffs.append(f"{k} {a!r} -> {b!r}" if k != "labels" else "labels differ")
    if diffs:
        raise ValueError(
            f"{ck}: written by a run with other options or data ({'; '.join(diffs)}); resume with "
            "the same ones, or start afresh without --resume"
        )


def clip_grad_norm(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`nn.utils.clip_grad_norm_` for a mix of dense and sparse (COO) gradients, which it
    refuses: the norm of all of them together, every gradient scaled by the same factor."""
    live = [p for p in params if p.grad is not None]
    norms = []
    for p in live:
        if p.grad.is_sparse:  # duplicate rows are summed first: their norm is not the values'
            p.grad = p.grad.coalesce()
            norms.append(torch.linalg.vector_norm(p.grad._values().float()))
        else:
            norms.append(torch.linalg.vector_norm(p.grad.float()))
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in live:
        g = p.grad._values() if p.grad.is_sparse else p.grad
        g.mul_(coef.to(g.dtype))
    return total


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        # The peak is warm-up's last step; decay starts on the next (one step at the peak, where
        # it once ran two) and, like warm-up's (step + 1), never spends a step at lr 0.
        progress = (step - warmup_steps + 1) / max(1, total_steps - warmup_steps + 1)
        progress = min(1.0, progress)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return f


def _score(report: dict, metric: str) -> float:
    return -report["loss"] if metric == "loss" else report[metric]


class _Log:
    """metrics.jsonl (+ TensorBoard when installed) in the run directory."""

    def __init__(self, run_dir: Path | None, resume_at: int | None, evaluations: int = 0):
        self.f = None
        self.tb = None
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "metrics.jsonl"
        if resume_at is not None and path.is_file():
            # The killed run logged past its last checkpoint; the resumed run logs those steps
            # again, so drop them: the curve must not double back.
            # A validation at the checkpoint's own step may be logged and not in the checkpoint
            # (killed between a step's checkpoint and its epoch end): only the `evaluations` the
            # checkpoint holds are kept, as the resumed run evaluates the rest again.
            keep, seen = [], 0
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for n, ln in enumerate(lines, start=1):
                try:
                    rec = json.loads(ln) if ln.strip() else {}
                except ValueError:
                    if n == len(lines):  # torn by the kill: the resumed run logs it again
                        continue
                    raise IntegrityError(f"{path}:{n}: not a JSON line; remove it") from None
                if not rec or rec.get("step", 0) > resume_at:
                    continue
                if "valid_loss" in rec:
                    seen += 1
                    if seen > evaluations:
                        continue
                keep.append(ln)
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        # Held open for the whole run (closed in close()), so no context manager.
        mode = "a" if resume_at is not None else "w"
        self.f = open(path, mode, encoding="utf-8")  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: the JSONL log is enough
            return
        # The same scalars as metrics.jsonl: a fresh run starts a fresh log (an earlier run's
        # event files stayed, and went into the model directory), and a resumed one hides
        # the steps the killed run logged after its checkpoint (TensorBoard's purge_step).
        tb = run_dir / "tensorboard"
        if resume_at is None and tb.is_dir():
            for f in tb.glob("events.out.tfevents.*"):  # what SummaryWriter writes, no more
                f.unlink(missing_ok=True)
        purge = resume_at + 1 if resume_at is not None else None
        self.tb = SummaryWriter(str(tb), purge_step=purge)

    def write(self, record: dict) -> None:
        if self.f is not None:
            self.f.write(json.dumps(record) + "\n")
            self.f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record.get("step", 0))

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.tb is not None:
            self.tb.close()


def keeps_caller_rng(f):
    """Run `f` on torch's global random streams (it seeds them: same seed, same weights and
    dropout masks) and give the caller back its own afterwards: a user's `torch.manual_seed`
    before a `fit` in their app was silently replaced by ours."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            return f(*args, **kwargs)

    return wrapper


def _leaves_no_trace(f):
    """`fit` changes the thread count, the random streams and makes embedding tables sparse
    for its run; restore them however it ends, errors before the first step included."""

    @functools.wraps(f)
    @keeps_caller_rng
    def wrapper(model: nn.Module, *args, **kwargs):
        threads = torch.get_num_threads()
        sparse = [(m, m.sparse) for m in model.modules() if isinstance(m, nn.Embedding)]
        try:
            return f(model, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            for m, was in sparse:  # dense gradients again for whoever trains next
                m.sparse = was

    return wrapper


@_leaves_no_trace
@holds_checkpoints  # (re-entrant: the CLI and TextClassifier.fit hold it already)
def fit(
    model: nn.Module,
    train: Encoded,
    valid: Encoded | None,
    cfg: TrainConfig,
    *,
    label_names: Sequence[str],
    pad_id: int,
    run_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
    dist: DistContext | None = None,
    resume_key: dict | None = None,
    messages: bool | None = None,
) -> TrainResult:
    """Train `model` in place; with keep-best, the best validation weights are loaded at the end.

    `loss_fn(logits, batch) -> scalar` replaces the cross-entropy (distillation uses it: the
    batch carries `index`, the rows' positions in `train`, to look up cached teacher logits).
    `run_dir` receives metrics.jsonl and training_curve.png; `checkpoint_dir` receives resumable
    checkpoints (every `cfg.checkpoint_every` steps and at each epoch end). `resume=True` continues
    from the newest valid checkpoint there (a fresh start if there is none), and refuses one
    written with other options, data or model (`resume_key`: more JSON values that must match).

    `dist` (from `distributed.init_distributed`) runs the same loop on every rank: each step's
    global batch of `batch_size * world_size` rows is split across ranks, so a data-parallel run
    takes the same steps on the same examples as one process with the global batch. Only rank 0
    logs, plots and shows progress.

    Under tp the ranks of one tensor-parallel group take the same rows (the split is over
    data-parallel ranks); under pp every stage takes the whole batch, which `PipelineModel.
    train_step` cuts into `cfg.microbatches` micro-batches (the loss is their mean).
    """
    if train.labels is None:
        raise ValueError("training data has no labels")
    ctx = dist or DistContext(device=resolve_device(cfg.device))
    if ctx.distributed and ctx.strategy == "tp":  # a copy: the caller's context is left as it is
        ctx = replace(ctx, replicas=cfg.tp_size or ctx.world_size)
    elif ctx.distributed and ctx.strategy == "pp":
        ctx = replace(ctx, replicas=ctx.world_size)
    pp = ctx.distributed and ctx.strategy == "pp"
    tp = ctx.distributed and ctx.strategy == "tp"
    device = ctx.device
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads:  # restored by _leaves_no_trace
        torch.set_num_threads(cfg.threads)
    # Dropout masks differ per rank, reproducibly; but the ranks of a tp group compute the same
    # replicated activations (embeddings, LayerNorm, dropout after row-wise outputs), so they
    # share a stream: the seed is the data-parallel rank.
    torch.manual_seed(cfg.seed + (ctx.data_rank if tp else ctx.rank))
    model.to(device).train()
    freeze_(model, cfg.freeze)
    tables = sparse_tables(model, ctx, cfg.sparse_embeddings)
    for t in tables:  # before wrapping: DDP reads which parameters have sparse gradients
        t.sparse = True
    wrapped = wrap_model(model, ctx, precision, cfg.cpu_offload, tp_size=cfg.tp_size,
                         microbatches=cfg.microbatches, pp_schedule=cfg.pp_schedule)  # fmt: skip
    if pp and precision == "fp16":
        raise ValueError("--strategy pp does not support fp16 loss scaling; use bf16 or fp32")
    # `progress`: the bar; `messages` (default: as `progress`): the lines a log keeps (each
    # validation, early stopping, resuming), which a CI job without bars still wants.
    say = (progress if messages is None else messages) and ctx.is_main
    progress = progress and ctx.is_main
    run_dir = Path(run_dir) if run_dir is not None and ctx.is_main else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    lengths = row_lengths(train.ids)
    # the precision as resolved ("auto" is bf16 or fp32 depending on the machine)
    key = _resume_key(cfg, ctx, model, label_names, train, valid,
                      {"precision": precision, **(resume_key or {})})  # fmt: skip
    check_fresh_start(ckpt_dir, resume)

    def epoch_batches(epoch: int) -> list[list[int]]:
        # accum: a step's micro-batches are one batch of batch_size x grad_accum rows, cut up
        return bucketed_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.bucket_batches,
                                ctx.data_rank, ctx.data_world, cfg.grad_accum)  # fmt: skip

    def global_rows(epoch: int) -> list[int] | None:
        """Rows of each global batch (all data ranks together), in this epoch's order: a
        rank's share of the loss is its rows over these, so that uneven splits (a last batch
        of 3 rows over 2 ranks) still give the single-process gradient. None in one process.
        A batch of fewer rows than data ranks gives the ranks past its end a repeated row
        (bucketed_batches): the loss counts it as a row, the figures (samples, tokens) not."""
        if ctx.data_world == 1:
            return None
        # cut into micro-batches for these ranks, as epoch_batches' shares are
        whole = global_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.bucket_batches,
                               ctx.data_world, cfg.grad_accum)  # fmt: skip
        return [len(b) for b in whole]

    batches_per_epoch = len(epoch_batches(0))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = int(cfg.warmup if cfg.warmup >= 1 else round(cfg.warmup * total_steps))
    warmup_steps = max(1, warmup_steps)
    if warmup_steps > total_steps and ctx.is_main:
        warnings.warn(
            f"warm-up of {warmup_steps} steps is longer than the run ({total_steps} steps): the "
            "learning rate never reaches its peak",
            stacklevel=2,
        )

    # Fused AdamW is fastest on plain tensors; sharded (DTensor) params take the foreach path.
    fused = device.type in ("cuda", "cpu") and not (
        ctx.distributed and ctx.strategy in ("fsdp", "tp", "pp")
    )
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.layer_lr_decay)
    lazy = {id(t.weight) for t in tables}
    groups = [{**g, "params": [p for p in g["params"] if id(p) not in lazy]} for g in groups]
    if pp:  # this stage's parameters only (names and depths are those of the whole model)
        mine = {id(p) for p in wrapped.stage_module.parameters()}
        groups = [{**g, "params": [p for p in g["params"] if id(p) in mine]} for g in groups]
    if tp:  # foreach kernels (CUDA's default) refuse lists mixing DTensor and plain tensors
        from torch.distributed.tensor import DTensor

        groups = [{**g, "params": [p for p in g["params"] if isinstance(p, DTensor) == sharded]}
                  for g in groups for sharded in (True, False)]  # fmt: skip
    try:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    opts = [opt]
    if tables:  # embeddings: no weight decay, as in param_groups; lr at the embeddings' depth
        L = _num_blocks(model)
        lr = cfg.lr * cfg.layer_lr_decay ** (L + 1 - layer_id("embeddings.tok.weight", L))
        opts.append(torch.optim.SparseAdam([t.weight for t in tables], lr=lr))
    scheds = [
        torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(cfg.schedule, warmup_steps, total_steps))
        for o in opts
    ]
    sched = scheds[0]
    scaler = grad_scaler(device, precision)
    weight = class_weights(cfg.class_weight, train.labels, label_names)
    if weight is not None:
        weight = weight.to(device)
    if loss_fn is None:

        def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            return weighted_cross_entropy(logits, batch.labels, weight, cfg.label_smoothing)

    result = TrainResult(precision=precision, device=str(device), threads=torch.get_num_threads())
    window: list | None = None  # [loss sum, rows] of a resumed run's unlogged steps
    epoch, batch_pos, step = 0, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    best_score, bad_epochs = -math.inf, 0

    if resume and ckpt_dir is not None and (ck := latest_checkpoint(ckpt_dir, ctx)) is not None:
        # Sparsely updated embedding tables keep their optimizer state apart from AdamW's
        # (SparseAdam); dense ones inside it. --layer-lr-decay and --freeze change AdamW's
        # groups too. A checkpoint whose optimizer state does not fit is an error naming them.
        mixed = (
            f"{ck}: its optimizer state does not fit this run; resume with the options that "
            "wrote it. This run updates the embedding tables "
            + ("sparsely" if tables else "densely")
            + " (sparsely: n-gram tables in one process or ddp, the token table with "
            "--sparse-embeddings; densely under fsdp/tp/pp), and --layer-lr-decay and --freeze "
            "must match as well"
        )
        try:
            st, best_state = load_checkpoint(ck, model=wrapped, optimizer=opt, ctx=ctx)
        except IntegrityError:  # damaged or not ours: says so itself
            raise
        except ValueError as e:  # optimizer.load_state_dict: parameter groups differ in size
            _check_resume_key(ck, _saved_resume_key(ck), key)  # names the option, if recorded
            raise ValueError(f"{mixed} ({e})") from e
        except RuntimeError as e:  # load_state_dict: another model shape
            if "state_dict" not in str(e):
                raise
            _check_resume_key(ck, _saved_resume_key(ck), key)
            raise ValueError(
                f"{ck}: its weights do not fit this model; resume with the model options that "
                f"wrote it ({str(e).splitlines()[-1].strip()})"
            ) from None
        try:
            _check_resume_key(ck, st.get("resume_key"), key)
            sched.load_state_dict(st["scheduler"])
            if bool(tables) != ("sparse_optimizer" in st):
                raise ValueError(mixed)
            if tables:
                try:
                    opts[1].load_state_dict(st["sparse_optimizer"])
                except ValueError as e:  # another set of sparse tables (--sparse-embeddings)
                    raise ValueError(f"{mixed} ({e})") from e
                scheds[1].load_state_dict(st["sparse_scheduler"])
            scaler.load_state_dict(st["scaler"])
            # Each rank continues its own dropout stream (rank 0's if the world size changed).
            rngs = st["rng_cpu"]
            torch.set_rng_state(rngs[ctx.rank] if len(rngs) == ctx.world_size else rngs[0])
            if device.type == "cuda" and "rng_cuda" in st:
                cuda = st["rng_cuda"]
                own = cuda[ctx.rank] if len(cuda) == ctx.world_size else cuda[0]
                torch.cuda.set_rng_state(own, device)
            epoch, batch_pos, step = st["epoch"], st["batch_pos"], st["step"]
            if "loss_window" in st:  # the steps since the last log line, so that line is whole
                windows = json.loads(st["loss_window"])
                window = windows[ctx.rank] if len(windows) == ctx.world_size else None
                if window is None:  # another world size: the sum is what the log line shows
                    window = [sum(w[0] for w in windows), sum(w[1] for w in windows)]
                    window = window if ctx.is_main else [0.0, 0]
            best_score, bad_epochs = st["best_score"], st["bad_epochs"]
            # Killed after early stopping fired (its last checkpoint is written after): stopped.
            # Checkpoints from before the flag existed say it by their count of bad epochs.
            result.stopped_early = bool(st.get("stopped_early", False)) or (
                cfg.patience is not None and bad_epochs >= cfg.patience
            )
            result.history = json.loads(st["history_json"])
            result.best_epoch = st["best_epoch"]
            result.best = json.loads(st["best_json"]) if st["best_json"] else None
            for k in ("samples", "tokens"):
                setattr(result, k, st[k])
            result.train_seconds = st["train_seconds"]
            result.resumed_at = step
            if not (0 <= step <= total_steps and 0 <= epoch <= epochs and batch_pos >= 0):
                raise IntegrityError(
                    f"{ck}/state.pt: step {step}, epoch {epoch} do not fit this run of "
                    f"{total_steps} steps in {epochs} epoch(s); remove that checkpoint or start "
                    "afresh"
                )
        except (KeyError, TypeError, AttributeError, IndexError, json.JSONDecodeError) as e:
            # state.pt holds only plain values (weights_only), but not necessarily ours
            raise IntegrityError(
                f"{ck}/state.pt: not a checkpoint state this version can resume "
                f"({type(e).__name__}: {e}); remove that checkpoint or start afresh"
            ) from None
        if say:
            # epochs counted from 1, as the validation lines count them ("epoch 1: valid ...")
            tqdm.write(f"resuming from {ck} (epoch {epoch + 1}, step {step})", file=sys.stderr)

    pending_tokens = 0  # real tokens this rank has trained on since the last flush_tokens()
    loss_sum, loss_n = 0.0, 0  # the loss of the steps since the last log line

    def flush_tokens() -> None:
        """Add every rank's pending tokens to `result.tokens` (a collective: every rank calls
        it at the same steps). The ranks of a tp group share their rows, so count them once."""
        nonlocal pending_tokens
        result.tokens += sum(all_gather_object(ctx, pending_tokens)) // ctx.replicas
        pending_tokens = 0

    warned_skip = False

    def check_finite(loss: float | None) -> None:
        """Stop a run whose weights went NaN/inf (a collective: every rank calls it at the
        same steps). It trained on to the end, kept a NaN epoch as "best" (argmax of NaN
        scores is class 0) and failed only when the model was loaded; pretraining saved it."""
        nonlocal warned_skip
        if loss is not None and math.isfinite(loss):
            return
        ok = all(all_gather_object(ctx, _weights_finite(wrapped)))
        if not ok:
            kept = (
                f"; the checkpoints in {ckpt_dir} are of this run: delete them to start again"
                if ckpt_dir is not None and list_checkpoints(ckpt_dir)
                else ""
            )
            shown = f" (loss {loss})" if loss is not None else ""
            # fp32 is advice for a bf16/fp16 run only: one already in fp32 was told it too
            fp32 = ", or train in fp32" if precision != "fp32" else ""
            raise DivergedError(
                f"training diverged by step {step}: the weights hold NaN or inf{shown}; "
                f"lower the learning rate (lr {cfg.lr:g}) or keep --grad-clip on{fp32}{kept}"
            )
        if loss is not None and not warned_skip:  # fp16 loss scaling skipped the step
            warned_skip = True
            warnings.warn(f"a non-finite loss ({loss}) by step {step}; the weights are finite "
                          "(the step was skipped by fp16 loss scaling)", stacklevel=2)  # fmt: skip

    def checkpoint() -> None:
        if ckpt_dir is None:
            return
        check_finite(None)  # never a checkpoint of NaN weights: resuming it is pointless
        flush_tokens()  # a resumed run starts from the saved count
        st = {
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "rng_cpu": all_gather_object(ctx, torch.get_rng_state()),
            "loss_window": json.dumps(all_gather_object(ctx, [float(loss_sum), loss_n])),
            "epoch": epoch,
            "batch_pos": batch_pos,
            "step": step,
            "best_score": best_score,
            "bad_epochs": bad_epochs,
            "stopped_early": result.stopped_early,
            "best_epoch": result.best_epoch,
            "history_json": json.dumps(result.history),
            "best_json": json.dumps(result.best) if result.best else "",
            "samples": result.samples,
            "tokens": result.tokens,
            "train_seconds": result.train_seconds,
            "resume_key": json.dumps(key),
        }
        if tables:
            st["sparse_optimizer"] = opts[1].state_dict()
            st["sparse_scheduler"] = scheds[1].state_dict()
        if tp:  # the qkv rows are stored in the layout of this tp size
            st["tp_size"] = ctx.replicas
        if device.type == "cuda":
            st["rng_cuda"] = all_gather_object(ctx, torch.cuda.get_rng_state(device))
        save_checkpoint(ckpt_dir, step, model=wrapped, optimizer=opt, state=st,
                        best_state=best_state, keep=cfg.keep_checkpoints, ctx=ctx)  # fmt: skip

    log = _Log(run_dir, resume_at=step if resume and step > 0 else None,
               evaluations=len(result.history))  # fmt: skip
    bar = progress_bar(total=total_steps, initial=step, disable=not progress, unit="step")
    done = step >= total_steps or result.stopped_early
    try:
        while epoch < epochs and not done:
            batches = epoch_batches(epoch)
            sizes = global_rows(epoch)
            t_last, samples_last, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
            if window is not None:  # resumed mid-window: its earlier steps' loss
                (loss_sum, loss_n), window = window, None
            for o in opts:
                o.zero_grad(set_to_none=True)
            while batch_pos < len(batches):
                t0 = time.perf_counter()
                group = batches[batch_pos : batch_pos + cfg.grad_accum]
                n_group = sum(len(r) for r in group)
                # Distinct rows of each global batch of the group (all data ranks together);
                # DDP/FSDP average the ranks, and a rank's loss is its share of the group's
                # rows, the repeated rows of short global batches included.
                real = sizes[batch_pos : batch_pos + len(group)] if sizes else [n_group]
                g_group = sum(max(n, ctx.data_world) for n in real if n) if sizes else n_group
                share = ctx.data_world / g_group if sizes else 1 / n_group
                for j, rows in enumerate(group):
                    if not rows:  # a short last step cut into more micro-batches than rows
                        continue  # (bucketed_batches puts these first: the last one syncs)
                    b = pad_batch(train.ids, rows, pad_id, train.labels).to(device)
                    if pp:  # the schedule runs forward and backward over micro-batches
                        with autocast(device, precision):
                            loss = wrapped.train_step(b, loss_fn, len(rows) * share)
                        loss_sum += loss / share  # the rows' summed loss
                        loss_n += len(rows)
                        pending_tokens += b.num_tokens  # pp: no data ranks, no repeats
                        continue
                    # Gradients are all-reduced only after the group's last micro-batch.
                    with no_grad_sync(wrapped, ctx, skip=j < len(group) - 1):
                        with autocast(device, precision):
                            logits = wrapped(b.input_ids, b.attention_mask)
                        # Weight each micro-batch by its share of the samples, so accumulation
                        # gives the same gradient as one batch of the whole group.
                        loss = loss_fn(logits.float(), b) * (len(rows) * share)
                        scaler.scale(loss).backward()
                    # Kept as a tensor: no host sync per micro-batch, only when logging.
                    loss_sum += loss.detach() / share  # the rows' summed loss
                    loss_n += len(rows)
                    if not sizes or ctx.data_rank < real[j]:  # not a repeated row
                        pending_tokens += b.num_tokens  # this rank's; flush_tokens sums ranks
                if cfg.grad_clip > 0:
                    for o in opts:
                        scaler.unscale_(o)
                    if tables:
                        clip_grad_norm(list(wrapped.parameters()), cfg.grad_clip)
                    elif tp or pp:  # mixed DTensor/plain grads; under pp, one stage's share
                        from .parallel import clip_grad_norm_

                        params = wrapped.stage_module.parameters() if pp else model.parameters()
                        clip_grad_norm_(
                            params, cfg.grad_clip, torch.distributed.group.WORLD if pp else None
                        )
                    else:
                        nn.utils.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
                lr_used = sched.get_last_lr()[0]  # this step's, not the next one's
                for o, sc in zip(opts, scheds, strict=True):
                    scaler.step(o)
                    sc.step()
                    o.zero_grad(set_to_none=True)
                scaler.update()
                batch_pos += len(group)
                step += 1
                result.samples += sum(real)
                samples_last += sum(real)
                result.train_seconds += time.perf_counter() - t0
                bar.update(1)
                last = batch_pos >= len(batches) or step >= total_steps
                if step % cfg.log_every == 0 or last:
                    now = time.perf_counter()
                    rate = samples_last / max(1e-9, now - t_last)
                    if ctx.data_world > 1:  # every data rank's rows, not rank 0's alone
                        both = all_gather_object(ctx, (float(loss_sum), loss_n))
                        loss_sum, loss_n = sum(x for x, _ in both), sum(n for _, n in both)
                    flush_tokens()
                    rec = {
                        "step": step,
                        "epoch": epoch + batch_pos / len(batches),
                        "loss": float(loss_sum) / max(1, loss_n),
                        "lr": lr_used,
                        "samples_per_s": rate,
                    }
                    check_finite(rec["loss"])  # the last step of an epoch logs: before its eval
                    if not math.isfinite(rec["loss"]):
                        rec["loss"] = None  # a skipped fp16 step: NaN is not JSON
                    log.write(rec)
                    shown = "skipped" if rec["loss"] is None else f"{rec['loss']:.4f}"
                    # refresh=False: an immediate redraw skipped the bar's 30 s interval in logs
                    bar.set_postfix(loss=shown, samples_s=f"{rate:.0f}", refresh=False)
                    t_last, samples_last, loss_sum, loss_n = now, 0, 0.0, 0
                if step >= total_steps:
                    done = True
                    break
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    checkpoint()
            # ---- end of epoch (or of the step budget): evaluate, keep best, maybe stop ----
            # The epochs trained: a step budget that ends mid-epoch (--max-steps) says 2.4, not 3
            seen = epoch + 1 if batch_pos >= len(batches) else epoch + batch_pos / len(batches)
            epoch += 1
            batch_pos = 0
            # the weights themselves: the logged loss was computed before the epoch's last update
            check_finite(None)
            if valid is not None and valid.labels is not None and len(valid):
                if pp:  # gather the stages: every rank then evaluates the whole model locally
                    from .parallel import sync_full_model

                    sync_full_model(wrapped, ctx)
                report = evaluate(
                    model, valid.ids, valid.labels, label_names, pad_id,
                    cfg.eval_batch_size, device, precision, replace(ctx, replicas=1) if pp else ctx,
                    owner=valid.owner, weight=weight,
                )  # fmt: skip
                rec = {
                    "step": step,
                    "epoch": seen,
                    "valid_loss": report["loss"],
                    "valid_accuracy": report["accuracy"],
                    "valid_macro_f1": report["macro_f1"],
                }
                result.history.append(rec)
                log.write(rec)
                if say:
                    tqdm.write(
                        f"epoch {seen:.4g}: valid accuracy {report['accuracy']:.4f} "
                        f"macro-F1 {report['macro_f1']:.4f} loss {report['loss']:.4f}",
                        file=sys.stderr,  # logs, not results: `train > report.txt` stays clean
                    )
                score = _score(report, cfg.metric)
                if score > best_score:
                    best_score, bad_epochs = score, 0
                    result.best, result.best_epoch = report, seen
                    if cfg.keep_best:
                        best_state = full_state_dict(wrapped, ctx)  # fsdp: on rank 0 only
                else:
                    bad_epochs += 1
                    if cfg.patience is not None and bad_epochs >= cfg.patience:
                        result.stopped_early = True
                        done = True
                        if say:
                            tqdm.write(
                                f"early stop: no improvement for {bad_epochs} epochs",
                                file=sys.stderr,
                            )
            checkpoint()
    finally:
        bar.close()
        log.close()
    result.steps = step
    result.world_size = ctx.world_size
    result.peak_rss_mb = [round(x, 1) for x in all_gather_object(ctx, _peak_rss_mb())]
    if cfg.keep_best and result.best is not None:
        load_full_state_dict(wrapped, best_state, ctx)
        last = result.history[-1]["epoch"] if result.history else None
        if say and result.best_epoch != last:  # the log's last line is not the model kept
            best = result.best["loss" if cfg.metric == "loss" else cfg.metric]
            tqdm.write(f"keep-best: the weights of epoch {result.best_epoch:.4g} are kept (best "
                       f"valid {cfg.metric} {best:.4f})", file=sys.stderr)  # fmt: skip
    if run_dir is not None:
        plot_training_curve(run_dir / "metrics.jsonl", run_dir / "training_curve.png")
    return result


class DivergedError(ValueError):
    """Training made the weights NaN or inf (a learning rate far too high, fp16 overflow)."""


def _weights_finite(model: nn.Module) -> bool:
    """Whether this rank's parameters (its shards, under FSDP/TP) are all finite."""
    for p in model.parameters():
        t = p.to_local() if hasattr(p, "to_local") else p
        if not bool(torch.isfinite(t.detach()).all()):
            return False
    return True


def plot_training_curve(metrics_path: Path, out_png: Path) -> Path | None:
    """Loss per logged step and validation accuracy per epoch, one PNG."""
    if not metrics_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = metrics_path.read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines if line.strip()]
    train = [r for r in recs if r.get("loss") is not None]  # None: a skipped fp16 step
    val = [r for r in recs if "valid_accuracy" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    # a marker when there are few points: one logged step drew an empty plot
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], "o-" if len(train) < 5 else "-",
            label="train loss", color="C0")  # fmt: skip
    if val:
        ax.plot([r["step"] for r in val], [r["valid_loss"] for r in val], "o--", color="C1",
                label="valid loss")  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["valid_accuracy"] for r in val], "s-", color="C2",
                 label="valid accuracy")  # fmt: skip
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        # below the axes: inside, it hid the last validation points
        ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3,
                  frameon=False)  # fmt: skip
    else:
        ax.legend()
    ax.set_title("slimtext training")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
