from __future__ import annotations

import json

import numpy as np
import pytest

import slimtext
from slimtext.compress.recipe import compress, parse_recipe


def test_recipe_parsing():
    assert parse_recipe("distill,prune:heads=0.5,ffn=0.5,quantize:int8-dynamic,max_drop=0.01") == [
        ("distill", {}),
        ("prune", {"heads": 0.5, "ffn": 0.5}),
        ("quantize", {"method": "int8-dynamic", "max_drop": 0.01}),
    ]
    with pytest.raises(ValueError, match="unknown compression step"):
        parse_recipe("shrink:0.5")
    with pytest.raises(ValueError, match="before any step"):
        parse_recipe("heads=0.5")


def test_recipe_chains_steps_reports_each_and_the_result_round_trips(
    teacher_dir, make_toy, tmp_path
):
    out = tmp_path / "student"
    rows = compress(
        teacher_dir, make_toy(20, seed=41), out,
        recipe="distill:layers=1,epochs=2,prune:heads=0.5,ffn=0.5,finetune=1,"
               "sparsity:0.3,steps=1,finetune=0,quantize:int8-dynamic",
        test=make_toy(10, seed=42), speed_kw={"n_latency": 5, "n_batches": 2, "warmup": 1},
        train_config={"batch_size": 16, "lr": 5e-3, "threads": 1}, log=lambda s: None,
    )  # fmt: skip
    assert [r["step"] for r in rows][0] == "teacher" and len(rows) == 5
    for key in ("accuracy", "macro_f1", "params", "size_mb", "latency_ms_p50", "throughput",
                "smaller_x", "faster_latency_x", "throughput_x"):  # fmt: skip
        assert all(key in r for r in rows), key
    assert rows[-1]["params"] < rows[0]["params"] and rows[-1]["smaller_x"] > 2
    assert rows[-1]["accuracy"] >= 0.8
    report = json.loads((out / "compression_report.json").read_text())
    assert [r["step"] for r in report] == [r["step"] for r in rows]
    assert "| teacher |" in (out / "compression_report.md").read_text()
    steps = [c["step"] for c in json.loads((out / "config.json").read_text())["compression"]]
    assert steps == ["distill", "prune", "prune", "prune", "quantize"]
    texts, _ = make_toy(5, seed=43)
    p = slimtext.load(out)
    assert p.predict_proba(texts).shape == (len(texts), 3)
    assert np.isclose(p.predict_proba(texts).sum(1), 1.0).all()


def test_recipe_options_for_qat_and_two_four():
    assert parse_recipe("sparsity:2:4,finetune=0,quantize:int8-dynamic,qat=2") == [
        ("sparsity", {"amount": "2:4", "finetune": 0}),
        ("quantize", {"method": "int8-dynamic", "qat": 2}),
    ]
    with pytest.raises(ValueError, match="qat and max_drop"):
        parse_recipe("quantize:int8-dynamic,qat=1,max_drop=0.01")


def test_two_four_then_qat_recipe_reports_speed_plainly_and_round_trips(
    teacher_dir, make_toy, tmp_path
):
    out = tmp_path / "s24"
    rows = compress(
        teacher_dir, make_toy(15, seed=44), out,
        recipe="sparsity:2:4,finetune=1,quantize:int8-dynamic,qat=1",
        test=make_toy(8, seed=45), speed_kw={"n_latency": 5, "n_batches": 2, "warmup": 1},
        train_config={"batch_size": 16, "lr": 5e-3, "threads": 1}, log=lambda s: None,
    )  # fmt: skip
    assert (
        rows[1]["pattern"] == "2:4" and rows[1]["sparsity"] > 0.2
    )  # of all parameters: embeddings stay dense
    assert "latency_ms_p50" in rows[1] and "pattern" not in rows[2]
    md = (out / "compression_report.md").read_text()
    assert "2:4 semi-structured sparsity" in md and "no speed-up on this CPU" in md
    assert f"p50 {rows[1]['latency_ms_p50']:.2f} ms" in md
    comp = json.loads((out / "config.json").read_text())["compression"]
    assert [(c["step"], c.get("kind"), c.get("qat")) for c in comp] == [
        ("prune", "semi-structured", None),
        ("quantize", None, True),
    ]
    assert rows[2]["sparsity"] >= rows[1]["sparsity"]  # QAT held the pruned zeros
    p = slimtext.load(out)
    for name in comp[0]["modules"]:  # ... into the stored int8 weights: still 2:4
        q = p.model.get_submodule(name).qweight
        assert bool(((q.view(q.shape[0], -1, 4) == 0).sum(-1) >= 2).all()), name
    assert p.predict_proba(make_toy(2, seed=46)[0]).shape == (6, 3)
    assert rows[-1]["accuracy"] >= 0.8
