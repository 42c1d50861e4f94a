"""Data-parallel training on one CPU machine: 1 process vs 2 (DDP, FSDP), one thread each.

    python benchmarks/distributed.py --steps 60 --out bench-out/distributed.json

BERT-mini shape (hidden 256, 4 layers, 4 heads, FFN 1024, max length 128) on AG News, the same
global batch (32) for every run: 1 process × 32, or 2 processes × 16 through torchrun. Reports
samples/s of pure step time and each rank's peak resident memory (from the run's
`metrics.json["training"]`). On a 2-core CPU this shows correctness and overhead (gloo
all-reduce, FSDP all-gathers), not GPU scaling.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "single (1 proc x 32)": ([], 32),
    "ddp (2 procs x 16)": (["--nproc", "2", "--strategy", "ddp"], 16),
    "fsdp (2 procs x 16)": (["--nproc", "2", "--strategy", "fsdp"], 16),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("bench-out/distributed.json"))
    args = ap.parse_args()
    train = args.data_root / "ag_news" / "train.jsonl.gz"
    if not train.is_file():
        sys.exit(f"AG News not found at {train}; pass --data-root")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (extra, batch) in RUNS.items():
            out = Path(tmp) / name.split()[0]
            cmd = [sys.executable, "-m", "slimtext", "train", "--data", str(train), "--out",
                   str(out), "--max-steps", str(args.steps), "--batch-size", str(batch),
                   "--threads", "1", "--no-progress", "--pooling", "cls", *extra]  # fmt: skip
            print(f"== {name}", flush=True)
            subprocess.run(cmd, check=True, cwd=REPO)
            t = json.loads((out / "metrics.json").read_text())["training"]
            rows.append({"run": name, **t})
    base = rows[0]["samples_per_second"]
    lines = ["| run | samples/s | vs 1 process | peak RSS per rank (MB) |", "|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['samples_per_second']:.1f} | "
                     f"{r['samples_per_second'] / base:.2f}x | {r['peak_rss_mb']} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "rows": rows, "table": table}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
