"""Label vocabularies and label encoding for each task.

The vocabulary is built from the training split only and stored in the run, so that
evaluation, prediction and export all map ids to the same names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfsft.config import DataConfig
from tfsft.data.sources import Examples
from tfsft.errors import DataError


@dataclass(frozen=True)
class LabelSpec:
    """The task's label space: class names in id order (empty for regression)."""

    task: str
    names: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "regression" else len(self.names)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"task": self.task, "names": list(self.names)}))

    @classmethod
    def load(cls, path: Path) -> LabelSpec:
        data = json.loads(path.read_text())
        return cls(task=data["task"], names=tuple(data["names"]))


def build_label_spec(task: str, train: Examples, cfg: DataConfig) -> LabelSpec:
    """Collects the label names of the training split (or takes ``cfg.labels``)."""
    if task == "regression":
        return LabelSpec(task)
    if task == "classification":
        _check_one_type(train, cfg.label_column)
        seen = {str(v) for v in train.labels}
    else:
        seen = {n for i in range(len(train)) for n in _label_set(train, i, cfg)}
    if cfg.labels is not None:
        extra = sorted(seen - set(cfg.labels))
        if extra:
            first = next(
                i
                for i in range(len(train))
                if (
                    {str(train.labels[i])}
                    if task == "classification"
                    else _label_set(train, i, cfg)
                )
                & set(extra)
            )
            raise DataError(
                f"{train.locate(first)}: field '{cfg.label_column}': labels not "
                f"listed in data.labels: {_show(extra)}; add them to data.labels "
                "or fix the data"
            )
        names = list(cfg.labels)
    else:
        names = sorted(seen, key=_natural_key)
    if task == "classification" and len(names) < 2:
        raise DataError(
            f"{train.source}: field '{cfg.label_column}': found only one class "
            f"({_show(names)}); classification needs at least two"
        )
    return LabelSpec(task, tuple(names))


def encode_labels(spec: LabelSpec, examples: Examples, cfg: DataConfig) -> np.ndarray:
    """Encodes labels: int32 ids [N], float32 multi-hot [N, K] or float32 [N, 1].

    Raises:
        DataError: listing labels unknown to the training split, with the first row
            of each, or naming the row of a value that is not a number.
    """
    if spec.task == "regression":
        return np.array(
            [[_to_float(examples, i, cfg.label_column)] for i in range(len(examples))],
            np.float32,
        )
    index = {name: i for i, name in enumerate(spec.names)}
    unknown: dict[str, int] = {}
    if spec.task == "classification":
        _check_one_type(examples, cfg.label_column)
        ids = np.zeros(len(examples), np.int32)
        for i, raw in enumerate(examples.labels):
            name = str(raw)
            if name in index:
                ids[i] = index[name]
            else:
                unknown.setdefault(name, examples.rows[i])
        _raise_unknown(unknown, examples, cfg)
        return ids
    hot = np.zeros((len(examples), len(spec.names)), np.float32)
    for i in range(len(examples)):
        for name in _label_set(examples, i, cfg):
            if name in index:
                hot[i, index[name]] = 1.0
            else:
                unknown.setdefault(name, examples.rows[i])
    _raise_unknown(unknown, examples, cfg)
    return hot


def _label_set(examples: Examples, i: int, cfg: DataConfig) -> set[str]:
    raw = examples.labels[i]
    if isinstance(raw, list):
        names = [str(v).strip() for v in raw]
    else:
        names = [n.strip() for n in str(raw).split(cfg.label_delimiter)]
    names = [n for n in names if n]
    if not names:
        raise DataError(
            f"{examples.locate(i)}: field '{cfg.label_column}': no labels; a "
            "multilabel row needs at least one"
        )
    return set(names)


def _to_float(examples: Examples, i: int, column: str) -> float:
    raw = examples.labels[i]
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value):
        raise DataError(
            f"{examples.locate(i)}: field '{column}': expected a finite number for "
            f"regression, got {raw!r}"
        )
    return value


def _check_one_type(examples: Examples, column: str) -> None:
    # JSON can mix 1 and "1"; they would silently become two different classes.
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


def _raise_unknown(
    unknown: dict[str, int], examples: Examples, cfg: DataConfig
) -> None:
    if unknown:
        listed = ", ".join(
            f"{name!r} ({examples.row_kind} {row})" for name, row in unknown.items()
        )
        raise DataError(
            f"{examples.source}: field '{cfg.label_column}': labels not seen in "
            f"training: {listed}; fix them or add training examples"
        )


def _natural_key(name: str) -> tuple[int, float, str]:
    # "2" < "10" for numeric class ids; names sort alphabetically after numbers.
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _show(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
