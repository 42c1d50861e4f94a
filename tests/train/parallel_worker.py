"""Run under `torchrun --nproc-per-node 2` by test_parallel.py: `parallel_worker.py CASE OUT`.

Each case asserts on every rank and rank 0 writes OUT/CASE.json with the measured differences;
a failed assertion makes torchrun exit non-zero (the test shows the traceback)."""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from slimtext.data.batching import Batch
from slimtext.models.config import ModelConfig
from slimtext.models.transformer import TransformerClassifier
from slimtext.train.distributed import (
    DistributedError,
    full_state_dict,
    init_distributed,
    shutdown,
    wrap_model,
)

V, C = 50, 32


def tiny(layers: int = 2, heads: int = 2, **kw) -> TransformerClassifier:
    torch.manual_seed(0)  # the same initial weights on every rank
    cfg = ModelConfig(vocab_size=V, num_labels=3, hidden_size=C, num_layers=layers,
                      num_heads=heads, ffn_size=64, max_length=32, dropout=0.0, **kw)  # fmt: skip
    return TransformerClassifier(cfg)


def padded_batch(B: int = 8, T: int = 12, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    ids[~mask] = 0
    labels = torch.randint(0, 3, (B,), generator=g)
    return Batch(ids, mask, labels, torch.arange(B))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def case_tp_parity(ctx) -> dict:
    from torch.distributed.tensor import DTensor

    from slimtext.train.parallel import from_tp_layout

    for pooling in ("mean", "cls"):
        ref = tiny(pooling=pooling)
        model = wrap_model(copy.deepcopy(ref), replace(ctx, strategy="tp"), "fp32", tp_size=2)
        b = padded_batch()
        out_ref = ref(b.input_ids, b.attention_mask)
        out = model(b.input_ids, b.attention_mask)
        F.cross_entropy(out_ref, b.labels).backward()
        F.cross_entropy(out, b.labels).backward()
        grads = {n: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad)
                 for n, p in model.named_parameters()}  # fmt: skip
        grads = from_tp_layout(grads, C, 2)
        ref_grads = {n: p.grad for n, p in ref.named_parameters()}
        d_out = (out - out_ref).abs().max().item()
        d_grad = max_diff(grads, ref_grads)
        full = full_state_dict(model, replace(ctx, strategy="tp"))  # {} on rank 1
        d_weights = max_diff(full or ref.state_dict(), ref.state_dict())
        assert d_out < 1e-5 and d_grad < 1e-5 and d_weights == 0, (d_out, d_grad, d_weights)
    return {"logits": d_out, "grads": d_grad, "weights_roundtrip": d_weights}


def case_pp_parity(ctx) -> dict:
    M = 4
    out = {}
    # cls: the last stage runs its last block for [CLS] only, as the whole model does
    for pooling in ("mean", "cls"):
        ref = tiny(layers=4, pooling=pooling)
        pctx = replace(ctx, strategy="pp")
        model = wrap_model(copy.deepcopy(ref), pctx, "fp32", microbatches=M, pp_schedule="1f1b")
        b = padded_batch(B=8)
        # Reference: the mean over the same micro-batches of their mean cross-entropy.
        chunks = zip(b.input_ids.chunk(M), b.attention_mask.chunk(M), b.labels.chunk(M),
                     strict=True)  # fmt: skip
        losses = [F.cross_entropy(ref(i, m), y) for i, m, y in chunks]
        loss_ref = torch.stack(losses).mean()
        loss_ref.backward()
        loss = model.train_step(b, lambda logits, bb: F.cross_entropy(logits, bb.labels), 1.0)
        mine = {n: p.grad for n, p in model.stage_module.named_parameters()}
        grads: dict = {}
        for part in _gather(ctx, mine):
            grads.update(part)
        ref_grads = {n: p.grad for n, p in ref.named_parameters()}
        d_loss = abs(loss.item() - loss_ref.item())
        d_grad = max_diff(grads, ref_grads)
        assert d_loss < 1e-5 and d_grad < 1e-5, (pooling, d_loss, d_grad)
        # The gathered model is the whole one.
        d_w = max_diff(full_state_dict(model, pctx), ref.state_dict())
        assert d_w == 0, d_w
        out[pooling] = {"loss": d_loss, "grads": d_grad}
    return out


def _gather(ctx, obj) -> list:
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def case_tp_dropout(ctx) -> dict:
    """With dropout on, the replicated (non-sharded) parameters stay identical on the ranks of
    a tp group: their activations and dropout masks agree, so their gradients do."""
    from torch.distributed.tensor import DTensor

    from slimtext.train.trainer import fit

    model, data, cfg = fit_setup("tp")
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.2
    for block in model.encoder.blocks:
        block.attn.p_drop = 0.2
    cfg = replace(cfg, max_steps=3)
    fit(model, data, None, cfg, label_names=["a", "b", "c"], pad_id=0, progress=False,
        dist=replace(ctx, strategy="tp"))  # fmt: skip
    plain = {n: p.detach().clone() for n, p in model.named_parameters()
             if not isinstance(p, DTensor)}  # fmt: skip
    a, b = _gather(ctx, plain)
    d = max_diff(a, b)
    assert d == 0, d
    return {"replicated_params_across_tp_ranks": d, "n": len(plain)}


def case_misconfig(ctx) -> dict:
    errors = {}
    try:
        wrap_model(tiny(heads=1), replace(ctx, strategy="tp"), "fp32", tp_size=2)
    except DistributedError as e:
        errors["tp"] = str(e)
    try:
        wrap_model(tiny(layers=1), replace(ctx, strategy="pp"), "fp32")
    except DistributedError as e:
        errors["pp"] = str(e)
    try:  # 2 data-parallel x 1 tensor-parallel: trained, then failed to load its best weights
        wrap_model(tiny(), replace(ctx, strategy="tp"), "fp32", tp_size=1)
    except DistributedError as e:
        errors["tp1"] = str(e)
    # 1F1B needs a micro-batch per stage: torch refused M < stages at the first batch, naming
    # neither option; GPipe takes any M.
    try:
        wrap_model(tiny(), replace(ctx, strategy="pp"), "fp32", microbatches=1, pp_schedule="1f1b")
    except DistributedError as e:
        errors["pp_1f1b"] = str(e)
    wrap_model(tiny(), replace(ctx, strategy="pp"), "fp32", microbatches=1, pp_schedule="gpipe")
    assert "num_heads=1" in errors.get("tp", "") and "tp size 2" in errors["tp"], errors
    assert "use --strategy fsdp" in errors.get("tp1", ""), errors
    assert "only 1 layers" in errors.get("pp", ""), errors
    assert "--microbatches 2 or more" in errors.get("pp_1f1b", ""), errors
    return errors


def fit_setup(strategy: str):
    """Data, model and config of the short runs (also used in-process by the test for the
    single-process reference)."""
    from slimtext.train.trainer import Encoded, TrainConfig

    g = torch.Generator().manual_seed(5)
    ids = [torch.randint(1, V, (int(n),), generator=g).tolist()
           for n in torch.randint(3, 20, (48,), generator=g)]  # fmt: skip
    data = Encoded(ids, [i % 3 for i in range(48)])
    # tp on 2 ranks: one tp group, per-rank batch = global batch. pp: the whole batch per step,
    # here as 2 accumulated batches of 4, each 2 micro-batches of 2 (one global batch of 8).
    pp = strategy == "pp"
    own = {"tp": {"tp_size": 2}, "pp": {"microbatches": 2, "pp_schedule": "gpipe"}}
    cfg = TrainConfig(max_steps=6, batch_size=4 if pp else 8, grad_accum=2 if pp else 1,
                      lr=3e-3, precision="fp32", seed=3, warmup=1, strategy=strategy,
                      log_every=1, device="cpu", **own.get(strategy, {}))  # fmt: skip
    return tiny(layers=4 if strategy == "pp" else 2), data, cfg


def single_process(cfg):
    """`cfg` for the one-process reference run: the strategy's own options back to defaults."""
    return replace(cfg, strategy="single", tp_size=None, microbatches=4, pp_schedule="1f1b")


def case_fit(ctx, name: str, out_dir: Path) -> dict:
    """A short run on 2 ranks (tp2d: 4 ranks, 2 dp x 2 tp, batch 4 per dp rank); rank 0 saves
    the gathered weights for the test to compare with one process, and checks the plain model
    predicts what the sharded one does."""
    from safetensors.torch import save_file

    from slimtext.train.trainer import fit

    strategy = name[:2]
    model, data, cfg = fit_setup(strategy)
    if name == "tp2d":
        cfg = replace(cfg, batch_size=4)  # x 2 data-parallel groups = the global batch of 8
    sctx = replace(ctx, strategy=strategy)
    fit(model, data, data, cfg, label_names=["a", "b", "c"], pad_id=0, progress=False, dist=sctx)
    state = full_state_dict(model, sctx)
    b = padded_batch(B=6)
    model.eval()
    with torch.no_grad():  # tp: a collective forward; pp: the gathered whole model
        sharded = model(b.input_ids, b.attention_mask)
    out = {}
    if ctx.is_main:
        plain = fit_setup(strategy)[0].eval()
        plain.load_state_dict(state)
        with torch.no_grad():
            out["predictions"] = (plain(b.input_ids, b.attention_mask) - sharded).abs().max().item()
        assert out["predictions"] < 1e-5, out
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(out_dir / f"{name}.safetensors")
        )
    return out


def main() -> None:
    case, out_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    ctx = init_distributed("ddp", "cpu")
    results = {}
    for name in case.split(","):
        if name.startswith("fit_"):
            results[name] = case_fit(ctx, name[4:], out_dir)
        else:
            results[name] = globals()[f"case_{name}"](ctx)
    if ctx.is_main:
        (out_dir / f"{case}.json").write_text(json.dumps(results, indent=1))
    shutdown(ctx)  # as the CLI ends: gloo's threads must not outlive it into interpreter exit


if __name__ == "__main__":
    main()
