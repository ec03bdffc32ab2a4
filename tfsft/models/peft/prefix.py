"""Prefix tuning: trainable key/value prefixes in every attention layer.

Feasible on keras-hub without forking: Keras' ``MultiHeadAttention`` (BERT), its
``CachedMultiHeadAttention`` subclass (GPT-2) and keras-hub's ``LlamaAttention``
all compute attention in one method, ``_compute_attention(query, key, value,
attention_mask, ...)``, on projected [batch, length, heads, head_dim] tensors,
after rotary embeddings and after a KV cache update. Each attention layer gets
its own override of that method (`rewire.set_method`), which concatenates
[P, heads, head_dim] learned keys and values in front of ``key`` and ``value``
and P ones in front of the mask's key axis. So every query (real tokens, cached
generation steps, packed examples) may attend to the prefix; positions and
sequence length are unchanged. The prefixes are keys after RoPE, so they carry
no position: each is equally visible from every position.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfsft.errors import ConfigError
from tfsft.models.freeze import freeze_backbone_layers
from tfsft.models.peft.rewire import Edit, attach, set_method


class PrefixKV(keras.layers.Layer):
    """[P, heads, head_dim] keys and values for one attention layer."""

    def __init__(self, count: int, heads: int, key_dim: int, value_dim: int) -> None:
        super().__init__(name="prefix")
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.keys = self.add_weight(
            name="keys", shape=(count, heads, key_dim), initializer=init
        )
        self.values = self.add_weight(
            name="values", shape=(count, heads, value_dim), initializer=init
        )
        self.built = True


def _heads(attention: keras.layers.Layer) -> tuple[int, int, int]:
    """(heads as ``key`` arrives in _compute_attention, key dim, value dim)."""
    if hasattr(attention, "num_query_heads"):  # Llama: K/V repeated to every head
        dim = int(attention._key_dense.kernel.shape[-1])
        return attention.num_query_heads, dim, dim
    return attention.num_heads, attention.key_dim, attention.value_dim


def _with_prefix(attention: keras.layers.Layer, prefix: PrefixKV) -> Any:
    original = attention._compute_attention  # the class's, bound

    def compute(
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        batch, count = ops.shape(key)[0], prefix.keys.shape[0]

        def expand(v: Any) -> Any:
            v = ops.cast(v, key.dtype)
            return ops.broadcast_to(ops.expand_dims(v, 0), (batch, *v.shape))

        key = ops.concatenate([expand(prefix.keys), key], axis=1)
        value = ops.concatenate([expand(prefix.values), value], axis=1)
        if attention_mask is None:
            # [batch, query, key]: real keys as the layer would (causal or not).
            q, k = ops.shape(query)[1], ops.shape(key)[1] - count
            if kwargs.pop("use_causal_mask", False):
                attention_mask = ops.greater_equal(
                    ops.arange(q)[:, None], ops.arange(k)[None, :]
                )
            else:
                attention_mask = ops.ones((q, k), "bool")
            attention_mask = ops.broadcast_to(attention_mask[None], (batch, q, k))
        ones = ops.ones_like(attention_mask[..., :1])
        ones = ops.repeat(ones, count, axis=-1)
        attention_mask = ops.concatenate([ones, attention_mask], axis=-1)
        return original(query, key, value, attention_mask, *args, **kwargs)

    return compute


def apply_prefix(model: keras.Model, count: int) -> list[Edit]:
    """Adds P learned key/value prefixes to every attention layer of the backbone."""
    backbone = model.backbone
    layers = freeze_backbone_layers(backbone)
    attentions = [
        layer
        for layer in layers
        if callable(getattr(layer, "_compute_attention", None))
    ]
    if not attentions:
        raise ConfigError(
            f"peft.method: prefix tuning found no attention layer in "
            f"{type(backbone).__name__}; use lora or adapter"
        )
    edits = []
    for attention in attentions:
        heads, key_dim, value_dim = _heads(attention)
        prefix = PrefixKV(count, heads, key_dim, value_dim)
        edits.append(attach(attention, "_tfsft_prefix", prefix))
        edits.append(
            set_method(attention, "_compute_attention", _with_prefix(attention, prefix))
        )
    return edits
