"""Length-bucketed batches with dynamic padding.

Padding every batch to the maximum length wastes most of the compute on short texts. We sort
texts by length inside large shuffled chunks ("buckets"), cut each chunk into batches of similar
length, shuffle the batch order, and pad each batch only to its own longest text. Batches are a
pure function of (seed, epoch), so a resumed run replays exactly the same batches, and every
rank of a distributed run computes the same list and takes its own disjoint share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) bool, True = real token
    labels: torch.Tensor | None  # (B,) long
    index: torch.Tensor  # (B,) positions in the dataset, to restore input order

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            None if self.labels is None else self.labels.to(device, non_blocking=True),
            self.index,
        )

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad_batch(
    ids: Sequence[Sequence[int]],
    indices: Sequence[int],
    pad_id: int,
    labels: Sequence[int] | None = None,
    multiple_of: int = 8,
) -> Batch:
    """Pad the rows `indices` of `ids` to the batch's longest row (rounded up to `multiple_of`,
    which keeps the number of distinct shapes small for kernels and `torch.compile`)."""
    input_ids, mask = pad_rows(ids, indices, pad_id, multiple_of)
    y = None if labels is None else torch.tensor([labels[i] for i in indices], dtype=torch.long)
    index = torch.tensor(list(indices), dtype=torch.long)
    return Batch(torch.from_numpy(input_ids), torch.from_numpy(mask), y, index)


def pad_rows(
    ids: Sequence[Sequence[int]], indices: Sequence[int], pad_id: int, multiple_of: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """`pad_batch` without the tensors: (input_ids int64, mask bool) numpy arrays, (B, T). The
    predictor's hot path at batch 1 uses it directly (ONNX Runtime takes numpy)."""
    rows = [ids[i] for i in indices]
    # at least one column: a batch of texts that a user's tokenizer (no [UNK], no template)
    # read as no tokens at all was 0 wide, where [CLS] pooling has no position 0 to read
    longest = max([1, *map(len, rows)])
    T = -(-longest // multiple_of) * multiple_of if multiple_of > 1 else longest
    input_ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=bool)
    for j, r in enumerate(rows):
        input_ids[j, : len(r)] = r
        mask[j, : len(r)] = True
    return input_ids, mask


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Inference batching: all rows sorted by length, longest first (no shuffling)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    bucket_batches: int = 50,
    rank: int = 0,
    world_size: int = 1,
    accum: int = 1,
) -> list[list[int]]:
    """Training batches for one epoch: shuffled, length-bucketed, this rank's share.

    With `accum` > 1 (gradient accumulation) each optimizer step's rows are formed as one batch
    of `batch_size * accum` rows and cut into exactly `accum` consecutive micro-batches, so
    `--grad-accum 2 --batch-size 8` steps through the rows of `--batch-size 16` (two random
    batches of 8 were not); a short last step's rows are cut as evenly as they go, into no
    more micro-batches than it has rows for each data rank; the rest, first, are empty (the
    trainer skips them).

    Global batches of `batch_size * world_size` similar-length rows are formed exactly as one
    process would form them, and rank r takes rows r, r + world_size, ... of each. So a
    data-parallel step sees the same examples as a single-process step with the global batch,
    and every rank runs the same number of steps. (A final global batch with fewer rows than
    ranks repeats rows so that no rank is left without data.)
    """
    batches = global_batches(lengths, batch_size, seed, epoch, bucket_batches, world_size, accum)
    if world_size > 1:
        batches = [(b * world_size)[: max(len(b), world_size)][rank::world_size] for b in batches]
    return batches


def global_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    bucket_batches: int = 50,
    world_size: int = 1,
    accum: int = 1,
) -> list[list[int]]:
    """`bucketed_batches` before the ranks take their shares: every data rank's rows of each
    (micro-)batch together. The micro-batches are cut for `world_size` ranks (_micro_batches),
    so the trainer weighs each rank's loss by the rows the ranks were actually given."""
    mixed = seed * 1_000_003 + epoch
    if not -(2**63) <= mixed < 2**64:  # torch's seed range; the usual seeds never leave it
        mixed %= 2**64
    g = torch.Generator().manual_seed(mixed)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    size = batch_size * world_size * accum
    chunk = size * bucket_batches
    batches: list[list[int]] = []
    for s in range(0, len(perm), chunk):
        part = sorted(perm[s : s + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + size] for i in range(0, len(part), size))
    order = torch.randperm(len(batches), generator=g).tolist()
    batches = [batches[i] for i in order]
    if accum > 1:  # each step's rows, cut into `accum` micro-batches (empty ones first)
        batches = [part for b in batches for part in _micro_batches(b, accum, world_size)]
    return batches


def _micro_batches(rows: list[int], accum: int, world_size: int) -> list[list[int]]:
    """One step's global rows cut into `accum` micro-batches, the empty ones first. A
    non-empty one holds at least `world_size` rows where the step has them: one of fewer
    rows repeats rows on the ranks past its end, and the loss counts those repeats, so a
    5-row last step cut 1+1+1+2 over 2 ranks weighted 3 of its rows double (the single-
    process gradient is every row once); cut 0+0+2+3 it is that gradient."""
    k = min(accum, max(1, len(rows) // world_size))
    parts = reversed(np.array_split(np.asarray(rows, dtype=np.int64), k))
    return [[] for _ in range(accum - k)] + [[int(i) for i in p] for p in parts]
