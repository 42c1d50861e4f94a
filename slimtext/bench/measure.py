"""Latency, throughput and memory of anything that maps a list of texts to labels.

Every contender (a slimtext backend or a peer) is wrapped as `predict(texts) -> labels` and
measured by the same functions on the same texts:

    latency_ms(fn, texts)              batch 1, one call per text
    throughput(fn, texts, batch_size)  docs/s in batches of similar length (sorted), b at a time
    predict_all(fn, texts)             labels, and docs/s with texts in arrival order
    measure(fn, texts, gold, plan)     all of them, plus accuracy / macro-F1 and peak memory

Peak memory. A process's peak RSS only ever grows, so measured inside a process that already
loaded other models (or trained a peer) it would mostly report their memory. Each contender is
therefore measured in a fresh interpreter (`python -m slimtext.bench.measure SPEC.json`, spec and
result as JSON files, so nothing is pickled), whose `ru_maxrss` at the end is the whole cost of
serving that model with that backend: interpreter, libraries, weights and activations. The RSS
right after the imports (before the model loads) is recorded too, so the model's own share is
the difference. In-process measurement (`isolate=False`, used by fast tests) resets the kernel's
high-water mark through /proc/self/clear_refs where Linux allows it, and says it is approximate.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text, die_with_parent

PredictFn = Callable[[list[str]], Sequence[str]]
BATCH_SIZES = (1, 8, 64)
ARRIVAL_BATCH = 64  # the accuracy pass's batch: texts in arrival order (see `predict_all`)


@dataclass
class Plan:
    """How much to measure. `seconds` is this contender's share of the time budget (None: no
    budget): latency and throughput loops stop early when their slice of it is spent, so the
    number of texts measured scales with the budget; accuracy always uses all `n_accuracy`."""

    n_accuracy: int
    n_latency: int = 300
    n_throughput: int = 2048
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    seconds: float | None = None
    # Shares of `seconds` per phase: latency, each throughput batch size (together), accuracy.
    latency_share: float = 0.25
    throughput_share: float = 0.45


def percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def latency_ms(fn: PredictFn, texts: Sequence[str], seconds: float | None = None) -> list[float]:
    """Milliseconds per single-text call; stops after `seconds` (at least 5 texts)."""
    out: list[float] = []
    if texts:
        fn([texts[0]])  # first call: lazy initialisation, not latency
    start = time.perf_counter()
    for t in texts:
        t0 = time.perf_counter()
        fn([t])
        out.append((time.perf_counter() - t0) * 1e3)
        if seconds is not None and len(out) >= 5 and time.perf_counter() - start > seconds:
            break
    return out


def throughput(
    fn: PredictFn, texts: Sequence[str], batch_size: int, seconds: float | None = None
) -> tuple[float, int]:
    """(docs/s, texts measured) scoring `texts` `batch_size` at a time, in order of length: what
    bulk scoring does, and the same batches for every entry (peers included), so that padding
    costs no one more than another. Stops after `seconds` (at least 2 batches)."""
    if not texts:
        return 0.0, 0
    by_len = sorted(texts, key=len)  # characters: the one order every tokenizer can share
    batches = [by_len[i : i + batch_size] for i in range(0, len(by_len), batch_size)]
    # Batches in a fixed shuffled order, so that a run cut short by `seconds` still sees short
    # and long texts alike instead of only the shortest.
    random.Random(0).shuffle(batches)
    fn(list(batches[0]))  # warm this batch shape (compile: its bucket)
    n = 0
    t0 = time.perf_counter()
    for calls, chunk in enumerate(batches, start=1):
        fn(list(chunk))
        n += len(chunk)
        if seconds is not None and calls >= 2 and time.perf_counter() - t0 > seconds:
            break
    return n / max(time.perf_counter() - t0, 1e-9), n


def predict_all(
    fn: PredictFn, texts: Sequence[str], batch_size: int = 64
) -> tuple[list[str], float | None]:
    """Labels of `texts`, scored `batch_size` at a time in the order given, and the docs/s of
    the calls after the first (which may pay lazy initialisation); None with a single call.

    In the test set's own (shuffled) order this is how texts *arrive*: what
    `pipeline(texts, batch_size=64)` or a server's dynamic batches see. Each contender deals
    with the mixed lengths of a call its own way (pads to the longest, sorts, groups), which
    `throughput`'s length-sorted batches hide."""
    out: list[str] = []
    t_rest, n_rest = 0.0, 0
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        t0 = time.perf_counter()
        out.extend(fn(chunk))
        if i:
            t_rest += time.perf_counter() - t0
            n_rest += len(chunk)
    return out, n_rest / t_rest if t_rest > 0 else None


def accuracy_report(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    from ..metrics import classification_report

    # Each predicted label the test data lacks (a class of the model, or of a peer trained on
    # other data) is a class of its own, always wrong: it enters the macro-F1 average with F1 0,
    # as scikit-learn counts it. Lumped into one "<unknown>" class, several such classes
    # counted as one and macro-F1 came out too high.
    names = list(labels)
    index = {lab: i for i, lab in enumerate(names)}
    for p in pred:
        if p not in index:
            index[p] = len(names)
            names.append(p)
    y_true = [index[g] for g in gold]
    y_pred = [index[p] for p in pred]
    r = classification_report(y_true, y_pred, names)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}


def measure(
    fn: PredictFn,
    texts: Sequence[str],
    gold: Sequence[str] | None,
    labels: Sequence[str],
    plan: Plan,
) -> dict:
    """Accuracy on the first `plan.n_accuracy` texts (and docs/s in their arrival order, 64 a
    call), latency p50/p99 at batch 1 and docs/s at each batch size in length-sorted batches,
    all on the same texts in the same order."""
    s = plan.seconds
    res: dict = {}
    acc_texts = list(texts[: plan.n_accuracy])
    t0 = time.perf_counter()
    got, arrival = predict_all(fn, acc_texts, ARRIVAL_BATCH)
    res["accuracy_seconds"] = time.perf_counter() - t0
    # The accuracy pass doubles as the arrival-order throughput: no extra time spent.
    res["docs_per_s_arrival"] = {str(ARRIVAL_BATCH): arrival}
    if gold is not None:
        res.update(accuracy_report(gold[: len(acc_texts)], got, labels))
    lat = latency_ms(fn, texts[: plan.n_latency], s * plan.latency_share if s else None)
    res["latency_ms_p50"] = statistics.median(lat) if lat else None
    res["latency_ms_p99"] = percentile(lat, 99) if lat else None
    res["latency_n"] = len(lat)
    res["docs_per_s"], res["throughput_n"] = {}, {}
    for bs in plan.batch_sizes:
        per = s * plan.throughput_share / len(plan.batch_sizes) if s else None
        rate, n = throughput(fn, texts[: plan.n_throughput], bs, per)
        res["docs_per_s"][str(bs)], res["throughput_n"][str(bs)] = rate, n
    res["predictions_sample"] = list(got[:20])
    return res


# ---- memory ---------------------------------------------------------------------------------


def rss_mb() -> float | None:
    """Current resident set size (Linux /proc), MB."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: the kernel's high-water mark (VmHWM) where /proc has it,
    else ru_maxrss (KiB on Linux, bytes on macOS)."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def dir_size_mb(paths: Sequence[str | os.PathLike]) -> float:
    """Total size of files (and of every file under folders), MB."""
    total = 0
    for p in map(Path, paths):
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            total += p.stat().st_size
    return total / 1e6


# ---- one contender, in this process or a fresh one --------------------------------------------


@dataclass
class Spec:
    """Everything a fresh process needs to load and measure one contender (JSON-serialisable).

    `kind`: slimtext | hf | ort | fasttext | tfidf; `path`: model dir / folder / file;
    `backend`: slimtext backend; `eval_file`: JSONL of {"text", "label"} rows in measuring order.
    """

    kind: str
    path: str
    eval_file: str
    labels: list[str]
    plan: dict
    backend: str | None = None
    max_length: int | None = None
    threads: int | None = None
    extra: dict | None = None


def measure_spec(spec: Spec, isolated: bool) -> dict:
    """Load the contender described by `spec` and measure it; returns a JSON-ready dict. In
    the caller's process (`isolated=False`) its torch thread count is restored afterwards."""
    if isolated or not spec.threads or spec.kind not in ("slimtext", "hf", "ort"):
        return _measure_spec(spec, isolated)
    import torch

    threads = torch.get_num_threads()
    try:
        return _measure_spec(spec, isolated)
    finally:
        torch.set_num_threads(threads)


def _measure_spec(spec: Spec, isolated: bool) -> dict:
    torch = None
    if spec.kind in ("slimtext", "hf", "ort"):
        # Only where needed: torch alone is ~200 MB of RSS, which fastText and TF-IDF never pay.
        import torch

        if spec.threads:
            torch.set_num_threads(spec.threads)
    rows = [json.loads(line) for line in Path(spec.eval_file).read_text("utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    gold = [r["label"] for r in rows] if rows and "label" in rows[0] else None
    from . import peers

    reset = reset_peak_rss()
    before = rss_mb()
    t0 = time.perf_counter()
    fn, info = peers.open_contender(spec)
    load_s = time.perf_counter() - t0
    res = measure(fn, texts, gold, spec.labels, Plan(**spec.plan))
    res.update(info)
    res["load_s"] = load_s
    res["peak_rss_mb"] = peak_rss_mb()
    res["rss_before_load_mb"] = before
    res["memory_method"] = (
        "fresh process: peak RSS (VmHWM) from just before loading the model to the end of "
        "measuring; it includes the interpreter and libraries (rss_before_load_mb)"
        if isolated
        else "in-process: VmHWM reset before load (approximate, includes what was already loaded)"
        if reset
        else "in-process: peak RSS of the whole process (upper bound)"
    )
    res["torch_threads"] = torch.get_num_threads() if torch is not None else None
    return res


def run_isolated(spec: Spec, workdir: Path, timeout: float | None) -> dict:
    """`measure_spec` in a fresh `python -m slimtext.bench.measure` process (see module doc)."""
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("spec-*.json")))
    spec_file, result_file = workdir / f"spec-{n}.json", workdir / f"result-{n}.json"
    atomic_write_text(spec_file, json.dumps(asdict(spec)))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if spec.threads:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    cmd = [sys.executable, "-m", "slimtext.bench.measure", str(spec_file), str(result_file)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"measurement did not finish in {timeout:.0f}s") from None
    if p.returncode != 0 or not result_file.is_file():
        tail = (p.stderr or p.stdout or "").strip().splitlines()[-5:]
        raise RuntimeError(f"worker exited with {p.returncode}: " + " | ".join(tail))
    return json.loads(result_file.read_text(encoding="utf-8"))


def machine_info() -> dict:
    """CPU model, cores, int8-relevant CPU flags and library versions, for the report."""
    import torch

    info: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                info["cpu_model"] = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
                # int8 GEMMs are fast only with VNNI (or AMX); without them int8 often loses.
                # avx512_bf16 too: with amx_bf16 it decides whether the bf16 backends are
                # measured at all (native_bf16), which the report should let a reader see.
                wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                          "amx_int8", "amx_bf16")  # fmt: skip
                info["cpu_flags"] = {f: f in flags for f in wanted}
                break
    for mod in ("transformers", "onnxruntime", "sklearn", "fasttext", "tokenizers", "optimum"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except Exception:  # an optional library that is absent or broken: just not listed
            pass
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    return info


def _worker_main(argv: list[str]) -> int:
    # a bench killed with -9 left its measurement running on, an orphan holding the CPU
    die_with_parent()
    spec_file, result_file = argv
    spec = Spec(**json.loads(Path(spec_file).read_text(encoding="utf-8")))
    res = measure_spec(spec, isolated=True)
    atomic_write_text(result_file, json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
