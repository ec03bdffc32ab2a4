"""Seeded subsetting and hold-out splits."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from tfsft.config import ExperimentConfig
from tfsft.data.sources import Examples
from tfsft.errors import DataError


def take_shuffled(examples: Examples, n: int | None, seed: int) -> Examples:
    """The first ``n`` examples after a seeded shuffle (all of them if n is None).

    Shuffling first matters: many corpora are sorted by label or source, so a plain
    head would be one-sided.
    """
    if n is None or n >= len(examples):
        return examples
    order = np.random.default_rng(seed).permutation(len(examples))[:n]
    return examples.select(sorted(order.tolist()))


def holdout_split(
    examples: Examples, fraction: float, seed: int, keys: list[str] | None
) -> tuple[Examples, Examples]:
    """Splits off ``fraction`` of the examples as validation.

    Stratifies on ``keys`` (one per example, e.g. the class) when given, every key
    has at least two examples and both sides can hold every key; otherwise the split
    is a seeded random one.
    """
    n_val = round(len(examples) * fraction)
    indices = np.arange(len(examples))
    stratify = keys is not None
    counts = Counter(keys or [])
    if n_val < 1 or n_val >= len(examples):
        raise DataError(
            f"{examples.source}: data.validation_fraction={fraction} leaves "
            f"{n_val} of {len(examples)} examples for validation; use a larger "
            "dataset or a validation file"
        )
    n_train = len(examples) - n_val
    if stratify and n_train < len(counts):
        raise DataError(
            f"{examples.source}: data.validation_fraction={fraction} leaves "
            f"{n_train} of {len(examples)} examples for training, fewer than the "
            f"{len(counts)} classes; lower the fraction or use a validation file"
        )
    # sklearn needs room for every class on both sides of a stratified split.
    can_stratify = (
        stratify and min(counts.values()) >= 2 and min(n_val, n_train) >= len(counts)
    )
    train_idx, val_idx = train_test_split(
        indices,
        test_size=n_val,
        random_state=seed,
        stratify=keys if can_stratify else None,
    )
    return examples.select(sorted(train_idx.tolist())), examples.select(
        sorted(val_idx.tolist())
    )


@dataclass
class Splits:
    """The examples of each split, validated and ready to encode."""

    train: Examples
    validation: Examples | None = None
    test: Examples | None = None

    def items(self) -> list[tuple[str, Examples]]:
        named = [("train", self.train), ("validation", self.validation)]
        return [(n, e) for n, e in [*named, ("test", self.test)] if e is not None]


def load_splits(cfg: ExperimentConfig) -> Splits:
    """Reads train/validation/test as configured, with the task's reader.

    A ``validation_fraction`` is split off the full training file first, so the
    validation set does not change with ``max_train_examples``; the cap then applies
    to what is left for training. The hold-out keeps the proportions of whatever
    the task stratifies on (the class, for classification).
    """
    from tfsft.tasks import get_task  # the tasks import TensorFlow

    task = get_task(cfg)
    data, seed = cfg.data, cfg.train.seed

    def load(spec: str | None, split: str) -> Examples | None:
        return task.load_examples(spec, data, split) if spec else None

    train, validation = load(data.train, "train"), load(data.validation, "validation")
    if data.validation_fraction:
        train, validation = holdout_split(
            train, data.validation_fraction, seed, task.stratify_on(train)
        )
    train = take_shuffled(train, data.max_train_examples, seed)
    return Splits(train, validation, load(data.test, "test"))
