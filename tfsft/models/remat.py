"""Gradient checkpointing per transformer block (``train.gradient_checkpointing``).

Each block keeps only its input for the backward pass and recomputes its inside
(attention scores, MLP activations) then: activation memory drops from every
block's to one block's, for about one extra forward pass of compute. For a decoder
at 512 tokens the attention scores alone ([batch, heads, 512, 512] per block, in
float32 for the softmax) dominate a step's memory.

Keras' own ``RematScope`` wraps a layer's call in ``tf.recompute_grad``, which in
a TF graph accepts no keyword arguments, and keras-hub's blocks take their masks
as keyword arguments; so they are bound in a closure here, around the block's
own ``call`` (the block itself is not changed or forked).
"""

from __future__ import annotations

import functools
from typing import Any

import keras

# `auto`: batches of at least this many token positions (e.g. 8 x 384) are
# recomputed; shorter ones, whose activations are small, keep the faster plain step.
AUTO_MIN_TOKENS = 3072


def enable_block_remat(backbone: keras.Model, min_tokens: int = 0) -> int:
    """Recomputes every transformer block of ``backbone`` in the backward pass,
    in batches of at least ``min_tokens`` token positions (batch x width).

    Each batch width is traced once, so the choice costs nothing per step.

    Returns:
        The number of blocks wrapped.
    """
    blocks = list(getattr(backbone, "transformer_layers", []))
    for block in blocks:
        if not getattr(block, "_tfsft_remat", False):
            block.call = _rematerialized(block.call, min_tokens)
            block._tfsft_remat = True
    return len(blocks)


def _rematerialized(call: Any, min_tokens: int) -> Any:
    import tensorflow as tf

    @functools.wraps(call)
    def wrapper(sequence: Any, *args: Any, **kwargs: Any) -> Any:
        # Generation (a KV cache) and inference keep the plain call: nothing is
        # differentiated there.
        if args or kwargs.get("self_attention_cache") is not None:
            return call(sequence, *args, **kwargs)
        tokens = (
            sequence.shape[0] * sequence.shape[1]
            if None not in (sequence.shape[:2])
            else None
        )
        small = tokens is not None and tokens < min_tokens
        if not kwargs.get("training") or small:
            return call(sequence, **kwargs)

        # Only the block's input is a recompute_grad argument (it takes no keyword
        # arguments in a graph, and the masks need no gradient): the masks and
        # flags are captured by the closure.
        def block(sequence: Any) -> Any:
            return call(sequence, **kwargs)

        return tf.recompute_grad(block)(sequence)

    return wrapper
