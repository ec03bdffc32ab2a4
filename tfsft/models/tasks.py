"""Builds the Keras model of a task: a keras-hub backbone plus a classifier head."""

from __future__ import annotations

from pathlib import Path

import keras

from tfsft.config import ModelConfig
from tfsft.models.backbones import resolve_preset
from tfsft.models.peft import apply_freeze
from tfsft.models.pooling import (
    MeanPoolingTextClassifier,
    is_mean_pooling_preset,
    load_mean_pooling_classifier,
    resolve_pooling,
)


def build_model(cfg: ModelConfig, num_outputs: int) -> keras.Model:
    """Loads the pretrained backbone and puts a fresh head of ``num_outputs`` on it.

    The head pools as ``cfg.pooling`` says (see `tfsft.models.pooling`).

    The model takes token tensors (``token_ids``, ``segment_ids``, ``padding_mask``,
    each [batch, seq]) and returns logits [batch, num_outputs]. Its preprocessor is
    left out so that tokenization stays in tf.data (the run attaches it when saving).
    """
    import keras_hub

    preset = resolve_preset(cfg.preset)
    # The global policy (set from runtime.precision) is passed explicitly, since
    # keras-hub cannot resolve a mixed policy saved in a fine-tuned preset.
    dtype = keras.config.dtype_policy()
    if resolve_pooling(cfg.pooling, preset) == "mean":
        model = MeanPoolingTextClassifier(
            backbone=keras_hub.models.Backbone.from_preset(preset, dtype=dtype),
            num_classes=num_outputs,
            dropout=cfg.dropout,
            dtype=dtype,
        )
    else:
        model = keras_hub.models.TextClassifier.from_preset(
            preset,
            num_classes=num_outputs,
            preprocessor=None,
            activation=None,
            dropout=cfg.dropout,
            dtype=dtype,
        )
    apply_freeze(model, cfg.freeze)
    return model


def load_classifier(preset_dir: Path, dtype: str | None) -> keras.Model:
    """Loads a classifier that `build_model` made and ``save_to_preset`` wrote."""
    if is_mean_pooling_preset(preset_dir):
        return load_mean_pooling_classifier(preset_dir, dtype)
    import keras_hub

    return keras_hub.models.TextClassifier.from_preset(str(preset_dir), dtype=dtype)
