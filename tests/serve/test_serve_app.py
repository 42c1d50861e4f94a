"""The HTTP API: every endpoint, every class of bad input, batching through the app, overload,
inference errors, API keys. In-process (TestClient / httpx ASGITransport), no sockets."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import StubPredictor, async_wait_until, run_async, serving, wait_until

from slimtext.serve import create_app

JSON = {"content-type": "application/json"}


@pytest.fixture
def client_for():
    """client_for(app) -> a TestClient with the lifespan running and the model warmed up."""
    opened = []

    def make(app):
        client = TestClient(app).__enter__()
        opened.append(client)
        wait_until(lambda: client.get("/readyz").status_code == 200, what="/readyz")
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(predictor, client_for):
    return client_for(create_app(predictor, max_text_chars=100, max_texts_per_request=20))


def assert_error(resp, status: int, type_: str, *in_message: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["type"] == type_
    for part in in_message:
        assert part in err["message"], err["message"]
    return err


# -- the happy path -------------------------------------------------------------------------------


def test_classify_matches_predictor_in_input_order(client, predictor):
    texts = ["good great fine", "bad awful poor", "ok", "good " * 19, "unknown words here"]
    resp = client.post("/v1/classify", json={"texts": texts, "top_k": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == "model"
    probs = predictor.predict_proba(texts)
    assert len(body["results"]) == len(texts)
    for row, p in zip(body["results"], probs, strict=True):
        assert row["label"] == predictor.labels[int(p.argmax())]
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-5)
        assert [t["label"] for t in row["top_k"]] == [predictor.labels[j] for j in np.argsort(-p)]
        got = {t["label"]: t["score"] for t in row["top_k"]}
        for j, label in enumerate(predictor.labels):
            assert got[label] == pytest.approx(float(p[j]), abs=1e-5)


def test_top_k_is_omitted_unless_asked(client):
    row = client.post("/v1/classify", json={"texts": ["good"]}).json()["results"][0]
    assert set(row) == {"label", "score"}
    row = client.post("/v1/classify", json={"texts": ["good"], "top_k": 1}).json()["results"][0]
    assert len(row["top_k"]) == 1 and row["top_k"][0]["label"] == row["label"]


@pytest.mark.parametrize("top_k", [None, 2])
def test_classify_body_is_exactly_the_documented_response_model(client, top_k):
    from slimtext.serve.app import ClassifyResponse

    body = client.post("/v1/classify", json={"texts": ["good", "bad"], "top_k": top_k}).json()
    documented = ClassifyResponse.model_validate(body).model_dump(exclude_none=True)
    assert documented == body


def test_model_info(client, predictor):
    info = client.get("/v1/model").json()
    assert info["labels"] == predictor.labels
    assert info["backend"] == "torch"
    assert info["config"]["arch"] == "attention"
    assert info["max_length"] == 32 and info["long_text"] == "truncate"
    assert info["slimtext_version"] and info["model_slimtext_version"]
    assert info["limits"]["max_batch_size"] == 64
    assert info["limits"]["max_text_chars"] == 100
    assert info["limits"]["max_texts_per_request"] == 20


def test_model_info_of_a_compressed_model_lists_its_compression_steps(
    model_dir, client_for, tmp_path
):
    # /v1/model showed a pruned or quantized model's config as the uncompressed shape, with
    # nothing saying it was compressed.
    import slimtext
    from slimtext.artifact import read_model_dir, save_model_dir
    from slimtext.compress import Int8Dynamic, quantize_

    md = read_model_dir(model_dir)
    rec = quantize_(md.model, Int8Dynamic())
    save_model_dir(tmp_path / "q", md.model, md.config, md.tokenizer, md.labels,
                   max_length=md.max_length, compression=[rec])  # fmt: skip
    c = client_for(create_app(slimtext.load(tmp_path / "q")))
    steps = c.get("/v1/model").json()["compression"]
    assert [s["step"] for s in steps] == ["quantize"]
    assert steps[0]["config"]["method"] == "int8-dynamic"
    plain = client_for(create_app(slimtext.load(model_dir))).get("/v1/model").json()
    assert plain["compression"] == []


def test_health_ready_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    for probe in ("/healthz", "/readyz", "/v1/model", "/metrics"):  # as load balancers probe
        r = client.head(probe)
        assert r.status_code == 200 and r.content == b"", probe
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    for name in ("ClassifyRequest", "ClassifyResponse", "ErrorResponse", "ModelInfo"):
        assert name in schema["components"]["schemas"]
    assert "413" in schema["paths"]["/v1/classify"]["post"]["responses"]
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), ids  # FastAPI warns on every /docs load otherwise
    page = client.get("/")
    assert page.status_code == 200 and "Classify" in page.text
    assert "http" not in page.text.split("<body>")[0]  # no external assets in <head>
    # the same file under /static/ went out without the page's headers (frameable)
    for r in (page, client.get("/static/index.html"), client.head("/")):
        assert r.headers["content-security-policy"] == "default-src 'self'"
        assert r.headers["x-frame-options"] == "DENY"
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "content-security-policy" not in script.headers
    for r in (script, client.get("/v1/model"), client.get("/nope")):
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in client.get("/docs").headers  # Swagger UI's CDN
    head = client.head("/")  # as uptime checkers probe the page
    assert head.status_code == 200 and head.content == b""
    assert client.get("/favicon.ico").status_code == 204  # every browser asks for it


def test_readyz_is_503_until_warm_up_is_done(stub):
    stub.gate.clear()  # the warm-up prediction blocks

    async def main():
        app = create_app(stub)
        async with serving(app, ready=False) as c:
            assert (await c.get("/healthz")).status_code == 200
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "warming_up"
            stub.gate.set()
            await async_wait_until(lambda: app.state.serve_state["ready"], what="ready")
            assert (await c.get("/readyz")).status_code == 200

    run_async(main())


def test_readyz_names_the_error_under_a_failed_warm_up(stub, monkeypatch):
    def broken(texts):
        raise MemoryError("no room")

    monkeypatch.setattr(stub, "predict_proba", broken)

    async def main():
        app = create_app(stub)
        async with serving(app, ready=False) as c:
            state = app.state.serve_state
            await async_wait_until(lambda: "failed" in state["status"], what="warm-up failure")
            r = await c.get("/readyz")
            # it said only "InferenceError", the batcher's wrapper
            assert r.status_code == 503 and "(MemoryError)" in r.json()["status"]

    run_async(main())


def test_a_stop_during_warm_up_is_a_shutdown_not_a_failure(caplog):
    # SIGTERM while a compiled backend warmed up logged "warm-up prediction failed" and a
    # traceback (BatcherClosedError), which log alerting reads as a crash
    import threading

    building = threading.Event()

    class Slow(StubPredictor):
        backend = "compile"

        def warm_up_all(self):
            building.set()
            time.sleep(0.5)  # the graphs being built when the stop comes

    async def main():
        app = create_app(Slow())
        async with serving(app, ready=False):
            await async_wait_until(building.is_set, what="the warm-up to start")
        return app.state.serve_state

    with caplog.at_level("INFO", logger="slimtext"):
        state = run_async(main())
    assert not state["ready"] and state["status"] == "shutting_down"
    assert "failed" not in caplog.text and "Traceback" not in caplog.text, caplog.text


@pytest.mark.parametrize(("backend", "compiles"), [("compile-bf16", True), ("torch", False)])
def test_a_compiled_backend_builds_every_graph_before_ready(backend, compiles):
    """warm_up_all runs once, on the inference thread, before /readyz turns 200; only for the
    compile backends (the others have nothing to build)."""
    import threading

    class Compiled(StubPredictor):
        def __init__(self):
            super().__init__()
            self.backend, self.warmed_on = backend, []

        def warm_up_all(self):
            self.warmed_on.append(threading.current_thread().name)

    pred = Compiled()

    async def main():
        app = create_app(pred)
        async with serving(app, ready=False) as c:
            await async_wait_until(lambda: app.state.serve_state["ready"], what="ready")
            assert (await c.get("/readyz")).status_code == 200

    run_async(main())
    assert len(pred.warmed_on) == int(compiles)
    assert all(name.startswith("slimtext-infer") for name in pred.warmed_on)
    assert pred.calls == [1]  # then the one warm-up prediction


def test_metrics_in_prometheus_format(client):
    client.post("/v1/classify", json={"texts": ["good", "bad"]})
    client.post("/v1/classify", json={"texts": []})
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'slimtext_requests_total{endpoint="/v1/classify",method="POST",status="200"} 1.0' in text
    assert 'slimtext_requests_total{endpoint="/v1/classify",method="POST",status="422"} 1.0' in text
    for name in ("slimtext_request_latency_seconds_bucket", "slimtext_batch_size_bucket",
                 "slimtext_inference_latency_seconds_count", "slimtext_queue_depth"):  # fmt: skip
        assert name in text
    # any token is a valid HTTP method: made-up ones share one label, not a series each
    for made_up in ("M6829", "Z1801"):
        client.request(made_up, "/healthz")
    text = client.get("/metrics").text
    assert "M6829" not in text and "Z1801" not in text
    assert 'endpoint="/healthz",method="other",status="405"} 2.0' in text


# -- bad input: always 4xx with the JSON error shape ----------------------------------------------


@pytest.mark.parametrize(
    "body, status, type_, message",
    [
        (b"{bad json", 400, "invalid_json", "not valid JSON"),
        (b"\xff\xfe\x00", 400, "invalid_json", "not valid JSON"),
        (b"", 422, "validation_error", "body is required"),
        (b"[1, 2]", 422, "validation_error", "JSON object"),
        (b'"just a string"', 422, "validation_error", "JSON object"),
        (b"{}", 422, "validation_error", "texts"),
        (b'{"texts": []}', 422, "validation_error", "texts"),
        (b'{"texts": "one string"}', 422, "validation_error", "texts"),
        (b'{"texts": ["ok", 3]}', 422, "validation_error", "texts[1]"),
        (b'{"texts": ["ok", null]}', 422, "validation_error", "texts[1]"),
        (b'{"texts": [["nested"]]}', 422, "validation_error", "texts[0]"),
        (b'{"texts": ["ok"], "top_k": 0}', 422, "validation_error", "top_k"),
        (b'{"texts": ["ok"], "top_k": 3}', 422, "validation_error", "2 labels"),
        (b'{"texts": ["ok"], "top_k": "2"}', 422, "validation_error", "top_k"),
        (b'{"texts": ["ok"], "top_k": true}', 422, "validation_error", "top_k"),
        (b'{"texts": ["ok"], "top_k": 1.5}', 422, "validation_error", "top_k"),
        (b'{"texts": ["ok"], "topk": 1}', 422, "validation_error", "unknown field 'topk'"),
        (b'{"texts": ["\\ud800"]}', 422, "validation_error", "texts[0] is not valid Unicode"),
        (b'{"texts": ["ok", "", " \\n"]}', 422, "validation_error", "texts [1, 2] are empty"),
        (json.dumps({"texts": ["a"] * 21}).encode(), 413, "too_many_texts", "limit is 20"),
        (json.dumps({"texts": ["a", "b" * 101]}).encode(), 413, "text_too_long",
         "texts[1] is longer than 100 characters"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_with_a_json_error(client, body, status, type_, message):
    assert_error(client.post("/v1/classify", content=body, headers=JSON), status, type_, message)


def test_our_validators_messages_come_without_pydantics_prefix(client):
    body = b'{"texts": ["ok", ""]}'
    err = assert_error(client.post("/v1/classify", content=body, headers=JSON), 422,
                       "validation_error", "texts [1] are empty")  # fmt: skip
    assert "Value error" not in err["message"], err["message"]


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    resp = client.post("/v1/classify", content=b'{"texts": ["ok"]}', headers=headers)
    assert_error(resp, 415, "unsupported_media_type", "application/json")


def test_json_content_type_with_charset_is_fine(client):
    resp = client.post(
        "/v1/classify",
        content=b'{"texts": ["ok"]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 200


def test_oversized_body_is_413_before_parsing(stub, client_for):
    c = client_for(create_app(stub, max_body_bytes=1000))
    big = json.dumps({"texts": ["x" * 2000]}).encode()
    assert_error(c.post("/v1/classify", content=big, headers=JSON), 413, "body_too_large", "1000")

    def chunked():  # no Content-Length: the cap must hold while reading
        for _ in range(20):
            yield b" " * 100

    resp = c.post("/v1/classify", content=chunked(), headers=JSON)
    assert_error(resp, 413, "body_too_large")
    assert stub.calls == [1]  # only the warm-up reached the model


def test_unknown_path_and_method_are_json_errors(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/classify"), 405, "method_not_allowed")
    # the wrong method, whatever its body's type, is 405 (it was a 415 about the Content-Type)
    for method in ("PUT", "PATCH"):
        for headers in ({"content-type": "text/plain"}, {}):
            resp = client.request(method, "/v1/classify", content=b"x", headers=headers)
            assert_error(resp, 405, "method_not_allowed")


def test_a_non_finite_probability_is_a_500_not_invalid_json(stub, client_for, monkeypatch):
    client = client_for(create_app(stub))
    monkeypatch.setattr(stub, "expected", lambda text: np.array([np.nan, 0.5, 0.5]))
    resp = client.post("/v1/classify", json={"texts": ["a"]})
    assert_error(resp, 500, "inference_error", "not a number")  # was 200 with a bare NaN


# -- batching, overload and failures through the app ---------------------------------------------


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(predictor):
    texts = [f"good great {i}" if i % 2 else f"bad awful {i}" for i in range(24)]
    expected = predictor.predict_proba(texts)

    async def main():
        app = create_app(predictor, max_wait_ms=30)
        async with serving(app) as c:
            resps = await asyncio.gather(
                *(c.post("/v1/classify", json={"texts": [t], "top_k": 2}) for t in texts)
            )
            metrics = app.state.metrics.registry
            batches = metrics.get_sample_value("slimtext_batch_size_count")
            batched = metrics.get_sample_value("slimtext_batch_size_sum")
            return resps, batches, batched, app.state.batcher.stats

    resps, batches, batched, stats = run_async(main())
    for resp, p in zip(resps, expected, strict=True):
        assert resp.status_code == 200
        scores = {t["label"]: t["score"] for t in resp.json()["results"][0]["top_k"]}
        assert [scores[label] for label in predictor.labels] == pytest.approx(p.tolist(), abs=1e-5)
    assert stats.largest_batch > 1
    assert batches < len(texts)  # fewer model calls than requests
    assert batched == len(texts)  # the client's texts only: the warm-up call is not traffic


def test_request_larger_than_max_batch_size_is_split_and_kept_in_order(predictor, client_for):
    c = client_for(create_app(predictor, max_batch_size=4, max_queue=64))
    texts = [f"good {i}" if i % 3 else f"awful poor {i}" for i in range(11)]
    resp = c.post("/v1/classify", json={"texts": texts})
    probs = predictor.predict_proba(texts)
    assert [r["label"] for r in resp.json()["results"]] == [
        predictor.labels[j] for j in probs.argmax(1)
    ]
    assert c.app.state.batcher.stats.largest_batch <= 4


def test_full_queue_answers_503_with_retry_after(stub):
    async def main():
        app = create_app(stub, max_batch_size=1, max_wait_ms=0, max_queue=2,
                         max_texts_per_request=2)  # fmt: skip
        async with serving(app) as c:
            stub.gate.clear()
            post = lambda t: c.post("/v1/classify", json={"texts": [t]})  # noqa: E731
            running = asyncio.create_task(post("in the model"))
            await async_wait_until(lambda: len(stub.calls) == 2, what="batch to start")
            queued = [asyncio.create_task(post(f"queued {i}")) for i in range(2)]
            await async_wait_until(lambda: app.state.batcher.depth == 2, what="queue to fill")
            depth = app.state.metrics.registry.get_sample_value("slimtext_queue_depth")
            refused = await post("one too many")
            stub.gate.set()
            done = await asyncio.gather(running, *queued)
            return depth, refused, done

    depth, refused, done = run_async(main())
    assert depth == 2
    assert_error(refused, 503, "overloaded", "queue full")
    assert refused.headers["retry-after"] == "1"
    assert [r.status_code for r in done] == [200, 200, 200]


def test_inference_error_fails_only_that_request(stub):
    async def main():
        app = create_app(stub, max_wait_ms=30)
        async with serving(app) as c:
            post = lambda t: c.post("/v1/classify", json={"texts": t})  # noqa: E731
            together = await asyncio.gather(post(["fine"]), post(["boom"]), post(["fine too"]))
            after = await post(["still fine"])
            return together, after

    (ok1, bad, ok2), after = run_async(main())
    assert_error(bad, 500, "inference_error", "RuntimeError")
    assert ok1.status_code == ok2.status_code == after.status_code == 200
    assert after.json()["results"][0]["score"] == pytest.approx(
        StubPredictor.expected("still fine").max()
    )


def test_shutdown_finishes_in_flight_requests(stub):
    async def main():
        app = create_app(stub, max_wait_ms=0)
        async with serving(app) as c:
            stub.gate.clear()
            inflight = asyncio.create_task(c.post("/v1/classify", json={"texts": ["slow"]}))
            await async_wait_until(lambda: len(stub.calls) == 2, what="request to reach model")
            # leaving the block runs the lifespan shutdown, which must drain, not drop
            asyncio.get_running_loop().call_later(0.05, stub.gate.set)
        return await inflight

    assert run_async(main()).status_code == 200


# -- API key and CORS -----------------------------------------------------------------------------


def test_api_key_required_on_api_but_not_on_health(stub, client_for):
    c = client_for(create_app(stub, api_key="s3cret"))
    body = {"texts": ["hi"]}
    resp = c.post("/v1/classify", json=body)
    assert_error(resp, 401, "unauthorized", "Bearer")
    assert resp.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer s3cre"}
    assert_error(c.post("/v1/classify", json=body, headers=wrong), 401, "unauthorized")
    assert_error(c.get("/v1/model"), 401, "unauthorized")
    assert_error(c.get("/metrics"), 401, "unauthorized")
    good = {"Authorization": "Bearer s3cret"}
    assert c.post("/v1/classify", json=body, headers=good).status_code == 200
    assert c.get("/v1/model", headers=good).status_code == 200
    for path in ("/v1/model", "/metrics"):  # HEAD is behind the key as GET is
        assert c.head(path).status_code == 401
        assert c.head(path, headers=good).status_code == 200
    for path in ("/healthz", "/readyz", "/"):
        assert c.get(path).status_code == 200
    # 401 comes before any parsing: a bad body without a key says nothing about the body
    assert c.post("/v1/classify", content=b"{", headers=JSON).status_code == 401
    # the schema answers without a key: it must not list the labels /v1/model keeps behind it
    assert c.get("/openapi.json").json()["info"]["summary"] == "Text classifier"
    open_ = client_for(create_app(stub)).get("/openapi.json").json()["info"]["summary"]
    assert open_.endswith(": a, b, c")


def test_no_api_key_means_open(stub, client_for):
    c = client_for(create_app(stub))
    assert c.post("/v1/classify", json={"texts": ["hi"]}).status_code == 200


def test_cors_is_off_by_default_and_can_be_enabled(stub, client_for):
    origin = {"Origin": "http://example.com"}
    c = client_for(create_app(stub))
    assert "access-control-allow-origin" not in c.get("/v1/model", headers=origin).headers
    c = client_for(create_app(stub, cors_origins=["http://example.com"]))
    resp = c.get("/v1/model", headers=origin)
    assert resp.headers["access-control-allow-origin"] == "http://example.com"
    # a cross-origin page can read how long to wait after a 503
    assert "retry-after" in resp.headers["access-control-expose-headers"].lower()
    # a refused preflight: JSON of the one error shape (it was Starlette's plain text)
    pre = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    resp = c.options("/v1/classify", headers=pre)
    err = assert_error(resp, 400, "cors_refused", "Disallowed CORS origin", "--cors-origin")
    assert resp.headers["content-type"] == "application/json" and err
    ok = {**pre, "Origin": "http://example.com"}
    assert c.options("/v1/classify", headers=ok).status_code == 200
    # HEAD with the API key from another origin (a status widget probing /v1/model): its
    # preflight was refused ("Disallowed CORS method"), so the browser never sent it
    head = {**ok, "Access-Control-Request-Method": "HEAD",
            "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    assert c.options("/v1/model", headers=head).status_code == 200


def test_api_key_read_with_a_trailing_newline_still_authenticates(stub, client_for, monkeypatch):
    from slimtext.serve.app import ServeConfig

    # `kubectl create secret --from-file`, or a key file with CRLF: the newline came along
    monkeypatch.setenv("SLIMTEXT_TEST_KEY", "s3cret\r\n")
    key = ServeConfig(model_dir="m", api_key_env="SLIMTEXT_TEST_KEY").api_key()
    for app in (create_app(stub, api_key=key), create_app(stub, api_key=" s3cret\n")):
        c = client_for(app)
        ok = c.get("/v1/model", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cre"}).status_code == 401
    monkeypatch.setenv("SLIMTEXT_TEST_KEY", " \n")  # only whitespace: fail closed, as unset
    with pytest.raises(ValueError, match="SLIMTEXT_TEST_KEY"):
        ServeConfig(model_dir="m", api_key_env="SLIMTEXT_TEST_KEY").api_key()
    with pytest.raises(ValueError, match="api_key"):
        create_app(stub, api_key="  ")


@pytest.mark.parametrize(
    "origin",
    ["http://app.example/", "app.example", "http://app.example/page", "https://a.example:8443/"],
)
def test_cors_origin_no_browser_sends_is_refused_at_start(stub, origin):
    from slimtext.serve.app import ServeConfig

    # Starlette compares the Origin header as a string: these were accepted, then every
    # request from that page was refused
    with pytest.raises(ValueError, match="--cors-origin"):
        create_app(stub, cors_origins=[origin])
    with pytest.raises(ValueError, match="scheme://host"):
        ServeConfig(model_dir="m", cors_origins=[origin]).validate()


def test_cors_origin_with_port_or_wildcard_is_accepted(stub, client_for):
    c = client_for(
        create_app(stub, cors_origins=["http://localhost:3000", "chrome-extension://abc", "*"])
    )
    assert c.get("/healthz", headers={"Origin": "http://x.example"}).status_code == 200


# -- construction ---------------------------------------------------------------------------------


def test_several_apps_in_one_process_have_separate_metrics(stub, client_for):
    a, b = client_for(create_app(stub)), client_for(create_app(stub))
    a.get("/healthz")
    assert 'endpoint="/healthz"' in a.get("/metrics").text
    assert 'endpoint="/healthz"' not in b.get("/metrics").text


def test_settings_that_could_never_work_are_rejected(stub):
    with pytest.raises(ValueError, match="max_queue"):
        create_app(stub, max_texts_per_request=100, max_queue=10)


def test_model_dir_path_and_factory(model_dir, monkeypatch):
    from slimtext.serve.app import CONFIG_ENV, ServeConfig, factory

    cfg = ServeConfig(model_dir=str(model_dir), max_batch_size=8, api_key_env="SLIMTEXT_TEST_KEY")
    monkeypatch.setenv(CONFIG_ENV, json.dumps(cfg.__dict__))
    with pytest.raises(ValueError, match="SLIMTEXT_TEST_KEY"):  # fail closed without the key
        factory()
    monkeypatch.setenv("SLIMTEXT_TEST_KEY", "k")
    app = factory()
    with TestClient(app) as c:
        resp = c.get("/v1/model", headers={"Authorization": "Bearer k"})
        assert resp.json()["limits"]["max_batch_size"] == 8


def test_a_fitted_text_classifier_is_served_and_other_objects_are_refused(model_dir, client_for):
    from slimtext.api import NotFittedError, TextClassifier

    clf = TextClassifier.load(model_dir)  # what `fit` leaves: an AttributeError on .labels
    c = client_for(create_app(clf))
    resp = c.post("/v1/classify", json={"texts": ["hi"], "top_k": 2})
    assert resp.status_code == 200 and len(resp.json()["results"][0]["top_k"]) == 2
    assert c.get("/v1/model").json()["labels"] == list(clf._check_fitted().labels)
    with pytest.raises(NotFittedError):
        create_app(TextClassifier())
    with pytest.raises(TypeError, match="model directory or a Predictor"):
        create_app(object())


def test_model_served_as_dot_is_named_after_its_directory(model_dir, monkeypatch):
    monkeypatch.chdir(model_dir)  # `slimtext serve .`
    with TestClient(create_app(".", backend="torch")) as c:
        assert c.get("/v1/model").json()["name"] == model_dir.name
        wait_until(lambda: c.get("/readyz").status_code == 200, what="/readyz")
        assert c.post("/v1/classify", json={"texts": ["good"]}).json()["model"] == model_dir.name


# -- metrics of requests the client abandons ------------------------------------------------------


# A POST /v1/classify as an ASGI server presents it, for tests that drive the app's messages.
CLASSIFY_SCOPE = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
    "scheme": "http", "path": "/v1/classify", "raw_path": b"", "root_path": "",
    "query_string": b"", "client": ("127.0.0.1", 1), "server": ("test", 80),
    "headers": [(b"content-type", b"application/json")],
}  # fmt: skip


def test_client_that_disconnects_mid_body_is_499_not_500(stub):
    app = create_app(stub)
    sent = []

    async def main():
        async with serving(app) as client:
            messages = iter([
                {"type": "http.request", "body": b'{"texts": ["half', "more_body": True},
                {"type": "http.disconnect"},
            ])  # fmt: skip

            async def receive():
                return next(messages)

            async def send(message):
                sent.append(message)

            await app(CLASSIFY_SCOPE, receive, send)
            return (await client.get("/metrics")).text

    text = run_async(main())
    assert sent == []  # nobody left to answer
    assert 'endpoint="/v1/classify",method="POST",status="499"} 1.0' in text
    assert 'status="500"' not in text
    assert stub.calls == [1]  # only the warm-up reached the model


def test_a_body_that_never_finishes_arriving_is_408_within_the_deadline(stub, monkeypatch):
    from slimtext.serve.app import Guard

    monkeypatch.setattr(Guard, "body_timeout_s", 0.3)
    app = create_app(stub)
    sent = []

    async def main():
        async with serving(app) as client:
            first = [{"type": "http.request", "body": b'{"texts": ["sl', "more_body": True}]

            async def receive():  # a slow client: part of the body, then nothing
                if first:
                    return first.pop()
                await asyncio.sleep(3600)

            async def send(message):
                sent.append(message)

            await asyncio.wait_for(app(CLASSIFY_SCOPE, receive, send), 5)
            return (await client.get("/metrics")).text

    text = run_async(main())
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_timeout"
    assert 'endpoint="/v1/classify",method="POST",status="408"} 1.0' in text
    assert stub.calls == [1]  # only the warm-up reached the model


def test_a_client_that_hangs_up_while_queued_is_499_and_its_texts_are_skipped(stub):
    # FastAPI does not cancel a handler whose client left: its texts still ran and /metrics
    # counted a 200 that nobody received (a load balancer's timeout under load).
    app = create_app(stub)

    async def main():
        async with serving(app) as client:
            stub.gate.clear()  # the model is busy with A
            first = asyncio.ensure_future(client.post("/v1/classify", json={"texts": ["a"]}))
            await async_wait_until(lambda: len(stub.calls) == 2, what="A to reach the model")
            hang_up, replied = asyncio.Event(), []
            messages = [{"type": "http.request", "body": b'{"texts": ["b x"]}', "more_body": False}]

            async def receive():
                if messages:
                    return messages.pop()
                await hang_up.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                replied.append(message)

            second = asyncio.ensure_future(app(CLASSIFY_SCOPE, receive, send))
            await asyncio.sleep(0.2)  # B waits in the queue behind A
            hang_up.set()
            await asyncio.wait_for(second, 5)  # returns without waiting for the model
            stub.gate.set()
            assert (await first).status_code == 200
            return replied, (await client.get("/metrics")).text

    replied, text = run_async(main())
    assert replied == []
    assert 'endpoint="/v1/classify",method="POST",status="499"} 1.0' in text
    assert 'endpoint="/v1/classify",method="POST",status="200"} 1.0' in text
    assert stub.calls == [1, 1]  # the warm-up and A: B's text never reached the model


def test_serving_without_uvicorn_names_the_extra(monkeypatch):
    # `pip install fastapi` brings no uvicorn: `serve` said only "No module named 'uvicorn'"
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ImportError, match=r"uvicorn is missing.*slimtext\[serve\]"):
        from slimtext.serve import run  # noqa: F401
    from slimtext.serve import create_app as make  # the app itself needs no uvicorn

    assert make is create_app
