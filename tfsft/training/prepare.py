"""A run's data, read, labelled and encoded once, before any model or run dir.

Every data problem surfaces here, so bad input leaves no debris; `log_plan` says
what the run will train once the model is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras

from tfsft.config import ExperimentConfig
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import describe_skipped
from tfsft.data.splits import Splits, load_splits
from tfsft.models.backbones import resolve_preset
from tfsft.progress import stage
from tfsft.tasks import get_task
from tfsft.tasks.base import Task
from tfsft.training.feed import Feed
from tfsft.training.phases import PhaseClock

log = logging.getLogger("tfsft")


@dataclass
class TrainingData:
    """A run's data, read, labelled and encoded once."""

    task: Task
    splits: Splits
    labels: LabelSpec
    preprocessor: Any
    encoded: dict[str, Encoded]  # by split name


def prepare_data(
    cfg: ExperimentConfig, clock: PhaseClock | None = None
) -> TrainingData:
    """Reads every split, builds the label space and encodes the splits (timed as
    ``read_data`` and ``tokenize`` on ``clock``, if given).

    Raises:
        DataError: for any problem with the data, naming the file, row and field.
    """
    task = get_task(cfg)
    clock = clock or PhaseClock()
    with stage("reading data") as reading, clock.phase("read_data"):
        splits = load_splits(cfg)
        reading.update(sum(len(examples) for _, examples in splits.items()))
    for _, examples in splits.items():
        if message := describe_skipped(examples):
            log.warning(message)
    labels = task.build_labels(splits.train, cfg.data)
    for _, examples in splits.items():  # every split's problems before any loading
        task.check_targets(examples, labels, cfg.data)
    preset = resolve_preset(cfg.model.preset)
    with clock.phase("tokenize"):
        preprocessor = task.load_preprocessor(preset, cfg.model.sequence_length)
    encoded = {}
    for name, examples in splits.items():
        encode = task.encode_train if name == "train" else task.encode
        with (
            stage(f"tokenizing {name}", len(examples)) as tokenizing,
            clock.phase("tokenize"),
        ):
            encoded[name] = encode(examples, preprocessor, labels, cfg)
            tokenizing.update(len(examples))
    return TrainingData(task, splits, labels, preprocessor, encoded)


def log_plan(
    cfg: ExperimentConfig,
    data: TrainingData,
    feed: Feed,
    trainable: int,
    total: int,
    start_step: int,
) -> None:
    """Logs what the run will train: examples, parameters, precision, widths."""
    validation = data.splits.validation
    log.info(
        "%s: %s train / %s validation examples; trainable params %s of %s (%.1f%%)",
        cfg.name,
        len(data.splits.train),
        len(validation) if validation else 0,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / max(total, 1),
    )
    widths = feed.widths
    log.info(
        "precision %s; batches padded to %s",
        keras.config.dtype_policy().name,
        f"widths {widths}"
        + (" grouped by length" if cfg.data.length_grouping > 1 else "")
        if widths
        else "the sequence length",
    )
    if start_step:
        log.info("resuming at step %d of %d", start_step, feed.total_steps)
