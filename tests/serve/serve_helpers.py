"""Helpers shared by the serving tests (a module with a unique name, so `import` finds it
whatever else is on sys.path; conftest.py only holds fixtures)."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager

import numpy as np

GOOD = [f"good great fine {i}" for i in range(40)]
BAD = [f"bad awful poor {i}" for i in range(40)]


class StubPredictor:
    """Three labels; scores depend on the text, so mixed-up results would show. `gate` (an
    Event) blocks inference until set; any text containing "boom" raises."""

    labels = ["a", "b", "c"]

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []  # batch sizes, in call order

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if not self.gate.wait(10):
            raise TimeoutError("test gate never opened")
        if any("boom" in t for t in texts):
            raise RuntimeError("boom")
        return np.stack([self.expected(t) for t in texts])

    @staticmethod
    def expected(text: str) -> np.ndarray:
        raw = np.array([1.0 + len(text) % 7, 2.0, 1.0 + text.count("x")])
        return raw / raw.sum()


def wait_until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def async_wait_until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def serving(app, *, ready: bool = True):
    """The app with its lifespan running, and an httpx client talking to it in-process."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if ready:
                await async_wait_until(
                    lambda: app.state.serve_state["ready"], what="/readyz to turn ready"
                )
            yield client


def run_async(coro, timeout: float = 20.0):
    """asyncio.run with a bound, so a hung batcher fails the test instead of the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
