from __future__ import annotations

import json

import numpy as np
import pytest

import slimtext
import slimtext.compress.recipe as recipe_mod
from slimtext.compress.recipe import compress, parse_recipe
from slimtext.data import DataError


def test_recipe_parsing():
    assert parse_recipe("distill,prune:heads=0.5,ffn=0.5,quantize:int8-dynamic,max_drop=0.01") == [
        ("distill", {}),
        ("prune", {"heads": 0.5, "ffn": 0.5}),
        ("quantize", {"method": "int8-dynamic", "max_drop": 0.01}),
    ]
    with pytest.raises(ValueError, match="unknown compression step"):
        parse_recipe("shrink:0.5")
    with pytest.raises(ValueError, match="before any step"):
        parse_recipe("heads=0.5")


def test_recipe_chains_steps_reports_each_and_the_result_round_trips(
    teacher_dir, make_toy, tmp_path
):
    out = tmp_path / "student"
    rows = compress(
        teacher_dir, make_toy(20, seed=41), out,
        recipe="distill:layers=1,epochs=2,prune:heads=0.5,ffn=0.5,finetune=1,"
               "sparsity:0.3,steps=1,finetune=0,quantize:int8-dynamic",
        test=make_toy(10, seed=42), speed_kw={"n_latency": 5, "n_batches": 2, "warmup": 1},
        train_config={"batch_size": 16, "lr": 5e-3, "threads": 1}, log=lambda s: None,
    )  # fmt: skip
    assert [r["step"] for r in rows][0] == "teacher" and len(rows) == 5
    for key in ("accuracy", "macro_f1", "params", "size_mb", "latency_ms_p50", "throughput",
                "smaller_x", "faster_latency_x", "throughput_x"):  # fmt: skip
        assert all(key in r for r in rows), key
    assert rows[-1]["params"] < rows[0]["params"] and rows[-1]["smaller_x"] > 2
    assert rows[-1]["accuracy"] >= 0.8
    report = json.loads((out / "compression_report.json").read_text())
    assert [r["step"] for r in report] == [r["step"] for r in rows]
    md_text = (out / "compression_report.md").read_text()
    assert "| teacher |" in md_text and "against the first row (the teacher)" in md_text
    steps = [c["step"] for c in json.loads((out / "config.json").read_text())["compression"]]
    assert steps == ["distill", "prune", "prune", "prune", "quantize"]
    # where the weights came from: the input model's training data and the compression's own
    # (the output's metrics.json and card named neither)
    metrics = json.loads((out / "metrics.json").read_text())
    before = json.loads((teacher_dir / "metrics.json").read_text())["training"]["data"]
    assert metrics["training"]["data"] == before
    assert metrics["compression_data"]["train"]["rows"] == 54  # 60 texts, 10% held out
    assert metrics["compression_data"]["valid"]["held_out_fraction"] == 0.1
    card = (out / "README.md").read_text()
    assert card.count("Trained on ") == 1 and "The compression steps trained on " in card
    texts, _ = make_toy(5, seed=43)
    p = slimtext.load(out)
    assert p.predict_proba(texts).shape == (len(texts), 3)
    assert np.isclose(p.predict_proba(texts).sum(1), 1.0).all()


def test_recipe_options_for_qat_and_two_four():
    assert parse_recipe("sparsity:2:4,finetune=0,quantize:int8-dynamic,qat=2") == [
        ("sparsity", {"amount": "2:4", "finetune": 0}),
        ("quantize", {"method": "int8-dynamic", "qat": 2}),
    ]
    with pytest.raises(ValueError, match="qat and max_drop"):
        parse_recipe("quantize:int8-dynamic,qat=1,max_drop=0.01")


def test_two_four_then_qat_recipe_reports_speed_plainly_and_round_trips(
    teacher_dir, make_toy, tmp_path
):
    pytest.importorskip("torchao", reason="QAT needs torchao: pip install slimtext[quant]")
    out = tmp_path / "s24"
    rows = compress(
        teacher_dir, make_toy(15, seed=44), out,
        recipe="sparsity:2:4,finetune=1,quantize:int8-dynamic,qat=1",
        test=make_toy(8, seed=45), speed_kw={"n_latency": 5, "n_batches": 2, "warmup": 1},
        train_config={"batch_size": 16, "lr": 5e-3, "threads": 1}, log=lambda s: None,
    )  # fmt: skip
    assert (
        rows[1]["pattern"] == "2:4" and rows[1]["sparsity"] > 0.2
    )  # of all parameters: embeddings stay dense
    assert "latency_ms_p50" in rows[1] and "pattern" not in rows[2]
    md = (out / "compression_report.md").read_text()
    assert "2:4 semi-structured sparsity" in md and "no speed-up on this CPU" in md
    assert f"p50 {rows[1]['latency_ms_p50']:.2f} ms" in md
    comp = json.loads((out / "config.json").read_text())["compression"]
    assert [(c["step"], c.get("kind"), c.get("qat")) for c in comp] == [
        ("prune", "semi-structured", None),
        ("quantize", None, True),
    ]
    assert rows[2]["sparsity"] >= rows[1]["sparsity"]  # QAT held the pruned zeros
    p = slimtext.load(out)
    for name in comp[0]["modules"]:  # ... into the stored int8 weights: still 2:4
        q = p.model.get_submodule(name).qweight
        assert bool(((q.view(q.shape[0], -1, 4) == 0).sum(-1) >= 2).all()), name
    assert p.predict_proba(make_toy(2, seed=46)[0]).shape == (6, 3)
    assert rows[-1]["accuracy"] >= 0.8


# ---- long texts: compress reads them as the model does at inference ---------------------------
def _long(data):
    """The toy texts behind 30 filler words: longer than the model's 16 tokens, topic words all
    at the end, so truncation sees only filler while head-tail and chunks see the label."""
    import random

    rng = random.Random(0)
    filler = ["the", "a", "of", "and", "to", "in", "on", "for", "with", "at", "by", "from"]
    texts, labels = data
    return [" ".join(rng.choices(filler, k=30)) + " " + t for t in texts], labels


@pytest.fixture(scope="module", params=["head-tail", "chunks"])
def long_dir(request, tmp_path_factory, make_toy):
    from slimtext.api import TextClassifier

    clf = TextClassifier(
        model="transformer", vocab_size=400, hidden_size=32, num_layers=2, num_heads=4,
        ffn_size=64, max_length=16, long_text=request.param, epochs=10, batch_size=16, lr=5e-3,
        verbose=False, seed=0, threads=1,
    ).fit(_long(make_toy(40, seed=1, topical=0.9)))  # fmt: skip
    path = tmp_path_factory.mktemp("long") / request.param
    clf.save(path)
    return path


def test_compress_measures_and_gates_on_the_models_long_text_windows(long_dir, make_toy, tmp_path):
    valid = _long(make_toy(8, seed=2, topical=0.9))
    want = slimtext.TextClassifier.load(long_dir).evaluate(valid)["accuracy"]
    assert want >= 0.8  # the label is only at the end: truncation would be near chance
    out = tmp_path / "q"
    rows = compress(
        long_dir, _long(make_toy(5, seed=3)), out, recipe="quantize:int8-dynamic,max_drop=0.5",
        valid=valid, speed=False, train_config={"threads": 1}, log=lambda s: None,
    )  # fmt: skip
    assert rows[0]["accuracy"] == pytest.approx(want)
    gate = json.loads((out / "config.json").read_text())["compression"][-1]
    assert gate["float_accuracy"] == pytest.approx(want)  # max_drop measured on the same reading


def test_external_teacher_and_transfer_texts_read_long_texts_as_the_teacher_does(
    long_dir, make_toy, tmp_path
):
    test = _long(make_toy(6, seed=4, topical=0.9))
    want = slimtext.TextClassifier.load(long_dir).evaluate(test)["accuracy"]
    logs: list[str] = []
    compress(
        long_dir, _long(make_toy(5, seed=5)), tmp_path / "d", recipe="distill:epochs=1",
        test=test, teacher=long_dir, transfer=_long(make_toy(3, seed=6))[0], speed=False,
        train_config={"batch_size": 16, "threads": 1}, log=logs.append,
    )  # fmt: skip
    assert f"teacher {long_dir}: accuracy {want:.4f}" in logs
    assert logs[0].startswith("data: <memory>: ")  # what was read is said first, as eval does


def test_transfer_texts_keep_the_labelled_rows_hard_term(teacher_dir, make_toy, tmp_path):
    """With --transfer the labelled and unlabelled rows were trained as one unlabelled set:
    alpha silently became 0 (the labels were never used) and the record said so."""
    out = tmp_path / "t"
    compress(
        teacher_dir, make_toy(6, seed=71), out, recipe="distill:layers=1,epochs=1,alpha=0.7",
        transfer=make_toy(4, seed=72)[0], speed=False, log=lambda s: None,
        train_config={"batch_size": 16, "threads": 1, "class_weight": "balanced"},
    )  # fmt: skip
    rec = json.loads((out / "config.json").read_text())["compression"][-1]
    assert rec["step"] == "distill" and rec["config"]["alpha"] == 0.7


# ---- recipe and data errors: clear, and before anything runs ------------------------------------
@pytest.mark.parametrize(
    "recipe, message",
    [
        ("drop", "step 'drop' needs option keep"),
        ("drop:keep=0", "step 'drop': keep=0 must be an integer >= 1"),
        ("drop:1.5", "step 'drop': keep=1.5 must be an integer >= 1"),
        ("distill:layers=0", "step 'distill': layers=0 must be an integer >= 1"),
        ("distill,prune:heads=1.5", r"step 'prune': heads=1.5 must be a number in \[0, 1\)"),
        ("prune:importance=random", "importance=random must be one of taylor, magnitude"),
        ("sparsity:5:4", "amount=5:4 must be a number in"),
        ("lowrank:energy=0", r"energy=0 must be a number in \(0, 1\]"),
        ("finetune:epochs=-1", "epochs=-1 must be an integer >= 0"),
        ("quantize:int9", "method=int9 must be one of int8-dynamic"),
        ("quantize:int8-dynamic,group=32", "group is for int4-weight only"),
        ("quantize:int4-weight,qat=1", "qat is for int8-dynamic, int8-weight"),
        ("quantize:int8-dynamic,embeddings=maybe", "embeddings=maybe must be one of"),
        ("finetune,quantize:int8-dynamic,maxdrop=0.01", r"unknown options \['maxdrop'\]"),
        # the later value silently won: this ran int4-weight
        ("quantize:int8-dynamic,method=int4-weight", "option method given twice"),
        ("prune:heads=0.5,ffn=0.5,heads=0.25", "option heads given twice"),
    ],
)
def test_recipe_options_are_checked_when_parsed(recipe, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe(recipe)


def _no_training(*a, **k):
    raise AssertionError("the recipe should have been refused before any training")


def test_bad_last_step_fails_before_the_teacher_is_measured(
    teacher_dir, make_toy, tmp_path, monkeypatch
):
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    with pytest.raises(ValueError, match="step 'drop': keep=0"):
        compress(teacher_dir, make_toy(5, seed=60), tmp_path / "x",
                 recipe="distill:layers=1,finetune,drop:keep=0", log=lambda s: None)  # fmt: skip
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "recipe, message",
    [
        # the teacher has 2 layers, hidden 32, 4 heads, ffn 64
        ("distill:layers=3", "layers=3 is larger than the teacher's num_layers 2"),
        ("distill:ffn=128", "ffn=128 is larger than the teacher's ffn_size 64"),
        ("distill:hidden=30", "hidden_size .30. must be divisible by num_heads .4."),
        ("drop:keep=3", "keep=3 but the model has 2 layers"),
        ("distill:layers=1,drop:keep=2", "keep=2 but the model has 1 layers"),
        # steps whose work would be lost
        ("quantize:int8-dynamic,finetune", "'finetune' cannot follow 'quantize'"),
        ("quantize:int8-dynamic,quantize:int4-weight", "cannot follow 'quantize'"),
        ("prune:heads=0.5,distill", "'distill' must come first.*discard 'prune'"),
        # crashed after the earlier steps had run, or fell back without a word
        ("lowrank:0.5,prune:heads=0.5", "prune before 'lowrank'"),
        ("quantize:int4-weight,group=34", "group=34 divides no layer's input width"),
        # checked against the teacher's widths (64 divides ffn 64), it failed after distilling
        ("distill:hidden=16,ffn=32,quantize:int4-weight,group=64", r"\(hidden 16, ffn 32\)"),
        # recorded work the saved model did not have (a review helper's recipes)
        ("prune", "step 'prune' needs heads= and/or ffn="),
        ("sparsity:0.5,finetune", "'finetune' cannot follow 'sparsity:amount=0.5'.*grow back"),
        ("sparsity:0.5,prune:ffn=0.5", "cannot follow 'sparsity:amount=0.5'"),
    ],
)
def test_impossible_recipes_are_refused_before_anything_runs(
    teacher_dir, make_toy, tmp_path, monkeypatch, recipe, message
):
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    with pytest.raises(ValueError, match=message):
        compress(teacher_dir, make_toy(5, seed=61), tmp_path / "x", recipe=recipe,
                 log=lambda s: None)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_an_external_teacher_without_a_distill_step_is_refused(
    teacher_dir, make_toy, tmp_path, monkeypatch
):
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    # it was loaded, scored and reported while the student trained on labels alone
    with pytest.raises(ValueError, match="used by a 'distill' step, and the recipe has none"):
        compress(teacher_dir, make_toy(5, seed=63), tmp_path / "x", teacher=teacher_dir,
                 recipe="prune:heads=0.5,finetune", log=lambda s: None)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_transfer_texts_without_a_distill_step_are_refused(
    teacher_dir, make_toy, tmp_path, monkeypatch
):
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    # only a distill step reads them: the run went on without a word (a missing file too)
    for transfer in (["stocks fell again", "a late winner"], str(tmp_path / "missing.txt")):
        with pytest.raises(ValueError, match="transfer= .--transfer. is used by a 'distill' step"):
            compress(teacher_dir, make_toy(5, seed=63), tmp_path / "x", transfer=transfer,
                     recipe="quantize:int8-dynamic", log=lambda s: None)  # fmt: skip
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("which", ["valid", "test", "data"])
def test_a_label_the_teacher_does_not_know_names_the_label_and_the_file(
    teacher_dir, make_toy, tmp_path, monkeypatch, which
):
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    texts, labels = make_toy(5, seed=62)
    path = tmp_path / f"{which}.csv"
    path.write_text(
        "text,label\n"
        + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True))
        + "stocks up,finance\n"
    )
    kw = {"data": make_toy(5, seed=63), "valid": make_toy(3, seed=64), which: str(path)}
    with pytest.raises(DataError, match=rf"{which}.csv:\d+: label 'finance'.*of the model"):
        compress(teacher_dir, out_dir=tmp_path / "x", recipe="finetune", log=lambda s: None, **kw)


def test_a_refused_out_and_the_file_options_apply_before_anything_runs(
    teacher_dir, make_toy, tmp_path, monkeypatch
):
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="busy exists"):
        compress(teacher_dir, make_toy(5, seed=65), busy, recipe="finetune", log=lambda s: None)
    # CSV with its own column names, read through load_kw as the CLI's --text-col/--label-col
    texts, labels = make_toy(8, seed=66)
    path = tmp_path / "cols.csv"
    path.write_text(
        "title,topic\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True))
    )
    with pytest.raises(DataError, match="no text column"):
        compress(teacher_dir, str(path), tmp_path / "y", recipe="finetune", log=lambda s: None)
    with pytest.raises(AssertionError, match="before any training"):  # read: on to measuring
        compress(teacher_dir, str(path), tmp_path / "y", recipe="finetune", log=lambda s: None,
                 load_kw={"text_cols": ["title"], "label_col": "topic"})  # fmt: skip


FAST = {"speed": False, "log": lambda s: None,
        "train_config": {"batch_size": 16, "epochs": 1, "threads": 1}}  # fmt: skip


@pytest.mark.parametrize(
    "recipe",
    ["lowrank:0.8,finetune=0,drop:keep=1", "prune:heads=0.5,finetune=0,drop:keep=1",
     "prune:heads=0.5,ffn=0.5,finetune=0,drop:keep=1,quantize:int8-dynamic"],
)  # fmt: skip
def test_dropping_layers_after_structural_steps_saves_a_model_that_loads(
    teacher_dir, make_toy, tmp_path, recipe
):
    # The records of the earlier steps named the dropped blocks too: replayed on the smaller
    # model they broke every load ("ModuleList has no attribute '1'", zip length mismatch).
    out = tmp_path / "out"
    compress(teacher_dir, make_toy(10, seed=70), out, recipe=recipe, **FAST)
    texts, _ = make_toy(3, seed=71)
    assert slimtext.load(out).predict_proba(texts).shape == (len(texts), 3)


@pytest.mark.parametrize("first", ["prune:heads=0.5,finetune=0", "lowrank:0.8,finetune=0"])
@pytest.mark.parametrize("student", ["distill:layers=1,epochs=1", "distill:ffn=32,epochs=1"])
def test_distilling_a_compressed_model_saves_a_student_that_loads(
    teacher_dir, make_toy, tmp_path, first, student
):
    # Same width: the student copies the input's kept blocks, pruned or factorized as they
    # were; another width: a fresh model that none of the input's records describe.
    mid, out = tmp_path / "mid", tmp_path / "out"
    compress(teacher_dir, make_toy(10, seed=72), mid, recipe=first, **FAST)
    compress(mid, make_toy(10, seed=72), out, recipe=student, **FAST)
    texts, _ = make_toy(3, seed=73)
    assert slimtext.load(out).predict_proba(texts).shape == (len(texts), 3)


def test_a_model_made_sparse_by_an_earlier_run_keeps_its_zeros_or_its_record_goes(
    teacher_dir, make_toy, tmp_path, monkeypatch
):
    # A finetune of a `sparsity:0.5` output saved a dense model whose config.json still
    # recorded 50% sparsity (the same recipe in one run was refused).
    sparse, out = tmp_path / "sparse", tmp_path / "out"
    compress(teacher_dir, make_toy(10, seed=76), sparse, recipe="sparsity:0.5,finetune=0", **FAST)
    with monkeypatch.context() as m:
        m.setattr(recipe_mod, "measure", _no_training)
        for recipe in ("finetune", "prune:ffn=0.5", "lowrank:0.8", "drop:keep=1"):
            with pytest.raises(ValueError, match="earlier sparsity .0.5.*dense model"):
                compress(sparse, make_toy(10, seed=76), tmp_path / "x", recipe=recipe, **FAST)
    # a distilled student is trained anew: it may be made, but claims none of the zeros
    compress(sparse, make_toy(10, seed=76), out, recipe="distill:layers=1,epochs=1", **FAST)
    steps = json.loads((out / "config.json").read_text())["compression"]
    assert [r["step"] for r in steps] == ["distill"]


def test_a_quantized_model_and_its_own_directory_are_refused(teacher_dir, make_toy, tmp_path):
    import shutil

    q = tmp_path / "q"
    compress(teacher_dir, make_toy(5, seed=75), q, recipe="quantize:int8-dynamic", **FAST)
    from slimtext.compress._util import count_params

    n = count_params(slimtext.load(q).model)  # int8 weights count: the card said "0.00M"
    assert f"({n:,} parameters, hidden 32, 2 layers)" in (q / "README.md").read_text()
    with pytest.raises(ValueError, match="already quantized .int8-dynamic."):
        compress(q, make_toy(5, seed=75), tmp_path / "x", recipe="prune:heads=0.5", **FAST)
    # --out the model being compressed (or a folder holding it) would delete it at the end
    own = tmp_path / "own"
    shutil.copytree(teacher_dir, own)
    before = (own / "model.safetensors").read_bytes()
    for out in (own, tmp_path):
        with pytest.raises(ValueError, match="would delete it"):
            compress(own, make_toy(5, seed=75), out, recipe="finetune", **FAST)
    assert (own / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "kind, recipe, message",
    [
        ("attention", "prune:heads=0.5", "an attention model has none, or one narrow block"),
        ("attention", "distill,quantize:int8-dynamic", "or one narrow block"),
        ("shared", "distill", "shares one block across its layers"),
    ],
)
def test_steps_a_model_kind_cannot_take_are_refused_before_anything_runs(
    make_toy, tmp_path, monkeypatch, kind, recipe, message
):
    # They crashed after the teacher was measured, did nothing, or recorded undone work.
    from slimtext.api import TextClassifier

    shape = (dict(model="attention", hidden_size=32) if kind == "attention" else
             dict(model="transformer", hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
                  share_layers=True))  # fmt: skip
    TextClassifier(vocab_size=300, max_length=32, max_steps=2, verbose=False,
                   **shape).fit(make_toy(5, seed=3)).save(tmp_path / "m")  # fmt: skip
    monkeypatch.setattr(recipe_mod, "measure", _no_training)
    with pytest.raises(ValueError, match=message):
        compress(tmp_path / "m", make_toy(5, seed=61), tmp_path / "x", recipe=recipe,
                 log=lambda s: None)  # fmt: skip


def test_rows_skipped_on_reading_are_said(teacher_dir, make_toy, tmp_path):
    # compress --on-bad skip dropped them without a word (eval and bench say it)
    texts, labels = make_toy(5, seed=64)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                           for t, y in zip(texts, labels, strict=True)) + "{broken\n")  # fmt: skip
    logs: list[str] = []
    compress(teacher_dir, str(bad), tmp_path / "o", recipe="quantize:int8-dynamic", test=str(bad),
             speed=False, log=logs.append, load_kw={"on_bad": "skip"})  # fmt: skip
    said = [x for x in logs if "skipped 1 (1 invalid JSON)" in x]
    assert [x.split(":")[0] for x in said] == ["data", "test"], logs


def test_steps_after_a_distill_step_may_train_a_student_of_an_earlier_sparse_model():
    # The student of a model made sparse by an earlier run is dense (its records drop the
    # sparsity), but a 'finetune' after 'distill' was refused for the input's sparsity.
    from slimtext.compress.recipe import check_recipe
    from slimtext.models import ModelConfig

    cfg = ModelConfig(vocab_size=100, num_labels=2, hidden_size=32, num_layers=2, num_heads=2,
                      ffn_size=64, max_length=16)  # fmt: skip
    done = [{"step": "prune", "kind": "magnitude", "sparsity": 0.5}]
    for recipe in ("distill:layers=1,finetune", "distill:layers=1,prune:ffn=0.5,sparsity:0.5"):
        check_recipe(parse_recipe(recipe), cfg, own_teacher=True, done=done)
    with pytest.raises(ValueError, match="earlier sparsity"):  # before the distill: refused
        check_recipe(parse_recipe("finetune,distill:layers=1"), cfg, own_teacher=True, done=done)
    with pytest.raises(ValueError, match="cannot follow 'sparsity:amount=0.5'"):
        check_recipe(parse_recipe("distill:layers=1,sparsity:0.5,finetune"), cfg,
                     own_teacher=True, done=done)  # fmt: skip


def test_a_class_weighted_model_is_distilled_and_fine_tuned_with_its_class_weights(
    make_toy, tmp_path, monkeypatch
):
    # compress trains on with the model's recorded recipe, but the label term of distillation
    # (and of the steps after it) was the plain cross-entropy: a student of a model trained
    # with --class-weight balanced on 3,000 + 3 x ~120 AG News rows predicted the big class
    # only (rare-class recall 0.26-0.40 -> 0, macro-F1 0.47 -> 0.20).
    import importlib

    import torch

    from slimtext.api import TextClassifier

    # (`slimtext.compress.distill` is also the package's function of that name)
    distill_mod = importlib.import_module("slimtext.compress.distill")

    clf = TextClassifier(
        model="transformer", vocab_size=400, hidden_size=32, num_layers=2, num_heads=2,
        ffn_size=64, max_length=32, epochs=1, batch_size=16, verbose=False, threads=1,
        class_weight={"sport": 3.0},
    ).fit(make_toy(10, seed=80))  # fmt: skip
    clf.save(tmp_path / "weighted")
    weights = []
    real = distill_mod.distillation_loss

    def spy(*args, **kwargs):
        weights.append(kwargs.get("weight", args[3] if len(args) > 3 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_mod, "distillation_loss", spy)
    monkeypatch.setattr(recipe_mod, "distillation_loss", spy)
    compress(tmp_path / "weighted", make_toy(10, seed=81), tmp_path / "out",
             recipe="distill:layers=1,prune:ffn=0.5", **FAST)  # fmt: skip
    expected = torch.tensor([3.0 if lab == "sport" else 1.0 for lab in clf.classes_])
    assert len(weights) == 2  # the distill step and the prune step's fine-tuning
    for w in weights:
        assert w is not None and torch.equal(w, expected)
