from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtext.data.dataset import TextDataset
from slimtext.data.split import stratified_split


def _dataset(labels: list[str] | None, n: int | None = None) -> TextDataset:
    n = len(labels) if labels is not None else n
    return TextDataset([f"text {i}" for i in range(n)], labels, "mem")


def test_split_is_deterministic_and_ignores_global_rng():
    ds = _dataset([c for c in "aabbbcccc" * 5])
    random.seed(1)
    first = stratified_split(ds, 0.3, seed=7)
    random.seed(2)
    random.random()
    second = stratified_split(ds, 0.3, seed=7)
    assert first[1].texts == second[1].texts and first[0].texts == second[0].texts


def test_different_seeds_give_different_splits():
    ds = _dataset(["a"] * 50 + ["b"] * 50)
    assert stratified_split(ds, 0.3, seed=0)[1].texts != stratified_split(ds, 0.3, seed=1)[1].texts


def test_small_class_still_gets_one_held_out_row_and_keeps_one():
    ds = _dataset(["big"] * 100 + ["small"] * 2 + ["single"])
    rest, held = stratified_split(ds, 0.1)
    assert Counter(held.labels) == {"big": 10, "small": 1}
    assert Counter(rest.labels) == {"big": 90, "small": 1, "single": 1}


def test_unlabelled_data_splits_at_random():
    rest, held = stratified_split(_dataset(None, 40), 0.25)
    assert len(held) == 10 and len(rest) == 30 and held.labels is None


def test_where_still_points_at_the_original_row_after_split():
    ds = _dataset(["a", "b"] * 10)
    rest, held = stratified_split(ds, 0.5)
    for part in (rest, held):
        for j, text in enumerate(part.texts):
            assert part.where(j) == f"mem row {int(text.split()[1])}"


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), True])
def test_fraction_outside_open_unit_interval_is_rejected(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(_dataset(["a", "b"] * 3), fraction)


def test_nothing_to_hold_out_is_rejected():
    with pytest.raises(ValueError, match="fewer than 2 rows"):
        stratified_split(_dataset(["a", "b", "c"]), 0.5)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.sampled_from("abcd"), min_size=2, max_size=80),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32),
)
def test_split_is_a_disjoint_cover_in_order_with_class_proportions(labels, fraction, seed):
    ds = _dataset(labels)
    if all(c < 2 for c in Counter(labels).values()):
        return  # nothing can be held out; covered by test_nothing_to_hold_out_is_rejected
    rest, held = stratified_split(ds, fraction, seed)
    rest_rows = [int(t.split()[1]) for t in rest.texts]
    held_rows = [int(t.split()[1]) for t in held.texts]
    assert rest_rows == sorted(rest_rows) and held_rows == sorted(held_rows)
    assert sorted(rest_rows + held_rows) == list(range(len(ds)))
    assert rest.labels == [labels[i] for i in rest_rows]
    held_counts = Counter(held.labels)
    for label, count in Counter(labels).items():
        if count >= 2:
            assert 1 <= held_counts[label] <= count - 1
            assert abs(held_counts[label] - fraction * count) <= max(1, 0.5 + 1e-9)
        else:
            assert held_counts[label] == 0
    assert stratified_split(ds, fraction, seed)[1].texts == held.texts


def test_report_is_one_line_with_rows_classes_skips_and_notes():
    ds = TextDataset(["a", "b", "c"], ["x", "y", "x"], "d.csv", skipped={"blank line": 2})
    ds.notes.append("1 file decoded as cp1252: f.txt")
    report = ds.report()
    assert "\n" not in report
    assert (
        report
        == "d.csv: 3 rows, 2 classes; skipped 2 (2 blank line); 1 file decoded as cp1252: f.txt"
    )


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        TextDataset(["a", "b"], ["x"], "mem")


def test_real_ag_news_test_split_loads_whole_and_balanced(shared_datasets):
    from collections import Counter

    from slimtext.data import load_data

    ds = load_data(shared_datasets / "ag_news" / "test.jsonl.gz")
    assert len(ds) == 7600 and ds.skipped == {}
    assert Counter(ds.labels) == {lab: 1900 for lab in ("World", "Sports", "Business", "Sci/Tech")}
