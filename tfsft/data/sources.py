"""Readers for CSV/TSV/JSONL/JSON files and TFDS datasets, with row-level validation.

Every reader yields ``(row_number, record)`` pairs where the row number is the 1-based
line in the file (record index for JSON lists and TFDS), so every later error can say
where the bad value is. Structural problems (bad bytes, ragged rows, broken JSON) are
raised as `DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfsft.config import DataConfig
from tfsft.data.clean import clean_text
from tfsft.errors import DataError

# A single CSV field may be a whole document; the stdlib default (128 KiB) is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}
_SHOWN_ROWS = 5


@dataclass
class RowProblem:
    row: int
    field: str | None
    message: str


@dataclass
class Examples:
    """Validated examples of one split, with where each came from."""

    source: str
    texts: list[str]
    labels: list[Any]
    rows: list[int]
    pairs: list[str] | None = None
    row_kind: str = "line"
    skipped: list[RowProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: list[int]) -> Examples:
        """A new `Examples` holding only the given positions, in that order."""
        return Examples(
            source=self.source,
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            rows=[self.rows[i] for i in indices],
            pairs=None if self.pairs is None else [self.pairs[i] for i in indices],
            row_kind=self.row_kind,
        )

    def locate(self, i: int) -> str:
        return f"{self.source}: {self.row_kind} {self.rows[i]}"


def detect_format(path: str, fmt: str = "auto") -> str:
    """Returns csv | tsv | jsonl | json | tfds for a data spec."""
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
            "set data.format to csv, tsv, jsonl or json"
        )
    return _EXTENSIONS[suffix]


def read_records(
    spec: str, fmt: str = "auto", data_dir: str | None = None
) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """Yields ``(row_number, record)`` from a file path or ``tfds:NAME[:SPLIT]``.

    A row that cannot be parsed at all is yielded as a `RowProblem` instead of a
    record, so callers can either stop or skip it and read on.
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
    else:
        yield from _read_json(spec, text)


def load_examples(
    spec: str, cfg: DataConfig, split: str, require_label: bool = True
) -> Examples:
    """Reads one split and checks the configured columns row by row.

    With ``require_label=False`` (prediction inputs) the label column may be absent.

    Rows with a problem are an error unless ``cfg.skip_invalid_rows`` is set, in which
    case they are dropped and listed in ``Examples.skipped`` for reporting.
    """
    if spec.startswith("tfds:") and spec.count(":") == 1:
        spec = f"{spec}:{split}"
    kind = detect_format(spec, cfg.format)
    out = Examples(
        source=spec,
        texts=[],
        labels=[],
        rows=[],
        pairs=[] if cfg.text_pair_column else None,
        row_kind="record" if kind in ("json", "tfds") else "line",
    )
    columns = [cfg.text_column, cfg.text_pair_column]
    columns = [c for c in columns if c] + ([cfg.label_column] if require_label else [])
    problems: list[RowProblem] = []
    seen_any = False
    for row, record in read_records(spec, cfg.format, cfg.tfds_data_dir):
        seen_any = True
        if isinstance(record, RowProblem):
            problems.append(record)
            continue
        missing = [c for c in columns if c not in record]
        if missing and not out.texts and not problems:
            # A column absent from the very first record is a schema problem,
            # not a bad row: say which columns do exist.
            at = (
                "line 1 (header)" if kind in ("csv", "tsv") else f"{out.row_kind} {row}"
            )
            only = next(iter(record), "") if len(record) == 1 else ""
            hint = (
                "; is data.format (the delimiter) right?"
                if kind in ("csv", "tsv") and any(d in only for d in ",;\t|")
                else ""
            )
            raise DataError(
                f"{spec}: {at}: field '{missing[0]}': no such "
                f"column; available: {', '.join(map(str, record)) or '(none)'}{hint}"
            )
        problem = _check_record(record, cfg, row, require_label)
        if problem:
            problems.append(problem)
            continue
        text = _text(record[cfg.text_column], cfg.clean_text)
        out.texts.append(text)
        if out.pairs is not None:
            out.pairs.append(_text(record[cfg.text_pair_column], cfg.clean_text))
        out.labels.append(record.get(cfg.label_column))
        out.rows.append(row)
    if problems and not cfg.skip_invalid_rows:
        first = problems[0]
        more = f" ({len(problems) - 1} more invalid rows)" if len(problems) > 1 else ""
        field_part = f": field '{first.field}'" if first.field else ""
        raise DataError(
            f"{spec}: {out.row_kind} {first.row}{field_part}: {first.message}{more}; "
            "fix the data or set data.skip_invalid_rows: true to drop such rows"
        )
    out.skipped = problems
    if not seen_any:
        raise DataError(
            f"{spec}: no data rows (the file is empty or has only a header)"
        )
    if not out.texts:
        first = problems[0]
        field_part = f": field '{first.field}'" if first.field else ""
        raise DataError(
            f"{spec}: every row was invalid ({len(problems)} skipped); first: "
            f"{out.row_kind} {first.row}{field_part}: {first.message}"
        )
    return out


def describe_skipped(examples: Examples) -> str | None:
    """One line summarising dropped rows, or None when nothing was dropped."""
    if not examples.skipped:
        return None
    shown = ", ".join(str(p.row) for p in examples.skipped[:_SHOWN_ROWS])
    more = ", ..." if len(examples.skipped) > _SHOWN_ROWS else ""
    return (
        f"{examples.source}: skipped {len(examples.skipped)} invalid rows "
        f"({examples.row_kind}s {shown}{more}); first: {examples.skipped[0].message}"
    )


def _text(value: Any, clean: bool) -> str:
    text = str(value)
    return clean_text(text) if clean else text


def _check_record(
    record: dict[str, Any], cfg: DataConfig, row: int, require_label: bool
) -> RowProblem | None:
    for name in (cfg.text_column, cfg.text_pair_column):
        if name is None:
            continue
        if name not in record:
            return RowProblem(row, name, "missing value")
        value = record[name]
        if not isinstance(value, str):
            return RowProblem(row, name, f"expected text, got {type(value).__name__}")
        if len(value) > cfg.max_text_chars:
            return RowProblem(
                row,
                name,
                f"text of {len(value):,} characters exceeds data.max_text_chars "
                f"({cfg.max_text_chars:,}); check the file's line endings and "
                "delimiter, or raise the limit",
            )
        if not _text(value, cfg.clean_text):
            return RowProblem(row, name, "empty text (after cleaning)")
    if not require_label:
        return None
    label = record.get(cfg.label_column)
    if cfg.label_column not in record:
        return RowProblem(row, cfg.label_column, "missing value")
    if label is None or (isinstance(label, str) and not label.strip()):
        return RowProblem(row, cfg.label_column, "empty label")
    return None


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
