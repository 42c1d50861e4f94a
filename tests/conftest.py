"""Shared fixtures: tiny synthetic data made in the test, and a path to ../shared/datasets."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# Help and error boxes (rich) are wrapped to the terminal's width: in a narrow one (COLUMNS=40)
# the phrases tests look for were split across lines. Fixed here, so results do not depend on
# the shell the tests run from (subprocesses inherit it too).
os.environ["COLUMNS"] = os.environ["TERMINAL_WIDTH"] = "200"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

TOPICS = {
    "sport": "match goal team player coach league score win season cup",
    "tech": "software chip computer phone internet data code network device app",
    "money": "bank market shares profit price economy trade stock investor rates",
}


def make_texts(n_per_class: int = 30, seed: int = 0, min_words: int = 4, max_words: int = 20):
    """Separable toy topics with varied lengths (so batches really need padding)."""
    rng = random.Random(seed)
    filler = ["the", "a", "of", "and", "to", "in", "on", "for", "with", "at", "by", "from"]
    texts, labels = [], []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(n_per_class):
            k = rng.randint(min_words, max_words)
            toks = [
                rng.choice(vocab) if rng.random() < 0.6 else rng.choice(filler) for _ in range(k)
            ]
            texts.append(" ".join(toks))
            labels.append(label)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


@pytest.fixture(scope="session")
def toy_texts():
    """`make_texts` itself, for tests that need other sizes (conftest is not importable by name
    from every test directory)."""
    return make_texts


@pytest.fixture(scope="session")
def toy_data():
    return make_texts()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_data):
    """A trained, saved tiny transformer (seconds to make); shared by read-only tests."""
    from slimtext.api import TextClassifier

    clf = TextClassifier(
        model="transformer", vocab_size=400, hidden_size=32, num_layers=1, num_heads=2,
        ffn_size=64, max_length=32, epochs=8, batch_size=16, lr=5e-3, verbose=False,
    ).fit(toy_data)  # fmt: skip
    path = tmp_path_factory.mktemp("models") / "tiny"
    clf.save(path)
    return path


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS
