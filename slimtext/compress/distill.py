"""Knowledge distillation (Hinton et al. 2015) through the ordinary training loop.

    loss = alpha * CE(student, y) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))

The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows. Teacher
logits are computed once and cached in a memory-mapped `.npy` (row i = example i), and the loss
looks rows up by `batch.index`, so distillation costs one teacher pass, not one per epoch.
Unlabelled transfer texts (label `IGNORE_LABEL`) have no CE term: their loss is the soft term
alone, (1 - alpha) * T^2 * KL, weighted as a labelled row's; the loss is the mean over all rows.
A training set without labels at all is trained with `alpha=0` (soft term only, weight 1).

The teacher may tokenize for itself (a Hugging Face checkpoint: `hf_teacher_logits`): its
logits are computed from the texts, columns matched to the student's labels by name, and the
student trains on its own tokenization of the same texts.

A student that keeps the teacher's width starts from a subset of its layers (and its embeddings
and head), as DistilBERT does: a much better start than random weights.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import Batch
from ..models import ModelConfig, build_model
from ..tokenizer import pool_windows
from ..train.evaluate import predict_logits
from ..train.trainer import IGNORE_LABEL, Encoded, TrainConfig, TrainResult, class_weights, fit
from ._util import record
from .factorize import DropLayers, drop_layers_, every_other


@dataclass
class Distillation:
    alpha: float = 0.5  # weight of the hard-label cross-entropy; 0 = soft labels only
    temperature: float = 2.0
    # Intermediate layers (need the teacher model itself, sharing the student's tokenizer):
    hidden: float = 0.0  # weight of MSE(W h_student, h_teacher), W learned (TinyBERT)
    attention: float = 0.0  # weight of KL(teacher || student attention distributions) (MiniLM)
    layer_map: tuple[int, ...] | None = None  # teacher layer per student layer; default: spread
    version: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.hidden < 0 or self.attention < 0:
            raise ValueError("hidden and attention loss weights must be >= 0")
        if self.layer_map is not None:
            self.layer_map = tuple(int(i) for i in self.layer_map)

    @property
    def intermediate(self) -> bool:
        return self.hidden > 0 or self.attention > 0


def _cached(cache: str | os.PathLike | None, n: int, compute: Callable[[], np.ndarray]):
    """`compute()` once: with `cache`, stored as `.npy` (atomically) and returned memory-mapped,
    and reused when the file already holds `n` rows."""
    if cache is not None:
        cache = Path(cache)
        if cache.is_file():
            arr = np.load(cache, mmap_mode="r")
            if arr.shape[0] == n:
                return arr
    logits = np.asarray(compute(), dtype=np.float32)
    if cache is None:
        return logits
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, logits)
    os.replace(tmp, cache)
    return np.load(cache, mmap_mode="r")


def teacher_logits(
    teacher: nn.Module,
    data: Encoded,
    pad_id: int,
    cache: str | os.PathLike | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """(N, C) float32 teacher logits, computed once; with `cache`, stored as `.npy` and returned
    memory-mapped (reused when it already holds N rows)."""
    return _cached(
        cache, len(data), lambda: predict_logits(teacher, data.ids, pad_id, batch_size).numpy()
    )


# ---- a teacher with its own tokenizer (a Hugging Face checkpoint, another slimtext model) ------
def label_order(teacher_labels: Sequence[str], student_labels: Sequence[str], where: str):
    """Indices into the teacher's logits giving the student's label order (labels matched by
    name); a `ValueError` naming `where` when the two label sets differ."""
    t, s = [str(x) for x in teacher_labels], [str(x) for x in student_labels]
    if sorted(t) != sorted(s):
        raise ValueError(
            f"{where}: the teacher's labels {sorted(t)} differ from the student's {sorted(s)} "
            f"(only in the teacher: {sorted(set(t) - set(s))}, only in the student: "
            f"{sorted(set(s) - set(t))}); labels are matched by name"
        )
    return [t.index(lab) for lab in s]


def hf_teacher_logits(
    path: str | os.PathLike,
    texts: Sequence[str],
    label_names: Sequence[str],
    *,
    cache: str | os.PathLike | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> np.ndarray:
    """(N, C) logits of a Hugging Face `AutoModelForSequenceClassification` checkpoint on
    `texts`, tokenized by the folder's own tokenizer, columns in the order of `label_names`
    (matched by name through the checkpoint's `config.json` `id2label`). Cached like
    `teacher_logits`. `path` may be a Hub model id: fetched once into the Hugging Face cache
    (`hf_model_folder`); the loading itself reads only that folder (`local_files_only`)."""
    from ..models.hf import _quiet_transformers, _require_transformers

    _require_transformers()  # the extra to install, before any cache lookup
    p = _hf_teacher_folder(path)
    texts = list(texts)

    def compute() -> np.ndarray:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        cfg, order = _hf_label_order(p, label_names)
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
        with _quiet_transformers():  # its load report: what it says is checked below
            model, info = AutoModelForSequenceClassification.from_pretrained(
                p, local_files_only=True, output_loading_info=True
            )
        _check_trained(model, info, p)
        model.eval()
        limit = max_length or min(
            int(getattr(tok, "model_max_length", 512) or 512),
            int(getattr(cfg, "max_position_embeddings", 512) or 512) - _position_offset(cfg, model),
        )
        out = np.zeros((len(texts), cfg.num_labels), np.float32)
        by_len = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
        with torch.inference_mode():
            for k in range(0, len(by_len), batch_size):
                idx = by_len[k : k + batch_size]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True,
                          max_length=limit, return_tensors="pt")  # fmt: skip
                out[idx] = model(**enc).logits.float().numpy()
        return out[:, order]

    return _cached(cache, len(texts), compute)


def _hf_teacher_folder(path: str | os.PathLike) -> Path:
    """The local folder of an `hf:` teacher (a Hub id is fetched once), refused unless it holds
    a Hugging Face config.json."""
    from ..artifact import is_model_dir
    from ..models.hf import hf_model_folder

    p = hf_model_folder(path)
    if is_model_dir(p):  # transformers said only "Unrecognized model ... no model_type key"
        raise ValueError(f"{path}: a slimtext model directory, not a Hugging Face one: give it "
                         "as the teacher without 'hf:'")  # fmt: skip
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a Hugging Face model folder (no config.json)")
    return p


def _hf_label_order(p: Path, label_names: Sequence[str]):
    """(transformers config, indices into its logits in the order of `label_names`)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(p, local_files_only=True)
    id2label = {int(k): v for k, v in (cfg.id2label or {}).items()}
    if sorted(id2label) != list(range(cfg.num_labels)):
        raise ValueError(f"{p / 'config.json'}: id2label does not cover 0..num_labels-1")
    order = label_order([id2label[i] for i in range(cfg.num_labels)], label_names,
                        f"{p / 'config.json'} id2label")  # fmt: skip
    return cfg, order


def check_external_teacher(teacher: str | os.PathLike, label_names: Sequence[str]) -> None:
    """What `external_teacher_logits` would refuse in the teacher itself (no such folder, not a
    model of the kind its name says, other labels), refused cheaply before any data is read:
    `compress` found out only after reading and encoding all of it."""
    spec = str(teacher)
    if spec.startswith("hf:"):
        from ..models.hf import _require_transformers

        _require_transformers()
        _hf_label_order(_hf_teacher_folder(spec[3:]), label_names)
        return
    from ..artifact import is_model_dir, read_model_dir

    p = Path(spec)
    if not is_model_dir(p) and (p / "config.json").is_file():
        try:
            hf = "model_type" in json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            hf = False
        if hf:  # read_model_dir said only "no manifest.json; not a complete slimtext directory"
            raise ValueError(
                f"{spec}: a Hugging Face model folder, not a slimtext model directory: name it "
                f"hf:{spec}"
            )
    label_order(read_model_dir(p).labels, label_names, f"{p / 'labels.json'}")


def _check_trained(model, info: dict, folder: Path) -> None:
    """A `ValueError` when loading left weights at random: a bare encoder or masked-LM folder
    loads as a classifier whose head (and pooler) transformers initialises, and only logs it;
    distilling from those random logits silently ruined the student."""
    params = {n for n, _ in model.named_parameters()}
    missing = [k for k in info.get("missing_keys", ()) if k in params]
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (", ..." if len(missing) > 4 else "")
        raise ValueError(
            f"{folder}: not a trained sequence classifier: its checkpoint has no {shown} "
            f"(architectures {model.config.architectures}), which transformers would start at "
            "random; fine-tune it into a classifier first, or distil from the model itself"
        )


def external_teacher_logits(
    teacher: str | os.PathLike,
    texts: Sequence[str],
    label_names: Sequence[str],
    *,
    cache: str | os.PathLike | None = None,
) -> np.ndarray:
    """Logits of a teacher that tokenizes for itself: `"hf:PATH"` (a Hugging Face folder) or a
    slimtext model directory; columns in the order of `label_names`."""
    spec = str(teacher)
    if spec.startswith("hf:"):
        return hf_teacher_logits(spec[3:], texts, label_names, cache=cache)
    from ..artifact import read_model_dir

    md = read_model_dir(spec)
    order = label_order(md.labels, label_names, f"{Path(spec) / 'labels.json'}")
    texts = list(texts)

    def compute() -> np.ndarray:
        # Long texts read as that model reads them at inference (its `long_text`), one row each.
        ids, owner = md.tokenizer.encode_windows(texts, md.max_length, md.long_text)
        logits = predict_logits(md.model, ids, md.tokenizer.pad_id, 128)
        return pool_windows(logits, owner, len(texts)).numpy()[:, order]

    return _cached(cache, len(texts), compute)


def distillation_loss(
    soft: np.ndarray | torch.Tensor,
    config: Distillation,
    intermediate: IntermediateLoss | None = None,
    weight: torch.Tensor | None = None,
):
    """`loss_fn(logits, batch)` for `fit`: rows of the cached teacher logits by `batch.index`,
    plus the intermediate-layer terms when `intermediate` is given. `weight` (one per label id,
    `class_weights`) weighs the label term as training does: a model trained with class
    weights lost its rare classes when distilled or fine-tuned on the plain cross-entropy.
    Rows labelled `IGNORE_LABEL` (transfer texts) take the soft term only."""
    T, a = config.temperature, config.alpha

    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        idx = batch.index.numpy()
        t = torch.as_tensor(np.asarray(soft[np.sort(idx)]), device=logits.device)
        # np.sort + inverse permutation: memmap fancy indexing wants sorted rows to stay cheap.
        t = t[torch.as_tensor(np.argsort(np.argsort(idx)), device=logits.device)]
        kl = F.kl_div(
            F.log_softmax(logits / T, -1), F.log_softmax(t / T, -1), reduction="none",
            log_target=True,
        ).sum(-1)  # fmt: skip
        # A transfer row's soft term keeps a labelled row's weight (1 - alpha), not 1: the
        # teacher's soft labels then weigh the same on every row (at alpha=0.9 a transfer row
        # would otherwise outweigh a labelled row's soft term 10x, and alpha=1, "labels only",
        # would still train on them); the row only lacks a label.
        rows = (1.0 - a) * T * T * kl
        if a > 0:
            # Per row, then the mean over all the batch's rows (as `weighted_cross_entropy`):
            # a row counts the same whichever micro-batch it lands in, labelled or not.
            y = batch.labels
            ce = F.cross_entropy(logits, y, reduction="none", ignore_index=IGNORE_LABEL)
            if weight is not None:  # ignored rows' CE is 0: any weight of theirs gives 0
                ce = ce * weight.to(ce.device)[y.clamp_min(0)]
            rows = rows + a * ce
        loss = rows.mean()
        if intermediate is not None:
            loss = loss + intermediate(batch)
        return loss

    return loss_fn


class IntermediateLoss(nn.Module):
    """Hidden-state and attention-map losses between mapped layers (student layer i <->
    teacher layer `layer_map[i]`), read by forward hooks: the student's from the forward `fit`
    just ran, the teacher's from a no-grad teacher forward on the same batch (the tokens must
    be the same: one tokenizer). Hidden states: mean over real tokens of
    ||W_i h_s - h_t||^2 / C_t with W_i a learned Linear (identity-initialised when the widths
    agree; TinyBERT, Jiao et al. 2020). Attention: KL(teacher || student) of each query's
    distribution over real keys, averaged over heads, or of the head-averaged distributions
    when the head counts differ (MiniLM, Wang et al. 2020). The projections are parameters:
    `distill` attaches this module to the student while training and removes it after."""

    def __init__(self, teacher: nn.Module, student: nn.Module, config: Distillation):
        super().__init__()
        from ._util import blocks

        self.teacher, self.config = [teacher], config  # a list: not a submodule (not trained)
        n_t, n_s = teacher.config.num_layers, student.config.num_layers
        self.layer_map = tuple(config.layer_map or every_other(n_t, n_s))
        if len(self.layer_map) != n_s or max(self.layer_map) >= n_t or min(self.layer_map) < 0:
            raise ValueError(
                f"layer_map {self.layer_map} must give one teacher layer (0..{n_t - 1}) for "
                f"each of the student's {n_s} layers"
            )
        c_s, c_t = student.config.hidden_size, teacher.config.hidden_size
        self.proj = nn.ModuleList()
        if config.hidden > 0:
            for _ in range(n_s):
                lin = nn.Linear(c_s, c_t)
                if c_s == c_t:  # start from "the same space": the loss then pulls, not rotates
                    with torch.no_grad():
                        lin.weight.copy_(torch.eye(c_t))
                        lin.bias.zero_()
                self.proj.append(lin)
        self._seen: dict[str, dict[str, list]] = {"s": {"h": [], "a": []}, "t": {"h": [], "a": []}}
        # Each student forward starts afresh (fit's evaluation forwards have no loss call).
        self._handles = [student.register_forward_pre_hook(lambda m, a: self._clear("s"))]
        for tag, model in (("s", student), ("t", teacher)):
            for blk in dict.fromkeys(blocks(model)):  # a shared block once: it fires per layer
                self._handles.append(blk.register_forward_hook(self._keep(tag, "h")))
                self._handles.append(
                    blk.attn.qkv.register_forward_hook(self._keep(tag, "a", blk.attn))
                )

    def _keep(self, tag: str, kind: str, attn: nn.Module | None = None):
        def hook(mod, args, out):
            if kind == "h" and self.config.hidden > 0:
                self._seen[tag]["h"].append(out)
            elif kind == "a" and self.config.attention > 0:
                self._seen[tag]["a"].append((out, attn.head_dim))

        return hook

    def _clear(self, tag: str) -> None:
        self._seen[tag] = {"h": [], "a": []}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @staticmethod
    def _attention_logp(qkv: torch.Tensor, head_dim: int, keys: torch.Tensor) -> torch.Tensor:
        B, T, _ = qkv.shape
        W = qkv.shape[-1] // 3
        q, k, _ = qkv.float().split(W, dim=2)
        q, k = (t.view(B, T, W // head_dim, head_dim).transpose(1, 2) for t in (q, k))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # (B, nh, T, T)
        return F.log_softmax(scores.masked_fill(~keys[:, None, None, :], -1e9), -1)

    def forward(self, batch: Batch) -> torch.Tensor:
        s_seen = self._seen["s"]
        teacher = self.teacher[0]
        device = batch.input_ids.device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        teacher.eval()
        self._clear("t")
        with torch.no_grad():
            teacher(batch.input_ids, batch.attention_mask)
        t_seen = self._seen["t"]
        real = batch.attention_mask.bool()  # (B, T)
        loss = torch.zeros((), device=device)
        for i, j in enumerate(self.layer_map):
            if self.config.hidden > 0:
                hs, ht = s_seen["h"][i].float(), t_seen["h"][j].float()
                # A [CLS]-pooled model's last block computes position 0 only, (B, 1, C): compare
                # the positions both sides computed (its shape crashed the mask, or one [CLS]
                # state was broadcast against every token of a full-length teacher layer).
                n = min(hs.shape[1], ht.shape[1])
                diff = self.proj[i](hs[:, :n]) - ht[:, :n]
                hidden = diff[real[:, :n]].pow(2).mean()
                loss = loss + self.config.hidden * hidden / len(self.layer_map)
            if self.config.attention > 0:
                ls = self._attention_logp(*s_seen["a"][i], real)
                lt = self._attention_logp(*t_seen["a"][j], real)
                if ls.shape[1] != lt.shape[1]:  # head counts differ: compare the head averages
                    ls = ls.exp().mean(1, keepdim=True).clamp_min(1e-12).log()
                    lt = lt.exp().mean(1, keepdim=True).clamp_min(1e-12).log()
                kl = (lt.exp() * (lt - ls)).masked_fill(~real[:, None, None, :], 0.0).sum(-1)
                q_real = real[:, None, :].expand_as(kl)  # padded queries do not count
                loss = loss + self.config.attention * kl[q_real].mean() / len(self.layer_map)
        return loss


def student_blocks(teacher_config: ModelConfig, **overrides) -> Sequence[int] | None:
    """The teacher's blocks (evenly spread) that a student with `overrides` starts as a copy
    of, or None when it has another width and is freshly initialised."""
    tcfg, scfg = teacher_config, replace(teacher_config, **overrides)
    same_width = all(
        getattr(scfg, k) == getattr(tcfg, k)
        for k in ("arch", "hidden_size", "num_heads", "ffn_size", "pooling", "share_layers",
                  "max_length", "vocab_size", "num_labels")
    ) and scfg.num_layers <= tcfg.num_layers  # fmt: skip
    return every_other(tcfg.num_layers, scfg.num_layers) if same_width else None


def make_student(teacher: nn.Module, **overrides) -> nn.Module:
    """A student from the teacher's config with `overrides` (e.g. num_layers=2). With the same
    width it starts as a copy of the teacher keeping evenly spread layers (`student_blocks`);
    otherwise it is freshly initialised (same vocabulary: it shares the teacher's tokenizer)."""
    keep = student_blocks(teacher.config, **overrides)
    if keep is None:
        return build_model(replace(teacher.config, **overrides))
    student = copy.deepcopy(teacher)
    if len(keep) < teacher.config.num_layers:
        drop_layers_(student, DropLayers(keep))
    return student


def distill(
    teacher: nn.Module | np.ndarray,
    student: nn.Module,
    train: Encoded,
    valid: Encoded | None,
    train_config: TrainConfig,
    config: Distillation | None = None,
    *,
    label_names: Sequence[str],
    pad_id: int,
    cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[TrainResult, dict]:
    """Train `student` in place on `train` against the teacher's cached logits; returns the
    training result and the `compression` record. Rows labelled `IGNORE_LABEL` (unlabelled
    transfer texts beside labelled ones) take the soft term only; `train.labels` may be None
    (or all ignored): then only the soft term is used (alpha=0, recorded so).

    `teacher` is a model sharing the student's tokenizer (its logits on `train` are computed
    once, cached at `cache`), or the (N, C) teacher logits themselves, row i for `train[i]`
    (a teacher with its own tokenizer: see `hf_teacher_logits`, `external_teacher_logits`)."""
    config = config or Distillation()
    if config.intermediate and isinstance(teacher, np.ndarray):
        raise ValueError(
            "Distillation(hidden=/attention=) needs the teacher model (same tokenizer) to read "
            "its layers, not only its logits"
        )
    if isinstance(teacher, np.ndarray):
        if teacher.shape != (len(train), len(label_names)):
            raise ValueError(
                f"teacher logits have shape {teacher.shape}, expected "
                f"({len(train)}, {len(label_names)}): one row per training example"
            )
        soft = teacher
    else:
        soft = teacher_logits(teacher, train, pad_id, cache)
    if train.labels is None or all(y == IGNORE_LABEL for y in train.labels):
        if config.alpha > 0:
            config = replace(config, alpha=0.0)
        # fit wants labels; the teacher's argmax fills them, the loss ignores them (alpha=0).
        train = Encoded(train.ids, np.asarray(soft).argmax(-1).tolist())
    # the label term as the teacher was trained (compress passes the model's TrainConfig)
    weight = class_weights(train_config.class_weight, train.labels, label_names)
    inter = IntermediateLoss(teacher, student, config) if config.intermediate else None
    if inter is not None:
        # A submodule while training, so `fit`'s optimizer updates the projections.
        student.distill_intermediate = inter
    try:
        result = fit(
            student, train, valid, train_config, label_names=label_names, pad_id=pad_id,
            loss_fn=distillation_loss(soft, config, inter, weight), progress=progress,
        )  # fmt: skip
    finally:
        if inter is not None:
            inter.remove()
            del student.distill_intermediate
            teacher.cpu()
    student.cpu().eval()
    return result, record("distill", config, student=student.config.to_dict())


def _position_offset(cfg, model=None) -> int:
    """Position ids a model never gives a token: RoBERTa's family counts positions from
    pad_token_id + 1, so roberta-base takes 514 - 2 = 512 tokens. A tokenizer folder without
    model_max_length left the limit at max_position_embeddings, and a long text crashed.
    Read from the model where it can be: those families give their position table a
    padding_idx (data2vec-text, xmod, luke and others a list of names missed)."""
    if model is not None:
        for name, mod in model.named_modules():
            if name.endswith("position_embeddings") and isinstance(mod, torch.nn.Embedding):
                return 0 if mod.padding_idx is None else int(mod.padding_idx) + 1
    family = ("roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl", "mpnet")
    if getattr(cfg, "model_type", "") in family:
        return int(getattr(cfg, "pad_token_id", 1) or 0) + 1
    return 0
