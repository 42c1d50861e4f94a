"""Measure a (compressed) model: quality, size and speed, and the table comparing steps.

Latency is the median (p50) of single-text calls, throughput is texts per second at batch 64,
both after warm-up, with `time.perf_counter`, on the same texts for every model, so the ratios
compare like with like. Size on disk is the size of `model.safetensors` as the model directory
writes it (unstructured zeros are stored densely: no saving there).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..data.batching import pad_batch
from ._util import count_nonzero, count_params

COLUMNS = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("params", "params"),
    ("size_mb", "size MB"),
    ("latency_ms_p50", "p50 ms @1"),
    ("throughput", "texts/s @64"),
)


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's safetensors file, written the way `save_model_dir` writes it."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.safetensors"
        save_file(state, str(p))
        return p.stat().st_size


@torch.inference_mode()
def measure_speed(
    model: nn.Module,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    *,
    n_latency: int = 50,
    batch_size: int = 64,
    n_batches: int = 5,
    warmup: int = 5,
) -> dict:
    """p50 / p90 latency (ms) of one text per call, and texts/s at `batch_size`."""
    model.eval()
    singles = [pad_batch(ids, [i % len(ids)], pad_id, multiple_of=1) for i in range(n_latency)]
    for b in singles[:warmup]:
        model(b.input_ids, b.attention_mask)
    times = []
    for b in singles:
        t0 = time.perf_counter()
        model(b.input_ids, b.attention_mask)
        times.append(time.perf_counter() - t0)
    times.sort()
    batches = [
        pad_batch(ids, [(k * batch_size + j) % len(ids) for j in range(batch_size)], pad_id)
        for k in range(n_batches)
    ]
    model(batches[0].input_ids, batches[0].attention_mask)  # warm-up
    rates = []
    for b in batches:
        t0 = time.perf_counter()
        model(b.input_ids, b.attention_mask)
        rates.append(batch_size / (time.perf_counter() - t0))
    return {
        "latency_ms_p50": 1e3 * statistics.median(times),
        "latency_ms_p90": 1e3 * times[int(0.9 * (len(times) - 1))],
        "throughput": statistics.median(rates),
    }


def measure(
    model: nn.Module,
    eval_data,
    label_names: Sequence[str],
    pad_id: int,
    *,
    speed: bool = True,
    speed_kw: dict | None = None,
) -> dict:
    """One row of the report: accuracy, macro-F1, parameters, sparsity, size, speed."""
    from ..train.evaluate import evaluate

    model.cpu().eval()
    # Scores texts, not windows: a long text read as several windows (long_text="chunks") is
    # one prediction at inference, the mean of its windows' logits.
    rep = evaluate(model, eval_data.ids, eval_data.labels, label_names, pad_id,
                   owner=getattr(eval_data, "owner", None))  # fmt: skip
    n, nz = count_params(model), count_nonzero(model)
    row = {
        "accuracy": rep["accuracy"],
        "macro_f1": rep["macro_f1"],
        "params": n,
        "sparsity": 1.0 - nz / max(1, n),
        "size_mb": size_on_disk(model) / 1e6,
    }
    if speed:
        row.update(measure_speed(model, eval_data.ids, pad_id, **(speed_kw or {})))
    return row


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add `*_vs_teacher` ratios against the first row, each oriented so that > 1 is better
    for size and speed: size and latency are teacher / row, throughput is row / teacher."""
    base = rows[0]
    for r in rows:
        r["accuracy_vs_teacher"] = r["accuracy"] / max(1e-12, base["accuracy"])
        r["macro_f1_vs_teacher"] = r["macro_f1"] / max(1e-12, base["macro_f1"])
        r["params_vs_teacher"] = r["params"] / max(1, base["params"])
        r["smaller_x"] = base["size_mb"] / max(1e-12, r["size_mb"])
        if "latency_ms_p50" in r and "latency_ms_p50" in base:
            r["faster_latency_x"] = base["latency_ms_p50"] / max(1e-12, r["latency_ms_p50"])
            r["throughput_x"] = r["throughput"] / max(1e-12, base["throughput"])
    return rows


def markdown(rows: list[dict]) -> str:
    heads = ["step", "accuracy", "macro-F1", "params", "sparsity", "size MB", "p50 ms @1",
             "texts/s @64"]  # fmt: skip
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:

        def rel(key: str, ratio: str, fmt: str, r: dict = r) -> str:
            if key not in r:
                return "–"
            return f"{format(r[key], fmt)} ({r.get(ratio, 1.0):.2f}x)"

        cells = [
            r["step"],
            rel("accuracy", "accuracy_vs_teacher", ".4f"),
            rel("macro_f1", "macro_f1_vs_teacher", ".4f"),
            rel("params", "params_vs_teacher", ","),
            f"{r['sparsity']:.1%}",
            f"{r['size_mb']:.2f} (÷{r.get('smaller_x', 1.0):.1f})",
            f"{r['latency_ms_p50']:.2f} (÷{r.get('faster_latency_x', 1.0):.1f})"
            if "latency_ms_p50" in r else "–",
            f"{r['throughput']:,.0f} (x{r.get('throughput_x', 1.0):.1f})"
            if "throughput" in r else "–",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    if ext := (rows[0].get("external_teacher") if rows else None):
        lines += [
            f"Distilled from the teacher `{ext['teacher']}` (accuracy "
            f"{ext['teacher_accuracy']:.4f} on the same data), which is not a row.",
            "",
        ]
    # With an external teacher the first row is the model being compressed, not the teacher.
    first = "the teacher" if not rows or rows[0]["step"] == "teacher" else "the input model"
    lines.append(
        f"Ratios in brackets are against the first row ({first}): accuracy and params as "
        "row/first; size and p50 latency as first/row (÷ = times smaller/faster); "
        "throughput as row/first. Unstructured sparsity gives no dense-CPU speed-up and no "
        "size saving in safetensors (zeros are stored)."
    )
    for i, r in enumerate(rows):
        if "pattern" in r and i > 0:
            lines += ["", semi_structured_note(r, rows[i - 1])]
    return "\n".join(lines) + "\n"


def semi_structured_note(r: dict, before: dict) -> str:
    """What N:M sparsity did to speed here, in words, with the measured figures."""
    head = (
        f"`{r['step']}`: {r['pattern']} semi-structured sparsity ({r['sparsity']:.1%} of all "
        "parameters zero) gives **no speed-up on this CPU**: there is no N:M CPU kernel, so the "
        "zeros are multiplied like any other weight"
    )
    if "latency_ms_p50" in r and "latency_ms_p50" in before:
        head += (
            f" (measured: p50 {r['latency_ms_p50']:.2f} ms vs {before['latency_ms_p50']:.2f} ms "
            f"for `{before['step']}`, {r['throughput']:,.0f} vs {before['throughput']:,.0f} "
            "texts/s at batch 64; any difference is measurement noise)"
        )
    return head + (
        ". Only CUDA GPUs with sparse tensor cores (sm80+, fp16/bf16) run 2:4 faster: "
        "`slimtext.compress.to_semi_structured_` after loading."
    )


def write_report(
    rows: list[dict], out_dir: str | Path, stem: str = "compression_report"
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(markdown(rows), encoding="utf-8")
    js.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return md, js
