"""Hugging Face BERT <-> TransformerClassifier: same logits both ways, on tiny random models."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from slimtext.models import ModelConfig, TransformerClassifier  # noqa: E402
from slimtext.models.hf import (  # noqa: E402
    HFConversionError,
    from_hf,
    from_hf_bert,
    load_hf,
    load_hf_bert,
    save_hf,
    to_hf_bert,
)

TINY = dict(vocab_size=60, num_labels=3, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
            max_length=24, pooling="cls")  # fmt: skip


def padded_batch(vocab: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 12, 20, 3]
    ids = torch.zeros(len(lengths), 24, dtype=torch.long)  # pad id 0
    mask = torch.zeros(len(lengths), 24, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, vocab, (n,), generator=g)
        ids[i, 0] = 2  # [CLS]
        mask[i, :n] = 1
    return ids, mask


def randomise_(model: torch.nn.Module, seed: int = 1) -> None:
    # Non-trivial values everywhere (biases, LayerNorms too), so a swapped tensor would show.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_export_gives_the_same_logits():
    torch.manual_seed(0)
    model = TransformerClassifier(ModelConfig(**TINY)).eval()
    randomise_(model)
    hf = to_hf_bert(model)
    ids, mask = padded_batch()
    with torch.no_grad():
        ours = model(ids, mask.bool())
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert hf.bert.embeddings.token_type_embeddings.weight.abs().sum() == 0


def test_import_gives_the_same_logits_with_token_types_folded():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=24, num_labels=3)  # fmt: skip
    hf = BertForSequenceClassification(cfg).eval()
    randomise_(hf, seed=2)  # token_type_embeddings[0] is non-zero: it must be folded in
    model = from_hf_bert(hf)
    ids, mask = padded_batch()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        ours = model(ids, mask.bool())
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    back = to_hf_bert(model)  # and round trip
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, attention_mask=mask).logits, theirs,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip


def test_mean_pooling_is_refused():
    model = TransformerClassifier(ModelConfig(**{**TINY, "pooling": "mean"}))
    with pytest.raises(HFConversionError, match="pooling"):
        to_hf_bert(model)


def test_save_hf_folder_loads_back(tmp_path):
    from slimtext.artifact import save_model_dir
    from slimtext.tokenizer import train_tokenizer

    texts = [f"word{i % 7} thing{i % 5} more text here" for i in range(50)]
    tok = train_tokenizer(texts, vocab_size=200, kind="wordpiece")
    torch.manual_seed(0)
    model = TransformerClassifier(ModelConfig(**{**TINY, "vocab_size": tok.vocab_size})).eval()
    randomise_(model)
    save_model_dir(tmp_path / "m", model, model.config, tok, ["a", "b", "c"], max_length=24)
    save_hf(tmp_path / "m", tmp_path / "hf")
    back, tok2 = load_hf_bert(tmp_path / "hf")
    ids = torch.tensor(tok.encode(texts[:4], 24))
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert tok2.encode(texts[:4], 24) == ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask), model(ids, mask), atol=1e-5, rtol=1e-4)
    # Hugging Face's own tokenizer of the copy reads a literal "[SEP]" as slimtext does: text
    from transformers import AutoTokenizer

    odd = ["word1 [SEP] thing2 [PAD] more"]
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")(odd)["input_ids"] == tok.encode(odd, 24)


def test_a_compressed_model_converts_when_its_layers_are_still_berts(tmp_path):
    # a distilled student (or one with zeros) was refused for its compression record alone
    from slimtext.artifact import save_model_dir
    from slimtext.compress import HeadPruning, prune_
    from slimtext.tokenizer import train_tokenizer

    tok = train_tokenizer([f"word{i % 7} thing{i % 5}" for i in range(50)], vocab_size=200)
    torch.manual_seed(0)
    model = TransformerClassifier(ModelConfig(**{**TINY, "vocab_size": tok.vocab_size})).eval()
    randomise_(model)
    record = [{"step": "distill", "config": {"layers": 2}}]
    save_model_dir(tmp_path / "m", model, model.config, tok, ["a", "b", "c"], max_length=24,
                   compression=record)  # fmt: skip
    save_hf(tmp_path / "m", tmp_path / "hf")
    back, _ = load_hf_bert(tmp_path / "hf")
    ids, mask = padded_batch(tok.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask.bool()), model(ids, mask.bool()), atol=1e-5,
                                   rtol=1e-4)  # fmt: skip
    pruned = prune_(model, HeadPruning(0.5))  # pruned heads are not BERT's: refused as such
    save_model_dir(tmp_path / "p", model, model.config, tok, ["a", "b", "c"], max_length=24,
                   compression=[pruned])  # fmt: skip
    with pytest.raises(HFConversionError, match="pruned attention heads"):
        save_hf(tmp_path / "p", tmp_path / "hf2")


def test_save_hf_never_replaces_what_it_did_not_write(tmp_path):
    from slimtext.artifact import save_model_dir
    from slimtext.fileio import TargetExistsError
    from slimtext.tokenizer import train_tokenizer

    texts = [f"word{i % 7} thing{i % 5}" for i in range(30)]
    tok = train_tokenizer(texts, vocab_size=120, kind="wordpiece")
    model = TransformerClassifier(ModelConfig(**{**TINY, "vocab_size": tok.vocab_size})).eval()
    save_model_dir(tmp_path / "m", model, model.config, tok, ["a", "b", "c"], max_length=24)
    before = (tmp_path / "m" / "config.json").read_text()
    with pytest.raises(TargetExistsError):  # it overwrote the model's config
        save_hf(tmp_path / "m", tmp_path / "m")
    assert (tmp_path / "m" / "config.json").read_text() == before
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text("{}")  # the user's own file
    with pytest.raises(TargetExistsError):
        save_hf(tmp_path / "m", project)
    assert (project / "config.json").read_text() == "{}"
    save_hf(tmp_path / "m", tmp_path / "hf")
    save_hf(tmp_path / "m", tmp_path / "hf")  # an earlier export is replaced
    save_model_dir(tmp_path / "c", model, model.config, tok, ["a", "b", "c"], max_length=24,
                   long_text="chunks")  # fmt: skip
    with pytest.warns(UserWarning, match="truncates them"):
        save_hf(tmp_path / "c", tmp_path / "hf-c")
    assert load_hf_bert(tmp_path / "hf")[0] is not None


def test_save_hf_keeps_roberta_spelled_special_tokens(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import AutoTokenizer

    from slimtext.artifact import save_model_dir
    from slimtext.tokenizer import TextTokenizer

    bl = ByteLevelBPETokenizer()
    bl.train_from_iterator([f"word{i % 7} thing{i % 5}" for i in range(30)], vocab_size=300,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    bl._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = TextTokenizer(bl._tokenizer)
    cfg = ModelConfig(**{**TINY, "vocab_size": tok.vocab_size, "pad_id": tok.pad_id})
    save_model_dir(
        tmp_path / "m", TransformerClassifier(cfg), cfg, tok, ["a", "b", "c"], max_length=24
    )
    save_hf(tmp_path / "m", tmp_path / "hf")
    ht = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (ht.pad_token, ht.cls_token, ht.sep_token) == ("<pad>", "<s>", "</s>")
    assert ht(["word1", "word2 thing3 thing4"], padding=True)["input_ids"][0][-1] == 1


def test_label_names_and_compressed_layers_are_checked_before_converting():
    from slimtext.compress import Int8Dynamic, quantize_

    model = TransformerClassifier(ModelConfig(**TINY))
    with pytest.raises(HFConversionError, match="1 label names for a model of 3"):
        to_hf_bert(model, ["a"])  # transformers only logged it and named them LABEL_i
    import numpy as np

    # clf.classes_ (a numpy array of numpy ints): "truth value ambiguous", then not JSON
    hf = to_hf_bert(model, np.array([10, 20, 30]))
    assert hf.config.id2label == {0: "10", 1: "20", 2: "30"}
    # only the second FFN layers quantized: a KeyError on their weight
    keep = tuple(n for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "ffn_out" not in n)  # fmt: skip
    quantize_(model, Int8Dynamic(embeddings=False, skip=keep))
    with pytest.raises(HFConversionError, match="ffn_out is compressed"):
        to_hf_bert(model)
    # a LowRankLinear holds its weights in child Linears: it passed, then a KeyError
    from slimtext.compress import LowRank, factorize_

    model = TransformerClassifier(ModelConfig(**TINY))
    factorize_(model, LowRank(energy=0.5))
    with pytest.raises(HFConversionError, match="is compressed"):
        to_hf_bert(model)


def test_fine_tune_from_a_local_hf_bert_folder(tmp_path, toy_data):
    from transformers import BertConfig, BertForMaskedLM

    from slimtext.api import TextClassifier
    from slimtext.tokenizer import SPECIAL_TOKENS

    texts, labels = toy_data
    words = sorted({w for t in texts for w in t.split()})
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + words) + "\n")
    cfg = BertConfig(vocab_size=len(SPECIAL_TOKENS) + len(words), hidden_size=32,
                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, architectures=["BertForMaskedLM"])  # fmt: skip
    torch.manual_seed(0)
    mlm = BertForMaskedLM(cfg)
    mlm.save_pretrained(tmp_path)  # an MLM checkpoint: no pooler, no classifier
    clf = TextClassifier(
        init=f"hf:{tmp_path}",
        max_steps=2,
        batch_size=16,
        max_length=32,
        freeze="embeddings+1",
        threads=1,
        device="cpu",
        verbose=False,
    )
    clf.fit((texts, labels))
    model = clf.model_dir_.model
    assert model.config.num_layers == 1 and model.head.out_features == 3
    qkv = torch.cat([getattr(mlm.bert.encoder.layer[0].attention.self, n).weight
                     for n in ("query", "key", "value")])  # fmt: skip
    torch.testing.assert_close(model.encoder.blocks[0].attn.qkv.weight, qkv, rtol=0, atol=0)
    assert clf.predict(texts[:3])  # the folder's vocab.txt tokenizer is used end to end


def test_a_tokenizer_larger_than_the_checkpoints_vocabulary_is_refused(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from slimtext.tokenizer import SPECIAL_TOKENS

    words = [f"w{i}" for i in range(40)]
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + words) + "\n")
    cfg = BertConfig(vocab_size=len(SPECIAL_TOKENS) + 20, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16,
                     architectures=["BertForMaskedLM"])  # fmt: skip
    BertForMaskedLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(HFConversionError, match="do not belong together"):
        load_hf_bert(tmp_path)


def roberta_batch(vocab: int, pad_id: int = 1, seed: int = 0):
    # right-padded with RoBERTa's pad id: its positions count real tokens from pad_id + 1
    ids, mask = padded_batch(vocab, seed)
    ids[mask == 0] = pad_id
    ids[:, 0] = 0  # <s>
    return ids, mask


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta"])
def test_roberta_classifiers_give_the_same_logits(family):
    from transformers import (
        RobertaConfig,
        RobertaForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    pairs = {"roberta": (RobertaConfig, RobertaForSequenceClassification),
             "xlm-roberta": (XLMRobertaConfig, XLMRobertaForSequenceClassification)}  # fmt: skip
    conf, cls = pairs[family]
    hf_cfg = conf(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=26, pad_token_id=1,
                  type_vocab_size=1, num_labels=3)  # fmt: skip
    hf = cls(hf_cfg).eval()
    randomise_(hf, seed=3)  # the classification head's dense + tanh becomes the pooler
    model = from_hf(hf)
    assert model.config.max_length == 24  # 26 rows, the first two never read
    ids, mask = roberta_batch(60)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        ours = model(ids, mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_distilbert_encoder_is_exact_and_its_relu_head_starts_fresh():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    hf_cfg = DistilBertConfig(vocab_size=60, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=24, num_labels=3)  # fmt: skip
    hf = DistilBertForSequenceClassification(hf_cfg).eval()
    randomise_(hf, seed=4)
    model = from_hf(hf)
    ids, mask = padded_batch(60)
    with torch.no_grad():
        theirs = hf.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = model.encode(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-4, atol=1e-4)
    # ReLU(pre_classifier) is not slimtext's tanh pooler: neither it nor the classifier is taken
    assert model.config.layer_norm_eps == 1e-12 and model.head.out_features == 3
    assert not torch.equal(model.pooler.weight, hf.pre_classifier.weight)
    assert not torch.equal(model.head.weight, hf.classifier.weight)


def test_an_unsupported_model_type_names_the_supported_ones(tmp_path):
    from transformers import ElectraConfig

    ElectraConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(HFConversionError, match=r"model_type='electra'.*RoBERTa.*DistilBERT"):
        load_hf(tmp_path)


def _roberta_folder(folder, texts, slow_files: bool):
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    bl = ByteLevelBPETokenizer()
    bl.train_from_iterator(texts, vocab_size=400, min_frequency=1,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    bl._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    folder.mkdir(parents=True)
    if slow_files:  # vocab.json + merges.txt only: transformers converts them
        bl.save_model(str(folder))
    else:
        RobertaTokenizerFast(tokenizer_object=bl._tokenizer).save_pretrained(folder)
    cfg = RobertaConfig(vocab_size=bl.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=34,
                        pad_token_id=1, type_vocab_size=1)  # fmt: skip
    torch.manual_seed(0)
    mlm = RobertaForMaskedLM(cfg)
    mlm.save_pretrained(folder)  # no pooler, no classifier
    return mlm.roberta


def _distilbert_folder(folder, texts):
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    from slimtext.tokenizer import SPECIAL_TOKENS

    folder.mkdir(parents=True)
    words = sorted({w for t in texts for w in t.split()})
    (folder / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + words) + "\n")
    cfg = DistilBertConfig(vocab_size=len(SPECIAL_TOKENS) + len(words), dim=32, n_layers=1,
                           n_heads=2, hidden_dim=64, max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(0)
    mlm = DistilBertForMaskedLM(cfg)
    mlm.save_pretrained(folder)
    return mlm.distilbert


@pytest.mark.parametrize("kind", ["roberta", "roberta-slow-tokenizer-files", "distilbert"])
def test_fine_tune_from_a_local_roberta_or_distilbert_folder(tmp_path, toy_data, kind):
    from slimtext.api import TextClassifier

    texts, labels = toy_data
    folder = tmp_path / "hf"
    if kind == "distilbert":
        base = _distilbert_folder(folder, texts)
        q = base.transformer.layer[0].attention.q_lin.weight
    else:
        base = _roberta_folder(folder, texts, slow_files=kind.endswith("files"))
        q = base.encoder.layer[0].attention.self.query.weight
    clf = TextClassifier(init=f"hf:{folder}", max_steps=2, batch_size=16, max_length=32,
                         freeze="embeddings+1", threads=1, device="cpu", verbose=False)  # fmt: skip
    clf.fit((texts, labels))
    model = clf.model_dir_.model
    # frozen, so still the checkpoint's: the query rows of the fused q/k/v weight
    torch.testing.assert_close(model.encoder.blocks[0].attn.qkv.weight[:32], q, rtol=0, atol=0)
    assert model.head.out_features == 3 and clf.score(texts, labels) > 0
    assert clf.model_dir_.tokenizer.pad_id == model.config.pad_id


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A Hugging Face cache folder, read offline: what a Hub model id resolves to once fetched."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never the network in a test
    return cache


def test_a_hub_model_id_is_read_from_the_hugging_face_cache(tmp_path, offline_hub, toy_data):
    from slimtext.pretrain import check_init, load_init

    texts, _ = toy_data
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--someorg--tiny-distil"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    base = _distilbert_folder(repo / "snapshots" / commit, texts)  # as snapshot_download leaves it
    check_init("hf:someorg/tiny-distil")  # before any data is read, as --init checks it
    model, tok = load_init("hf:someorg/tiny-distil")
    torch.testing.assert_close(model.embeddings.tok.weight, base.embeddings.word_embeddings.weight)
    (ids,) = tok.encode([texts[0]], 16)  # the snapshot's vocab.txt: every word known
    assert (
        ids[0] == tok.backend.token_to_id("[CLS]") and tok.backend.token_to_id("[UNK]") not in ids
    )
    # an id neither cached nor reachable: the id named, and why
    with pytest.raises(FileNotFoundError, match=r"someorg/other.*could not be fetched"):
        load_hf("someorg/other")
    # a path that does not exist is a path, never sent to the Hub as an id
    for path in ("./no-such-folder", str(tmp_path / "nothing"), "a/b/c"):
        with pytest.raises(FileNotFoundError, match="not a local Hugging Face model folder"):
            check_init(f"hf:{path}")


def test_a_hub_snapshot_without_safetensors_weights_is_refused(offline_hub):
    from transformers import BertConfig

    commit = "1" * 40
    repo = offline_hub / "models--someorg--pickled"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(snap)  # fmt: skip
    (snap / "pytorch_model.bin").write_bytes(b"a pickle: never loaded")
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        load_hf("someorg/pickled")


def test_a_folder_under_the_home_folder_is_read_with_a_tilde(tmp_path, monkeypatch, toy_data):
    # "hf:~/bert": the shell expands no "~" after "hf:", and the folder was refused as missing
    from slimtext.pretrain import check_init, load_init

    monkeypatch.setenv("HOME", str(tmp_path))
    base = _distilbert_folder(tmp_path / "models" / "distil", toy_data[0])
    check_init("hf:~/models/distil")
    model, _ = load_init("hf:~/models/distil")
    torch.testing.assert_close(model.embeddings.tok.weight, base.embeddings.word_embeddings.weight)


def test_an_mlm_checkpoint_loads_without_transformers_load_report(tmp_path, toy_data, capfd):
    import transformers.utils.logging as hf_logging

    from slimtext.pretrain import check_init

    _roberta_folder(tmp_path / "rob", toy_data[0], slow_files=False)
    capfd.readouterr()
    level = hf_logging.get_verbosity()
    load_hf(tmp_path / "rob")  # lm_head unused, pooler missing: slimtext's to handle, not to show
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "lm_head" not in err, err
    assert hf_logging.get_verbosity() == level  # put back
    with pytest.raises(FileNotFoundError, match="names no folder"):  # "hf:" read "."
        check_init("hf:")


def test_options_an_hf_encoder_cannot_take_are_refused_before_the_data_is_read(tmp_path):
    # another shape or a --freeze deeper than the checkpoint's layers was refused only after
    # the data had been read and split, and the weights loaded
    from transformers import BertConfig

    from slimtext.api import TextClassifier

    BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path / "bert")  # fmt: skip
    never = tmp_path / "never-read.jsonl"  # does not exist: the init is checked first
    cases = [({"hidden_size": 64}, r"keeps its shape.*hidden_size 64"),
             ({"num_heads": 4}, r"num_heads 4 \(the encoder's: 2\)"),
             ({"freeze": "embeddings+2"}, r"freeze='embeddings\+2'.*1 block")]  # fmt: skip
    for params, why in cases:
        with pytest.raises(ValueError, match=why):
            TextClassifier(init=f"hf:{tmp_path / 'bert'}", verbose=False, **params).fit(never)
