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
