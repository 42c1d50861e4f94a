"""The in-memory text dataset every loader returns, and the error every loader raises."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_INT = re.compile(r"-?[0-9]+")


class DataError(ValueError):
    """Bad input data; the message names the file and line/row/field."""


@dataclass
class TextDataset:
    """Texts with optional string labels, plus enough provenance to point a user at a bad row.

    `skipped` and `notes` describe how the source was read, so they are kept by `subset`:
    a train split still owes the user the news that rows were dropped while loading.
    """

    texts: list[str]
    labels: list[str] | None  # ints in the source become str(x); None = unlabelled
    source: str  # human-readable origin, e.g. "data/train.csv" or "bbc@train"
    origins: list[str] | None = None  # per-row location, e.g. "data/train.csv:17"
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped
    notes: list[str] = field(default_factory=list)  # other things a user should be told

    def __post_init__(self) -> None:
        # Parallel lists that drift apart would attach labels to the wrong texts; fail early.
        n = len(self.texts)
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"{self.source}: {n} texts but {len(self.labels)} labels")
        if self.origins is not None and len(self.origins) != n:
            raise ValueError(f"{self.source}: {n} texts but {len(self.origins)} origins")

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        """Where row `i` came from, for error messages."""
        if self.origins is not None:
            return self.origins[i]
        return f"{self.source} row {i}"

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """The rows at `indices`, in that order, still pointing at their original locations."""
        idx = list(indices)
        # Without origins, where(i) would report the row's index in the subset, not in the
        # source; pin the original positions down before they are lost.
        origins = (
            self.origins if self.origins is not None else [self.where(i) for i in range(len(self))]
        )
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            source=self.source,
            origins=[origins[i] for i in idx],
            skipped=dict(self.skipped),
            notes=list(self.notes),
        )

    def label_set(self) -> list[str]:
        """Sorted unique labels ([] when unlabelled); integers in numeric order (2 before 10)."""
        if self.labels is None:
            return []
        found = set(self.labels)
        if all(_INT.fullmatch(x) for x in found):
            return sorted(found, key=lambda x: (int(x), x))
        return sorted(found)

    def report(self) -> str:
        """One-line summary: rows, classes, skipped rows by reason, notes."""
        parts = [f"{self.source}: {len(self):,} rows"]
        parts[0] += (
            f", {len(self.label_set())} classes" if self.labels is not None else ", unlabelled"
        )
        if self.skipped:
            total = sum(self.skipped.values())
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            parts.append(f"skipped {total} ({reasons})")
        parts.extend(self.notes)
        return "; ".join(parts)


def check_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list, refusing a bare string (which would be split into characters),
    non-strings, empty or blank texts (the model would answer for its special tokens alone, a
    confident label for nothing) and lone surrogates (not Unicode), each named by its position."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string: predict([text])")
    # A dict or a DataFrame iterates over its keys: the column names would be classified.
    if isinstance(texts, Mapping) or hasattr(texts, "columns"):
        raise TypeError(
            f"pass a list of texts, not a {type(texts).__name__} (which iterates over its keys): "
            "e.g. predict(df['text'])"
        )
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        if is_blank(t):
            raise DataError(
                f"text {i} is empty or only whitespace or invisible characters: there is "
                "nothing to classify"
            )
        if (at := surrogate_at(t)) is not None:
            # A lone surrogate (e.g. from decoding with errors="surrogateescape") is not
            # text; the tokenizer would fail on it with an unrelated TypeError.
            raise ValueError(
                f"text {i} has a lone surrogate {t[at]!r} at position {at}: "
                "not valid Unicode (decode the input as UTF-8 or with errors='replace')"
            )
    return texts


def is_blank(text: str) -> bool:
    """True for a text with nothing to read: empty, whitespace, or only invisible format and
    control characters (a zero-width space, a BOM, NUL). The model would answer for its special
    tokens alone (a WordPiece tokenizer drops such characters), or for bytes no reader sees (a
    byte-level BPE keeps them): either way a confident label for nothing."""
    # all() stops at the first visible character: one or two look-ups for a real text
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in text)


_INVISIBLE = frozenset({"Cc", "Cf"})


def surrogate_at(text: str) -> int | None:
    """The position of the first lone surrogate in `text` (not valid Unicode), else None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None
