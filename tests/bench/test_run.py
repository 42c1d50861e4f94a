"""`slimtext.bench.run` end to end on a tiny model: every file, every section, every peer; a
missing peer library or a missing --train is reported and skipped; the time budget holds."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from slimtext.bench import run
from slimtext.infer import LOW_PRECISION_MARGIN

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def full_report(cls_model_dir, bench_data, tmp_path_factory):
    """One in-process run with every peer (the slow part of this folder: ~10 s)."""
    for mod in ("transformers", "fasttext", "sklearn"):
        pytest.importorskip(mod)
    train, test = bench_data
    out = tmp_path_factory.mktemp("bench-out") / "report"
    import torch

    threads = torch.get_num_threads()
    result = run([cls_model_dir], str(test), out, train=str(train),
                 backends=["torch", "onnxruntime-int8"], threads=1, isolate=False,
                 peer_options={"fasttext": {"bucket": 20000, "dim": 16, "epoch": 5}},
                 progress=False)  # fmt: skip
    assert torch.get_num_threads() == threads  # the caller's was left at `threads`
    return out, result


def test_report_files_have_every_section(full_report):
    out, result = full_report
    saved = json.loads((out / "report.json").read_text())
    assert saved["entries"] == json.loads(json.dumps(result["entries"]))
    for key in ("machine", "settings", "peer_paths", "entries", "skipped", "summary"):
        assert key in saved, key
    names = {e["name"] for e in saved["entries"]}
    expected = {"tiny-cls/torch", "tiny-cls/onnxruntime-int8", "hf pipeline (tiny-cls)",
                "ort-int8 (tiny-cls)", "fastText", "TF-IDF + LR"}  # fmt: skip
    assert names == expected, saved["skipped"]
    for e in saved["entries"]:
        assert 0.0 <= e["accuracy"] <= 1.0 and e["n"] == 150
        assert e["latency_ms_p50"] > 0 and e["latency_ms_p99"] >= e["latency_ms_p50"]
        assert set(e["docs_per_s"]) == {"1", "8", "64"} and min(e["docs_per_s"].values()) > 0
        assert set(e["docs_per_s_arrival"]) == {"64"} and e["docs_per_s_arrival"]["64"] > 0
        assert e["peak_rss_mb"] > 0 and e["size_mb"] > 0
    assert "direct" in saved["peer_paths"]["ort-int8 (tiny-cls)"]  # Optimum is not installed
    assert saved["peer_paths"]["hf (tiny-cls)"].startswith("exact")
    m = saved["summary"]["models"]["tiny-cls"]
    assert m["fastest_b1"] in ("torch", "onnxruntime-int8") and "int8_chosen_b64" in m
    # Against the peers: the fastest backend per rate, divided by each peer's own rate.
    by_name = {e["name"]: e for e in saved["entries"]}
    for key, field in (("1", "docs_per_s"), ("64", "docs_per_s"), ("arrival", None)):
        v = m["vs_peers"][key]
        rate = (lambda e: e["docs_per_s_arrival"]["64"]) if field is None else (
            lambda e, k=key: e["docs_per_s"][k])  # fmt: skip
        mine = {b: rate(by_name[f"tiny-cls/{b}"]) for b in ("torch", "onnxruntime-int8")}
        # int8 only when it beats torch by auto's margin: the backend the summary names
        int8 = mine["onnxruntime-int8"] > mine["torch"] / (1 - LOW_PRECISION_MARGIN)
        pick = "onnxruntime-int8" if int8 else "torch"
        best = mine[pick]
        assert v["backend"] == pick and v["docs_per_s"] == best
        if field is not None:
            assert m[f"fastest_b{key}"] == pick
        hf = rate(by_name["hf pipeline (tiny-cls)"])
        assert v["peers"]["hf"] == hf and v["ratios"]["hf"] == pytest.approx(best / hf)
        assert set(v["ratios"]) == {"hf", "ort"}

    md = (out / "report.md").read_text()
    for part in ("| model / backend | accuracy | macro-F1 | p50 ms | p99 ms", "vs hf b=1",
                 "vs ort-int8 b=64", "vs hf arrival", "docs/s arrival",
                 "## Best slimtext backend against the peers", "batch 64, arrival order",
                 "## The backend to use, and int8", "## Pareto front",
                 "## Peers", "tiny-cls/onnxruntime-int8", "fastText", "TF-IDF + LR"):  # fmt: skip
        assert part in md, part
    assert ("on the Pareto front and beats" in md) or ("No slimtext entry" in md)
    # The torch row carries ratios against the hf and ort peers: b=1, b=64, arrival each.
    torch_row = next(line for line in md.splitlines() if line.startswith("| tiny-cls/torch "))
    assert torch_row.count("x |") == 6, torch_row
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list(out.glob(".*")), "temporary files left behind"


def test_missing_peer_library_and_missing_train_are_skipped_not_fatal(
    cls_model_dir, bench_data, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "fasttext", None)  # `import fasttext` now fails
    _, test = bench_data
    # No --train: fasttext and tfidf cannot be trained; and fasttext is "not installed".
    result = run([cls_model_dir], str(test), tmp_path, peers=["fasttext", "tfidf"],
                 backends=["torch"], threads=1, isolate=False, progress=False)  # fmt: skip
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert "needs --train" in reasons["TF-IDF + LR"]
    assert "needs --train" in reasons["fastText"]
    assert [e["name"] for e in result["entries"]] == ["tiny-cls/torch"]
    train, _ = bench_data
    result = run([cls_model_dir], str(test), tmp_path, train=str(train), peers=["fasttext"],
                 backends=["torch"], threads=1, isolate=False, progress=False)  # fmt: skip
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert "pip install fasttext-wheel" in reasons["fastText"]
    md = (tmp_path / "report.md").read_text()
    assert "## Skipped" in md and "fasttext-wheel" in md
    assert "fastText and TF-IDF were not measured" in md
    # A backend this machine lacks (here: onnxruntime "not installed") names the extra
    run_mod = importlib.import_module("slimtext.bench.run")  # the module: `run` is its function
    monkeypatch.setattr(run_mod, "available_backends", lambda: ["torch"])
    result = run([cls_model_dir], str(test), tmp_path, peers=[],
                 backends=["torch", "onnxruntime"], threads=1, isolate=False,
                 progress=False)  # fmt: skip
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert "pip install 'slimtext[onnx]'" in reasons["backend onnxruntime"]


def test_time_budget_is_kept_and_what_did_not_fit_is_recorded(cls_model_dir, bench_data,
                                                              tmp_path):  # fmt: skip
    _, test = bench_data
    budget = 2.0
    result = run([cls_model_dir, cls_model_dir], str(test), tmp_path, peers=[],
                 backends=["torch"] * 6, time_budget=budget, threads=1, isolate=False,
                 progress=False)  # fmt: skip
    # Twelve measurements do not fit in two seconds: the late ones are skipped with the reason.
    assert result["elapsed_s"] < budget + 3.0
    assert any("time budget" in s["reason"] for s in result["skipped"]), result["skipped"]
    assert result["entries"], "the first measurements should have fit"
    for e in result["entries"]:  # time-sliced: never more texts than the test set
        assert e["latency_n"] <= 150 and e["throughput_n"]["1"] <= 150
    assert (tmp_path / "report.md").is_file() and (tmp_path / "pareto.png").is_file()


def test_bad_arguments_are_clear_errors(cls_model_dir, bench_data, tmp_path):
    _, test = bench_data
    with pytest.raises(ValueError, match="unknown peers"):
        run([cls_model_dir], str(test), tmp_path, peers=["bert"], progress=False)
    with pytest.raises(ValueError, match="unknown backends"):
        run([cls_model_dir], str(test), tmp_path, backends=["tpu"], progress=False)
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "a b c", "label": "weather"}\n')
    with pytest.raises(ValueError, match=r"\['weather'\].*labels.json"):
        run([cls_model_dir], str(other), tmp_path, peers=[], progress=False)
    # refused before anything is read or deleted: an earlier report in --out stays
    (tmp_path / "report.md").write_text("an earlier report")
    bad = [(dict(time_budget=float("nan")), "time_budget"),
           (dict(time_budget=float("inf")), "time_budget"),
           (dict(max_test=0), "max_test"), (dict(max_test=-1), "max_test")]  # fmt: skip
    for kw, message in bad:
        with pytest.raises(ValueError, match=message):
            run([cls_model_dir], str(test), tmp_path, peers=[], progress=False, **kw)
    assert (tmp_path / "report.md").read_text() == "an earlier report"


def test_a_run_that_dies_before_the_report_keeps_what_it_measured(
    cls_model_dir, bench_data, tmp_path, monkeypatch
):
    import slimtext.bench.report as report

    def boom(result, out):
        raise KeyboardInterrupt  # as if the run were stopped while writing the report

    monkeypatch.setattr(report, "write_report", boom)
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        run([cls_model_dir], str(bench_data[1]), out, peers=[], backends=["torch"], threads=1,
            isolate=False, progress=False)  # fmt: skip
    partial = json.loads((out / "report.partial.json").read_text())
    assert partial["partial"] and [e["name"] for e in partial["entries"]] == ["tiny-cls/torch"]


def test_a_finished_run_leaves_no_partial_file(full_report):
    out, _ = full_report
    assert not (out / "report.partial.json").exists()


def test_report_names_the_thread_count_the_entries_were_measured_with(full_report):
    # `--threads 1` on a 2-core machine: every entry ran on 1 thread, and the report's header
    # said "torch threads 2" (the bench process's own count, never used to measure).
    import copy

    from slimtext.bench.report import markdown

    _, result = full_report
    result = copy.deepcopy(result)
    result["machine"]["torch_threads"] = 7
    assert "torch threads 1;" in markdown(result)
    result["settings"]["threads"] = None  # not given: each entry used torch's default
    assert "torch threads 7;" in markdown(result)


def test_repeat_measures_in_turns_and_reports_medians(cls_model_dir, bench_data, tmp_path,
                                                      monkeypatch):  # fmt: skip
    """--repeat 3: every contender once per round (not three times in a row), and each figure
    is the median of its rounds, with the rounds kept under "runs"."""
    bench_run = sys.modules["slimtext.bench.run"]  # the module (the package exports `run`)
    order, rates = [], iter([100.0, 10.0, 300.0, 30.0, 200.0, 20.0])  # round-major

    def fake_measure(spec, isolated):
        order.append(spec.path)
        r = next(rates)
        return {"accuracy": 0.5, "n": 150, "latency_ms_p50": 1000 / r, "docs_per_s":
                {"1": r, "8": r, "64": r}, "docs_per_s_arrival": {"64": r / 2},
                "torch_threads": 1, "memory_method": "fake"}  # fmt: skip

    monkeypatch.setattr(bench_run, "measure_spec", fake_measure)
    second = tmp_path / "copy"
    shutil.copytree(cls_model_dir, second)
    result = run([cls_model_dir, second], str(bench_data[1]), tmp_path / "out", peers=[],
                 backends=["torch"], threads=1, isolate=False, progress=False,
                 repeat=3)  # fmt: skip
    assert order == [str(cls_model_dir), str(second)] * 3
    a, b = result["entries"]
    assert a["docs_per_s"]["64"] == 200.0 and b["docs_per_s"]["64"] == 20.0
    assert a["docs_per_s_arrival"]["64"] == 100.0 and a["latency_ms_p50"] == 5.0
    assert [r["docs_per_s"]["64"] for r in a["runs"]] == [100.0, 300.0, 200.0]
    assert a["memory_method"] == "fake" and result["settings"]["repeat"] == 3
    with pytest.raises(ValueError, match="repeat"):
        run([cls_model_dir], str(bench_data[1]), tmp_path / "x", peers=[], repeat=0)


def _fake_measure(spec, isolated):
    """Stands in for measure_spec where the test is about what run() hands it, not timings."""
    return {"accuracy": 0.5, "n": 20, "latency_ms_p50": 1.0,
            "docs_per_s": {"1": 10.0, "8": 10.0, "64": 10.0}, "docs_per_s_arrival": {"64": 5.0},
            "torch_threads": 1, "memory_method": "fake"}  # fmt: skip


def test_every_model_measures_its_own_ort_peer(cls_model_dir, bench_data, tmp_path, monkeypatch):
    """Two models: each ORT peer spec must point at that model's export (a shared folder held
    only the last export, measured for every model)."""
    pytest.importorskip("transformers")
    import slimtext.bench.peers as peers

    bench_run = sys.modules["slimtext.bench.run"]

    def fake_export(hf_dir, out_dir, optimize=False):  # records which HF model it exported
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.onnx").write_text(str(hf_dir))
        return {"path": str(out_dir / "model.onnx"), "route": "fake"}

    exported_from = {}

    def measure(spec, isolated):
        if spec.kind == "ort":
            exported_from[spec.extra["tokenizer_dir"]] = Path(spec.path).read_text()
        return _fake_measure(spec, isolated)

    monkeypatch.setattr(peers, "ort_int8_from_hf", fake_export)
    monkeypatch.setattr(bench_run, "measure_spec", measure)
    second = tmp_path / "copy"
    shutil.copytree(cls_model_dir, second)
    run([cls_model_dir, second], str(bench_data[1]), tmp_path / "out", peers=["ort"],
        backends=[], threads=1, isolate=False, progress=False)  # fmt: skip
    assert len(exported_from) == 2
    for tokenizer_dir, hf_dir in exported_from.items():
        assert hf_dir == tokenizer_dir


def test_fasttext_peer_when_the_test_set_lacks_a_training_class(cls_model_dir, bench_data,
                                                                 tmp_path):  # fmt: skip
    pytest.importorskip("fasttext")
    train, test = bench_data
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    gone = rows[0]["label"]
    fewer = tmp_path / "test.jsonl"
    fewer.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] != gone))
    result = run([cls_model_dir], str(fewer), tmp_path / "out", train=str(train),
                 peers=["fasttext"], backends=[], threads=1, isolate=False, progress=False,
                 max_test=20, peer_options={"fasttext": {"bucket": 20000, "dim": 16,
                                                          "epoch": 5}})  # fmt: skip
    assert [e["name"] for e in result["entries"]] == ["fastText"], result["skipped"]


def test_an_output_path_that_is_a_file_is_a_clear_error_before_measuring(
    cls_model_dir, bench_data, tmp_path, monkeypatch
):
    bench_run = sys.modules["slimtext.bench.run"]
    measured = []
    monkeypatch.setattr(bench_run, "measure_spec", lambda s, isolated: measured.append(s))
    afile = tmp_path / "taken"
    afile.write_text("not a folder")
    with pytest.raises(ValueError, match="taken.*not a folder"):
        run([cls_model_dir], str(bench_data[1]), afile, peers=[], backends=["torch"],
            isolate=False, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="taken"):  # a folder to be made under it
        run([cls_model_dir], str(bench_data[1]), afile / "sub", peers=[], backends=["torch"],
            isolate=False, progress=False)  # fmt: skip
    assert not measured and afile.read_text() == "not a folder"


def test_a_run_refused_for_its_inputs_leaves_no_new_folder(cls_model_dir, bench_data, tmp_path):
    from slimtext.data import DataError

    missing = tmp_path / "no-such.jsonl"
    for model, data, err in (
        (cls_model_dir, missing, DataError),  # unreadable test data
        (tmp_path / "no-model", bench_data[1], Exception),  # not a model directory
    ):
        out = tmp_path / "new" / "report"
        with pytest.raises(err):
            run([model], str(data), out, peers=[], backends=["torch"], isolate=False,
                progress=False)  # fmt: skip
        assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(DataError):
        run([cls_model_dir], str(missing), kept, peers=[], backends=["torch"], isolate=False,
            progress=False)  # fmt: skip
    assert kept.is_dir()  # a folder the user made stays


def test_accuracy_set_never_exceeds_the_test_set(cls_model_dir, bench_data, tmp_path,
                                                 monkeypatch):  # fmt: skip
    bench_run = sys.modules["slimtext.bench.run"]
    plans = []
    monkeypatch.setattr(
        bench_run,
        "measure_spec",
        lambda s, isolated: plans.append(s.plan) or _fake_measure(s, isolated),
    )
    # 20 texts: below the 32-text floor of the budget-sized accuracy set.
    result = run([cls_model_dir], str(bench_data[1]), tmp_path, peers=[], backends=["torch"],
                 time_budget=60, max_test=20, threads=1, isolate=False,
                 progress=False)  # fmt: skip
    assert result["settings"]["n_accuracy"] == 20 and plans[0]["n_accuracy"] == 20
    assert "accuracy on 20);" in (tmp_path / "report.md").read_text()


def test_a_new_run_removes_the_previous_report_first(cls_model_dir, bench_data, tmp_path,
                                                     monkeypatch):  # fmt: skip
    """Killed before its report: the folder holds this run's partial file only, not the old
    run's report next to it as if it were current."""
    import slimtext.bench.report as report

    bench_run = sys.modules["slimtext.bench.run"]
    monkeypatch.setattr(bench_run, "measure_spec", _fake_measure)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text('{"settings": {}, "entries": []}')  # an earlier run's
    (out / "report.md").write_text("# slimtext bench\n\nan earlier run")
    (out / "pareto.png").write_bytes(b"\x89PNG\r\n\x1a\n...tEXtSoftware\x00Matplotlib 3")

    def boom(result, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", boom)
    with pytest.raises(KeyboardInterrupt):
        run([cls_model_dir], str(bench_data[1]), out, peers=[], backends=["torch"],
            isolate=False, progress=False)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["report.partial.json"]


def test_report_md_says_when_a_model_reads_every_window(full_report):
    from slimtext.bench.report import markdown

    _, result = full_report
    assert "long_text='chunks'" not in markdown(result)  # tiny-cls truncates, as the peers do
    chunked = json.loads(json.dumps(result))
    for e in chunked["entries"]:
        if e["group"] == "slimtext":
            e["long_text"] = "chunks"
    assert "tiny-cls use long_text='chunks'" in markdown(chunked)


@pytest.mark.parametrize("name", ["report.md", "report.json", "pareto.png"])
def test_a_file_bench_did_not_write_is_not_replaced(cls_model_dir, bench_data, tmp_path,
                                                    monkeypatch, name):  # fmt: skip
    bench_run = sys.modules["slimtext.bench.run"]
    monkeypatch.setattr(bench_run, "measure_spec", _fake_measure)
    out = tmp_path / "project"
    out.mkdir()
    (out / name).write_text("# My quarterly report")  # was replaced without a word
    with pytest.raises(ValueError, match=f"{name} was not written by slimtext bench"):
        run([cls_model_dir], str(bench_data[1]), out, peers=[], backends=["torch"],
            isolate=False, progress=False)  # fmt: skip
    assert [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_text() == "# My quarterly report"


def test_rows_skipped_on_reading_are_in_the_report(cls_model_dir, bench_data, tmp_path,
                                                   monkeypatch):  # fmt: skip
    from slimtext.bench.report import markdown

    bench_run = sys.modules["slimtext.bench.run"]
    monkeypatch.setattr(bench_run, "measure_spec", _fake_measure)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(bench_data[1].read_text() + "{not json\n")
    logs: list[str] = []
    result = run([cls_model_dir], str(bad), tmp_path / "out", peers=[], backends=["torch"],
                 isolate=False, progress=False, load_kw={"on_bad": "skip"},
                 log=logs.append)  # fmt: skip
    read = result["settings"]["data_read"]
    assert "skipped 1 (1 invalid JSON)" in read
    md = markdown(result)
    assert f"data: {read}" in logs and f"Test data as read: {read}." in md
    assert "vs ort-int8" not in md and "vs hf" not in md  # no peers ran: no columns of "-"
    head, rule = next(md.splitlines()[i : i + 2] for i, x in enumerate(md.splitlines())
                      if x.startswith("| model / backend"))  # fmt: skip
    assert head.count("|") == rule.count("|") == 12  # 11 cells, as many as the rule row
    assert "(--no-isolate: an upper bound)" in md  # not "that entry alone"


def test_the_rounds_line_names_entries_the_budget_cut_short():
    from slimtext.bench.report import _rounds_line

    full = {"name": "m/torch", "runs": [{}, {}, {}]}
    assert "Every figure is the median of 3 rounds" in _rounds_line([full], 3)
    line = _rounds_line([full, {"name": "m/ort", "runs": [{}, {}]}, {"name": "m/int8"}], 3)
    assert "medians of up to 3 rounds" in line and "fewer to: m/ort 2, m/int8 1." in line
    assert _rounds_line([full], 1) == ""


def test_a_run_that_measures_nothing_is_an_error(cls_model_dir, bench_data, tmp_path,
                                                 monkeypatch):  # fmt: skip
    # asked for backends this machine lacks and no peers: an empty report, exit 0
    bench_run = sys.modules["slimtext.bench.run"]
    monkeypatch.setattr(bench_run, "available_backends", lambda: set())
    # (alone it is an error, and says why)
    with pytest.raises(ValueError, match=r"nothing was measured .backend onnxruntime: .*onnx\]"):
        run([cls_model_dir], str(bench_data[1]), tmp_path / "out", peers=[],
            backends=["onnxruntime"], isolate=False, progress=False)  # fmt: skip
    assert (tmp_path / "out" / "report.md").is_file()  # the why, kept


def test_a_run_stopped_while_plotting_leaves_no_finished_report(
    cls_model_dir, bench_data, tmp_path, monkeypatch
):
    # the plot (~1 s of matplotlib) came last: a SIGTERM there left report.json and report.md
    # beside the partial file, neither a finished run nor a partial one
    import slimtext.bench.report as report

    bench_run = sys.modules["slimtext.bench.run"]
    monkeypatch.setattr(bench_run, "measure_spec", _fake_measure)

    def stopped(result, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot", stopped)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run([cls_model_dir], str(bench_data[1]), out, peers=[], backends=["torch"],
            isolate=False, progress=False)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["report.partial.json"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_measurement_process_ends_with_the_bench_that_started_it(tmp_path):
    # `kill -9` of bench left its measurement process running on, an orphan holding the CPU
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child = (
        "import os, time, pathlib; from slimtext.bench import measure; "
        "measure.die_with_parent(); "
        f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); "
        "time.sleep(60)")])  # fmt: skip
    deadline = time.monotonic() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break  # gone with its parent
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            break  # dead, waiting for init to reap it
        assert time.monotonic() < deadline, "the measurement process outlived its bench"
        time.sleep(0.05)


def test_no_progress_silences_the_peers_library_bars_and_puts_them_back():
    # --no-progress left transformers' "Writing model shards" / "Loading weights" bars on.
    hf = pytest.importorskip("transformers.utils.logging")
    from slimtext.bench.run import _library_bars

    hf.enable_progress_bar()
    with _library_bars(False, ["hf", "tfidf"]):
        assert not hf.is_progress_bar_enabled()
    assert hf.is_progress_bar_enabled()
    for shown, peers in ((True, ["hf"]), (False, ["tfidf"])):
        with _library_bars(shown, peers):
            assert hf.is_progress_bar_enabled()
    hf.disable_progress_bar()  # the caller's own choice stays
    with _library_bars(False, ["ort"]):
        pass
    assert not hf.is_progress_bar_enabled()
    hf.enable_progress_bar()
