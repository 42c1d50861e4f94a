"""Inference speed and accuracy of one model directory on each Predictor backend.

    python benchmarks/inference.py MODEL_DIR --data /path/ag_news/test.jsonl.gz --quick
    python benchmarks/inference.py MODEL_DIR --data bbc@test --backends torch,onnxruntime

Per backend: load time (warm-up of every length bucket, compilation or ONNX export included),
latency p50/p99 of single texts (batch 1), throughput in docs/s at batch sizes 1, 8 and 64 over
the same texts, and accuracy on the labelled data. `onnxruntime-int8` runs `model.int8.onnx`
(quantised into ~/.cache/slimtext when the directory has none: the directory is never changed).

`--quick` (the default) keeps the whole run to a minute or two on a small CPU; `--full` uses
more texts for steadier figures. Threads: torch's default (physical cores) unless `--threads`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, markdown_table, write_json

import slimtext
from slimtext.bench.measure import latency_ms, percentile, throughput
from slimtext.infer import load

BACKENDS = ("torch", "compile", "onnxruntime", "onnxruntime-int8")
SIZES = {  # texts for: latency, throughput, accuracy
    "quick": (100, 256, 1000),
    "full": (500, 2048, 7600),
}


def make_predictor(model_dir: Path, backend: str):
    # onnxruntime-int8 runs the directory's model.int8.onnx, or a quantisation cached under
    # ~/.cache/slimtext: the directory itself is never changed.
    pred = load(model_dir, backend=backend, batch_size=64)
    pred.warm_up_all()  # compile every bucket now: compilation is load time, not latency
    return pred


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--data", required=True, help="labelled data: a file, `bbc@test`, `hf:...`")
    ap.add_argument("--backends", default="torch,onnxruntime,onnxruntime-int8,compile")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    mode = args.mode or "quick"
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        sys.exit(f"unknown backends {bad}; choose from {BACKENDS}")

    ds = slimtext.load_data(args.data)
    n_lat, n_thr, n_acc = SIZES[mode]
    # A fixed random sample, so every backend sees the same texts in the same order.
    order = np.random.default_rng(0).permutation(len(ds.texts)).tolist()
    texts = [ds.texts[i] for i in order]
    gold = [ds.labels[i] for i in order] if ds.labels else None

    rows, results = [], {"machine": machine_info(), "mode": mode, "data": args.data, "backends": {}}
    for backend in backends:
        t0 = time.perf_counter()
        try:
            pred = make_predictor(args.model_dir, backend)
        except Exception as e:  # a backend this machine lacks: report it and go on
            print(f"{backend}: unavailable ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        load_s = time.perf_counter() - t0
        lat = latency_ms(pred.predict_proba, texts[:n_lat])
        # The Predictor batches up to 64: each call of bs texts is one padded batch.
        thr = {bs: throughput(pred.predict_proba, texts[:n_thr], bs)[0] for bs in (1, 8, 64)}
        acc = None
        if gold is not None:
            got = pred.predict(texts[:n_acc])
            acc = float(np.mean([g == p for g, p in zip(gold[:n_acc], got, strict=True)]))
        r = {
            "load_s": load_s,
            "latency_ms_p50": statistics.median(lat),
            "latency_ms_p99": percentile(lat, 99),
            "docs_per_s": {str(k): v for k, v in thr.items()},
            "accuracy": acc,
            "accuracy_n": min(n_acc, len(texts)) if gold is not None else 0,
        }
        results["backends"][backend] = r
        rows.append([
            backend, round(load_s, 1), r["latency_ms_p50"], r["latency_ms_p99"],
            thr[1], thr[8], thr[64], "-" if acc is None else f"{acc:.4f}",
        ])  # fmt: skip
        print(f"{backend}: done", file=sys.stderr)
    headers = ["backend", "load s", "p50 ms (b=1)", "p99 ms (b=1)",
               "docs/s b=1", "docs/s b=8", "docs/s b=64", "accuracy"]  # fmt: skip
    print(markdown_table(headers, rows))
    print(f"\n{mode} mode; torch threads {torch.get_num_threads()}; data {args.data}")
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
