"""Words -> sub-tokens -> overlapping windows, and window outputs -> words, in TF.

One implementation serves training (run eagerly over a whole split), `predict` and
the exported raw-text signature (traced into the SavedModel), so the SavedModel cuts
exactly the windows the Keras model was evaluated on.

A sentence of P sub-tokens is cut into windows of at most C = sequence_length - 2
sub-tokens (plus [CLS] and [SEP]); consecutive windows start ``step`` = C - overlap
sub-tokens apart, so they share ``overlap`` sub-tokens, and the last one reaches the
end: nothing is truncated. A window may cut a word's pieces; the label sits on the
first piece only. Each word is predicted once, from the window in which its first
piece has the most context (the larger of its two distances to the window's edges,
taken as the smaller of the two, as in BERT's SQuAD windows; ties go to the earlier
window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

# A word: a run of letters, digits and marks, which may hold inner punctuation
# ("U.S.", "1996-08-22", "3,000", "e-mail"); or any other single non-space character.
# The abbreviation form comes first so that "U.S." keeps its final dot.
WORD = (
    r"(?:\p{L}\p{M}*\.){2,}"
    r"|[\p{L}\p{N}\p{M}]+(?:[.,'\x{2019}&/\-][\p{L}\p{N}\p{M}]+)*"
    r"|\S"
)


@dataclass(frozen=True)
class Specials:
    """The token ids a window is framed and padded with."""

    start: int  # [CLS]
    end: int  # [SEP]
    pad: int
    unknown: int  # for a word the tokenizer turns into nothing
    segments: bool  # whether the model takes segment_ids


@dataclass
class Windows:
    """Windows of a batch of sentences and where each word is read back from."""

    features: dict[str, tf.Tensor]  # each [windows, sequence_length] int32
    sentence: tf.Tensor  # [windows] the sentence each window belongs to
    word_window: tf.RaggedTensor  # [sentences, (words)] global window index
    word_position: tf.RaggedTensor  # [sentences, (words)] position in that window
    piece_word: tf.Tensor  # [windows, sequence_length] word (flat index) or -1


def split_words(
    texts: tf.Tensor,
) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    """Raw strings [batch] -> (words, character starts, character ends), each
    [batch, (words)]; offsets count Unicode characters, as Python's str does."""
    words, byte_starts, byte_ends = tf_text.regex_split_with_offsets(
        texts, WORD + r"|\s+", keep_delim_regex_pattern=r"\S+"
    )
    # Byte offsets -> character offsets: count the characters that begin before.
    _, char_bytes = tf.strings.unicode_decode_with_offsets(
        texts, "UTF-8", errors="replace"
    )
    bound = tf.int64.max
    char_bytes = char_bytes.to_tensor(default_value=bound)  # [batch, chars]

    def to_chars(offsets: tf.RaggedTensor) -> tf.RaggedTensor:
        dense = offsets.to_tensor(default_value=bound)
        chars = tf.searchsorted(char_bytes, dense, side="left")
        return tf.RaggedTensor.from_tensor(chars, lengths=offsets.row_lengths())

    return words, to_chars(byte_starts), to_chars(byte_ends)


def word_pieces(
    tokenizer: tf.Module, words: tf.RaggedTensor, unknown: int
) -> tf.RaggedTensor:
    """Words [batch, (words)] -> sub-token ids [batch, (words), (pieces)] int32.

    A word the tokenizer turns into nothing (a stray control character) becomes the
    unknown token, so that every word has a first piece to carry its label.
    """
    pieces = _tokenize(tokenizer, words.flat_values)
    pieces = tf.cast(pieces, tf.int32)
    empty = tf.cast(pieces.row_lengths() == 0, tf.int64)
    fill = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(empty)], tf.constant(unknown, tf.int32)), empty
    )
    return words.with_flat_values(tf.concat([pieces, fill], axis=1))


def _tokenize(tokenizer: tf.Module, words: tf.Tensor) -> tf.RaggedTensor:
    """[words] -> [words, (pieces)], also when called eagerly.

    keras-hub tokenizers hand back Python lists when called eagerly; inside a
    tf.function (as in the exported graph) they return the ragged tensor.
    """
    if tf.executing_eagerly():
        return tf.function(tokenizer, input_signature=[_STRINGS])(words)
    return tokenizer(words)


_STRINGS = tf.TensorSpec([None], tf.string)


def overlap_tokens(sequence_length: int, stride: int | None) -> int:
    """Sub-tokens consecutive windows share: ``stride``, or a quarter of a window."""
    content = sequence_length - 2
    return content // 4 if stride is None else stride


def make_windows(
    pieces: tf.RaggedTensor,
    sequence_length: int,
    overlap: int,
    specials: Specials,
) -> Windows:
    """Cuts every sentence's sub-tokens into windows (see the module docstring).

    Args:
        pieces: [sentences, (words), (pieces)] int32 sub-token ids.
        sequence_length: the window length, [CLS] and [SEP] included.
        overlap: sub-tokens shared by consecutive windows (< sequence_length - 2).
        specials: the framing and padding ids.
    """
    content = sequence_length - 2
    step = content - overlap
    per_word = pieces.row_lengths(axis=2)  # [sentences, (words)] int64
    flat = pieces.merge_dims(1, 2)  # [sentences, (P)]
    total = flat.row_lengths()  # [sentences]
    windows_per = tf.where(
        total <= content,
        tf.ones_like(total),
        (total - content + step - 1) // step + 1,
    )
    sentence = tf.repeat(tf.range(tf.size(total, tf.int64)), windows_per)
    k = tf.ragged.range(windows_per).flat_values  # window number within its sentence
    start = k * step  # [windows] first sub-token of each window
    # (Tensors first in tf.minimum/tf.where: a Python int first would be int32.)
    length = tf.maximum(tf.minimum(tf.gather(total, sentence) - start, content), 0)
    pos = tf.range(sequence_length, dtype=tf.int64)[None, :]  # [1, L]
    inside = (pos >= 1) & (pos <= length[:, None])  # [windows, L]
    # Positions outside a window's pieces read one padding value past the end, so
    # that the gathers stay in range even for a batch with no pieces at all.
    nothing = tf.size(flat.values, tf.int64)
    first_of_window = tf.gather(flat.row_starts(), sentence) + start  # [windows]
    piece_at = first_of_window[:, None] + pos - 1
    piece_at = tf.where(inside, piece_at, nothing)
    values = tf.gather(tf.concat([flat.values, [specials.pad]], 0), piece_at)
    last = length[:, None] + 1
    frame = tf.where(pos == last, specials.end, specials.pad)
    token_ids = tf.where(pos == 0, specials.start, tf.where(inside, values, frame))
    features = {
        "token_ids": tf.cast(token_ids, tf.int32),
        "padding_mask": tf.cast(pos <= length[:, None] + 1, tf.int32),
    }
    if specials.segments:
        features["segment_ids"] = tf.zeros_like(features["token_ids"])

    # Which word each window position holds the first piece of (-1: none).
    first_piece = tf.cumsum(per_word.flat_values, exclusive=True)  # flat pieces
    is_first = tf.scatter_nd(
        first_piece[:, None],
        tf.ones_like(first_piece, tf.bool),
        tf.reshape(nothing + 1, [1]),
    )  # [pieces + 1]: True at each word's first piece
    word_of_piece = tf.cumsum(tf.cast(is_first, tf.int64)) - 1
    piece_word = tf.where(
        tf.gather(is_first, piece_at), tf.gather(word_of_piece, piece_at), -1
    )

    # The window each word is read back from.
    rows = pieces.value_rowids()  # [words]: the sentence of each word
    offset = first_piece - tf.gather(flat.row_starts(), rows)
    window, position = _best_windows(offset, rows, windows_per, total, content, step)
    nrows = tf.size(total, out_type=tf.int64)
    return Windows(
        features,
        sentence,
        tf.RaggedTensor.from_value_rowids(window, rows, nrows),
        tf.RaggedTensor.from_value_rowids(position, rows, nrows),
        piece_word,
    )


def _best_windows(
    offset: tf.Tensor,
    word_sentence: tf.Tensor,
    windows_per: tf.Tensor,
    total: tf.Tensor,
    content: int,
    step: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """For each word (first piece at ``offset`` in its sentence): the global index
    of its window with the most context, and the position of the piece in it."""
    candidates = math.ceil(content / step) + 1  # windows that may hold one piece
    first_window = tf.cumsum(windows_per, exclusive=True)  # per sentence
    n = tf.gather(windows_per, word_sentence)
    size = tf.gather(total, word_sentence)
    low = tf.maximum((offset - content + step) // step, 0)  # ceil((o-C+1)/step)
    high = tf.minimum(offset // step, n - 1)
    k = low[:, None] + tf.range(candidates, dtype=tf.int64)[None, :]
    begin = k * step
    end = tf.minimum(begin + content, size[:, None])
    context = tf.minimum(offset[:, None] - begin, end - 1 - offset[:, None])
    context = tf.where(k <= high[:, None], context, -1)
    best = low + tf.argmax(context, axis=1, output_type=tf.int64)  # first max
    window = tf.gather(first_window, word_sentence) + best
    return window, offset - best * step + 1


def word_outputs(windows: Windows, window_logits: tf.Tensor) -> tf.RaggedTensor:
    """Per-window logits [windows, L, T] -> per-word logits [sentences, (words), T]."""
    index = tf.stack(
        [windows.word_window.flat_values, windows.word_position.flat_values], axis=1
    )
    return windows.word_window.with_flat_values(tf.gather_nd(window_logits, index))


def extract_spans(
    tags: tf.RaggedTensor, prefixes: tf.Tensor, types: tf.Tensor, bioes: bool
) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    """The entities in tag ids [sentences, (words)], read strictly (as seqeval's
    strict mode does: an I- that does not continue a B-/I- of its type begins no
    entity; under BIOES an entity must close with E- or be one S-).

    Args:
        tags: predicted tag ids.
        prefixes: [num_tags] 0 O, 1 B, 2 I, 3 E, 4 S.
        types: [num_tags] entity type id (-1 for O).
        bioes: the scheme is BIOES (else IOB2).

    Returns:
        (starts, ends, type ids), each [sentences, (entities)]; ends exclusive.
    """
    flat = tf.cast(tags.flat_values, tf.int64)
    p, t = tf.gather(prefixes, flat), tf.gather(types, flat)
    rows = tags.value_rowids()
    index = tf.range(tf.size(flat, tf.int64))
    row_start = index == tf.gather(tags.row_starts(), rows)
    prev_p = tf.where(~row_start, tf.roll(p, 1, 0), 0)
    prev_t = tf.where(~row_start, tf.roll(t, 1, 0), -1)
    inside = (p == 2) | (p == 3) if bioes else p == 2
    continues = inside & (t == prev_t) & ((prev_p == 1) | (prev_p == 2))
    begins = ~continues
    segment = tf.cumsum(tf.cast(begins, tf.int64)) - 1
    count = tf.reduce_sum(tf.cast(begins, tf.int64))
    seg_start = tf.boolean_mask(index, begins)
    seg_len = tf.math.unsorted_segment_sum(tf.ones_like(flat), segment, count)
    first = tf.gather(p, seg_start)
    last = tf.gather(p, seg_start + seg_len - 1)
    if bioes:
        entity = ((first == 4) & (seg_len == 1)) | ((first == 1) & (last == 3))
    else:
        entity = first == 1
    starts = tf.boolean_mask(seg_start, entity)
    ends = starts + tf.boolean_mask(seg_len, entity)
    kinds = tf.gather(t, starts)
    where = tf.gather(rows, starts)
    base = tf.gather(tags.row_starts(), where)
    nrows = tags.nrows()

    def ragged(values: tf.Tensor) -> tf.RaggedTensor:
        return tf.RaggedTensor.from_value_rowids(values, where, nrows)

    return ragged(starts - base), ragged(ends - base), ragged(kinds)


def specials_of(preprocessor: Any) -> Specials:
    """The framing ids a keras-hub text preprocessor's packer uses, and whether its
    model takes segment ids."""
    if not preprocessor.built:
        preprocessor.build(None)
    packer, tokenizer = preprocessor.packer, preprocessor.tokenizer

    def one(value: Any) -> int:
        return int(value[0] if isinstance(value, list | tuple) else value)

    oov = getattr(tokenizer, "oov_token", None) or "[UNK]"
    sample = preprocessor(x=tf.constant(["a"]))
    return Specials(
        start=one(packer.start_value),
        end=one(packer.end_value),
        pad=one(packer.pad_value),
        unknown=int(tokenizer.token_to_id(oov)),
        segments="segment_ids" in sample,
    )


def ragged_words(sentences: list[list[str]]) -> tf.RaggedTensor:
    """Word lists -> a [sentences, (words)] string tensor (one copy, no per-word
    Python objects in TF)."""
    flat = [w for words in sentences for w in words]
    lengths = [len(words) for words in sentences]
    return tf.RaggedTensor.from_row_lengths(
        tf.constant(flat, tf.string, shape=[len(flat)]),
        tf.constant(lengths, tf.int64, shape=[len(lengths)]),
    )


def encode_words(
    sentences: list[list[str]], preprocessor: Any, length: int, overlap: int
) -> Windows:
    """Word lists -> the windows the model reads (eagerly, for a whole split)."""
    specials = specials_of(preprocessor)
    words = ragged_words(sentences)
    pieces = word_pieces(preprocessor.tokenizer, words, specials.unknown)
    return make_windows(pieces, length, overlap, specials)


def piece_counts(sentences: list[list[str]], preprocessor: Any) -> np.ndarray:
    """Sub-tokens per sentence [sentences], before any windowing."""
    specials = specials_of(preprocessor)
    pieces = word_pieces(
        preprocessor.tokenizer, ragged_words(sentences), specials.unknown
    )
    return pieces.merge_dims(1, 2).row_lengths().numpy()
