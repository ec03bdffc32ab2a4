"""Layers tfsft's own heads share (keras-hub builds its heads the same way), and the
walk over a model's nested layers."""

from __future__ import annotations

import keras


def nested_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer nested in ``layer`` at any depth (not ``layer`` itself).

    Keras 3 has no public recursive walk (``Model.layers`` is the top level only);
    its own `_flatten_layers` is the walk Keras uses internally, called here only so
    that a Keras upgrade that renames it breaks this function, not its callers.
    """
    return list(layer._flatten_layers(include_self=False))


def output_layers(
    backbone: keras.Model, units: int, dropout: float, activation: object = None
) -> tuple[keras.layers.Dropout, keras.layers.Dense]:
    """Dropout, then a dense layer of ``units`` logits, in the backbone's dtype
    policy and initialised as BERT's heads are (truncated normal, stddev 0.02)."""
    return (
        keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        ),
        keras.layers.Dense(
            units,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            activation=activation,
            dtype=backbone.dtype_policy,
            name="logits",
        ),
    )


def freeze_pooler(backbone: keras.Model) -> None:
    """Freezes BERT's pooler (dense + tanh on [CLS]) for a head that never reads it,
    keeping it out of the optimizer and of the trainable-parameter count."""
    for layer in backbone.layers:
        if layer.name == "pooled_dense":
            layer.trainable = False
