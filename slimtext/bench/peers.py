"""The peers slimtext is measured against, each trained or converted on the same data, saved to
disk without pickle, and opened again as `predict(texts) -> labels` (see measure.py):

    hf        the same weights as a Hugging Face `BertForSequenceClassification` (exact mapping,
              slimtext.models.hf) run under `transformers.pipeline("text-classification")`; for
              shapes with no exact mapping (mean pooling) a BERT of that shape trained with
              `transformers.Trainer` for a bounded number of steps
    ort       that HF model exported to ONNX and dynamically quantised to int8: with Optimum
              (ORTQuantizer, avx512_vnni dynamic config) when importable, else the same two steps
              directly (torch.onnx export + onnxruntime.quantization.quantize_dynamic); it gets
              the same length-sorted batches slimtext uses
    fasttext  supervised fastText, word bigrams (wordNgrams=2)
    tfidf     TfidfVectorizer (1-2 grams) + LogisticRegression, C chosen on a held-out 10%

Every peer library is imported inside the function that needs it: a missing one raises
`PeerUnavailable` naming the pip package, which the benchmark reports and skips.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..fileio import atomic_write_text

if TYPE_CHECKING:  # slimtext.data imports torch; `import slimtext.bench` stays light
    from ..data import TextDataset

PEERS = ("hf", "ort", "ort-opt", "fasttext", "tfidf")
DEFAULT_PEERS = ("hf", "ort", "fasttext", "tfidf")  # ort-opt on request: it adds a minute
PIP = {  # import name -> what to install
    "transformers": "transformers",
    "fasttext": "fasttext-wheel",
    "sklearn": "scikit-learn",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
}


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here (library missing, no training data, no exact mapping)."""


def require(module: str):
    """Import `module` or raise PeerUnavailable saying what to pip install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = PIP.get(module.split(".")[0], module)
        raise PeerUnavailable(
            f"{module} is not installed ({e}); pip install {pkg} (or 'slimtext[bench]')"
        ) from None


# ---- fastText ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")


def simple_tokens(text: str) -> str:
    """Lowercase, drop IMDB's `<br />`, split punctuation off words (fastText has no tokenizer)."""
    return " ".join(_TOKEN.findall(text.replace("<br />", " ").lower()))


class FastTextPeer:
    """Supervised fastText with word bigrams. Labels are written as `__label__<index>` so any
    label string (spaces included) survives; the label list is saved next to the model."""

    def __init__(
        self, epoch: int = 25, word_ngrams: int = 2, threads: int = 2, seed: int = 0, **options
    ):
        self.epoch, self.word_ngrams, self.threads, self.seed = epoch, word_ngrams, threads, seed
        # Other `train_supervised` arguments (dim, bucket, lr, ...). With word bigrams the
        # default bucket=2,000,000 x dim=100 makes an ~800 MB model: that is fastText's default
        # and what the benchmark measures; tests pass a small bucket.
        self.options = options

    def fit(self, train: TextDataset, labels: Sequence[str]) -> FastTextPeer:
        fasttext = require("fasttext")
        import random

        # `labels` may come from a test set that lacks some class of the training data: the
        # training labels missing from it are added, so every training line has an index.
        self.labels_ = list(labels)
        self.labels_ += sorted(set(train.labels) - set(self.labels_))
        index = {lab: i for i, lab in enumerate(self.labels_)}
        # fastText runs SGD through the file in order: a file sorted by class (IMDB's is) ends
        # every epoch on one class and leaves the model biased to it, so shuffle the lines first.
        order = list(range(len(train)))
        random.Random(self.seed).shuffle(order)
        fd, path = tempfile.mkstemp(suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for i in order:
                    f.write(f"__label__{index[train.labels[i]]} {simple_tokens(train.texts[i])}\n")
            self.model_ = fasttext.train_supervised(
                input=path, epoch=self.epoch, wordNgrams=self.word_ngrams, thread=self.threads,
                verbose=0, seed=self.seed, **self.options,
            )  # fmt: skip
        finally:
            os.unlink(path)
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        got, _ = self.model_.predict([simple_tokens(t) for t in texts])
        return [self.labels_[int(p[0].removeprefix("__label__"))] for p in got]

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model_.save_model(str(folder / "model.bin"))
        atomic_write_text(folder / "labels.json", json.dumps(self.labels_))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FastTextPeer:
        fasttext = require("fasttext")
        self = cls()
        self.model_ = fasttext.load_model(str(Path(folder) / "model.bin"))
        self.labels_ = json.loads((Path(folder) / "labels.json").read_text(encoding="utf-8"))
        return self


# ---- TF-IDF + logistic regression ------------------------------------------------------------


class TfidfPeer:
    """`TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)` + LogisticRegression.

    With several `cs`, C is chosen on a stratified 10% hold-out of train, then refitted on all of
    it. Saved as JSON + .npy (vocabulary, idf, coefficients): no pickle, so loading a benchmark
    folder never runs code from it."""

    def __init__(self, cs: Sequence[float] = (4.0,), max_iter: int = 1000):
        self.cs, self.max_iter = list(cs), max_iter

    def _fit_once(self, ds: TextDataset, c: float):
        text = require("sklearn.feature_extraction.text")
        lm = require("sklearn.linear_model")
        vec = text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        x = vec.fit_transform(ds.texts)
        clf = lm.LogisticRegression(C=c, max_iter=self.max_iter)
        clf.fit(x, ds.labels)
        return vec, clf

    def fit(self, train: TextDataset, labels: Sequence[str] | None = None) -> TfidfPeer:
        from ..data import stratified_split

        self.search_ = {}
        t0 = time.perf_counter()
        if len(self.cs) > 1:
            rest, held = stratified_split(train, 0.1, seed=0)
            for c in self.cs:
                vec, clf = self._fit_once(rest, c)
                pred = clf.predict(vec.transform(held.texts))
                self.search_[c] = float(np.mean([p == y for p, y in zip(pred, held.labels,
                                                                       strict=True)]))  # fmt: skip
            self.c_ = max(self.search_, key=self.search_.get)
        else:
            self.c_ = self.cs[0]
        self.search_seconds_ = time.perf_counter() - t0
        self.vec_, self.clf_ = self._fit_once(train, self.c_)
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(p) for p in self.clf_.predict(self.vec_.transform(list(texts)))]

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocab = {k: int(v) for k, v in self.vec_.vocabulary_.items()}
        atomic_write_text(folder / "vocabulary.json", json.dumps(vocab, ensure_ascii=False))
        atomic_write_text(folder / "params.json", json.dumps({
            "C": self.c_, "classes": [str(c) for c in self.clf_.classes_],
            "vectorizer": {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 2},
        }))  # fmt: skip
        for name, arr in (("idf", self.vec_.idf_), ("coef", self.clf_.coef_),
                          ("intercept", self.clf_.intercept_)):  # fmt: skip
            np.save(folder / f"{name}.npy", np.asarray(arr, dtype=np.float64), allow_pickle=False)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TfidfPeer:
        text = require("sklearn.feature_extraction.text")
        lm = require("sklearn.linear_model")
        folder = Path(folder)
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
        self = cls(cs=[params["C"]])
        self.c_ = params["C"]
        vec = text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        vec.vocabulary_ = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        vec.idf_ = np.load(folder / "idf.npy", allow_pickle=False)
        clf = lm.LogisticRegression(C=self.c_)
        clf.classes_ = np.array(params["classes"])
        clf.coef_ = np.load(folder / "coef.npy", allow_pickle=False)
        clf.intercept_ = np.load(folder / "intercept.npy", allow_pickle=False)
        self.vec_, self.clf_ = vec, clf
        return self


# ---- Hugging Face: the same weights, or the same shape trained with Trainer ------------------


def hf_from_model_dir(model_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the model directory as a HF folder with the same weights (exact mapping only);
    raises PeerUnavailable saying why when there is no exact mapping."""
    require("transformers")
    from ..models.hf import HFConversionError, save_hf

    try:
        return save_hf(model_dir, out)
    except HFConversionError as e:
        raise PeerUnavailable(f"no exact Hugging Face mapping: {e}") from None


def hf_train_same_shape(
    model_dir: str | os.PathLike,
    train: TextDataset,
    out: str | os.PathLike,
    *,
    max_steps: int,
    seconds: float | None,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Train a BERT of the model directory's shape (and tokenizer) with `transformers.Trainer`
    for at most `max_steps` steps or `seconds`, whichever ends first; save it to `out`."""
    require("transformers")
    import torch
    from transformers import (
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from ..artifact import read_model_dir
    from ..models.hf import bert_config, hf_fast_tokenizer

    md = read_model_dir(model_dir)
    tok = hf_fast_tokenizer(md.tokenizer, md.max_length)
    labels = list(md.labels)
    index = {lab: i for i, lab in enumerate(labels)}
    hf = BertForSequenceClassification(bert_config(md.config, labels))
    # Rows of a class the model lacks cannot be its targets (a bare KeyError skipped the peer):
    # trained on the rest, and the count said in the result.
    keep = [i for i, y in enumerate(train.labels) if y in index]
    if not keep:
        raise ValueError(f"none of the --train labels is one of the model's {labels}")
    ids = md.tokenizer.encode([train.texts[i] for i in keep], md.max_length)
    ys = [index[train.labels[i]] for i in keep]

    class _Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": ids[i], "labels": ys[i]}

    deadline = None if seconds is None else time.monotonic() + seconds

    class _StopAtDeadline(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if deadline is not None and time.monotonic() > deadline:
                control.should_training_stop = True
            return control

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=max(1, max_steps), per_device_train_batch_size=batch_size,
            learning_rate=lr, warmup_steps=max(1, max_steps // 16), weight_decay=0.01,
            logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True, seed=seed,
            dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(
            model=hf, args=args, train_dataset=_Rows(),
            data_collator=DataCollatorWithPadding(tok), callbacks=[_StopAtDeadline()],
        )  # fmt: skip
        t0 = time.perf_counter()
        state = trainer.train()
        seconds_used = time.perf_counter() - t0
    hf.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return {"steps": int(state.global_step), "train_seconds": seconds_used, "max_steps": max_steps,
            "rows_of_other_classes_left_out": len(train.labels) - len(keep)}  # fmt: skip


def open_hf_pipeline(folder: str | os.PathLike, max_length: int) -> Callable:
    """`predict(texts)` through `pipeline("text-classification")`, one pipeline batch per call."""
    require("transformers")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device="cpu")

    def predict(texts: list[str]) -> list[str]:
        out = pipe(texts, batch_size=len(texts), truncation=True, max_length=max_length)
        return [o["label"] for o in out]

    return predict


# ---- ONNX Runtime int8 of the HF model --------------------------------------------------------


def ort_int8_from_hf(
    hf_dir: str | os.PathLike, out_dir: str | os.PathLike, optimize: bool = False
) -> dict:
    """Export the HF folder to ONNX and quantise it dynamically to int8; returns
    {"path": int8 file, "route": "optimum" | "direct", ...}.

    `optimize=True` (the `ort-opt` peer) adds the step an expert Optimum user takes before
    quantising: ONNX Runtime's BERT optimizer (what `ORTOptimizer` runs), which fuses attention,
    embeddings, skip-LayerNorm and GELU, on an export of the eager attention implementation
    (the pattern that optimizer recognises; the SDPA export gets no attention fusion)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if optimize:
        return _ort_opt_int8(Path(hf_dir), out_dir)
    try:
        from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError:
        pass
    else:
        # Untested here: optimum-onnx pins transformers<4.58. The documented two-step route.
        ort_model = ORTModelForSequenceClassification.from_pretrained(hf_dir, export=True)
        ort_model.save_pretrained(out_dir / "fp32")
        quantizer = ORTQuantizer.from_pretrained(ort_model)
        qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
        quantizer.quantize(save_dir=out_dir / "int8", quantization_config=qconfig)
        files = sorted((out_dir / "int8").glob("*.onnx"))
        return {"path": str(files[0]), "route": "optimum (ORTQuantizer, avx512_vnni dynamic)"}
    require("onnxruntime")
    require("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    fp32, int8 = out_dir / "model.onnx", out_dir / "model_quantized.onnx"
    _export_hf(hf, fp32)
    # ORTQuantizer's avx512_vnni(is_static=False) = this call: int8 weights, uint8 activations
    # quantised per batch at run time, per-tensor scales.
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=False)
    return {
        "path": str(int8),
        "route": "direct (torch.onnx TorchScript export + onnxruntime quantize_dynamic; "
        "Optimum not installed)",
    }


def _export_hf(hf, path: Path) -> None:
    """TorchScript export with dynamic axes, as Optimum's exporter does; sub-second for BERT."""
    import torch

    # The dummy rows must fit the position table: a model with max_length < 16 has fewer
    # positions than that, and a longer dummy fails the export with an index error.
    seq = min(16, hf.config.max_position_embeddings)
    ids = torch.randint(
        1, hf.config.vocab_size, (2, seq), generator=torch.Generator().manual_seed(0)
    )
    mask = torch.ones_like(ids)
    mask[1, max(1, seq * 5 // 8) :] = 0  # one padded row (10 of 16 real tokens at seq=16)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            hf, (ids, mask), str(path), dynamo=False, opset_version=18,
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}}, do_constant_folding=True,
        )  # fmt: skip


def _ort_opt_int8(hf_dir: Path, out_dir: Path) -> dict:
    require("onnxruntime")
    require("onnx")
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(
        hf_dir, attn_implementation="eager"
    ).eval()
    raw, opt = out_dir / "model.onnx", out_dir / "model_optimized.onnx"
    int8 = out_dir / "model_optimized_quantized.onnx"
    _export_hf(hf, raw)
    c = hf.config
    fused = optimize_model(
        str(raw), model_type="bert", num_heads=c.num_attention_heads, hidden_size=c.hidden_size
    )
    fused.save_model_to_file(str(opt))
    stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    missed = ""
    if stats.get("Attention", 0) < c.num_hidden_layers:
        # Seen with torch 2.11 + transformers 5.17 + onnxruntime 1.30: the export no longer
        # matched the optimizer's pattern. The peer still runs, but is not the fused one.
        missed = f"; attention NOT fused in {c.num_hidden_layers - stats.get('Attention', 0)} "
        missed += "of the layers: this torch/transformers/onnxruntime export escaped the optimizer"
        warnings.warn("ort-opt peer" + missed, stacklevel=2)
    # The fused com.microsoft ops carry no type information for onnx's shape inference.
    quantize_dynamic(opt, int8, weight_type=QuantType.QInt8, per_channel=False,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})  # fmt: skip
    return {
        "path": str(int8),
        "route": "torch.onnx export (eager attention) + onnxruntime.transformers BERT optimizer "
        f"(fused: {stats}) + quantize_dynamic{missed}",
    }


def open_ort(path: str | os.PathLike, tokenizer_dir: str | os.PathLike, max_length: int):
    """`predict(texts)` on an ONNX classifier, fed the same length-sorted batches, padded to
    their longest row, as slimtext's onnxruntime backends (slimtext.data.batching), tokenized
    by the HF tokenizer."""
    ort = require("onnxruntime")
    require("transformers")
    import json as _json

    import torch
    from transformers import AutoTokenizer

    from ..data.batching import length_sorted_batches, pad_rows

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = _json.loads((Path(tokenizer_dir) / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): v for k, v in cfg["id2label"].items()}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = torch.get_num_threads()  # as slimtext's onnxruntime backend
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    pad_id = tok.pad_token_id or 0

    def predict(texts: list[str]) -> list[str]:
        ids = tok(list(texts), truncation=True, max_length=max_length)["input_ids"]
        out = np.empty(len(ids), dtype=np.int64)
        for rows in length_sorted_batches([len(r) for r in ids], len(texts)):
            input_ids, mask = pad_rows(ids, rows, pad_id, multiple_of=1)
            feed = {"input_ids": input_ids, "attention_mask": mask.astype(np.int64)}
            if "token_type_ids" in inputs:  # Optimum's export keeps BERT's segment input
                feed["token_type_ids"] = np.zeros_like(input_ids)
            out[rows] = sess.run(None, feed)[0].argmax(-1)
        return [id2label[int(i)] for i in out]

    return predict


def _stored_labels(pred) -> Callable[[list[str]], list[str]]:
    """`pred.predict` in the stored (text) labels the test file's gold labels are read as: a
    model fitted on integers predicts ints, and 1 != "1" scored every answer wrong."""
    labels = pred.labels

    def predict(texts: list[str]) -> list[str]:
        return [labels[i] for i in pred.logits(texts).argmax(-1).tolist()]

    return predict


# ---- one contender, for measure.py ------------------------------------------------------------


def open_contender(spec) -> tuple[Callable[[list[str]], Sequence[str]], dict]:
    """(predict, info) for a `measure.Spec`; info has size on disk and what was loaded."""
    from .measure import dir_size_mb

    kind, path = spec.kind, Path(spec.path)
    if kind == "slimtext":
        from ..infer import load

        # Batch size 64 = the largest measured: one call of <= 64 texts is one padded batch.
        pred = load(path, backend=spec.backend, batch_size=64)
        pred.warm_up_all()  # compile every bucket now: compilation is load time, not latency
        weights = [pred.onnx_path] if pred.onnx_path else [path / "model.safetensors"]
        size = dir_size_mb([*weights, path / "tokenizer.json"])
        # long_text: a `chunks` model reads all of a long text (several windows) where the hf
        # and ort peers truncate it at max_length; its docs/s pays for that.
        info = {"size_mb": size, "size_files": [str(w) for w in weights]}
        return _stored_labels(pred), {**info, "long_text": pred.long_text}
    if kind == "hf":
        fn = open_hf_pipeline(path, spec.max_length)
        return fn, {"size_mb": dir_size_mb([path])}
    if kind == "ort":
        tok_dir = Path(spec.extra["tokenizer_dir"])
        fn = open_ort(path, tok_dir, spec.max_length)
        tok_files = [p for p in tok_dir.glob("tokenizer*.json")]
        return fn, {"size_mb": dir_size_mb([path, *tok_files])}
    if kind == "fasttext":
        m = FastTextPeer.load(path)
        return m.predict, {"size_mb": dir_size_mb([path])}
    if kind == "tfidf":
        m = TfidfPeer.load(path)
        return m.predict, {"size_mb": dir_size_mb([path])}
    raise ValueError(f"unknown contender kind {kind!r}")
