import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtext.metrics import classification_report, format_report


def test_report_matches_hand_computed_values():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    r = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["a"]["precision"] == pytest.approx(1.0)
    assert r["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    f1s = [0.8, 0.5, 2 * 0.5 * 1 / 1.5]
    assert r["macro_f1"] == pytest.approx(np.mean(f1s))
    text = format_report(r)
    assert "accuracy 0.6667" in text and "confusion matrix" in text
    # columns carry whole labels: cut to 6 characters these two read "sentim sentim"
    r = classification_report([0, 1], [0, 0], ["sentiment_negative", "sentiment_positive"])
    header = format_report(r).split("predicted):\n")[1].splitlines()[0]
    assert header.split() == ["sentiment_negative", "sentiment_positive"]


def test_macro_f1_counts_a_class_only_predicted():
    # "c" is absent from the truth but predicted twice: its F1 of 0 counts, as in scikit-learn
    # (it was left out: 0.667, above the accuracy of 0.5)
    r = classification_report([0, 0, 1, 1], [2, 0, 2, 1], ["a", "b", "c", "d"])
    assert r["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # "d": neither, not counted


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=200))
def test_macro_f1_is_scikit_learns(pairs):
    sk = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = zip(*pairs, strict=True)
    r = classification_report(y_true, y_pred, ["w", "x", "y", "z"])
    assert r["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=200))
def test_accuracy_is_the_trace_of_the_confusion_matrix(pairs):
    y_true, y_pred = zip(*pairs, strict=True)
    r = classification_report(y_true, y_pred, ["w", "x", "y", "z"])
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == len(pairs) == r["n"]
    assert r["accuracy"] == pytest.approx(np.trace(cm) / len(pairs))
    assert 0.0 <= r["macro_f1"] <= 1.0


def test_many_classes_give_the_top_confusions_not_an_n_by_n_matrix():
    # 2,000 classes: a 122 MB text report and an 88 MB metrics.json, parsed by every load
    from slimtext.metrics import MAX_MATRIX_CLASSES, compact_report

    n = MAX_MATRIX_CLASSES + 1
    labels = [f"class {i}" for i in range(n)]
    y_true = list(range(n)) * 2 + [3, 3, 3, 7]
    y_pred = list(range(n)) * 2 + [5, 5, 5, 2]
    r = classification_report(y_true, y_pred, labels)
    text = format_report(r)
    assert "confusion matrix: not shown" in text and len(text.splitlines()) < n + 40
    assert "  class 3 -> class 5: 3\n  class 7 -> class 2: 1" in text
    small = compact_report(r)
    assert "confusion_matrix" not in small and small["accuracy"] == r["accuracy"]
    assert small["top_confusions"][0] == {"true": "class 3", "predicted": "class 5", "count": 3}
    assert format_report(small) == text  # the same text from what metrics.json keeps
    few = classification_report([0, 1], [1, 1], ["a", "b"])
    assert compact_report(few) is few and "rows = true" in format_report(few)


def test_format_report_aligns_wide_and_combining_labels():
    # columns line up on a terminal: a CJK character takes two cells, a combining mark none
    labels = ["技术故障", "hindi-हिंदी", "ab"]
    r = classification_report([0, 1, 2, 0], [0, 1, 2, 1], labels)
    import unicodedata

    def display_width(line):  # terminal cells, independently of slimtext's own helper
        wide = ("W", "F")
        return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf")
                   else 2 if unicodedata.east_asian_width(c) in wide else 1
                   for c in line)  # fmt: skip

    lines = format_report(r).splitlines()
    table = lines[:4]
    assert len({display_width(x) for x in table}) == 1
    matrix = lines[lines.index("confusion matrix (rows = true, columns = predicted):") + 1 :]
    assert len({display_width(x) for x in matrix}) == 1


def test_format_report_keeps_one_row_per_label_with_emoji_tabs_and_newlines():
    from slimtext.metrics import display_width

    # a newline in a label (data can hold one) broke its row in two; a ZWJ family counted 6
    # cells where a terminal draws 2, a heart with VS16 1 where it draws 2
    assert (display_width("👨‍👩‍👧"), display_width("❤️"), display_width("ab")) == (2, 2, 2)
    labels = ["a\tb", "x\ny", "👨‍👩‍👧", "❤️"]
    lines = format_report(classification_report([0, 1, 2, 3], [0, 1, 2, 2], labels)).splitlines()
    assert lines[1].startswith("a\\tb ") and lines[2].startswith("x\\ny ")
    table = lines[:5]
    assert len({display_width(x) for x in table}) == 1, table
    matrix = lines[lines.index("confusion matrix (rows = true, columns = predicted):") + 1 :]
    assert len(matrix) == 5 and len({display_width(x) for x in matrix}) == 1, matrix
