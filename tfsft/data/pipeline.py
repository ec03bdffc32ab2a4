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
    features = {"text": tf.constant(examples.texts, tf.string)}
    if examples.pairs is not None:
        features["text_pair"] = tf.constant(examples.pairs, tf.string)
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


def tokenize_all(examples: Examples, preprocessor: Any) -> dict[str, tf.Tensor]:
    """Tokenizes every example once: a dict of [N, sequence_length] int32 tensors."""
    features = {"text": tf.constant(examples.texts, tf.string)}
    if examples.pairs is not None:
        features["text_pair"] = tf.constant(examples.pairs, tf.string)
    ds = tf.data.Dataset.from_tensor_slices(features).batch(_TOKENIZE_CHUNK)
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


def make_train_dataset(
    tokens: dict[str, tf.Tensor],
    labels: np.ndarray,
    batch_size: int,
    epochs: int,
    seed: int,
    start_step: int = 0,
    stop_step: int | None = None,
) -> tf.data.Dataset:
    """The stream of training batches for global steps [start_step, stop_step).

    Batch ``s`` holds examples ``order[e][i*B:(i+1)*B]`` with ``e, i = divmod(s,
    steps_per_epoch)``; the last batch of an epoch is smaller. Starting at any step
    costs nothing: no earlier batch is produced and thrown away.
    """
    n = len(labels)
    steps_per_epoch = -(-n // batch_size)
    orders = epoch_orders(n, epochs, seed)
    batches = [
        orders[e][i * batch_size : (i + 1) * batch_size]
        for e in range(epochs)
        for i in range(steps_per_epoch)
    ]
    index = tf.RaggedTensor.from_row_lengths(  # [steps, (batch)]
        np.concatenate(batches).astype(np.int64), [len(b) for b in batches]
    )
    targets = tf.constant(labels)
    stop = len(batches) if stop_step is None else stop_step

    def gather(step: tf.Tensor):
        rows = index[step]
        return {k: tf.gather(v, rows) for k, v in tokens.items()}, tf.gather(
            targets, rows
        )

    ds = tf.data.Dataset.range(start_step, stop)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
