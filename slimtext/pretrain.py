"""Self-pretraining (masked language modelling) and pretrained encoders for fine-tuning.

    pretrain("corpus.txt", "enc", max_steps=2000)           # MLM on unlabelled text -> model dir
    TextClassifier(init="enc").fit("train.csv")              # fine-tune from it (or init="hf:DIR")

Pretraining is BERT's masked-LM objective (Devlin et al. 2019) on the `TransformerClassifier`
encoder: 15% of the real, non-special tokens are selected; of those 80% become [MASK], 10% a
random token and 10% stay unchanged; the model predicts the original token at the selected
positions through an MLM head (dense + GELU + LayerNorm + a decoder tied to the input
embeddings). With `whole_word=True` words are selected instead of tokens and all the pieces of
a selected word are predicted together (BERT's whole-word-masking release). Masks are drawn
anew every time a text is seen (dynamic masking, RoBERTa), inside
`MLMModel.forward` with torch's global RNG, so it runs through the ordinary `fit` loop (mixed
precision, length buckets, accumulation, checkpoints) and a checkpoint's saved RNG state makes a
resumed run draw the same masks. No next-sentence prediction: the pooler stays at its
initialisation and is learned during fine-tuning.

`pack=True` concatenates short documents (each `[CLS] ... [SEP]`) into rows of up to
`max_length` tokens, so batches hold little padding. Document boundaries are recovered from the
[CLS] tokens inside the model: attention is block-diagonal (a token never attends to another
document) and positions restart at 0 in each document, so each document is encoded exactly as
it would be alone.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data.batching import Batch
from .models import ModelConfig, TransformerClassifier, build_model
from .tokenizer import CLS, MASK, PAD, SEP, TextTokenizer, TokenRows
from .train import Encoded, TrainResult, fit
from .train.checkpoint import (
    check_fresh_start,
    clear_finished,
    holds_checkpoints,
    mark_finished,
)
from .train.distributed import DistContext, barrier, init_distributed
from .train.trainer import TrainConfig, keeps_caller_rng

IGNORE = -100  # label of a position that is not predicted (F.cross_entropy's ignore_index)
PRETRAIN_LABELS = ["pretrain-0", "pretrain-1"]  # the placeholder head of a pretrained model dir
# Shape of the encoder: fixed by the init model when fine-tuning from one.
# (Pooling is not one: a masked-LM encoder never trained its [CLS] pooler, so fine-tuning it
# with masked-mean pooling over the tokens MLM did train is a choice the user may make.)
SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "ffn_size", "attention_size",
              "share_layers", "layer_norm_eps", "pad_id", "embeddings",
              "ngram_buckets")  # fmt: skip


def special_ids(tok: TextTokenizer) -> list[int]:
    """Ids never selected for masking: padding, [CLS], [SEP], [MASK] (and RoBERTa spellings)."""
    names = (PAD, CLS, SEP, MASK, "<pad>", "<s>", "</s>", "<mask>")
    return sorted({i for n in names if (i := tok.backend.token_to_id(n)) is not None})


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_id: int,
    special_ids: list[int],
    vocab_size: int,
    mask_prob: float = 0.15,
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 corruption: (corrupted ids, labels with IGNORE where not selected).

    Draws from torch's global RNG on `input_ids.device`, so masks are fresh at every call and
    reproducible from a saved RNG state. Padding and special tokens are never selected; random
    replacements are drawn from the non-special vocabulary. With `word_starts` (a bool per
    vocabulary id, from `word_start_table`) whole words are selected: every sub-word of a word
    shares the draw of the word's first token, so a word is predicted from its context, never
    from its own other pieces; the 80/10/10 choice stays per token, as in BERT's release."""
    specials = torch.tensor(special_ids, device=input_ids.device, dtype=input_ids.dtype)
    can = attention_mask.bool() & ~torch.isin(input_ids, specials)
    draw = torch.rand(input_ids.shape, device=input_ids.device)
    if word_starts is not None:
        starts = word_starts.to(input_ids.device)[input_ids] | ~can  # specials end a word
        ar = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        first = torch.where(starts, ar, torch.zeros_like(ar)).cummax(1).values
        draw = draw.gather(1, first)  # each token takes its word's first token's draw
    selected = can & (draw < mask_prob)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    u = torch.rand(input_ids.shape, device=input_ids.device)
    to_mask = selected & (u < 0.8)
    to_random = selected & (u >= 0.8) & (u < 0.9)  # the last 10% keep their token
    keep = torch.ones(vocab_size, dtype=torch.bool, device=input_ids.device)
    keep[specials[specials < vocab_size]] = False
    candidates = keep.nonzero().squeeze(1)
    pick = torch.randint(len(candidates), input_ids.shape, device=input_ids.device)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, candidates[pick], out)
    return out, labels


def word_start_table(tok: TextTokenizer) -> torch.Tensor:
    """A bool per vocabulary id: does this token begin a word? Read from the vocabulary's own
    marks: WordPiece continuations start with its prefix ("##"); byte-level BPE and
    SentencePiece-style (Metaspace) tokens that begin a word carry "Ġ" / "▁". Punctuation
    pre-split from a word without a space counts as part of it (as in Hugging Face's
    whole-word collator). Raises ValueError for a vocabulary without such marks."""
    spec = json.loads(tok.backend.to_str())
    model = spec.get("model") or {}
    vocab = tok.backend.get_vocab()
    table = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    if model.get("type") == "WordPiece":
        prefix = model.get("continuing_subword_prefix") or "##"
        for t, i in vocab.items():
            table[i] = not t.startswith(prefix)
        return table
    marks = {"ByteLevel": "\u0120", "Metaspace": "\u2581"}
    kinds = _pre_tokenizer_types(spec.get("pre_tokenizer"))
    mark = next((marks[k] for k in kinds if k in marks), None)
    if mark is None:
        raise ValueError(
            "whole-word masking needs a WordPiece ('##') or byte-level / Metaspace BPE "
            f"vocabulary; this tokenizer is {model.get('type')} with pre-tokenizers {kinds}"
        )
    for t, i in vocab.items():
        table[i] = t.startswith(mark)
    return table


def _pre_tokenizer_types(pt) -> list[str]:
    if not pt:
        return []
    return [
        pt.get("type"),
        *(t for p in pt.get("pretokenizers", []) for t in _pre_tokenizer_types(p)),
    ]


_PACK_NEEDS_STARTS = (
    "--pack needs each document to start with [CLS] (or <s>), and this tokenizer's template "
    "adds none: give a tokenizer that wraps texts in [CLS] ... [SEP], or drop --pack"
)


def document_start_id(tok: TextTokenizer) -> int | None:
    """The id of the token a template opens each text with: BERT's [CLS], RoBERTa's <s>."""
    return next((i for n in (CLS, "<s>") if (i := tok.backend.token_to_id(n)) is not None), None)


def check_mlm_tokenizer(
    tok: TextTokenizer, *, pack: bool = False, whole_word: bool = False
) -> None:
    """ValueError unless masked-LM pretraining can use `tok`: it needs a [MASK] (<mask>) token;
    `pack` finds documents by the [CLS] (<s>) its template opens every text with; `whole_word`
    needs a vocabulary that marks where words start (`word_start_table`)."""
    if tok.mask_id is None:
        raise ValueError("the tokenizer has no [MASK] token: it cannot be used for MLM")
    if pack:
        start = document_start_id(tok)
        if start is None or tok.encode(["a"], 8)[0][:1] != [start]:
            raise ValueError(_PACK_NEEDS_STARTS)
    if whole_word:
        word_start_table(tok)


class MLMHead(nn.Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then a decoder whose weight is the
    token embedding matrix (tied: passed in, not stored, so the state dict has no shared
    tensors) plus an own output bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, h: torch.Tensor, tok_embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(h))), tok_embedding, self.bias)  # (N, V)


def pack_documents(ids: Sequence[Sequence[int]], max_length: int) -> TokenRows:
    """Greedy, order-preserving packing of token id lists into rows of <= `max_length`."""

    def rows():
        row: list[int] = []
        for doc in ids:
            if row and len(row) + len(doc) > max_length:
                yield row
                row = []
            row.extend(doc)
        if row:
            yield row

    return TokenRows.from_lists(rows())


class MLMModel(nn.Module):
    """The encoder of a `TransformerClassifier` (its modules, shared, not copied) + an MLM head.

    `forward(input_ids, attention_mask)` corrupts the batch itself, keeps the labels in
    `self.labels` and returns logits (N, V) of the N selected positions only (the decoder over
    the vocabulary is the costly part, so the other 85% are never decoded). The trainer's
    contract is `loss_fn(logits, batch)`, and the batch has no MLM labels, so `mlm_loss` reads
    them back from the model: a side channel, but it keeps one training loop for everything.
    The classifier's pooler and head are not part of this module, so DDP never sees unused
    parameters. `packed=True`: rows hold several documents, each starting with [CLS] (see the
    module docstring)."""

    def __init__(
        self,
        classifier: TransformerClassifier,
        tok: TextTokenizer,
        mask_prob: float,
        packed: bool = False,
        whole_word: bool = False,
    ):
        super().__init__()
        check_mlm_tokenizer(tok, pack=packed)
        self.embeddings = classifier.embeddings
        self.encoder = classifier.encoder
        self.head = MLMHead(classifier.config)
        self.mask_id = tok.mask_id
        self.special_ids = special_ids(tok)
        self.vocab_size = classifier.config.vocab_size
        self.mask_prob = mask_prob
        self.packed = packed
        # Not a buffer: it is derived from the tokenizer and must stay out of the state dict.
        self.word_starts = word_start_table(tok) if whole_word else None
        self.cls_id = document_start_id(tok)
        self.labels: torch.Tensor | None = None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, C); with `packed`, each document attends only to itself."""
        attention_mask = attention_mask.bool()
        if not self.packed:
            return self.encoder(self.embeddings(input_ids), attention_mask)
        T = input_ids.shape[1]
        ar = torch.arange(T, device=input_ids.device).expand_as(input_ids)
        starts = input_ids == self.cls_id
        doc = starts.cumsum(1)  # (B, T) document number of each token
        pos = ar - torch.where(starts, ar, torch.zeros_like(ar)).cummax(1).values
        e = self.embeddings
        pos = pos.clamp_max(e.pos.num_embeddings - 1)  # padding past max_length (see Embeddings)
        x = e.drop(e.norm(e.tok(input_ids) + e.pos(pos)))
        # (B, 1, T, T): same document and a real key. Padding rows share the last document's
        # number, so no query row is fully masked (no NaN).
        mask = ((doc[:, :, None] == doc[:, None, :]) & attention_mask[:, None, :])[:, None]
        return self.encoder(x, mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.word_starts is not None and self.word_starts.device != input_ids.device:
            self.word_starts = self.word_starts.to(input_ids.device)  # once, not every step
        ids, labels = mask_tokens(input_ids, attention_mask, mask_id=self.mask_id,
                                  special_ids=self.special_ids, vocab_size=self.vocab_size,
                                  mask_prob=self.mask_prob,
                                  word_starts=self.word_starts)  # fmt: skip
        h = self.encode(ids, attention_mask)  # (B, T, C)
        selected = labels != IGNORE
        self.labels = labels[selected]  # (N,)
        return self.head(h[selected], self.embeddings.tok.weight)  # (N, V)


def mlm_loss(mlm: MLMModel):
    """`loss_fn(logits, batch)` for `fit`: cross-entropy against the labels `mlm` remembered."""

    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if mlm.labels is None or mlm.labels.numel() == 0:
            return logits.sum() * 0.0  # nothing selected in this batch (very short texts)
        return F.cross_entropy(logits, mlm.labels)

    return loss_fn


@keeps_caller_rng
@holds_checkpoints
def pretrain(
    data,
    out: str | os.PathLike,
    *,
    tokenizer: str = "bpe",
    vocab_size: int = 16000,
    mask_prob: float = 0.15,
    pack: bool = False,
    whole_word: bool = False,
    text_cols: list[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    dist: DistContext | None = None,
    messages: bool | None = None,
    **params,
) -> TrainResult:
    """Masked-LM pretraining of a transformer encoder on unlabelled text; writes a model dir.

    `data`: texts (a list, array, pandas Series or generator), a `TextDataset`
    (`load_data(path, encoding=..., on_bad=...)`), or
    any source `load_data` reads (a .txt file is one document per line; labels, if any, are
    ignored). `whole_word` masks whole words instead of single sub-word tokens (`mask_tokens`).
    `pack` concatenates short documents into rows of `max_length` with block-diagonal attention.
    `params` are `ModelConfig`/`TrainConfig` fields as for `TextClassifier` (pooling defaults to
    "cls", the BERT layout; long_text to "chunks": a document longer than max_length is read
    whole, as several windows, where "truncate" keeps its first max_length tokens only). The
    model dir at `out` holds the encoder with a placeholder 2-label head (use it with
    `TextClassifier(init=out)` / `slimtext train --init`), `mlm_head.safetensors`, and the
    training log and curve. `progress`: the bars; `messages` (default: as `progress`): the lines
    a log keeps (resuming, the tokenizer being learned).

    `dist` (from `init_distributed`, strategy ddp or fsdp) runs the same loop on every rank:
    each rank corrupts its own share of the global batch with its own RNG stream, and rank 0
    learns the tokenizer and writes the model dir."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    from .artifact import save_model_dir
    from .data import DataError, TextDataset, load_data
    from .data.dataset import check_texts
    from .train.distributed import broadcast_object, check_same_config, full_state_dict

    # options first: a bad --threads or --batch-size must not wait for a corpus to be read
    clf = _classifier(tokenizer, vocab_size, mask_prob, progress if messages is None else messages,
                      params)  # fmt: skip
    clf._check_tokenizer(resume, checkpoint_dir)  # a missing --tokenizer file too
    _check_brought_tokenizer(clf, resume, checkpoint_dir, pack, whole_word)
    cfg = clf.train_config()
    if isinstance(data, TextDataset):  # e.g. load_data(path, encoding=..., on_bad="skip")
        texts = list(data.texts)
    elif isinstance(data, (str, os.PathLike)):
        texts = load_data(data, text_cols=text_cols, label_col=None, require_labels=False).texts
    elif hasattr(data, "__iter__"):  # a list, array, pandas Series or generator, as predict()
        texts = check_texts(data)  # a blank or non-string item is an error, as in fit()
    else:
        raise TypeError(
            f"data must be a path or source name, a TextDataset or a list of texts, not "
            f"{type(data).__name__}"
        )
    if not texts:
        raise DataError(f"{data}: no texts to pretrain on")
    check_fresh_start(checkpoint_dir, resume)  # on every rank, before a process group exists
    # The device and strategy asked for (CUDA, or a clear error), or torchrun's process group.
    ctx = dist or init_distributed(cfg.strategy, cfg.device)
    if ctx.distributed and ctx.strategy not in ("ddp", "fsdp"):
        raise ValueError(f"pretrain runs single, ddp or fsdp, not --strategy {ctx.strategy}")
    if ctx.is_main:  # a finished run's checkpoints give way to this one
        clear_finished(checkpoint_dir, lambda msg: clf.verbose and print(msg, file=sys.stderr))
    barrier(ctx)
    # Rank 0 learns (or reloads) the tokenizer; the others receive it, as in TextClassifier.fit.
    if ctx.distributed:
        tok_json = None
        if ctx.is_main:
            tok_json = clf._fit_tokenizer(texts, checkpoint_dir, resume, progress).to_str()
        tok = TextTokenizer(Tokenizer.from_str(broadcast_object(ctx, tok_json)))
    else:
        tok = clf._fit_tokenizer(texts, checkpoint_dir, resume, progress)
    config = clf._model_config(tok, len(PRETRAIN_LABELS), cfg.max_length)
    check_same_config(ctx, {"model": config.to_dict(), "train": cfg.to_dict(), "texts": len(texts),
                            "mask_prob": mask_prob, "pack": pack,
                            "whole_word": whole_word})  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = build_model(config)
    mlm = MLMModel(model, tok, mask_prob, packed=pack, whole_word=whole_word)
    ids, owner = tok.encode_windows(texts, cfg.max_length, cfg.long_text,
                                    progress and ctx.is_main)  # fmt: skip
    split = sum(1 for n in Counter(owner).values() if n > 1)  # texts read as several windows
    if pack:
        # Packing finds each document by its leading [CLS]: rows from a tokenizer whose template
        # adds none were one document, attention crossing them all, without a word
        if any(len(row) and row[0] != mlm.cls_id for row in ids):
            raise ValueError(_PACK_NEEDS_STARTS)
        ids = pack_documents(ids, cfg.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(run_dir) if run_dir is not None else Path(tmp) / "run"
        result = fit(mlm, Encoded(ids, [0] * len(ids)), None, cfg, label_names=PRETRAIN_LABELS,
                     pad_id=tok.pad_id, run_dir=run, checkpoint_dir=checkpoint_dir,
                     resume=resume, progress=progress, messages=messages,
                     loss_fn=mlm_loss(mlm), dist=ctx,
                     resume_key={"model": config.to_dict(), "mask_prob": mask_prob, "pack": pack,
                                 "whole_word": whole_word, "tokenizer": str(tokenizer),
                                 "vocab_size": vocab_size})  # fmt: skip
        head_state = mlm.head.state_dict()
        if ctx.distributed:
            # Gather the (possibly fsdp-sharded) encoder and MLM head into plain modules on
            # rank 0; the classifier's pooler and head were not trained (same init everywhere).
            full = full_state_dict(mlm, ctx)
            if not ctx.is_main:
                result.best = None
                return result
            plain = build_model(config)
            untrained = {k: v for k, v in model.state_dict().items()
                         if k.startswith(("pooler.", "head."))}  # fmt: skip
            plain.load_state_dict({**untrained, **{k: v for k, v in full.items()
                                                   if not k.startswith("head.")}})  # fmt: skip
            model = plain
            head_state = {k[5:]: v for k, v in full.items() if k.startswith("head.")}
        log = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        losses = [json.loads(x)["loss"] for x in log if '"loss"' in x]
        head_file = Path(tmp) / "mlm_head.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in head_state.items()},
                  str(head_file))  # fmt: skip
        info = {"objective": "mlm", "mask_prob": mask_prob, "whole_word": whole_word,
                "texts": len(texts), "long_text": cfg.long_text, "windows": len(owner),
                "long_texts": split, "pack": pack,
                "steps": result.steps, "tokens": result.tokens,
                "final_loss": losses[-1] if losses else None}  # fmt: skip
        save_model_dir(out, model.cpu().eval(), config, tok, PRETRAIN_LABELS,
                       max_length=cfg.max_length, train_config={**cfg.to_dict(), "pretrain": info},
                       metrics={"pretrain": info},
                       extra_files={"mlm_head.safetensors": head_file,
                                    "metrics.jsonl": run / "metrics.jsonl",
                                    "training_curve.png": run / "training_curve.png",
                                    "tensorboard": run / "tensorboard"})  # fmt: skip
        mark_finished(checkpoint_dir, out)  # the next pretraining there starts afresh
    result.best = None
    return result


# ---------------------------------------------------------------- starting from an encoder


def _classifier(tokenizer: str, vocab_size: int, mask_prob: float, verbose: bool, params: dict):
    """The `TextClassifier` whose parameter split, validation and resumable tokenizer pretrain
    uses; bad options fail here, before any text is read."""
    from .api import TextClassifier

    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    if "init" in params:  # TextClassifier would take it and fine-tuning code would ignore it
        raise TypeError("pretrain() has no init=: it pretrains a new encoder from random weights")
    if "model" in params:  # was "got multiple values for argument 'model'"
        raise TypeError("pretrain() has no model=: masked-LM pretraining is for the transformer")
    if "verbose" in params:  # was "got multiple values for keyword argument 'verbose'"
        raise TypeError("pretrain() has no verbose=: progress= shows the bars, messages= the lines")
    check_strategy_for_pretrain(params.get("strategy", "auto"))
    # Options of supervised training that pretraining has no use for: it holds out no
    # validation data (no early stopping, no keep-best, no metric) and its loss is the MLM
    # cross-entropy (no label smoothing). They were accepted and did nothing, without a word.
    train_defaults = TrainConfig()
    unused = {k: getattr(train_defaults, k)
              for k in ("patience", "keep_best", "metric", "label_smoothing",
                        "class_weight")}  # fmt: skip
    api_defaults = inspect.signature(TextClassifier).parameters
    unused["valid_fraction"] = api_defaults["valid_fraction"].default
    if given := [k for k, default in unused.items() if k in params and params[k] != default]:
        raise TypeError(
            f"pretrain() does not use {', '.join(given)}: masked-LM pretraining holds out no "
            "validation data and has no labels to smooth or weigh"
        )
    params = {k: v for k, v in params.items() if k not in unused}
    params.setdefault("pooling", "cls")
    # A long document is read whole, in max_length windows: truncating it would never show the
    # encoder most of a corpus of long texts (58% of the tokens of IMDB reviews at 128).
    params.setdefault("long_text", "chunks")
    clf = TextClassifier("transformer", tokenizer=tokenizer, vocab_size=vocab_size,
                         verbose=verbose, **params)  # fmt: skip
    cfg = clf.train_config()  # validates
    # and the shape (--num-heads 3 for hidden 32), as train does, before a tokenizer is learned
    clf._model_config(None, len(PRETRAIN_LABELS), cfg.max_length)
    return clf


def check_strategy_for_pretrain(strategy: object) -> None:
    """Masked-LM pretraining data-parallelises only: tp and pp (which `train` has) are refused
    before any process group starts or any text is read."""
    if str(strategy).lower() in ("tp", "pp"):
        raise ValueError(f"pretrain runs single, ddp or fsdp, not --strategy {strategy}")


def check_options(*, tokenizer: str = "bpe", vocab_size: int = 16000, mask_prob: float = 0.15,
                  pack: bool = False, whole_word: bool = False, resume: bool = False,
                  checkpoint_dir: str | os.PathLike | None = None,
                  **params) -> None:  # fmt: skip
    """What `pretrain` would refuse in its options, refused without reading any data: a
    tokenizer file that is missing, unusable or of no use to masked-LM pretraining (with `pack`
    and `whole_word`) too, unless the run resumes from a checkpoint in `checkpoint_dir` (which
    brings its own)."""
    clf = _classifier(tokenizer, vocab_size, mask_prob, False, params)
    clf._check_tokenizer(resume, checkpoint_dir)
    _check_brought_tokenizer(clf, resume, checkpoint_dir, pack, whole_word)


def _check_brought_tokenizer(clf, resume: bool, checkpoint_dir, pack: bool, whole_word: bool):
    """A tokenizer file that masked-LM pretraining cannot use (`check_mlm_tokenizer`), refused
    naming it before the corpus is read: it was said after, without the file. A learnt kind
    always can; a resumed run's checkpoint tokenizer passed when its run started."""
    from .api import _resumes
    from .tokenizer import TokenizerError, is_learnt_kind, load_tokenizer

    if is_learnt_kind(clf.tokenizer) or _resumes(checkpoint_dir, resume):
        return
    try:
        check_mlm_tokenizer(load_tokenizer(clf.tokenizer), pack=pack, whole_word=whole_word)
    except ValueError as e:
        raise TokenizerError(f"{clf.tokenizer}: {e}") from None


def check_init(
    spec: str | os.PathLike,
    model: str = "transformer",
    overrides: dict | None = None,
    freeze: str | None = None,
) -> None:
    """What fine-tuning from `spec` would refuse, refused before any data is read (it was found
    only after the data had been read and split, which can take minutes): a missing folder, for
    `hf:` a missing transformers or an unsupported checkpoint, a model directory `load_init`
    refuses (another arch, compressed, damaged), a `model` other than the transformer, a shape
    option in `overrides` that differs from the encoder's (`init_config`) and a `freeze` deeper
    than its blocks."""
    from .train.trainer import frozen_blocks

    s = str(spec)
    if s.startswith("hf:"):
        from .models.hf import check_hf_folder, hf_encoder_config

        # an unsupported model type is refused now, and the shape read from config.json alone
        base = hf_encoder_config(check_hf_folder(s[3:])[1])
    elif not Path(s).is_dir():
        raise FileNotFoundError(f"{s}: --init needs a model directory (slimtext pretrain's)")
    else:
        base = load_init(s)[0].config  # read and verified as fine-tuning will read it
    if model != "transformer":
        raise ValueError(f"init= needs model='transformer', not {model!r}")
    init_config(base, base.num_labels, overrides or {})
    if (n := frozen_blocks(freeze)) is not None and n > base.num_layers:
        raise ValueError(f"freeze={freeze!r}: {s} has {base.num_layers} block(s)")


def init_source(spec: str | os.PathLike) -> str:
    """`spec` as a model directory records it: a local folder as an absolute path (a relative
    one, "../pre", named another folder, or none, once read from elsewhere: the model card and
    `TextClassifier.load(dir).fit(...)` went wrong), a Hub model id as it is."""
    s = str(spec)
    hf = s.startswith("hf:")
    p = Path(s[3:] if hf else s).expanduser()
    if not p.is_dir():
        return s
    return ("hf:" if hf else "") + str(p.resolve())


def load_init(spec: str | os.PathLike) -> tuple[TransformerClassifier, TextTokenizer]:
    """The model and tokenizer to start fine-tuning from: a slimtext model directory
    (pretrained or fine-tuned), or `hf:PATH`, a Hugging Face encoder folder or Hub model id."""
    s = str(spec)
    if s.startswith("hf:"):
        from .models.hf import load_hf

        return load_hf(s[3:])
    from .artifact import ModelDirError, read_model_dir

    md = read_model_dir(s)
    if md.config.arch != "transformer":
        raise ModelDirError(f"{s}: --init needs a transformer model, not arch={md.config.arch!r}")
    if md.meta.get("compression"):
        raise ModelDirError(f"{s}: a compressed model cannot be the start of fine-tuning")
    return md.model, md.tokenizer


def init_config(base: ModelConfig, num_labels: int, overrides: dict) -> ModelConfig:
    """`base` with a new label count; of `overrides`, only what does not change the weights'
    shapes (dropout, gradient checkpointing) is applied. A shape option that differs from the
    encoder's is an error: it cannot be honoured, and training another shape than the one asked
    for without a word (a warning was easy to miss) is worse."""
    clash = [f"{k} {overrides[k]!r} (the encoder's: {getattr(base, k)!r})" for k in SHAPE_KEYS
             if overrides.get(k) not in (None, getattr(base, k))]  # fmt: skip
    if clash:
        raise ValueError(
            f"fine-tuning a pretrained encoder keeps its shape; drop the options that differ: "
            f"{', '.join(clash)}"
        )
    keep = {k: overrides[k] for k in ("dropout", "gradient_checkpointing", "pooling")
            if overrides.get(k) is not None}  # fmt: skip
    return replace(base, num_labels=num_labels, **keep)


def init_classifier(src: nn.Module, config: ModelConfig) -> TransformerClassifier:
    """A new classifier of `config` with every weight of `src` but the head (sized anew). With
    another pooling than `src`'s, its [CLS] pooler is dropped (mean) or starts fresh (cls)."""
    model = build_model(config)
    pooler = {"pooler.weight", "pooler.bias"}
    new = {"head.weight", "head.bias"}
    drop = ("head.",) if config.pooling == "cls" else ("head.", "pooler.")
    state = {k: v for k, v in src.state_dict().items() if not k.startswith(drop)}
    if config.pooling == "cls" and not pooler <= state.keys():
        new |= pooler
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != new:
        raise ValueError(f"init weights do not fit: missing {missing}, unexpected {unexpected}")
    return model
