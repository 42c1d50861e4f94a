"""The benchmark's output folder: report.json (everything), report.md (the table and the
verdicts), pareto.png (accuracy vs docs/s at batch 64). Every file is written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..fileio import atomic_write_text, file_mode


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """`a` is at least as good as `b` on both axes (higher is better) and better on one."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, sorted by the first coordinate.

    O(n log n): sorted by x descending (ties: y descending), a point is on the front iff its y
    beats every y seen so far, or equals the best y at the same x and ties it exactly."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = float("-inf")
    best = None  # the point that set best_y
    for i in order:
        x, y = points[i]
        if y > best_y:
            front.append(i)
            best_y, best = y, (x, y)
        elif best is not None and (x, y) == best:
            front.append(i)  # an exact duplicate of a front point is not dominated by it
    return sorted(front, key=lambda i: points[i][0])


def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


_PEER_COL = {"hf": "hf", "ort": "ort-int8", "ort-opt": "ort-opt-int8"}


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


RATE_KEYS = ("1", "64", "arrival")  # what the peer comparison reports


def docs_per_s(entry: dict, key: str) -> float | None:
    """An entry's docs/s at batch size `key` ("1", "8", "64": length-sorted batches) or in
    arrival order ("arrival": `measure.predict_all`, absent from older reports)."""
    if key == "arrival":
        return next(iter(entry.get("docs_per_s_arrival", {}).values()), None)
    return entry.get("docs_per_s", {}).get(key)


def _rounds_line(entries: list[dict], repeat: int) -> str:
    """How many rounds each figure is the median of: the time budget may have cut the last
    rounds of some entries, and "every figure is the median of 3" must not claim them."""
    if repeat <= 1:
        return ""
    got = {e["name"]: len(e.get("runs") or [None]) for e in entries}
    line = (
        f" Every figure is the median of {repeat} rounds, measured in turns (each round's "
        "rates: `runs` in report.json)."
    )
    short = {n: k for n, k in got.items() if k < repeat}
    if short:
        fewer = ", ".join(f"{n} {k}" for n, k in short.items())
        line = (
            f" Figures are medians of up to {repeat} rounds, measured in turns (each round's "
            f"rates: `runs` in report.json); the time budget left fewer to: {fewer}."
        )
    return line


def markdown(result: dict) -> str:
    entries = result["entries"]
    peers_of = {
        (e["model"], e["peer"]): e for e in entries if e["group"] == "peer" and e.get("model")
    }
    s = result["settings"]
    # Ratio columns against the same model's peers, those that ran (columns of "-" otherwise).
    ran = {e.get("peer") for e in entries}
    ratio_peers = [p for p in ("hf", "ort", "ort-opt") if p in ran]
    lines = [
        "# slimtext bench",
        "",
        f"Data: `{s['data']}` ({s['n_test']} texts, accuracy on {s['n_accuracy']}); "
        + (f"train: `{s['train']}`; " if s.get("train") else "no train data; ")
        # the count each entry was measured with (--threads), not the bench process's own
        + f"torch threads {s.get('threads') or result['machine'].get('torch_threads')}; "
        f"CPU: {result['machine'].get('cpu_model')}; time budget: "
        f"{_fmt(s['time_budget'], 0) + ' s' if s['time_budget'] else 'none'}, "
        f"took {result['elapsed_s']:.0f} s." + _rounds_line(entries, s.get("repeat", 1)),
        "",
        *(
            f"{what} as read: {s[key]}."
            for what, key in (("Test data", "data_read"), ("Train data", "train_read"))
            if s.get(key)
        ),
        "",
        "Throughput (docs/s b=1/8/64) scores the texts b at a time in batches of similar "
        "length, the same batches for every entry (tokenization included). *Arrival* scores "
        "them 64 a call in the test set's own shuffled order, as `pipeline(texts, "
        "batch_size=64)` or a server's batches see them: each entry handles the mixed lengths "
        "of a call its own way. Latency is one text per call. Peak MB: peak resident memory of "
        + (
            "the process that loaded and measured that entry alone. "
            if s.get("isolate", True)
            else "the whole bench process up to that entry (--no-isolate: an upper bound). "
        )
        + (
            "Ratios: slimtext docs/s / peer docs/s (same model's peer)."
            if ratio_peers
            else "No same-weights peer (hf, ort) ran: no ratio columns."
        ),
        "",
        # one cell per column: an empty trailing cell (no ratio columns) broke the table
        "| "
        + " | ".join(
            [
                "model / backend",
                "accuracy",
                "macro-F1",
                "p50 ms",
                "p99 ms",
                "docs/s b=1",
                "docs/s b=8",
                "docs/s b=64",
                "docs/s arrival",
                "peak MB",
                "size MB",
            ]
            + [
                f"vs {c} {k}"
                for c in (_PEER_COL[p] for p in ratio_peers)
                for k in ("b=1", "b=64", "arrival")
            ]
        )
        + " |",
        "|" + "---|" * (11 + 3 * len(ratio_peers)),
    ]
    for e in entries:
        d = {k: docs_per_s(e, k) for k in ("1", "8", "64", "arrival")}
        row = [
            e["name"].replace("|", "\\|"),  # a "|" in a folder's name split its row
            _fmt(e.get("accuracy"), 4), _fmt(e.get("macro_f1"), 4),
            _fmt(e.get("latency_ms_p50"), 2), _fmt(e.get("latency_ms_p99"), 2),
            _fmt(d.get("1"), 0), _fmt(d.get("8"), 0), _fmt(d.get("64"), 0),
            _fmt(d["arrival"], 0), _fmt(e.get("peak_rss_mb"), 0), _fmt(e.get("size_mb"), 2),
        ]  # fmt: skip
        if e["group"] == "slimtext":
            for peer in ratio_peers:
                pe = peers_of.get((e["model"], peer), {})
                row += [_ratio(d[k], docs_per_s(pe, k)) for k in RATE_KEYS]
        else:
            row += ["-"] * (3 * len(ratio_peers))
        lines.append("| " + " | ".join(row) + " |")
    # The ratios compare unequal work for such a model; report.json has long_text per entry.
    chunked = sorted({e["model"] for e in entries
                      if e["group"] == "slimtext" and e.get("long_text") == "chunks"})  # fmt: skip
    if chunked:
        lines += ["", f"Long texts: {', '.join(chunked)} use long_text='chunks': slimtext reads "
                  "every max_length window of a longer text (its docs/s pays for them all), "
                  "while the hf and ort peers truncate it at max_length."]  # fmt: skip
    lines += ["", "## The backend to use, and int8", ""]
    for model, m in result["summary"]["models"].items():
        lines.append(f"- **{model}**: {m['verdict']}")
    lines += ["", "## Best slimtext backend against the peers", ""]
    for model, m in result["summary"]["models"].items():
        for key, v in m.get("vs_peers", {}).items():
            how = {"1": "batch 1", "arrival": "batch 64, arrival order"}.get(
                key, f"batch {key}, length-sorted"
            )
            ratios = ", ".join(f"{r:.2f}x {_PEER_COL.get(p, p)} ({v['peers'][p]:,.0f})"
                               for p, r in v["ratios"].items())  # fmt: skip
            vs = f" = {ratios}" if ratios else " (no same-weights peer measured: hf, ort, ort-opt)"
            lines.append(f"- **{model}**, {how}: {v['backend']} {v['docs_per_s']:,.0f} docs/s{vs}")
    lines += ["", "## Pareto front (accuracy vs docs/s at batch 64)", ""]
    front = result["summary"]["pareto_front"]
    lines.append("On the front: " + (", ".join(front) if front else "nothing measured") + ".")
    lines.append("")
    lines.append(result["summary"]["winner_line"])
    lines += ["", "## Peers", ""]
    for name, how in result["peer_paths"].items():
        lines.append(f"- {name}: {how}")
    if result["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['name']}: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (and none on servers)
    import matplotlib.pyplot as plt

    pts = [e for e in result["entries"] if e.get("accuracy") is not None
           and e.get("docs_per_s", {}).get("64")]  # fmt: skip
    # The plot on the left, a numbered key on the right: the backends of one model sit at
    # nearly the same accuracy and docs/s, so names written next to the points overlap.
    fig, ax = plt.subplots(figsize=(11, 5.5))
    fig.subplots_adjust(left=0.08, right=0.62, bottom=0.1, top=0.9)
    if pts:
        xs = [e["docs_per_s"]["64"] for e in pts]
        ys = [e["accuracy"] for e in pts]
        sizes = [max(e.get("size_mb") or 0.0, 1e-3) for e in pts]
        big = max(sizes)
        # Area proportional to size on disk, with a floor so tiny models stay visible.
        s = [30 + 600 * (z / big) for z in sizes]
        colors = ["tab:blue" if e["group"] == "slimtext" else "tab:orange" for e in pts]
        ax.scatter(xs, ys, s=s, c=colors, alpha=0.6, edgecolors="k", linewidths=0.5)
        front = pareto_front(list(zip(xs, ys, strict=True)))
        key = []
        for k, (e, x, y) in enumerate(zip(pts, xs, ys, strict=True), start=1):
            # Staggered offsets so that numbers of coinciding points stay apart.
            ax.annotate(str(k), (x, y), textcoords="offset points",
                        xytext=(4, 3 + 8 * (k % 3)), fontsize=7)  # fmt: skip
            star = " *" if k - 1 in front else ""
            key.append(f"{k:>2}  {e['name']}  {y:.4f}, {x:,.0f}/s{star}")
        fig.text(0.64, 0.9, "\n".join(["    accuracy, docs/s at b=64 (* = front)", *key]),
                 va="top", ha="left", fontsize=7.5, family="monospace")  # fmt: skip
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "k--", marker="x", lw=1,
                label="Pareto front")  # fmt: skip
        ax.legend(loc="lower left", fontsize=8)
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "nothing measured", ha="center", transform=ax.transAxes)
    ax.set_xlabel("docs/s at batch 64 (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("blue = slimtext, orange = peers; marker area = size on disk", fontsize=10)
    ax.margins(y=0.12)
    ax.grid(True, which="both", alpha=0.3)
    fd, tmp = tempfile.mkstemp(prefix=".pareto.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.chmod(tmp, file_mode())  # mkstemp made it 0600; the report's other files follow umask
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_report(result: dict, out: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md and pareto.png into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "pareto.png"}
    # The slow part (matplotlib: ~1 s) first, then the two texts in quick succession: a run
    # stopped during the plot left a finished report.json and report.md beside the partial file.
    text = json.dumps(result, indent=2, default=str) + "\n"
    md = markdown(result)
    plot(result, paths["png"])
    atomic_write_text(paths["json"], text)
    atomic_write_text(paths["md"], md)
    return paths
