"""What fit() is fed: every step's batch planned once, for one replica or many.

`make_feed` plans the whole run (rows and padded width of every global step, all
epochs), so that ``feed.train(first, last)`` can start the input stream at any step:
a resumed run reads exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfsft.config import ExperimentConfig
from tfsft.data.distributed import eval_dataset_fn, full_batch_plan, train_dataset_fn
from tfsft.data.encoded import Encoded
from tfsft.data.pipeline import gather_slices, make_eval_dataset, plan_batches
from tfsft.evaluation.inference import config_widths

log = logging.getLogger("tfsft")


@dataclass
class Feed:
    """The planned input of one run."""

    steps_per_epoch: int
    total_steps: int
    widths: list[int] | None  # bucket widths batches are padded to (None: full)
    train: Callable[[int, int], Any]  # (first, last) -> batches of steps [first, last)
    validation: Any = None  # Keras' validation data, or None
    validation_steps: int | None = None  # global batches of a distributed pass
    element_spec: Any = None  # one replica's batch spec (multi-replica builds)


def make_feed(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy,
    train: Encoded,
    validation: Encoded | None,
) -> Feed:
    """Plans the training batches of every epoch and the validation batches.

    With N > 1 replicas every global batch is split into N slices (see
    `tfsft.data.distributed`); an epoch then drops its incomplete batch.
    """
    tc = cfg.train
    replicas = strategy.num_replicas_in_sync
    widths = config_widths(cfg)
    if widths and isinstance(strategy, tf.distribute.TPUStrategy):
        # A TPU compiles one program per batch shape: pad every batch fully.
        log.info("length buckets off on TPU: batches padded to the sequence length")
        widths = None
    plan_args = (
        train.lengths(),
        tc.batch_size,
        tc.epochs,
        tc.seed,
        widths,
        train.width,
        cfg.data.length_grouping,
    )
    if replicas == 1:
        plan, plan_widths = plan_batches(*plan_args)
        steps_per_epoch = math.ceil(train.rows / tc.batch_size)
    else:  # the plan without the incomplete batches (see data.distributed)
        plan, plan_widths, steps_per_epoch = full_batch_plan(*plan_args)

    def batches(first: int, last: int) -> Any:
        """Batches of global steps [first, last)."""
        sizes = plan_widths[first:last] if widths else None
        if replicas == 1:
            return gather_slices(train, plan[first:last], sizes)
        return strategy.distribute_datasets_from_function(
            train_dataset_fn(train, plan[first:last], sizes, replicas)
        )

    feed = Feed(steps_per_epoch, steps_per_epoch * tc.epochs, widths, batches)
    if replicas > 1:
        first_pipeline = tf.distribute.InputContext(1, 0, replicas)
        dataset_fn = train_dataset_fn(train, plan[:1], None, replicas)
        feed.element_spec = dataset_fn(first_pipeline).element_spec
    if validation is not None:
        if replicas == 1:
            feed.validation = make_eval_dataset(
                validation, tc.batch_size, widths, with_targets=True
            )[0]
        else:
            # A distributed dataset's cardinality counts per-replica elements, not
            # steps; Keras is told how many global batches a validation pass has.
            feed.validation_steps = math.ceil(validation.rows / tc.batch_size)
            feed.validation = strategy.distribute_datasets_from_function(
                eval_dataset_fn(validation, tc.batch_size, widths, replicas)
            )
    return feed
