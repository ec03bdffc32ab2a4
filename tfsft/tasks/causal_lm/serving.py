"""The exported signatures of a causal LM: prompt in, completion out, in the graph.

keras-hub's ``generate_step`` (the KV cache and the sampler's ``while_loop``) is
graph code, so the whole path traces into a SavedModel: the template's text around
the prompt is joined with ``tf.strings`` ops, the run's tokenizer runs in-graph,
generation stops at the template's eos, and only the completion is detokenized.

Signatures (batch dimension first everywhere):

- ``serving_default``: ``prompt`` string [b] and ``max_new_tokens`` int32 [b] ->
  ``completion`` string [b]; the prompt is one user turn, rendered exactly as
  `tfsft.data.chat.render_prompt` renders it; greedy.
- ``generate_text``: already-rendered ``text`` [b], ``max_new_tokens`` [b],
  ``temperature`` float32 [b] (0: greedy), ``top_k`` int32 [b] (0: no limit),
  ``top_p`` float32 [b] (1: no limit), ``seed`` int64 [b] -> ``completion``,
  ``completion_tokens`` int32, ``prompt_tokens`` int32, ``stopped`` bool (ended at
  the eos, not at max_new_tokens). The chat endpoint renders messages in Python.
- ``count_tokens``: ``text`` [b] -> ``token_count`` int32 [b] (checks before a
  merged batch runs; usage counts).
- ``serve_tokens``: token ids in, logits out, as for every task.

Each row gets at most its own ``max_new_tokens``: a batch generates up to the
longest prompt plus the largest budget, and each row is cut to its own.
"""

from __future__ import annotations

from typing import Any

import keras_hub
import tensorflow as tf

from tfsft.data.chat import Template, Turn, render_prompt
from tfsft.export.generate import COUNT_TOKENS, GENERATE_TEXT, MAX_NEW_TOKENS

USAGE = """`serving_default` (generate, greedy): `prompt` (string [batch]) and
`max_new_tokens` (int32 [batch]) in, `completion` (string [batch]) out. The run's
template is applied to each prompt as one user turn; generation stops at the
template's end token, which is not part of the completion.

`generate_text`: already-rendered `text` (string [batch]), `max_new_tokens`,
`temperature` (float32; 0 = greedy), `top_k` (int32; 0 = off), `top_p` (float32;
1 = off), `seed` (int64) in; `completion`, `completion_tokens`, `prompt_tokens`,
`stopped` (bool: ended at the end token) out. `count_tokens`: `text` in,
`token_count` out. `serve_tokens`: `token_ids` and `padding_mask` in, `logits` out.
`assets/template.json` holds the template, `assets/generation.json` the defaults."""


def prompt_affixes(template: Template) -> tuple[str, str]:
    """The rendered text before and after a single user message."""
    marker = "\x00tfsft-prompt\x00"  # cannot occur in any template text
    before, after = render_prompt([Turn("user", marker)], template).split(marker)
    return before, after


def signatures(
    model: Any,
    preprocessor: Any,
    template: Template,
    stop_ids: list[int],
    with_text: bool,
) -> dict[str, Any]:
    """``serve_tokens`` and, with ``with_text``, the generation signatures."""
    from tfsft.tasks.base import TEXT_SIGNATURE, TOKENS_SIGNATURE, token_signature

    def logits(features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.cast(model(features, training=False), tf.float32)

    found = {TOKENS_SIGNATURE: token_signature(model, logits)}
    if not with_text:
        return found
    # Each piece is traced once and called from the signatures that share it
    # (tracing the tokenizer and the generation loop is most of an export's time).
    tokenize = tf.function(
        lambda text: preprocessor.tokenizer(text),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    generator = Generator(model, preprocessor.tokenizer, stop_ids, tokenize)
    before, after = prompt_affixes(template)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.float32, name="top_p"),
            tf.TensorSpec([None], tf.int64, name="seed"),
        ]
    )
    def generate_text(
        text: tf.Tensor,
        max_new_tokens: tf.Tensor,
        temperature: tf.Tensor,
        top_k: tf.Tensor,
        top_p: tf.Tensor,
        seed: tf.Tensor,
    ) -> dict:
        sampler = RowSampler(temperature, top_k, top_p, seed)
        return generator(text, max_new_tokens, sampler)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="prompt"),
            tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
        ]
    )
    def generate(prompt: tf.Tensor, max_new_tokens: tf.Tensor) -> dict:
        text = tf.strings.join([before, prompt, after])
        rows = tf.shape(prompt)
        # Temperature 0: RowSampler's greedy rows are keras-hub's GreedySampler
        # (argmax of the softmax at temperature 1).
        out = generate_text(
            text,
            max_new_tokens,
            tf.zeros(rows, tf.float32),
            tf.zeros(rows, tf.int32),
            tf.ones(rows, tf.float32),
            tf.zeros(rows, tf.int64),
        )
        return {"completion": out["completion"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def count_tokens(text: tf.Tensor) -> dict:
        return {"token_count": tf.cast(tokenize(text).row_lengths(), tf.int32)}

    found[TEXT_SIGNATURE] = generate.get_concrete_function()
    found[GENERATE_TEXT] = generate_text.get_concrete_function()
    found[COUNT_TOKENS] = count_tokens.get_concrete_function()
    return found


class Generator:
    """Tokenize, generate with keras-hub, cut each row, detokenize (in a trace)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        stop_ids: list[int],
        tokenize: Any = None,
    ) -> None:
        from tfsft.tasks.causal_lm.generation import context_length, safe_pad_id

        self.model, self.tokenizer = model, tokenizer
        self.tokenize = tokenize or tokenizer  # text [b] -> ragged ids [b, (n)]
        self.stop_ids = tuple(stop_ids)
        pad = getattr(tokenizer, "pad_token_id", None) or 0
        self.pad_id = safe_pad_id(int(pad), stop_ids)
        self.context = context_length(model)

    def __call__(self, text: Any, max_new: Any, sampler: Any) -> dict[str, Any]:
        ids = self.tokenize(text)  # ragged [b, (n)] int32
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        checks = self._checks(lengths, max_new)
        with tf.control_dependencies(checks):
            width = tf.reduce_max(lengths) + tf.reduce_max(max_new)
        dense = ids.to_tensor(self.pad_id)  # [b, max n]
        dense = tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])
        positions = tf.range(width)[tf.newaxis, :]  # [1, width]
        mask = positions < lengths[:, tf.newaxis]  # [b, width]: the prompt
        dense = tf.where(mask, dense, self.pad_id)
        # keras-hub's generate_step reads the sampler from the model; the trace's
        # sampler (holding its tensors) is not left behind on it.
        previous, self.model.sampler = getattr(self.model, "sampler", None), sampler
        try:
            out = self.model.generate_step(
                {"token_ids": dense, "padding_mask": mask},
                stop_token_ids=self.stop_ids,
            )["token_ids"]
        finally:
            self.model.sampler = previous
        new = ~mask & (positions < (lengths + max_new)[:, tf.newaxis])
        is_stop = tf.reduce_any(
            out[..., tf.newaxis] == tf.constant(self.stop_ids, out.dtype), axis=-1
        )
        is_stop &= new
        stopped = tf.reduce_any(is_stop, axis=-1)
        first_stop = tf.where(
            stopped, tf.argmax(tf.cast(is_stop, tf.int32), -1, tf.int32), width
        )
        keep = new & (positions < first_stop[:, tf.newaxis])
        completion_ids = tf.ragged.boolean_mask(out, keep)  # [b, (new)]
        completion = self.tokenizer.detokenize(completion_ids)
        # A cut can end inside a multi-byte character; replace it, as the eager
        # (Hugging Face tokenizers) decoder does, so the output is valid UTF-8.
        completion = tf.strings.unicode_transcode(
            completion, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        return {
            "completion": completion,
            "completion_tokens": tf.cast(completion_ids.row_lengths(), tf.int32),
            "prompt_tokens": lengths,
            "stopped": stopped,
        }

    def _checks(self, lengths: Any, max_new: Any) -> list[Any]:
        """In-graph guards (InvalidArgument: a 400 from a server)."""
        checks = [
            tf.debugging.assert_equal(
                tf.shape(lengths),
                tf.shape(max_new),
                message="one max_new_tokens per prompt",
            ),
            tf.debugging.assert_positive(lengths, message="a prompt is empty"),
            tf.debugging.assert_positive(
                max_new, message="max_new_tokens must be at least 1"
            ),
            tf.debugging.assert_less_equal(
                max_new,
                MAX_NEW_TOKENS,
                message=f"max_new_tokens must be at most {MAX_NEW_TOKENS}",
            ),
        ]
        if self.context is not None:
            checks.append(
                tf.debugging.assert_less_equal(
                    lengths + max_new,
                    self.context,
                    message="prompt tokens plus max_new_tokens exceed the model's "
                    f"context of {self.context} tokens",
                )
            )
        return checks


class RowSampler(keras_hub.samplers.Sampler):
    """Greedy or top-k / top-p sampling chosen per row, reproducible per row.

    Args (tensors of the trace, each [batch]):
        temperature: 0 picks the most likely token (as keras-hub's GreedySampler);
            above 0 divides the logits before sampling.
        top_k: sample among the k most likely tokens (0: all).
        top_p: among the fewest tokens whose probability reaches p (1: all).
        seed: each row draws from a stateless generator keyed by (seed, position),
            so a row's sample does not depend on what it is batched with.
    """

    def __init__(self, temperature: Any, top_k: Any, top_p: Any, seed: Any) -> None:
        super().__init__()
        self.row_temperature = temperature
        self.top_k, self.top_p, self.seed = top_k, top_p, seed
        self._index = None

    def __call__(self, next: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        def indexed_next(prompt: Any, cache: Any, index: Any) -> Any:
            # The loop body calls `next` before `get_next_token`: remember the
            # position there, for the per-step seeds (the hooks do not get it).
            self._index = index
            return next(prompt, cache, index)

        return super().__call__(indexed_next, prompt, *args, **kwargs)

    def compute_probabilities(self, logits: Any) -> Any:
        t = self.row_temperature
        t = tf.where(t > 0, t, tf.ones_like(t))[:, tf.newaxis]
        return tf.nn.softmax(tf.cast(logits, tf.float32) / t)

    def get_next_token(self, probabilities: Any) -> Any:
        greedy = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        sample = lambda: self._sample(probabilities)  # noqa: E731
        # Sorting the vocabulary every step is wasted when every row is greedy.
        drawn = tf.cond(tf.reduce_any(self.row_temperature > 0), sample, lambda: greedy)
        return tf.where(self.row_temperature > 0, drawn, greedy)

    def _sample(self, probabilities: Any) -> Any:
        vocab = tf.shape(probabilities)[-1]
        ranked, order = tf.math.top_k(probabilities, k=vocab)  # [b, vocab]
        rank = tf.range(vocab)[tf.newaxis, :]
        k = tf.where(self.top_k > 0, self.top_k, vocab)[:, tf.newaxis]
        before = tf.cumsum(ranked, axis=-1, exclusive=True)
        # The most likely token is always kept, whatever top_k / top_p say.
        keep = (rank < k) & (before < self.top_p[:, tf.newaxis]) | (rank == 0)
        cdf = tf.cumsum(tf.where(keep, ranked, 0.0), axis=-1)
        index = tf.cast(self._index, tf.int64)
        uniform = tf.map_fn(
            lambda s: tf.random.stateless_uniform([], tf.stack([s, index])),
            self.seed,
            fn_output_signature=tf.float32,
        )
        target = uniform[:, tf.newaxis] * cdf[:, -1:]
        chosen = tf.reduce_sum(tf.cast(cdf <= target, tf.int32), axis=-1)
        kept = tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1)
        chosen = tf.minimum(chosen, kept - 1)
        return tf.gather(order, chosen[:, tf.newaxis], batch_dims=1)[:, 0]
