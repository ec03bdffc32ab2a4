"""Freezing policies and parameter accounting.

`model.freeze`:
- ``none``: everything trains;
- ``backbone``: only the head trains (linear probing);
- ``embeddings``: token/position/segment embeddings and their LayerNorm are frozen;
- ``{first_n_layers: K}``: the embeddings and the first K transformer layers are frozen
  (the usual "freeze the bottom of the network" recipe).
"""

from __future__ import annotations

import math

import keras

from tfsft.config import FreezeLayersConfig
from tfsft.errors import ConfigError
from tfsft.models.layers import nested_layers


def apply_freeze(model: keras.Model, freeze: str | FreezeLayersConfig) -> None:
    """Marks layers of ``model.backbone`` non-trainable. Call before compile."""
    backbone = model.backbone
    if freeze == "none":
        return
    if freeze == "backbone":
        backbone.trainable = False
        return
    blocks = transformer_blocks(backbone)
    for layer in embedding_layers(backbone):
        layer.trainable = False
    if isinstance(freeze, FreezeLayersConfig):
        if freeze.first_n_layers > len(blocks):
            raise ConfigError(
                f"model.freeze.first_n_layers: {freeze.first_n_layers} is more than "
                f"the {len(blocks)} transformer layers of this backbone"
            )
        for layer in blocks[: freeze.first_n_layers]:
            layer.trainable = False


def freeze_backbone_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    """Freezes every layer of ``backbone`` but leaves the backbone itself trainable,
    so that weights a PEFT method adds to it later still train. Returns its layers."""
    backbone.trainable = True
    layers = nested_layers(backbone)
    for layer in layers:
        layer.trainable = False
    return layers


def transformer_blocks(backbone: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's transformer layers, bottom first."""
    blocks = getattr(backbone, "transformer_layers", None)
    if blocks:
        return list(blocks)
    return [layer for layer in backbone.layers if "transformer_layer" in layer.name]


def embedding_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    """Layers with weights that come before the first transformer layer."""
    first = transformer_blocks(backbone)[:1]
    out = []
    for layer in backbone.layers:
        if first and layer is first[0]:
            break
        if layer.weights:
            out.append(layer)
    return out


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = sum(math.prod(w.shape) for w in model.weights)
    return trainable, total
