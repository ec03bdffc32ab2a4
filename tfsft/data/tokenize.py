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
    paired = examples.pairs is not None
    features = {"text": tf.constant(examples.texts, tf.string)}
    if paired:
        features["text_pair"] = tf.constant(examples.pairs, tf.string)
    ds = tf.data.Dataset.from_tensor_slices(features).batch(_TOKENIZE_CHUNK)
    ds = ds.map(
        _traced_tokenize(preprocessor, paired),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    chunks = list(ds)
    return {k: tf.concat([c[k] for c in chunks], axis=0) for k in chunks[0]}


def _traced_tokenize(preprocessor: Any, paired: bool) -> Any:
    """The tokenize function traced once per preprocessor (kept on it).

    tf.data traces a plain Python map function anew for every dataset, and the
    keras-hub preprocessor's graph takes ~0.9 s to build on 2 cores: a run paid it
    once per split. A tf.function with a fixed signature is traced on first use,
    and every later map only calls it.
    """
    cache = preprocessor.__dict__.setdefault("_tfsft_tokenize", {})
    if paired not in cache:
        spec = {"text": tf.TensorSpec([None], tf.string)}
        if paired:
            spec["text_pair"] = tf.TensorSpec([None], tf.string)
        cache[paired] = tf.function(
            make_tokenize_fn(preprocessor, paired), input_signature=[spec]
        )
    return cache[paired]
