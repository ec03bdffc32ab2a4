"""Label spaces: the names a task's outputs stand for, saved with every run.

The vocabulary is built from the training split only (by the task, see
`tfsft.tasks`) and stored in the run, so that evaluation, prediction and export all
map ids to the same names. The helpers here are shared by the tasks whose labels are
names (classification, multilabel, tagging).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfsft.config import DataConfig
from tfsft.data.sources import Examples
from tfsft.errors import DataError


@dataclass(frozen=True)
class LabelSpec:
    """A task's label space: class (or tag) names in id order.

    Regression has no names and one output. ``scheme`` is the tagging scheme of
    token-classification tags (IOB2, BIOES), None for other tasks.
    """

    task: str
    names: tuple[str, ...] = ()
    scheme: str | None = None

    @property
    def num_outputs(self) -> int:
        return len(self.names) or 1

    def save(self, path: Path) -> None:
        data = {"task": self.task, "names": list(self.names)}
        if self.scheme:
            data["scheme"] = self.scheme
        path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> LabelSpec:
        data = json.loads(path.read_text())
        return cls(data["task"], tuple(data["names"]), data.get("scheme"))


def label_names(
    train: Examples,
    cfg: DataConfig,
    row_labels: Callable[[int], set[str]],
    field: str | None = None,
) -> list[str]:
    """The names a training split uses, in ``cfg.labels`` order or sorted.

    Args:
        train: the training examples.
        cfg: ``data`` settings (``labels``, ``label_column``).
        row_labels: the label names of example ``i``.
        field: the field to name in errors (default ``cfg.label_column``).

    Raises:
        DataError: naming the first row with a label missing from ``data.labels``.
    """
    per_row = [row_labels(i) for i in range(len(train))]
    seen = set().union(*per_row)
    if cfg.labels is None:
        return sorted(seen, key=natural_key)
    extra = sorted(seen - set(cfg.labels))
    if extra:
        first = next(i for i, names in enumerate(per_row) if names & set(extra))
        raise DataError(
            f"{train.locate(first)}: field '{field or cfg.label_column}': labels not "
            f"listed in data.labels: {show_names(extra)}; add them to data.labels "
            "or fix the data"
        )
    return list(cfg.labels)


def check_one_type(examples: Examples, column: str) -> None:
    """Raises when a column mixes value types (JSON can mix 1 and "1"; they would
    silently become two different classes)."""
    first_of: dict[str, int] = {}
    for i, raw in enumerate(examples.labels):
        first_of.setdefault(type(raw).__name__, i)
        if len(first_of) > 1:
            (a, ia), (b, ib) = list(first_of.items())[:2]
            raise DataError(
                f"{examples.locate(ib)}: field '{column}': labels of mixed types "
                f"({a} at {examples.row_kind} {examples.rows[ia]}, {b} here); "
                "use one type for every label"
            )


def raise_unknown(unknown: dict[str, int], examples: Examples, column: str) -> None:
    """Raises for labels the training split never had (name -> first row)."""
    if unknown:
        listed = ", ".join(
            f"{name!r} ({examples.row_kind} {row})" for name, row in unknown.items()
        )
        raise DataError(
            f"{examples.source}: field '{column}': labels not seen in "
            f"training: {listed}; fix them or add training examples"
        )


def natural_key(name: str) -> tuple[int, float, str]:
    """Sort key: "2" < "10" for numeric class ids; names after numbers, A-Z."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def show_names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
