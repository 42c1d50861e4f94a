"""`TextClassifier`: the scikit-learn / fastText-style face of slimtext.

    clf = TextClassifier(model="transformer", epochs=3).fit("train.csv")
    clf.predict(["..."]); clf.score("test.csv"); clf.save("my-model")
    clf = slimtext.load("my-model")

`__init__` only stores arguments; `fit` learns the tokenizer, labels and weights (the learned
state ends in `_`). Every keyword argument is a field of `ModelConfig` or `TrainConfig`.
`init=` starts from a pretrained encoder (a slimtext model dir, or `hf:PATH` for a local Hugging
Face BERT, RoBERTa or DistilBERT folder): its tokenizer and shape are used, every weight but the
head is loaded (DistilBERT's pooler is new too).
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from .artifact import (
    ModelDir,
    read_model_dir,
    save_model_dir,
    training_records,
    weights_state,
)
from .data import DataError, TextDataset, check_labels_seen, load_data, stratified_split
from .data.dataset import check_texts
from .data.sources import label_to_str, read_label
from .fileio import atomic_write_text
from .infer import Predictor
from .metrics import classification_report
from .models import ModelConfig, build_model
from .tokenizer import (
    TextTokenizer,
    in_chunks,
    is_learnt_kind,
    load_tokenizer,
    train_tokenizer,
)
from .train import Encoded, TrainConfig, TrainResult, fit
from .train.checkpoint import (
    FINISHED,
    check_fresh_start,
    clear_finished,
    holds_checkpoints,
    list_checkpoints,
    mark_finished,
)
from .train.distributed import (
    DistContext,
    DistributedError,
    barrier,
    broadcast_object,
    check_same_config,
    full_state_dict,
    init_distributed,
)
from .train.trainer import check_unknown_weight_labels, frozen_blocks, keeps_caller_rng

Data = Union[TextDataset, str, os.PathLike, tuple]  # noqa: UP007 (readable in help text)

# (pad_id is the tokenizer's, never an option: a model whose padding row is another token's
# would freeze that token's embedding at zero)
_MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"vocab_size", "num_labels", "arch", "pad_id"}
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
# Smaller defaults for the attention-pooling family: it is the fast, fastText-like option.
# Texts scored at a time by `evaluate`: its memory is a chunk's windows and logits, whatever
# the size of the data (a 1M-row evaluation held ~10 GB at once).
_EVAL_CHUNK = 8192
_ATTENTION_DEFAULTS = {"num_layers": 0, "hidden_size": 128, "lr": 3e-3, "dropout": 0.1}


def _check_family(model: str, params: dict, warn: bool = True) -> None:
    """Options of the other model family would be saved in config.json and change nothing.
    Checked for new models here, not in ModelConfig: directories trained with them still load."""
    other = {"attention": ("pooling",), "transformer": ("attention_size",)}[model]
    default = {f.name: f.default for f in fields(ModelConfig)}  # what a loaded model's carry
    if given := [k for k in other if params.get(k) not in (None, default[k])]:
        raise ValueError(
            f"{', '.join(given)} does not apply to model={model!r} (pooling is the transformer's, "
            "[CLS] or mean; attention_size the attention model's scorer)"
        )
    layers = params.get("num_layers", _ATTENTION_DEFAULTS["num_layers"] if model == "attention"
                        else default["num_layers"])  # fmt: skip
    blocks_only = ("num_heads", "ffn_size", "gradient_checkpointing", "share_layers")
    given = [k for k in blocks_only if params.get(k) not in (None, default[k])]
    if warn and layers == 0 and given:  # said, not refused: shared flags of a script carry them
        warnings.warn(
            f"{', '.join(given)} shape(s) encoder blocks, and this model has none (num_layers=0"
            f"{', the attention model default' if model == 'attention' else ''}): no effect",
            stacklevel=3,
        )


def as_dataset(data: Data, **load_kwargs) -> TextDataset:
    """A TextDataset from a dataset, a source spec (path, `bbc`, `hf:...`) or (texts, labels)."""
    if isinstance(data, TextDataset):
        return _checked_types(data)
    if isinstance(data, (str, os.PathLike)):
        return load_data(data, **load_kwargs)
    if isinstance(data, tuple) and len(data) == 2:
        if isinstance(data[1], str):
            raise TypeError("(texts, labels) takes a list of labels, not a single string")
        texts, labels = check_texts(data[0]), _label_list(data[1])
        if len(texts) != len(labels):
            raise DataError(f"{len(texts)} texts but {len(labels)} labels")
        return TextDataset(texts, [_label(i, y) for i, y in enumerate(labels)], source="<memory>")
    raise TypeError(
        "data must be a TextDataset, a path or source name, or a (texts, labels) tuple "
        "(fit and score also take texts and labels as two arguments)"
    )


def _checked_types(ds: TextDataset) -> TextDataset:
    """`ds`, if its texts and labels are strings. One made by hand with integer labels failed
    deep in `label_set` (a regex's TypeError), a None text in the tokenizer; only the types are
    checked, in one cheap pass (the loaders' datasets pass through here too)."""
    for i, t in enumerate(ds.texts):
        if not isinstance(t, str):
            raise TypeError(f"{ds.where(i)}: text is {type(t).__name__}, expected str")
    for i, y in enumerate(ds.labels or []):
        if not isinstance(y, str):
            raise DataError(
                f"{ds.where(i)}: label {y!r} is {type(y).__name__}, not str (a TextDataset "
                "holds its labels as text); give other labels as (texts, labels), which keeps "
                "them as given"
            )
    return ds


def _label_list(y) -> list:
    """Labels given in memory as a list, one per text. A one-column table (an (n, 1) array,
    `df[["label"]]`) is its column, as scikit-learn reads it (its integers came back as text, a
    DataFrame was "1 labels"); a wider one is refused here, not by numpy on its first row."""
    shape = getattr(y, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == 1:
        return list(y.iloc[:, 0] if hasattr(y, "iloc") else np.asarray(y)[:, 0])
    if shape is not None and len(shape) > 1:
        raise DataError(f"labels: give one label per text (1-D), not a table of shape "
                        f"{tuple(shape)}")  # fmt: skip
    return list(y)


def _label(i: int, y) -> str:
    """Label `i` as the file loaders read labels: integers (3.0 too, as pandas gives integer
    columns with gaps) become their digits; None, NaN, "", booleans and others are refused."""
    return read_label(y, f"label {i}")


class NotFittedError(RuntimeError, AttributeError):
    """Predicting, scoring or saving before `fit`. An AttributeError too, as scikit-learn's
    NotFittedError is, so that its checks and `hasattr` probes read it as "not fitted"."""


class TextClassifier:
    """Train and use a text classifier. `model` is "transformer" or "attention"."""

    def __init__(
        self,
        model: str = "transformer",
        *,
        tokenizer: str = "bpe",
        vocab_size: int = 16000,
        valid_fraction: float = 0.1,
        verbose: bool = True,
        init: str | os.PathLike | None = None,
        **params,
    ):
        unknown = set(params) - _valid_params()
        if unknown:
            raise TypeError(
                f"unknown parameters {sorted(unknown)}; valid: {sorted(_valid_params())}"
            )
        if model not in ("transformer", "attention"):
            raise ValueError(f"model must be 'transformer' or 'attention', got {model!r}")
        # numbers.*: numpy's too (a scikit-learn grid over np.arange), as the training options
        # take them; kept as given (clone checks that), made Python numbers where they are saved
        if (not isinstance(vocab_size, numbers.Integral) or isinstance(vocab_size, bool)
                or vocab_size < 16):  # fmt: skip
            raise ValueError(f"vocab_size must be a whole number >= 16, got {vocab_size!r}")
        if isinstance(valid_fraction, bool) or not (
            isinstance(valid_fraction, numbers.Real) and 0 <= valid_fraction < 1
        ):
            raise ValueError(
                f"valid_fraction must be in [0, 1) (0: no validation split, the last weights are "
                f"kept), got {valid_fraction!r}"
            )
        _check_family(model, params)
        self.model = model
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.valid_fraction = valid_fraction
        self.verbose = verbose
        self.init = init
        self.params = params

    # ---- configuration -------------------------------------------------------------------
    def _params(self) -> dict:
        merged = dict(_ATTENTION_DEFAULTS) if self.model == "attention" else {}
        merged.update(self.params)
        return merged

    def train_config(self) -> TrainConfig:
        """The `TrainConfig` these parameters make (checked: a bad value raises here)."""
        return TrainConfig(**{k: v for k, v in self._params().items() if k in _TRAIN_KEYS})

    def _model_config(
        self, tok: TextTokenizer | None, num_labels: int, max_length: int
    ) -> ModelConfig:
        """The ModelConfig of these parameters (`tok` None: the vocabulary asked for)."""
        # None is "not given", as the family check reads it: pooling=None failed in ModelConfig
        kw = {k: v for k, v in self._params().items() if k in _MODEL_KEYS and v is not None}
        _check_family(self.model, self.params, warn=False)  # set_params may have changed them
        kw["max_length"] = max_length
        vocab, pad = (tok.vocab_size, tok.pad_id) if tok is not None else (self.vocab_size, 0)
        return ModelConfig(vocab_size=vocab, num_labels=num_labels, arch=self.model, pad_id=pad,
                           **kw)  # fmt: skip

    def _check_init(self) -> None:
        """An `init` that fine-tuning could not start from as asked (missing, not an encoder,
        another shape or model, a deeper freeze): said before the data is read, not after."""
        if self.init is not None:
            from .pretrain import check_init

            check_init(self.init, self.model, self._params(), self.train_config().freeze)

    def _check_tokenizer(
        self, resume: bool, checkpoint_dir: str | os.PathLike | None = None
    ) -> None:
        """A tokenizer file or folder that is missing, broken or unusable: said before the data
        is read (minutes on large data), not after. A run resumed from a checkpoint reuses its
        tokenizer and an `init` brings its own, so neither reads the option; `resume` with no
        checkpoint to continue from starts afresh, and does (it went unchecked until then)."""
        if (self.init is None and not _resumes(checkpoint_dir, resume)
                and not is_learnt_kind(self.tokenizer)):  # fmt: skip
            load_tokenizer(self.tokenizer).check_usable(self.tokenizer)

    def _fit_tokenizer(
        self, texts: Sequence[str], checkpoint_dir, resume: bool, progress: bool = False
    ) -> TextTokenizer:
        # A resumed run must reuse the exact tokenizer of the run it continues: the checkpoint's
        # weights are indexed by its ids (and WordPiece training is not deterministic across
        # processes: huggingface/tokenizers#1794).
        # (its callers have already refused a folder of an earlier run's checkpoints)
        saved = Path(checkpoint_dir) / "tokenizer.json" if checkpoint_dir is not None else None
        if _resumes(checkpoint_dir, resume):
            return load_tokenizer(saved)
        if is_learnt_kind(self.tokenizer):
            if self.verbose:  # a minute or more on a million texts: say what the wait is
                print(f"tokenizer: learning a {self.vocab_size:,}-token {self.tokenizer} "
                      f"vocabulary from {len(texts):,} texts", file=sys.stderr)  # fmt: skip
            tok = train_tokenizer(texts, vocab_size=int(self.vocab_size), kind=self.tokenizer,
                                  progress=progress)  # fmt: skip
            if self.verbose and tok.vocab_size != self.vocab_size:  # config.json shows both
                print(f"tokenizer: {tok.vocab_size:,} tokens learned (the texts hold fewer "
                      "subwords than asked for, or BPE's 256 byte tokens come on top)",
                      file=sys.stderr)  # fmt: skip
        else:
            # (refused if unusable by `_check_tokenizer`, which every caller runs first, on
            # every rank, before the data is read)
            tok = load_tokenizer(self.tokenizer).with_pad(self.tokenizer)
            if self.verbose and self.vocab_size != 16000:  # asked for, and not used: said
                print(f"tokenizer: {self.tokenizer} ({tok.vocab_size:,} tokens); vocab size "
                      f"{self.vocab_size:,} ignored", file=sys.stderr)  # fmt: skip
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved, tok.to_str())
        return tok

    # ---- learning ------------------------------------------------------------------------
    @keeps_caller_rng
    @holds_checkpoints
    def fit(
        self,
        train: Data,
        y: Data | Sequence | None = None,
        valid: Data | None = None,
        *,
        run_dir: str | os.PathLike | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        dist: DistContext | None = None,
        progress: bool | None = None,
    ) -> TextClassifier:
        """Learn tokenizer, labels and weights. Without `valid`, a stratified `valid_fraction`
        of `train` is held out (deterministic in `seed`) for early stopping and keep-best.
        `fit(texts, labels)` (scikit-learn's `fit(X, y)`) is `fit((texts, labels))`, and
        `fit(texts, labels, valid=...)` takes validation data beside them; with a data source
        (a path, a `(texts, labels)` pair), the second argument is `valid`: `fit(train, valid)`.
        `progress=False` hides the progress bars but, with `verbose`, keeps the messages
        (held-out size, each validation, early stopping); default: as `verbose`.

        `dist` (see `slimtext.train.distributed.init_distributed`) trains data-parallel; every
        rank calls `fit` with the same data, and rank 0 holds the result afterwards."""
        if valid is None:
            train, valid = _xy(train, y)
        elif y is not None:
            train, rest = _xy(train, y)
            if rest is not None:  # y was not the labels of texts: a second validation set
                raise TypeError("fit(train, valid, valid=...): validation data given twice")
        cfg = self.train_config()
        self._check_init()
        if self.init is None:  # the shape checked now, not after minutes of tokenizer learning
            probe = self._model_config(None, 2, cfg.max_length)
            if (n := frozen_blocks(cfg.freeze)) is not None and n > probe.num_layers:
                raise ValueError(f"freeze={cfg.freeze!r}: the model has {probe.num_layers} blocks")
        self._check_tokenizer(resume, checkpoint_dir)
        bars = self.verbose if progress is None else (progress and self.verbose)
        # Labels given in memory come back as given (`predict`, `classes_`: ints stay ints, as
        # in scikit-learn); the model directory stores their text, and these beside it.
        train, given = _given_labels(train)
        train_ds = as_dataset(train)
        if train_ds.labels is None:
            raise DataError(f"{train_ds.source}: training data has no labels")
        # a class_weight label the data lacks (a typo): said now, not after the tokenizer is
        # learnt and every text encoded (minutes on large data)
        check_unknown_weight_labels(cfg.class_weight, train_ds.label_set())
        if valid is None and self.valid_fraction == 0:  # train on everything, keep the last
            if cfg.patience is not None:  # it would never stop, without a word
                raise ValueError("patience (early stopping) needs validation data: give "
                                 "--valid (valid=) or --valid-fraction above 0 "
                                 "(valid_fraction=)")  # fmt: skip
            valid_ds = TextDataset([], [], source="<no validation split>")
        elif valid is None:
            train_ds, valid_ds = stratified_split(
                train_ds, float(self.valid_fraction), seed=cfg.seed
            )
        else:
            valid_ds = as_dataset(valid)
            if valid_ds.labels is None:  # else no keep-best, no early stopping, and no word
                raise DataError(f"{valid_ds.source}: validation data has no labels")
            check_labels_seen(train_ds, valid_ds)
        # Before a process group exists: every rank refuses alike, none waits on the others.
        check_fresh_start(checkpoint_dir, resume)
        # The device and strategy asked for (CUDA, or a clear error), or torchrun's process group.
        ctx = dist or init_distributed(cfg.strategy, cfg.device)
        if ctx.is_main:  # a finished run's checkpoints give way to this one, as in the CLI
            clear_finished(checkpoint_dir, lambda msg: self.verbose and print(msg, file=sys.stderr))
        barrier(ctx)  # the other ranks look for checkpoints only once they are cleared
        if self.init is not None and self.verbose and ctx.is_main:
            # a tokenizer choice that is not used must not pass unseen
            unused = self.tokenizer != "bpe" or self.vocab_size != 16000
            print(
                f"init: {self.init} (its tokenizer and shape"
                + (f"; tokenizer {self.tokenizer!r}, vocab size {self.vocab_size} ignored)"
                   if unused else ")"),
                file=sys.stderr,
            )  # fmt: skip
        if valid is None and self.valid_fraction and ctx.is_main:
            _warn_if_split_is_lopsided(train_ds, valid_ds, self.valid_fraction)
        if valid is None and self.valid_fraction and self.verbose and ctx.is_main:
            print(
                f"valid: {len(valid_ds):,} rows held out of the training data (stratified "
                f"{self.valid_fraction:g}); training on the other {len(train_ds):,}",
                file=sys.stderr,
            )
        src = None
        if self.init is not None:
            from .pretrain import load_init

            if self.model != "transformer":
                raise ValueError(f"init= needs model='transformer', not {self.model!r}")
            src, tok = load_init(self.init)  # every rank reads the same files
            if cfg.max_length > src.config.max_length:  # no positions beyond the pretrained ones
                if "max_length" in self.params:  # asked for, not the default: say it is cut
                    warnings.warn(
                        f"max_length {cfg.max_length} capped to {src.config.max_length}, the "
                        f"positions {self.init} was pretrained with",
                        stacklevel=2,
                    )
                cfg = replace(cfg, max_length=src.config.max_length)
            elif "max_length" not in self.params:  # not asked for: every position it learnt
                cfg = replace(cfg, max_length=src.config.max_length)
        elif ctx.is_main:  # rank 0 learns the tokenizer and writes it; the others receive it
            try:
                tok = self._fit_tokenizer(train_ds.texts, checkpoint_dir, resume, bars).to_str()
            except Exception as e:
                # The others wait for the tokenizer: send them the error, not a closed socket.
                broadcast_object(ctx, RuntimeError(f"rank 0 could not make the tokenizer: {e}"))
                raise
        else:
            tok = None
        if src is None:
            got = broadcast_object(ctx, tok)
            if isinstance(got, Exception):
                raise DistributedError(str(got))
            tok = TextTokenizer(Tokenizer.from_str(got))
        labels = train_ds.label_set()
        if given:  # in the order of the labels as given, scikit-learn's (np.unique's) order
            labels.sort(key=lambda lab: given[lab])
        if len(labels) < 2:
            raise DataError(f"{train_ds.source}: need at least 2 classes, found {labels}")
        if src is not None:
            from .pretrain import init_config

            config = init_config(src.config, len(labels), self._params())
        else:
            config = self._model_config(tok, len(labels), cfg.max_length)
        check_same_config(ctx, {
            "model": config.to_dict(), "train": cfg.to_dict(), "labels": labels,
            "n_train": len(train_ds), "n_valid": len(valid_ds),
            "data": _fingerprint(train_ds.texts), "world_size": ctx.world_size,
        })  # fmt: skip
        torch.manual_seed(cfg.seed)  # same seed -> same initial weights, whatever ran before
        if src is not None:
            from .pretrain import init_classifier

            model = init_classifier(src, config)
        else:
            model = build_model(config)
        result = fit(
            model,
            self._encode(
                tok,
                train_ds,
                labels,
                cfg,
                bars and ctx.is_main,
                say=self.verbose and ctx.is_main,
                limit=src.config.max_length if src is not None else None,
            ),  # fmt: skip
            self._encode(tok, valid_ds, labels, cfg, bars and ctx.is_main)
            if len(valid_ds)
            else None,
            cfg,
            label_names=labels,
            pad_id=tok.pad_id,
            run_dir=run_dir,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=bars,
            messages=self.verbose,
            dist=ctx,
            # a resumed run reuses the checkpoint's tokenizer: other tokenizer options would be
            # ignored without a word
            resume_key={"init": str(self.init)}
            if self.init is not None
            else {"tokenizer": str(self.tokenizer), "vocab_size": int(self.vocab_size)},
        )
        if ctx.distributed:
            # Gather the (possibly sharded) weights into one plain model on rank 0.
            state = full_state_dict(model, ctx)
            if not ctx.is_main:
                self.result_ = result
                return self
            model = build_model(config)
            model.load_state_dict(state)
        values = [given[lab] for lab in labels] if given else None
        if values == labels:  # text as stored: nothing to keep beside it
            values = None
        model_dir = ModelDir(
            model.cpu().eval(), config, tok, labels, cfg.max_length, long_text=cfg.long_text,
            label_values=values,
        )  # fmt: skip
        # Predict where training ran: a model trained on the GPU also scores its test set there.
        predictor = Predictor(model_dir, device=str(ctx.device))
        metrics: dict = {"training": result.summary()}
        # Where the rows came from: the model card and metrics.json named no data at all, so a
        # directory did not say what it was trained on, nor which data its valid figures are of.
        held_out = valid is None and bool(self.valid_fraction)
        metrics["training"]["data"] = {
            "train": {"source": str(train_ds.source), "rows": len(train_ds)},
            "valid": {"source": str(valid_ds.source), "rows": len(valid_ds),
                      **({"held_out_fraction": float(self.valid_fraction)} if held_out else {})},
        }  # fmt: skip
        if result.best:
            metrics["valid"] = self._valid_metrics(result, cfg, predictor, valid_ds, bars)
        # the weights the metrics describe (save drops them once the model is changed)
        model_dir.read_state = weights_state(model_dir.model)
        # Only now, all at once: a fit that fails or is interrupted (Ctrl-C in that last
        # evaluation too) leaves the last model, its metrics and recipe as they were.
        self.model_dir_ = model_dir
        self.result_: TrainResult = result
        self.metrics_: dict = metrics
        self.run_dir_ = Path(run_dir) if run_dir is not None else None
        self._train_config = cfg
        # the recipe saved, whatever set_params does next; a relative tokenizer or init path is
        # read now, against this working directory, not the one save() happens to run in
        fitted = self.get_params()
        fitted["tokenizer"] = _tokenizer_source(fitted["tokenizer"])
        if fitted["init"] is not None:
            from .pretrain import init_source

            fitted["init"] = init_source(fitted["init"])
        self._fitted_params = fitted
        self._predictor = predictor
        mark_finished(checkpoint_dir, "TextClassifier.fit")  # the next fit there starts afresh
        return self

    @staticmethod
    def _valid_metrics(result: TrainResult, cfg: TrainConfig, predictor: Predictor,
                       valid_ds: TextDataset, progress: bool) -> dict:  # fmt: skip
        """metrics.json's `valid`: the saved model's own report on the validation data, as
        `slimtext eval` prints it, with the figures training saw (`during_training`) when they
        may differ from it."""
        if cfg.keep_best:
            during = {k: result.best[k] for k in ("accuracy", "macro_f1", "loss")}
            during["epoch"] = result.best_epoch
        else:  # the last weights are the ones kept: their figures, not the best epoch's
            last = result.history[-1]
            during = {"accuracy": last["valid_accuracy"], "macro_f1": last["valid_macro_f1"],
                      "loss": last["valid_loss"], "epoch": last["epoch"]}  # fmt: skip
        # Those figures are the saved model's only when training validated it as eval does:
        # the best epoch's, in fp32 (bf16/fp16 autocast may flip a few predictions) and with
        # an unweighted loss (with class weights, training's is the weighted objective).
        if cfg.keep_best and result.precision == "fp32" and cfg.class_weight is None:
            return result.best
        during["precision"] = result.precision
        if cfg.class_weight is not None:  # its loss is weighted so: said beside it
            during["class_weight"] = cfg.class_weight
        return {**_evaluate(predictor, valid_ds, progress=progress), "during_training": during}

    @staticmethod
    def _encode(
        tok: TextTokenizer, ds: TextDataset, labels: list[str], cfg: TrainConfig,
        progress: bool = False, say: bool = False, limit: int | None = None,
    ) -> Encoded:  # fmt: skip
        lengths: list[int] = []
        ids, owner = tok.encode_windows(ds.texts, cfg.max_length, cfg.long_text, progress,
                                        lengths)  # fmt: skip
        note = long_text_note(lengths, cfg.max_length, cfg.long_text, len(ids), limit)
        if say and note:
            print(f"note: {note}", file=sys.stderr)
        index = {lab: i for i, lab in enumerate(labels)}
        y = None if ds.labels is None else [index[ds.labels[i]] for i in owner]
        return Encoded(ids, y, owner if len(owner) != len(ds) else None)

    # ---- using ---------------------------------------------------------------------------
    def _check_fitted(self) -> Predictor:
        if not hasattr(self, "_predictor"):
            raise NotFittedError("this TextClassifier is not fitted yet: call fit() or load()")
        return self._predictor

    @property
    def classes_(self) -> np.ndarray:
        """The classes, as given to fit, in the order of `predict_proba`'s columns."""
        if not hasattr(self, "_predictor"):  # as scikit-learn: no classes_ before fit
            raise AttributeError("classes_: this TextClassifier is not fitted yet")
        return self._predictor.classes_

    def predict(self, texts: Sequence[str]) -> list:
        """Labels as given to fit: text, or integers (floats...) when fitted on those."""
        return self._check_fitted().predict(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) probabilities, columns in the order of `classes_`."""
        return self._check_fitted().predict_proba(texts)

    def evaluate(self, data: Data, progress: bool = False) -> dict:
        """Full report: accuracy, macro_f1, n, per_class, confusion_matrix, loss. Read in
        chunks (memory bounded by a chunk, not the data); `progress`: a bar on stderr."""
        return _evaluate(self._check_fitted(), data, progress)

    def score(self, data: Data, y: Sequence | None = None) -> float:
        """Accuracy on labelled data; `score(texts, labels)` as scikit-learn's `score(X, y)`."""
        return self.evaluate(data if y is None else (data, y))["accuracy"]

    # ---- scikit-learn's estimator protocol: clone, GridSearchCV, cross_val_score, joblib ----
    _estimator_type = "classifier"  # scikit-learn < 1.6

    def get_params(self, deep: bool = True) -> dict:
        """Every constructor argument, as scikit-learn's `clone` and `GridSearchCV` read them."""
        return {"model": self.model, "tokenizer": self.tokenizer, "vocab_size": self.vocab_size,
                "valid_fraction": self.valid_fraction, "verbose": self.verbose,
                "init": self.init, **self.params}  # fmt: skip

    def set_params(self, **params) -> TextClassifier:
        """New constructor arguments, checked as the constructor checks them; a fitted model
        stays until the next fit."""
        self.__init__(**{**self.get_params(), **params})
        return self

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so it is installed then: not a slimtext dependency.
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        inputs = InputTags(one_d_array=True, two_d_array=False, string=True)
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), non_deterministic=True,
                    input_tags=inputs)  # fmt: skip

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __getstate__(self) -> dict:
        # The predictor holds closures (and compiled graphs or ONNX sessions): it is rebuilt on
        # unpickling from the model, which pickles as any torch module does.
        state = self.__dict__.copy()
        p = state.pop("_predictor", None)
        if p is not None:  # as it was made, on the backend `auto` chose: it predicts alike
            state["_predictor_args"] = {**p.made_with, "backend": p.backend}
        return state

    def __setstate__(self, state: dict) -> None:
        args = state.pop("_predictor_args", None)
        self.__dict__.update(state)
        if args is not None:
            self._predictor = Predictor(self.model_dir_, **args)

    def save(self, path: str | os.PathLike, metrics: dict | None = None) -> Path:
        """Write the model directory (atomically)."""
        md = self._check_fitted().model_dir
        # a loaded classifier's training log and curve, from the directory it was read from
        extra = training_records(md)
        if getattr(self, "run_dir_", None) is not None:
            extra = {
                "metrics.jsonl": self.run_dir_ / "metrics.jsonl",
                "training_curve.png": self.run_dir_ / "training_curve.png",
                "tensorboard": self.run_dir_ / "tensorboard",  # when tensorboard is installed
            }
        own = dict(getattr(self, "metrics_", {}))
        if md.read_state is not None and not md.weights_as_read():
            # Pruned, quantised or edited since it was trained or loaded: its validation and
            # test figures were the earlier model's. Kept apart, so no model card claims them.
            earlier = {k: own.pop(k) for k in ("valid", "test") if k in own}
            if earlier:
                own["before_changes_in_memory"] = earlier
        return save_model_dir(
            path,
            md.model,
            # compression steps that change the shape (drop_layers_, a distilled student)
            # update the model's own config; md.config is the one it was read with
            getattr(md.model, "config", md.config),
            md.tokenizer,
            md.labels,
            max_length=md.max_length,
            long_text=md.long_text,
            train_config=self._saved_train_config(),
            metrics={**own, **(metrics or {})},
            # the steps applied to the model, also those applied after it was loaded
            compression=getattr(md.model, "slimtext_compression", md.meta.get("compression")),
            extra_files=extra,
        )

    def _saved_train_config(self) -> dict:
        # The recipe the model was fitted (or loaded) with: set_params since then changes the
        # next fit, not what this model's config.json says it was trained with.
        fitted = getattr(self, "_fitted_params", None) or self.get_params()
        cfg = getattr(self, "_train_config", None) or type(self)(**fitted).train_config()
        d = cfg.to_dict()
        # the rest of the recipe, so that TextClassifier.load(...).fit(...) trains it again
        # the vocabulary size asked for when one was learnt, else the one it came with
        init, tokenizer = fitted["init"], fitted["tokenizer"]
        learnt = init is None and is_learnt_kind(tokenizer)
        vocab = fitted["vocab_size"] if learnt else self._check_fitted().model_dir.config.vocab_size
        d.update(tokenizer=_tokenizer_source(tokenizer), vocab_size=int(vocab),
                 valid_fraction=float(fitted["valid_fraction"]))  # fmt: skip
        if init is not None:
            from .pretrain import init_source

            d["init"] = init_source(init)
        values = self._check_fitted().model_dir.label_values
        if values is not None:
            d["label_values"] = values
        return d

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "torch", **options) -> TextClassifier:
        """A fitted classifier from a model directory, predicting on `backend` (torch |
        torch-bf16 | compile | compile-bf16 | onnxruntime | onnxruntime-int8 | auto; see
        `slimtext.infer.load`). Fitting it again trains the saved recipe afresh."""
        md = read_model_dir(path)
        train = md.meta.get("train", {})
        # The whole recipe, so that fitting the loaded classifier again trains the same kind of
        # model: its shape from config.json, the training options, the tokenizer and init.
        shape = {k: getattr(md.config, k) for k in _MODEL_KEYS - {"version"}}
        kind = "wordpiece" if type(md.tokenizer.backend.model).__name__ == "WordPiece" else "bpe"
        clf = cls(
            model=md.config.arch,
            verbose=False,
            tokenizer=train.get("tokenizer", kind),
            vocab_size=train.get("vocab_size", md.config.vocab_size),
            valid_fraction=train.get("valid_fraction", 0.1),
            init=train.get("init"),
            **{**shape, **_known(train)},
        )
        clf.model_dir_ = md
        clf._fitted_params = clf.get_params()
        clf.metrics_ = md.meta.get("metrics", {})
        clf._predictor = Predictor(md, backend=backend, **options)
        return clf


def _evaluate(p: Predictor, data: Data, progress: bool = False) -> dict:
    """`TextClassifier.evaluate` through predictor `p`: the report of its model on `data`."""
    ds = as_dataset(data)
    if ds.labels is None:
        raise DataError(f"{ds.source}: evaluation data has no labels")
    if not len(ds):
        raise DataError(f"{ds.source}: no examples to evaluate")
    md = p.model_dir
    # The model's label list stands in for its training data: any other label is an error.
    known = TextDataset(list(md.labels), list(md.labels), source="labels.json")
    check_labels_seen(known, ds, known_as="the labels this model was trained on")
    # Through the predictor, so the report measures the backend that will serve the model.
    index = {lab: i for i, lab in enumerate(md.labels)}
    y = torch.tensor([index[lab] for lab in ds.labels], dtype=torch.long)
    pred: list[int] = []
    loss = 0.0
    for start, texts in in_chunks(ds.texts, _EVAL_CHUNK, progress, "evaluating"):
        logits = p.logits(texts)
        pred += logits.argmax(-1).tolist()
        loss += float(F.cross_entropy(logits, y[start : start + len(texts)], reduction="sum"))
    report = classification_report(y.tolist(), pred, md.labels)
    report["loss"] = loss / len(ds)
    return report


def _valid_params() -> set[str]:
    # `version` is config.json's format number, not a choice
    own = {"model", "tokenizer", "vocab_size", "valid_fraction", "verbose", "init"}
    return (own | _MODEL_KEYS | _TRAIN_KEYS) - {"version"}


def _warn_if_split_is_lopsided(train: TextDataset, valid: TextDataset, fraction: float) -> None:
    """The stratified split holds out at least one row of every class with two or more, so
    with many small classes far more than `fraction` goes (a third of 2,000 classes of 1-3
    rows, leaving 667 classes one training row each): said, not silently done."""
    total = len(train) + len(valid)
    share = len(valid) / max(1, total)
    # a few rows over (4 large classes at 0.1%: 4 rows, 0.2%) is no news
    if share <= 1.5 * fraction or len(valid) - fraction * total <= 5:
        return
    counts = Counter(train.labels or [])
    held = set(valid.labels or [])
    single = sum(1 for lab, n in counts.items() if n == 1 and lab in held)
    left = f" ({single:,} are left with one training row)" if single else ""
    warnings.warn(
        f"the validation split holds out {share * 100:.3g}% of the rows, not "
        f"{fraction * 100:g}%: each class with two or more rows gives at least one, and many "
        f"classes are small{left}. "
        "Give validation data (--valid), or valid_fraction=0 (--valid-fraction 0) to train on "
        "everything",
        stacklevel=3,
    )


def long_text_note(
    lengths: list[int], max_length: int, long_text: str, windows: int, limit: int | None = None
) -> str:
    """What happens to the training texts longer than `max_length` tokens, when they are 5% or
    more of them: cut silently, a long-document task trains on a fraction of each text (a new
    user's IMDB run: 0.78 where reading whole reviews gives 0.87). `limit`: the positions of an
    `init` encoder, beyond which no --max-length reaches."""
    long = sum(n > max_length for n in lengths)
    if not lengths or long < 0.05 * len(lengths):
        return ""
    head = (
        f"{long / len(lengths):.0%} of the {len(lengths):,} training texts are longer than "
        f"max_length {max_length} tokens (the longest: {max(lengths):,})"
    )
    if long_text == "chunks":
        return f"{head}; each is read whole, as several windows ({windows:,} windows in all)"
    read = (
        f"only their first {max_length} tokens are read"
        if long_text == "truncate"
        else f"each is read as its start and end, {max_length} tokens in all"
    )
    larger = (
        f"the encoder's positions stop at {limit}"
        if limit is not None and max_length >= limit
        else "a larger --max-length reads more of each"
    )
    return f"{head}: {read}. --long-text chunks reads them whole (slower to train); {larger}"


def _are_texts(x) -> bool:
    """Whether `x` is texts (scikit-learn's X) rather than a data source. A tuple of strings
    is texts (`X, y = zip(*rows)`); a (texts, labels) pair holds a list, not a string, first."""
    if isinstance(x, (str, os.PathLike, TextDataset)):
        return False
    if isinstance(x, tuple):
        return bool(x) and all(isinstance(t, str) for t in x)
    return hasattr(x, "__iter__")


def _xy(train, valid):
    """scikit-learn's `fit(X, y)`: texts (a list, tuple of strings, array, Series or
    generator) and their labels become `((X, y), None)`; anything else is left as it is."""
    if valid is None or not _are_texts(train) or not hasattr(valid, "__iter__"):
        return train, valid
    pair = isinstance(valid, tuple) and len(valid) == 2 and _are_texts(valid[0])
    if pair or isinstance(valid, (str, os.PathLike, TextDataset)):
        return train, valid  # texts with validation data, no labels: as_dataset says so
    # generators too, as predict takes them (they were refused with a message suggesting
    # exactly the call that had been made)
    return (train if hasattr(train, "__len__") else list(train), valid), None


def _given_labels(data: Data) -> tuple[Data, dict | None]:
    """`data`, its in-memory labels read once (a generator too), and each class's label as the
    caller gave it, keyed by the text it is stored as (" a " -> "a", 1.0 -> "1"). Two spellings
    of one stored class (1 and "1", "a" and "a ") are an error, not a silent merge."""
    if not (isinstance(data, tuple) and len(data) == 2) or isinstance(data[1], str):
        return data, None
    ys = [y.item() if isinstance(y, np.generic) else y for y in _label_list(data[1])]
    given: dict = {}
    for y in ys:
        key, _ = label_to_str(y)
        if key is None:
            continue  # as_dataset names it
        seen = given.setdefault(key, y)
        if seen != y or isinstance(seen, str) != isinstance(y, str):
            raise DataError(
                f"labels {seen!r} and {y!r} would be one class (stored as {key!r}); "
                "give each class one spelling"
            )
    kinds = {isinstance(v, str) for v in given.values()}
    if len(kinds) > 1:  # as scikit-learn refuses them: they have no order, and 0 != "0"
        text = next(v for v in given.values() if isinstance(v, str))
        number = next(v for v in given.values() if not isinstance(v, str))
        raise DataError(
            f"labels mix text and numbers ({number!r} and {text!r}): give all as text or all "
            "as numbers"
        )
    return (data[0], ys), given


def _fingerprint(texts: Sequence[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _resumes(checkpoint_dir: str | os.PathLike | None, resume: bool) -> bool:
    """Whether a fit with `resume` continues from checkpoint_dir's checkpoints, reusing the
    tokenizer beside them. Only with a checkpoint to continue: a run killed before its first one
    left only the tokenizer, and reusing it ignored a changed --tokenizer/--vocab-size (or
    data); and not a finished run's, which the next fit clears (`clear_finished`)."""
    if not resume or checkpoint_dir is None:
        return False
    folder = Path(checkpoint_dir)
    return ((folder / "tokenizer.json").is_file() and not (folder / FINISHED).is_file()
            and bool(list_checkpoints(folder)))  # fmt: skip


def _tokenizer_source(tokenizer: str | os.PathLike) -> str:
    """`tokenizer` as config.json records it: a kind to learn as it is, a file or folder as an
    absolute path, as `init` is (a relative "tok.json" named no file, or another one, once
    `TextClassifier.load(dir).fit(...)` ran from another folder)."""
    if is_learnt_kind(tokenizer):
        return str(tokenizer)
    p = Path(tokenizer).expanduser()
    return str(p.resolve()) if p.exists() else str(tokenizer)


def _known(train_cfg: dict) -> dict:
    return {k: v for k, v in train_cfg.items() if k in _TRAIN_KEYS}
