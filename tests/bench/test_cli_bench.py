"""`slimtext bench` on the command line, and the int8 rule `auto` and the report share."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from slimtext.cli import app

runner = CliRunner()


def test_bench_verb_runs_end_to_end(cls_model_dir, bench_data, tmp_path):
    pytest.importorskip("sklearn")
    train, test = bench_data
    out = tmp_path / "report"
    r = runner.invoke(app, ["bench", str(cls_model_dir), "--data", str(test), "--train",
                            str(train), "--peers", "tfidf", "--backends", "torch", "--threads",
                            "1", "--no-isolate", "--no-progress", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "| tiny-cls/torch |" in r.output and "| TF-IDF + LR |" in r.output
    saved = json.loads((out / "report.json").read_text())
    assert saved["settings"]["peers"] == ["tfidf"] and saved["settings"]["threads"] == 1
    assert (out / "pareto.png").is_file()


def test_bench_verb_names_the_bad_file(cls_model_dir, tmp_path):
    r = runner.invoke(app, ["bench", str(cls_model_dir), "--data", str(tmp_path / "nope.jsonl"),
                            "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert r.exit_code == 2 and "nope.jsonl" in r.output


def test_bench_reads_a_cp1252_file_as_its_error_suggests(cls_model_dir, bench_data, tmp_path):
    rows = [json.loads(x) for x in bench_data[1].read_text(encoding="utf-8").splitlines()][:40]
    rows[3]["text"] += " café"
    data = tmp_path / "cp.jsonl"
    data.write_bytes(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("cp1252")
    )
    args = ["bench", str(cls_model_dir), "--data", str(data), "--peers", "", "--backends",
            "torch", "--threads", "1", "--no-isolate", "--no-progress"]  # fmt: skip
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--encoding" in r.output  # what it suggests...
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--encoding", "cp1252"])
    assert r.exit_code == 0, r.output  # ...bench had no such option


def test_bench_help():
    r = runner.invoke(app, ["bench", "--help"])
    assert r.exit_code == 0 and "--time-budget" in r.output


@pytest.fixture(scope="module")
def int8_dir(cls_model_dir, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from slimtext.export import quantize_onnx

    d = tmp_path_factory.mktemp("int8") / "tiny"
    shutil.copytree(cls_model_dir, d)
    quantize_onnx(d, exporter="torchscript")  # listed in the manifest: auto may race it
    return d


@pytest.mark.parametrize(
    ("int8_ms", "expected"), [(9.0, "onnxruntime-int8"), (9.8, "torch"), (20.0, "torch")]
)
def test_auto_takes_int8_only_when_clearly_faster(int8_dir, monkeypatch, int8_ms, expected):
    import slimtext.infer as infer
    from slimtext.infer import Predictor, load

    # Fake, deterministic timings: torch 10 ms, onnxruntime 12 ms, int8 as parametrised (and
    # bf16, raced only where native, too slow to matter here).
    fake = {"torch": 10.0, "torch-bf16": 30.0, "onnxruntime": 12.0, "onnxruntime-int8": int8_ms}
    monkeypatch.setattr(Predictor, "_time_synthetic", lambda self, n: fake[self._runner_name])
    pred = load(int8_dir, backend="auto")
    raced = set(fake) - (set() if infer.native_bf16("cpu") else {"torch-bf16"})
    assert set(pred.backend_timings) == raced
    assert pred.backend == expected
    assert pred.predict(["goal match team"]) == load(int8_dir).predict(["goal match team"])


@pytest.mark.parametrize(
    ("native", "bf16_ms", "int8_ms", "expected"),
    [
        (True, 9.0, 20.0, "torch-bf16"),  # native and clearly faster than fp32
        (True, 9.8, 20.0, "torch"),  # within the margin: fp32 stays
        (True, 8.0, 7.0, "onnxruntime-int8"),  # the fastest low-precision backend competes
        (False, 1.0, 20.0, "torch"),  # emulated bf16 is not even raced
    ],
)
def test_auto_takes_bf16_only_where_native_and_clearly_faster(
    int8_dir, monkeypatch, native, bf16_ms, int8_ms, expected
):
    import slimtext.infer as infer
    from slimtext.infer import Predictor, load

    monkeypatch.setattr(infer, "native_bf16", lambda device="cpu": native)
    fake = {"torch": 10.0, "torch-bf16": bf16_ms, "onnxruntime": 12.0, "onnxruntime-int8": int8_ms}
    monkeypatch.setattr(Predictor, "_time_synthetic", lambda self, n: fake[self._runner_name])
    pred = load(int8_dir, backend="auto")
    assert pred.backend == expected
    assert ("torch-bf16" in pred.backend_timings) == native
    # Only low-precision candidates (no fp32 one raced): the fastest of them is taken.
    if native:
        only = Predictor(pred.model_dir, backend="auto", candidates=("torch-bf16",))
        assert only.backend == "torch-bf16"
    else:
        with pytest.raises(RuntimeError, match="no backend available"):
            Predictor(pred.model_dir, backend="auto", candidates=("torch-bf16",))


def test_report_verdict_uses_the_same_int8_rule():
    from slimtext.bench.report import pareto_front
    from slimtext.bench.run import _summarise

    def entry(backend, b1, b64):
        return {"name": f"m/{backend}", "group": "slimtext", "model": "m", "backend": backend,
                "accuracy": 0.9, "docs_per_s": {"1": b1, "8": b1, "64": b64}}  # fmt: skip

    entries = [entry("torch", 100.0, 1000.0), entry("onnxruntime", 120.0, 900.0),
               entry("onnxruntime-int8", 150.0, 1020.0)]  # fmt: skip
    m = _summarise(entries, ["m"], pareto_front)["models"]["m"]
    assert m["fastest_b1"] == "onnxruntime-int8" and m["int8_chosen_b1"]
    # 2% faster at batch 64 is within noise: float torch stays the choice.
    assert m["fastest_b64"] == "torch" and not m["int8_chosen_b64"]
    assert "int8 chosen" in m["verdict"] and "int8 not chosen" in m["verdict"]
    # bf16 is low precision too (auto's rule): 1% faster than fp32 is not enough, 6% is
    entries = [entry("torch", 1000.0, 1000.0), entry("torch-bf16", 1010.0, 1060.0),
               entry("onnxruntime-int8", 1040.0, 1030.0)]  # fmt: skip
    m = _summarise(entries, ["m"], pareto_front)["models"]["m"]
    assert m["fastest_b1"] == "torch" and not m["int8_chosen_b1"]
    assert m["fastest_b64"] == "torch-bf16" and not m["int8_chosen_b64"]
    entries[2] = entry("onnxruntime-int8", 1060.0, 1000.0)  # the fastest low one, 6% ahead
    assert _summarise(entries, ["m"], pareto_front)["models"]["m"]["fastest_b1"] == (
        "onnxruntime-int8"
    )


def test_arrival_rate_leaves_out_the_first_call_and_keeps_the_order(monkeypatch):
    """predict_all: labels in input order, docs/s over the calls after the first (which may
    pay lazy initialisation), on a fake clock the scoring function advances."""
    from slimtext.bench import measure

    clock = {"t": 0.0}
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["t"])
    calls = []

    def fn(texts):
        clock["t"] += 10.0 if not calls else len(texts) / 64  # first call slow, then 64 docs/s
        calls.append(len(texts))
        return [t.upper() for t in texts]

    texts = [f"t{i}" for i in range(64 * 3 + 32)]
    labels, rate = measure.predict_all(fn, texts, 64)
    assert labels == [t.upper() for t in texts] and calls == [64, 64, 64, 32]
    assert rate == pytest.approx(64.0)
    assert measure.predict_all(fn, texts[:10], 64)[1] is None  # one call: nothing to time


def test_bench_verb_refuses_an_out_that_is_a_file(cls_model_dir, bench_data, tmp_path):
    taken = tmp_path / "report"
    taken.write_text("a file")
    r = runner.invoke(app, ["bench", str(cls_model_dir), "--data", str(bench_data[1]),
                            "--peers", "", "--backends", "torch", "--no-isolate",
                            "--no-progress", "--out", str(taken)])  # fmt: skip
    assert r.exit_code == 2 and "not a folder" in r.output and "Traceback" not in r.output


def test_bench_empty_backends_option_is_none_not_all(cls_model_dir, bench_data, monkeypatch):
    # `--backends ''` ran every backend (compile included) where `--peers ''` is none
    import slimtext.bench as bench_pkg

    seen = {}

    def fake_run(model_dirs, data, out, **kw):
        seen.update(kw)
        raise ValueError("stop here")

    monkeypatch.setattr(bench_pkg, "run", fake_run)
    r = runner.invoke(app, ["bench", str(cls_model_dir), "--data", str(bench_data[1]),
                            "--out", "o", "--backends", "", "--peers", "tfidf"])  # fmt: skip
    assert r.exit_code == 2 and seen["backends"] == [], r.output
    runner.invoke(app, ["bench", str(cls_model_dir), "--data", str(bench_data[1]),
                        "--out", "o"])  # fmt: skip
    assert seen["backends"] is None  # not given: all
