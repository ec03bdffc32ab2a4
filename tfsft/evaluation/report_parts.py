"""Building blocks of report parts, read from the files a run dir holds.

Tasks use these in their `tfsft.tasks.base.Task.report_parts` (per_class.json,
PNGs), and `tfsft.evaluation.run_report` for what every task writes (errors.jsonl).
Light on purpose: no TensorFlow, no matplotlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfsft.evaluation import report_doc as doc

TEXT_CHARS = 160  # a longer cell is cut, so one long input cannot swamp the table


def per_class_table(path: Path, title: str, first_column: str) -> doc.Table | None:
    """scikit-learn's / seqeval's classification report (per_class.json) as a
    table: one row per class, then the averages; None when the file is absent."""
    report = read_json(path)
    if not isinstance(report, dict):
        return None
    rows = [
        (
            name,
            row.get("precision"),
            row.get("recall"),
            row.get("f1-score"),
            int(row.get("support", 0)),
        )
        for name, row in report.items()
        if isinstance(row, dict)  # skips the bare "accuracy" float
    ]
    columns = (first_column, "precision", "recall", "F1", "support")
    return doc.Table(title, columns, rows)


def figure(path: Path, title: str, alt: str) -> doc.Figure | None:
    """A figure for a PNG the run wrote; None when there is none."""
    return doc.Figure(title, path, alt) if path.is_file() else None


def error_table(path: Path, limit: int) -> doc.Table | None:
    """The first ``limit`` records of errors.jsonl (worst first) as a table."""
    if not path.is_file():
        return None
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if len(records) == limit:
                break
            if line.strip():
                records.append(json.loads(line))
    if not records:
        return doc.Table("Top errors", (), [("errors", "none")])
    columns = list(dict.fromkeys(k for r in records for k in r))
    rows = [tuple(cell(r.get(c)) for c in columns) for r in records]
    note = f"The first {len(records)} records of {path.name}, worst first."
    return doc.Table("Top errors", tuple(columns), rows, note)


def cell(value: Any) -> Any:
    """A record's value as a table cell: numbers stay numbers, the rest is text
    (dicts as ``k: v``, nested values as compact JSON), cut to TEXT_CHARS."""
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, dict) and all(
        isinstance(v, str | int | float) for v in value.values()
    ):
        text = ", ".join(f"{k}: {doc.format_cell(v)}" for k, v in value.items())
    elif isinstance(value, list) and all(
        isinstance(v, str | int | float) for v in value
    ):
        text = ", ".join(doc.format_cell(v) for v in value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
