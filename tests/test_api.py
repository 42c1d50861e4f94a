import json

import numpy as np
import pytest

import slimtext
from slimtext.api import TextClassifier
from slimtext.data import DataError


@pytest.fixture(scope="module")
def fitted(toy_data):
    return TextClassifier(model="attention", vocab_size=400, max_length=32, epochs=4,
                          batch_size=8, verbose=False).fit(toy_data)  # fmt: skip


def test_fit_predict_score_follow_the_sklearn_contract(fitted, toy_data):
    texts, labels = toy_data
    assert list(fitted.classes_) == sorted(set(labels))
    proba = fitted.predict_proba(texts)
    assert proba.shape == (len(texts), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    pred = fitted.predict(texts)
    assert pred == [fitted.classes_[i] for i in proba.argmax(1)]
    assert fitted.score((texts, labels)) >= 0.9


def test_predictions_come_back_in_input_order_whatever_the_lengths(fitted):
    texts = ["bank " * 30, "goal", "chip software " * 10, "market", "team coach " * 5]
    proba = fitted.predict_proba(texts)
    one_by_one = np.vstack([fitted.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(proba, one_by_one, atol=1e-5)


def test_init_only_stores_arguments_and_rejects_unknown_ones():
    clf = TextClassifier(model="transformer", epochs=2, hidden_size=64)
    assert clf.params == {"epochs": 2, "hidden_size": 64}
    assert not hasattr(clf, "classes_")
    with pytest.raises(TypeError, match="unknown parameters") as e:
        TextClassifier(epochz=3)
    # the list offers what the constructor takes, and not config.json's format number
    assert "'vocab_size'" in str(e.value) and "'epochs'" in str(e.value)
    assert "'version'" not in str(e.value)
    with pytest.raises(TypeError, match="unknown parameters"):
        TextClassifier(version=2)


def test_an_option_of_the_other_model_family_is_refused_not_ignored():
    # It would be saved in config.json and change nothing: attention pools by attention, and
    # the transformer has no attention scorer.
    with pytest.raises(ValueError, match="pooling does not apply to model='attention'"):
        TextClassifier(model="attention", pooling="cls")
    with pytest.raises(ValueError, match="attention_size does not apply"):
        TextClassifier(model="transformer", attention_size=16)
    clf = TextClassifier(model="attention", attention_size=16)
    with pytest.raises(ValueError, match="pooling does not apply"):  # set_params, then fit
        clf.set_params(pooling="cls").fit((["a b", "c d"] * 4, ["x", "y"] * 4))
    TextClassifier(model="transformer", pooling="cls")  # each its own family's: accepted
    # None: not given, also when fitting (ModelConfig refused pooling=None)
    kw = dict(vocab_size=300, max_steps=1, max_length=16, verbose=False)
    fitted = TextClassifier(model="attention", pooling=None, **kw).fit(
        (["a b", "c d"] * 4, ["x", "y"] * 4)
    )
    assert fitted.model_dir_.config.pooling == "mean"  # the default, as if not given
    tiny = dict(hidden_size=16, num_layers=1, num_heads=2, ffn_size=32)
    TextClassifier(model="transformer", attention_size=None, **tiny, **kw).fit(
        (["a b", "c d"] * 4, ["x", "y"] * 4)
    )


def test_using_an_unfitted_classifier_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        TextClassifier().predict(["x"])
    # scikit-learn's own check: an unfitted estimator raises AttributeError or ValueError
    for use in ("predict", "predict_proba", "score", "save"):
        with pytest.raises(AttributeError, match="not fitted"):
            getattr(TextClassifier(), use)(["x"])


def test_save_then_load_predicts_the_same(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    texts = ["goal match", "profit bank"]
    np.testing.assert_allclose(again.predict_proba(texts), fitted.predict_proba(texts), atol=1e-6)
    assert slimtext.load(tmp_path / "m").predict(texts) == fitted.predict(texts)


def test_evaluating_on_a_label_the_model_never_saw_names_it(fitted):
    with pytest.raises(DataError, match="weather"):
        fitted.evaluate((["rain today"], ["weather"]))


def test_a_single_string_is_refused_rather_than_split_into_characters(fitted):
    with pytest.raises(TypeError, match="list of texts"):
        fitted.predict("goal")
    # a dict or a DataFrame iterates over its keys: the column names were classified
    with pytest.raises(TypeError, match="not a dict"):
        fitted.predict_proba({"text": ["goal match"]})
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["goal match", "bank profit"]})
    with pytest.raises(TypeError, match=r"not a DataFrame.*df\['text'\]"):
        fitted.predict(frame)
    assert fitted.predict(frame["text"]) == fitted.predict(["goal match", "bank profit"])


def test_import_slimtext_is_lean():
    import subprocess
    import sys

    code = (
        "import sys, slimtext; "
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'fastapi', 'datasets') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_refused_fresh_run_leaves_the_earlier_run_resumable(toy_data, tmp_path):
    # A fresh fit into a folder of checkpoints is refused; it must not have replaced the folder's
    # tokenizer (the earlier run's ids) first, nor left the thread count it asked for.
    import shutil

    import torch

    texts, labels = toy_data
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=6, batch_size=8,
              checkpoint_every=3, verbose=False)  # fmt: skip
    ck = tmp_path / "ck"
    TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck)
    shutil.rmtree(sorted(ck.glob("step-*"))[-1])  # as if killed after step 3 (so unfinished)
    (ck / "FINISHED").unlink()
    tokenizer = (ck / "tokenizer.json").read_bytes()
    threads = torch.get_num_threads()
    other = ([t.upper() + " extra words" for t in texts], labels)
    with pytest.raises(ValueError, match="earlier run.*--resume"):
        TextClassifier(threads=1, **kw).fit(other, checkpoint_dir=ck)
    assert (ck / "tokenizer.json").read_bytes() == tokenizer
    assert torch.get_num_threads() == threads
    resumed = TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck, resume=True)
    assert resumed.result_.steps == 6


def test_labels_in_memory_are_read_as_files_read_them():
    from slimtext.api import as_dataset

    texts = ["a b", "c d", "e f"]
    assert as_dataset((texts, [1, 2.0, np.int64(3)])).labels == ["1", "2", "3"]
    bad_labels = [(None, "missing"), (float("nan"), "non-integral"), ("", "missing"),
                  (True, "boolean"), (np.bool_(False), "boolean"),
                  (2.5, "non-integral")]  # fmt: skip
    for bad, why in bad_labels:
        with pytest.raises(DataError, match=f"label 1 .*{why}"):
            as_dataset((texts, ["x", bad, "y"]))


def test_malformed_texts_in_memory_are_named():
    from slimtext.api import as_dataset

    with pytest.raises(TypeError, match="single string"):
        as_dataset(("great film", "positive"))
    with pytest.raises(ValueError, match="text 1 has a lone surrogate"):
        as_dataset((["ok", "bad \udcff byte"], ["a", "b"]))
    with pytest.raises(TypeError, match="text 0 is int"):
        as_dataset(([3], ["a"]))
    with pytest.raises(ValueError, match="text 1 is empty or only whitespace"):
        as_dataset((["ok", " \t"], ["a", "b"]))


def test_a_text_dataset_made_by_hand_is_checked_as_texts_in_memory_are(fitted, toy_data):
    # A TextDataset holds its labels as text: one built with integer labels failed in a regex
    # ("expected string or bytes-like object, got 'int'"), and one with a None text in the
    # tokenizer ("object of type 'NoneType' has no len()").
    from slimtext.data import TextDataset

    texts, names = toy_data
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=1, verbose=False)
    ints = TextDataset(texts, [i % 3 for i in range(len(texts))], source="mine")
    with pytest.raises(DataError, match=r"mine row 0: label 0 is int, not str.*\(texts, labels\)"):
        TextClassifier(**kw).fit(ints)
    with pytest.raises(DataError, match="mine row 0: label 0 is int"):
        fitted.score(ints)
    holed = TextDataset(texts[:2] + [None] + texts[3:], names, source="mine")
    with pytest.raises(TypeError, match="mine row 2: text is NoneType, expected str"):
        TextClassifier(**kw).fit(holed)
    with pytest.raises(TypeError, match="mine row 2: text is NoneType"):
        TextClassifier(**kw).fit((texts, names), holed)


def test_prediction_refuses_a_blank_text_as_the_cli_and_server_do(fitted):
    # It used to answer for [CLS] [SEP] alone: a confident label for nothing.
    with pytest.raises(ValueError, match="text 2 is empty or only whitespace"):
        fitted.predict(["a fine text", "another", "  "])
    # invisible characters alone (a zero-width space, a BOM, NUL) are as empty: the tokenizer
    # drops them, so the model would answer for its special tokens alone
    for nothing in ("\u200b", "\ufeff \u200d", "\x00", " \u2060\t"):
        with pytest.raises(ValueError, match="text 1 is empty or only whitespace or invisible"):
            fitted.predict(["a fine text", nothing])
    fitted.predict(["\u200bgoal", "caf\u00e9\x00"])  # a visible character is enough


def test_save_takes_the_metrics_a_caller_has(fitted, tmp_path):
    import json

    metrics = {"test": {"accuracy": np.float32(0.5)}, "note": {"n_epochs": np.int64(3)}}
    fitted.save(tmp_path / "m", metrics=metrics)
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["test"] == {"accuracy": 0.5} and saved["note"] == {"n_epochs": 3}
    assert "- test: accuracy 0.5000 (n=?)" in (tmp_path / "m" / "README.md").read_text()
    assert slimtext.load(tmp_path / "m").predict(["goal"])  # a whole, loadable directory


def test_saved_model_names_its_training_and_validation_data(fitted, toy_data, tmp_path):
    # metrics.json and the model card named no data at all: a directory did not say what it
    # was trained on, nor that its valid figures were of rows held out of the training data
    fitted.save(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "metrics.json").read_text())["training"]["data"]
    n = len(toy_data[0])
    assert data["train"]["rows"] + data["valid"]["rows"] == n
    assert data["valid"]["held_out_fraction"] == 0.1 and data["train"]["source"] == "<memory>"
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"Trained on `<memory>` ({data['train']['rows']:,} rows); validated on" in card


def test_a_loaded_classifier_refits_the_saved_recipe(toy_data, tmp_path):
    kw = dict(model="transformer", tokenizer="wordpiece", vocab_size=300, hidden_size=32,
              num_layers=1, num_heads=2, ffn_size=64, max_length=24, max_steps=2,
              valid_fraction=0.2, verbose=False)  # fmt: skip
    TextClassifier(**kw).fit(toy_data).save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m").fit(toy_data)
    c = again.model_dir_.config
    shape = (c.hidden_size, c.num_layers, c.num_heads, c.ffn_size, c.max_length)
    assert shape == (32, 1, 2, 64, 24)
    assert again.tokenizer == "wordpiece" and again.vocab_size == 300
    assert again.valid_fraction == 0.2 and again.params["max_steps"] == 2


def test_numpy_numbers_from_a_grid_fit_and_save(toy_data, tmp_path):
    # A scikit-learn grid over np.arange / np.linspace gives numpy scalars: vocab_size=
    # np.int64(300) and valid_fraction=np.float32(0.2) were refused by the constructor (the
    # training options took them), and config.json could not have held them.
    kw = dict(model="attention", vocab_size=np.int64(300), valid_fraction=np.float32(0.25),
              seed=np.int64(1), max_length=16, max_steps=1, verbose=False)  # fmt: skip
    clf = TextClassifier(**kw)
    assert clf.get_params()["vocab_size"] is kw["vocab_size"]  # as given: scikit-learn's clone
    clf.fit(toy_data).save(tmp_path / "m")
    train = json.loads((tmp_path / "m" / "config.json").read_text())["train"]
    assert (train["vocab_size"], train["valid_fraction"], train["seed"]) == (300, 0.25, 1)
    again = TextClassifier.load(tmp_path / "m")
    assert (again.vocab_size, again.valid_fraction) == (300, 0.25)
    for bad in (dict(vocab_size=np.float64(300.0)), dict(valid_fraction=np.float64(1.0))):
        with pytest.raises(ValueError, match="vocab_size|valid_fraction"):
            TextClassifier(**bad)


def test_dir_lists_the_lazy_names():
    assert {"TextClassifier", "Predictor", "load"} <= set(dir(slimtext))


def test_evaluating_no_examples_says_so(fitted):
    with pytest.raises(DataError, match="no examples"):
        fitted.score(([], []))


@pytest.mark.parametrize(
    ("params", "message"),
    [(dict(max_steps=2.5), "max_steps must be a whole number"),
     (dict(max_steps=True), "max_steps must be a whole number"),
     (dict(hidden_size=32.0), "hidden_size must be a whole number"),
     (dict(num_layers=1.0), "num_layers must be a whole number"),
     (dict(warmup=float("inf")), "warmup must be a number >= 0"),
     (dict(vocab_size=0), "vocab_size must be a whole number >= 16"),
     (dict(max_length=2), "max_length must be >= 3"),
     (dict(seed=2**63), r"seed must be a whole number below 2\*\*63"),
     (dict(seed=1.5), "seed must be a whole number"),
     (dict(cpu_offload=True, strategy="ddp"), "cpu_offload applies to strategy fsdp only"),
     (dict(tp_size=2), "tp_size applies to strategy tp only"),
     (dict(microbatches=8, strategy="fsdp"), "microbatches applies to strategy pp only"),
     (dict(pp_schedule="gpipe"), "pp_schedule applies to strategy pp only"),
     (dict(strategy="pp", microbatches=32, batch_size=16), r"microbatches \(32\) must not ex"),
     # a YAML file's `lr: 1e-3` is the string "1e-3" to PyYAML: it failed comparing str and int
     (dict(model="attention", lr="1e-3"), "lr must be a number, got '1e-3'"),
     (dict(sparse_embeddings="false"), "sparse_embeddings must be true or false")],
)  # fmt: skip
def test_bad_numbers_are_refused_before_training(toy_data, params, message):
    with pytest.raises(ValueError, match=message):
        params = {"max_length": 16, **params}
        TextClassifier(**{"model": "transformer", "verbose": False, **params}).fit(toy_data)


def test_resume_refuses_other_tokenizer_options_and_precision(toy_data, tmp_path):
    from slimtext.train.precision import cpu_has_bf16

    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=6, batch_size=8,
              checkpoint_every=3, precision="fp32", verbose=False)  # fmt: skip
    ck = tmp_path / "ck"
    TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck)
    (ck / "FINISHED").unlink()  # as if killed at its last checkpoint: resumable
    changes = [
        dict(vocab_size=300),
        dict(tokenizer="wordpiece"),
        dict(tokenizer="bpe-cased"),
        dict(class_weight="balanced"),
    ]
    if cpu_has_bf16():  # elsewhere bf16 falls back to fp32: nothing would differ
        changes.append(dict(precision="bf16"))
    for change in changes:
        with pytest.raises(ValueError, match=f"other options.*{next(iter(change))}"):
            TextClassifier(**{**kw, **change}).fit(toy_data, checkpoint_dir=ck, resume=True)
    TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck, resume=True)  # the same: resumes


@pytest.mark.parametrize("model", ["transformer", "attention"])
def test_the_padding_row_is_the_tokenizers_pad_token_not_token_0(toy_data, tmp_path, model):
    # A RoBERTa-style vocabulary: <s> = 0, <pad> = 1. The model took pad id 0 whatever the
    # tokenizer said, so <s> (read by [CLS] pooling in every text) kept a zero, frozen embedding.
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    bl = ByteLevelBPETokenizer()
    bl.train_from_iterator(toy_data[0], vocab_size=300,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    bl._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    bl.save(str(tmp_path / "tokenizer.json"))
    extra = {"ngram_buckets": 64} if model == "attention" else {"pooling": "cls"}
    clf = TextClassifier(model=model, tokenizer=str(tmp_path / "tokenizer.json"), max_length=32,
                         hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, max_steps=5,
                         verbose=False, **extra).fit(toy_data)  # fmt: skip
    md = clf.model_dir_
    assert md.config.pad_id == md.tokenizer.pad_id == 1
    emb = md.model.embeddings.tok.weight
    assert emb[0].abs().sum() > 0 and emb[1].abs().sum() == 0  # <s> trained, <pad> is padding
    with pytest.raises(TypeError, match="unknown parameters"):
        TextClassifier(pad_id=3)


def test_valid_fraction_0_trains_on_everything_and_bad_options_name_themselves(toy_data, tmp_path):
    clf = TextClassifier(model="attention", vocab_size=400, max_length=32, max_steps=3,
                         valid_fraction=0, verbose=False).fit(toy_data)  # fmt: skip
    # one epoch of every row (81 with the default 10% held out), and no validation
    assert clf.result_.samples == len(toy_data[0]) == 90 and not clf.result_.history
    with pytest.raises(ValueError, match="model must be 'transformer' or 'attention'"):
        TextClassifier(model="transfomer")
    with pytest.raises(ValueError, match=r"valid_fraction must be in \[0, 1\)"):
        TextClassifier(valid_fraction=1.0)


def test_the_held_out_validation_split_is_reported(toy_data, capsys):
    clf = TextClassifier(model="attention", vocab_size=400, max_length=32, max_steps=1,
                         valid_fraction=0.2, verbose=True).fit(toy_data)  # fmt: skip
    err = capsys.readouterr().err
    # 90 rows in 3 classes of 30: 6 of each held out
    assert "valid: 18 rows held out of the training data (stratified 0.2)" in err
    assert "training on the other 72" in err and clf.result_.history


def test_valid_figures_are_the_saved_models_even_when_training_ran_in_bf16(toy_data):
    from slimtext.train.precision import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions")
    texts, labels = toy_data
    valid = (texts[:30], labels[:30])
    clf = TextClassifier(model="transformer", vocab_size=400, max_length=32, hidden_size=32,
                         num_layers=1, num_heads=2, ffn_size=64, epochs=2, precision="bf16",
                         verbose=False).fit((texts[30:], labels[30:]), valid)  # fmt: skip
    v, again = clf.metrics_["valid"], clf.evaluate(valid)
    assert {k: v[k] for k in ("accuracy", "macro_f1", "loss", "confusion_matrix")} == {
        k: again[k] for k in ("accuracy", "macro_f1", "loss", "confusion_matrix")
    }
    assert v["during_training"]["precision"] == "bf16"
    assert v["during_training"]["accuracy"] == clf.result_.best["accuracy"]


def test_evaluating_in_chunks_gives_the_whole_report(fitted, toy_data, monkeypatch, capsys):
    import slimtext.api as api

    whole = fitted.evaluate(toy_data)
    monkeypatch.setattr(api, "_EVAL_CHUNK", 7)  # 90 texts: 13 chunks, the last one short
    chunked = fitted.evaluate(toy_data, progress=True)
    assert "evaluating" in capsys.readouterr().err
    assert chunked["confusion_matrix"] == whole["confusion_matrix"] and chunked["n"] == 90
    assert chunked["accuracy"] == whole["accuracy"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_the_saved_recipe_records_the_vocabulary_actually_used(fitted, toy_data, tmp_path):
    fitted.save(tmp_path / "m")
    clf = TextClassifier(model="attention", tokenizer=str(tmp_path / "m" / "tokenizer.json"),
                         vocab_size=16000, max_length=32, max_steps=2, verbose=False)  # fmt: skip
    clf.fit(toy_data).save(tmp_path / "again")
    md = slimtext.artifact.read_model_dir(tmp_path / "again")
    assert md.meta["train"]["vocab_size"] == md.config.vocab_size <= 400  # not the unused 16000


def test_a_tokenizer_file_given_relative_is_recorded_where_it_is(
    tiny_model_dir, toy_data, tmp_path, monkeypatch
):
    # config.json recorded "tok.json" as typed: `TextClassifier.load(dir).fit(...)` run from
    # another folder found no such file, or silently trained on another folder's tok.json.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tok.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    monkeypatch.chdir(tmp_path / "a")
    clf = TextClassifier(model="attention", tokenizer="tok.json", max_length=16, max_steps=1,
                         verbose=False)  # fmt: skip
    clf.fit(toy_data).save(tmp_path / "m")
    train = json.loads((tmp_path / "m" / "config.json").read_text())["train"]
    assert train["tokenizer"] == str((tmp_path / "a" / "tok.json").resolve())
    monkeypatch.chdir(tmp_path)
    again = TextClassifier.load(tmp_path / "m").fit(toy_data)
    assert again.model_dir_.tokenizer.to_str() == clf.model_dir_.tokenizer.to_str()


def test_a_relative_tokenizer_path_is_read_at_fit_not_at_save(
    tiny_model_dir, toy_data, tmp_path, monkeypatch
):
    # The path was resolved when save() ran: fitted in a/, saved from b/, config.json named
    # b/tok.json (another file, or none). "~" is the user's home, from Python as from a shell.
    for d in ("a", "b", "home"):
        (tmp_path / d).mkdir()
    (tmp_path / "a" / "tok.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    (tmp_path / "home" / "tok.json").write_bytes((tmp_path / "a" / "tok.json").read_bytes())
    monkeypatch.chdir(tmp_path / "a")
    kw = dict(model="attention", max_length=16, max_steps=1, verbose=False)
    clf = TextClassifier(tokenizer="tok.json", **kw).fit(toy_data)
    monkeypatch.chdir(tmp_path / "b")
    clf.save(tmp_path / "m")
    train = json.loads((tmp_path / "m" / "config.json").read_text())["train"]
    assert train["tokenizer"] == str((tmp_path / "a" / "tok.json").resolve())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = TextClassifier(tokenizer="~/tok.json", **kw).fit(toy_data)
    assert home.model_dir_.tokenizer.to_str() == clf.model_dir_.tokenizer.to_str()


def test_saving_a_loaded_classifier_keeps_its_training_log_and_curve(toy_data, tmp_path):
    # Saved back into its own directory (after pruning it in memory, say), a loaded classifier
    # deleted the training log and curve there: the files of the run that trained it
    kw = dict(model="attention", vocab_size=400, max_length=16, max_steps=2, verbose=False)
    TextClassifier(**kw).fit(toy_data, run_dir=tmp_path / "run").save(tmp_path / "m")
    records = {n: (tmp_path / "m" / n).read_bytes() for n in ("metrics.jsonl",
                                                               "training_curve.png")}  # fmt: skip
    TextClassifier.load(tmp_path / "m").save(tmp_path / "m")
    TextClassifier.load(tmp_path / "m").save(tmp_path / "copy")
    for d in ("m", "copy"):
        assert {n: (tmp_path / d / n).read_bytes() for n in records} == records
        slimtext.load(tmp_path / d)  # and listed in its manifest
    # one changed after loading (the directory retrained meanwhile) is not another run's to copy
    clf = TextClassifier.load(tmp_path / "m")
    (tmp_path / "m" / "metrics.jsonl").write_text("{}\n")
    clf.save(tmp_path / "copy2")
    assert not (tmp_path / "copy2" / "metrics.jsonl").exists()
    assert (tmp_path / "copy2" / "training_curve.png").read_bytes() == records["training_curve.png"]


def test_integer_labels_come_back_as_integers_in_numeric_order(toy_data, tmp_path):
    # They came back as strings ("10" sorted before "2"): comparing predictions with the
    # user's own labels gave 0% accuracy.
    texts, names = toy_data
    code = {"sport": 10, "tech": 2, "money": 1}
    y = np.array([code[n] for n in names])  # numpy integers, as from pandas
    clf = TextClassifier(model="attention", vocab_size=400, max_length=32, epochs=4,
                         batch_size=8, verbose=False).fit((texts, y))  # fmt: skip
    assert list(clf.classes_) == [1, 2, 10]
    pred = clf.predict(texts)
    assert all(type(p) is int for p in pred) and np.mean(np.array(pred) == y) >= 0.9
    clf.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    assert list(again.classes_) == [1, 2, 10] and again.predict(texts[:5]) == pred[:5]
    # the plain predictor of the same directory answers alike (it gave "10", text, before)
    plain = slimtext.load(tmp_path / "m")
    assert plain.predict(texts[:5]) == pred[:5] and list(plain.classes_) == [1, 2, 10]
    assert plain.labels == ["1", "2", "10"]  # the text form, for JSON keys (serve, CLI)
    named = TextClassifier(model="attention", vocab_size=400, max_steps=1, verbose=False)
    assert list(named.fit((texts, names)).classes_) == sorted(set(names))  # strings stay strings
    # a generator of the same integers: integers too (it gave strings)
    gen = TextClassifier(model="attention", vocab_size=400, max_steps=1, verbose=False)
    assert list(gen.fit((texts, (int(v) for v in y))).classes_) == [1, 2, 10]
    # fit(X, y) with X and y generators, as predict takes a generator
    gen = TextClassifier(model="attention", vocab_size=400, max_steps=1, verbose=False)
    assert list(gen.fit(iter(texts), (int(v) for v in y)).classes_) == [1, 2, 10]


def test_labels_come_back_as_given_floats_and_spaced_text_too(toy_data, tmp_path):
    # They were normalised to the stored text ("1.0" -> "1", " a " -> "a") and came back so:
    # accuracy_score(y, clf.predict(X)) was 0 against the caller's own labels.
    texts, names = toy_data
    kw = dict(model="attention", vocab_size=400, max_length=32, epochs=4, batch_size=8,
              verbose=False)  # fmt: skip
    floats = np.array([{"sport": 0.0, "tech": 1.0, "money": 2.0}[n] for n in names])
    clf = TextClassifier(**kw).fit((texts, floats))
    assert list(clf.classes_) == [0.0, 1.0, 2.0] and clf.classes_.dtype == float
    pred = clf.predict(texts)
    assert all(type(p) is float for p in pred) and np.mean(np.array(pred) == floats) >= 0.9
    spaced = [n + " " for n in names]
    clf = TextClassifier(**kw).fit((texts, spaced))
    assert set(clf.predict(texts)) <= set(spaced) and list(clf.classes_) == sorted(set(spaced))
    clf.save(tmp_path / "m")
    assert slimtext.load(tmp_path / "m").predict(texts[:3]) == clf.predict(texts[:3])
    assert clf.score((texts, spaced)) >= 0.9
    with pytest.raises(DataError, match=r"labels 'sport' and 'sport ' would be one class"):
        TextClassifier(**kw).fit((texts, names[:-1] + ["sport "]))
    with pytest.raises(DataError, match=r"labels 1 and '1' would be one class"):
        TextClassifier(**kw).fit((texts[:4], [1, "1", 2, 2]))


def test_labels_as_one_column_are_read_as_scikit_learn_reads_them(toy_data):
    # `df[["label"]].to_numpy()` is (n, 1): its integers came back as text ("0", "10", "2",
    # in text order), a one-column DataFrame was "90 texts but 1 labels", and an (n, 2) array
    # failed with numpy's "can only convert an array of size 1 to a Python scalar".
    pd = pytest.importorskip("pandas")
    texts, names = toy_data
    ints = np.array([{"sport": 0, "tech": 2, "money": 10}[n] for n in names])
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=2, verbose=False)
    clf = TextClassifier(**kw).fit(texts, ints.reshape(-1, 1))
    assert list(clf.classes_) == [0, 2, 10]
    assert all(type(p) is int for p in clf.predict(texts[:3]))
    assert clf.score(texts, ints.reshape(-1, 1)) == clf.score(texts, ints)
    clf = TextClassifier(**kw).fit(texts, pd.DataFrame({"label": ints}))
    assert list(clf.classes_) == [0, 2, 10]
    for y in (np.stack([ints, ints], axis=1), pd.DataFrame({"a": ints, "b": ints})):
        with pytest.raises(DataError, match=r"one label per text.*\(90, 2\)"):
            TextClassifier(**kw).fit(texts, y)
        with pytest.raises(DataError, match=r"one label per text.*\(90, 2\)"):
            clf.score(texts, y)


def test_a_refit_that_fails_leaves_the_fitted_classifier_as_it_was(toy_data, tmp_path):
    # A refused refit on integer labels made a string-label classifier return int("sport").
    texts, names = toy_data
    clf = TextClassifier(model="attention", vocab_size=400, max_length=32, epochs=2,
                         batch_size=8, verbose=False).fit((texts, names))  # fmt: skip
    before = clf.predict(texts[:5])
    with pytest.raises(DataError, match="at least 2 classes"):
        clf.fit((texts, [1] * len(texts)))
    assert clf.predict(texts[:5]) == before and list(clf.classes_) == sorted(set(names))
    clf.save(tmp_path / "m")
    assert TextClassifier.load(tmp_path / "m").predict(texts[:5]) == before


def test_label_values_in_config_are_checked_and_old_label_type_still_reads(toy_data, tmp_path):
    import json

    texts, names = toy_data
    y = [{"sport": 3, "tech": 1, "money": 2}[n] for n in names]
    TextClassifier(model="attention", vocab_size=400, max_steps=2, verbose=False).fit(
        (texts, y)
    ).save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["train"]["label_values"] == [1, 2, 3]

    def rewrite(train):
        cfg["train"] = train
        cfg_path.write_text(json.dumps(cfg))
        from slimtext.fileio import write_manifest

        write_manifest(tmp_path / "m")

    # a directory from before label_values said `label_type: int`
    rewrite({k: v for k, v in cfg["train"].items() if k != "label_values"} | {"label_type": "int"})
    assert slimtext.load(tmp_path / "m").predict(texts[:3])[0] in {1, 2, 3}
    rewrite(cfg["train"] | {"label_values": [1, 2]})
    with pytest.raises(slimtext.artifact.ModelDirError, match="label_values does not match"):
        slimtext.load(tmp_path / "m")


def test_scikit_learn_can_clone_search_cross_validate_and_pickle_it(toy_data):
    # clone, get/set_params, fit(X, y), score(X, y) and pickling all failed before.
    import pickle

    sk = pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline

    texts, names = toy_data
    clf = TextClassifier(model="attention", vocab_size=400, max_length=32, epochs=3,
                         batch_size=8, verbose=False)  # fmt: skip
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == clf.get_params()
    assert clf.set_params(epochs=4).params["epochs"] == 4
    with pytest.raises(TypeError, match="unknown parameters"):
        clf.set_params(epochz=1)
    assert "epochs=4" in repr(clf) and sk.base.is_classifier(clf)
    scores = cross_val_score(clf, texts, names, cv=2)
    assert len(scores) == 2 and min(scores) >= 0.8
    search = GridSearchCV(clf, {"lr": [3e-3, 1e-9]}, cv=2).fit(texts, np.array(names))
    assert search.best_params_ == {"lr": 3e-3}  # a learning rate of ~0 cannot win
    pipe = Pipeline([("clf", clone(clf))]).fit(texts, names)
    assert pipe.score(texts, names) >= 0.8
    fitted = clone(clf).fit(texts, names)
    assert fitted.score(texts, names) == fitted.score((texts, names))
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(again.predict_proba(texts), fitted.predict_proba(texts), atol=1e-6)
    assert list(again.classes_) == list(fitted.classes_)


def test_fit_takes_texts_and_labels_as_tuples_like_lists(toy_data):
    # `X, y = zip(*rows)` gives tuples: they were read as (train, valid) sources and refused with
    # a message asking for the very call made (GridSearchCV failed at its final refit).
    import torch

    texts, names = toy_data
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=2, verbose=False)
    want = TextClassifier(**kw).fit(texts, names).model_dir_.model.state_dict()
    for x, y in [(tuple(texts), tuple(names)), (list(texts), tuple(names)),
                 (tuple(texts), list(names))]:  # fmt: skip
        got = TextClassifier(**kw).fit(x, y).model_dir_.model.state_dict()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    with pytest.raises(TypeError, match="data must be"):  # texts without labels, valid data
        TextClassifier(**kw).fit(list(texts), (texts, names))


def test_set_params_after_fit_does_not_change_the_recipe_saved(toy_data, tmp_path):
    # config.json described the next fit's recipe (wordpiece/3000) beside a BPE tokenizer.json
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=2, verbose=False)
    new = dict(vocab_size=3000, tokenizer="wordpiece", valid_fraction=0.3, max_steps=5)
    clf = TextClassifier(**kw).fit(toy_data).set_params(**new)
    train = json.loads((clf.save(tmp_path / "a") / "config.json").read_text())["train"]
    want = {"tokenizer": "bpe", "vocab_size": 400, "valid_fraction": 0.1, "max_steps": 2}
    assert {k: train[k] for k in want} == want
    loaded = TextClassifier.load(tmp_path / "a").set_params(**new)
    train = json.loads((loaded.save(tmp_path / "b") / "config.json").read_text())["train"]
    assert {k: train[k] for k in want} == want
    assert clf.get_params()["vocab_size"] == 3000  # and the next fit takes the new ones


def test_classes_are_in_numpy_unique_order_and_mixed_kinds_are_refused(toy_data):
    # scikit-learn's probability scorers read predict_proba's columns in np.unique(y) order:
    # ordered by the stored text (" s" -> "s") the columns were scored as the wrong classes.
    texts, names = toy_data
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=2, verbose=False)
    for labels in ([{"sport": " w", "tech": "b ", "money": "t t"}[n] for n in names],
                   [{"sport": "10", "tech": "2", "money": "9"}[n] for n in names]):  # fmt: skip
        clf = TextClassifier(**kw).fit(texts, labels)
        assert list(clf.classes_) == list(np.unique(labels))
    with pytest.raises(DataError, match=r"labels mix text and numbers \(0 and '(tech|money)'\)"):
        TextClassifier(**kw).fit(texts, [0 if n == "sport" else n for n in names])


def test_a_pickled_classifier_predicts_as_the_original(tiny_model_dir, tmp_path):
    # Only backend, device and batch size travelled: a long_text="chunks" classifier came back
    # truncating, and one on a chosen ONNX file came back on a fresh export.
    import pickle

    long = ["goal match team " * 40, "bank market shares " * 30, "chip software code " * 50]
    clf = TextClassifier.load(tiny_model_dir, long_text="chunks")
    again = pickle.loads(pickle.dumps(clf))
    assert again._predictor.long_text == "chunks"
    np.testing.assert_allclose(again.predict_proba(long), clf.predict_proba(long), atol=1e-6)
    pytest.importorskip("onnxruntime")
    from slimtext.export import export_onnx

    onnx = export_onnx(tiny_model_dir, out=tmp_path / "mine.onnx")
    clf = TextClassifier.load(tiny_model_dir, backend="onnxruntime", onnx_path=onnx)
    again = pickle.loads(pickle.dumps(clf))
    assert again._predictor.made_with["onnx_path"] == onnx
    np.testing.assert_allclose(again.predict_proba(long), clf.predict_proba(long), atol=1e-6)


def test_a_loaded_predictor_pickles_and_copies_with_its_own_model(tiny_model_dir):
    # slimtext.load's predictor could not be pickled ("Can't pickle local object
    # 'Predictor._torch_runner.<locals>.run'"), and a deep copy kept the original's runner: it
    # predicted with the original's model, whatever was done to its own.
    import copy
    import pickle

    import torch

    texts = ["goal match team", "bank market shares " * 30]
    pred = slimtext.load(tiny_model_dir, long_text="chunks")
    want = pred.predict_proba(texts)
    for again in (pickle.loads(pickle.dumps(pred)), copy.deepcopy(pred)):
        assert (again.backend, again.long_text) == ("torch", "chunks")
        np.testing.assert_allclose(again.predict_proba(texts), want, atol=1e-6)
        assert again.predict(texts) == pred.predict(texts)
        with torch.no_grad():
            for p in again.model.head.parameters():
                p.zero_()
        np.testing.assert_allclose(again.predict_proba(texts), 1 / 3, atol=1e-6)
        np.testing.assert_array_equal(pred.predict_proba(texts), want)  # the original's own


def test_a_copied_classifier_is_not_taken_for_an_edited_one(tiny_model_dir, tmp_path):
    # The weights' fingerprint holds storage addresses, new in every copy: a pickled, joblib'd or
    # deep-copied classifier counted as edited (its figures set aside on save, export refused).
    import copy
    import pickle

    import torch

    clf = TextClassifier.load(tiny_model_dir)
    assert "valid" in clf.metrics_
    for i, again in enumerate([pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)]):
        assert again.model_dir_.weights_as_read()
        saved = json.loads((again.save(tmp_path / f"c{i}") / "metrics.json").read_text())
        assert "valid" in saved and "before_changes_in_memory" not in saved
    with torch.no_grad():
        clf.model_dir_.model.head.weight.mul_(2)  # edited: and still edited in a copy
    for i, again in enumerate([pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)]):
        assert not again.model_dir_.weights_as_read()
        saved = json.loads((again.save(tmp_path / f"e{i}") / "metrics.json").read_text())
        assert "valid" not in saved and "valid" in saved["before_changes_in_memory"]


def test_fit_gives_the_caller_its_random_stream_back(toy_data):
    import torch

    def after_fit(seed):
        torch.manual_seed(seed)
        TextClassifier(model="transformer", vocab_size=200, max_length=16, max_steps=2,
                       hidden_size=16, num_layers=1, num_heads=2, ffn_size=16,
                       verbose=False).fit(toy_data)  # fmt: skip
        return torch.rand(3)

    torch.manual_seed(1)
    expected = torch.rand(3)
    # fit seeds torch's global streams for its own run (same seed, same weights) ...
    torch.testing.assert_close(after_fit(1), expected)  # ... and restores the caller's
    assert not torch.equal(after_fit(2), expected)


def test_early_stopping_without_validation_data_is_refused(toy_data):
    clf = TextClassifier(model="attention", vocab_size=200, max_steps=1, valid_fraction=0,
                         patience=2, verbose=False)  # fmt: skip
    with pytest.raises(ValueError, match="patience .* needs validation data"):
        clf.fit(toy_data)


def test_resume_without_a_checkpoint_learns_the_tokenizer_asked_for(toy_data, tmp_path):
    from slimtext.tokenizer import train_tokenizer

    texts, _ = toy_data
    ck = tmp_path / "ck"
    ck.mkdir()
    # a run killed before its first checkpoint left only its tokenizer (a wordpiece one)
    train_tokenizer(texts, vocab_size=120, kind="wordpiece").save(ck / "tokenizer.json")
    clf = TextClassifier(model="attention", tokenizer="bpe", vocab_size=300, max_steps=1,
                         verbose=False)  # fmt: skip
    clf.fit(toy_data, checkpoint_dir=ck, resume=True)
    # it reused the killed run's, ignoring the options this run asked for
    assert type(clf.model_dir_.tokenizer.backend.model).__name__ == "BPE"


def test_without_keep_best_the_figures_are_the_kept_last_weights(toy_data):
    clf = TextClassifier(model="attention", vocab_size=300, epochs=4, lr=0.05, keep_best=False,
                         precision="fp32", verbose=False).fit(toy_data)  # fmt: skip
    last = clf.result_.history[-1]
    valid = clf.metrics_["valid"]
    # they were the best epoch's, of weights that were not kept
    assert valid["accuracy"] == pytest.approx(last["valid_accuracy"])
    assert valid["during_training"]["epoch"] == last["epoch"]


def test_encoder_block_options_on_a_model_without_blocks_are_said_to_do_nothing():
    import warnings

    with pytest.warns(UserWarning, match="num_heads shape.*num_layers=0, the attention model"):
        TextClassifier(model="attention", num_heads=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TextClassifier(model="attention", num_layers=1, num_heads=2)  # with blocks: fine
    with pytest.warns(UserWarning, match="ffn_size.*no effect"):
        TextClassifier(model="transformer", num_layers=0, ffn_size=64)


@pytest.mark.parametrize(
    ("params", "message"),
    [(dict(embeddings="bag"), "bag"), (dict(precision="fp8"), "precision"),
     (dict(dropout=1.0), "dropout"), (dict(freeze="embeddings+5", num_layers=2), "has 2 blocks")],
)  # fmt: skip
def test_bad_shapes_are_refused_before_the_tokenizer_is_learned(toy_data, monkeypatch, params,
                                                                message):  # fmt: skip
    import slimtext.api

    def learned(*a, **k):  # a minute or more on large data, before the refusal came
        raise AssertionError("the tokenizer was learned first")

    monkeypatch.setattr(slimtext.api, "train_tokenizer", learned)
    with pytest.raises(ValueError, match=message):
        TextClassifier(**{"model": "transformer", "verbose": False, **params}).fit(toy_data)


def test_a_split_that_holds_out_far_more_than_asked_says_so(toy_data):
    import warnings

    # 2,000 classes of 1-3 rows: "stratified 0.1" held out a third, without a word
    texts, _ = toy_data
    labels = [f"c{i // 2}" for i in range(len(texts))]  # classes of two rows: half held out
    kw = dict(model="attention", vocab_size=300, max_length=32, max_steps=1, verbose=False)
    with pytest.warns(UserWarning, match=r"holds out 50% of the rows, not 10%"):
        TextClassifier(**kw).fit(texts, labels)
    with pytest.warns(UserWarning, match=r"not 0\.5%"):  # not "0%"
        TextClassifier(valid_fraction=0.005, **kw).fit(texts, labels)
    from slimtext.api import _warn_if_split_is_lopsided
    from slimtext.data import TextDataset, stratified_split

    big = TextDataset([f"t{i}" for i in range(2000)], [str(i % 4) for i in range(2000)], "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 rows of 2,000 at 0.1%: a few over, no news
        _warn_if_split_is_lopsided(*stratified_split(big, 0.001), 0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a usual split: no warning
        TextClassifier(**kw).fit(toy_data)


def test_a_fit_interrupted_in_its_last_evaluation_leaves_the_last_model(toy_data, monkeypatch):
    # The new model, its metrics and recipe were in place before the closing evaluation: a
    # Ctrl-C there left the classifier holding a model the user saw fail to fit.
    import slimtext.api as api

    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=4, batch_size=8,
              keep_best=False, verbose=False)  # fmt: skip
    clf = TextClassifier(**kw).fit(toy_data)
    texts = toy_data[0][:5]
    before = (clf.model_dir_, dict(clf.metrics_), clf.get_params(), clf.predict_proba(texts))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(seed=5, max_steps=6).fit(toy_data)
    assert clf.model_dir_ is before[0] and clf.metrics_ == before[1]
    np.testing.assert_array_equal(clf.predict_proba(texts), before[3])
    assert clf._fitted_params == before[2]  # the recipe save() writes is the fitted one's


def test_refitting_into_a_finished_fits_checkpoints_starts_afresh(toy_data, tmp_path):
    # A re-run notebook cell was refused: "holds checkpoints of an earlier run: resume it"
    ck = tmp_path / "ck"
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=4, batch_size=8,
              checkpoint_every=2, verbose=False)  # fmt: skip
    first = TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck)
    assert (ck / "FINISHED").is_file()
    for resume in (False, True):
        again = TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck, resume=resume)
        assert not again.result_.resumed_at and again.result_.steps == 4
        np.testing.assert_allclose(
            again.predict_proba(toy_data[0][:5]), first.predict_proba(toy_data[0][:5]), atol=1e-6
        )
    # a folder of the caller's own (the working folder, with their data): only slimtext's
    # files go when it starts afresh (everything else in it was deleted)
    mine = ["notes.txt", "step-notes.md", ".step-log", "step-by-step/plan.txt", "data/x"]
    for name in mine:  # (names like a checkpoint's were taken for one and deleted)
        (ck / name).parent.mkdir(exist_ok=True)
        (ck / name).write_text("mine")
    TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck)
    assert all((ck / name).read_text() == "mine" for name in mine)
    # an unfinished run's checkpoints are still refused without resume
    (ck / "FINISHED").unlink()
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run"):
        TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck)


def test_fit_takes_texts_labels_and_validation_data_together(toy_data):
    texts, labels = toy_data
    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=2, batch_size=8,
              verbose=False)  # fmt: skip
    valid = (texts[:20], labels[:20])
    a = TextClassifier(**kw).fit(texts[20:], labels[20:], valid=valid)  # was a TypeError
    b = TextClassifier(**kw).fit((texts[20:], labels[20:]), valid)
    c = TextClassifier(**kw).fit(texts[20:], labels[20:], valid)
    assert a.metrics_["valid"]["n"] == b.metrics_["valid"]["n"] == c.metrics_["valid"]["n"] == 20
    np.testing.assert_array_equal(a.predict_proba(texts[:5]), b.predict_proba(texts[:5]))
    with pytest.raises(TypeError, match="validation data given twice"):
        TextClassifier(**kw).fit((texts, labels), valid, valid=valid)


def test_fit_refuses_a_checkpoint_folder_another_run_is_using(toy_data, tmp_path):
    # only the CLI held the folder: fit(resume=True) from Python ran into a run in progress
    from other_run import another_run

    kw = dict(model="attention", vocab_size=400, max_length=32, max_steps=2, batch_size=8,
              checkpoint_every=1, verbose=False)  # fmt: skip
    ck = tmp_path / "ck"
    with another_run(ck) as pid:
        for resume in (True, False):
            with pytest.raises(ValueError, match=rf"in use by another run \(pid {pid}\)"):
                TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck, resume=resume)
    TextClassifier(**kw).fit(toy_data, checkpoint_dir=ck, resume=True)  # once it is done


@pytest.mark.parametrize("keep_best", [True, False])
def test_valid_figures_with_class_weights_are_what_eval_reports(toy_data, tmp_path, keep_best):
    # Training's validation loss is the weighted one (the objective trained); metrics.json's
    # valid is the saved model's own report, as `slimtext eval MODEL --data VALID` prints it.
    from typer.testing import CliRunner

    from slimtext.cli import app

    texts, labels = toy_data
    valid = (texts[:30], labels[:30])
    weights = {lab: w for lab, w in zip(sorted(set(labels)), (5.0, 0.5, 1.0), strict=True)}
    clf = TextClassifier(model="attention", vocab_size=300, max_length=32, epochs=2,
                         class_weight=weights, keep_best=keep_best, precision="fp32",
                         verbose=False).fit((texts[30:], labels[30:]), valid)  # fmt: skip
    clf.save(tmp_path / "m")
    v = json.loads((tmp_path / "m" / "metrics.json").read_text())["valid"]
    again = clf.evaluate(valid)
    for k in ("accuracy", "macro_f1", "confusion_matrix"):
        assert v[k] == again[k]
    assert v["loss"] == pytest.approx(again["loss"], rel=1e-6)
    # the weighted figures training saw are kept apart, named as such
    during = v["during_training"]
    last = clf.result_.history[-1]
    if keep_best:
        assert during["loss"] == clf.result_.best["loss"]
    else:
        assert during["loss"] == last["valid_loss"]
    assert during["loss"] != pytest.approx(v["loss"], rel=1e-3)  # the weights do change it
    assert during["class_weight"] == weights
    data = tmp_path / "valid.jsonl"
    rows = zip(*valid, strict=True)
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    out = CliRunner().invoke(app, ["eval", str(tmp_path / "m"), "--data", str(data), "--json"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    assert printed["accuracy"] == v["accuracy"]
    assert printed["loss"] == pytest.approx(v["loss"], rel=1e-6)
