"""Self-pretraining vs training from scratch (issue #7), with the bag-of-n-grams peers.

    python benchmarks/pretrain.py --datasets sst2,imdb --out bench-out/pretrain

Per dataset, the same architecture and the same fine-tuning budget twice:
  scratch    `slimtext train` from random weights;
  pretrained `slimtext pretrain` (masked LM) on the *train* texts only (never test), then
             `slimtext train --init` from that encoder;
and TF-IDF + LR and fastText trained on the same train split (benchmarks/accuracy.py's peers).
Every stage runs the real CLI in a subprocess, is timed, and leaves its model directory under
`--out`; a stage whose result is already there is not run again, so an interrupted benchmark
resumes where it stopped (delete a stage's folder to redo it). The exact commands are recorded
in `results.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import dataset_paths, machine_info, markdown_table, write_json

# One shape per dataset: BERT-mini for SST-2's short sentences; for IMDB's long reviews two
# blocks of the same width, so that the whole comparison fits the 2-core machine (1,400
# pretraining steps of 64 x 256 tokens: about three passes over the reviews).
BERT_MINI = ["--hidden-size", "256", "--num-layers", "4", "--num-heads", "4", "--ffn-size", "1024"]
TWO_BLOCKS = ["--hidden-size", "256", "--num-layers", "2", "--num-heads", "4", "--ffn-size", "1024"]
# The second recipe (sessions 3-4): twice the steps, a higher peak lr and whole-word masking.
# IMDB's first run sat on an MLM loss plateau (~6.3) from step 500; AG News's was still falling.
WWM = ["--max-steps", "3000", "--batch-size", "64", "--pack", "--lr", "1e-3", "--whole-word"]
SETUPS = {
    "sst2": {
        "shape": BERT_MINI,
        "max_length": 64,
        "pretrain": ["--max-steps", "3000", "--batch-size", "64", "--pack", "--lr", "5e-4"],
        "finetune": ["--epochs", "2", "--batch-size", "32"],
    },
    "ag_news": {  # BERT-mini as in benchmarks 1, 2 and 5; 1,500 steps = SST-2's 12 M tokens
        "shape": BERT_MINI,
        "max_length": 128,
        "pretrain": ["--max-steps", "1500", "--batch-size", "64", "--pack", "--lr", "5e-4"],
        "finetune": ["--epochs", "3", "--batch-size", "32"],
    },
    "imdb": {
        "shape": TWO_BLOCKS,
        "max_length": 256,
        "pretrain": ["--max-steps", "1400", "--batch-size", "64", "--pack", "--lr", "5e-4"],
        "finetune": ["--epochs", "2", "--batch-size", "32"],
    },
    "imdb-wwm": {
        "data": "imdb",
        "shape": TWO_BLOCKS,
        "max_length": 256,
        "pretrain": WWM,
        "finetune": ["--epochs", "2", "--batch-size", "32"],
    },
    # Session 5: the same pretrained encoder as imdb-wwm (not pretrained again), fine-tuned and
    # compared with from-scratch on every part of each review: 40% of them are longer than 256
    # tokens, and both earlier IMDB setups read only their start.
    "imdb-wwm-chunks": {
        "data": "imdb",
        "shape": TWO_BLOCKS,
        "max_length": 256,
        "encoder_from": "imdb-wwm",
        "finetune": ["--epochs", "2", "--batch-size", "32", "--long-text", "chunks"],
    },
    # Session 25 (prepared, not run yet): the same encoder again, fine-tuned (and the from-scratch
    # model trained) with masked-mean pooling. MLM never trains the [CLS] pooler, so the
    # classifier must learn to use [CLS] from the labels alone; mean pooling reads the tokens
    # pretraining did train (the package default from scratch, and `--init` accepts it since).
    "imdb-wwm-chunks-mean": {
        "data": "imdb",
        "shape": TWO_BLOCKS,
        "max_length": 256,
        "encoder_from": "imdb-wwm",
        "pooling": "mean",
        "finetune": ["--epochs", "2", "--batch-size", "32", "--long-text", "chunks"],
    },
    # Session 15, on the lent GPU (one H200, `--device cuda`): what more pretraining buys. BERT-mini
    # (not two blocks), 5,000 steps of 128 x 256 tokens with whole-word masking: ~17 passes over
    # the reviews, each document read whole (`chunks`) in pretraining and fine-tuning alike.
    "imdb-gpu": {
        "data": "imdb",
        "shape": BERT_MINI,
        "max_length": 256,
        "pretrain": [
            "--max-steps",
            "5000",
            "--batch-size",
            "128",
            "--pack",
            "--lr",
            "1e-3",
            "--whole-word",
        ],  # fmt: skip
        "pretrain_long_text": "chunks",
        "finetune": ["--epochs", "2", "--batch-size", "32", "--long-text", "chunks"],
    },
    "ag_news-wwm": {
        "data": "ag_news",
        "shape": BERT_MINI,
        "max_length": 128,
        "pretrain": WWM,
        "finetune": ["--epochs", "3", "--batch-size", "32"],
    },
}


def run(cmd: list[str], log: Path) -> float:
    """Runs one CLI stage; its output goes to `log`. Returns wall seconds; raises on failure."""
    t0 = time.perf_counter()
    with open(log, "a") as fh:  # appended: a resumed stage keeps the earlier attempts' output
        fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ " + shlex.join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"stage failed ({proc.returncode}); see {log}")
    return time.perf_counter() - t0


def stage(out: Path, name: str, cmd: list[str]) -> dict:
    """Runs `cmd` unless `out/name` already holds its result; returns the stage record."""
    done = out / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    seconds = run(cmd, out / f"{name}.log")
    rec = {"command": shlex.join(cmd), "seconds": round(seconds, 1)}
    metrics = out / name / "metrics.json"
    if metrics.exists():
        rec["metrics"] = json.loads(metrics.read_text())
    write_json(done, rec)
    return rec


def peers(train_path: Path, test_path: Path, threads: int) -> dict:
    import accuracy  # the peers exactly as benchmarks/accuracy.py runs them

    from slimtext.data import load_data

    train, test = load_data(str(train_path)), load_data(str(test_path))
    labels = sorted(set(train.labels))
    return {
        "fastText": accuracy.run_fasttext(train, test, labels, threads),
        "TF-IDF + LR": accuracy.run_tfidf(train, test, labels, [1.0, 4.0, 16.0], threads),
    }


def bench_dataset(
    name: str, data_root: Path, out: Path, threads: int, device: str | None = None, peer=True
) -> dict:
    setup = SETUPS[name]
    train_path, test_path = dataset_paths(data_root, setup.get("data", name))
    out.mkdir(parents=True, exist_ok=True)
    slim = [sys.executable, "-m", "slimtext"]
    common = ["--max-length", str(setup["max_length"]), "--threads", str(threads), "--no-progress"]
    common += ["--device", device] if device else []
    data = ["--data", str(train_path), "--test", str(test_path)]
    res = {"setup": setup}
    pooling = setup.get("pooling", "cls")  # from scratch and fine-tuned alike
    # Another setup's encoder and peers (only fine-tuning differs): that setup's pretraining
    # stage, run here when it has not run yet (its scratch and fine-tuning stages are not).
    source = out.parent / setup["encoder_from"] if "encoder_from" in setup else out
    pre_setup = SETUPS[setup["encoder_from"]] if "encoder_from" in setup else setup
    encoder, peers_file = source / "pretrained", source / "peers.json"
    source.mkdir(parents=True, exist_ok=True)
    res["pretrain"] = stage(
        source, "pretrained",
        [*slim, "pretrain", "--data", str(train_path), "--out", str(encoder),
         *pre_setup["shape"], *pre_setup["pretrain"],
         "--max-length", str(pre_setup["max_length"]), *common[2:],
         # The quoted CPU runs read each document's first max_length tokens (pretrain's only
         # behaviour then; since session 14 it reads long ones whole unless told this).
         "--long-text", pre_setup.get("pretrain_long_text", "truncate"),
         # An interrupted pretraining resumes exactly where it stopped when this is re-run
         # (its recorded seconds are then the last attempt's; the log has every attempt).
         "--checkpoint-every", "200", "--resume"],
    )  # fmt: skip
    res["finetuned"] = stage(
        out, "finetuned",
        [*slim, "train", *data, "--out", str(out / "finetuned"), "--init", str(encoder),
         "--pooling", pooling, *setup["finetune"], "--lr", "2e-4",
         *common],  # a pretrained encoder wants a lower lr
    )  # fmt: skip
    # From scratch last: the pretrained side, the slow one, reports first.
    res["scratch"] = stage(
        out, "scratch",
        [*slim, "train", *data, "--out", str(out / "scratch"), "--model", "transformer",
         "--pooling", pooling, *setup["shape"], *setup["finetune"], *common],  # default lr, 5e-4
    )  # fmt: skip
    if peer and not peers_file.exists():
        write_json(peers_file, peers(train_path, test_path, threads))
    res["peers"] = json.loads(peers_file.read_text()) if peers_file.exists() else {}
    return res


def test_accuracy(rec: dict) -> float:
    return rec["metrics"]["test"]["accuracy"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="sst2,imdb")
    ap.add_argument("--data-root", default=str(Path(__file__).parents[1] / "../shared/datasets"))
    ap.add_argument("--out", default="bench-out/pretrain")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", help="passed to every stage (default: the CLI's, auto)")
    ap.add_argument("--no-peers", action="store_true", help="skip TF-IDF and fastText")
    args = ap.parse_args(argv)
    out = Path(args.out)
    results = {"machine": machine_info(), "datasets": {}}
    rows = []
    for name in args.datasets.split(","):
        r = bench_dataset(name, Path(args.data_root), out / name, args.threads, args.device,
                          not args.no_peers)  # fmt: skip
        results["datasets"][name] = r
        scratch, fine = test_accuracy(r["scratch"]), test_accuracy(r["finetuned"])
        for peer, p in r["peers"].items():
            rows.append([name, peer, p["accuracy"], p["macro_f1"], "", p["train_seconds"]])
        for label, key in (("from scratch", "scratch"), ("pretrained + fine-tuned", "finetuned")):
            m = r[key]["metrics"]["test"]
            pre = r["pretrain"]["seconds"] if key == "finetuned" else ""
            rows.append([name, f"slimtext {label}", m["accuracy"], m["macro_f1"], pre,
                         r[key]["seconds"]])  # fmt: skip
        r["gain_points"] = round(100 * (fine - scratch), 2)
    write_json(out / "results.json", results)
    print(
        markdown_table(
            ["dataset", "contender", "test acc", "macro-F1", "pretrain s", "train s"], rows
        )
    )
    for name, r in results["datasets"].items():
        print(f"{name}: pretrained - scratch = {r['gain_points']:+.2f} points")
    return results


if __name__ == "__main__":
    main()
