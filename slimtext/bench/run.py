"""`run(...)`: the whole benchmark, what `slimtext bench` calls.

Set up (read data and model directories, fix the text order) -> per model directory, every
backend -> peers (converted or trained, then measured) -> verdicts -> report files. Every
contender is measured by measure.py on the same texts; with `time_budget` each measurement gets
an equal share of the time left, and what no longer fits is skipped with the reason recorded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from .measure import BATCH_SIZES, Plan, Spec, machine_info, measure_spec, run_isolated
from .peers import DEFAULT_PEERS, PEERS, PeerUnavailable

SLIMTEXT_BACKENDS = ("torch", "torch-bf16", "compile", "compile-bf16", "onnxruntime",
                     "onnxruntime-int8")  # fmt: skip
# Guesses used only to size work to a time budget before anything was measured.
_FASTTEXT_TRAIN_DOCS_PER_S = 2000  # 25 epochs, 2 threads, AG News-length texts
_TFIDF_TRAIN_DOCS_PER_S = 1500  # vectoriser + LR fit (C search on top)
_MIN_SLICE_S = 1.0  # below this a measurement says nothing: skip it instead


class _Budget:
    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.start)

    def share(self, parts: int, fraction: float = 1.0) -> float | None:
        """Equal share of the time left for one of `parts` remaining jobs (None: no budget)."""
        if self.seconds is None:
            return None
        return max(0.0, self.left()) * fraction / max(1, parts)


def available_backends() -> list[str]:
    """The slimtext backends this machine can run: compile needs inductor and a C compiler;
    the onnxruntime ones need onnxruntime."""
    import importlib.util

    from ..infer import native_bf16

    out = ["torch"]
    # bf16 is only worth measuring where the CPU computes it natively (emulated it is slow).
    if native_bf16("cpu"):
        out.append("torch-bf16")
    if importlib.util.find_spec("torch._inductor") and (
        shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    ):
        out.append("compile")
        if "torch-bf16" in out:
            out.append("compile-bf16")
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        out += ["onnxruntime", "onnxruntime-int8"]
    return out


def _missing_backend(name: str) -> str:
    """Why `available_backends` leaves `name` out, and what would bring it in."""
    if name.startswith("onnxruntime"):
        return "onnxruntime and onnx are not installed: pip install 'slimtext[onnx]'"
    if name.endswith("bf16"):
        return "this CPU has no native bf16 (AVX512-BF16 or AMX): emulated bf16 is slow"
    if name.startswith("compile"):
        return "torch.compile needs a C compiler (cc, gcc or clang) on PATH"
    return "not available on this machine"


def run(
    model_dirs: Sequence[str | os.PathLike],
    data: str,
    out: str | os.PathLike,
    *,
    train: str | None = None,
    peers: Sequence[str] = DEFAULT_PEERS,
    backends: Sequence[str] | None = None,
    time_budget: float | None = None,
    threads: int | None = None,
    isolate: bool = True,
    max_test: int | None = None,
    peer_options: dict[str, dict] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    load_kw: dict | None = None,
    repeat: int = 1,
) -> dict:
    """Benchmark model directories against peers; writes report.json, report.md, pareto.png
    into `out` (deleting an earlier run's first: see `_start_fresh`) and returns the report
    dict.

    `data` / `train`: anything `slimtext.data.load_data` reads (train is needed by the
    fastText and TF-IDF peers, and by the HF peer when the weights have no exact mapping).
    `backends`: default all (any this machine cannot run is listed as skipped, with why).
    `isolate`: measure each contender in a fresh process (meaningful peak memory; see
    measure.py). `max_test`: cap on test texts.
    `peer_options`: {"fasttext": {...}} extra `train_supervised` arguments (e.g. a smaller
    `bucket`), {"tfidf": {"cs": [...]}} the C values searched. `repeat`: measure every
    contender this many times, in turns, and report the median of each figure (each run's
    rates are kept under "runs"): on a shared machine one measurement can be 30% off.
    """

    from .report import pareto_front, write_report

    log = log or (lambda _m: None)
    if time_budget is not None and not (time_budget > 0 and math.isfinite(time_budget)):
        raise ValueError(f"time_budget must be a number of seconds > 0, got {time_budget}")
    if max_test is not None and (not isinstance(max_test, int) or max_test < 1):
        raise ValueError(f"max_test must be a whole number >= 1, got {max_test!r}")
    budget = _Budget(time_budget)
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not model_dirs:
        raise ValueError("give at least one model directory")
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; choose from {list(PEERS)}")
    have = available_backends()
    if backends is None:  # every one: those this machine lacks are listed as skipped, with why
        backends = list(SLIMTEXT_BACKENDS)
    bad = [b for b in backends if b not in SLIMTEXT_BACKENDS]
    if bad:
        raise ValueError(f"unknown backends {bad}; choose from {list(SLIMTEXT_BACKENDS)}")
    load_kw = load_kw or {}
    out = Path(out)
    # Before any data is read or anything measured: an unusable folder must not surface as a
    # traceback after the first measurement.
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder: the report needs a folder")
    made = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    try:
        mds, names, test, train_ds = _read_inputs(model_dirs, data, train, load_kw)
    except BaseException:
        for d in made:  # a run refused for its inputs leaves no empty folders behind
            try:
                d.rmdir()
            except OSError:
                break
        raise
    labels = test.label_set()
    # As eval says it: rows skipped (--on-bad skip) or decoded with a fallback are in the
    # evidence, not only in the input file.
    data_read = test.report()
    train_read = train_ds.report() if train_ds is not None else None
    log(f"data: {data_read}")
    if train_read is not None:
        log(f"train: {train_read}")

    # One fixed random order, so every contender sees the same texts in the same order.
    import random

    order = list(range(len(test)))
    random.Random(0).shuffle(order)
    if max_test:
        order = order[:max_test]
    texts = [test.texts[i] for i in order]
    gold = [test.labels[i] for i in order]

    skipped: list[dict] = []
    peer_paths: dict[str, str] = {}
    entries: list[dict] = []
    n_models = len(names)
    run_backends = [b for b in backends if b in have]
    for b in backends:
        if b not in have:
            skipped.append({"name": f"backend {b}", "reason": _missing_backend(b)})
    slow = n_models * (len(run_backends) + sum(p in peers for p in ("hf", "ort", "ort-opt")))
    fast = sum(p in peers for p in ("fasttext", "tfidf"))
    n_acc = len(texts)
    if time_budget is not None:
        # Size the accuracy set (the one part that cannot shrink per contender: all must see the
        # same texts) from a quick probe of the first model: a quarter of the budget, shared.
        probe = _probe_docs_per_s(mds[names[0]][1], texts[:64])
        per_entry = 0.25 * time_budget / max(1, slow * repeat)  # accuracy: every round
        # /2: the HF pipeline and ORT peers are usually slower than slimtext's torch backend
        # At least 32 texts (fewer say little about accuracy), but never more than there are.
        n_acc = min(len(texts), max(32, int(probe * per_entry / 2)))
        log(f"time budget {time_budget:.0f}s: accuracy on {n_acc} of {len(texts)} texts")

    # Only now, with every argument checked and the probe run: a run refused for a bad
    # argument (or whose probe fails) leaves the previous report alone.
    _start_fresh(out)
    n_jobs = slow + fast
    bar = _progress(n_jobs * repeat, progress)
    with (
        _library_bars(progress, peers),
        tempfile.TemporaryDirectory(prefix="slimtext-bench-") as tmp,
    ):
        work = Path(tmp)
        eval_file = work / "eval.jsonl"
        eval_file.write_text(
            "".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in zip(texts, gold,
                                                                               strict=True)),
            encoding="utf-8",
        )  # fmt: skip
        # Jobs still to run, each counted once per round: what the budget is shared among.
        state = {"left": n_jobs * repeat}
        # Contenders are prepared first (peers trained or converted) and queued; then measured
        # in `repeat` rounds, every contender once per round, so that a slow spell of a shared
        # machine hits all of them rather than the few measured during it.
        queue: list[tuple[str, str, Spec, dict]] = []

        def measure_one(name: str, group: str, spec: Spec, **meta) -> None:
            queue.append((name, group, spec, meta))

        def measure_now(name: str, spec: Spec, round_: int) -> dict | None:
            bar.set_postfix_str(name[:40])
            slice_s = budget.share(state["left"], fraction=0.8)
            state["left"] -= 1
            label = name if repeat == 1 else f"{name} (round {round_ + 1}/{repeat})"
            try:
                if slice_s is not None and (budget.left() < _MIN_SLICE_S or slice_s < 0.2):
                    raise TimeoutError("time budget exhausted before this measurement")
                spec.plan = asdict(Plan(n_accuracy=n_acc, seconds=slice_s))
                if isolate:
                    # Loading (exports, compilation) is not in the slice: allow for it, but
                    # never much past the end of the budget.
                    timeout = (
                        None
                        if slice_s is None
                        else min(max(20.0, 2 * slice_s + 30), max(10.0, budget.left() + 5))
                    )
                    res = run_isolated(spec, work / "specs", timeout)
                else:
                    res = measure_spec(spec, isolated=False)
            # Any failure of one contender (a peer library's own error types included) is
            # recorded and the run goes on: one broken entry must not lose the others.
            except Exception as e:
                skipped.append({"name": label, "reason": f"{type(e).__name__}: {e}"})
                log(f"{label}: skipped ({e})")
                res = None
            else:
                log(f"{label}: accuracy {res.get('accuracy', float('nan')):.4f}, "
                    f"{res['docs_per_s'].get('64', 0):.0f} docs/s at b=64")  # fmt: skip
            bar.update(1)
            return res

        def skip(name: str, reason: str, jobs: int = 1) -> None:
            skipped.append({"name": name, "reason": reason})
            log(f"{name}: skipped ({reason})")
            state["left"] -= jobs * repeat
            bar.update(jobs * repeat)

        common = dict(eval_file=str(eval_file), labels=labels, plan={}, threads=threads)
        # The cheap peers first: they set the accuracy bar and cost seconds, while one slow
        # backend late in the run may be what the budget has to drop.
        for peer in ("fasttext", "tfidf"):
            if peer not in peers:
                continue
            label = {"fasttext": "fastText", "tfidf": "TF-IDF + LR"}[peer]
            if train_ds is None:
                skip(label, "needs --train (it is trained in this run)")
                continue
            try:
                opts = (peer_options or {}).get(peer, {})
                folder, info = _train_fast_peer(
                    peer, train_ds, labels, work, budget, threads, state["left"], opts
                )
            except Exception as e:  # as in measure_one: reported, never fatal
                skip(label, f"{type(e).__name__}: {e}")
                continue
            peer_paths[label] = info.pop("how")
            spec = Spec(kind=peer, path=str(folder), **common)
            measure_one(label, "peer", spec, model=None, peer=peer, training=info)

        def slimtext_backend(name: str, path: Path, backend: str) -> None:
            spec = Spec(kind="slimtext", path=str(path), backend=backend, **common)
            measure_one(f"{name}/{backend}", "slimtext", spec, model=name, backend=backend)

        def hf_and_ort(name: str, path: Path, md, index: int) -> None:
            ort_peers = [p for p in ("ort", "ort-opt") if p in peers]
            hf_dir = None
            if "hf" in peers or ort_peers:
                hf_dir, how = _hf_peer(name, path, md, train_ds, work, budget, state["left"])
                if hf_dir is None:
                    skip(f"hf ({name})", how, jobs=int("hf" in peers))
                    for p in ort_peers:
                        skip(f"{p}-int8 ({name})", f"needs the hf peer: {how}")
                    return
                peer_paths[f"hf ({name})"] = how
            if "hf" in peers:
                spec = Spec(kind="hf", path=str(hf_dir), max_length=md.max_length, **common)
                measure_one(f"hf pipeline ({name})", "peer", spec, model=name, peer="hf",
                            mapping=how)  # fmt: skip
            for p in ort_peers:
                label = f"{p}-int8 ({name})"
                try:
                    from .peers import ort_int8_from_hf

                    # One folder per model (its index in `names`): a shared one would hold
                    # only the last model's export, measured in place of every model's.
                    info = ort_int8_from_hf(hf_dir, work / f"{p}-{index}", optimize=p == "ort-opt")
                except Exception as e:  # as in measure_one: reported, never fatal
                    skip(label, f"{type(e).__name__}: {e}")
                else:
                    peer_paths[label] = info["route"]
                    spec = Spec(kind="ort", path=info["path"], max_length=md.max_length,
                                extra={"tokenizer_dir": str(hf_dir)}, **common)  # fmt: skip
                    measure_one(label, "peer", spec, model=name, peer=p, route=info["route"])

        for index, name in enumerate(names):
            path, md = mds[name]
            # compile last: its warm-up compiles every length bucket and is the measurement
            # most likely not to fit a budget; the others should not be starved by it.
            compiled = [b for b in run_backends if b.startswith("compile")]
            for b in [b for b in run_backends if b not in compiled]:
                slimtext_backend(name, path, b)
            hf_and_ort(name, path, md, index)
            for b in compiled:
                slimtext_backend(name, path, b)

        runs: list[list[dict]] = [[] for _ in queue]
        for round_ in range(repeat):
            for i, (name, _group, spec, _meta) in enumerate(queue):
                res = measure_now(name, spec, round_)
                if res is not None:
                    runs[i].append(res)
                # What is measured so far survives a killed run; the full report replaces it.
                entries[:] = [
                    {"name": n, "group": g, **meta, **_median_of(r)}
                    for (n, g, _s, meta), r in zip(queue, runs, strict=True)
                    if r
                ]
                _save_partial(out, entries, skipped)
    bar.close()

    summary = _summarise(entries, names, pareto_front)
    result = {
        "machine": machine_info(),
        "settings": {
            "models": {n: str(mds[n][0]) for n in names},
            "data": str(data),
            "train": str(train) if train else None,
            "n_test": len(texts),
            "data_read": data_read,
            "train_read": train_read,
            "n_accuracy": n_acc,
            "batch_sizes": list(BATCH_SIZES),
            "time_budget": time_budget,
            "threads": threads,
            "backends": list(backends),
            "peers": list(peers),
            "isolate": isolate,
            "repeat": repeat,
        },  # fmt: skip
        "peer_paths": peer_paths,
        "entries": entries,
        "skipped": skipped,
        "summary": summary,
        "elapsed_s": time.monotonic() - budget.start,
    }
    write_report(result, out)
    Path(out, PARTIAL).unlink(missing_ok=True)
    log(f"wrote {out / 'report.md'}, report.json, pareto.png")
    if not entries:  # an empty report must not pass for a result with a script or a CI job
        why = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped) or "no contender ran"
        raise ValueError(f"nothing was measured ({why}); {out / 'report.md'} lists why")
    return result


PARTIAL = "report.partial.json"
REPORT_FILES = ("report.json", "report.md", "pareto.png")


def _read_inputs(model_dirs, data, train, load_kw: dict):
    """The model directories (by unique name, in order), test and train data; ValueError or
    DataError on anything unusable."""
    from ..artifact import read_model_dir
    from ..data import load_data
    from ..data.sources import load_kw_per_source

    kws = load_kw_per_source({"data": data, "train": train}, load_kw)
    test = load_data(data, **kws["data"])
    if not test.labels:
        raise ValueError(f"{data}: the test data needs labels")
    train_ds = load_data(train, **kws["train"]) if train else None
    mds, names = {}, []
    for p in model_dirs:
        md = read_model_dir(p)
        missing = sorted(set(test.labels) - set(md.labels))
        if missing:
            raise ValueError(
                f"{data}: labels {missing[:5]} are not among the labels of {p} "
                f"({Path(p) / 'labels.json'})"
            )
        name = Path(p).name or str(p)
        while name in mds:
            name += "'"
        mds[name] = (Path(p), md)
        names.append(name)
    return mds, names, test, train_ds


def _start_fresh(out: Path) -> None:
    """Delete the report files of an earlier run in `out` and write this run's (empty)
    partial report, raising ValueError naming the path when `out` is not writable.

    Deleted rather than renamed: a finished run overwrites them anyway, and renamed copies
    would sit next to this run's files (the mix this avoids). Done once the arguments are
    checked, so a run refused for a bad argument leaves the old report alone."""
    for name in (*REPORT_FILES, PARTIAL):
        path = Path(out, name)
        if path.is_file() and not _written_by_bench(path):
            raise ValueError(
                f"{path} was not written by slimtext bench and would be replaced; choose "
                "another --out, or move the file"
            )
    try:
        for name in (*REPORT_FILES, PARTIAL):
            Path(out, name).unlink(missing_ok=True)
        # From now on the folder says "a run in progress (or killed)", never an old result.
        _save_partial(out, [], [])
    except OSError as e:
        raise ValueError(f"cannot write the report into {out}: {e.strerror or e}") from None


def _written_by_bench(path: Path) -> bool:
    """Whether a report file in --out is an earlier bench run's (replaced) rather than the
    user's own file of the same name (refused: it was overwritten without a word)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if path.suffix == ".png":  # matplotlib names itself in the PNG's text chunks
            return head.startswith(b"\x89PNG") and b"Matplotlib" in head
        if path.suffix == ".md":
            return head.startswith(b"# slimtext bench")
        body = json.loads(path.read_text(encoding="utf-8"))
        return (
            isinstance(body, dict)
            and "entries" in body
            and ("settings" in body or body.get("partial") is True)
        )
    except (OSError, ValueError):
        return False


def _save_partial(out, entries: list[dict], skipped: list[dict]) -> None:
    from ..fileio import atomic_write_text

    Path(out).mkdir(parents=True, exist_ok=True)
    body = {"partial": True, "entries": entries, "skipped": skipped}
    atomic_write_text(Path(out, PARTIAL), json.dumps(body, indent=2, default=str) + "\n")


@contextlib.contextmanager
def _library_bars(enabled: bool, peers: Sequence[str]):
    """`progress=False` holds for the peers' libraries too: transformers drew its own bars
    ("Writing model shards", "Loading weights") while the HF peers (hf, ort, ort-opt) were
    prepared. Its switch is put back afterwards: this runs inside the caller's process."""
    import importlib.util

    hf_peers = {"hf", "ort", "ort-opt"} & set(peers)
    if enabled or not hf_peers or importlib.util.find_spec("transformers") is None:
        yield
        return
    import transformers.utils.logging as hf  # 1.5 s: only for a run that prepares HF peers

    on = hf.is_progress_bar_enabled()
    hf.disable_progress_bar()
    try:
        yield
    finally:
        if on:
            hf.enable_progress_bar()


def _progress(total: int, enabled: bool):
    from ..progress import progress_bar

    return progress_bar(total=total, desc="bench", unit="job", disable=not enabled)


def _probe_docs_per_s(md, texts: list[str]) -> float:
    from ..infer import Predictor

    pred = Predictor(md, backend="torch", batch_size=64)
    t0 = time.perf_counter()
    pred.predict(texts)
    return len(texts) / max(time.perf_counter() - t0, 1e-6)


def _hf_peer(name, path, md, train_ds, work: Path, budget: _Budget, jobs_left: int):
    """(hf folder, how it was made) or (None, why not)."""
    from .peers import hf_from_model_dir, hf_train_same_shape

    out = work / f"hf-{name.replace('/', '_')}"
    try:
        hf_from_model_dir(path, out)
        how = "exact: the same weights as a BertForSequenceClassification (save_hf)"
        if md.long_text != "truncate":  # the pipeline truncates; the model reads whole texts
            how += f"; it truncates texts the model reads with --long-text {md.long_text}"
        return out, how
    except PeerUnavailable as e:
        why = str(e)
    if "not installed" in why:
        return None, why
    if md.config.arch != "transformer":
        return None, f"{why}; arch={md.config.arch!r} has no BERT shape to train either"
    if train_ds is None:
        return None, f"{why}; pass --train to train that shape with transformers.Trainer"
    seconds = budget.share(jobs_left, fraction=0.3)
    if seconds is not None and seconds < 5:
        return None, (
            f"{why}; its share of the time budget ({seconds:.1f} s: 30% of what is left over "
            "the jobs left) is under 5 s, too short to train that shape with Trainer"
        )
    t = md.meta.get("train", {})
    bs = int(t.get("batch_size") or 32)
    steps = int(t.get("max_steps") or int(t.get("epochs") or 1) * math.ceil(len(train_ds) / bs))
    try:
        info = hf_train_same_shape(path, train_ds, out, max_steps=steps, seconds=seconds,
                                   batch_size=bs, lr=float(t.get("lr") or 1e-3))  # fmt: skip
    except Exception as e:  # a failed Trainer run is reported, never fatal
        return None, f"{why}; training with Trainer failed ({type(e).__name__}: {e})"
    if info["steps"] < steps / 2:
        # A peer cut off early by the budget would be compared at a fraction of its training:
        # better no peer than a misleading one.
        return None, (
            f"{why}; transformers.Trainer reached only {info['steps']} of {steps} steps in the "
            f"time budget ({info['train_seconds']:.0f}s): peer left out rather than half-trained"
        )
    return out, (
        f"{why}; instead a BERT of the same shape and tokenizer trained from scratch with "
        f"transformers.Trainer for {info['steps']} of {steps} steps "
        f"({info['train_seconds']:.0f}s): same shape, not the same weights"
    )


def _train_fast_peer(peer, train_ds, labels, work, budget: _Budget, threads, jobs_left, options):
    from ..data import stratified_split
    from .peers import FastTextPeer, TfidfPeer

    ds = train_ds
    seconds = budget.share(jobs_left, fraction=0.5)
    rate = _FASTTEXT_TRAIN_DOCS_PER_S if peer == "fasttext" else _TFIDF_TRAIN_DOCS_PER_S
    if seconds is not None and int(seconds * rate) < len(ds):
        n = max(len(set(ds.labels)) * 4, int(seconds * rate))
        if n < len(ds):  # a stratified subsample, so every class stays in
            ds = stratified_split(ds, 1 - n / len(ds), seed=0)[0]
    t0 = time.perf_counter()
    if peer == "fasttext":
        m = FastTextPeer(threads=threads or 2, **options).fit(ds, labels)
        extra = "".join(f", {k}={v}" for k, v in options.items())
        how = (f"fasttext.train_supervised(epoch={m.epoch}, wordNgrams={m.word_ngrams}{extra}), "
               "lowercased, punctuation split")  # fmt: skip
    else:
        # Without a budget C is searched as benchmarks/accuracy.py does; with one, C=4 is fixed.
        cs = options.get("cs") or ((1.0, 4.0, 16.0) if seconds is None else (4.0,))
        m = TfidfPeer(cs=cs).fit(ds)
        how = (f"TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2) + "
               f"LogisticRegression(C={m.c_:g})")  # fmt: skip
    info = {"train_seconds": time.perf_counter() - t0, "train_n": len(ds), "how": how}
    if len(ds) < len(train_ds):
        info["how"] += f"; trained on {len(ds)} of {len(train_ds)} texts (time budget)"
    folder = m.save(work / peer)
    return folder, info


def _median_of(runs: list[dict]) -> dict:
    """One entry from the results of several rounds: the median of every number (nested dicts
    of numbers too), anything else from the first round; and each round's rates and latency
    under "runs" when there was more than one."""
    import statistics

    def med(values: list):
        first = values[0]
        if isinstance(first, bool) or not isinstance(first, (int, float, dict)):
            return first
        if isinstance(first, dict):
            return {k: med([v[k] for v in values if isinstance(v, dict) and k in v])
                    for k in first}  # fmt: skip
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums and all(isinstance(v, int) for v in nums):
            return statistics.median_low(nums)  # a count stays a whole number
        return statistics.median(nums) if nums else first

    out = {k: med([r[k] for r in runs if k in r]) for k in runs[0]}
    if len(runs) > 1:
        keep = ("docs_per_s", "docs_per_s_arrival", "latency_ms_p50")
        out["runs"] = [{k: r.get(k) for k in keep} for r in runs]
    return out


def _versus_peers(mine: list[dict], peers: list[dict]) -> dict:
    """Per rate (batch 1, batch 64 length-sorted, arrival order): the fastest of a model's
    backends and its docs/s over each of the same model's peers (hf pipeline, ORT int8)."""
    from .report import RATE_KEYS, docs_per_s

    out = {}
    for key in RATE_KEYS:
        rates = {e["backend"]: docs_per_s(e, key) for e in mine if docs_per_s(e, key)}
        if not rates:
            continue
        best = _fastest(rates)[0]
        theirs = {p["peer"]: docs_per_s(p, key) for p in peers if docs_per_s(p, key)}
        out[key] = {
            "backend": best,
            "docs_per_s": rates[best],
            "peers": theirs,
            "ratios": {p: rates[best] / r for p, r in theirs.items()},
        }
    return out


def _fastest(rate: dict[str, float]) -> tuple[str | None, str | None, bool]:
    """(the backend to use, the fastest full-precision one, whether int8 is the one to use),
    by the margin `auto` asks (`Predictor._race`): the fastest fp32 backend, unless the fastest
    low-precision one (bf16 or int8) beats it by LOW_PRECISION_MARGIN. Among every backend
    measured: `auto` itself races fewer (AUTO_CANDIDATES: no compile, int8 only when the
    directory ships model.int8.onnx), so this is what to pass as --backend, not its pick."""
    from ..infer import LOW_PRECISION, LOW_PRECISION_MARGIN

    def best(group: dict[str, float]) -> str | None:
        return max(group, key=group.get) if group else None

    full = best({b: r for b, r in rate.items() if b not in LOW_PRECISION})
    low = best({b: r for b, r in rate.items() if b in LOW_PRECISION})
    pick = full or low
    if full and low and rate[low] > rate[full] / (1 - LOW_PRECISION_MARGIN):
        pick = low
    return pick, full, pick == "onnxruntime-int8"


def _summarise(entries: list[dict], names: list[str], pareto_front) -> dict:
    from ..infer import LOW_PRECISION_MARGIN

    models = {}
    for name in names:
        mine = [e for e in entries if e["group"] == "slimtext" and e["model"] == name]
        if not mine:
            models[name] = {"verdict": "nothing measured"}
            continue
        m: dict = {}
        parts = []
        for bs in ("1", "64"):
            rate = {e["backend"]: e["docs_per_s"].get(bs) or 0.0 for e in mine}
            fastest, best_float, chosen = _fastest(rate)
            int8 = rate.get("onnxruntime-int8")
            m[f"fastest_b{bs}"] = fastest
            m[f"int8_chosen_b{bs}"] = chosen
            if int8 and best_float:
                m[f"int8_vs_best_float_b{bs}"] = int8 / rate[best_float]
            note = (
                "int8 not measured"
                if int8 is None
                else f"int8 {'chosen' if chosen else 'not chosen'}"
                + (f" ({int8 / rate[best_float]:.2f}x {best_float})" if best_float else "")
            )
            parts.append(f"use at b={bs}: {fastest} ({rate.get(fastest, 0):.0f} docs/s); "
                         f"{note}")  # fmt: skip
        m["vs_peers"] = _versus_peers(mine, [e for e in entries if e["group"] == "peer"
                                             and e.get("model") == name])  # fmt: skip
        m["verdict"] = "; ".join(parts) + (
            f". A low-precision backend (bf16, int8) must beat the fastest fp32 one by "
            f"{LOW_PRECISION_MARGIN:.0%} to be chosen, the margin `backend='auto'` asks (auto "
            "races only torch, torch-bf16 where bf16 is native, onnxruntime, and "
            "onnxruntime-int8 when the directory ships model.int8.onnx)."
        )
        models[name] = m

    pts = [e for e in entries if e.get("accuracy") is not None and e["docs_per_s"].get("64")]
    front_idx = pareto_front([(e["docs_per_s"]["64"], e["accuracy"]) for e in pts])
    front = [pts[i] for i in front_idx]
    refs = {e["peer"]: e for e in entries if e.get("peer") in ("fasttext", "tfidf")}
    if not refs:
        line = "fastText and TF-IDF were not measured: no accuracy bar to compare against."
    else:
        bar = max(e["accuracy"] for e in refs.values())
        names_ = " and ".join(e["name"] for e in refs.values())
        wins = [e for e in front if e["group"] == "slimtext" and e["accuracy"] > bar]
        if wins:
            w = max(wins, key=lambda e: e["docs_per_s"]["64"])
            line = (f"**{w['name']}** is on the Pareto front and beats {names_} on accuracy "
                    f"({w['accuracy']:.4f} vs {bar:.4f}) at {w['docs_per_s']['64']:.0f} docs/s "
                    f"(batch 64).")  # fmt: skip
        else:
            ours = [e["accuracy"] for e in pts if e["group"] == "slimtext"]
            best = f"best slimtext entry {max(ours):.4f}, " if ours else ""
            line = (f"No slimtext entry on the Pareto front beats {names_} on accuracy "
                    f"({best}best of the peers {bar:.4f}).")  # fmt: skip
    return {
        "models": models,
        "pareto_front": [e["name"] for e in front],
        "winner_line": line,
    }
