"""Prompt tuning: ``num_virtual_tokens`` trainable input embeddings.

The virtual tokens are token ids past the vocabulary (V, V+1, ..., V+P-1), so
everything that handles token ids (lengths, masks, positions, the KV cache of
generation, the export's raw-text signature) handles them too:

- the token embedding (a node of the functional backbone, hence `swap_class`)
  looks ids >= V up in the prompt table and the rest in its own table; its
  reverse use (a decoder's LM head) is unchanged;
- the backbone's ``call`` inserts the P ids after [CLS] (encoders) or at the very
  start (decoders), with mask 1 and segment 0, and drops those P positions from
  the sequence output, so heads and losses see the original positions;
- a causal LM's ``generate_step`` (which runs the layers through its KV cache,
  not through ``call``) inserts them at the start of every prompt and drops them
  from what it returns.

The sequence grows by P, as with HF PEFT, whose prompt tuning likewise prepends
embeddings that then get the following position embeddings.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfsft.errors import ConfigError
from tfsft.models.freeze import freeze_backbone_layers
from tfsft.models.peft.rewire import Edit, attach, set_method, swap_class


class PromptTable(keras.layers.Layer):
    """[P, hidden] virtual-token embeddings, initialised from P random rows of the
    vocabulary's embeddings (a better start than noise, as Lester et al. found)."""

    def __init__(self, embedding: keras.layers.Layer, count: int, seed: int) -> None:
        super().__init__(name="prompt_table", dtype=embedding.dtype_policy)
        table = np.asarray(ops.convert_to_numpy(embedding.embeddings), np.float32)
        rows = np.random.default_rng(seed).choice(len(table), count, replace=False)
        self.source_ids = rows  # the vocabulary rows it starts as
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(count, table.shape[1]),
            initializer=keras.initializers.Constant(table[rows]),
        )
        self.built = True


class _PromptEmbedding:
    """Mixin for the token embedding: ids >= vocabulary size are virtual tokens."""

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("reverse") or (args and args[0] is True):
            return super().call(inputs, *args, **kwargs)
        vocab = self.input_dim
        table = self._tfsft_prompt.embeddings
        virtual = ops.greater_equal(inputs, vocab)
        real = super().call(ops.where(virtual, 0, inputs), *args, **kwargs)
        index = ops.clip(inputs - vocab, 0, table.shape[0] - 1)
        prompt = ops.cast(ops.take(table, index, axis=0), real.dtype)
        return ops.where(ops.expand_dims(virtual, -1), prompt, real)


def _insert(inputs: dict[str, Any], at: int, count: int, vocab: int) -> dict[str, Any]:
    """``inputs`` with ``count`` virtual tokens inserted at position ``at``."""
    ids = inputs["token_ids"]
    batch = ops.shape(ids)[0]
    fills = {
        "token_ids": ops.arange(vocab, vocab + count, dtype=ids.dtype),
        "padding_mask": None,  # ones of the mask's dtype
        "segment_ids": None,  # zeros
    }
    out = dict(inputs)
    for key, value in inputs.items():
        fill = fills[key]
        if fill is None:
            one = 1 if key == "padding_mask" else 0
            fill = ops.full((count,), one, dtype=value.dtype)
        fill = ops.broadcast_to(ops.expand_dims(fill, 0), (batch, count))
        out[key] = ops.concatenate([value[:, :at], fill, value[:, at:]], axis=1)
    return out


def _drop(x: Any, at: int, count: int) -> Any:
    return ops.concatenate([x[:, :at], x[:, at + count :]], axis=1)


class _PromptBackbone:
    """Mixin for the backbone: inserts the virtual tokens, drops their outputs."""

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        at, count = self._tfsft_prompt_at, self._tfsft_prompt_count
        inputs = _insert(inputs, at, count, self.token_embedding.input_dim)
        out = super().call(inputs, *args, **kwargs)
        if isinstance(out, dict):  # BERT: sequence and pooled [CLS] outputs
            return {
                k: _drop(v, at, count) if len(v.shape) == 3 else v
                for k, v in out.items()
            }
        return _drop(out, at, count)


def apply_prompt(
    model: keras.Model, count: int, sequence_length: int | None, seed: int
) -> list[Edit]:
    """Adds prompt tuning to ``model`` (see the module docstring)."""
    backbone = model.backbone
    embedding = getattr(backbone, "token_embedding", None)
    unknown = set(backbone.input) - {"token_ids", "padding_mask", "segment_ids"}
    if embedding is None or unknown or not isinstance(backbone.input, dict):
        raise ConfigError(
            f"peft.method: prompt tuning does not know {type(backbone).__name__}'s "
            "inputs; use lora or adapter"
        )
    limit = getattr(backbone, "max_sequence_length", None)
    if limit and sequence_length and sequence_length + count > limit:
        raise ConfigError(
            f"peft.num_virtual_tokens: {count} virtual tokens plus "
            f"model.sequence_length {sequence_length} exceed the "
            f"{limit} positions of {type(backbone).__name__}; lower one of them"
        )
    decoder = hasattr(model, "generate_step")
    freeze_backbone_layers(backbone)
    table = PromptTable(embedding, count, seed)
    edits = [attach(embedding, "_tfsft_prompt", table)]
    edits.append(swap_class(embedding, _PromptEmbedding))
    object.__setattr__(backbone, "_tfsft_prompt_at", 0 if decoder else 1)
    object.__setattr__(backbone, "_tfsft_prompt_count", count)
    edits.append(swap_class(backbone, _PromptBackbone))
    if decoder:
        causal_lm = getattr(model, "causal_lm", model)
        edits.append(_prompted_generation(causal_lm, count, embedding.input_dim))
    return edits


def _prompted_generation(causal_lm: keras.Model, count: int, vocab: int) -> Edit:
    original = causal_lm.generate_step  # the class's, bound to this model

    def generate_step(inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        out = original(_insert(inputs, 0, count, vocab), *args, **kwargs)
        return {k: _drop(v, 0, count) for k, v in out.items()}

    return set_method(causal_lm, "generate_step", generate_step)
