"""Examples of one split: records read (`tfsft.data.readers`) and validated row by
row against the configured columns.

Rows with a problem are an error naming the file, row and field, or, with
``data.skip_invalid_rows``, dropped and listed for reporting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tfsft.config import DataConfig
from tfsft.data.clean import clean_text
from tfsft.data.readers import RowProblem, detect_format, read_records
from tfsft.errors import DataError

_SHOWN_ROWS = 5


@dataclass
class Examples:
    """Validated examples of one split, with where each came from.

    ``texts`` holds a string per example, or a list of words for token-level
    tasks; ``labels`` the raw label (a tag list for token-level tasks). ``meta``
    holds other per-example lists a task keeps (e.g. character offsets).
    """

    source: str
    texts: list[Any]
    labels: list[Any]
    rows: list[int]
    pairs: list[str] | None = None
    row_kind: str = "line"
    skipped: list[RowProblem] = field(default_factory=list)
    meta: dict[str, list[Any]] = field(default_factory=dict)

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
            meta={k: [v[i] for i in indices] for k, v in self.meta.items()},
        )

    def locate(self, i: int) -> str:
        return f"{self.source}: {self.row_kind} {self.rows[i]}"


@dataclass
class Row:
    """One accepted record: its input, its label, and a task's extra values."""

    text: Any
    label: Any = None
    pair: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_examples(
    spec: str, cfg: DataConfig, split: str, require_label: bool = True
) -> Examples:
    """Reads one split of texts (and text pairs) and labels, checked row by row.

    With ``require_label=False`` (prediction inputs) the label column may be absent.
    """
    columns = [c for c in (cfg.text_column, cfg.text_pair_column) if c]
    columns += [cfg.label_column] if require_label else []

    def accept(row: int, record: dict[str, Any]) -> Row | RowProblem:
        problem = _check_record(record, cfg, row, require_label)
        if problem:
            return problem
        pair = cfg.text_pair_column
        return Row(
            _text(record[cfg.text_column], cfg.clean_text),
            record.get(cfg.label_column),
            _text(record[pair], cfg.clean_text) if pair else None,
        )

    paired = cfg.text_pair_column is not None
    return read_examples(spec, cfg, split, columns, accept, paired=paired)


def read_examples(
    spec: str,
    cfg: DataConfig,
    split: str,
    columns: list[str],
    accept: Callable[[int, dict[str, Any]], Row | RowProblem],
    fmt: str | None = None,
    paired: bool = False,
) -> Examples:
    """Reads one split, keeping the records ``accept`` turns into a `Row`.

    Args:
        spec: a file path or ``tfds:NAME[:SPLIT]``.
        cfg: ``data`` settings (format, skip_invalid_rows, TFDS dir, CoNLL column).
        split: the split name (the TFDS split when ``spec`` names none).
        columns: fields every record must have; one absent from the first record
            is a schema error that lists the fields there are.
        accept: checks a record; returns the `Row` to keep or the `RowProblem`.
        fmt: the format to read (default: ``cfg.format``).
        paired: whether rows carry a text pair.

    Rows with a problem are an error unless ``cfg.skip_invalid_rows`` is set, in which
    case they are dropped and listed in ``Examples.skipped`` for reporting.
    """
    if spec.startswith("tfds:") and spec.count(":") == 1:
        spec = f"{spec}:{split}"
    fmt = fmt or cfg.format
    kind = detect_format(spec, fmt)
    out = Examples(
        source=spec,
        texts=[],
        labels=[],
        rows=[],
        pairs=[] if paired else None,
        row_kind="record" if kind in ("json", "tfds") else "line",
    )
    problems: list[RowProblem] = []
    seen_any = False
    records = read_records(spec, fmt, cfg.tfds_data_dir, cfg.conll_tag_column)
    for row, record in records:
        seen_any = True
        if isinstance(record, RowProblem):
            problems.append(record)
            continue
        missing = [c for c in columns if c not in record]
        if missing and not out.texts and not problems:
            _raise_schema(spec, kind, out.row_kind, row, record, missing[0])
        accepted = accept(row, record)
        if isinstance(accepted, RowProblem):
            problems.append(accepted)
            continue
        out.texts.append(accepted.text)
        if out.pairs is not None:
            out.pairs.append(accepted.pair)
        out.labels.append(accepted.label)
        out.rows.append(row)
        for key, value in accepted.meta.items():
            out.meta.setdefault(key, []).append(value)
    _check_problems(out, problems, seen_any, cfg.skip_invalid_rows)
    return out


def _raise_schema(
    spec: str, kind: str, row_kind: str, row: int, record: dict, missing: str
) -> None:
    # A column absent from the very first record is a schema problem, not a bad
    # row: say which columns do exist.
    at = "line 1 (header)" if kind in ("csv", "tsv") else f"{row_kind} {row}"
    only = next(iter(record), "") if len(record) == 1 else ""
    hint = (
        "; is data.format (the delimiter) right?"
        if kind in ("csv", "tsv") and any(d in only for d in ",;\t|")
        else ""
    )
    raise DataError(
        f"{spec}: {at}: field '{missing}': no such column; available: "
        f"{', '.join(map(str, record)) or '(none)'}{hint}"
    )


def _check_problems(
    out: Examples, problems: list[RowProblem], seen_any: bool, skip: bool
) -> None:
    spec = out.source
    if problems and not skip:
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


def other_file(data: DataConfig) -> DataConfig:
    """``data`` for a file other than the configured ones (``--input``, ``--data``):
    its format comes from its own extension, not the training files' ``format``."""
    return data.model_copy(update={"format": "auto"})
