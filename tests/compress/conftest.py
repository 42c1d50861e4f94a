"""A tiny trained teacher (hidden 32, 2 layers, 4 heads) shared read-only by the compress tests,
and toy topic data (the same generator as tests/conftest.py, with other seeds)."""

from __future__ import annotations

import random

import pytest

TOPICS = {
    "sport": "match goal team player coach league score win season cup",
    "tech": "software chip computer phone internet data code network device app",
    "money": "bank market shares profit price economy trade stock investor rates",
}


def toy_texts(n_per_class: int, seed: int, topical: float = 0.6):
    rng = random.Random(seed)
    filler = ["the", "a", "of", "and", "to", "in", "on", "for", "with", "at", "by", "from"]
    rows = []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per_class):
            k = rng.randint(4, 20)
            toks = [rng.choice(vocab) if rng.random() < topical else rng.choice(filler)
                    for _ in range(k)]  # fmt: skip
            rows.append((" ".join(toks), label))
    rng.shuffle(rows)
    return [t for t, _ in rows], [y for _, y in rows]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one thread avoids oversubscription (10x faster here)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def make_toy():
    return toy_texts


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    from slimtext.api import TextClassifier

    clf = TextClassifier(
        model="transformer", vocab_size=400, hidden_size=32, num_layers=2, num_heads=4,
        ffn_size=64, max_length=32, epochs=4, batch_size=16, lr=5e-3, verbose=False, seed=0,
        threads=1,
    ).fit(toy_texts(40, seed=1))  # fmt: skip
    path = tmp_path_factory.mktemp("compress") / "teacher"
    clf.save(path)
    return path


@pytest.fixture
def teacher(teacher_dir):
    """A fresh load of the teacher directory: its model may be changed in place."""
    from slimtext.artifact import read_model_dir

    return read_model_dir(teacher_dir)


@pytest.fixture
def batches(teacher):
    """Padded labelled batches of fresh toy texts, encoded with the teacher's tokenizer."""
    from slimtext.compress._util import calibration_batches

    return calibration_batches(
        encode(teacher, toy_texts(10, seed=7)), teacher.tokenizer.pad_id, 2, 16
    )


def encode(md, data):
    from slimtext.train.trainer import Encoded

    texts, labels = data
    index = {lab: i for i, lab in enumerate(md.labels)}
    return Encoded(md.tokenizer.encode(texts, md.max_length), [index[y] for y in labels])


def logits(model, batches):
    import torch

    model.eval()
    with torch.inference_mode():
        return torch.cat([model(b.input_ids, b.attention_mask) for b in batches])


@pytest.fixture(scope="session")
def h():
    """Helpers as a fixture (test modules here are not a package, so no relative imports)."""
    from types import SimpleNamespace

    return SimpleNamespace(encode=encode, logits=logits, toy=toy_texts, batches_of=batches_of)


def batches_of(md, data, n_batches: int = 4, batch_size: int = 16):
    """Padded labelled batches of `data` (texts, labels) encoded with `md`'s tokenizer."""
    from slimtext.compress._util import calibration_batches

    return calibration_batches(encode(md, data), md.tokenizer.pad_id, n_batches, batch_size)
