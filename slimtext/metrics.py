"""Classification metrics from label ids: accuracy, macro-F1, per-class precision/recall/F1 and
the confusion matrix. A few lines of numpy, so the core install does not need scikit-learn."""

from __future__ import annotations

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


def format_report(report: dict) -> str:
    """Plain-text table of a `classification_report` result."""
    labels = report["labels"]
    w = max(12, *(len(lab) for lab in labels))
    lines = [f"{'':<{w}}  precision  recall     f1  support"]
    for lab in labels:
        r = report["per_class"][lab]
        lines.append(
            f"{lab:<{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  "
            f"{r['support']:7d}"
        )
    lines.append(
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n={report['n']}"
    )
    cm = report["confusion_matrix"]
    lines.append("confusion matrix (rows = true, columns = predicted):")
    # Each column as wide as its whole label: cut to a fixed width, labels sharing a prefix
    # ("sentiment_negative", "sentiment_positive") could not be told apart.
    cws = [max(len(lab), *(len(str(row[j])) for row in cm)) for j, lab in enumerate(labels)]
    head = (f"{lab:>{c}}" for lab, c in zip(labels, cws, strict=True))
    lines.append(" " * w + "  " + " ".join(head))
    for lab, row in zip(labels, cm, strict=True):
        cells = (f"{x:>{c}}" for x, c in zip(row, cws, strict=True))
        lines.append(f"{lab:<{w}}  " + " ".join(cells))
    return "\n".join(lines)
