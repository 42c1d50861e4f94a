"""Property: whatever body a client sends to /v1/classify, the answer is never a 5xx, errors
have the JSON error shape, and a 200 has one result per text."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from serve_helpers import wait_until

from slimtext.serve import create_app

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
# Mostly near-valid shapes, since those reach the deeper checks (limits, top_k, the model).
texts = st.lists(st.text(max_size=60), min_size=0, max_size=8) | st.lists(json_values, max_size=4)
near_valid = st.fixed_dictionaries(
    {"texts": texts | json_values},
    optional={"top_k": st.integers(-3, 5) | json_values, "extra": json_values},
)
bodies = near_valid | json_values


@pytest.fixture(scope="module")
def client(predictor):
    app = create_app(predictor, max_texts_per_request=6, max_text_chars=50, max_body_bytes=2000)
    with TestClient(app) as c:  # raises if the app itself crashes
        wait_until(lambda: c.get("/readyz").status_code == 200, what="/readyz")
        yield c


def check(resp, body) -> None:
    assert resp.status_code < 500, (body, resp.text)
    data = resp.json()
    if resp.status_code == 200:
        assert len(data["results"]) == len(body["texts"])
    else:
        assert resp.status_code in (400, 413, 415, 422), resp.text
        assert set(data["error"]) == {"type", "message"} and data["error"]["message"]


@SETTINGS
@given(body=bodies)
def test_any_json_body_gets_a_4xx_or_a_correct_200(client, body):
    raw = json.dumps(body)  # NaN/Infinity literals included: Python's parser takes them
    check(
        client.post("/v1/classify", content=raw, headers={"content-type": "application/json"}), body
    )


@SETTINGS
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_get_a_4xx(client, raw):
    resp = client.post("/v1/classify", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code < 500, (raw, resp.text)
    if resp.status_code != 200:
        assert resp.json()["error"]["message"]
