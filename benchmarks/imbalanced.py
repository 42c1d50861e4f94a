"""Imbalanced classes: `--class-weight balanced` vs no weights, slimtext and TF-IDF side by side.

    python benchmarks/imbalanced.py --out bench-out/imbalanced.json

A support-ticket-like training set made from the real AG News train file: every row of one
class (`--major`, 3,000 rows in the 12,000-row subset) and `--minor-rows` of each other class
(the first ones in file order), so the rare classes are 20x rarer. Test: the full, balanced
7,600-row AG News test set, where each class counts the same, so macro-F1 and the worst
class's recall show what the imbalance costs.

Contenders, all in one run on the same rows:
- TF-IDF + LR (`TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)`,
  `LogisticRegression(C=4)`), `class_weight=None` and `"balanced"` (scikit-learn's own);
- slimtext's attention model (`attention-256` of accuracy.py), `class_weight=None` and
  `"balanced"`, keep-best on validation macro-F1 (`metric="macro_f1"`) for both, `--seeds`
  seeds each (medians quoted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _common import REPO, dataset_paths, machine_info, markdown_table, write_json

from slimtext.api import TextClassifier
from slimtext.data import load_data
from slimtext.metrics import classification_report


def scores(y_true, y_pred, labels) -> dict:
    r = classification_report([labels.index(y) for y in y_true],
                              [labels.index(y) for y in y_pred], labels)  # fmt: skip
    recalls = {lab: r["per_class"][lab]["recall"] for lab in labels}
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "recall": recalls,
            "min_recall": min(recalls.values())}  # fmt: skip


def run_tfidf(train, test, labels, weight) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    clf = LogisticRegression(C=4.0, max_iter=1000, class_weight=weight)
    clf.fit(vec.fit_transform(train.texts), train.labels)
    seconds = time.perf_counter() - t0
    pred = [str(p) for p in clf.predict(vec.transform(test.texts))]
    return {**scores(test.labels, pred, labels), "train_seconds": seconds}


def run_slimtext(train, test, labels, weight, seed) -> dict:
    clf = TextClassifier("attention", max_length=256, epochs=3, metric="macro_f1", seed=seed,
                         class_weight=weight, verbose=False)  # fmt: skip
    t0 = time.perf_counter()
    clf.fit(train)
    seconds = time.perf_counter() - t0
    return {**scores(test.labels, clf.predict(test.texts), labels), "train_seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--major", default="World", help="the big class")
    ap.add_argument("--minor-rows", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench-out" / "imbalanced.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_path, test_path = dataset_paths(args.data_root, "ag_news")
    full, test = load_data(train_path), load_data(test_path)
    taken: dict[str, int] = {}
    keep = []
    for i, y in enumerate(full.labels):
        if y == args.major or taken.get(y, 0) < args.minor_rows:
            taken[y] = taken.get(y, 0) + 1
            keep.append(i)
    train = full.subset(keep)
    labels = sorted(set(train.labels))
    print(f"train rows per class: {dict(sorted(taken.items()))}; test {len(test)}", flush=True)

    runs: dict[str, list[dict]] = {}
    for weight in (None, "balanced"):
        name = f"TF-IDF + LR, class_weight={weight}"
        runs[name] = [run_tfidf(train, test, labels, weight)]
        print(f"  {name}: macro-F1 {runs[name][0]['macro_f1']:.4f}", flush=True)
    for seed in range(args.seeds):  # interleaved: a slow spell hits both alike
        for weight in (None, "balanced"):
            name = f"slimtext attention, class_weight={weight}"
            runs.setdefault(name, []).append(run_slimtext(train, test, labels, weight, seed))
            r = runs[name][-1]
            print(f"  {name} seed {seed}: macro-F1 {r['macro_f1']:.4f}, min recall "
                  f"{r['min_recall']:.4f}", flush=True)  # fmt: skip

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    rows = []
    for name, rs in runs.items():
        rare = [lab for lab in labels if lab != args.major]
        rows.append([name, len(rs), med(rs, "accuracy"), med(rs, "macro_f1"),
                     med(rs, "min_recall"),
                     statistics.median(statistics.mean(r["recall"][lab] for lab in rare)
                                       for r in rs),
                     statistics.median(r["recall"][args.major] for r in rs),
                     f"{med(rs, 'train_seconds'):.1f}"])  # fmt: skip
    table = markdown_table(["contender", "runs", "accuracy", "macro-F1", "worst class recall",
                            "rare classes' mean recall", "big class recall", "train s"],
                           rows)  # fmt: skip
    print()
    print(table)
    out = {"benchmark": "imbalanced", "command": "python benchmarks/imbalanced.py "
           + " ".join(sys.argv[1:]), "args": vars(args), "train_rows": taken,
           "machine": machine_info(), "runs": runs, "table_markdown": table}  # fmt: skip
    print(f"wrote {write_json(args.out, out)}")
    return out


if __name__ == "__main__":
    main()
