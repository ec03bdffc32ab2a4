"""Training on packed rows: several examples per row, no attention between them.

keras-hub's backbones take ``token_ids`` and ``padding_mask`` only, but their
transformer layers also accept ``decoder_attention_mask`` (merged with the causal
mask inside each layer). A packed row is therefore run by re-wiring the
backbone's own layers, not forking them: the embeddings, every transformer layer
with a block-diagonal mask built from ``segment_ids``, and the final norm (the LM
head is applied by `tfsft.tasks.causal_lm.training`). Positions restart in each
example: learned absolute position embeddings (GPT-2) are looked up per example;
rotary ones (Llama) make attention depend only on relative offsets, which the
block-diagonal mask keeps within an example, so they need nothing more.
"""

from __future__ import annotations

from typing import Any

import keras

from tfsft.errors import ConfigError


def check_packable(backbone: keras.Model) -> None:
    """Raises ConfigError for a backbone whose layout the packed path does not know."""
    needed = ("token_embedding", "transformer_layers", "layer_norm")
    has_positions = hasattr(backbone, "position_embedding")
    rotary = "rope_max_wavelength" in backbone.get_config()
    if not all(hasattr(backbone, n) for n in needed) or not (has_positions or rotary):
        raise ConfigError(
            f"data.packing: not supported for {type(backbone).__name__} (supported: "
            "GPT-2 and Llama-family backbones); set data.packing: false"
        )


def packed_hidden(
    backbone: keras.Model, inputs: dict[str, Any], training: bool | None = None
) -> Any:
    """Final hidden states [batch, length, hidden] of packed rows.

    Args:
        backbone: a GPT-2 or Llama-family keras-hub backbone.
        inputs: int32 [batch, length] ``token_ids``, ``padding_mask`` and
            ``segment_ids`` (1, 2, ... per example in a row; 0 for padding).
    """
    from keras import ops

    ids, padding = inputs["token_ids"], inputs["padding_mask"]
    seg = inputs["segment_ids"]
    # [batch, query, key]: a token sees only its own example (the layers add the
    # causal part).
    same = ops.logical_and(
        ops.equal(seg[:, :, None], seg[:, None, :]), ops.greater(seg[:, None, :], 0)
    )
    x = backbone.token_embedding(ids)
    if hasattr(backbone, "position_embedding"):
        # Position within its example: the index minus the tokens of the examples
        # before it in the row (segments are laid out in increasing order).
        # (Padding, segment 0, sits at the end of the row and is not counted.)
        before = ops.logical_and(
            ops.less(seg[:, None, :], seg[:, :, None]), ops.greater(seg[:, None, :], 0)
        )
        earlier = ops.sum(ops.cast(before, "int32"), -1)
        positions = ops.arange(ops.shape(seg)[1], dtype="int32")[None, :] - earlier
        table = backbone.position_embedding.position_embeddings
        x = backbone.embeddings_add((x, ops.take(table, positions, axis=0)))
        x = backbone.embeddings_dropout(x, training=training)
    for layer in backbone.transformer_layers:
        x = layer(
            x,
            decoder_padding_mask=padding,
            decoder_attention_mask=same,
            training=training,
        )
    return backbone.layer_norm(x)
