"""Deterministic, stratified train / held-out splits."""

from __future__ import annotations

import math
import random
from collections import defaultdict

from slimtext.data.dataset import TextDataset


def _held_out_count(n: int, fraction: float) -> int:
    """round(fraction * n), but never emptying either side of a group that has two rows."""
    if n < 2:
        return 0
    return min(max(round(fraction * n), 1), n - 1)


def stratified_split(
    ds: TextDataset, fraction: float, seed: int = 0
) -> tuple[TextDataset, TextDataset]:
    """Split `ds` into (rest, held_out), with about `fraction` of each class held out.

    Each class with >= 2 rows gives round(fraction * count) rows (at least 1, at most
    count - 1) to `held_out`, so both parts see every such class. Unlabelled data is split
    at random. Rows keep their original order within each part. The result depends only on
    the data and `seed`, never on global RNG state.
    """
    if isinstance(fraction, bool) or not (
        isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction < 1
    ):
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")

    groups: dict[str | None, list[int]] = defaultdict(list)
    for i in range(len(ds)):
        groups[ds.labels[i] if ds.labels is not None else None].append(i)

    held: list[int] = []
    for label, rows in groups.items():
        # One RNG per class, seeded by (seed, label): a class's split does not change when
        # other classes are added or removed. String seeds hash with SHA-512, so this is
        # stable across processes and PYTHONHASHSEED.
        rng = random.Random(f"{seed}:{label}")
        held.extend(rng.sample(rows, _held_out_count(len(rows), fraction)))

    if not held:
        raise ValueError(
            f"{ds.source}: cannot hold out {fraction} of {len(ds)} rows: "
            "every class has fewer than 2 rows"
        )
    held_set = set(held)
    rest = [i for i in range(len(ds)) if i not in held_set]
    return ds.subset(rest), ds.subset(sorted(held_set))
