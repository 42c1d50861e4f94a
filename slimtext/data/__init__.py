"""Labelled text in, batches out: sources, splits and length-bucketed batching."""

from .batching import Batch, bucketed_batches, length_sorted_batches, pad_batch
from .dataset import DataError, TextDataset
from .sources import check_labels_seen, load_data
from .split import stratified_split

__all__ = [
    "Batch",
    "DataError",
    "TextDataset",
    "bucketed_batches",
    "check_labels_seen",
    "length_sorted_batches",
    "load_data",
    "pad_batch",
    "stratified_split",
]
