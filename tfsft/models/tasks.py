"""Builds the Keras model of a task: a keras-hub backbone plus a classifier head."""

from __future__ import annotations

import keras

from tfsft.config import ModelConfig
from tfsft.models.backbones import resolve_preset
from tfsft.models.peft import apply_freeze


def build_model(cfg: ModelConfig, num_outputs: int) -> keras.Model:
    """Loads the pretrained backbone and puts a fresh head of ``num_outputs`` on it.

    The model takes token tensors (``token_ids``, ``segment_ids``, ``padding_mask``,
    each [batch, seq]) and returns logits [batch, num_outputs]. Its preprocessor is
    left out so that tokenization stays in tf.data (the run attaches it when saving).
    """
    import keras_hub

    model = keras_hub.models.TextClassifier.from_preset(
        resolve_preset(cfg.preset),
        num_classes=num_outputs,
        preprocessor=None,
        activation=None,
        dropout=cfg.dropout,
        # The global policy (set from runtime.precision) is passed explicitly, since
        # keras-hub cannot resolve a mixed policy saved in a fine-tuned preset.
        dtype=keras.config.dtype_policy(),
    )
    apply_freeze(model, cfg.freeze)
    return model
