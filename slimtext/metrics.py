"""Classification metrics from label ids: accuracy, macro-F1, per-class precision/recall/F1 and
the confusion matrix. A few lines of numpy, so the core install does not need scikit-learn."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> np.ndarray:
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)  # rows = truth, cols = prediction
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict:
    """JSON-ready dict: accuracy, macro_f1, n, per_class {label: {precision, recall, f1, support}},
    confusion_matrix (rows = true label, columns = predicted, in `labels` order)."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = int(cm.sum())
    # Macro-F1 over the classes in the data or in the predictions, as scikit-learn's default
    # (labels=None): leaving out a class the model predicts but the data lacks would hide those
    # wrong predictions (F1 0) and put macro-F1 above accuracy.
    present = (support > 0) | (predicted > 0)
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }


# Above this many classes the text report and metrics.json leave out the N x N confusion matrix
# (a list of the most frequent confusions instead); `eval --json` still prints all of it.
MAX_MATRIX_CLASSES = 50


def top_confusions(cm, labels: Sequence[str], k: int = 20) -> list[dict]:
    """The `k` largest off-diagonal cells of a confusion matrix, largest first."""
    if cm is None:
        return []
    m = np.asarray(cm, dtype=np.int64)  # (unsigned counts would wrap when negated)
    off = m.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]  # ties in label order
    out = []
    for f in flat:
        i, j = divmod(int(f), m.shape[1])
        if off[i, j] > 0:
            out.append({"true": labels[i], "predicted": labels[j], "count": int(off[i, j])})
    return out


def compact_report(report: dict) -> dict:
    """`report` as metrics.json keeps it: with many classes, the most frequent confusions in
    place of the N x N matrix (88 MB of JSON for 2,000 classes, parsed by every load)."""
    labels = report.get("labels") or []
    if "confusion_matrix" not in report or len(labels) <= MAX_MATRIX_CLASSES:
        return report
    out = {k: v for k, v in report.items() if k != "confusion_matrix"}
    out["top_confusions"] = top_confusions(report["confusion_matrix"], labels)
    return out


def display_width(text: str) -> int:
    """Terminal cells `text` takes: a CJK or full-width character two, a combining mark or a
    zero-width joiner none. len() padding shifted every column after a Chinese label. An emoji
    ZWJ sequence (👨‍👩‍👧) is drawn as one emoji: what follows a joiner adds nothing; a
    variation selector 16 (❤️) draws the character before it two cells wide."""
    width, last, joined = 0, 0, False
    for c in text:
        if c == "\ufe0f":  # emoji presentation of the character before
            width += 2 - last if last == 1 else 0
            last = 2
            continue
        cell = (
            0 if unicodedata.category(c) in ("Mn", "Me", "Cf")
            else 2 if unicodedata.east_asian_width(c) in ("W", "F")
            else 1
        )  # fmt: skip
        if joined and cell:  # the next emoji of a ZWJ sequence
            cell = 0
        joined = c == "\u200d"
        width += cell
        last = cell or last
    return width


def _shown(label: str) -> str:
    """A label as the report prints it: a tab or newline in one (data can hold them) broke the
    table's row in two; control characters are written as escapes."""
    if not any(unicodedata.category(c) == "Cc" for c in label):
        return label
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc" else c
        for c in label
    )


def _ljust(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def _rjust(text: str, width: int) -> str:
    return " " * (width - display_width(text)) + text


def format_report(report: dict) -> str:
    """Plain-text table of a `classification_report` result."""
    names = report["labels"]
    labels = [_shown(lab) for lab in names]
    w = max(12, *(display_width(lab) for lab in labels))
    lines = [f"{'':<{w}}  precision  recall     f1  support"]
    for lab, name in zip(labels, names, strict=True):
        r = report["per_class"][name]
        lines.append(
            f"{_ljust(lab, w)}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
            f"{r['support']:7d}"
        )
    lines.append(
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n={report['n']}"
    )
    cm = report.get("confusion_matrix")
    if cm is None or len(labels) > MAX_MATRIX_CLASSES:
        # N x N cells, each as wide as its label: 122 MB of text for 2,000 classes
        lines.append(
            f"confusion matrix: not shown for {len(labels):,} classes (it is in --json and "
            "metrics.json up to "
            f"{MAX_MATRIX_CLASSES}); the most frequent confusions (true -> predicted: count):"
        )
        for c in report.get("top_confusions") or top_confusions(cm, names):
            lines.append(f"  {_shown(c['true'])} -> {_shown(c['predicted'])}: {c['count']}")
        return "\n".join(lines)
    lines.append("confusion matrix (rows = true, columns = predicted):")
    # Each column as wide as its whole label: cut to a fixed width, labels sharing a prefix
    # ("sentiment_negative", "sentiment_positive") could not be told apart.
    cws = [max(display_width(lab), *(len(str(row[j])) for row in cm))
           for j, lab in enumerate(labels)]  # fmt: skip
    head = (_rjust(lab, c) for lab, c in zip(labels, cws, strict=True))
    lines.append(" " * w + "  " + " ".join(head))
    for lab, row in zip(labels, cm, strict=True):
        cells = (f"{x:>{c}}" for x, c in zip(row, cws, strict=True))
        lines.append(f"{_ljust(lab, w)}  " + " ".join(cells))
    return "\n".join(lines)
