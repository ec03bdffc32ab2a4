"""Byte-level BPE tokenizers that split text exactly as Hugging Face ``tokenizers``.

keras-hub's `BytePairTokenizer` pre-splits text with two different approximations of
the GPT-2 regex: its eager path uses Llama 3's pattern, and its in-graph path (tf.data,
SavedModels) inserts marker characters to fake the ``\\s+(?!\\S)`` look-ahead that RE2
lacks. Both differ from GPT-2-style tokenizers on runs of whitespace (``"  out"`` gives
``['ĠĠ', 'out']`` instead of ``['Ġ', 'Ġout']``), which matters for code and indented
text, and neither splits digits one by one as SmolLM2 does.

The mixin here replaces both paths with exact ones:

- eager: the ``tokenizers`` pre-tokenizer the model's own ``tokenizer.json`` declares
  (``Digits(individual_digits=True)`` when ``split_digits``, then ``ByteLevel``);
- in-graph: tensorflow-text regex splits plus ragged ops that resolve the look-ahead
  explicitly (no marker characters, so any input text is safe).

Tests compare both paths with ``tokenizers.Tokenizer.from_file`` on a corpus of code,
whitespace, digits, non-ASCII text and special tokens.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.models.gpt2.gpt2_tokenizer import GPT2Tokenizer
from keras_hub.src.models.llama3.llama3_tokenizer import Llama3Tokenizer
from keras_hub.src.utils.preset_utils import get_preset_loader
from keras_hub.src.utils.tensor_utils import preprocessing_function
from tokenizers import pre_tokenizers

# Oniguruma's Unicode ``\s`` (what ``tokenizers`` matches): \t-\r, U+0085 and the Z*
# categories. RE2's ``\s`` is ASCII-only, so it is spelled out.
_WS = r"\t\n\x0b\f\r\x{85}\p{Z}"
_WS_RUN = f"[{_WS}]+"
# GPT-2's pattern with its look-ahead alternative ``\s+(?!\S)|\s+`` reduced to
# ``\s+``: the segments this is applied to have had the look-ahead resolved already.
_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
_WORDS = rf" ?\p{{L}}+| ?[^{_WS}\p{{L}}\p{{N}}]+|{_WS_RUN}"
_SPLIT_GPT2 = rf"{_CONTRACTIONS}| ?\p{{L}}+| ?\p{{N}}+|{_WORDS}"
_SPLIT_DIGITS = rf"{_CONTRACTIONS}|\p{{N}}|{_WORDS}"


def _escape_re2(text: str) -> str:
    """``text`` as an RE2 literal (every non-alphanumeric character as ``\\x{..}``)."""
    return "".join(
        c if c.isalnum() and c.isascii() else f"\\x{{{ord(c):x}}}" for c in text
    )


def _resolve_lookahead(segments: tf.Tensor, split_digits: bool) -> tf.RaggedTensor:
    """Cuts 1-D strings into runs the reduced GPT-2 pattern splits exactly.

    GPT-2's ``\\s+(?!\\S)`` leaves the last character of a whitespace run for the
    word that follows (``"  out"`` -> ``" "``, ``" out"``). Each string is cut into
    alternating non-space and whitespace runs; a whitespace run followed by a word
    gives up its last character to that word. With ``split_digits`` the digits were
    cut off first in ``tokenizers``, so a run followed by a digit ends its piece and
    stays whole. Returns a ragged ``[n, (segments)]`` tensor.
    """
    runs = tf_text.regex_split(segments, _WS_RUN, _WS_RUN)  # [n, (runs)]
    values = runs.flat_values
    rows = runs.value_rowids()
    index = tf.range(tf.size(values, out_type=tf.int64))
    has_next = index < tf.gather(runs.row_splits[1:], rows) - 1
    is_first = index == tf.gather(runs.row_splits[:-1], rows)
    is_ws = tf.strings.regex_full_match(values, _WS_RUN)
    following = tf.concat([values[1:], [""]], axis=0)
    give = is_ws & has_next
    if split_digits:
        give &= ~tf.strings.regex_full_match(following, r"(?s)\p{N}.*")
    length = tf.strings.length(values, unit="UTF8_CHAR")
    head = tf.strings.substr(
        values, tf.zeros_like(length), length - 1, unit="UTF8_CHAR"
    )
    tail = tf.strings.substr(
        values, tf.maximum(length - 1, 0), tf.ones_like(length), unit="UTF8_CHAR"
    )
    takes = tf.concat([[False], give[:-1]], axis=0) & ~is_first
    prefix = tf.where(takes, tf.concat([[""], tail[:-1]], axis=0), "")
    out = tf.where(give, head, tf.strings.join([prefix, values]))
    return tf.ragged.boolean_mask(
        runs.with_flat_values(out), runs.with_flat_values(out != "")
    )


def split_bytelevel(
    texts: tf.Tensor, special_tokens: list[str], split_digits: bool
) -> tf.RaggedTensor:
    """Pre-tokenizes a 1-D string tensor as ``tokenizers`` does, in graph ops only.

    Args:
        texts: ``[batch]`` strings (UTF-8).
        special_tokens: strings matched whole anywhere in the text (longest first,
            as the added-token matcher of ``tokenizers`` does) and never split.
        split_digits: cut every ``\\p{N}`` character into its own piece first (the
            ``Digits(individual_digits=True)`` pre-tokenizer of SmolLM2/StarCoder).

    Returns:
        ``[batch, (pieces)]`` strings, each piece one BPE word or a special token.
    """
    pattern = _SPLIT_DIGITS if split_digits else _SPLIT_GPT2
    if not special_tokens:
        pieces = tf.RaggedTensor.from_tensor(texts[:, tf.newaxis])
        special = tf.zeros_like(texts, dtype=tf.bool)
    else:
        ordered = sorted(set(special_tokens), key=len, reverse=True)
        alternation = "|".join(_escape_re2(t) for t in ordered)
        pieces = tf_text.regex_split(texts, alternation, alternation)  # [b, (p)]
        special = tf.strings.regex_full_match(pieces.flat_values, alternation)
    flat = pieces.flat_values
    # Specials become empty text (no segments) and are appended back whole below.
    segments = _resolve_lookahead(tf.where(special, "", flat), split_digits)
    words = tf_text.regex_split(segments.flat_values, pattern, pattern)
    words = segments.with_flat_values(words).merge_dims(1, 2)  # [p, (w)]
    whole = tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(flat, special), tf.cast(special, tf.int64)
    )
    words = tf.concat([words, whole], axis=1)
    return pieces.with_flat_values(words).merge_dims(1, 2)


class ExactByteLevelSplit:
    """Mixin for keras-hub `BytePairTokenizer` subclasses: exact GPT-2-style split.

    Args:
        split_digits: split every digit into its own word before BPE (SmolLM2);
            GPT-2 itself keeps runs of digits together.
    """

    def __init__(self, *args: Any, split_digits: bool = False, **kwargs: Any) -> None:
        # Set before the base __init__, which builds the eager tokenizer with it.
        self.split_digits = split_digits
        super().__init__(*args, **kwargs)

    def _set_vocabulary_and_merges_tokenizers(
        self, vocabulary: Any, merges: Any
    ) -> None:
        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        steps = (
            [pre_tokenizers.Digits(individual_digits=True)] if self.split_digits else []
        )
        steps.append(
            pre_tokenizers.ByteLevel(
                add_prefix_space=self.add_prefix_space, use_regex=True
            )
        )
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)

    @preprocessing_function
    def _tokenize_tf(self, inputs: Any) -> Any:
        self._maybe_initialized_tf()
        inputs = tf.convert_to_tensor(inputs)
        if self.add_prefix_space:
            inputs = tf.strings.join([" ", inputs])
        scalar = inputs.shape.rank == 0
        if scalar:
            inputs = inputs[tf.newaxis]
        if inputs.shape.rank != 1:
            raise ValueError(f"tokenize() takes a string or a 1-D batch; got {inputs}")
        words = split_bytelevel(
            inputs, list(self.unsplittable_tokens or []), self.split_digits
        )
        flat = words.flat_values  # [n] pre-tokens
        # keras-hub's cache maps a word to its BPE pieces joined by spaces; special
        # tokens are in it already, mapped to themselves.
        cached = self.cache.lookup(flat)
        unseen = cached == ""

        def merge_unseen() -> tf.Tensor:
            self._bpe_merge_and_update_cache_tf(tf.boolean_mask(flat, unseen))
            return self.cache.lookup(flat)

        merged = tf.cond(
            tf.reduce_any(unseen & (flat != "")), merge_unseen, lambda: cached
        )
        tokens = tf.strings.split(merged, sep=" ")  # [n, (tokens)]
        if self.compute_dtype != tf.string:
            tokens = self.token_to_id_map.lookup(tokens)
        tokens = words.with_flat_values(tokens).merge_dims(1, 2)  # [b, (tokens)]
        if self.sequence_length:
            pad = (
                ""
                if self.compute_dtype == tf.string
                else getattr(self, "pad_token_id", 0)
            )
            tokens = tokens.to_tensor(pad, shape=[None, self.sequence_length])
        if scalar:
            tokens = tokens[0]
        return tokens

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["split_digits"] = self.split_digits
        return config

    @classmethod
    def from_preset(
        cls, preset: str, config_file: str = "tokenizer.json", **kwargs: Any
    ):
        # `backbone_cls` is None (see below), so keras-hub's own lookup would search
        # for a subclass of this class; load through the preset's loader directly.
        return get_preset_loader(preset).load_tokenizer(cls, config_file, **kwargs)


@keras.saving.register_keras_serializable(package="tfsft")
class LlamaBPETokenizer(ExactByteLevelSplit, Llama3Tokenizer):
    """keras-hub's `Llama3Tokenizer` with an exact split and a config that reloads.

    keras-hub 0.32's `Llama3Tokenizer.get_config()` drops ``bos_token``,
    ``eos_token`` and the other special tokens, so a saved preset reloads with
    Llama 3's defaults, which SmolLM2's vocabulary lacks; its padding id is fixed
    at 0. Here the special tokens are kept in the config and padding uses
    ``pad_token`` (the end token unless given).

    Args:
        vocabulary: token -> id dict or path of a vocabulary JSON.
        merges: merge rules (``"a b"`` strings) or path of a merges file.
        bos_token: the start token (added only if the preprocessor says so).
        eos_token: the end token, which also stops generation.
        pad_token: padding token; defaults to ``eos_token``.
        misc_special_tokens: other tokens matched whole in text (``<|im_start|>``).
        split_digits: split numbers into single digits before BPE.
    """

    # None keeps keras-hub's class lookup (`find_subclass`, which picks among
    # same-backbone classes in set order) choosing keras-hub's own classes.
    backbone_cls = None

    def __init__(
        self,
        vocabulary: Any = None,
        merges: Any = None,
        bos_token: str = "<|im_start|>",
        eos_token: str = "<|im_end|>",
        pad_token: str | None = None,
        misc_special_tokens: Any = (),
        split_digits: bool = True,
        **kwargs: Any,
    ) -> None:
        self.pad_token = pad_token or eos_token
        # A fresh set: Llama3Tokenizer subtracts from the one it gets in place.
        misc = set(misc_special_tokens) - {bos_token, eos_token}
        self._add_special_token(self.pad_token, "pad_token")
        super().__init__(
            vocabulary=vocabulary,
            merges=merges,
            bos_token=bos_token,
            eos_token=eos_token,
            misc_special_tokens=misc,
            split_digits=split_digits,
            **kwargs,
        )
        # Llama3Tokenizer set pad_token_id = 0; the vocabulary may be loaded later
        # (from preset assets), when `_update_special_token_ids` sets it again.
        self.pad_token_id = self._safe_id(self.pad_token)
        self._misc_special_tokens = tuple(sorted(misc))

    def _safe_id(self, token: str) -> int | None:
        try:
            return self.token_to_id(token)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            bos_token=self.start_token,
            eos_token=self.end_token,
            pad_token=self.pad_token,
            misc_special_tokens=list(self._misc_special_tokens),
        )
        return config


@keras.saving.register_keras_serializable(package="tfsft")
class ExactGPT2Tokenizer(ExactByteLevelSplit, GPT2Tokenizer):
    """keras-hub's `GPT2Tokenizer` splitting text exactly as GPT-2's tokenizer.

    Digits stay together (``split_digits=False``), as in GPT-2. Use it like
    `GPT2Tokenizer`: ``ExactGPT2Tokenizer(vocabulary="vocab.json",
    merges="merges.txt")``.
    """

    backbone_cls = None
