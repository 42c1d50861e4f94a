import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtext.data.batching import bucketed_batches, length_sorted_batches, pad_batch


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=300),
    batch_size=st.integers(1, 17),
    world=st.integers(1, 4),
    epoch=st.integers(0, 3),
)
def test_ranks_share_every_row_once_and_take_equal_steps(lengths, batch_size, world, epoch):
    per_rank = [
        bucketed_batches(
            lengths, batch_size, seed=1, epoch=epoch, bucket_batches=3, rank=r, world_size=world
        )  # fmt: skip
        for r in range(world)
    ]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(len(lengths)))
    if world == 1:
        assert sorted(seen) == list(range(len(lengths)))  # exactly once
    assert all(1 <= len(b) <= batch_size for batches in per_rank for b in batches)


def test_batches_are_a_pure_function_of_seed_and_epoch():
    lengths = [(i * 37) % 50 + 1 for i in range(500)]
    a = bucketed_batches(lengths, 8, seed=3, epoch=2)
    assert a == bucketed_batches(lengths, 8, seed=3, epoch=2)
    assert a != bucketed_batches(lengths, 8, seed=3, epoch=3)
    assert a != bucketed_batches(lengths, 8, seed=4, epoch=2)


def test_bucketing_pads_far_less_than_padding_to_the_maximum():
    lengths = [(i * 7919) % 120 + 5 for i in range(2000)]
    batches = bucketed_batches(lengths, 32, seed=0, epoch=0)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 1.1 * sum(lengths)  # < 10% padding
    assert padded < 0.6 * max(lengths) * len(lengths)


def test_pad_batch_pads_to_a_multiple_of_8_with_a_correct_mask():
    ids = [[2, 5, 6, 3], [2, 7, 3], list(range(2, 13))]
    b = pad_batch(ids, [0, 2], pad_id=0, labels=[1, 0, 2])
    assert b.input_ids.shape == (2, 16)
    assert b.attention_mask.sum(1).tolist() == [4, 11]
    assert torch.all(b.input_ids[~b.attention_mask] == 0)
    assert b.labels.tolist() == [1, 2] and b.index.tolist() == [0, 2]


def test_length_sorted_batches_cover_all_rows_longest_first():
    lengths = [3, 9, 1, 7, 5]
    batches = length_sorted_batches(lengths, 2)
    assert batches == [[1, 3], [4, 0], [2]]


def test_a_large_seed_orders_batches_without_overflowing_torchs_seed():
    # seed * 1_000_003 left torch's 64-bit range: "Overflow when unpacking long long"
    lengths = list(range(1, 41))
    for seed in (2**62, -(2**62), 20_000_000_000_000):
        a = bucketed_batches(lengths, 4, seed, 0)
        assert sorted(i for b in a for i in b) == list(range(40))
        assert a == bucketed_batches(lengths, 4, seed, 0)  # still a function of (seed, epoch)
    assert bucketed_batches(lengths, 4, 7, 0) != bucketed_batches(lengths, 4, 7, 1)


def test_grad_accum_micro_batches_are_the_rows_of_one_larger_batch():
    # A step's `accum` micro-batches hold exactly the rows a batch of batch_size x accum holds.
    lengths = [(i * 37) % 50 + 1 for i in range(70)]
    whole = bucketed_batches(lengths, 16, seed=1, epoch=0)
    micro = bucketed_batches(lengths, 4, seed=1, epoch=0, accum=4)
    assert len(micro) == 4 * len(whole)
    steps = [sorted(sum(micro[i : i + 4], [])) for i in range(0, len(micro), 4)]
    assert steps == [sorted(b) for b in whole]
    assert all(len(b) <= 4 for b in micro)
    # the last step's 6 rows in 4 micro-batches; 2 rows in 4: the empty ones come first
    tiny = bucketed_batches([3, 5], 4, seed=0, epoch=0, accum=4)
    assert [len(b) for b in tiny] == [0, 0, 1, 1]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=60),
    batch_size=st.integers(1, 5),
    accum=st.integers(2, 6),
    world=st.integers(2, 4),
)
def test_grad_accum_under_data_parallel_repeats_no_row_a_step_has_enough_rows_for(
    lengths, batch_size, accum, world
):
    # A 5-row last step was cut 1+1+1+2 over 2 ranks: three micro-batches of one row, each
    # repeated on rank 1, and the loss counted the repeats, so DDP + --grad-accum weighted
    # some rows double where one process weights every row once.
    shares = [bucketed_batches(lengths, batch_size, 3, 0, 2, r, world, accum) for r in range(world)]
    for first in range(0, len(shares[0]), accum):
        given = [row for s in shares for b in s[first : first + accum] for row in b]
        if len(set(given)) >= world:  # rows enough for every rank: none given twice
            assert len(given) == len(set(given)), (
                first,
                [s[first : first + accum] for s in shares],
            )
    # the trainer weighs each rank's loss by these rows: the ranks' shares, put together
    from slimtext.data.batching import global_batches

    whole = global_batches(lengths, batch_size, 3, 0, 2, world, accum)
    assert len(whole) == len(shares[0])
    for i, rows in enumerate(whole):
        assert sorted({row for s in shares for row in s[i]}) == sorted(rows)
    assert sorted(i for b in whole for i in b) == list(range(len(lengths)))
