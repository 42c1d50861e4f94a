import numpy as np
import pytest

from slimtext.bench.measure import accuracy_report


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_report_matches_scikit_learn_with_classes_missing_from_the_test_data(seed):
    # Predicted classes the test data lacks each count with F1 0, as scikit-learn counts them:
    # lumped into one "<unknown>" class, two or more of them put macro-F1 too high.
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    model = ["a", "b", "c", "d", "e"]
    gold = list(rng.choice(model[:2], 60))  # the test data has 2 of the model's 5 classes
    pred = list(rng.choice(model + ["peer-only"], 60))  # a peer may predict its own labels too
    got = accuracy_report(gold, pred, sorted(set(gold)))
    assert got["n"] == 60
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(gold, pred))
    assert got["macro_f1"] == pytest.approx(metrics.f1_score(gold, pred, average="macro"))
