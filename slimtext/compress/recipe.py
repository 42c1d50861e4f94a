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
    drop        keep (required: number of layers, >= 1, spread evenly)
    finetune    epochs=1
    quantize    int8-dynamic | int8-weight | int4-weight, max_drop (accuracy budget), group=32,
                qat=N (epochs of quantization-aware fine-tuning, int8 methods; 0 = post-training)

`distill` comes first when present (it trains a new student from the teacher, so earlier steps
would be lost) and `quantize` last (quantized layers are not trained, pruned or re-quantized), and
an already quantized model is not compressed further; such recipes are refused before anything
runs. Fine-tuning after prune/sparsity/lowrank (and QAT) distils from the teacher when the
recipe has distilled (alpha=0.5 against the cached teacher logits), else trains on labels. The
teacher is the model being compressed, or `teacher="hf:PATH"`: a Hugging Face checkpoint with
its own tokenizer. The report has one row per step (plus the teacher): accuracy, macro-F1,
parameters, size on disk, p50 latency at batch 1 and throughput at batch 64, each also as a
ratio against the teacher.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from ..models import ModelConfig
from ..train.trainer import IGNORE_LABEL, Encoded, TrainConfig, class_weights
from ._util import calibration_batches, record
from .distill import (
    Distillation,
    check_external_teacher,
    distill,
    distillation_loss,
    external_teacher_logits,
    make_student,
    student_blocks,
    teacher_logits,
)
from .factorize import (
    DropLayers,
    LowRank,
    drop_layers_,
    every_other,
    factorize_,
    records_after_drop,
)
from .prune import (
    IMPORTANCE,
    FFNPruning,
    HeadPruning,
    MagnitudePruning,
    SemiStructuredPruning,
    prune_,
    prune_finetune,
)
from .qat import QAT, QAT_METHODS, qat_
from .quantize import (
    METHODS,
    Int4WeightOnly,
    config_from_method,
    quantize_,
    quantize_within_budget,
)
from .report import measure, with_ratios, write_report

STEPS = ("distill", "prune", "sparsity", "lowrank", "drop", "finetune", "quantize")
_MAIN = {"quantize": "method", "sparsity": "amount", "drop": "keep", "finetune": "epochs",
         "lowrank": "energy"}  # fmt: skip


_SPARSE_KINDS = ("magnitude", "semi-structured")  # prune records of unstructured/N:M zeros
_SHAPE = {"layers": "num_layers", "hidden": "hidden_size", "heads": "num_heads", "ffn": "ffn_size"}


def _int(lo: int):
    # bool is an int to Python; 1.5 epochs must not become 1 silently, hence no int() cast.
    def ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    return ok, f"an integer >= {lo}"


def _num(ok, text: str):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and ok(v), text


def _one_of(*choices: str):
    return lambda v: str(v).lower() in choices, "one of " + ", ".join(choices)


def _n_of_m(v) -> bool:
    """`sparsity:amount`: a share in [0, 1), or an N:M pattern with 0 < N < M."""
    if not isinstance(v, str):
        return _SHARE[0](v)
    n, _, m = v.partition(":")
    return n.isdigit() and m.isdigit() and 0 < int(n) < int(m)


_SHARE = _num(lambda v: 0 <= v < 1, "a number in [0, 1)")
_WEIGHT = _num(lambda v: v >= 0, "a number >= 0")
# Every option of every step, with its check and what it should be: a recipe is checked whole
# before the teacher is measured, so a typo in its last step fails in a second, not after an
# hour of distillation.
OPTIONS: dict[str, dict[str, tuple]] = {
    "distill": {
        "layers": _int(1), "hidden": _int(1), "heads": _int(1), "ffn": _int(1),
        "alpha": _num(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        "t": _num(lambda v: v > 0, "a number > 0"), "epochs": _int(1),
        "hidden_loss": _WEIGHT, "attention_loss": _WEIGHT,
    },
    "prune": {"heads": _SHARE, "ffn": _SHARE, "importance": _one_of(*IMPORTANCE),
              "calib": _int(1), "finetune": _int(0)},
    "sparsity": {"amount": (_n_of_m, "a number in [0, 1) or an N:M pattern with 0 < N < M"),
                 "steps": _int(1), "finetune": _int(0)},
    "lowrank": {"energy": _num(lambda v: 0 < v <= 1, "a number in (0, 1]"), "finetune": _int(0)},
    "drop": {"keep": _int(1)},
    "finetune": {"epochs": _int(0)},
    "quantize": {
        "method": (lambda v: v in METHODS, "one of " + ", ".join(METHODS)),
        "max_drop": _num(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        "group": (lambda v: _int(2)[0](v) and v % 2 == 0, "an even integer >= 2"),
        "embeddings": _one_of("true", "false", "yes", "no", "1", "0"), "qat": _int(0),
    },
}  # fmt: skip
REQUIRED = {"drop": {"keep": "the number of layers to keep, e.g. drop:keep=2"}}


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
        key = key.strip().lower()
        if key in steps[-1][1]:
            # the later value silently won (`quantize:int8-dynamic,method=int4-weight` ran int4)
            raise ValueError(
                f"step {steps[-1][0]!r}: option {key} given twice "
                f"({steps[-1][1][key]} and {val.strip()})"
            )
        steps[-1][1][key] = _value(val.strip())
    if not steps:
        raise ValueError("empty recipe")
    for name, opts in steps:
        _check_options(name, opts)
    return steps


def _check_options(name: str, opts: dict) -> None:
    """A ValueError naming the step and option unless every option is known and valid."""
    allowed = OPTIONS[name]
    unknown = set(opts) - set(allowed)
    if unknown:
        raise ValueError(
            f"step {name!r}: unknown options {sorted(unknown)}; valid: {sorted(allowed)}"
        )
    for key, what in REQUIRED.get(name, {}).items():
        if key not in opts:
            raise ValueError(f"step {name!r} needs option {key} ({what})")
    for key, value in opts.items():
        ok, text = allowed[key]
        if not ok(value):
            raise ValueError(f"step {name!r}: {key}={value} must be {text}")
    # Combinations that cannot work: say so before any training.
    if name == "quantize":
        method = opts.get("method", "int8-dynamic")
        if opts.get("qat") and "max_drop" in opts:
            raise ValueError(
                "step 'quantize': qat and max_drop do not combine (QAT trains every layer "
                "quantized; max_drop keeps layers in float after the fact)"
            )
        if opts.get("qat") and method not in QAT_METHODS:
            raise ValueError(
                f"step 'quantize': qat is for {', '.join(QAT_METHODS)}, not {method} "
                "(there is no int4 CPU kernel to train against)"
            )
        if "group" in opts and method != "int4-weight":
            raise ValueError(f"step 'quantize': group is for int4-weight only, not {method}")


def _default_layers(n: int) -> int:
    """A distilled student's layers when the recipe does not say: half the teacher's (at least
    one, unless the teacher has none: a student is never larger than its teacher)."""
    return max(min(n, 1), n // 2)


def check_recipe(
    steps: list[tuple[str, dict]],
    config: ModelConfig,
    own_teacher: bool,
    done: list[dict] | tuple = (),
) -> None:
    """The checks that need the model's shape (`config`) and the compression it already had
    (`done`, its records), still before anything runs. With `own_teacher` (no external teacher)
    the model is the teacher: a distilled student may not be larger in any dimension."""
    quantized = next((r for r in done if r.get("step") == "quantize"), None)
    if quantized is not None and steps:
        method = quantized.get("config", {}).get("method", "quantized")
        raise ValueError(
            f"the model is already quantized ({method}): its quantized layers cannot be trained, "
            "pruned, factorized or quantized again; compress the float model it came from"
        )
    if not own_teacher and not any(n == "distill" for n, _ in steps):
        # Only a distill step learns from an external teacher: without one it would be loaded,
        # scored and reported, and the student trained on labels alone.
        raise ValueError(
            "teacher= (--teacher) is used by a 'distill' step, and the recipe has none: add "
            "'distill' first, or drop the teacher"
        )
    if config.arch != "transformer":
        # Those steps work on encoder blocks; an attention model has none, or one narrow one
        # (they crashed, did nothing, or recorded work they had not done).
        odd = [_label(n, o) for n, o in steps if n in ("distill", "prune", "sparsity", "lowrank",
                                                      "drop")]  # fmt: skip
        if odd:
            raise ValueError(
                f"{', '.join(map(repr, odd))}: these steps are for the transformer model's "
                "encoder; an attention model has none, or one narrow block, and takes "
                "'quantize' and 'finetune' only"
            )
    if config.share_layers:
        odd = [_label(n, o) for n, o in steps if n in ("distill", "drop")]
        if odd:
            raise ValueError(
                f"{', '.join(map(repr, odd))}: the model shares one block across its layers "
                "(share_layers), so there are no layers to drop or distil into fewer; use prune, "
                "lowrank or quantize"
            )
    factorized = any(r.get("step") == "factorize" for r in done)
    # A model made sparse by an earlier run is as sparse as one made so by an earlier step of
    # this recipe: a step that trains it grows the zeros back while config.json keeps the
    # sparsity record (a finetune after a separate `sparsity:0.5` run saved a dense model).
    earlier_sparse = next(
        (
            f"the model's earlier sparsity ({r.get('pattern') or r.get('sparsity')})"
            for r in done
            if r.get("step") == "prune" and r.get("kind") in _SPARSE_KINDS
        ),
        None,
    )
    layers = config.num_layers  # the model's layers as each step meets them
    widths = config  # its shape as each step meets it: a distilled student's once distilled
    for i, (name, opts) in enumerate(steps):
        label = _label(name, opts)
        if name == "prune" and not {"heads", "ffn"} & set(opts):  # it pruned nothing
            raise ValueError(
                f"step {label!r} needs heads= and/or ffn=, the shares to remove (e.g. "
                "prune:heads=0.5,ffn=0.5)"
            )
        sparse = next((repr(_label(n, o)) for n, o in steps[:i] if n == "sparsity"), None)
        if name == "distill":  # a student is trained anew; its records drop the sparsity,
            earlier_sparse = None  # so the steps after it train a dense model (were refused)
        else:
            sparse = sparse or earlier_sparse
        if sparse and name != "quantize":  # QAT holds the zeros (qat.py); other steps do not
            # trained without the mask, the zeroed weights grow back: the saved model kept
            # none of the sparsity its record claimed
            raise ValueError(
                f"step {label!r} cannot follow {sparse}: it trains the weights and the zeroed "
                "ones grow back; put the sparsity step last ('quantize', QAT too, may follow it)"
                + ("; compress the dense model it came from" if sparse == earlier_sparse else "")
            )
        if name == "prune" and factorized and ({"heads", "ffn"} & set(opts) or not opts):
            raise ValueError(
                f"step {label!r}: structured pruning needs plain Linear layers, and the model is "
                "factorized (low-rank) at this step; prune before 'lowrank'"
            )
        if (
            name == "distill"
            and not own_teacher
            and any(float(opts.get(k, 0)) for k in ("hidden_loss", "attention_loss"))
        ):
            raise ValueError(
                f"step {label!r}: hidden_loss/attention_loss need a teacher sharing the model's "
                "tokenizer and layout; an external teacher gives logits only"
            )
        if name == "lowrank":
            factorized = True
        elif name == "distill":
            factorized = False  # a new student
        if name == "quantize" and opts.get("method") == "int4-weight":
            group = int(opts.get("group", Int4WeightOnly.group_size))
            if not any(w % group == 0 for w in (widths.hidden_size, widths.ffn_size)):
                raise ValueError(
                    f"step {label!r}: group={group} divides no layer's input width (hidden "
                    f"{widths.hidden_size}, ffn {widths.ffn_size}), so every layer would fall "
                    "back to int8"
                )
        if i and name == "distill":
            raise ValueError(
                f"step {label!r} must come first: it trains a new student from the teacher, "
                f"which would discard {', '.join(repr(n) for n, _ in steps[:i])}"
            )
        if i and steps[i - 1][0] == "quantize":
            raise ValueError(
                f"step {label!r} cannot follow 'quantize': quantized layers cannot be trained, "
                "pruned, factorized or quantized again; put 'quantize' last"
            )
        if name == "distill":
            shape = {k2: opts[k] for k, k2 in _SHAPE.items() if k in opts}
            if own_teacher:
                shape.setdefault("num_layers", _default_layers(config.num_layers))
                for k, k2 in _SHAPE.items():
                    if shape.get(k2, 0) > getattr(config, k2):
                        raise ValueError(
                            f"step {label!r}: {k}={shape[k2]} is larger than the teacher's "
                            f"{k2} {getattr(config, k2)}; a student must not be larger than "
                            "its teacher"
                        )
            try:  # e.g. hidden not divisible by heads
                student = replace(config, **shape)
            except ValueError as e:
                raise ValueError(f"step {label!r}: {e}") from None
            layers, widths = student.num_layers, student
        elif name == "drop":
            if config.share_layers:
                raise ValueError(f"step {label!r}: the model shares one block across its layers")
            if opts["keep"] > layers:
                raise ValueError(
                    f"step {label!r}: keep={opts['keep']} but the model has {layers} layers "
                    "at this step"
                )
            layers = opts["keep"]


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _label(name: str, opts: dict) -> str:
    return name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


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
    load_kw: dict | None = None,
) -> list[dict]:
    """Run `recipe` on the model in `teacher_dir`; write the result to `out_dir` (a model
    directory with `compression_report.md/.json` inside) and return the report rows.

    `teacher`: a teacher other than the model being compressed, with its own tokenizer:
    `"hf:PATH"` (a Hugging Face sequence-classification folder or Hub model id) or another
    slimtext model directory. Its labels must be the model's (matched by name). Distill steps
    then learn from its logits on the texts (the student keeps its own tokenizer; the student's
    shape defaults to the model's), and the report's first row is the input model ("input").

    `load_kw` go to `slimtext.data.load_data` for every file given (text_cols, label_col,
    encoding, encoding_errors, on_bad)."""
    from ..api import as_dataset
    from ..artifact import check_save_target, read_model_dir, save_model_dir
    from ..data import DataError, TextDataset, check_labels_seen, stratified_split

    # a refused --out must fail now, not after every step has run
    check_save_target(out_dir, reads=(teacher_dir, teacher))
    load_kw = load_kw or {}
    steps = parse_recipe(recipe)
    if transfer is not None and not any(n == "distill" for n, _ in steps):
        # only a distill step reads them: the run went on without them, and without a word
        raise ValueError(
            "transfer= (--transfer) is used by a 'distill' step, and the recipe has none: add "
            "'distill' first, or drop the transfer texts"
        )
    if any(n == "quantize" and o.get("qat") for n, o in steps):
        import importlib.util

        if importlib.util.find_spec("torchao") is None:  # before any work, not after it
            raise ImportError(
                "quantization-aware training needs torchao: pip install 'slimtext[quant]'"
            )
    md = read_model_dir(teacher_dir)
    source, tok, labels = md.model, md.tokenizer, md.labels
    done = list(md.meta.get("compression", []))
    check_recipe(steps, source.config, own_teacher=teacher is None, done=done)
    if teacher is not None:  # a wrong folder or other labels: said before the data is read
        check_external_teacher(teacher, labels)
    base_cfg = _train_config(train_config, md)
    from ..data.sources import load_kw_per_source

    kws = load_kw_per_source({"data": data, "valid": valid, "test": test}, load_kw)
    train_ds = as_dataset(data, **kws["data"])
    log(f"data: {train_ds.report()}")  # rows skipped (--on-bad skip) or repaired, as eval says
    if valid is None:
        train_ds, valid_ds = stratified_split(train_ds, valid_fraction, seed=base_cfg.seed)
    else:
        valid_ds = as_dataset(valid, **kws["valid"])
        log(f"valid: {valid_ds.report()}")
    eval_ds = as_dataset(test, **kws["test"]) if test is not None else valid_ds
    if test is not None:
        log(f"test: {eval_ds.report()}")
    # The model's label list is fixed: a label it has no output for cannot be trained or scored.
    known = TextDataset(list(labels), list(labels), source=f"of the model {teacher_dir}")
    for ds in (train_ds, valid_ds, eval_ds):
        if ds.labels is None:
            raise DataError(f"{ds.source}: compress needs labelled data (use transfer= for "
                            "unlabelled texts)")  # fmt: skip
        check_labels_seen(known, ds)
    index = {lab: i for i, lab in enumerate(labels)}

    def enc(ds) -> Encoded:
        # As the model reads texts at inference and in training (`TextClassifier._encode`):
        # long ones per its `long_text`, as one window or several, each with its text's label;
        # `owner` lets evaluation score texts, not windows.
        ids, owner = tok.encode_windows(ds.texts, md.max_length, md.long_text)
        y = [index[ds.labels[i]] for i in owner]
        return Encoded(ids, y, owner if len(owner) != len(ds) else None)

    train, val = enc(train_ds), enc(valid_ds)
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

    def soft_loss():
        """The loss of a step that trains after a distill step: the teacher's soft labels and
        the labels, these weighted as the model was trained (`fit`'s own loss otherwise)."""
        if soft is None:
            return None
        weight = class_weights(base_cfg.class_weight, train.labels, labels)
        return distillation_loss(soft, Distillation(alpha=0.5), weight=weight)

    def finetune(model, epochs) -> None:
        if not epochs:
            return
        loss = soft_loss()
        cfg = replace(base_cfg, epochs=int(epochs), max_steps=None)
        from ..train.trainer import fit

        fit(model, train, val, cfg, label_names=labels, pad_id=pad, loss_fn=loss, progress=progress)
        model.cpu().eval()

    external = None  # the external teacher's name and its accuracy on the evaluation data
    if teacher is not None:
        ev = external_teacher_logits(teacher, eval_ds.texts, labels)  # one row per text
        acc = float(np.mean(np.asarray(ev).argmax(-1) == [index[y] for y in eval_ds.labels]))
        from ..pretrain import init_source  # a folder recorded absolute, a Hub id as it is

        external = {"teacher": init_source(teacher), "teacher_accuracy": acc}
        log(f"teacher {teacher}: accuracy {acc:.4f}")
    rows = [row("teacher" if teacher is None else "input", source)]
    model = copy.deepcopy(source)
    records = list(done)  # what rebuilds the input's structure; each step's record follows
    try:
        for name, opts in steps:
            label = _label(name, opts)
            o = dict(opts)  # checked by parse_recipe and check_recipe
            if name == "distill":
                shape = {k2: o.pop(k) for k, k2 in _SHAPE.items() if k in o}
                if teacher is None:
                    shape.setdefault("num_layers", _default_layers(source.config.num_layers))
                model = make_student(source, **shape)
                # The student's structure: the input's records for the blocks it kept, or none
                # if it was built afresh (another width).
                keep = student_blocks(source.config, **shape)
                records = records_after_drop(done, keep) if keep is not None else []
                # the student is trained without masks: the input's zeros do not survive it
                records = [r for r in records if r.get("kind") not in _SPARSE_KINDS]
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
                owner = train.owner or range(len(train))  # the text of each row of dtrain
                if transfer is not None:  # unlabelled texts: the teacher's soft labels only
                    more = list(_texts(transfer, load_kw))
                    ids, more_owner = tok.encode_windows(more, md.max_length, md.long_text)
                    # the labelled rows keep their labels (and their CE term: alpha as given)
                    dtrain = Encoded(train.ids + ids, train.labels + [IGNORE_LABEL] * len(ids))
                    owner = [*owner, *(len(texts) + i for i in more_owner)]
                    texts += more
                cache = Path(work.name) / "teacher.npy"
                if teacher is None:
                    logits = teacher_logits(source, dtrain, pad, cache)
                else:
                    logits = external_teacher_logits(teacher, texts, labels, cache=cache)
                    if len(owner) != len(texts):  # one row per text: repeat it per window
                        logits = np.asarray(logits)[np.asarray(owner)]
                # Intermediate losses read the teacher's layers: they need the model, not logits.
                _, rec = distill(source if cfg.intermediate else logits, model, dtrain, val,
                                 tcfg, cfg, label_names=labels, pad_id=pad, cache=cache,
                                 progress=progress)  # fmt: skip
                records.append({**rec, **(external or {})})
                soft = logits[: len(train)]
            elif name == "prune":
                calib = calibration_batches(train, pad, int(o.get("calib", 8)))
                imp = str(o.get("importance", "taylor"))
                if o.get("heads"):
                    records.append(prune_(model, HeadPruning(float(o["heads"]), imp), calib))
                if o.get("ffn"):
                    records.append(prune_(model, FFNPruning(float(o["ffn"]), imp), calib))
                finetune(model, o.get("finetune", 1))
            elif name == "sparsity":
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
                    loss = soft_loss()
                    records.append(prune_finetune(
                        model, cfg, train, val, replace(base_cfg, epochs=epochs, max_steps=None),
                        label_names=labels, pad_id=pad, loss_fn=loss, progress=progress,
                    ))  # fmt: skip
                else:
                    records.append(prune_(model, cfg))
            elif name == "lowrank":
                records.append(factorize_(model, LowRank(float(o.get("energy", 0.9)))))
                finetune(model, o.get("finetune", 1))
            elif name == "drop":
                keep = every_other(model.config.num_layers, int(o["keep"]))
                records = records_after_drop(records, keep)
                records.append(drop_layers_(model, DropLayers(keep)))
            elif name == "finetune":
                finetune(model, o.get("epochs", 1))
                records.append(record("finetune", {"epochs": int(o.get("epochs", 1))}))
            elif name == "quantize":
                kw = {
                    "embeddings": str(o.get("embeddings", "true")).lower() in ("1", "true", "yes")
                }
                method = str(o.get("method", "int8-dynamic"))
                if method == "int4-weight" and "group" in o:
                    kw["group_size"] = int(o["group"])
                if int(o.get("qat", 0)):
                    loss = soft_loss()
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
        if external is not None:  # not a row (another model, other tokenizer): said in a line
            rows[0]["external_teacher"] = external
        report_dir = Path(work.name) / "report"
        md_path, js_path = write_report(rows, report_dir)
        final = rows[-1]
        scored = {"accuracy": final["accuracy"], "macro_f1": final["macro_f1"], "n": len(eval_ds)}
        metrics: dict = {"test" if test is not None else "valid": scored}
        # Where the weights came from: the input model's training data (its metrics.json), and
        # the data the compression steps trained and chose on (the output named neither).
        before = md.meta.get("metrics", {}).get("training")
        if isinstance(before, dict) and isinstance(before.get("data"), dict):
            metrics["training"] = {"data": before["data"]}
        held_out = valid is None and bool(valid_fraction)
        metrics["compression_data"] = {
            "train": {"source": str(train_ds.source), "rows": len(train_ds)},
            "valid": {"source": str(valid_ds.source), "rows": len(valid_ds),
                      **({"held_out_fraction": valid_fraction} if held_out else {})},
        }  # fmt: skip
        save_model_dir(
            out_dir, model, model.config, tok, labels, max_length=md.max_length,
            long_text=md.long_text,  # the student reads long texts as its teacher was trained to
            train_config=md.meta.get("train", {}),
            metrics=metrics,
            compression=records,
            extra_files={md_path.name: md_path, js_path.name: js_path},
        )  # fmt: skip
    finally:
        work.cleanup()
    return rows


def _texts(transfer, load_kw: dict):
    from ..api import as_dataset

    if isinstance(transfer, (list, tuple)) and all(isinstance(t, str) for t in transfer):
        return transfer
    return as_dataset(transfer, **{**load_kw, "label_col": None}).texts  # labels ignored


def _train_config(train_config, md) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in md.meta.get("train", {}).items() if k in known}
    base.update({"max_length": md.max_length, "max_steps": None, "patience": None})
    if isinstance(train_config, TrainConfig):
        return train_config
    base.update(train_config or {})
    return TrainConfig(**base)
