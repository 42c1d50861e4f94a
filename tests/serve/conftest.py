"""Fixtures for the serving tests: one tiny trained model per session, and a stub predictor
whose speed and failures the test controls (see serve_helpers.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from serve_helpers import BAD, GOOD, StubPredictor  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from slimtext.api import TextClassifier

    clf = TextClassifier(
        model="attention", vocab_size=200, epochs=2, batch_size=16, max_length=32, verbose=False
    ).fit((GOOD + BAD, ["pos"] * 40 + ["neg"] * 40))
    path = tmp_path_factory.mktemp("serve") / "model"
    clf.save(path)
    return path


@pytest.fixture(scope="session")
def predictor(model_dir):
    import slimtext

    return slimtext.load(model_dir)


@pytest.fixture
def stub():
    return StubPredictor()
