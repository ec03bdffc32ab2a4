"""Token classification from raw text: word splitting with character offsets, and
the exported ``serving_default`` signature that returns entities as tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfsft.data.sources import Examples

USAGE = """Input: `text` (strings, [batch]), raw text; words are split on spaces and
punctuation (keeping "U.S.", "3,000", "1996-08-22" whole), cut into sub-tokens, and
sentences longer than the sequence length into overlapping windows.

Outputs, one row per text, entities padded to the most any text in the batch has:
`entity_count` [batch] (int32), `entity_types` [batch, E] (the type, e.g. PER),
`entity_texts` [batch, E], `entity_starts` and `entity_ends` [batch, E] (character
offsets into the text, end exclusive; -1 past the count), `entity_scores` [batch, E]
(the mean probability of the entity's tags). `tfsft serve` adds each row's
entities as JSON objects (`entities`: text, type, start, end, score) to REST row-format
responses; `tfsft predict EXPORT` prints them."""

OUTPUTS = (
    "entity_count",
    "entity_types",
    "entity_texts",
    "entity_starts",
    "entity_ends",
    "entity_scores",
)


def split_raw_texts(examples: Examples) -> None:
    """Turns the raw texts among ``examples.texts`` into words, keeping each word's
    character offsets in ``meta`` (``text``, ``starts``, ``ends``). Rows already
    split into words keep them; their text is the words joined by spaces."""
    import tensorflow as tf

    from tfsft.tasks.token_classification.windows import split_words

    raw = [i for i, t in enumerate(examples.texts) if isinstance(t, str)]
    texts = tf.constant([examples.texts[i] for i in raw], tf.string, shape=[len(raw)])
    words, starts, ends = split_words(texts)
    found = zip(words.to_list(), starts.to_list(), ends.to_list(), strict=True)
    split = dict(zip(raw, found, strict=True))
    meta: dict[str, list[Any]] = {"text": [], "starts": [], "ends": [], "raw": []}
    for i, value in enumerate(examples.texts):
        if i in split:
            pieces, first, last = split[i]
            text, examples.texts[i] = value, [w.decode("utf-8") for w in pieces]
        else:
            text, first, last = joined(value)
        meta["text"].append(text)
        meta["starts"].append(first)
        meta["ends"].append(last)
        meta["raw"].append(i in split)
    examples.meta.update(meta)


def joined(words: list[str]) -> tuple[str, list[int], list[int]]:
    """The words joined by single spaces, and each word's character start and end."""
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    ends = [s + len(w) for s, w in zip(starts, words, strict=True)]
    return " ".join(words), starts, ends


def input_rows(examples: Examples) -> list[dict[str, Any]]:
    """The row and the input (raw text, or pre-tokenized words) of each example."""
    raw = examples.meta.get("raw", [False] * len(examples))
    rows = []
    for i, row in enumerate(examples.rows):
        given = {"text": examples.meta["text"][i]} if raw[i] else {}
        rows.append({examples.row_kind: row} | (given or {"tokens": examples.texts[i]}))
    return rows


def signatures(
    model: Any, preprocessor: Any, labels: Any, cfg: Any, with_text: bool
) -> dict[str, Any]:
    """``serve_tokens`` and, with ``with_text``, the raw-text ``serving_default``."""
    import tensorflow as tf

    from tfsft.tasks.base import TEXT_SIGNATURE, TOKENS_SIGNATURE, token_signature
    from tfsft.tasks.token_classification import tags, windows

    def logits(features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.cast(model(features, training=False), tf.float32)

    found = {TOKENS_SIGNATURE: token_signature(model, logits)}
    if not with_text:
        return found
    specials = windows.specials_of(preprocessor)
    length = cfg.model.sequence_length
    overlap = windows.overlap_tokens(length, cfg.data.stride)
    prefixes, kinds, types = tags.tag_tables(labels.names)
    prefixes = tf.constant(prefixes, tf.int64)
    kinds = tf.constant(kinds, tf.int64)
    type_names = tf.constant(types)
    bioes = labels.scheme == "bioes"

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(text: tf.Tensor) -> dict[str, tf.Tensor]:
        words, starts, ends = windows.split_words(text)
        pieces = windows.word_pieces(preprocessor.tokenizer, words, specials.unknown)
        win = windows.make_windows(pieces, length, overlap, specials)
        # Pad the windows only as far as the longest needs.
        width = tf.reduce_max(tf.reduce_sum(win.features["padding_mask"], axis=1))
        width = tf.maximum(width, 2)
        features = {k: v[:, :width] for k, v in win.features.items()}
        probs = tf.nn.softmax(windows.word_outputs(win, logits(features)).flat_values)
        tag_ids = words.with_flat_values(tf.argmax(probs, axis=-1))
        first, last, kind = windows.extract_spans(tag_ids, prefixes, kinds, bioes)
        # Entity score: the mean over its words of the chosen tag's probability.
        cumulative = tf.concat([[0.0], tf.cumsum(tf.reduce_max(probs, axis=-1))], 0)
        base = tf.gather(words.row_starts(), first.value_rowids())
        lo, hi = base + first.flat_values, base + last.flat_values
        score = (tf.gather(cumulative, hi) - tf.gather(cumulative, lo)) / tf.cast(
            hi - lo, tf.float32
        )
        char_start = tf.gather(starts.flat_values, lo)
        char_end = tf.gather(ends.flat_values, hi - 1)
        entity_text = _substrings(text, first.value_rowids(), char_start, char_end)

        def padded(values: tf.Tensor, fill: Any) -> tf.Tensor:
            return first.with_flat_values(values).to_tensor(default_value=fill)

        return {
            "entity_count": tf.cast(first.row_lengths(), tf.int32),
            "entity_types": padded(tf.gather(type_names, kind.flat_values), ""),
            "entity_texts": padded(entity_text, ""),
            "entity_starts": padded(tf.cast(char_start, tf.int32), -1),
            "entity_ends": padded(tf.cast(char_end, tf.int32), -1),
            "entity_scores": padded(score, 0.0),
        }

    found[TEXT_SIGNATURE] = serve_text.get_concrete_function()
    return found


def _substrings(text: Any, rows: Any, start: Any, end: Any) -> Any:
    """``text[row][start:end]`` for character offsets, as UTF-8 strings."""
    import tensorflow as tf

    return tf.strings.substr(
        tf.gather(text, rows),
        tf.cast(start, tf.int32),
        tf.cast(end - start, tf.int32),
        unit="UTF8_CHAR",
    )


def decode_outputs(
    inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    """``{"entities": [...]}`` rows from the raw-text signature's padded tensors."""
    rows = []
    for i, count in enumerate(np.asarray(outputs["entity_count"]).tolist()):
        rows.append(
            {
                "entities": [
                    {
                        "text": _text(outputs["entity_texts"][i][j]),
                        "type": _text(outputs["entity_types"][i][j]),
                        "start": int(outputs["entity_starts"][i][j]),
                        "end": int(outputs["entity_ends"][i][j]),
                        "score": round(float(outputs["entity_scores"][i][j]), 6),
                    }
                    for j in range(count)
                ]
            }
        )
    return rows


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
