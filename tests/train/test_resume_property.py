"""Exact resume, as a property: a run killed (SIGKILL) after a checkpoint picked at random
(seeded) and resumed with `resume=True` ends with the weights of the run that was never
interrupted, bit for bit (README: "--resume continues a killed run to the same final weights").

The interrupted run is a child process (this file run as a script) that kills itself right
after its N-th checkpoint is on disk: no `finally` runs, as after `kill -9`. The uninterrupted
run and the resume run here, in the test's process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# fp32, one thread, tiny shapes: each configuration is a few seconds on one core
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64, "max_length": 24,
        "batch_size": 8, "precision": "fp32", "threads": 1, "log_every": 3}  # fmt: skip

CONFIGS = {
    # name: (model, params, n texts, long texts)
    "transformer": ("transformer", {"epochs": 3, "checkpoint_every": 2}, 80, False),
    "attention": ("attention", {"epochs": 3, "checkpoint_every": 1, "num_layers": 0}, 80, False),
    "grad_accum": (
        "transformer",
        {"epochs": 2, "checkpoint_every": 1, "grad_accum": 2},
        100,
        False,
    ),
    "chunks": (
        "transformer",
        {"epochs": 2, "checkpoint_every": 1, "long_text": "chunks", "max_length": 16},
        60,
        True,
    ),  # fmt: skip
    "sparse": (
        "transformer",
        {"epochs": 2, "checkpoint_every": 1, "sparse_embeddings": True},
        80,
        False,
    ),  # fmt: skip
    "dropout": ("transformer", {"epochs": 2, "checkpoint_every": 1, "dropout": 0.1}, 80, False),
    # patience: validation every epoch, keep-best state in the checkpoint, a high lr so that
    # the validation loss gets worse and early stopping may fire
    "patience": (
        "transformer",
        {"epochs": 6, "checkpoint_every": 3, "patience": 1, "metric": "loss", "lr": 2e-2},
        80,
        False,
    ),  # fmt: skip
}

WORDS = [f"w{i}" for i in range(120)]


def _data(n: int, long: bool, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % 3
        k = rng.randint(40, 70) if long else rng.randint(3, 14)
        # each class leans on its own third of the words
        ws = [rng.choice(WORDS[y * 40 : y * 40 + 40] if rng.random() < 0.6 else WORDS)
              for _ in range(k)]  # fmt: skip
        texts.append(" ".join(ws))
        labels.append(f"c{y}")
    return texts, labels


def _weights_of(kind: str, obj) -> dict[str, torch.Tensor]:
    if kind == "pretrain":
        from safetensors.torch import load_file

        out = Path(obj)
        head = load_file(out / "mlm_head.safetensors")
        return {**load_file(out / "model.safetensors"), **{f"mlm.{k}": v for k, v in head.items()}}
    return {k: v.detach().clone() for k, v in obj.model_dir_.model.state_dict().items()}


def _run(spec: dict, ckpt: Path, resume: bool, out: Path):
    """One run of `spec` (a configuration name, or "pretrain"); returns its final weights."""
    from slimtext import TextClassifier

    if spec["name"] == "pretrain":
        from slimtext.pretrain import pretrain

        texts, _ = _data(90, False, seed=1)
        pretrain(texts, out, vocab_size=300, pack=True, max_steps=12, checkpoint_every=1,
                 checkpoint_dir=ckpt, resume=resume, progress=False, messages=False,
                 **{**TINY, "max_length": 32})  # fmt: skip
        return _weights_of("pretrain", out)
    model, params, n, long = CONFIGS[spec["name"]]
    texts, labels = _data(n, long)
    if model == "attention":  # no encoder blocks: their shape options would only warn
        params = {**{k: v for k, v in TINY.items() if k not in ("num_heads", "ffn_size")}, **params}
    else:
        params = {**TINY, **params}
    clf = TextClassifier(model, vocab_size=300, verbose=False, **params)
    clf.fit(texts, labels, checkpoint_dir=ckpt, resume=resume, progress=False)
    spec["result"] = clf.result_
    return _weights_of("clf", clf)


def _killed_run(name: str, ckpt: Path, out: Path, kill_at: int) -> None:
    """Child process: the same run, killed with SIGKILL right after its `kill_at`-th
    checkpoint is written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = json.dumps({"name": name, "ckpt": str(ckpt), "out": str(out), "kill_at": kill_at})
    p = subprocess.run([sys.executable, __file__, args], env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])


def _count_checkpoints(monkeypatch) -> list[int]:
    import slimtext.train.trainer as trainer

    saved: list[int] = []
    real = trainer.save_checkpoint

    def counting(folder, step, **kw):
        saved.append(step)
        return real(folder, step, **kw)

    monkeypatch.setattr(trainer, "save_checkpoint", counting)
    return saved


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diffs = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}
    bad = {k: d for k, d in diffs.items() if d > 0}
    assert not bad, f"resumed weights differ from the uninterrupted run's: {bad}"


def _check(name: str, tmp_path: Path, monkeypatch, pick: str = "any") -> list[int]:
    spec = {"name": name}
    saved = _count_checkpoints(monkeypatch)
    full = _run(spec, tmp_path / "full.ckpt", False, tmp_path / "full")
    full_result = spec.get("result")
    # the last checkpoint of the run is the finished one: interrupt before it
    candidates = list(range(1, len(saved)))
    # An epoch's last step is saved twice: before its validation (the epoch not yet closed)
    # and after it (the next epoch at its first batch).
    twice = [i for i in candidates if saved.count(saved[i - 1]) == 2]
    if pick == "before-validation":
        candidates = [i for i in twice if saved[i] == saved[i - 1]]
    elif pick == "after-validation":
        candidates = [i for i in twice if saved[i - 2] == saved[i - 1]]
    kill_at = random.Random(f"resume:{name}:{pick}").choice(candidates)
    if os.environ.get("RESUME_PROPERTY_DEBUG"):
        r = full_result
        print(
            name,
            pick,
            "saves",
            saved,
            "kill_at",
            kill_at,
            r and (r.steps, r.stopped_early, r.best_epoch, len(r.history)),
            file=sys.stderr,
        )
    ckpt = tmp_path / "cut.ckpt"
    _killed_run(name, ckpt, tmp_path / "cut", kill_at)
    saved.clear()
    resumed = _run(spec, ckpt, True, tmp_path / "cut")
    _assert_same(full, resumed)
    if full_result is not None:
        r = spec["result"]
        assert r.resumed_at  # it did continue from a checkpoint
        assert (r.steps, r.stopped_early, r.best_epoch) == (
            full_result.steps,
            full_result.stopped_early,
            full_result.best_epoch,
        )
        assert r.history == full_result.history
        assert r.samples == full_result.samples
    _check.last = spec.get("result")
    return saved


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resume_after_a_random_checkpoint_ends_with_the_uninterrupted_weights(
    name, tmp_path, monkeypatch
):
    _check(name, tmp_path, monkeypatch)
    if name == "patience":  # the property covered a stop and keep-best of an earlier epoch
        r = _check.last
        assert r.stopped_early and r.best_epoch < r.history[-1]["epoch"]


@pytest.mark.parametrize("pick", ["before-validation", "after-validation"])
def test_resume_at_an_epoch_boundary_ends_with_the_uninterrupted_weights(
    pick, tmp_path, monkeypatch
):
    _check("dropout", tmp_path, monkeypatch, pick=pick)


def test_resume_of_packed_pretraining_draws_the_same_masks(tmp_path, monkeypatch):
    _check("pretrain", tmp_path, monkeypatch)


if __name__ == "__main__":  # the interrupted run (see _killed_run)
    spec = json.loads(sys.argv[1])
    import slimtext.train.trainer as trainer

    real, calls = trainer.save_checkpoint, [0]

    def save_then_die(folder, step, **kw):
        out = real(folder, step, **kw)
        calls[0] += 1
        if calls[0] == spec["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    trainer.save_checkpoint = save_then_die
    _run(spec, Path(spec["ckpt"]), False, Path(spec["out"]))
    sys.exit(3)  # not killed: the checkpoint never came
