import json

import numpy as np
import pytest
from conftest import SHARED, write

from tfsft.config import DataConfig
from tfsft.data.sources import describe_skipped, load_examples
from tfsft.errors import DataError
from tfsft.tasks import get_task


def build_label_spec(task, examples, cfg):
    return get_task(task).build_labels(examples, cfg)


def encode_labels(spec, examples, cfg):
    return get_task(spec.task).encode_targets(spec, examples, cfg)


def cfg(**kw) -> DataConfig:
    return DataConfig(train="unused", **kw)


def test_csv_with_quotes_commas_and_newlines(tmp_path):
    path = write(
        tmp_path / "d.csv",
        'text,label\n"Hello, world",pos\n"He said ""hi""\nthen left",neg\nplain,pos\n',
    )
    ex = load_examples(str(path), cfg(), "train")
    assert ex.texts == ["Hello, world", 'He said "hi" then left', "plain"]
    assert ex.labels == ["pos", "neg", "pos"]
    assert ex.rows == [2, 3, 5]  # the quoted newline makes row 3 span lines 3-4


def test_tsv_with_bom_crlf_and_bare_quotes(tmp_path):
    data = '\ufeffQuality\ta\tb\r\n1\tHe said "yes\tok\r\n0\tx\ty\r\n'
    path = write(tmp_path / "d.txt", data.encode())
    ex = load_examples(
        str(path),
        cfg(text_column="a", text_pair_column="b", label_column="Quality"),
        "t",
    )
    assert ex.texts == ['He said "yes', "x"] and ex.pairs == ["ok", "y"]
    assert ex.labels == ["1", "0"]


def test_jsonl_and_json_readers(tmp_path):
    rows = [{"text": "a b", "label": 1}, {"text": "c", "label": 0}]
    jl = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    js = write(tmp_path / "d.json", json.dumps(rows))
    for path, kind in ((jl, "line"), (js, "record")):
        ex = load_examples(str(path), cfg(), "train")
        assert ex.texts == ["a b", "c"] and ex.labels == [1, 0]
        assert ex.row_kind == kind and ex.rows == [1, 2]


def test_cleaning_normalises_whitespace_and_unicode(tmp_path):
    path = write(
        tmp_path / "d.jsonl",
        json.dumps({"text": "  Cafe\u0301\t\u200bok  ", "label": "a"}),
    )
    assert load_examples(str(path), cfg(), "t").texts == ["Café ok"]


def test_tfds_reader_works_offline_on_a_prepared_dataset(tmp_path):
    from tfds_tiny import TinyReviews

    TinyReviews(data_dir=str(tmp_path)).download_and_prepare()
    c = cfg(text_column="sentence", tfds_data_dir=str(tmp_path))
    ex = load_examples("tfds:tiny_reviews", c, "validation")
    assert ex.source == "tfds:tiny_reviews:validation"
    assert sorted(ex.texts) == ["review number 0", "review number 1"]
    assert len(load_examples("tfds:tiny_reviews:train", c, "x")) == 6
    with pytest.raises(DataError, match="cannot load TFDS dataset 'not_there'"):
        load_examples("tfds:not_there", c, "train")


# ---- bad inputs: every message names the file, the line and the field ----


def test_missing_column_lists_available(tmp_path):
    path = write(tmp_path / "d.csv", "sentence,label\nhi,pos\n")
    with pytest.raises(DataError) as e:
        load_examples(str(path), cfg(), "t")
    assert str(e.value) == (
        f"{path}: line 1 (header): field 'text': no such column; available: sentence, label"
    )


def test_missing_key_in_later_jsonl_row(tmp_path):
    path = write(
        tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 1}\n'
    )
    with pytest.raises(
        DataError, match=rf"{path}: line 2: field 'text': missing value"
    ):
        load_examples(str(path), cfg(), "t")


def test_empty_text_after_cleaning(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nfine,pos\n \u200b ,neg\n")
    with pytest.raises(DataError, match=rf"{path}: line 3: field 'text': empty text"):
        load_examples(str(path), cfg(), "t")


def test_empty_label(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nfine,\n")
    with pytest.raises(DataError, match=rf"{path}: line 2: field 'label': empty label"):
        load_examples(str(path), cfg(), "t")


def test_ragged_row(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,pos\nb,neg,extra\n")
    with pytest.raises(DataError, match=rf"{path}: line 3: expected 2 fields, found 3"):
        load_examples(str(path), cfg(), "t")


def test_unescaped_quote_is_reported(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\na,pos\n"broken "quote,neg\n')
    with pytest.raises(DataError, match=rf"{path}: line 3: "):
        load_examples(str(path), cfg(), "t")


def test_unparsable_jsonl_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b",\n')
    with pytest.raises(DataError, match=rf"{path}: line 2: invalid JSON"):
        load_examples(str(path), cfg(), "t")


def test_non_utf8_bytes_give_line_and_column(tmp_path):
    path = write(tmp_path / "d.csv", b"text,label\nok,pos\nbad \xff byte,neg\n")
    with pytest.raises(
        DataError, match=rf"{path}: line 3: not valid UTF-8 \(byte 0xff at column 5\)"
    ):
        load_examples(str(path), cfg(), "t")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty"),
        ("  \n\n", "the file is empty"),
        ("text,label\n", "no data rows"),
    ],
)
def test_empty_file_and_header_only(tmp_path, content, expected):
    path = write(tmp_path / "d.csv", content)
    with pytest.raises(DataError, match=rf"{path}: {expected}"):
        load_examples(str(path), cfg(), "t")


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_examples(str(tmp_path / "nope.csv"), cfg(), "t")
    path = write(tmp_path / "d.xlsx", "x")
    with pytest.raises(DataError, match="set data.format"):
        load_examples(str(path), cfg(), "t")


def test_skip_invalid_rows_drops_and_reports(tmp_path):
    lines = ["text,label", "a,pos", ",neg", "b,pos,x", "c,neg", "d,"]
    path = write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match=r"line 3: field 'text': empty text .*\(2 more invalid rows\)"
    ):
        load_examples(str(path), cfg(), "t")
    ex = load_examples(str(path), cfg(skip_invalid_rows=True), "t")
    assert ex.texts == ["a", "c"]
    assert [p.row for p in ex.skipped] == [3, 4, 6]
    assert describe_skipped(ex).startswith(
        f"{path}: skipped 3 invalid rows (lines 3, 4, 6)"
    )


# ---- labels ----


def _examples(tmp_path, rows, name="d.jsonl"):
    path = write(tmp_path / name, "\n".join(json.dumps(r) for r in rows))
    return load_examples(str(path), cfg(), "t")


def test_label_vocabulary_and_unknown_validation_labels(tmp_path):
    train = _examples(
        tmp_path, [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}]
    )
    spec = build_label_spec("classification", train, cfg())
    assert spec.names == ("neg", "pos")
    assert encode_labels(spec, train, cfg()).tolist() == [1, 0]
    val = _examples(
        tmp_path,
        [
            {"text": "a", "label": "pos"},
            {"text": "b", "label": "meh"},
            {"text": "c", "label": "??"},
        ],
        "v.jsonl",
    )
    with pytest.raises(DataError) as e:
        encode_labels(spec, val, cfg())
    assert (
        "v.jsonl: field 'label': labels not seen in training: 'meh' (line 2), '??' (line 3)"
        in str(e.value)
    )


def test_numeric_labels_sort_naturally(tmp_path):
    train = _examples(
        tmp_path,
        [{"text": t, "label": str(v)} for t, v in zip("abc", [10, 2, 1], strict=True)],
    )
    assert build_label_spec("classification", train, cfg()).names == ("1", "2", "10")


def test_mixed_label_types_are_rejected(tmp_path):
    train = _examples(
        tmp_path, [{"text": "a", "label": 1}, {"text": "b", "label": "1"}]
    )
    with pytest.raises(
        DataError,
        match=r"line 2: field 'label': labels of mixed types \(int at line 1, str here\)",
    ):
        build_label_spec("classification", train, cfg())


def test_single_class_is_rejected(tmp_path):
    train = _examples(
        tmp_path, [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}]
    )
    with pytest.raises(DataError, match="only one class"):
        build_label_spec("classification", train, cfg())


def test_multilabel_from_lists_and_delimited_strings(tmp_path):
    train = _examples(
        tmp_path,
        [
            {"text": "a", "label": ["x", "y"]},
            {"text": "b", "label": "z; x"},
            {"text": "c", "label": "y"},
        ],
    )
    spec = build_label_spec("multilabel", train, cfg())
    assert spec.names == ("x", "y", "z")
    np.testing.assert_array_equal(
        encode_labels(spec, train, cfg()), [[1, 1, 0], [1, 0, 1], [0, 1, 0]]
    )


def test_regression_labels_must_be_numbers(tmp_path):
    ok = _examples(tmp_path, [{"text": "a", "label": "2.5"}, {"text": "b", "label": 4}])
    spec = build_label_spec("regression", ok, cfg())
    assert encode_labels(spec, ok, cfg()).tolist() == [[2.5], [4.0]]
    bad = _examples(
        tmp_path, [{"text": "a", "label": 1}, {"text": "b", "label": "lots"}], "b.jsonl"
    )
    with pytest.raises(
        DataError, match=r"b.jsonl: line 2: field 'label': expected a finite number"
    ):
        encode_labels(spec, bad, cfg())


@pytest.mark.realdata
def test_real_mrpc_pairs_read_cleanly():
    c = cfg(
        text_column="#1 String", text_pair_column="#2 String", label_column="Quality"
    )
    ex = load_examples(str(SHARED / "mrpc" / "msr_paraphrase_train.txt"), c, "train")
    assert len(ex) == 4076 and len(ex.pairs) == 4076
    assert set(ex.labels) == {"0", "1"}
    assert not ex.skipped
