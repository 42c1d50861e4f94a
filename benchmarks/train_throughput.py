"""Training throughput: slimtext vs Hugging Face `Trainer`, BERT-mini shape on AG News.

    python benchmarks/train_throughput.py --steps 150 --out bench-out/train_throughput.json
    python benchmarks/train_throughput.py --device cuda --shape bert-base ...   # on a GPU

Every contender trains the same BERT-mini shape (vocab 16k, hidden 256, 4 layers, 4 heads,
FFN 1024, max length 128, batch 32) from random init with the *same* WordPiece tokenizer (trained
once on the AG News train texts and wrapped in `PreTrainedTokenizerFast` for Hugging Face) for the
same number of optimizer steps, so every model has seen the same number of examples. Then each
is scored with the same evaluation code on the same validation texts (a fixed random subset of
the AG News test set, `--valid-size`, or all 7,600 with `--valid-size 0`).

Contenders:
- slimtext bf16 (`precision="auto"` resolves to bf16 autocast on a CPU with AMX/AVX512-BF16)
  and fp32: length-bucketed batches, dynamic padding; `[CLS]` + tanh pooling (`--pooling cls`,
  the default here: HF's own architecture, whose last block slimtext computes for `[CLS]` only),
  and `slimtext-bf16-mean` with masked-mean pooling (the package default); `slimtext-bf16-sparse`
  adds `sparse_embeddings=True` (token table: sparse gradients, lazy Adam);
- HF best: `BertForSequenceClassification` under `Trainer` with `DataCollatorWithPadding` and
  length grouping (`train_sampling_strategy="group_by_length"`, the transformers 5 spelling of
  `group_by_length=True`), in fp32 and in bf16;
- HF default: every text padded to 128, random order, fp32.

Samples/s quoted in the table come from our own wall clock around `fit(...)` /
`trainer.train()`; Trainer's own `train_samples_per_second` and slimtext's pure step time are
kept in the JSON (and shown as extra columns). Tokens/s counts real (non-pad) tokens only.
Achieved GFLOP/s uses the training FLOPs of the *real* tokens (see `flops_per_token`) and is set
against this CPU's matmul peak, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from _common import REPO, dataset_paths, machine_info, markdown_table, write_json
from torch import nn

from slimtext.data import load_data
from slimtext.models import ModelConfig, build_model
from slimtext.models.hf import hf_fast_tokenizer
from slimtext.tokenizer import train_tokenizer
from slimtext.train import Encoded, TrainConfig, evaluate, fit

SHAPES = {
    "bert-mini": dict(hidden_size=256, num_layers=4, num_heads=4, ffn_size=1024),
    # issue #3's GPU check: a BERT-base-sized TransformerClassifier (16k vocab, not 30k)
    "bert-base": dict(hidden_size=768, num_layers=12, num_heads=12, ffn_size=3072),
}
SHAPE = SHAPES["bert-mini"]  # main() sets the one chosen with --shape


# ---- matmul peak ----------------------------------------------------------------------------
def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(n: int = 2048, repeats: int = 10, device: str = "cpu") -> dict[str, float]:
    """Median GFLOP/s of an n x n x n matmul in fp32 and bf16 (2 n^3 FLOPs each). On CUDA fp32
    is true fp32 (torch leaves TF32 off for matmuls by default), as the fp32 contenders run."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        for _ in range(2):  # warm-up: oneDNN / cuBLAS pick and cache their kernel
            torch.matmul(a, b)
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync(device)
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n**3 / statistics.median(times) / 1e9
    return out


# ---- model FLOPs ----------------------------------------------------------------------------
def non_embedding_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def flops_per_token(n_params: int, layers: int, hidden: int, seq_len: float) -> float:
    """Training FLOPs per token: 6N for the matmuls against the N non-embedding weights (2N
    forward, 4N backward) plus 12*L*T*C for the attention scores and the weighted sum of values
    (QK^T and AV: 2*2*T*C per token per layer forward, times 3 for forward + backward)."""
    return 6 * n_params + 12 * layers * seq_len * hidden


# ---- slimtext -------------------------------------------------------------------------------
def run_slimtext(mode, precision, pooling, tok, train_enc, valid_enc, label_names, args) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, num_labels=len(label_names), max_length=args.max_length,
        pooling=pooling, **SHAPE,
    )  # fmt: skip
    model = build_model(cfg)
    tcfg = TrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, precision=precision,
        seed=0, max_length=args.max_length, warmup=0.06, schedule="linear",
        sparse_embeddings=mode == "sparse", device=args.device,
    )  # fmt: skip
    reset_peak(args.device)
    t0 = time.perf_counter()
    res = fit(model, train_enc, None, tcfg, label_names=label_names, pad_id=tok.pad_id,
              progress=True)  # fmt: skip
    sync(args.device)
    wall = time.perf_counter() - t0
    model.eval()
    report = evaluate(model, valid_enc.ids, valid_enc.labels, label_names, tok.pad_id,
                      device=args.device)  # fmt: skip
    return {
        "precision": res.precision,
        "steps": res.steps,
        "samples": res.samples,
        "tokens": res.tokens,
        "wall_seconds": wall,
        "step_seconds": res.train_seconds,
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "non_embedding_params": non_embedding_params(model),
        "pooling": pooling,
        **peak_memory(args.device),
    }


def reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict:
    if torch.device(device).type != "cuda":
        return {}  # on CPU see benchmarks/distributed.py (per-rank RSS)
    return {"peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20}


# ---- Hugging Face ---------------------------------------------------------------------------
class CountingCollator:
    """Wraps a collator and records the real tokens and samples of every batch it builds."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens: list[int] = []
        self.samples: list[int] = []

    def __call__(self, features):
        batch = self.inner(features)
        self.tokens.append(int(batch["attention_mask"].sum()))
        self.samples.append(len(features))
        return batch


class HFLogits(nn.Module):
    """`forward(input_ids, attention_mask) -> logits`, so slimtext's `evaluate` scores it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask.long()).logits


def run_hf(mode, precision, hf_tok, train_texts, train_y, valid_enc, label_names, args) -> dict:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    default = mode == "default"
    enc = hf_tok(
        train_texts, truncation=True, max_length=args.max_length,
        padding="max_length" if default else False,
    )  # fmt: skip
    train_ds = [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(enc["input_ids"], enc["attention_mask"], train_y, strict=True)
    ]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(hf_tok), hidden_size=SHAPE["hidden_size"],
        num_hidden_layers=SHAPE["num_layers"], num_attention_heads=SHAPE["num_heads"],
        intermediate_size=SHAPE["ffn_size"], max_position_embeddings=args.max_length,
        num_labels=len(label_names), pad_token_id=hf_tok.pad_token_id,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    collator = CountingCollator(DataCollatorWithPadding(hf_tok))
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, weight_decay=0.01, warmup_steps=0.06,
            lr_scheduler_type="linear", bf16=precision == "bf16", seed=0, report_to=[],
            save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
            use_cpu=args.device == "cpu",
            train_sampling_strategy="random" if default else "group_by_length",
        )  # fmt: skip
        trainer = Trainer(
            model=model, args=targs, train_dataset=train_ds, data_collator=collator,
            processing_class=hf_tok,
        )  # fmt: skip
        reset_peak(args.device)
        t0 = time.perf_counter()
        out = trainer.train()
        sync(args.device)
        wall = time.perf_counter() - t0
    # Only the batches that were stepped on (a loader may collate one ahead).
    n_batches = args.steps
    samples, tokens = sum(collator.samples[:n_batches]), sum(collator.tokens[:n_batches])
    wrapped = HFLogits(model.eval())
    report = evaluate(wrapped, valid_enc.ids, valid_enc.labels, label_names, hf_tok.pad_token_id,
                      device=args.device)  # fmt: skip
    return {
        "precision": precision,
        "steps": out.global_step,
        "samples": samples,
        "tokens": tokens,
        "wall_seconds": wall,
        "trainer_train_runtime": out.metrics["train_runtime"],
        "trainer_samples_per_second": out.metrics["train_samples_per_second"],
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "non_embedding_params": non_embedding_params(model),
        **peak_memory(args.device),
    }


# ---- main -----------------------------------------------------------------------------------
# name: (kind, mode, precision, pooling); slimtext contenders without a pooling take --pooling.
CONTENDERS = {
    "slimtext-bf16": ("slimtext", None, "auto", None),
    "slimtext-bf16-mean": ("slimtext", None, "auto", "mean"),
    "slimtext-bf16-sparse": ("slimtext", "sparse", "auto", None),
    "slimtext-fp32": ("slimtext", None, "fp32", None),
    "hf-best-fp32": ("hf", "best", "fp32", None),
    "hf-best-bf16": ("hf", "best", "bf16", None),
    "hf-default-fp32": ("hf", "default", "fp32", None),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per contender")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument(
        "--pooling",
        default="cls",
        choices=["mean", "cls"],
        help="pooling of the slimtext contenders that name none: cls = [CLS] + tanh pooler, "
        "HF's own architecture; mean = slimtext's package default",
    )
    ap.add_argument("--valid-size", type=int, default=2000, help="0 = the full test set")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (the GPU check of issue #3)")
    ap.add_argument("--shape", default="bert-mini", choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per contender (median)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated")
    ap.add_argument("--out", default=str(REPO / "bench-out" / "train_throughput.json"))
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if bad := [c for c in names if c not in CONTENDERS]:
        sys.exit(f"unknown contenders {bad}; choose from {list(CONTENDERS)}")

    global SHAPE
    SHAPE = SHAPES[args.shape]
    torch.set_num_threads(args.threads)
    train_path, test_path = dataset_paths(args.data_root, "ag_news")
    train, test = load_data(train_path), load_data(test_path)
    label_names = sorted(set(train.labels))
    index = {lab: i for i, lab in enumerate(label_names)}
    g = torch.Generator().manual_seed(0)
    keep = torch.randperm(len(test), generator=g).tolist()
    keep = sorted(keep[: args.valid_size]) if args.valid_size else list(range(len(test)))
    valid_texts = [test.texts[i] for i in keep]
    valid_y = [index[test.labels[i]] for i in keep]
    train_y = [index[y] for y in train.labels]

    t0 = time.perf_counter()
    tok = train_tokenizer(train.texts, vocab_size=16000, kind="wordpiece")
    tok_seconds = time.perf_counter() - t0
    train_enc = Encoded(tok.encode(train.texts, args.max_length), train_y)
    valid_enc = Encoded(tok.encode(valid_texts, args.max_length), valid_y)
    hf_tok = None
    if any(CONTENDERS[c][0] == "hf" for c in names):
        hf_tok = hf_fast_tokenizer(tok, args.max_length)
        sample = hf_tok(train.texts[:200], truncation=True, max_length=args.max_length)
        if sample["input_ids"] != train_enc.ids[:200]:
            sys.exit("the wrapped tokenizer disagrees with slimtext's on the first 200 texts")

    info = machine_info()
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(args.device)
    peak = matmul_peak(8192 if cuda else 2048, device=args.device)
    print(f"matmul peak ({args.device}, {args.threads} threads): "
          f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")  # fmt: skip

    # Repeats are interleaved (A B A B ...), so a change in the machine's other load over the run
    # falls on every contender alike rather than on whichever ran last.
    all_runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names:
            kind, mode, precision, pooling = CONTENDERS[name]
            print(f"== {name} (run {r + 1}/{args.repeats}, {args.steps} steps)", flush=True)
            if kind == "slimtext":
                run = run_slimtext(mode, precision, pooling or args.pooling, tok, train_enc,
                                   valid_enc, label_names, args)  # fmt: skip
            else:
                run = run_hf(mode, precision, hf_tok, train.texts, train_y, valid_enc,
                             label_names, args)  # fmt: skip
            run["loadavg_after"] = os.getloadavg()[0]
            all_runs[name].append(run)
            print(f"   {run['samples'] / run['wall_seconds']:.1f} samples/s, "
                  f"accuracy {run['accuracy']:.4f}", flush=True)  # fmt: skip

    results: dict[str, dict] = {}
    for name, runs in all_runs.items():
        kind = CONTENDERS[name][0]
        res = dict(runs[0])
        res["runs"] = runs
        res["samples_per_second"] = statistics.median(
            r["samples"] / r["wall_seconds"] for r in runs
        )
        res["tokens_per_second"] = statistics.median(r["tokens"] / r["wall_seconds"] for r in runs)
        if kind == "slimtext":
            res["step_samples_per_second"] = statistics.median(
                r["samples"] / r["step_seconds"] for r in runs
            )
        else:
            res["trainer_samples_per_second"] = statistics.median(
                r["trainer_samples_per_second"] for r in runs
            )
        mean_len = res["tokens"] / res["samples"]
        fpt = flops_per_token(
            res["non_embedding_params"], SHAPE["num_layers"], SHAPE["hidden_size"], mean_len
        )
        res["mean_real_tokens_per_sample"] = mean_len
        res["flops_per_token"] = fpt
        res["gflops"] = fpt * res["tokens_per_second"] / 1e9
        res["peak_fraction"] = (
            res["gflops"] / peak["bf16" if res["precision"] == "bf16" else "fp32"]
        )
        results[name] = res

    hf_names = [n for n in results if n.startswith("hf-best")]
    best_hf = max(hf_names, key=lambda n: results[n]["samples_per_second"]) if hf_names else None
    rows = []
    for name, r in results.items():
        ratio = r["samples_per_second"] / results[best_hf]["samples_per_second"] if best_hf else 0
        own = r.get("step_samples_per_second", r.get("trainer_samples_per_second"))
        pct = f"{100 * r['peak_fraction']:.0f}%"
        rows.append([name, r["precision"], r["samples_per_second"], r["tokens_per_second"],
                     f"{ratio:.2f}x", r["accuracy"], r["gflops"], pct, own])  # fmt: skip
        if cuda:
            rows[-1].append(r["peak_gpu_memory_mb"])
    headers = ["contender", "precision", "samples/s (wall)", "real tokens/s",
               f"vs {best_hf}", "valid accuracy", "GFLOP/s", "of matmul peak",
               "samples/s (own timer*)"] + (["peak GPU MiB"] if cuda else [])  # fmt: skip
    table = markdown_table(headers, rows)
    print()
    print(table)
    print("* slimtext: pure step time (TrainResult.train_seconds); HF: train_samples_per_second")
    report = {
        "benchmark": "train_throughput",
        "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "machine": info,
        "matmul_peak_gflops": peak,
        "tokenizer_train_seconds": tok_seconds,
        "valid_examples": len(valid_enc),
        "examples_seen": args.steps * args.batch_size,
        "flops_formula": "6*N_nonembed + 12*L*T*C per real token, T = mean real length",
        "best_hf": best_hf,
        "results": results,
        "table_markdown": table,
    }
    path = write_json(args.out, report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
