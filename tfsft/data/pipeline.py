"""tf.data pipelines: tokenize in-graph once, cache, shuffle, batch, prefetch."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsft.data.sources import Examples

# Strings are tokenized in chunks: the WordPiece op is vectorised, so one call on
# 512 strings is much cheaper than 512 calls on one.
_TOKENIZE_CHUNK = 512


def make_tokenize_fn(preprocessor: Any, paired: bool):
    """Returns a tf.data map function: raw-text features -> token tensors.

    The keras-hub preprocessor emits a bool ``padding_mask``; it is cast to int32
    because MirroredStrategy (and the exported signature) cannot carry bools.
    """

    def tokenize(features: dict[str, tf.Tensor], *rest: tf.Tensor):
        segments = (
            (features["text"], features["text_pair"]) if paired else features["text"]
        )
        tokens = dict(preprocessor(x=segments))
        tokens["padding_mask"] = tf.cast(tokens["padding_mask"], tf.int32)
        return (tokens, *rest) if rest else tokens

    return tokenize


def make_dataset(
    examples: Examples,
    labels: np.ndarray | None,
    preprocessor: Any,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Builds the batched dataset of ``(token dict, labels)`` (or token dicts only).

    Args:
        examples: texts (and optional text pairs).
        labels: encoded labels aligned with ``examples``, or None for prediction.
        preprocessor: a keras-hub ``TextClassifierPreprocessor``.
        batch_size: global batch size.
        shuffle: reshuffle every epoch (training only); the order is seeded.
        seed: shuffle seed.
    """
    features = _text_features(examples)
    elements = (features,) if labels is None else (features, labels)
    ds = tf.data.Dataset.from_tensor_slices(elements)
    ds = ds.batch(_TOKENIZE_CHUNK)
    ds = ds.map(
        make_tokenize_fn(preprocessor, examples.pairs is not None),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    # unbatch() hides the length; restating it lets Keras size epochs and progress.
    ds = ds.unbatch().apply(tf.data.experimental.assert_cardinality(len(examples)))
    ds = ds.cache()  # tokenization runs once, not once per epoch
    if shuffle:
        ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _text_features(examples: Examples) -> dict[str, tf.Tensor]:
    features = {"text": tf.constant(examples.texts, tf.string)}
    if examples.pairs is not None:
        features["text_pair"] = tf.constant(examples.pairs, tf.string)
    return features


def tokenize_all(examples: Examples, preprocessor: Any) -> dict[str, tf.Tensor]:
    """Tokenizes every example once: a dict of [N, sequence_length] int32 tensors."""
    ds = tf.data.Dataset.from_tensor_slices(_text_features(examples))
    ds = ds.batch(_TOKENIZE_CHUNK)
    ds = ds.map(
        make_tokenize_fn(preprocessor, examples.pairs is not None),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    chunks = list(ds)
    return {k: tf.concat([c[k] for c in chunks], axis=0) for k in chunks[0]}


def epoch_orders(n: int, epochs: int, seed: int) -> np.ndarray:
    """The example order of every epoch [epochs, n], a pure function of the seed.

    Deriving each epoch's shuffle from (seed, epoch) instead of from an iterator's
    state is what lets a resumed run continue at any step with the same batches.
    """
    return np.stack(
        [np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)]
    )


def bucket_widths(
    boundaries: list[int] | None, sequence_length: int
) -> list[int] | None:
    """The padded widths batches may take: boundaries below the length, then it."""
    if not boundaries:
        return None
    return sorted({b for b in boundaries if b < sequence_length} | {sequence_length})


def plan_batches(
    lengths: np.ndarray,
    batch_size: int,
    epochs: int,
    seed: int,
    widths: list[int] | None,
    full: int,
) -> tuple[list[np.ndarray], list[int]]:
    """Example indices and padded width of every training step, all epochs.

    Without ``widths`` every batch is padded to the full sequence length. With them
    (ascending bucket boundaries, the last one the sequence length), each batch is
    drawn from one length bucket and padded only to that bucket's width, and the
    order of the batches is shuffled, all seeded by (seed, epoch).
    """
    n = len(lengths)
    batches: list[np.ndarray] = []
    sizes: list[int] = []
    # Bucket of each example: the first width that holds it (lengths never exceed
    # the last width, the sequence length, since the packer truncates).
    bucket = None
    if widths:
        bucket = np.minimum(np.searchsorted(widths, lengths), len(widths) - 1)
    for epoch, order in enumerate(epoch_orders(n, epochs, seed)):
        epoch_batches = _bucketed(order, lengths, batch_size, bucket)
        if widths:
            shuffle = np.random.default_rng([seed, epoch, 1]).permutation(
                len(epoch_batches)
            )
            epoch_batches = [epoch_batches[j] for j in shuffle]
        for batch in epoch_batches:
            batches.append(batch)
            sizes.append(bucket_width(int(lengths[batch].max()), widths, full))
    return batches, sizes


def _bucketed(
    order: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    bucket: np.ndarray | None,
) -> list[np.ndarray]:
    """Splits one epoch's order into batches, each from one length bucket.

    Inside a bucket the shuffled order is kept, so batches stay random samples of
    their bucket. The incomplete tail of every bucket is pooled and batched by
    length, which keeps the number of steps at ceil(n / batch_size), as without
    buckets.
    """
    if bucket is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, leftovers = [], []
    for b in range(int(bucket.max()) + 1):
        members = order[bucket[order] == b]
        whole = len(members) - len(members) % batch_size
        batches += [members[i : i + batch_size] for i in range(0, whole, batch_size)]
        leftovers.append(members[whole:])
    rest = np.concatenate(leftovers)
    rest = rest[np.argsort(lengths[rest], kind="stable")]
    batches += [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]
    return batches


def bucket_width(length: int, widths: list[int] | None, full: int) -> int:
    """The smallest bucket boundary that holds ``length`` tokens."""
    for width in widths or ():
        if length <= width:
            return width
    return full


def make_train_dataset(
    tokens: dict[str, tf.Tensor],
    labels: np.ndarray,
    batch_size: int,
    epochs: int,
    seed: int,
    start_step: int = 0,
    stop_step: int | None = None,
    widths: list[int] | None = None,
) -> tf.data.Dataset:
    """The stream of training batches for global steps [start_step, stop_step).

    Which examples form step ``s`` and how wide it is padded are fixed in advance by
    `plan_batches`, so starting at any step costs nothing: no earlier batch is
    produced and thrown away. Token tensors are [batch, width] with width one of
    ``widths`` (or the full length).
    """
    lengths = tokens["padding_mask"].numpy().sum(axis=1)
    full = int(tokens["token_ids"].shape[1])
    batches, sizes = plan_batches(lengths, batch_size, epochs, seed, widths, full)
    stop = len(batches) if stop_step is None else stop_step
    return _gather_batches(tokens, labels, batches, sizes, start_step, stop)


def make_eval_dataset(
    tokens: dict[str, tf.Tensor],
    labels: np.ndarray | None,
    batch_size: int,
    widths: list[int] | None = None,
) -> tuple[tf.data.Dataset, np.ndarray]:
    """Batches sorted by length (padded to their bucket) and the order used.

    Sorting keeps the padding of evaluation batches small; predictions come out in
    ``order`` and are put back with ``np.argsort(order)``.
    """
    lengths = tokens["padding_mask"].numpy().sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    full = int(tokens["token_ids"].shape[1])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    sizes = [bucket_width(int(lengths[b].max()), widths, full) for b in batches]
    return _gather_batches(tokens, labels, batches, sizes, 0, len(batches)), order


def _gather_batches(
    tokens: dict[str, tf.Tensor],
    labels: np.ndarray | None,
    batches: list[np.ndarray],
    sizes: list[int],
    start: int,
    stop: int,
) -> tf.data.Dataset:
    """Batches ``start..stop-1`` of a plan: rows gathered, padding cut to ``sizes``."""
    index = tf.RaggedTensor.from_row_lengths(  # [steps, (batch)]
        np.concatenate(batches).astype(np.int64), [len(b) for b in batches]
    )
    step_widths = tf.constant(sizes, tf.int32)
    targets = None if labels is None else tf.constant(labels)

    def gather(step: tf.Tensor):
        rows, width = index[step], step_widths[step]
        features = {k: tf.gather(v, rows)[:, :width] for k, v in tokens.items()}
        return features if targets is None else (features, tf.gather(targets, rows))

    ds = tf.data.Dataset.range(start, stop)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
