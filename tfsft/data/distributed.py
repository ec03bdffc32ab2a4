"""Input pipelines for strategies with more than one replica.

``train.batch_size`` B is the *global* batch. With N replicas in sync, every step's B
examples are split into N contiguous slices of B / N, one per replica. Keras averages
the loss over each replica's slice and divides it by N, and the optimizer sums the
replicas' gradients, so the update is the gradient of the mean loss over all B
examples: the same step a single device takes on the whole batch.

The datasets are built with `strategy.distribute_datasets_from_function`: each input
pipeline (one per worker, or per TPU host) gathers, for every planned step, the
slices of the replicas it feeds, so step s holds exactly the examples of step s of a
single-device run. tf.data's auto-sharding is not used: on a dataset of whole batches
it would give each worker every other *global* batch, which changes what a step is.

A single-device run keeps the last, incomplete batch of an epoch. It cannot be split
into N equal slices, so with N > 1 it is dropped and an epoch has n // B steps
(the other batches are those of the single-device plan, in the same order).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfsft.data.encoded import Encoded
from tfsft.data.pipeline import eval_plan, gather_slices, plan_batches
from tfsft.errors import ConfigError, DataError


def per_replica_batch(batch_size: int, replicas: int) -> int:
    """``batch_size / replicas``, or a `ConfigError` when it does not divide evenly."""
    if batch_size % replicas:
        lower = batch_size - batch_size % replicas
        raise ConfigError(
            f"train.batch_size: {batch_size} is the global batch and must divide "
            f"evenly over the {replicas} replicas in sync; use a multiple of "
            f"{replicas} such as {lower or replicas} or {lower + replicas}"
        )
    return batch_size // replicas


def full_batch_plan(
    lengths: np.ndarray,
    batch_size: int,
    epochs: int,
    seed: int,
    widths: list[int] | None,
    full: int,
    group: int = 1,
) -> tuple[list[np.ndarray], list[int], int]:
    """`plan_batches` without incomplete batches: (batches, widths, steps per epoch).

    Every epoch keeps the same number of steps (the fewest full batches any epoch
    has; n // B with `plan_batches`' plans), so that Keras can be told one
    ``steps_per_epoch`` and a global step still fixes the data position.
    """
    batches, sizes = plan_batches(
        lengths, batch_size, epochs, seed, widths, full, group
    )
    n = len(lengths)
    kept: list[list[int]] = [[] for _ in range(epochs)]
    seen = 0  # examples planned so far; each epoch of the plan covers all n once
    for i, batch in enumerate(batches):
        if len(batch) == batch_size:
            kept[min(seen // n, epochs - 1)].append(i)
        seen += len(batch)
    steps = min(len(k) for k in kept)
    if steps == 0:
        raise DataError(
            f"train.batch_size: {batch_size} is more than the {n} training examples; "
            "with more than one replica only full batches are trained on"
        )
    keep = [i for k in kept for i in k[:steps]]
    return [batches[i] for i in keep], [sizes[i] for i in keep], steps


def train_dataset_fn(
    encoded: Encoded,
    batches: list[np.ndarray],
    sizes: list[int] | None,
    replicas: int,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The per-pipeline dataset function for planned global ``batches``.

    Each pipeline yields, step by step, one [B / N, width] slice for each replica it
    feeds. With ``sizes`` None every batch keeps the full sequence length and all
    shapes are static (what a TPU needs).
    """
    per_replica = per_replica_batch(len(batches[0]), replicas) if batches else 0

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        slices, widths = [], []
        for step, batch in enumerate(batches):
            for r in range(first, first + local):
                slices.append(batch[r * per_replica : (r + 1) * per_replica])
                widths.append(sizes[step] if sizes else 0)
        return gather_slices(encoded, slices, widths if sizes else None)

    return dataset_fn


def eval_dataset_fn(
    encoded: Encoded,
    batch_size: int,
    widths: list[int] | None,
    replicas: int,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The per-pipeline dataset function for evaluation.

    Batches are sorted by length as in `make_eval_dataset`; each is split into
    ``replicas`` near-equal slices (a short last batch gives some replicas fewer
    rows, or none). Keras weights every replica's metrics by its row count, so the
    epoch's metrics are those of the whole set.
    """
    batches, sizes, _ = eval_plan(encoded.lengths(), batch_size, widths, encoded.width)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        slices, slice_widths = [], []
        for batch, width in zip(batches, sizes, strict=True):
            parts = np.array_split(batch, replicas)
            slices += parts[first : first + local]
            slice_widths += [width] * local
        return gather_slices(encoded, slices, slice_widths if widths else None)

    return dataset_fn
