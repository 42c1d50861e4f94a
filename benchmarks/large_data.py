"""Memory and time of `slimtext train` and `slimtext eval` on data large for one machine.

    python benchmarks/large_data.py --rows 300000 --out bench-out/large_data.json

Builds a synthetic JSONL file of `--rows` rows from the AG News training texts (each row a real
text with two words swapped, so that no two rows are the same), then runs, each as its own
process: `slimtext train` (a tiny model, `--max-steps 5`: the cost measured is reading,
tokenizer training and encoding, not the steps) and `slimtext eval` of that model on the same
file. Peak memory is the child's own maximum resident set (`os.wait4`), wall time its run.
`--code DIR` runs another checkout (e.g. an older commit) for comparison.

`--kind long` (session 22): `--rows` IMDB training reviews, each pasted ten times (~13 kB a
row), trained and evaluated with `--long-text chunks`: memory per character, not per row.
`--kind parquet`: the `news` rows written as one Parquet file (pyarrow).
`--kind onebig` (session 23): `--rows` IMDB reviews plus one row holding 5 MB of them joined
(a book pasted into one cell), with `--long-text chunks`: the cost of a single huge text.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, dataset_paths, machine_info, write_json

TINY = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--ffn-size", "64",
        "--max-length", "64", "--max-steps", "5", "--threads", "2", "--no-progress"]  # fmt: skip


def make_data(path: Path, rows: int, data_root: str) -> None:
    train, _ = dataset_paths(data_root, "ag_news")
    with gzip.open(train, "rt", encoding="utf-8") as f:
        base = [json.loads(line) for line in f]
    rnd = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for k in range(rows):
            r = base[k % len(base)]
            w = r["text"].split()
            i, j = rnd.randrange(len(w)), rnd.randrange(len(w))
            w[i], w[j] = w[j], w[i]
            f.write(json.dumps({"text": " ".join(w), "label": r["label"]}) + "\n")


def make_long(path: Path, rows: int, data_root: str) -> None:
    train, _ = dataset_paths(data_root, "imdb")
    with gzip.open(train, "rt", encoding="utf-8") as f:
        base = [json.loads(line) for line in f]
    base = random.Random(0).sample(base, min(rows, len(base)))  # the file is sorted by class
    with open(path, "w", encoding="utf-8") as f:
        for k in range(rows):
            r = base[k % len(base)]
            f.write(json.dumps({"text": " ".join([r["text"]] * 10), "label": r["label"]}) + "\n")


def make_onebig(path: Path, rows: int, data_root: str) -> None:
    train, _ = dataset_paths(data_root, "imdb")
    with gzip.open(train, "rt", encoding="utf-8") as f:
        base = [json.loads(line) for line in f]
    base = random.Random(0).sample(base, min(rows, len(base)))
    big = " ".join(r["text"] for r in base)
    while len(big) < 5_000_000:
        big += " " + big
    with open(path, "w", encoding="utf-8") as f:
        for r in base:
            f.write(json.dumps({"text": r["text"], "label": r["label"]}) + "\n")
        f.write(json.dumps({"text": big[:5_000_000], "label": base[0]["label"]}) + "\n")


def to_parquet(src: Path, dst: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in src.open(encoding="utf-8")]
    table = pa.table({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]})
    pq.write_table(table, dst)


def run_child(cmd: list[str], code: Path, cwd: Path) -> dict:
    """Wall time and peak RSS of one child, read with wait4 (communicate() would reap it)."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # cwd outside any checkout: `python -m` puts the working directory before PYTHONPATH
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, cwd=cwd)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if p.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-2000:]}")
        return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "stdout": out.read()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--code", default=str(REPO), help="checkout whose slimtext is measured")
    ap.add_argument("--out", default=str(REPO / "bench-out" / "large_data.json"))
    ap.add_argument("--kind", choices=("news", "long", "parquet", "onebig"), default="news")
    args = ap.parse_args()
    code = Path(args.code).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        data, model = Path(tmp) / "big.jsonl", Path(tmp) / "model"
        extra = []
        if args.kind in ("long", "onebig"):
            (make_long if args.kind == "long" else make_onebig)(data, args.rows, args.data_root)
            extra = ["--long-text", "chunks"]
        else:
            make_data(data, args.rows, args.data_root)
        if args.kind == "parquet":
            to_parquet(data, data.with_suffix(".parquet"))
            data = data.with_suffix(".parquet")
        size_mb = round(data.stat().st_size / 2**20, 1)
        py = [sys.executable, "-m", "slimtext"]
        train = run_child([*py, "train", "--data", str(data), "--out", str(model), *TINY, *extra],
                          code, Path(tmp))  # fmt: skip
        train["stdout"] = train["stdout"][-300:]
        evaluate = run_child([*py, "eval", str(model), "--data", str(data), "--json"], code,
                             Path(tmp))  # fmt: skip
        evaluate["accuracy"] = json.loads(evaluate.pop("stdout"))["accuracy"]
    result = {"machine": machine_info(), "kind": args.kind, "rows": args.rows, "file_mb": size_mb,
              "code": str(code), "train": train, "eval": evaluate}  # fmt: skip
    write_json(args.out, result)
    shown = ("kind", "rows", "file_mb", "train", "eval")
    print(json.dumps({k: result[k] for k in shown}, indent=1))


if __name__ == "__main__":
    main()
