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
import torch

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


# -- settings are checked in the parent, before any worker starts ---------------------------------

HAS_CUDA = torch.cuda.is_available()
BAD_SETTINGS = [
    (dict(max_queue=4, max_texts_per_request=8),
     r"max_texts_per_request \(8\) must be <= max_queue \(4\)"),
    (dict(max_queue=0), "max_queue must be >= 1"),
    (dict(max_batch_size=0), "max_batch_size must be >= 1"),
    (dict(max_wait_ms=-1.0), "max_wait_ms must be a finite number >= 0"),
    (dict(max_wait_ms=float("nan")), "max_wait_ms must be a finite number >= 0"),
    (dict(max_wait_ms=float("inf")), "max_wait_ms must be a finite number >= 0"),
    (dict(max_text_chars=0), "max_text_chars"),
    (dict(max_body_bytes=0), "max_body_bytes"),
    (dict(backend="torchh"), "backend must be one of"),
    (dict(threads=-1), "threads must be >= 1"),
    (dict(threads=0), "threads must be >= 1"),
    (dict(device="gpu"), "device must be auto, cpu, cuda or cuda:N"),
    pytest.param(dict(device="cuda"), "no CUDA device is available",
                 marks=pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")),
]  # fmt: skip


@pytest.fixture
def no_uvicorn(monkeypatch):
    """uvicorn.run replaced by a failure: with workers a bad setting would crash every worker
    and uvicorn would restart them for ever, so it must be refused before uvicorn starts."""
    import uvicorn

    def started(*args, **kwargs):
        raise AssertionError("uvicorn started despite a setting that can never work")

    monkeypatch.setattr(uvicorn, "run", started)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("settings, message", BAD_SETTINGS)
def test_bad_settings_fail_before_uvicorn_starts_alike_for_any_worker_count(
    no_uvicorn, tmp_path, workers, settings, message
):
    from slimtext.serve import run

    # A directory that does not exist: the settings must be checked before anything loads.
    with pytest.raises(ValueError, match=message):
        run(tmp_path / "no-model", workers=workers, **settings)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-queue", "4", "--max-texts-per-request", "8"],
         "error: max_texts_per_request (8) must be <= max_queue (4), or a request of that size "
         "could never be admitted (--max-texts-per-request, --max-queue)"),
        (["--threads", "-1"], "error: threads must be >= 1, got -1"),
    ],
)  # fmt: skip
def test_cli_bad_settings_are_one_error_line_and_exit_2(
    no_uvicorn, tmp_path, workers, flags, message
):
    from typer.testing import CliRunner

    from slimtext.cli import app

    args = ["serve", str(tmp_path / "no-model"), "--workers", workers, *flags]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("workers", [1, 2])
def test_a_backend_without_its_extra_fails_before_uvicorn_starts(no_uvicorn, monkeypatch, tmp_path,
                                                                 workers):  # fmt: skip
    import sys

    from slimtext.serve import run

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"slimtext\[onnx\]"):
        run(tmp_path / "no-model", workers=workers, backend="onnxruntime-int8")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_server_stopped_by_sigterm_exits_0_quietly(model_dir, sig):
    # SIGTERM is how servers are stopped; after uvicorn's graceful shutdown it re-raised the
    # signal, and `slimtext serve` printed "error: stopped by SIGTERM" and exited 143 (and
    # Ctrl-C "error: interrupted"). With --log-level warning, no INFO line either.
    port = free_port()
    cmd = [sys.executable, "-m", "slimtext", "serve", str(model_dir), "--port", str(port),
           "--threads", "1", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                url = f"http://127.0.0.1:{port}/readyz"
                if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready after 60 s"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "error" not in err, (proc.returncode, err)
    assert "backend auto" not in err, err  # an INFO line, under --log-level warning


def test_an_unusable_metrics_folder_fails_before_the_workers_start(
    no_uvicorn, model_dir, tmp_path, monkeypatch
):
    # each worker died writing its metrics file there, uvicorn restarted them for ever, and
    # SIGTERM then exited 0: a deployment that never served reported success
    from slimtext.serve import run

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR=.*missing: no such folder"):
        run(model_dir, workers=2, port=0)
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(afile))
    with pytest.raises(ValueError, match="no such folder"):
        run(model_dir, workers=2, port=0)
    with pytest.raises(ValueError, match="no such folder"):  # one worker writes there too
        run(model_dir, workers=1, port=0)


def test_a_port_that_needs_privileges_says_so(monkeypatch):
    import errno

    from slimtext.serve.app import _check_port

    def refused(self, addr):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refused)
    with pytest.raises(ValueError, match="ports below 1024 need privileges"):
        _check_port("127.0.0.1", 80)
