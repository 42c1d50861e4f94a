"""`slimtext serve --workers N`: real worker processes, and /metrics summed over all of them."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("uvicorn")

SERVER = "import json, sys; from slimtext.serve import run; run(**json.loads(sys.argv[1]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def counter(text: str, status: str) -> float:
    pattern = (
        r'^slimtext_requests_total\{endpoint="/v1/classify",method="POST",status="' + status
        + r'"\} (\S+)$'
    )  # fmt: skip
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def two_workers(model_dir, tmp_path):
    port = free_port()
    kw = dict(model_dir=str(model_dir), port=port, workers=2, threads=1, log_level="warning")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(kw)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                if httpx.get(url + "/readyz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "workers not ready after 90 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_metrics_count_the_requests_of_every_worker(two_workers):
    n = 40
    for i in range(n):
        # A new connection each time, so the kernel spreads them over both workers' accepts.
        resp = httpx.post(
            two_workers + "/v1/classify",
            json={"texts": [f"text number {i}"]},
            headers={"Connection": "close"},
            trust_env=False,
        )
        assert resp.status_code == 200, resp.text
    for _ in range(6):  # each scrape may land on either worker: all must see the sum
        text = httpx.get(two_workers + "/metrics", headers={"Connection": "close"}).text
        assert counter(text, "200") == n, text[:2000]
        assert "slimtext_batch_size_count" in text
