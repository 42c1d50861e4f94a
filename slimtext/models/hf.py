"""Hugging Face BERT checkpoints <-> `TransformerClassifier`, weight for weight.

`TransformerClassifier` keeps BERT's layout (post-LN blocks, exact GELU, learned absolute
positions, tanh pooler on [CLS]), so conversion is a renaming plus two small rewrites:

- the fused `attn.qkv` weight is BERT's query, key and value stacked by rows ([q | k | v]);
- BERT adds `token_type_embeddings[0]` to every position (slimtext has no segments), so on import
  that row is folded into `embeddings.pos`; on export the token-type table is all zeros.

The conversion is exact (same logits, up to float rounding) when the slimtext model has
`arch="transformer"`, `pooling="cls"` (BERT's pooler), `share_layers=False` and no compression,
and the BERT config has `hidden_act="gelu"` (exact erf GELU), absolute position embeddings and is
an encoder (not a decoder). `layer_norm_eps`, dropout, padding id and vocabulary carry over.
Only the BERT family is supported (`BertModel`, `BertForSequenceClassification`,
`BertForMaskedLM`...): RoBERTa's position offset and DistilBERT's layout are not mapped.

`transformers` is imported lazily: `import slimtext` never loads it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .config import ModelConfig
from .transformer import TransformerClassifier


class HFConversionError(ValueError):
    """A model that has no exact counterpart on the other side."""


def _check_exportable(model: TransformerClassifier) -> ModelConfig:
    cfg = model.config
    if not isinstance(model, TransformerClassifier) or cfg.arch != "transformer":
        raise HFConversionError("only arch='transformer' models convert to BERT")
    if cfg.pooling != "cls":
        raise HFConversionError(
            "pooling='mean' has no BERT counterpart: BERT classifies from the [CLS] pooler"
        )
    if cfg.share_layers:
        raise HFConversionError("share_layers=True (ALBERT-style) does not map onto BERT")
    # Every layer, not only q/k/v and the FFN input: a partly quantized or factorised model
    # failed with a KeyError on whichever weight was missing.
    plain = (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm)
    for name, mod in model.named_modules():
        tensors = [*mod.parameters(recurse=False), *mod.buffers(recurse=False)]
        if (tensors and type(mod) not in plain) or any(
            type(t.data) is not torch.Tensor for t in tensors
        ):
            # another class (int8, low-rank) or a tensor subclass (torchao's quantized weights)
            raise HFConversionError(f"{name} is compressed (pruned/factorised/quantized)")
    # The layers BERT has, each a plain one: a LowRankLinear keeps its weights in child
    # Linears, so the check above passed it and the conversion failed on a missing key.
    lin, emb = torch.nn.Linear, torch.nn.Embedding
    wanted = {"pooler": lin, "head": lin, "embeddings.tok": emb, "embeddings.pos": emb}
    for i in range(len(model.encoder.blocks)):
        for part in ("attn.qkv", "attn.out", "ffn_in", "ffn_out"):
            wanted[f"encoder.blocks.{i}.{part}"] = lin
    for name, kind in wanted.items():
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise HFConversionError(f"{name} is missing: not a BERT layout") from None
        if type(mod) is not kind:
            raise HFConversionError(f"{name} is compressed (pruned/factorised/quantized)")
    for i, block in enumerate(model.encoder.blocks):
        if block.attn.qkv.out_features != 3 * cfg.hidden_size:
            raise HFConversionError(f"block {i} has pruned attention heads")
        if block.ffn_in.out_features != cfg.ffn_size:
            raise HFConversionError(f"block {i} has a pruned feed-forward layer")
    return cfg


def bert_config(cfg: ModelConfig, labels: list[str] | None = None):
    """The `transformers.BertConfig` of a slimtext transformer config."""
    from transformers import BertConfig

    # any sequence (clf.classes_ is a numpy array, whose truth value is ambiguous) of names;
    # numpy ints as text, as JSON (save_pretrained) cannot hold them
    labels = (
        [str(x) for x in labels]
        if labels is not None and len(labels)
        else [str(i) for i in range(cfg.num_labels)]
    )
    if len(labels) != cfg.num_labels:  # transformers would only log it and use LABEL_i
        raise HFConversionError(
            f"{len(labels)} label names for a model of {cfg.num_labels} classes"
        )
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_size,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=cfg.max_length,
        type_vocab_size=2,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_id,
        num_labels=cfg.num_labels,
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )


def _require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError(
            "Hugging Face checkpoints need transformers: pip install 'slimtext[hf]'"
        ) from None


def to_hf_bert(model: TransformerClassifier, labels: list[str] | None = None):
    """A `BertForSequenceClassification` that computes the same logits as `model`."""
    _require_transformers()
    from transformers import BertForSequenceClassification

    cfg = _check_exportable(model)
    hf = BertForSequenceClassification(bert_config(cfg, labels))
    C = cfg.hidden_size
    src = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dst: dict[str, torch.Tensor] = {
        "bert.embeddings.word_embeddings.weight": src["embeddings.tok.weight"],
        "bert.embeddings.position_embeddings.weight": src["embeddings.pos.weight"],
        "bert.embeddings.token_type_embeddings.weight": torch.zeros(2, C),
        "bert.embeddings.LayerNorm.weight": src["embeddings.norm.weight"],
        "bert.embeddings.LayerNorm.bias": src["embeddings.norm.bias"],
        "bert.pooler.dense.weight": src["pooler.weight"],
        "bert.pooler.dense.bias": src["pooler.bias"],
        "classifier.weight": src["head.weight"],
        "classifier.bias": src["head.bias"],
    }
    for i in range(cfg.num_layers):
        s, d = f"encoder.blocks.{i}.", f"bert.encoder.layer.{i}."
        for part in ("weight", "bias"):
            q, k, v = src[f"{s}attn.qkv.{part}"].split(C, dim=0)  # rows are [q | k | v]
            dst[f"{d}attention.self.query.{part}"] = q
            dst[f"{d}attention.self.key.{part}"] = k
            dst[f"{d}attention.self.value.{part}"] = v
            dst[f"{d}attention.output.dense.{part}"] = src[f"{s}attn.out.{part}"]
            dst[f"{d}attention.output.LayerNorm.{part}"] = src[f"{s}norm1.{part}"]
            dst[f"{d}intermediate.dense.{part}"] = src[f"{s}ffn_in.{part}"]
            dst[f"{d}output.dense.{part}"] = src[f"{s}ffn_out.{part}"]
            dst[f"{d}output.LayerNorm.{part}"] = src[f"{s}norm2.{part}"]
    _load_exact(hf, dst, what="BertForSequenceClassification")
    return hf.eval()


def _load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    # Buffers such as position_ids are not weights: only parameters must all be covered.
    missing, unexpected = module.load_state_dict(state, strict=False)
    params = {n for n, _ in module.named_parameters()}
    missing = [k for k in missing if k in params]
    if missing or unexpected:
        raise HFConversionError(f"{what}: missing {missing}, unexpected {unexpected}")


def _check_importable(hf_cfg) -> None:
    if getattr(hf_cfg, "model_type", "bert") != "bert":
        raise HFConversionError(
            f"only BERT checkpoints are supported, not model_type={hf_cfg.model_type!r}"
        )
    if hf_cfg.hidden_act != "gelu":
        raise HFConversionError(
            f"hidden_act={hf_cfg.hidden_act!r}: slimtext blocks use exact (erf) GELU"
        )
    if getattr(hf_cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise HFConversionError("only absolute position embeddings are supported")
    if getattr(hf_cfg, "is_decoder", False):
        raise HFConversionError("decoder BERT (causal attention) is not an encoder classifier")


def from_hf_bert(hf_model, num_labels: int | None = None) -> TransformerClassifier:
    """A `TransformerClassifier` (pooling="cls") with the weights of a Hugging Face BERT.

    `hf_model` is a `BertForSequenceClassification` (logits match exactly) or any BERT model with
    a `.bert` encoder or a bare `BertModel`; then, or when `num_labels` differs from the
    checkpoint's, the head is freshly initialised. A checkpoint without a pooler gets a fresh
    pooler too.
    """
    hf_cfg = hf_model.config
    _check_importable(hf_cfg)
    bert = getattr(hf_model, "bert", hf_model)
    classifier = getattr(hf_model, "classifier", None)
    n_labels = num_labels or (classifier.out_features if classifier is not None else 2)
    cfg = ModelConfig(
        vocab_size=hf_cfg.vocab_size,
        num_labels=max(2, n_labels),
        hidden_size=hf_cfg.hidden_size,
        num_layers=hf_cfg.num_hidden_layers,
        num_heads=hf_cfg.num_attention_heads,
        ffn_size=hf_cfg.intermediate_size,
        max_length=hf_cfg.max_position_embeddings,
        dropout=hf_cfg.hidden_dropout_prob,
        pooling="cls",
        pad_id=hf_cfg.pad_token_id if hf_cfg.pad_token_id is not None else 0,
        layer_norm_eps=hf_cfg.layer_norm_eps,
    )
    model = TransformerClassifier(cfg)
    src = {k: v.detach().cpu().float() for k, v in bert.state_dict().items()}
    pos = src["embeddings.position_embeddings.weight"].clone()
    tt = src.get("embeddings.token_type_embeddings.weight")
    if tt is not None:
        pos += tt[0]  # every token has token_type_id 0: fold that row into the positions
    dst = {
        "embeddings.tok.weight": src["embeddings.word_embeddings.weight"],
        "embeddings.pos.weight": pos,
        "embeddings.norm.weight": src["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": src["embeddings.LayerNorm.bias"],
    }
    if "pooler.dense.weight" in src:
        dst["pooler.weight"] = src["pooler.dense.weight"]
        dst["pooler.bias"] = src["pooler.dense.bias"]
    if classifier is not None and classifier.out_features == cfg.num_labels:
        dst["head.weight"] = classifier.weight.detach().cpu().float()
        dst["head.bias"] = classifier.bias.detach().cpu().float()
    for i in range(cfg.num_layers):
        s, d = f"encoder.layer.{i}.", f"encoder.blocks.{i}."
        for part in ("weight", "bias"):
            dst[f"{d}attn.qkv.{part}"] = torch.cat(
                [src[f"{s}attention.self.{n}.{part}"] for n in ("query", "key", "value")]
            )
            dst[f"{d}attn.out.{part}"] = src[f"{s}attention.output.dense.{part}"]
            dst[f"{d}norm1.{part}"] = src[f"{s}attention.output.LayerNorm.{part}"]
            dst[f"{d}ffn_in.{part}"] = src[f"{s}intermediate.dense.{part}"]
            dst[f"{d}ffn_out.{part}"] = src[f"{s}output.dense.{part}"]
            dst[f"{d}norm2.{part}"] = src[f"{s}output.LayerNorm.{part}"]
    missing, unexpected = model.load_state_dict(dst, strict=False)
    fresh = {"head.weight", "head.bias", "pooler.weight", "pooler.bias"}
    if unexpected or set(missing) - fresh:
        raise HFConversionError(f"missing {sorted(set(missing) - fresh)}, unexpected {unexpected}")
    return model.eval()


def check_hf_folder(path: str | os.PathLike):
    """The `BertConfig` of a local folder, refused (naming the folder) when it has no exact
    slimtext counterpart. Cheap: `--init hf:PATH` calls it before any data is read, where a
    RoBERTa or DistilBERT folder was refused only after the data had been read and split, in
    an error that did not say which folder."""
    _require_transformers()
    from transformers import AutoConfig

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a local Hugging Face model folder")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: not a Hugging Face model folder (no config.json)")
    hf_cfg = AutoConfig.from_pretrained(p)
    try:
        _check_importable(hf_cfg)
    except HFConversionError as e:
        raise HFConversionError(f"{p}: {e}") from None
    return hf_cfg


def load_hf_bert(path: str | os.PathLike, num_labels: int | None = None):
    """(TransformerClassifier, TextTokenizer) from a local Hugging Face BERT folder."""
    _require_transformers()
    from transformers import AutoModel, AutoModelForSequenceClassification

    from ..tokenizer import load_tokenizer

    p = Path(path)
    hf_cfg = check_hf_folder(p)
    archs = hf_cfg.architectures or []
    # A classification checkpoint keeps its head; any other (MLM, bare encoder) gets a new one.
    if "BertForSequenceClassification" in archs:
        hf = AutoModelForSequenceClassification.from_pretrained(p)
    else:
        hf = AutoModel.from_pretrained(p)
    model, tok = from_hf_bert(hf, num_labels), load_tokenizer(p)
    # A tokenizer with ids past the embedding table fails only when a text uses one of them.
    largest = max(tok.backend.get_vocab().values())
    if largest >= model.config.vocab_size:
        raise HFConversionError(
            f"{p}: the tokenizer has ids up to {largest} but the model's vocab_size is "
            f"{model.config.vocab_size}: they do not belong together"
        )
    return model, tok


def hf_fast_tokenizer(tokenizer, max_length: int):
    """A slimtext `TextTokenizer` as a `PreTrainedTokenizerFast`: same ids, same [CLS] ... [SEP].
    On a copy of the `tokenizers` object: Hugging Face sets truncation and padding on it per
    call, which slimtext's encoding of the same model would then have to undo."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from ..tokenizer import CLS, MASK, PAD, SEP, UNK

    backend = Tokenizer.from_str(tokenizer.backend.to_str())
    # BERT's spellings, else RoBERTa's (a --tokenizer folder may use either)
    names = {"pad_token": (PAD, "<pad>"), "unk_token": (UNK, "<unk>"), "cls_token": (CLS, "<s>"),
             "sep_token": (SEP, "</s>"), "mask_token": (MASK, "<mask>")}  # fmt: skip
    present = {}
    for role, spellings in names.items():
        found = [t for t in spellings if backend.token_to_id(t) is not None]
        if found:
            present[role] = found[0]
    # split_special_tokens: a "[SEP]" in the text is text, as slimtext reads it (saved in
    # tokenizer_config.json, so the Hugging Face copy of a model reads texts as slimtext does)
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length,
                                   split_special_tokens=True, **present)  # fmt: skip


def save_hf(model_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a slimtext model directory as a Hugging Face folder (`save_pretrained` + a fast
    tokenizer), loadable with `AutoModelForSequenceClassification` / `AutoTokenizer`."""
    _require_transformers()
    from ..artifact import check_save_target, is_model_dir, read_model_dir
    from ..fileio import _holds_manifest, atomic_dir

    def earlier_export(p: Path) -> bool:  # what atomic_dir may replace: an earlier save_hf
        return _holds_manifest(p) and not is_model_dir(p)

    # refused before any work: the source itself, a folder holding it, any other non-empty
    # folder but an earlier export (it overwrote a project's config.json, or the model)
    check_save_target(out, reads=(model_dir,), is_ours=earlier_export)
    md = read_model_dir(model_dir)
    # A compressed model converts when its layers are still BERT's (a distilled student, one
    # with layers dropped or unstructured zeros); `to_hf_bert` refuses pruned, factorised or
    # quantized layers by what they are, not by the record that the model was compressed.
    hf = to_hf_bert(md.model, list(md.labels))
    tok = hf_fast_tokenizer(md.tokenizer, md.max_length)
    if md.long_text != "truncate":
        warnings.warn(
            f"{model_dir} reads texts longer than {md.max_length} tokens with long_text="
            f"{md.long_text!r}; the Hugging Face model has no such option and truncates them, so "
            "its predictions on long texts differ",
            stacklevel=2,
        )
    out = Path(out)
    with atomic_dir(out, is_ours=earlier_export) as tmp:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
