"""The Pareto front: nothing on it is dominated, everything off it is dominated by a point on it;
and the plot of it is written with the mode of any other new file."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from slimtext.bench.report import dominates, pareto_front

# Few distinct values, so ties and exact duplicates are common.
coord = st.integers(0, 6).map(float)
points = st.lists(st.tuples(coord, coord), max_size=25)


@given(points)
def test_no_front_point_is_dominated_and_every_other_point_is(pts):
    front = pareto_front(pts)
    assert len(set(front)) == len(front)
    for i in front:
        assert not any(dominates(q, pts[i]) for q in pts)
    for j in set(range(len(pts))) - set(front):
        assert any(dominates(pts[i], pts[j]) for i in front)


def test_front_is_sorted_by_throughput_and_keeps_exact_duplicates():
    pts = [(10.0, 0.9), (100.0, 0.8), (50.0, 0.7), (100.0, 0.8), (1.0, 0.95)]
    assert pareto_front(pts) == [4, 0, 1, 3]
    assert pareto_front([]) == []


def test_pareto_png_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    from slimtext.bench.report import plot

    old = os.umask(0o022)
    try:
        plot({"entries": []}, tmp_path / "pareto.png")
    finally:
        os.umask(old)
    assert (tmp_path / "pareto.png").stat().st_mode & 0o777 == 0o644
