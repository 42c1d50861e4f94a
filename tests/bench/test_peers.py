"""Peers: the HF pipeline on the exact mapping answers like slimtext; the no-pickle save/load of
the TF-IDF and fastText peers round-trips; one contender measured in a fresh process."""

from __future__ import annotations

import json

import pytest

from slimtext.bench.measure import Plan, Spec, run_isolated
from slimtext.bench.peers import (
    FastTextPeer,
    PeerUnavailable,
    TfidfPeer,
    hf_from_model_dir,
    open_hf_pipeline,
    open_ort,
    ort_int8_from_hf,
)
from slimtext.infer import load


@pytest.fixture(scope="module")
def texts(toy_texts):
    # 1..60 words: some are truncated at max_length 32, so truncation must agree too.
    return toy_texts(10, seed=3, min_words=1, max_words=60)[0]


def test_hf_pipeline_on_the_exact_mapping_predicts_like_slimtext(cls_model_dir, texts, tmp_path):
    pytest.importorskip("transformers")
    hf_dir = hf_from_model_dir(cls_model_dir, tmp_path / "hf")
    pred = load(cls_model_dir, batch_size=8)
    ref = pred.predict(texts)
    assert len(set(ref)) > 1, "a model that answers one class would make this test vacuous"
    fn = open_hf_pipeline(hf_dir, pred.model_dir.max_length)
    for bs in (1, 8, 64):  # padding inside the pipeline's batches must not change anything
        got = [y for i in range(0, len(texts), bs) for y in fn(texts[i : i + bs])]
        assert got == ref, bs


@pytest.mark.parametrize("optimize", [False, True], ids=["ort", "ort-opt"])
def test_ort_int8_peer_agrees_with_the_model_it_quantises(cls_model_dir, texts, tmp_path, optimize):
    pytest.importorskip("onnxruntime")
    hf_dir = hf_from_model_dir(cls_model_dir, tmp_path / "hf")
    info = ort_int8_from_hf(hf_dir, tmp_path / "ort", optimize=optimize)
    if optimize:  # ORT's BERT optimizer really fused the graph it then quantised
        import onnx

        ops = {n.op_type for n in onnx.load(info["path"]).graph.node}
        assert "QAttention" in ops and "SkipLayerNormalization" in ops, ops
    fn = open_ort(info["path"], hf_dir, 32)
    ref = load(cls_model_dir).predict(texts)
    agree = sum(a == b for a, b in zip(fn(texts), ref, strict=True)) / len(ref)
    assert agree >= 0.9


def test_mean_pooling_has_no_exact_hf_mapping(tiny_model_dir, tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(PeerUnavailable, match="pooling='mean'"):
        hf_from_model_dir(tiny_model_dir, tmp_path / "hf")


def test_fast_peers_round_trip_without_pickle(toy_data, texts, tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("fasttext")
    from slimtext.data import TextDataset

    train = TextDataset(texts=list(toy_data[0]), labels=list(toy_data[1]), source="toy")
    labels = train.label_set()
    for peer in (
        TfidfPeer(cs=(1.0, 4.0)).fit(train),
        FastTextPeer(threads=1, epoch=5, bucket=20000, dim=16).fit(train, labels),
    ):
        folder = peer.save(tmp_path / type(peer).__name__)
        assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.joblib"))
        again = type(peer).load(folder)
        assert again.predict(texts) == peer.predict(texts)
        assert set(peer.predict(texts)) <= set(labels)


def test_a_fresh_process_reports_its_own_peak_memory(cls_model_dir, bench_data, tmp_path):
    _, test = bench_data
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    spec = Spec(kind="slimtext", path=str(cls_model_dir), backend="torch", eval_file=str(test),
                labels=sorted({r["label"] for r in rows}), threads=1,
                plan=vars(Plan(n_accuracy=len(rows), seconds=1.0)))  # fmt: skip
    res = run_isolated(spec, tmp_path, timeout=120)
    assert res["memory_method"].startswith("fresh process")
    assert res["peak_rss_mb"] >= res["rss_before_load_mb"] > 50  # torch alone is more than that
    assert res["n"] == len(rows) and res["torch_threads"] == 1


@pytest.mark.parametrize("optimize", [False, True], ids=["ort", "ort-opt"])
def test_ort_peer_of_a_model_shorter_than_the_export_dummy(toy_data, texts, tmp_path, optimize):
    """max_length 8: fewer positions than the 16-token dummy input the export used to trace."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("transformers")
    from slimtext.api import TextClassifier

    short = tmp_path / "short"
    TextClassifier(
        model="transformer", pooling="cls", vocab_size=400, hidden_size=16, num_layers=1,
        num_heads=2, ffn_size=32, max_length=8, epochs=1, batch_size=32, verbose=False,
    ).fit(toy_data).save(short)  # fmt: skip
    hf_dir = hf_from_model_dir(short, tmp_path / "hf")
    info = ort_int8_from_hf(hf_dir, tmp_path / "ort", optimize=optimize)
    got = open_ort(info["path"], hf_dir, 8)(texts)  # texts up to 60 words: all truncated to 8
    assert len(got) == len(texts) and set(got) <= set(toy_data[1])


def test_ort_opt_peer_says_when_attention_was_not_fused(cls_model_dir, tmp_path, monkeypatch):
    # On torch 2.11 + transformers 5.17 + onnxruntime 1.30 the optimizer fused no attention:
    # the peer must not pass for the fused one silently.
    pytest.importorskip("onnxruntime")
    import onnxruntime.transformers.optimizer as opt

    real = opt.optimize_model

    def unfused(*a, **kw):
        m = real(*a, **kw)
        m.get_fused_operator_statistics = lambda: {"Attention": 0, "SkipLayerNormalization": 2}
        return m

    monkeypatch.setattr(opt, "optimize_model", unfused)
    hf_dir = hf_from_model_dir(cls_model_dir, tmp_path / "hf")
    with pytest.warns(UserWarning, match="attention NOT fused in 1 of the layers"):
        info = ort_int8_from_hf(hf_dir, tmp_path / "ort", optimize=True)
    assert "attention NOT fused" in info["route"]


def test_hf_peer_trains_on_the_rows_of_the_models_classes(tiny_model_dir, toy_data, tmp_path):
    # A --train class the model lacks was a bare KeyError, and the hf and ort peers were lost.
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers.Trainer's
    from slimtext.bench.peers import hf_train_same_shape
    from slimtext.data import TextDataset

    texts, labels = toy_data
    train = TextDataset(texts + ["weather rain sun"] * 3, labels + ["weather"] * 3, source="t")
    info = hf_train_same_shape(tiny_model_dir, train, tmp_path / "hf", max_steps=2, seconds=None)
    assert info["steps"] == 2 and info["rows_of_other_classes_left_out"] == 3
    with pytest.raises(ValueError, match="none of the --train labels"):
        hf_train_same_shape(tiny_model_dir, TextDataset(["x y"], ["weather"], source="t"),
                            tmp_path / "h2", max_steps=1, seconds=None)  # fmt: skip


def test_a_model_fitted_on_integer_labels_is_scored_on_its_stored_labels(toy_data, tmp_path):
    """`fit(texts, [0, 1, 2])` gives a model whose `predict` answers ints, while a test file's
    labels are read as text ("0"): bench compared the two and scored every answer wrong."""
    from slimtext.api import TextClassifier
    from slimtext.bench.measure import accuracy_report
    from slimtext.bench.peers import open_contender

    texts, labels = toy_data
    ints = sorted(set(labels))
    y = [ints.index(lab) for lab in labels]
    clf = TextClassifier(model="attention", hidden_size=16, vocab_size=300, max_length=16,
                         epochs=4, lr=5e-3, valid_fraction=0, verbose=False)  # fmt: skip
    clf.fit(texts, y)
    clf.save(tmp_path / "m")
    spec = Spec(kind="slimtext", path=str(tmp_path / "m"), eval_file="", labels=[], plan={},
                backend="torch")  # fmt: skip
    fn, _ = open_contender(spec)
    got = list(fn(texts))
    assert got == [str(v) for v in clf.predict(texts)]
    stored = load(tmp_path / "m").labels
    report = accuracy_report([str(v) for v in y], got, stored)
    assert report["accuracy"] == pytest.approx(clf.score(texts, y))
