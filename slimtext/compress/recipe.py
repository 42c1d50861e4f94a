"""Chain compression steps on a trained model directory and report each step.

    compress("teacher-dir", "train.jsonl", "student-dir",
             recipe="distill:layers=2,prune:heads=0.5,ffn=0.5,quantize:int8-dynamic",
             test="test.jsonl")

A recipe is comma-separated `step[:option,...]`; a token with `=` and no `:` is one more option
of the step before it, and a bare value right after `step:` is its main option
(`quantize:int8-dynamic`, `sparsity:0.8`). Steps and options:

    distill     layers, hidden, heads, ffn (student shape; default half the layers),
                alpha=0.5, T=2.0, epochs, hidden_loss=0, attention_loss=0 (weights of the
                intermediate-layer losses: TinyBERT hidden-state MSE, MiniLM attention KL)
    prune       heads, ffn (shares to remove), importance=taylor|magnitude, calib=8 (batches),
                finetune=1 (epochs; 0 = none)
    sparsity    amount (global unstructured magnitude), steps=3, finetune=1 (epochs per stage);
                or N:M (`sparsity:2:4`): the N largest |w| of every M consecutive weights kept
    lowrank     energy=0.9, finetune=1
    drop        keep (number of layers, spread evenly)
    finetune    epochs=1
    quantize    int8-dynamic | int8-weight | int4-weight, max_drop (accuracy budget), group=32,
                qat=N (epochs of quantization-aware fine-tuning, int8 methods; 0 = post-training)

Fine-tuning after prune/sparsity/lowrank (and QAT) distils from the teacher when the recipe has
distilled (alpha=0.5 against the cached teacher logits), else trains on labels. The teacher is the
model being compressed, or `teacher="hf:PATH"`: a Hugging Face checkpoint with its own tokenizer.
The report has one row per step (plus the teacher): accuracy, macro-F1, parameters, size on
disk, p50 latency at batch 1 and throughput at batch 64, each also as a ratio against the teacher.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

from ..train.trainer import Encoded, TrainConfig
from ._util import calibration_batches, record
from .distill import (
    Distillation,
    distill,
    distillation_loss,
    external_teacher_logits,
    make_student,
    teacher_logits,
)
from .factorize import DropLayers, LowRank, drop_layers_, every_other, factorize_
from .prune import (
    FFNPruning,
    HeadPruning,
    MagnitudePruning,
    SemiStructuredPruning,
    prune_,
    prune_finetune,
)
from .qat import QAT, qat_
from .quantize import config_from_method, quantize_, quantize_within_budget
from .report import measure, with_ratios, write_report

STEPS = ("distill", "prune", "sparsity", "lowrank", "drop", "finetune", "quantize")
_MAIN = {"quantize": "method", "sparsity": "amount", "drop": "keep", "finetune": "epochs",
         "lowrank": "energy"}  # fmt: skip


_SHAPE = {"layers": "num_layers", "hidden": "hidden_size", "heads": "num_heads", "ffn": "ffn_size"}


def parse_recipe(recipe: str) -> list[tuple[str, dict]]:
    """`"distill,prune:heads=0.5,ffn=0.5,quantize:int8-dynamic"` ->
    `[("distill", {}), ("prune", {"heads": 0.5, "ffn": 0.5}), ("quantize", {"method": ...})]`."""
    steps: list[tuple[str, dict]] = []
    for raw in (t.strip() for t in recipe.split(",")):
        if not raw:
            continue
        if ":" in raw or "=" not in raw:
            name, _, first = raw.partition(":")
            name = name.strip().lower()
            if name not in STEPS:
                raise ValueError(f"unknown compression step {name!r}; known: {', '.join(STEPS)}")
            steps.append((name, {}))
            raw = first.strip()
            if not raw:
                continue
            if "=" not in raw:
                if name not in _MAIN:
                    raise ValueError(f"step {name!r} takes key=value options, got {raw!r}")
                raw = f"{_MAIN[name]}={raw}"
        if not steps:
            raise ValueError(f"option {raw!r} before any step")
        key, _, val = raw.partition("=")
        steps[-1][1][key.strip().lower()] = _value(val.strip())
    if not steps:
        raise ValueError("empty recipe")
    for name, opts in steps:  # combinations that cannot work: say so before any training
        if name == "quantize" and opts.get("qat") and "max_drop" in opts:
            raise ValueError(
                "step 'quantize': qat and max_drop do not combine (QAT trains every layer "
                "quantized; max_drop keeps layers in float after the fact)"
            )
    return steps


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _label(name: str, opts: dict) -> str:
    return name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


def _take(opts: dict, allowed: set[str], step: str) -> dict:
    unknown = set(opts) - allowed
    if unknown:
        raise ValueError(
            f"step {step!r}: unknown options {sorted(unknown)}; valid: {sorted(allowed)}"
        )
    return opts


def compress(
    teacher_dir: str | os.PathLike,
    data,
    out_dir: str | os.PathLike,
    recipe: str = "distill,prune:heads=0.5,ffn=0.5,quantize:int8-dynamic",
    *,
    valid=None,
    test=None,
    transfer=None,
    teacher: str | os.PathLike | None = None,
    train_config: TrainConfig | dict | None = None,
    valid_fraction: float = 0.1,
    speed: bool = True,
    speed_kw: dict | None = None,
    progress: bool = False,
    log=print,
) -> list[dict]:
    """Run `recipe` on the model in `teacher_dir`; write the result to `out_dir` (a model
    directory with `compression_report.md/.json` inside) and return the report rows.

    `teacher`: a teacher other than the model being compressed, with its own tokenizer:
    `"hf:PATH"` (a local Hugging Face sequence-classification folder) or another slimtext model
    directory. Its labels must be the model's (matched by name). Distill steps then learn from
    its logits on the texts (the student keeps its own tokenizer; the student's shape defaults
    to the model's), and the report's first row is the input model ("input")."""
    from ..api import as_dataset
    from ..artifact import read_model_dir, save_model_dir
    from ..data import stratified_split

    steps = parse_recipe(recipe)
    md = read_model_dir(teacher_dir)
    source, tok, labels = md.model, md.tokenizer, md.labels
    base_cfg = _train_config(train_config, md)
    train_ds = as_dataset(data)
    if valid is None:
        train_ds, valid_ds = stratified_split(train_ds, valid_fraction, seed=base_cfg.seed)
    else:
        valid_ds = as_dataset(valid)
    index = {lab: i for i, lab in enumerate(labels)}

    def enc(ds) -> Encoded:
        y = None if ds.labels is None else [index[lab] for lab in ds.labels]
        return Encoded(tok.encode(ds.texts, md.max_length), y)

    train, val = enc(train_ds), enc(valid_ds)
    eval_ds = as_dataset(test) if test is not None else valid_ds
    evaluation = enc(eval_ds) if test is not None else val
    pad = tok.pad_id
    work = tempfile.TemporaryDirectory(prefix="slimtext-compress-")
    soft = None  # cached teacher logits on `train`, once a distill step asked for them

    def row(step: str, model) -> dict:
        r = {
            "step": step,
            **measure(model, evaluation, labels, pad, speed=speed, speed_kw=speed_kw),
        }
        log(
            f"{step}: accuracy {r['accuracy']:.4f}, {r['params']:,} params, {r['size_mb']:.2f} MB"
            + (f", p50 {r['latency_ms_p50']:.2f} ms, {r['throughput']:.0f}/s" if speed else "")
        )
        return r

    def finetune(model, epochs) -> None:
        if not epochs:
            return
        loss = distillation_loss(soft, Distillation(alpha=0.5)) if soft is not None else None
        cfg = replace(base_cfg, epochs=int(epochs), max_steps=None)
        from ..train.trainer import fit

        fit(model, train, val, cfg, label_names=labels, pad_id=pad, loss_fn=loss, progress=progress)
        model.cpu().eval()

    external = None  # the external teacher's name and its accuracy on the evaluation data
    if teacher is not None:
        import numpy as np

        ev = external_teacher_logits(teacher, eval_ds.texts, labels)
        acc = float(np.mean(np.asarray(ev).argmax(-1) == np.asarray(evaluation.labels)))
        external = {"teacher": str(teacher), "teacher_accuracy": acc}
        log(f"teacher {teacher}: accuracy {acc:.4f}")
    rows = [row("teacher" if teacher is None else "input", source)]
    model = copy.deepcopy(source)
    records: list[dict] = list(md.meta.get("compression", []))
    try:
        for name, opts in steps:
            label = _label(name, opts)
            if name == "distill":
                o = _take(dict(opts), {"layers", "hidden", "heads", "ffn", "alpha", "t", "epochs",
                                       "hidden_loss", "attention_loss"}, name)  # fmt: skip
                shape = {k2: o.pop(k) for k, k2 in _SHAPE.items() if k in o}
                if teacher is None:
                    shape.setdefault("num_layers", max(1, source.config.num_layers // 2))
                model = make_student(source, **shape)
                cfg = Distillation(
                    alpha=float(o.get("alpha", 0.5)), temperature=float(o.get("t", 2.0)),
                    hidden=float(o.get("hidden_loss", 0.0)),
                    attention=float(o.get("attention_loss", 0.0)),
                )  # fmt: skip
                if cfg.intermediate and teacher is not None:
                    raise ValueError(
                        "distill: hidden_loss/attention_loss need a teacher sharing the model's "
                        f"tokenizer and layout, not {teacher}"
                    )
                tcfg = replace(base_cfg, epochs=int(o.get("epochs", base_cfg.epochs)))
                dtrain, texts = train, list(train_ds.texts)
                if transfer is not None:  # unlabelled texts: the teacher labels them
                    texts += list(_texts(transfer))
                    extra = tok.encode(texts[len(train) :], md.max_length)
                    dtrain = Encoded(train.ids + extra, None)
                cache = Path(work.name) / "teacher.npy"
                if teacher is None:
                    logits = teacher_logits(source, dtrain, pad, cache)
                else:
                    logits = external_teacher_logits(teacher, texts, labels, cache=cache)
                # Intermediate losses read the teacher's layers: they need the model, not logits.
                _, rec = distill(source if cfg.intermediate else logits, model, dtrain, val,
                                 tcfg, cfg, label_names=labels, pad_id=pad, cache=cache,
                                 progress=progress)  # fmt: skip
                records.append({**rec, **(external or {})})
                soft = logits[: len(train)]
            elif name == "prune":
                o = _take(opts, {"heads", "ffn", "importance", "calib", "finetune"}, name)
                calib = calibration_batches(train, pad, int(o.get("calib", 8)))
                imp = str(o.get("importance", "taylor"))
                if o.get("heads"):
                    records.append(prune_(model, HeadPruning(float(o["heads"]), imp), calib))
                if o.get("ffn"):
                    records.append(prune_(model, FFNPruning(float(o["ffn"]), imp), calib))
                finetune(model, o.get("finetune", 1))
            elif name == "sparsity":
                o = _take(opts, {"amount", "steps", "finetune"}, name)
                amount = o.get("amount", 0.5)
                if isinstance(amount, str) and ":" in amount:  # n:m semi-structured
                    try:
                        n_keep, group = (int(x) for x in amount.split(":"))
                    except ValueError:
                        raise ValueError(f"sparsity pattern must be N:M, got {amount!r}") from None
                    cfg = SemiStructuredPruning(n_keep, group)
                else:
                    cfg = MagnitudePruning(float(amount), int(o.get("steps", 3)))
                epochs = int(o.get("finetune", 1))
                if epochs:
                    loss = (
                        distillation_loss(soft, Distillation(alpha=0.5))
                        if soft is not None
                        else None
                    )
                    records.append(prune_finetune(
                        model, cfg, train, val, replace(base_cfg, epochs=epochs, max_steps=None),
                        label_names=labels, pad_id=pad, loss_fn=loss, progress=progress,
                    ))  # fmt: skip
                else:
                    records.append(prune_(model, cfg))
            elif name == "lowrank":
                o = _take(opts, {"energy", "finetune"}, name)
                records.append(factorize_(model, LowRank(float(o.get("energy", 0.9)))))
                finetune(model, o.get("finetune", 1))
            elif name == "drop":
                o = _take(opts, {"keep"}, name)
                n = model.config.num_layers
                records.append(drop_layers_(model, DropLayers(every_other(n, int(o["keep"])))))
            elif name == "finetune":
                o = _take(opts, {"epochs"}, name)
                finetune(model, o.get("epochs", 1))
                records.append(record("finetune", {"epochs": int(o.get("epochs", 1))}))
            elif name == "quantize":
                o = _take(opts, {"method", "max_drop", "group", "embeddings", "qat"}, name)
                kw = {
                    "embeddings": str(o.get("embeddings", "true")).lower() in ("1", "true", "yes")
                }
                method = str(o.get("method", "int8-dynamic"))
                if method == "int4-weight" and "group" in o:
                    kw["group_size"] = int(o["group"])
                if int(o.get("qat", 0)):
                    loss = (
                        distillation_loss(soft, Distillation(alpha=0.5))
                        if soft is not None
                        else None
                    )
                    _, rec = qat_(
                        model, QAT(method, embeddings=kw["embeddings"]), train, val,
                        replace(base_cfg, epochs=int(o["qat"]), max_steps=None),
                        label_names=labels, pad_id=pad, loss_fn=loss, progress=progress,
                    )  # fmt: skip
                    records.append(rec)
                elif "max_drop" in o:
                    records.append(quantize_within_budget(
                        model, config_from_method(method, **kw), val, label_names=labels,
                        pad_id=pad, max_accuracy_drop=float(o["max_drop"]),
                    ))  # fmt: skip
                else:
                    records.append(quantize_(model, config_from_method(method, **kw)))
            rows.append(row(label, model))
            if name == "sparsity" and records[-1].get("kind") == "semi-structured":
                rows[-1]["pattern"] = records[-1]["pattern"]  # the report's speed note
        rows = with_ratios(rows)
        report_dir = Path(work.name) / "report"
        md_path, js_path = write_report(rows, report_dir)
        final = rows[-1]
        save_model_dir(
            out_dir, model, model.config, tok, labels, max_length=md.max_length,
            long_text=md.long_text,  # the student reads long texts as its teacher was trained to
            train_config=md.meta.get("train", {}),
            metrics={"test" if test is not None else "valid": {
                "accuracy": final["accuracy"], "macro_f1": final["macro_f1"],
                "n": len(evaluation)}},
            compression=records,
            extra_files={md_path.name: md_path, js_path.name: js_path},
        )  # fmt: skip
    finally:
        work.cleanup()
    return rows


def _texts(transfer):
    from ..api import as_dataset

    if isinstance(transfer, (list, tuple)) and all(isinstance(t, str) for t in transfer):
        return transfer
    return as_dataset(transfer).texts


def _train_config(train_config, md) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in md.meta.get("train", {}).items() if k in known}
    base.update({"max_length": md.max_length, "max_steps": None, "patience": None})
    if isinstance(train_config, TrainConfig):
        return train_config
    base.update(train_config or {})
    return TrainConfig(**base)
