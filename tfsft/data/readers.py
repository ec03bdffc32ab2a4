"""File formats: CSV/TSV/JSONL/JSON/CoNLL files and TFDS datasets, read as records.

Every reader yields ``(row_number, record)`` pairs where the row number is the 1-based
line in the file (record index for JSON lists and TFDS; a CoNLL sentence's first
line), so every later error can say where the bad value is. Structural problems
(bad bytes, ragged rows, broken JSON) are raised as `DataError` naming the file and
line, or yielded as a `RowProblem` for one row, which callers may skip.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfsft.errors import DataError

# A single CSV field may be a whole document; the stdlib default (128 KiB) is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "json",
    ".conll": "conll",
}


@dataclass
class RowProblem:
    row: int
    field: str | None
    message: str


def detect_format(path: str, fmt: str = "auto") -> str:
    """Returns csv | tsv | jsonl | json | conll | tfds for a data spec."""
    if path.startswith("tfds:"):
        return "tfds"
    if fmt != "auto":
        return fmt
    if Path(path).is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return "tsv"  # GLUE-style corpora (MRPC) ship tab-separated .txt files
    if suffix not in _EXTENSIONS:
        raise DataError(
            f"{path}: cannot tell the format from the extension '{suffix}'; "
            "set data.format to csv, tsv, jsonl or json (or conll, for "
            "token_classification)"
        )
    return _EXTENSIONS[suffix]


def read_records(
    spec: str,
    fmt: str = "auto",
    data_dir: str | None = None,
    tag_column: int = -1,
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """Yields ``(row_number, record)`` from a file path or ``tfds:NAME[:SPLIT]``.

    A row that cannot be parsed at all is yielded as a `RowProblem` instead of a
    record, so callers can either stop or skip it and read on. CoNLL sentences are
    records ``{"tokens": [...], "tags": [...], "_lines": [...]}`` with the tag from
    column ``tag_column`` and each token's line.
    """
    kind = detect_format(spec, fmt)
    if kind == "tfds":
        yield from _read_tfds(spec, data_dir)
        return
    text = _read_text(Path(spec))
    if kind in ("csv", "tsv"):
        yield from _read_delimited(spec, text, "\t" if kind == "tsv" else ",")
    elif kind == "jsonl":
        yield from _read_jsonl(spec, text)
    elif kind == "conll":
        yield from _read_conll(text, tag_column)
    else:
        yield from _read_json(spec, text)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError:  # a NUL character in the path
        raise DataError(f"{path}: cannot read: invalid path") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at "
            f"column {col}); re-save the file as UTF-8"
        ) from None
    if not text.strip():  # also a file holding only a byte-order mark
        raise DataError(f"{path}: the file is empty")
    return text


def _read_delimited(
    spec: str, text: str, delimiter: str
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    lines = text.splitlines(keepends=True)
    # TSV corpora (GLUE, MRPC) use bare quotes inside text, so only CSV honours quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{spec}: line 1: cannot parse the header: {e}") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"{spec}: line 1: duplicate column name '{dup}'")
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            hint = ' (an unescaped quote? double it: "")' if '"' in str(e) else ""
            if "unexpected end of data" in str(e):
                hint = " (a quote opened here is never closed?)"
            yield start, RowProblem(start, None, f"cannot parse the row ({e}){hint}")
            start = reader.line_num + 1
            continue
        row, start = start, reader.line_num + 1
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # blank line
        if len(values) != len(header):
            hint = " (an unescaped quote?)" if '"' in "".join(values) else ""
            message = f"expected {len(header)} fields, found {len(values)}{hint}"
            yield row, RowProblem(row, None, message)
            continue
        yield row, dict(zip(header, values, strict=True))


def _read_jsonl(
    spec: str, text: str
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            message = f"invalid JSON: {e.msg} at column {e.colno}"
            yield number, RowProblem(number, None, message)
            continue
        except (ValueError, RecursionError) as e:
            yield number, RowProblem(number, None, f"invalid JSON: {_json_limit(e)}")
            continue
        if not isinstance(record, dict):
            record = RowProblem(number, None, "expected a JSON object per line")
        yield number, record


def _read_json(
    spec: str, text: str
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{spec}: line {e.lineno}: invalid JSON: {e.msg}") from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"{spec}: invalid JSON: {_json_limit(e)}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # the {"data": [...]} wrapper some exporters write
    if not isinstance(data, list):
        found = {dict: "an object", str: "a string", type(None): "null"}.get(
            type(data), "a number" if not isinstance(data, bool) else "a boolean"
        )
        raise DataError(f"{spec}: expected a JSON list of objects, found {found}")
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            record = RowProblem(number, None, "expected a JSON object")
        yield number, record


def _read_conll(
    text: str, tag_column: int
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """Sentences of ``TOKEN ... TAG`` lines, separated by blank lines.

    ``-DOCSTART-`` lines are skipped. A line with too few columns makes its whole
    sentence a problem, reported at that line.
    """
    # The token is column 0 and the tag another one, so a line needs both.
    need = tag_column + 1 if tag_column > 0 else 1 - tag_column
    sentence: dict[str, list[Any]] = {"tokens": [], "tags": [], "_lines": []}
    problem: RowProblem | None = None

    def finish() -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
        if problem is not None:
            yield problem.row, problem
        elif sentence["tokens"]:
            yield sentence["_lines"][0], dict(sentence)

    for number, line in enumerate(text.splitlines(), start=1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            yield from finish()
            sentence = {"tokens": [], "tags": [], "_lines": []}
            problem = None
            continue
        if len(columns) < need:
            problem = problem or RowProblem(
                number,
                "tags",
                f"expected at least {need} columns (the token first, the tag in "
                f"column {tag_column} of data.conll_tag_column), found "
                f"{len(columns)}",
            )
            continue
        sentence["tokens"].append(columns[0])
        sentence["tags"].append(columns[tag_column])
        sentence["_lines"].append(number)
    yield from finish()


def _json_limit(e: Exception) -> str:
    # json.loads stops on Python's limits, not on a syntax error, for these two.
    if isinstance(e, RecursionError):
        return "arrays or objects nested too deeply"
    return "a number has too many digits (more than 4300)"


def _read_tfds(
    spec: str, data_dir: str | None
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    _, name, split = [*spec.split(":"), ""][:3]
    import tensorflow_datasets as tfds  # imported lazily: heavy and rarely used

    try:
        ds = tfds.load(name, split=split or "train", data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises many types for "not prepared" / bad names
        raise DataError(
            f"{spec}: cannot load TFDS dataset '{name}' split '{split}' from "
            f"data_dir={data_dir!r}: {e}. Prepare it once with network access "
            "(tfds build) and set data.tfds_data_dir"
        ) from None
    for number, example in enumerate(tfds.as_numpy(ds), start=1):
        yield number, {k: _from_numpy(v) for k, v in example.items()}


def _from_numpy(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return [_from_numpy(v) for v in value.tolist()]
    return value
