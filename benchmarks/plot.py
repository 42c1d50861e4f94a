"""Figures for BENCHMARKS.md from the JSON the benchmark scripts write.

    python benchmarks/plot.py --throughput bench-out/train_throughput.json \
        --accuracy bench-out/accuracy.json [more.json ...] --out-dir bench-out

Writes `train_throughput.png` (samples/s per contender, bar chart) and `accuracy.png`
(test accuracy against train wall time, one panel per dataset). Either input may be missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import REPO  # noqa: E402


def plot_throughput(report: dict, out: Path) -> Path:
    res = report["results"]
    names = list(res)
    sps = [res[n]["samples_per_second"] for n in names]
    colors = ["C0" if n.startswith("slimtext") else "C1" for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    bars = ax.bar(names, sps, color=colors)
    for b, n in zip(bars, names, strict=True):
        ax.annotate(f"{b.get_height():.0f}\nacc {res[n]['accuracy']:.3f}",
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                    fontsize=8)  # fmt: skip
    ax.set_ylabel("training samples/s (wall clock)")
    ax.set_ylim(0, max(sps) * 1.25)
    steps = report["args"]["steps"]
    ax.set_title(f"BERT-mini on AG News, {steps} steps x batch 32, 2 CPU threads", fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_accuracy(report: dict, out: Path) -> Path:
    data = report["results"]
    fig, axes = plt.subplots(1, len(data), figsize=(4 * len(data), 3.6), dpi=100, squeeze=False)
    for ax, (name, d) in zip(axes[0], data.items(), strict=True):
        for cname, r in d["contenders"].items():
            color = "C0" if cname.startswith("slimtext") else ("C1" if "fast" in cname else "C2")
            marker = "*" if r.get("selected") else "o"
            ax.scatter(r["train_seconds"], r["accuracy"], color=color, marker=marker, s=70)
            ax.annotate(cname.replace("slimtext ", "slim "), (r["train_seconds"], r["accuracy"]),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("train wall time (s, log)")
        ax.set_title(f"{name} ({d['n_train']} train)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--throughput", default=str(REPO / "bench-out" / "train_throughput.json"))
    ap.add_argument(
        "--accuracy",
        nargs="+",
        default=[str(REPO / "bench-out" / "accuracy.json")],
        help="one or more accuracy JSON files (their datasets are merged)",
    )
    ap.add_argument("--out-dir", default=str(REPO / "bench-out"))
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = Path(args.throughput)
    if p.is_file():
        print(
            f"wrote {plot_throughput(json.loads(p.read_text()), out_dir / 'train_throughput.png')}"
        )
    else:
        print(f"skipped train_throughput.png: {p} not found")
    merged: dict = {"results": {}}
    for src in args.accuracy:
        p = Path(src)
        if p.is_file():
            # Merge per contender, so a later file can add or replace single contenders.
            for ds, d in json.loads(p.read_text())["results"].items():
                into = merged["results"].setdefault(ds, {**d, "contenders": {}})
                into["contenders"].update(d["contenders"])
        else:
            print(f"skipped {p}: not found")
    if merged["results"]:
        print(f"wrote {plot_accuracy(merged, out_dir / 'accuracy.png')}")


if __name__ == "__main__":
    main()
