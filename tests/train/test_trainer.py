import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slimtext.models import ModelConfig, build_model
from slimtext.tokenizer import train_tokenizer
from slimtext.train import Encoded, TrainConfig, fit
from slimtext.train.checkpoint import latest_checkpoint, list_checkpoints
from slimtext.train.precision import cpu_has_bf16, resolve_precision

LABELS = ["money", "sport", "tech"]


@pytest.fixture(scope="module")
def encoded(toy_data):
    texts, labels = toy_data
    tok = train_tokenizer(texts, vocab_size=400)
    y = [LABELS.index(lab) for lab in labels]
    ids = tok.encode(texts, 32)
    return tok.vocab_size, Encoded(ids[:72], y[:72]), Encoded(ids[72:], y[72:])


def new_model(vocab, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab, num_labels=3, hidden_size=32, num_layers=1, num_heads=2,
               ffn_size=64, max_length=32, pooling="mean")  # fmt: skip
    cfg.update(kw)
    return build_model(ModelConfig(**cfg))


def run(encoded, tmp, **kw):
    vocab, tr, va = encoded
    model = new_model(vocab)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 3e-3, "precision": "fp32", **kw})
    res = fit(model, tr, va, cfg, label_names=LABELS, pad_id=0, progress=False, **tmp)
    return model, res


def killed_after(ckpts, i, dst):
    """A checkpoint folder holding only the i-th checkpoint of `ckpts`: as if the run that wrote
    them had been killed right after it."""
    chosen = list_checkpoints(ckpts)[i]
    dst.mkdir()
    shutil.copytree(chosen, dst / chosen.name)
    return dst


def assert_same_weights(a, b):
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_training_learns_the_toy_task_and_logs_metrics(encoded, tmp_path):
    model, res = run(encoded, {"run_dir": tmp_path}, epochs=10)
    assert res.best["accuracy"] >= 0.9
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert losses[-1] < losses[0]
    assert sum("valid_accuracy" in r for r in recs) == 10
    assert (tmp_path / "training_curve.png").stat().st_size > 1000


def test_max_steps_and_grad_accum_count_optimizer_steps(encoded):
    _, res = run(encoded, {}, max_steps=4, grad_accum=2)
    assert res.steps == 4
    assert res.samples == 4 * 2 * 8  # every group is two full micro-batches of 8 here


def test_accumulated_micro_batches_give_the_full_batch_gradient(encoded):
    # The loop weights each micro-batch by its share of samples: check that identity directly.
    vocab, tr, _ = encoded
    from slimtext.data.batching import pad_batch

    model = new_model(vocab, dropout=0.0)
    rows = list(range(12))
    full = pad_batch(tr.ids, rows, 0, tr.labels)
    loss = torch.nn.functional.cross_entropy(
        model(full.input_ids, full.attention_mask), full.labels
    )
    g_full = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    model.zero_grad()
    for part in (rows[:4], rows[4:]):
        b = pad_batch(tr.ids, part, 0, tr.labels)
        out = model(b.input_ids, b.attention_mask)
        (torch.nn.functional.cross_entropy(out, b.labels) * len(part) / 12).backward()
    for g, p in zip(g_full, model.parameters(), strict=True):
        if g is not None:
            torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "batch_size,accum,class_weight",
    [(8, 2, None), (4, 4, None), (3, 6, None), (3, 6, {"money": 4, "tech": 0.5})],
)
def test_grad_accum_trains_as_the_batch_of_its_micro_batches_together(
    encoded, batch_size, accum, class_weight
):
    # --grad-accum 2 --batch-size 8 took two unrelated shuffled batches of 8 per step, so it
    # trained differently from --batch-size 16. 72 rows: the last step has 8 rows (3 x 6:
    # some of its micro-batches are empty and skipped). Class weights weigh rows, not batches.
    vocab, tr, va = encoded
    models = []
    for bs, ga in ((batch_size * accum, 1), (batch_size, accum)):
        model = new_model(vocab, dropout=0.0)
        cfg = TrainConfig(epochs=2, batch_size=bs, grad_accum=ga, lr=3e-3, precision="fp32",
                          class_weight=class_weight)  # fmt: skip
        fit(model, tr, va, cfg, label_names=LABELS, pad_id=0, progress=False)
        models.append(model)
    for k, v in models[0].state_dict().items():
        torch.testing.assert_close(models[1].state_dict()[k], v, atol=1e-5, rtol=1e-4)


def test_resume_from_a_mid_epoch_checkpoint_ends_with_identical_weights(encoded, tmp_path, capfd):
    full_dir = tmp_path / "full"
    ref, _ = run(encoded, {"checkpoint_dir": full_dir}, checkpoint_every=4, keep_checkpoints=0)
    # step 8 of 9 per epoch: in the middle of the first epoch
    assert list_checkpoints(full_dir)[1].name.endswith("000000008")
    cut_dir = killed_after(full_dir, 1, tmp_path / "cut")
    stale = cut_dir / ".step-000000008.tmp-abc123"  # killed while writing its next checkpoint
    (stale / "dcp").mkdir(parents=True)
    resumed, res = run(encoded, {"checkpoint_dir": cut_dir, "resume": True, "messages": True},
                       checkpoint_every=4, keep_checkpoints=0)  # fmt: skip
    assert_same_weights(ref, resumed)
    assert res.steps == 27
    assert not stale.exists()  # cleared once a checkpoint is written again
    # epochs counted from 1, as every other line counts them (it said "epoch 0")
    assert "(epoch 1, step 8)" in capfd.readouterr().err


def test_a_damaged_checkpoint_is_never_the_one_loaded(encoded, tmp_path):
    run(encoded, {"checkpoint_dir": tmp_path}, checkpoint_every=4, keep_checkpoints=0)
    newest = list_checkpoints(tmp_path)[-1]
    with open(newest / "state.pt", "r+b") as f:  # simulate a torn write
        f.truncate(100)
    with pytest.warns(UserWarning, match="damaged"):
        chosen = latest_checkpoint(tmp_path)
    assert chosen == list_checkpoints(tmp_path)[-2]


def test_resume_refuses_when_every_checkpoint_is_damaged(encoded, tmp_path):
    run(encoded, {"checkpoint_dir": tmp_path}, checkpoint_every=4, keep_checkpoints=2)
    kept = list_checkpoints(tmp_path)
    assert len(kept) == 2
    for ck in kept:
        (ck / "state.pt").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="damaged"), pytest.raises(ValueError, match="every check"):
        run(encoded, {"checkpoint_dir": tmp_path, "resume": True}, checkpoint_every=4)
    assert list_checkpoints(tmp_path) == kept  # nothing pruned, nothing trained over them


def test_keep_best_restores_the_best_validation_weights(encoded):
    model, res = run(encoded, {}, epochs=3, lr=3e-3)
    vocab, _, va = encoded
    from slimtext.train import evaluate

    again = evaluate(model, va.ids, va.labels, LABELS, 0)
    assert again["accuracy"] == pytest.approx(res.best["accuracy"])
    assert res.best["accuracy"] == max(h["valid_accuracy"] for h in res.history)


def test_early_stopping_stops_after_patience_epochs_without_improvement(encoded):
    # lr=0 after warm-up can never improve on the first epoch's score.
    _, res = run(encoded, {}, epochs=10, lr=1e-9, patience=2, metric="accuracy")
    assert res.stopped_early
    assert len(res.history) == 3


@pytest.mark.parametrize("evaluations", [0, 1])
def test_resumed_log_keeps_only_the_validations_the_checkpoint_holds(tmp_path, evaluations):
    from slimtext.train.trainer import _Log

    recs = [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.9},
            {"step": 20, "epoch": 1, "valid_loss": 0.8}, {"step": 30, "loss": 0.7}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    # killed after step 20's checkpoint, with or without its epoch-end validation in it
    _Log(tmp_path, resume_at=20, evaluations=evaluations).close()
    kept = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == recs[: 2 + evaluations]


def test_a_torn_last_log_line_is_dropped_and_tensorboard_follows_the_jsonl(tmp_path, monkeypatch):
    import sys
    import types

    from slimtext.train.trainer import _Log

    made = []

    class Writer:  # tensorboard is an optional install: what _Log asks of it
        def __init__(self, log_dir, purge_step=None):
            made.append(purge_step)
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / f"events.out.tfevents.{len(made)}").write_text("")

        def close(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "lo')  # killed mid-line
    _Log(tmp_path, resume_at=10).close()  # it stopped --resume with a bare JSON error
    assert log.read_text() == '{"step": 10, "loss": 1.0}\n'
    assert made == [11]  # TensorBoard hides what the killed run logged after step 10
    (tmp_path / "tensorboard" / "mine.txt").write_text("a user's file")
    _Log(tmp_path, resume_at=None).close()  # a fresh run: a fresh TensorBoard log
    assert made == [11, None]
    left = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert left == ["events.out.tfevents.2", "mine.txt"]  # the earlier run's events are gone
    log.write_text('{"step": 10}\nnot json\n{"step": 20}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON line"):
        _Log(tmp_path, resume_at=20)


def test_a_run_killed_after_early_stopping_resumes_to_the_same_stop(encoded, tmp_path):
    kw = dict(epochs=10, lr=1e-9, patience=2, metric="accuracy")
    ref, first = run(encoded, {"checkpoint_dir": tmp_path}, **kw)
    assert first.stopped_early and len(first.history) == 3
    # killed before its model directory was written: resuming trains nothing more
    again, res = run(encoded, {"checkpoint_dir": tmp_path, "resume": True}, **kw)
    assert res.stopped_early and res.steps == first.steps and res.history == first.history
    assert_same_weights(ref, again)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_autocast_trains_on_cpu(encoded):
    _, res = run(encoded, {}, precision="bf16", epochs=10)
    assert res.precision == "bf16"
    assert res.best["accuracy"] >= 0.8


def test_auto_precision_is_fp32_on_an_avx512_cpu_without_bf16_instructions(monkeypatch):
    # Skylake-SP / Cascade Lake: oneDNN "supports" bf16 there (AVX512BW), but only emulated,
    # slower than fp32; training must agree with inference (native_bf16) and not pick it.
    import slimtext.infer as infer

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert not cpu_has_bf16() and not infer.native_bf16(cpu)
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.warns(UserWarning, match="no bf16 instructions"):
        assert resolve_precision("bf16", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16" and infer.native_bf16(cpu)


def test_fp16_on_cpu_is_refused_with_advice():
    with pytest.raises(ValueError, match="bf16 or fp32"):
        resolve_precision("fp16", torch.device("cpu"))


def test_ngram_table_trains_with_sparse_adam_and_resumes_exactly(encoded, tmp_path, monkeypatch):
    # The hashed n-gram table gets sparse gradients and SparseAdam (one process); the rest of
    # the model AdamW. A resumed run must restore the lazy optimizer's state too.
    made = []

    class Spy(torch.optim.SparseAdam):
        def __init__(self, params, **kw):
            params = list(params)
            made.append(params)
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "SparseAdam", Spy)
    vocab, tr, va = encoded
    kw = dict(arch="attention", num_layers=0, ngram_buckets=4096, embeddings="bag")

    def go(ckpt, resume=False):
        model = new_model(vocab, **kw)
        init = model.embeddings.ngram.weight.detach().clone()
        cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, precision="fp32", checkpoint_every=4,
                          keep_checkpoints=0)  # fmt: skip
        fit(model, tr, va, cfg, label_names=LABELS, pad_id=0, progress=False,
            checkpoint_dir=ckpt, resume=resume)  # fmt: skip
        return model, init

    ref, init = go(tmp_path / "full")
    table = ref.embeddings.ngram
    assert len(made) == 1 and made[0] == [table.weight]
    assert table.sparse is False  # the model leaves fit as it came
    moved = (table.weight.cpu() != init).any(1)  # .cpu(): trained on CUDA where there is one
    assert 0 < moved.sum() < table.num_embeddings  # only the buckets the data touched
    resumed, _ = go(killed_after(tmp_path / "full", 1, tmp_path / "cut"), resume=True)
    assert_same_weights(ref, resumed)


def test_clip_grad_norm_treats_sparse_gradients_like_their_dense_sum():
    from slimtext.train.trainer import clip_grad_norm

    torch.manual_seed(0)
    dense = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(2)]
    sparse = torch.nn.Parameter(torch.randn(10, 3))
    dense[0].grad, dense[1].grad = torch.randn(5, 3), torch.randn(5, 3)
    # Row 2 twice: the uncoalesced values' norm would differ from the gradient's.
    idx, vals = torch.tensor([[2, 7, 2]]), torch.randn(3, 3) * 4
    sparse.grad = torch.sparse_coo_tensor(idx, vals, (10, 3), check_invariants=True)
    copies = [torch.nn.Parameter(p.detach().clone()) for p in (*dense, sparse)]
    for c, p in zip(copies, (*dense, sparse), strict=True):
        c.grad = p.grad.to_dense().clone()
    want = torch.nn.utils.clip_grad_norm_(copies, 1.0)
    got = clip_grad_norm([*dense, sparse], 1.0)
    torch.testing.assert_close(got, want)
    for c, p in zip(copies, (*dense, sparse), strict=True):
        torch.testing.assert_close(p.grad.to_dense(), c.grad)


def test_resuming_a_dense_ngram_checkpoint_sparsely_is_a_clear_error(
    encoded, tmp_path, monkeypatch
):
    # FSDP/TP/PP update the table densely (AdamW state), one process sparsely (SparseAdam):
    # their checkpoints do not mix, and the error says so instead of a KeyError.
    from slimtext.train import trainer

    vocab, tr, va = encoded
    cfg = TrainConfig(max_steps=4, batch_size=8, precision="fp32", checkpoint_every=2)
    kw = dict(arch="attention", num_layers=0, ngram_buckets=64, embeddings="bag")
    with monkeypatch.context() as m:
        m.setattr(trainer, "sparse_tables", lambda model, ctx, tokens=False: [])  # as under fsdp
        fit(new_model(vocab, **kw), tr, va, cfg, label_names=LABELS, pad_id=0, progress=False,
            checkpoint_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="does not fit this run.*updates the embedding tables sp"):
        fit(new_model(vocab, **kw), tr, va, cfg, label_names=LABELS, pad_id=0, progress=False,
            checkpoint_dir=tmp_path, resume=True)  # fmt: skip


def test_sparse_embeddings_update_only_seen_token_rows_and_resume_exactly(
    encoded, tmp_path, monkeypatch
):
    # --sparse-embeddings: the token table goes to SparseAdam (and out of AdamW); only rows of
    # tokens in the training data move, padding's never; resume is exact.
    made = []

    class Spy(torch.optim.SparseAdam):
        def __init__(self, params, **kw):
            made.append(list(params))
            super().__init__(made[-1], **kw)

    monkeypatch.setattr(torch.optim, "SparseAdam", Spy)
    vocab, tr, va = encoded
    seen = {t for row in tr.ids for t in row}

    def go(ckpt, resume=False):
        model = new_model(vocab)
        init = model.embeddings.tok.weight.detach().clone()
        cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, precision="fp32", checkpoint_every=4,
                          keep_checkpoints=0, sparse_embeddings=True)  # fmt: skip
        fit(model, tr, va, cfg, label_names=LABELS, pad_id=0, progress=False,
            checkpoint_dir=ckpt, resume=resume)  # fmt: skip
        return model, init

    ref, init = go(tmp_path / "full")
    assert len(made) == 1 and made[0] == [ref.embeddings.tok.weight]
    # .cpu(): where CUDA is, fit trains there (device auto); `init` was taken before, on CPU
    moved = set((ref.embeddings.tok.weight.cpu() != init).any(1).nonzero().flatten().tolist())
    assert moved and moved <= seen - {0}  # padding (row 0) never moves either
    assert ref.embeddings.tok.sparse is False
    resumed, _ = go(killed_after(tmp_path / "full", 1, tmp_path / "cut"), resume=True)
    assert_same_weights(ref, resumed)


@pytest.mark.parametrize("kw", [{}, dict(arch="attention", num_layers=0, ngram_buckets=64)])
@pytest.mark.parametrize("first", [False, True])
def test_resuming_with_sparse_embeddings_toggled_is_a_clear_error(encoded, tmp_path, kw, first):
    # Either way round, with or without an n-gram table (sparse in both runs): the optimizer
    # states do not fit, and the error names the option instead of torch's group-size message.
    vocab, tr, va = encoded
    cfg = TrainConfig(max_steps=4, batch_size=8, precision="fp32", checkpoint_every=2,
                      sparse_embeddings=first)  # fmt: skip
    fit(new_model(vocab, **kw), tr, va, cfg, label_names=LABELS, pad_id=0, progress=False,
        checkpoint_dir=tmp_path)  # fmt: skip
    again = TrainConfig(**{**cfg.to_dict(), "sparse_embeddings": not first})
    with pytest.raises(
        ValueError, match=r"does not fit this run.*--sparse-embeddings|sparse_embeddings \w+ ->"
    ):
        fit(new_model(vocab, **kw), tr, va, again, label_names=LABELS, pad_id=0,
            progress=False, checkpoint_dir=tmp_path, resume=True)  # fmt: skip


def test_sparse_embeddings_refuse_a_tied_token_table(encoded):
    from slimtext.train.distributed import DistContext
    from slimtext.train.trainer import sparse_tables

    model = new_model(encoded[0])
    model.decoder = torch.nn.Linear(32, encoded[0], bias=False)
    model.decoder.weight = model.embeddings.tok.weight  # as the masked-LM head ties it
    with pytest.raises(ValueError, match="tied"):
        sparse_tables(model, DistContext(), tokens=True)
    assert sparse_tables(model, DistContext()) == []  # without the option: nothing sparse


def test_sparse_embeddings_say_so_where_a_strategy_keeps_them_dense(encoded, tmp_path):
    import torch.distributed as dist

    from slimtext.train.distributed import DistContext
    from slimtext.train.trainer import sparse_tables

    model = new_model(encoded[0])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        assert sparse_tables(model, DistContext(strategy="ddp"), tokens=True) == [
            model.embeddings.tok
        ]
        for strategy in ("fsdp", "tp", "pp"):
            with pytest.warns(UserWarning, match=f"no effect under {strategy}"):
                assert sparse_tables(model, DistContext(strategy=strategy), tokens=True) == []
    finally:
        dist.destroy_process_group()


def test_a_fresh_run_refuses_a_folder_of_old_checkpoints(encoded, tmp_path):
    # Otherwise its own new (lower-numbered) checkpoints are pruned first and a later resume
    # continues the old run.
    run(encoded, {"checkpoint_dir": tmp_path}, max_steps=4, checkpoint_every=2)
    with pytest.raises(ValueError, match="earlier run.*--resume"):
        run(encoded, {"checkpoint_dir": tmp_path}, max_steps=4, checkpoint_every=2)


def test_resume_refuses_other_options_data_or_model_shape(encoded, tmp_path):
    vocab, tr, va = encoded
    kw = dict(max_steps=6, checkpoint_every=2, keep_checkpoints=0)
    run(encoded, {"checkpoint_dir": tmp_path}, **kw)
    ck = {"checkpoint_dir": killed_after(tmp_path, 0, tmp_path / "cut"), "resume": True}
    with pytest.raises(ValueError, match=r"lr 0\.003 -> 0\.1"):
        run(encoded, ck, lr=0.1, **kw)
    with pytest.raises(ValueError, match="batch_size x data ranks 8 -> 16"):
        run(encoded, ck, batch_size=16, **kw)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, precision="fp32", **kw)
    fewer = Encoded(tr.ids[:-8], tr.labels[:-8])
    with pytest.raises(ValueError, match="training data"):
        fit(new_model(vocab), fewer, va, cfg, label_names=LABELS, pad_id=0, progress=False, **ck)
    # another shape: named (it was PyTorch's size mismatch of some tensor)
    with pytest.raises(ValueError, match="model.hidden_size 32 -> 16"):
        fit(new_model(vocab, hidden_size=16), tr, va, cfg, label_names=LABELS, pad_id=0,
            progress=False, **ck)  # fmt: skip
    with pytest.raises(ValueError, match="model.embeddings 'bert' -> 'bag'"):
        fit(new_model(vocab, arch="attention", num_layers=0, embeddings="bag"), tr, va, cfg,
            label_names=LABELS, pad_id=0, progress=False, **ck)  # fmt: skip
    # keep-best and early stopping compare scores across the resumption: same data, same rules
    other = Encoded(va.ids[:-2], va.labels[:-2])
    with pytest.raises(ValueError, match="validation data"):
        fit(new_model(vocab), tr, other, cfg, label_names=LABELS, pad_id=0, progress=False, **ck)
    with pytest.raises(ValueError, match="patience None -> 5"):
        run(encoded, ck, patience=5, **kw)
    # the same options resume; threads/logging may change
    _, res = run(encoded, ck, log_every=1, threads=1, **kw)
    assert res.steps == 6


def test_the_last_step_is_logged_and_a_resumed_log_does_not_double_back(encoded, tmp_path):
    # max_steps ends mid-epoch (9 batches an epoch): its last steps are logged anyway.
    run(encoded, {"run_dir": tmp_path / "a"}, max_steps=5, log_every=20)
    log = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in log]
    assert 5 in steps
    # A run killed after logging steps past its last checkpoint: the resumed log drops them.
    kw = dict(max_steps=8, checkpoint_every=4, keep_checkpoints=0, log_every=1)
    run(encoded, {"run_dir": tmp_path / "b", "checkpoint_dir": tmp_path / "ck"}, **kw)
    cut = killed_after(tmp_path / "ck", 0, tmp_path / "ck2")  # at step 4
    run(encoded, {"run_dir": tmp_path / "b", "checkpoint_dir": cut, "resume": True}, **kw)
    recs = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    loss_steps = [r["step"] for r in recs if "loss" in r]
    assert loss_steps == list(range(1, 9))


def test_a_resumed_run_logs_the_loss_of_the_whole_window(encoded, tmp_path):
    # Logs every 3 steps, checkpoints every 4: the step-6 line averages steps 4-6, and after a
    # resume from step 4 it must still include step 4 (the run is exact, so the lines match).
    kw = dict(max_steps=8, checkpoint_every=4, keep_checkpoints=0, log_every=3)
    run(encoded, {"run_dir": tmp_path / "a"}, **kw)
    run(encoded, {"run_dir": tmp_path / "b", "checkpoint_dir": tmp_path / "ck"}, **kw)
    cut = killed_after(tmp_path / "ck", 0, tmp_path / "ck2")  # at step 4
    run(encoded, {"run_dir": tmp_path / "b", "checkpoint_dir": cut, "resume": True}, **kw)

    def losses(d):
        recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in recs if "loss" in r}

    want, got = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(got) == sorted(want) == [3, 6, 8]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6), step


@pytest.mark.parametrize(
    "bad",
    [dict(checkpoint_every=-3), dict(warmup=-5), dict(grad_clip=-1), dict(patience=0),
     dict(epochs=1.5), dict(keep_checkpoints=-1), dict(log_every=0), dict(eval_batch_size=0),
     dict(bucket_batches=0), dict(threads=-2), dict(label_smoothing=2), dict(lr=-1),
     dict(lr=float("nan")), dict(device="tpu"), dict(strategy="bogus")],
)  # fmt: skip
def test_train_config_rejects_values_the_loop_would_misread(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


@pytest.mark.parametrize(
    "bad, why",
    [(dict(lr="1e-3"), "lr must be a number, got '1e-3'"),  # PyYAML's reading of `lr: 1e-3`
     (dict(lr=None), "lr must be a number, got None"),
     (dict(weight_decay="0.01"), "weight_decay must be a number"),
     (dict(warmup=None), "warmup must be a number"),
     (dict(grad_clip=True), "grad_clip must be a number"),
     (dict(label_smoothing="0.1"), "label_smoothing must be a number"),
     (dict(layer_lr_decay=None), "layer_lr_decay must be a number"),
     (dict(sparse_embeddings="false"), "sparse_embeddings must be true or false"),
     (dict(keep_best="no"), "keep_best must be true or false"),
     (dict(cpu_offload="yes", strategy="fsdp"), "cpu_offload must be true or false")],
)  # fmt: skip
def test_train_config_names_an_option_of_the_wrong_type(bad, why):
    # They failed as "'>' not supported between 'str' and 'int'", naming no option, or (a
    # string for a yes/no option) were taken as true: sparse_embeddings="false" turned them on.
    with pytest.raises(ValueError, match=re.escape(why)):
        TrainConfig(**bad)
    ok = TrainConfig(sparse_embeddings=np.bool_(False), keep_best=1, lr=np.float32(1e-3))
    assert ok.sparse_embeddings is False and ok.keep_best is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_asking_for_cuda_without_one_is_a_clear_error(toy_data):
    from slimtext import TextClassifier
    from slimtext.train.precision import resolve_device

    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="no CUDA device"):  # the API honours device= now
        TextClassifier(device="cuda", max_steps=1, verbose=False).fit(toy_data)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_logged_lr_is_the_one_each_step_used_and_the_peak_comes_once(
    encoded, tmp_path, monkeypatch, schedule
):
    # The log showed the next step's lr (ending at 0.0, a step never run), and decay started
    # one step late: two steps at the peak.
    used = []
    real = torch.optim.AdamW.step

    def spy(self, *a, **kw):
        used.append(self.param_groups[0]["lr"])
        return real(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    _, res = run(encoded, {"run_dir": tmp_path}, max_steps=9, lr=1.0, warmup=3,
                 schedule=schedule, log_every=1)  # fmt: skip
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in recs if "lr" in r]
    assert logged == pytest.approx(used) and len(used) == 9
    assert used[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert used.count(1.0) == 1 and all(b < a for a, b in zip(used[2:], used[3:], strict=False))
    assert used[-1] > 0  # no step spent at lr 0


def test_a_step_budget_ending_mid_epoch_is_logged_as_a_fractional_epoch(encoded, tmp_path):
    # 72 rows in batches of 8: 9 steps an epoch; 12 steps end a third into the second epoch.
    _, res = run(encoded, {"run_dir": tmp_path}, max_steps=12)
    assert [h["epoch"] for h in res.history] == pytest.approx([1, 1 + 3 / 9])
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if "valid_loss" in r] == pytest.approx([1, 1 + 3 / 9])


def test_a_doctored_dcp_checkpoint_runs_nothing_on_resume(tmp_path):
    import os
    import pickle

    import torch.distributed.checkpoint as dcp

    from slimtext.fileio import IntegrityError
    from slimtext.train.checkpoint import _dcp_read

    state = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"lr": 0.1, "betas": (0.9, 0.99)}}
    dcp.save(state, checkpoint_id=str(tmp_path / "ok"), no_dist=True)
    into = {"w": torch.zeros(2, 3), "meta": {"lr": 0.0, "betas": (0.0, 0.0)}}
    _dcp_read(into, tmp_path / "ok", no_dist=True)  # an honest checkpoint loads, and its
    # non-tensor entries too
    torch.testing.assert_close(into["w"], state["w"])
    assert into["meta"] == state["meta"]

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # torch's own reader unpickled .metadata: this ran the command
    (tmp_path / "ok" / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(IntegrityError, match=r"names posix\.system|names os\.system"):
        _dcp_read(into, tmp_path / "ok")
    assert not marker.exists()

    # and it torch.load(weights_only=False)-ed each non-tensor entry
    dcp.save({"w": state["w"], "meta": Payload()}, checkpoint_id=str(tmp_path / "p"),
             no_dist=True)  # fmt: skip
    with pytest.raises(IntegrityError, match="posix.system"):
        _dcp_read({"w": torch.zeros(2, 3), "meta": None}, tmp_path / "p")
    assert not marker.exists()


@pytest.mark.parametrize(
    "doctor, message",
    [
        (lambda st: b"garbage", "unreadable"),
        (lambda st: [1, 2], "not a checkpoint's state"),
        (lambda st: {k: v for k, v in st.items() if k != "optimizer"}, "not a checkpoint's state"),
        (lambda st: {**st, "rng_cpu": [1, 2]}, "not a checkpoint state this version can resume"),
        (lambda st: {**st, "history_json": "{bad"}, "can resume"),
        (lambda st: {**st, "resume_key": "{bad"}, "resume key is unreadable"),
        (lambda st: {**st, "step": 10**12}, "do not fit this run"),
    ],
)
def test_a_doctored_checkpoint_state_is_named_not_a_traceback(encoded, tmp_path, doctor, message):
    from slimtext.fileio import IntegrityError, write_manifest

    run(encoded, {"checkpoint_dir": tmp_path}, checkpoint_every=4, keep_checkpoints=1)
    (ck,) = list_checkpoints(tmp_path)
    new = doctor(torch.load(ck / "state.pt", weights_only=True))
    if isinstance(new, bytes):
        (ck / "state.pt").write_bytes(new)
    else:
        torch.save(new, ck / "state.pt")
    (ck / "manifest.json").unlink()
    write_manifest(ck)  # re-signed, as whoever doctored it would
    with pytest.raises(IntegrityError, match=message) as e:
        run(encoded, {"checkpoint_dir": tmp_path, "resume": True}, checkpoint_every=4)
    assert str(ck) in str(e.value)


def test_checkpoints_get_the_umasks_modes_so_a_group_can_resume(encoded, tmp_path):
    import os

    from slimtext.train.checkpoint import exclusive

    old = os.umask(0o002)  # a group-shared run folder
    try:
        with exclusive(tmp_path):  # held by the CLI's runs
            run(encoded, {"checkpoint_dir": tmp_path}, checkpoint_every=4, keep_checkpoints=1)
    finally:
        os.umask(old)
    (ck,) = list_checkpoints(tmp_path)
    assert ck.stat().st_mode & 0o777 == 0o775  # mkdtemp alone gives 0700
    for f in ck.iterdir():
        assert f.stat().st_mode & 0o777 == 0o664, f.name  # safetensors alone: 0600
    assert (tmp_path / ".lock").stat().st_mode & 0o777 == 0o664  # was 0644 whatever the umask


def test_a_warm_up_past_the_run_is_said_and_half_steps_refused(encoded):
    with pytest.warns(UserWarning, match="never reaches its peak"):
        run(encoded, {}, max_steps=3, warmup=10)
    with pytest.raises(ValueError, match="warmup is a fraction"):
        TrainConfig(warmup=2.5)  # it became 2 steps


def test_a_diverged_run_stops_with_a_clear_error_and_saves_no_nan_checkpoint(encoded, tmp_path):
    # It trained on to the end, kept a NaN epoch as "best" and failed only at load.
    import re

    from slimtext.train.trainer import DivergedError

    ck = tmp_path / "ck"
    with pytest.raises(DivergedError, match=r"diverged by step \d+: the weights hold NaN") as e:
        run(encoded, {"run_dir": tmp_path / "run", "checkpoint_dir": ck}, lr=1e6,
            checkpoint_every=1, log_every=50)  # fmt: skip
    bad = int(re.search(r"step (\d+)", str(e.value)).group(1))
    assert f"the checkpoints in {ck} are of this run" in str(e.value)
    # a checkpoint a step, but none of the NaN weights (found there, long before a log line)
    steps = [int(c.name.rsplit("-", 1)[1]) for c in list_checkpoints(ck)]
    assert steps == list(range(1, bad)) and bad < 50
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all("NaN" not in x for x in lines)  # the log stays JSON


def test_nan_from_the_last_step_is_caught_before_evaluation(encoded, tmp_path):
    # the logged loss is the step's before its update: one step at an absurd lr went on to
    # evaluate (NaN valid loss in metrics.jsonl) and to be saved
    from slimtext.train.trainer import DivergedError

    with pytest.raises(DivergedError, match="diverged by step 1: the weights hold NaN or inf;"):
        run(encoded, {"run_dir": tmp_path / "run"}, lr=1e39, warmup=0, max_steps=1)
    assert "NaN" not in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_a_diverged_fp32_run_is_not_told_to_train_in_fp32(encoded, monkeypatch):
    # the advice for bf16/fp16 runs was given to a run already in fp32 (--precision fp32)
    from slimtext.train import precision
    from slimtext.train.trainer import DivergedError

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # bf16 on any CPU

    with pytest.raises(DivergedError, match="lower the learning rate") as e:
        run(encoded, {}, lr=1e39, warmup=0, max_steps=1, precision="fp32")
    assert "fp32" not in str(e.value)
    with pytest.raises(DivergedError, match="or train in fp32"):
        run(encoded, {}, lr=1e39, warmup=0, max_steps=1, precision="bf16")


def test_the_out_lock_refuses_a_second_run_and_goes_with_the_run(tmp_path, monkeypatch):
    # hundreds of slimtext-out-*.lock files piled up in /tmp, one per --out ever trained
    import tempfile

    from other_run import another_run

    from slimtext.train.checkpoint import exclusive

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = tmp_path / "m"
    with another_run(out=out, tmpdir=tmp_path):
        assert len(list(tmp_path.glob("slimtext-out-*.lock"))) == 1
        with (
            pytest.raises(ValueError, match="being written by another run"),
            exclusive(tmp_path / "m.checkpoints", out=tmp_path / "x" / ".." / "m"),
        ):
            pass
    assert not list(tmp_path.glob("slimtext-out-*.lock"))
    with exclusive(None, out=out), exclusive(None, out=out):  # free again; re-entrant
        pass


def test_a_fresh_run_beside_a_running_one_is_told_it_runs_not_to_resume_it(tmp_path):
    from other_run import another_run

    from slimtext.train.checkpoint import check_fresh_start, exclusive

    ck = tmp_path / "m.checkpoints"
    (ck / "step-000000004").mkdir(parents=True)
    with pytest.raises(ValueError, match="earlier run .*resume it"):
        check_fresh_start(ck, resume=False)
    with (
        another_run(ck) as pid,
        pytest.raises(ValueError, match=f"in use by another run \\(pid {pid}\\)"),
    ):
        check_fresh_start(ck, resume=False)
    # this run's own lock (the CLI takes it before fit checks): an earlier run, not "another"
    with exclusive(ck), pytest.raises(ValueError, match="earlier run .*resume it"):
        check_fresh_start(ck, resume=False)


def test_a_checkpoint_folder_held_by_one_thread_refuses_another(tmp_path):
    # re-entrant for the thread that holds it (the CLI, then fit inside it), not for the
    # process: a flock would let a second thread of the same process in
    import threading

    from slimtext.train.checkpoint import exclusive

    ck, seen = tmp_path / "ck", []

    def second():
        try:
            with exclusive(ck):
                seen.append("in")
        except ValueError as e:
            seen.append(str(e))

    with exclusive(ck), exclusive(ck):  # the same thread: let in
        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(seen) == 1 and "in use by another run" in seen[0] and "another thread" in seen[0]
    t = threading.Thread(target=second)  # released: free for anyone
    t.start()
    t.join()
    assert seen[-1] == "in"


def test_a_rank_variable_alone_is_not_torchrun_and_the_folder_is_held(tmp_path, monkeypatch):
    # a job scheduler's RANK=1, without torchrun's WORLD_SIZE: the run is a single process,
    # and skipping the lock let it write its tokenizer into a folder another run held
    from other_run import another_run

    from slimtext.train.checkpoint import holds_checkpoints

    @holds_checkpoints
    def run(*, checkpoint_dir, dist=None):
        (checkpoint_dir / "tokenizer.json").write_text("{}")

    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ck = tmp_path / "ck"
    with another_run(ck), pytest.raises(ValueError, match="in use by another run"):
        run(checkpoint_dir=ck)
    assert not (ck / "tokenizer.json").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's rank 1: rank 0 holds it for all
    with another_run(ck):
        run(checkpoint_dir=ck)


def test_balanced_class_weights_give_every_class_the_same_total_and_average_one():
    from slimtext.train.trainer import class_weights

    labels = [0] * 90 + [1] * 9 + [2] * 1
    w = class_weights("balanced", labels, ["a", "b", "c"])
    counts = torch.tensor([90.0, 9.0, 1.0])
    torch.testing.assert_close(w * counts, torch.full((3,), 100 / 3))
    assert float(w[labels].mean()) == pytest.approx(1.0)  # the lr means what it meant
    # a mapping: labels by their labels.json spelling, the unnamed ones 1
    w = class_weights({"c": 5, 1: 2.5}, labels, ["a", "1", "c"])
    assert w.tolist() == [1.0, 2.5, 5.0]
    with pytest.raises(ValueError, match=r"'zz'.*its labels: a, 1, c"):
        class_weights({"zz": 2}, labels, ["a", "1", "c"])


def test_class_weights_read_numpy_numbers_and_labels_as_the_data_spells_them():
    # A mapping built with numpy (np.bincount, scikit-learn's compute_class_weight over the
    # float labels of a pandas column with gaps) was refused: "the weight of label 1 must be a
    # positive number, got np.int64(3)", and the key 1.0 was "a label the data does not have".
    from slimtext.train.trainer import class_weights

    cfg = TrainConfig(class_weight={np.float64(1.0): np.int64(3), " a ": np.float32(0.5)})
    assert cfg.class_weight == {"1": 3.0, "a": 0.5}
    w = class_weights({1.0: 2, np.int64(2): 4}, [0, 1, 2], ["0", "1", "2"])
    assert w.tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="are one label"):
        TrainConfig(class_weight={1: 2.0, "1": 3.0})


@pytest.mark.parametrize(
    "value",
    ["heavy", {}, {"a": 0}, {"a": -1.0}, {"a": float("nan")}, {"a": True}, {"a": np.True_},
     ["a"]],
)  # fmt: skip
def test_bad_class_weights_are_refused_with_the_option_named(value):
    with pytest.raises(ValueError, match="class_weight"):
        TrainConfig(class_weight=value)


def test_class_weight_labels_are_spelled_as_the_data_loaders_spell_labels():
    # labels are stored stripped, in NFC, and 1.0 as "1" (a float label column): a mapping
    # keyed by np.unique(y) of such a column, or by a typed " spam ", named labels "1.0" and
    # " spam " that no data has, and fit failed with "names labels the training data does not
    # have: '1.0'; its labels: 0, 1"
    import numpy as np

    from slimtext.train.trainer import class_weights

    cw = {np.float64(1.0): 3.0, " spam ": 2, "A\u0308rger": 4, np.int64(7): 5}
    cfg = TrainConfig(class_weight=cw)
    assert cfg.class_weight == {"1": 3.0, "spam": 2.0, "\u00c4rger": 4.0, "7": 5.0}
    w = class_weights(cw, [0, 1], ["0", "1", "spam", "\u00c4rger", "7"])
    assert w.tolist() == [1.0, 3.0, 2.0, 4.0, 5.0]
    with pytest.raises(ValueError, match=r"class_weight: label 1\.5 is a non-integral number"):
        TrainConfig(class_weight={1.5: 2})


def test_class_weights_may_be_numpy_numbers():
    # the other number options take numpy's scalars; these were refused as not a number
    import numpy as np

    cfg = TrainConfig(class_weight={"a": np.float32(2.5), "b": np.int64(3)})
    assert cfg.class_weight == {"a": 2.5, "b": 3.0}
    assert all(type(v) is float for v in cfg.class_weight.values())


def test_class_weights_move_the_loss_towards_the_weighted_class(encoded):
    # the same start, one step: a heavy weight on "money" lowers money rows' loss more
    from slimtext.data.batching import pad_batch

    vocab, tr, va = encoded
    money = [i for i, y in enumerate(tr.labels) if y == 0]
    drops = []
    for cw in (None, {"money": 20}):
        model = new_model(vocab, dropout=0.0)
        b = pad_batch(tr.ids, money, 0, tr.labels)

        def money_loss(m=model, b=b) -> float:
            with torch.no_grad():
                return float(torch.nn.functional.cross_entropy(m(b.input_ids, b.attention_mask),
                                                               b.labels))  # fmt: skip

        before = money_loss()
        cfg = TrainConfig(max_steps=1, batch_size=72, lr=1e-2, precision="fp32", warmup=1,
                          class_weight=cw)  # fmt: skip
        fit(model, tr, None, cfg, label_names=LABELS, pad_id=0, progress=False)
        drops.append(before - money_loss())
    assert drops[1] > drops[0] + 0.05, drops


def test_numpy_numbers_are_taken_and_kept_as_python_numbers():
    # a scikit-learn grid over np.arange gave epochs=np.int64(2): "must be a whole number";
    # np.float32 passed but config.json could not be written (no JSON number)
    import numpy as np

    from slimtext.models import ModelConfig

    cfg = TrainConfig(epochs=np.int64(2), batch_size=np.int32(8), lr=np.float32(1e-3))
    assert (type(cfg.epochs), type(cfg.batch_size), type(cfg.lr)) == (int, int, float)
    json.dumps(cfg.to_dict())
    mc = ModelConfig(vocab_size=np.int64(100), num_labels=2, hidden_size=np.int16(32),
                     dropout=np.float32(0.25))  # fmt: skip
    assert (type(mc.hidden_size), type(mc.dropout)) == (int, float)
    json.dumps(mc.to_dict())
    with pytest.raises(ValueError, match="epochs must be a whole number"):
        TrainConfig(epochs=np.float64(2.0))


def test_a_numpy_seed_is_taken_as_the_other_whole_numbers_are():
    # a scikit-learn grid over seeds (np.arange(3)) gave seed=np.int64(0): "seed must be a
    # whole number below 2**63", though epochs=np.int64(2) was taken
    cfg = TrainConfig(seed=np.int64(3))
    assert type(cfg.seed) is int and cfg.seed == 3
    json.dumps(cfg.to_dict())
    with pytest.raises(ValueError, match="seed must be a whole number"):
        TrainConfig(seed=np.float64(3.0))
    with pytest.raises(ValueError, match=r"seed must be a whole number below 2\*\*63"):
        TrainConfig(seed=np.uint64(2**63))


def test_the_validation_loss_is_weighted_as_the_training_loss(encoded, tmp_path):
    # --metric loss with --class-weight stopped on the unweighted loss: another objective than
    # the one trained, so a run could keep the epoch that served the rare classes worst
    from slimtext.train import predict_logits
    from slimtext.train.trainer import class_weights

    weights = {"money": 4, "tech": 0.5}
    vocab, tr, va = encoded
    model, res = run(encoded, {"run_dir": tmp_path}, epochs=1, class_weight=weights)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["valid_loss"] for r in recs if "valid_loss" in r][-1]
    logits = predict_logits(model, va.ids, 0)
    y = torch.tensor(va.labels)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    w = class_weights(weights, tr.labels, LABELS)
    assert logged == pytest.approx(float((ce * w[y]).mean()), rel=1e-5)
    assert logged != pytest.approx(float(ce.mean()), rel=1e-3)
    assert res.best["loss"] == pytest.approx(logged, rel=1e-6)
