"""Tokenizer encoding speed of two slimtext checkouts, in turns (one process per round).

    python benchmarks/encode_ab.py --old /tmp/old-checkout --new . \
        --tokenizer bench-out/agnews-bertmini-cls/tokenizer.json \
        --data ../shared/datasets/ag_news/test.jsonl.gz --max-length 128

Per round and checkout: `TextTokenizer.encode_windows` of the first `--n` texts in one call
(truncate and chunks; best of 3) and the median of 300 one-text `encode` calls (a server's
batch 1). Rounds alternate which checkout goes first; the medians over rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gzip, json, sys, time
from slimtext.tokenizer import load_tokenizer
tok_path, data, max_length, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = load_tokenizer(tok_path)
opener = gzip.open if data.endswith(".gz") else open
with opener(data, "rt", encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for _, line in zip(range(n), f)]
out = {}
for mode in ("truncate", "chunks"):
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        tok.encode_windows(texts, max_length, mode)
        runs.append(time.perf_counter() - t0)
    out[mode + "_s"] = min(runs)
one = []
for t in texts[:300]:
    t0 = time.perf_counter()
    tok.encode([t], max_length)
    one.append(time.perf_counter() - t0)
out["batch1_us"] = sorted(one)[len(one) // 2] * 1e6
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="checkout (folder holding slimtext/)")
    ap.add_argument("--new", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", required=True, help='JSONL(.gz) of {"text": ...}')
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    res: dict[str, list[dict]] = {"old": [], "new": []}
    order = [("old", a.old), ("new", a.new)]
    for r in range(a.rounds):
        for name, path in order if r % 2 == 0 else order[::-1]:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(path)}
            args = [a.tokenizer, a.data, str(a.max_length), str(a.n)]
            out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True,
                                 text=True, env=env, cwd="/", check=True)  # fmt: skip
            res[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for name, rows in res.items():
        med = {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}
        print(name, json.dumps(med), "rounds:", json.dumps(rows))


if __name__ == "__main__":
    main()
