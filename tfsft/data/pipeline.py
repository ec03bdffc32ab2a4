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
    boundaries: str | list[int] | None, sequence_length: int
) -> list[int] | None:
    """The padded widths batches may take: boundaries below the length, then it.

    ``"auto"`` is eight evenly spaced widths in multiples of 8: fine enough that a
    batch is padded by at most a few tokens, few enough that the graph sees only
    a handful of shapes (XLA or a TPU would compile each).
    """
    if not boundaries:
        return None
    if boundaries == "auto":
        step = max(8, -(-sequence_length // 64) * 8)
        boundaries = list(range(step, sequence_length, step))
    return sorted({b for b in boundaries if b < sequence_length} | {sequence_length})


def plan_batches(
    lengths: np.ndarray,
    batch_size: int,
    epochs: int,
    seed: int,
    widths: list[int] | None,
    full: int,
    group: int = 1,
) -> tuple[list[np.ndarray], list[int]]:
    """Example indices and padded width of every training step, all epochs.

    Without ``widths`` every batch is padded to the full sequence length. With them
    (ascending bucket boundaries, the last one the sequence length), each batch is
    padded only to the smallest width that holds its longest example. With
    ``group`` > 1, each window of ``group`` batches of the shuffled order is sorted
    by length before it is cut into batches, and the batches of the epoch are then
    shuffled: batches stay samples of the whole data, but hold examples of similar
    length. Everything is seeded by (seed, epoch), and an epoch has
    ceil(n / batch_size) steps either way.
    """
    n = len(lengths)
    batches: list[np.ndarray] = []
    sizes: list[int] = []
    window = batch_size * group
    for epoch, order in enumerate(epoch_orders(n, epochs, seed)):
        if widths and group > 1:
            order = np.concatenate(
                [
                    chunk[np.argsort(lengths[chunk], kind="stable")]
                    for chunk in np.split(order, range(window, n, window))
                ]
            )
        epoch_batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if widths and group > 1:
            shuffle = np.random.default_rng([seed, epoch, 1]).permutation(
                len(epoch_batches)
            )
            epoch_batches = [epoch_batches[j] for j in shuffle]
        for batch in epoch_batches:
            batches.append(batch)
            sizes.append(bucket_width(int(lengths[batch].max()), widths, full))
    return batches, sizes


def bucket_width(length: int, widths: list[int] | None, full: int) -> int:
    """The smallest bucket boundary that holds ``length`` tokens."""
    for width in widths or ():
        if length <= width:
            return width
    return full


def token_lengths(tokens: dict[str, tf.Tensor]) -> np.ndarray:
    """Tokens per example [N], from the int32 ``padding_mask`` [N, sequence_length]."""
    return tokens["padding_mask"].numpy().sum(axis=1)


def eval_plan(
    lengths: np.ndarray, batch_size: int, widths: list[int] | None, full: int
) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """Evaluation batches sorted by length: (batches, their widths, the order).

    Sorting keeps the padding of evaluation batches small; outputs come out in
    ``order`` and are put back with ``np.argsort(order)``.
    """
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    sizes = [bucket_width(int(lengths[b].max()), widths, full) for b in batches]
    return batches, sizes, order


def make_eval_dataset(
    tokens: dict[str, tf.Tensor],
    labels: np.ndarray | None,
    batch_size: int,
    widths: list[int] | None = None,
) -> tuple[tf.data.Dataset, np.ndarray]:
    """One device's evaluation batches (see `eval_plan`) and the order used."""
    full = int(tokens["token_ids"].shape[1])
    batches, sizes, order = eval_plan(token_lengths(tokens), batch_size, widths, full)
    return gather_slices(tokens, labels, batches, sizes if widths else None), order


def gather_slices(
    tokens: dict[str, tf.Tensor],
    labels: np.ndarray | None,
    slices: list[np.ndarray],
    widths: list[int] | None,
) -> tf.data.Dataset:
    """A dataset of the rows in ``slices``, each cut to its width (or kept whole).

    Slices of one size use a dense [steps, rows] index, so the batch dimension is
    static; without ``widths`` the length dimension is too.
    """
    sizes = {len(s) for s in slices}
    if len(sizes) == 1:
        index = tf.constant(np.stack(slices).astype(np.int64))  # [elements, rows]
    else:
        index = tf.RaggedTensor.from_row_lengths(  # [elements, (rows)]
            np.concatenate(slices).astype(np.int64), [len(s) for s in slices]
        )
    cut = None if widths is None else tf.constant(widths, tf.int32)
    targets = None if labels is None else tf.constant(labels)

    def gather(i: tf.Tensor):
        rows = index[i]
        features = {k: tf.gather(v, rows) for k, v in tokens.items()}
        if cut is not None:
            features = {k: v[:, : cut[i]] for k, v in features.items()}
        return features if targets is None else (features, tf.gather(targets, rows))

    ds = tf.data.Dataset.range(len(slices))
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
