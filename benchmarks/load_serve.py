"""Load test for the HTTP server: dynamic batching vs `--max-batch-size 1`, in one run.

Starts `slimtext.serve.run` in a subprocess on 127.0.0.1 (a free port) once per mode, loads it
with requests of one text each at every concurrency level, and reports req/s, p50/p99 latency,
5xx and lost requests (no HTTP answer), and the mean batch size the server ran (from its
/metrics). Prints a Markdown table and writes JSON.

The client is `wrk` (Debian package `wrk`) when it is installed, else `httpx.AsyncClient`.
They share the 2 cores with the server, and httpx spends several times the CPU per request that
wrk does: at concurrency 64 an httpx client was the bottleneck (it measured ~100 req/s where
wrk measures ~600 against the same server), so figures are quoted with wrk. wrk runs for
`--time-limit` seconds per level (the request count is what it completes); httpx sends
`--requests` requests.

    python benchmarks/load_serve.py MODEL_DIR --requests 1000 --concurrency 1 16 64 \
        --modes dynamic greedy batch=1 --threads 1 --out benchmarks/results/load_serve.json

Texts come from `--data FILE` (one text per line) or a built-in set of news-like sentences.
Client and server share the machine's cores, so absolute numbers are a floor; the comparison
between modes is the point. Loopback only, by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HOST = "127.0.0.1"
SAMPLES = [
    "Stocks rallied on Wall Street after the central bank held interest rates steady.",
    "The striker scored twice in the second half to send his team into the cup final.",
    "A new smartphone chip promises longer battery life and faster on-device AI.",
    "Oil prices fell for a third day as inventories rose more than analysts expected.",
    "The coach said the injured captain would miss the rest of the season.",
    "Researchers released an open-source compiler that speeds up data center workloads.",
    "Leaders met at the summit to discuss trade tariffs and climate commitments.",
    "The startup raised 40 million dollars to expand its cloud security platform.",
    "Rain delayed the final set, but the champion held on to win in five.",
    "Parliament passed the budget after a late-night vote on defense spending.",
    "Shares of the carmaker jumped after it beat quarterly delivery estimates.",
    "Engineers fixed a flaw that let attackers read private messages on the network.",
    "The league fined both clubs after the brawl at the end of the derby.",
    "Inflation eased slightly in March, giving policymakers room to pause.",
    "A satellite launch was postponed because of high winds at the pad.",
    "Protesters gathered outside the embassy demanding the release of detained journalists.",
]
MODES = {
    "dynamic": {"max_batch_size": 64, "max_wait_ms": 5.0},  # the server's defaults
    "greedy": {"max_batch_size": 64, "max_wait_ms": 0.0},  # batch only what queued meanwhile
    "batch=1": {"max_batch_size": 1, "max_wait_ms": 0.0},
}
SERVER = "import json, sys; from slimtext.serve import run; run(**json.loads(sys.argv[1]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(
    model_dir: str, settings: dict, timeout: float, threads: int | None = None,
    backend: str = "torch",
) -> tuple[subprocess.Popen, str]:  # fmt: skip
    port = free_port()
    kw = dict(model_dir=model_dir, host=HOST, port=port, log_level="warning", **settings)
    kw["max_queue"] = 4096  # the client caps concurrency; no 503s from the queue itself
    kw["threads"] = threads
    kw["backend"] = backend  # fixed, so the modes differ only in batching ("auto" may not)
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(kw)])
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"server not ready after {timeout:.0f}s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # uvicorn drains on SIGINT, like SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def batch_counters(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10, trust_env=False).text

    def value(name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("slimtext_batch_size_sum"), value("slimtext_batch_size_count")


async def drive(url: str, texts: list[str], n: int, concurrency: int, time_limit: float) -> dict:
    """`n` requests from `concurrency` workers; stops issuing new ones after `time_limit`."""
    latencies, statuses, lost = [], [], 0
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=30, trust_env=False
    ) as client:
        deadline = time.monotonic() + time_limit

        async def worker() -> None:
            nonlocal next_i, lost
            while next_i < n and time.monotonic() < deadline:
                i, next_i = next_i, next_i + 1
                t0 = time.perf_counter()
                try:
                    resp = await client.post(
                        "/v1/classify", json={"texts": [texts[i % len(texts)]]}
                    )
                except httpx.HTTPError:
                    lost += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses.append(resp.status_code)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    ok = sum(s == 200 for s in statuses)
    return {
        "concurrency": concurrency,
        "sent": next_i,
        "ok": ok,
        "status_5xx": sum(s >= 500 for s in statuses),
        "status_other": sum(s != 200 and s < 500 for s in statuses),
        "lost": lost,
        "seconds": round(wall, 3),
        "req_per_s": round(ok / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


WRK_SCRIPT = """
bodies = {%s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) n5xx = 0; n4xx = 0; i = 0 end
function request()
  i = i + 1
  return wrk.format("POST", "/v1/classify", {["Content-Type"] = "application/json"},
                    bodies[(i %% #bodies) + 1])
end
function response(status, headers, body)
  if status >= 500 then n5xx = n5xx + 1 elseif status >= 400 then n4xx = n4xx + 1 end
end
function done(summary, latency, requests)
  local s5, s4 = 0, 0
  for _, t in ipairs(threads) do s5 = s5 + t:get("n5xx"); s4 = s4 + t:get("n4xx") end
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "lost": %%d, "s5xx": %%d, ' ..
    '"s4xx": %%d, "p50_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, s5, s4, latency:percentile(50),
    latency:percentile(99)))
end
"""


def drive_wrk(url: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    """`concurrency` connections sending back to back for `seconds` (wrk, one thread)."""
    bodies = ", ".join(f"[==[{json.dumps({'texts': [t]})}]==]" for t in texts)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % bodies)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", fh.name,
             url + "/v1/classify"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(fh.name)
    r = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    wall = r["duration_us"] / 1e6
    ok = r["requests"] - r["s5xx"] - r["s4xx"]
    return {
        "concurrency": concurrency,
        "sent": r["requests"] + r["lost"],
        "ok": ok,
        "status_5xx": r["s5xx"],
        "status_other": r["s4xx"],
        "lost": r["lost"],
        "seconds": round(wall, 3),
        "req_per_s": round(ok / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(r["p50_us"] / 1000, 2),
        "p99_ms": round(r["p99_us"] / 1000, 2),
    }


def run_mode(args, name: str, settings: dict, texts: list[str]) -> list[dict]:
    proc, url = start_server(args.model_dir, settings, args.start_timeout, args.threads,
                              args.backend)  # fmt: skip
    rows = []
    try:
        asyncio.run(drive(url, texts, 20, 4, 30))  # warm-up, not reported
        for c in args.concurrency:
            before = batch_counters(url)
            if args.client == "wrk":
                row = drive_wrk(url, texts, c, args.time_limit)
            else:
                row = asyncio.run(drive(url, texts, args.requests, c, args.time_limit))
            row["client"] = args.client
            after = batch_counters(url)
            batches = after[1] - before[1]
            row["mean_batch"] = round((after[0] - before[0]) / batches, 2) if batches else None
            rows.append({"mode": name, **settings, **row})
            print(f"  {name:8s} c={c:<3d} {row['req_per_s']:8.1f} req/s", file=sys.stderr)
    finally:
        stop_server(proc)
    return rows


def markdown(rows: list[dict]) -> str:
    cols = ["mode", "concurrency", "ok", "req_per_s", "p50_ms", "p99_ms", "status_5xx", "lost",
            "mean_batch"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--requests", type=int, default=1000,
                   help="requests per concurrency level (httpx client)")  # fmt: skip
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--data", type=Path, help="text file, one text per line")
    p.add_argument("--time-limit", type=float, default=60,
                   help="seconds per level: at most (httpx), exactly (wrk)")  # fmt: skip
    p.add_argument("--start-timeout", type=float, default=120)
    p.add_argument("--threads", type=int, help="torch threads in the server (serve --threads)")
    p.add_argument("--backend", default="torch", help="serve --backend, the same for every mode")
    p.add_argument("--modes", nargs="+", default=["dynamic", "batch=1"], choices=list(MODES))
    p.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto",
                   help="load generator; auto: wrk when installed")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/load_serve.json"))
    args = p.parse_args()
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "httpx"
    texts = SAMPLES
    if args.data:
        texts = [t for t in args.data.read_text(encoding="utf-8").splitlines() if t.strip()]
    rows = []
    for name in args.modes:
        rows += run_mode(args, name, MODES[name], texts)
    table = markdown(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model_dir": str(args.model_dir), "client": args.client, "requests": args.requests,
            "threads": args.threads,
            "time_limit_s": args.time_limit, "texts": len(texts), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
