"""A tiny [CLS]-pooled transformer (so the HF mapping is exact) and toy train/test JSONL files,
shared read-only by the bench tests. One torch thread: the tests share a 2-core machine."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _write_jsonl(path, texts, labels):
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(texts, labels, strict=True):
            f.write(json.dumps({"text": t, "label": y}) + "\n")
    return path


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory, toy_texts):
    """(train.jsonl, test.jsonl): 120 and 150 toy topic texts (test: three calls of 64 in
    arrival order, so the arrival-order rate has calls after the first to time)."""
    d = tmp_path_factory.mktemp("bench-data")
    train = _write_jsonl(d / "train.jsonl", *toy_texts(40, seed=0))
    test = _write_jsonl(d / "test.jsonl", *toy_texts(50, seed=1, min_words=1, max_words=40))
    return train, test


@pytest.fixture(scope="session")
def cls_model_dir(tmp_path_factory, toy_data):
    import torch

    from slimtext.api import TextClassifier

    torch.set_num_threads(1)
    clf = TextClassifier(
        model="transformer", pooling="cls", vocab_size=400, hidden_size=32, num_layers=1,
        num_heads=2, ffn_size=64, max_length=32, epochs=4, batch_size=16, lr=5e-3,
        verbose=False,
    ).fit(toy_data)  # fmt: skip
    path = tmp_path_factory.mktemp("bench-models") / "tiny-cls"
    clf.save(path)
    return path
