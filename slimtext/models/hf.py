"""Hugging Face encoder checkpoints <-> `TransformerClassifier`, weight for weight.

`TransformerClassifier` keeps BERT's layout (post-LN blocks, exact GELU, learned absolute
positions, tanh pooler on [CLS]), so conversion is a renaming plus two small rewrites:

- the fused `attn.qkv` weight is BERT's query, key and value stacked by rows ([q | k | v]);
- BERT adds `token_type_embeddings[0]` to every position (slimtext has no segments), so on import
  that row is folded into `embeddings.pos`; on export the token-type table is all zeros.

The conversion is exact (same logits, up to float rounding) when the slimtext model has
`arch="transformer"`, `pooling="cls"` (BERT's pooler), `share_layers=False` and no compression,
and the checkpoint has `gelu` (exact erf GELU), absolute position embeddings and is an encoder
(not a decoder). `layer_norm_eps`, dropout, padding id and vocabulary carry over.

Import reads three families (`from_hf`, `load_hf`; export writes BERT only):
- BERT (`BertModel`, `BertForSequenceClassification`, `BertForMaskedLM`...): exact logits.
- RoBERTa and XLM-RoBERTa: the same blocks. Their positions start at `pad_token_id + 1` (token
  i of a right-padded row reads row `pad_token_id + 1 + i`), so those rows become slimtext's
  table and `max_length` is `max_position_embeddings - pad_token_id - 1`; the classification
  head's dense + tanh on `<s>` is slimtext's pooler, its `out_proj` the head: exact logits.
- DistilBERT: the same blocks under other names, LayerNorm eps 1e-12, no token types and no
  pooler. Its classifier reads ReLU(pre_classifier([CLS])), not tanh, so the encoder is exact and
  the pooler and head start fresh (fine-tuning trains them).

`transformers` is imported lazily: `import slimtext` never loads it.
"""

from __future__ import annotations

import contextlib
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


# model_type -> the layout its weights follow (XLM-RoBERTa is RoBERTa with another vocabulary)
_FAMILIES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta",
             "distilbert": "distilbert"}  # fmt: skip


def _family(hf_cfg) -> str:
    model_type = getattr(hf_cfg, "model_type", "bert")
    if model_type not in _FAMILIES:
        raise HFConversionError(
            f"model_type={model_type!r} is not supported: BERT, RoBERTa, XLM-RoBERTa and "
            "DistilBERT checkpoints are"
        )
    return _FAMILIES[model_type]


def _check_importable(hf_cfg) -> str:
    family = _family(hf_cfg)
    act = hf_cfg.activation if family == "distilbert" else hf_cfg.hidden_act
    if act != "gelu":
        raise HFConversionError(f"activation {act!r}: slimtext blocks use exact (erf) GELU")
    if getattr(hf_cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise HFConversionError("only absolute position embeddings are supported")
    if getattr(hf_cfg, "is_decoder", False):
        raise HFConversionError("a decoder (causal attention) is not an encoder classifier")
    return family


def _model_config(hf_cfg, family: str, num_labels: int) -> ModelConfig:
    pad_id = hf_cfg.pad_token_id if hf_cfg.pad_token_id is not None else 0
    if family == "distilbert":  # its own names, and a LayerNorm eps fixed in its code
        return ModelConfig(
            vocab_size=hf_cfg.vocab_size, num_labels=num_labels, hidden_size=hf_cfg.dim,
            num_layers=hf_cfg.n_layers, num_heads=hf_cfg.n_heads, ffn_size=hf_cfg.hidden_dim,
            max_length=hf_cfg.max_position_embeddings, dropout=hf_cfg.dropout, pooling="cls",
            pad_id=pad_id, layer_norm_eps=1e-12,
        )  # fmt: skip
    offset = pad_id + 1 if family == "roberta" else 0  # RoBERTa's first position row
    return ModelConfig(
        vocab_size=hf_cfg.vocab_size, num_labels=num_labels, hidden_size=hf_cfg.hidden_size,
        num_layers=hf_cfg.num_hidden_layers, num_heads=hf_cfg.num_attention_heads,
        ffn_size=hf_cfg.intermediate_size, max_length=hf_cfg.max_position_embeddings - offset,
        dropout=hf_cfg.hidden_dropout_prob, pooling="cls", pad_id=pad_id,
        layer_norm_eps=hf_cfg.layer_norm_eps,
    )  # fmt: skip


def _encoder_weights(src: dict, cfg: ModelConfig, family: str) -> dict[str, torch.Tensor]:
    """slimtext's embedding and block weights from a base model's state dict."""
    pos = src["embeddings.position_embeddings.weight"]
    if family == "roberta":
        pos = pos[cfg.pad_id + 1 : cfg.pad_id + 1 + cfg.max_length]
    pos = pos.clone()
    tt = src.get("embeddings.token_type_embeddings.weight")
    if tt is not None:
        pos += tt[0]  # every token has token_type_id 0: fold that row into the positions
    dst = {
        "embeddings.tok.weight": src["embeddings.word_embeddings.weight"],
        "embeddings.pos.weight": pos,
        "embeddings.norm.weight": src["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": src["embeddings.LayerNorm.bias"],
    }
    if family == "distilbert":
        layer = "transformer.layer.{}."
        names = {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                 "attn.out": "attention.out_lin", "norm1": "sa_layer_norm", "ffn_in": "ffn.lin1",
                 "ffn_out": "ffn.lin2", "norm2": "output_layer_norm"}  # fmt: skip
    else:
        layer = "encoder.layer.{}."
        names = {"q": "attention.self.query", "k": "attention.self.key",
                 "v": "attention.self.value", "attn.out": "attention.output.dense",
                 "norm1": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
                 "ffn_out": "output.dense", "norm2": "output.LayerNorm"}  # fmt: skip
    for i in range(cfg.num_layers):
        s, d = layer.format(i), f"encoder.blocks.{i}."
        for part in ("weight", "bias"):
            dst[f"{d}attn.qkv.{part}"] = torch.cat([src[f"{s}{names[n]}.{part}"] for n in "qkv"])
            for ours in ("attn.out", "norm1", "ffn_in", "ffn_out", "norm2"):
                dst[f"{d}{ours}.{part}"] = src[f"{s}{names[ours]}.{part}"]
    return dst


def _head_weights(hf_model, src: dict, family: str, num_labels: int) -> dict[str, torch.Tensor]:
    """The pooler and head that carry over: BERT's pooler and classifier, RoBERTa's
    classification head; none of DistilBERT's (ReLU, not tanh)."""
    dst: dict[str, torch.Tensor] = {}
    classifier = getattr(hf_model, "classifier", None)
    if family == "bert":
        if "pooler.dense.weight" in src:
            dst["pooler.weight"] = src["pooler.dense.weight"]
            dst["pooler.bias"] = src["pooler.dense.bias"]
        out = classifier
    elif family == "roberta" and hasattr(classifier, "out_proj"):
        dst["pooler.weight"] = classifier.dense.weight.detach().cpu().float()
        dst["pooler.bias"] = classifier.dense.bias.detach().cpu().float()
        out = classifier.out_proj
    else:
        out = None
    if out is not None and out.out_features == num_labels:
        dst["head.weight"] = out.weight.detach().cpu().float()
        dst["head.bias"] = out.bias.detach().cpu().float()
    return dst


def _labels_of(hf_model) -> int | None:
    classifier = getattr(hf_model, "classifier", None)
    out = getattr(classifier, "out_proj", classifier)  # RoBERTa's head ends in out_proj
    return out.out_features if isinstance(out, torch.nn.Linear) else None


def from_hf(hf_model, num_labels: int | None = None, new_pooler: bool = False):
    """A `TransformerClassifier` (pooling="cls") with the weights of a Hugging Face BERT,
    RoBERTa, XLM-RoBERTa or DistilBERT model.

    `hf_model` is a `...ForSequenceClassification` (BERT and RoBERTa logits match exactly), a
    masked-LM or any other model of the family, or its bare base model; the head is freshly
    initialised when there is none to take or when `num_labels` differs from the checkpoint's.
    A checkpoint without a pooler (or `new_pooler=True`: the folder had none, and transformers
    filled it with random values) gets a fresh pooler too; so does every DistilBERT, and a
    RoBERTa without a classification head (RoBERTa's own pooler is never trained: its
    pretraining has no next-sentence task, and its classifiers do not use it).
    """
    hf_cfg = hf_model.config
    family = _check_importable(hf_cfg)
    base = hf_model.base_model  # the encoder inside any task model (itself for a bare one)
    n_labels = num_labels or _labels_of(hf_model) or 2
    cfg = _model_config(hf_cfg, family, max(2, n_labels))
    model = TransformerClassifier(cfg)
    src = {k: v.detach().cpu().float() for k, v in base.state_dict().items()}
    dst = _encoder_weights(src, cfg, family)
    for k, v in _head_weights(hf_model, src, family, cfg.num_labels).items():
        if not (new_pooler and k.startswith("pooler.")):
            dst[k] = v
    missing, unexpected = model.load_state_dict(dst, strict=False)
    fresh = {"head.weight", "head.bias", "pooler.weight", "pooler.bias"}
    if unexpected or set(missing) - fresh:
        raise HFConversionError(f"missing {sorted(set(missing) - fresh)}, unexpected {unexpected}")
    return model.eval()


from_hf_bert = from_hf  # its name before RoBERTa and DistilBERT were read


# What a checkpoint needs from the Hub: config, tokenizer files and safetensors weights. Never
# pytorch_model.bin (a pickle) and none of the TF/Flax/ONNX copies many repositories also hold.
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "vocab.txt", "vocab.json", "merges.txt", "*.model"]  # fmt: skip


def hf_model_folder(name: str | os.PathLike) -> Path:
    """The local folder of checkpoint `name`: a folder as given, or a Hugging Face Hub model id
    (`prajjwal1/bert-tiny`), whose snapshot is fetched into the Hugging Face cache the first
    time (safetensors weights only) and read from there after; `HF_HUB_OFFLINE=1` reads the
    cache only."""
    s = str(name)
    if not s.strip():  # Path("") is ".": "hf:" read the working directory
        raise FileNotFoundError("hf: names no folder or model id (hf:PATH or hf:ORG/NAME)")
    # "~/bert" is a path (below), so it is read as one: in "hf:~/bert" the shell expands no
    # "~" (not at the start of the word), and the folder was refused as missing
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    # a path, not an id: "./bert", "/models/bert", "~/bert", "a/b/c", "bert\\x", an existing file
    if p.exists() or s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s:
        raise FileNotFoundError(f"{s}: not a local Hugging Face model folder")
    _require_transformers()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        # top-level files only: "*.safetensors" also matched fp16/ or onnx/ copies in folders
        folder = Path(snapshot_download(s, allow_patterns=_HUB_FILES, ignore_patterns=["*/*"]))
    except HFValidationError:
        raise FileNotFoundError(
            f"{s}: neither a local folder nor a Hugging Face Hub model id"
        ) from None
    except Exception as e:  # noqa: BLE001 - offline, not found, gated, network: say which
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FileNotFoundError(
            f"{s}: not a local folder, and the Hugging Face Hub model could not be fetched "
            f"({type(e).__name__}{': ' + why if why else ''})"
        ) from None
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{s}: the Hub model has no safetensors weights, and slimtext does not load pickled "
            "ones (pytorch_model.bin); download and convert it yourself, then pass the folder"
        )
    return folder


def check_hf_folder(path: str | os.PathLike):
    """(folder, transformers config) of a local folder or Hub model id, refused (naming it)
    when it has no exact slimtext counterpart. Cheap: `--init hf:PATH` calls it before any data
    is read, where an unsupported folder was refused only after the data had been read and
    split, in an error that did not say which folder."""
    _require_transformers()
    from transformers import AutoConfig

    p = hf_model_folder(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
    hf_cfg = AutoConfig.from_pretrained(p)
    try:
        _check_importable(hf_cfg)
    except HFConversionError as e:
        raise HFConversionError(f"{path}: {e}") from None
    return p, hf_cfg


def hf_encoder_config(hf_cfg) -> ModelConfig:
    """The slimtext shape (2 labels) of a checkpoint's encoder, from its transformers config
    alone: what `--init hf:PATH` options are checked against before weights or data are read."""
    return _model_config(hf_cfg, _check_importable(hf_cfg), 2)


def load_hf(path: str | os.PathLike, num_labels: int | None = None):
    """(TransformerClassifier, TextTokenizer) from a Hugging Face BERT, RoBERTa, XLM-RoBERTa or
    DistilBERT checkpoint (a local folder or a Hub model id), with its own tokenizer."""
    _require_transformers()
    from transformers import AutoModel, AutoModelForSequenceClassification

    p, hf_cfg = check_hf_folder(path)
    archs = hf_cfg.architectures or []
    # A classification checkpoint keeps its head; any other (MLM, bare encoder) gets a new one.
    auto = (
        AutoModelForSequenceClassification
        if any(a.endswith("ForSequenceClassification") for a in archs)
        else AutoModel
    )
    with _quiet_transformers():
        hf, info = auto.from_pretrained(p, output_loading_info=True)
    # transformers fills a pooler the folder lacks (an MLM checkpoint) with random values:
    # slimtext's own initialisation, as for a head, is what such a pooler should start from
    new_pooler = any("pooler" in k for k in info.get("missing_keys", ()))
    model, tok = from_hf(hf, num_labels, new_pooler=new_pooler), _hf_tokenizer(p)
    # A tokenizer with ids past the embedding table fails only when a text uses one of them.
    largest = max(tok.backend.get_vocab().values())
    if largest >= model.config.vocab_size:
        raise HFConversionError(
            f"{p}: the tokenizer has ids up to {largest} but the model's vocab_size is "
            f"{model.config.vocab_size}: they do not belong together"
        )
    return model, tok


load_hf_bert = load_hf  # its name before RoBERTa and DistilBERT were read


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' load report (a table of an MLM checkpoint's unused `lm_head` keys and the
    missing pooler, which slimtext handles above) and its "Loading weights" bar, off while a
    checkpoint is read; its switches are put back after."""
    import transformers.utils.logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _hf_tokenizer(p: Path):
    """The folder's tokenizer: its tokenizer.json or BERT vocab.txt, else the fast tokenizer
    transformers converts from the slow one's files (RoBERTa's vocab.json + merges.txt)."""
    from ..tokenizer import TextTokenizer, TokenizerError, load_tokenizer

    try:
        return load_tokenizer(p)
    except TokenizerError:
        if (p / "tokenizer.json").exists() or (p / "vocab.txt").exists():
            raise  # a file slimtext reads, and it is broken: say so
    from transformers import AutoTokenizer

    try:
        fast = AutoTokenizer.from_pretrained(p, use_fast=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise TokenizerError(f"{p}: no tokenizer slimtext or transformers can read ({e})") from e
    if not getattr(fast, "is_fast", False):
        raise TokenizerError(f"{p}: transformers has no fast tokenizer for this folder")
    return TextTokenizer(fast.backend_tokenizer)


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
