"""DynamicBatcher on its own: merging, splitting, order, bounded queue, failures, draining."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serve_helpers import StubPredictor, async_wait_until, run_async

from slimtext.serve.batcher import (
    BatcherClosedError,
    DynamicBatcher,
    InferenceError,
    QueueFullError,
)


def expected(texts):
    return np.stack([StubPredictor.expected(t) for t in texts])


def test_concurrent_submits_are_merged_and_each_caller_gets_its_own_rows():
    stub = StubPredictor()

    async def main():
        b = DynamicBatcher(stub.predict_proba, max_batch_size=64, max_wait_ms=50)
        await b.start()
        texts = [[f"text {i}" + "x" * (i % 3)] for i in range(20)]
        out = await asyncio.gather(*(b.submit(t) for t in texts))
        await b.close()
        return texts, out, b.stats

    texts, out, stats = run_async(main())
    for t, probs in zip(texts, out, strict=True):
        np.testing.assert_allclose(probs, expected(t))
    assert stats.largest_batch > 1
    assert stats.batches < 20


def test_large_request_is_split_into_batches_and_reassembled_in_order():
    stub = StubPredictor()
    texts = [f"t{i}" + "x" * (i % 5) for i in range(23)]

    async def main():
        b = DynamicBatcher(stub.predict_proba, max_batch_size=5, max_wait_ms=1)
        await b.start()
        out = await b.submit(texts)
        await b.close()
        return out

    np.testing.assert_allclose(run_async(main()), expected(texts))
    assert max(stub.calls) <= 5 and sum(stub.calls) == 23


async def with_a_held_batch(stub, texts, **kw):
    """A started batcher whose first batch (`texts`) is inside the stub model, held there until
    `stub.gate` is set; returns (batcher, that request's task)."""
    b = DynamicBatcher(stub.predict_proba, max_wait_ms=0, **kw)
    await b.start()
    stub.gate.clear()
    task = asyncio.create_task(b.submit(texts))
    await async_wait_until(lambda: stub.calls, what="first batch to start")
    return b, task


def test_full_queue_refuses_instead_of_growing():
    stub = StubPredictor()

    async def main():
        b, first = await with_a_held_batch(stub, ["held in the model"], max_batch_size=1,
                                           max_queue=2)  # fmt: skip
        queued = [asyncio.create_task(b.submit([f"q{i}"])) for i in range(2)]
        await async_wait_until(lambda: b.depth == 2, what="queue to fill")
        with pytest.raises(QueueFullError):
            await b.submit(["one too many"])
        stub.gate.set()
        await asyncio.gather(first, *queued)
        await b.close()

    run_async(main())


def test_a_cancelled_callers_texts_leave_the_queue_at_once():
    # A client that hung up while queued kept its texts counted against max_queue until the
    # worker reached them: live clients got "queue full" with nobody waiting.
    stub = StubPredictor()

    async def main():
        b, running = await with_a_held_batch(stub, ["r1", "r2", "r3", "r4"], max_batch_size=4,
                                             max_queue=6)  # fmt: skip
        gone = asyncio.create_task(b.submit(["g1", "g2", "g3", "g4"]))
        await async_wait_until(lambda: b.depth == 4, what="the second request to queue")
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert b.depth == 0
        live = asyncio.create_task(b.submit(["l1", "l2", "l3", "l4"]))  # admitted: room for 6
        stub.gate.set()
        await asyncio.gather(running, live)
        await b.close()
        return live.result(), stub.calls

    out, calls = run_async(main())
    np.testing.assert_allclose(out, expected(["l1", "l2", "l3", "l4"]))
    assert calls == [4, 4]  # the cancelled texts never ran


def test_inference_error_fails_only_the_bad_request_and_batcher_keeps_going():
    stub = StubPredictor()

    async def main():
        b = DynamicBatcher(stub.predict_proba, max_batch_size=64, max_wait_ms=30)
        await b.start()
        res = await asyncio.gather(
            b.submit(["fine"]), b.submit(["boom"]), b.submit(["also fine"]),
            return_exceptions=True,
        )  # fmt: skip
        after = await b.submit(["later"])
        await b.close()
        return res, after

    (ok1, bad, ok2), after = run_async(main())
    assert isinstance(bad, InferenceError) and isinstance(bad.__cause__, RuntimeError)
    np.testing.assert_allclose(ok1, expected(["fine"]))
    np.testing.assert_allclose(ok2, expected(["also fine"]))
    np.testing.assert_allclose(after, expected(["later"]))


def test_close_drains_queued_work_then_refuses_new_work():
    stub = StubPredictor()

    async def main():
        b = DynamicBatcher(stub.predict_proba, max_batch_size=2, max_wait_ms=0)
        await b.start()
        stub.gate.clear()
        pending = [asyncio.create_task(b.submit([f"p{i}"])) for i in range(5)]
        await async_wait_until(lambda: stub.calls, what="first batch to start")
        closing = asyncio.create_task(b.close())
        await asyncio.sleep(0.02)
        with pytest.raises(BatcherClosedError):
            await b.submit(["too late"])
        stub.gate.set()
        await closing
        return await asyncio.gather(*pending)

    out = run_async(main())
    for i, probs in enumerate(out):
        np.testing.assert_allclose(probs, expected([f"p{i}"]))


def test_bad_settings_are_rejected():
    bad = ({"max_batch_size": 0}, {"max_wait_ms": -1}, {"max_wait_ms": float("nan")},
           {"max_wait_ms": float("inf")}, {"max_queue": 0})  # fmt: skip
    for kw in bad:  # inf: a request short of a full batch was never answered
        with pytest.raises(ValueError, match=next(iter(kw))):
            DynamicBatcher(lambda t: None, **kw)
