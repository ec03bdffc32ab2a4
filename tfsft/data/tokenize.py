"""Tokenizing texts in-graph, in vectorised chunks, into fixed-width token tensors."""

from __future__ import annotations

from typing import Any

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
