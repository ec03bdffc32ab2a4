"""Sentence-level heads on a loaded backbone: one vector per text -> dense logits.

keras-hub's `TextClassifier` (dropout and a dense layer on the backbone's pooled
output, for BERT the [CLS] vector through its tanh pooler) or tfsft's
`MeanPoolingTextClassifier` (the same head on the mean of the token vectors), as
`model.pooling` says. The classification, multilabel and regression tasks use them
with as many outputs as their targets have.
"""

from __future__ import annotations

from pathlib import Path

import keras
import keras_hub

from tfsft.config import ModelConfig
from tfsft.models.pooling import (
    MeanPoolingTextClassifier,
    is_mean_pooling_preset,
    load_mean_pooling_classifier,
    resolve_pooling,
)


def build_classifier(
    backbone: keras.Model, num_outputs: int, cfg: ModelConfig, preset: str
) -> keras.Model:
    """A fresh head of ``num_outputs`` logits on ``backbone``.

    The model takes the backbone's token tensors (``token_ids``, ``segment_ids``,
    ``padding_mask``, each [batch, seq]) and returns logits [batch, num_outputs].
    Its preprocessor is left out so that tokenization stays in tf.data (the run
    attaches it when saving).
    """
    if resolve_pooling(cfg.pooling, preset) == "mean":
        return MeanPoolingTextClassifier(
            backbone=backbone,
            num_classes=num_outputs,
            dropout=cfg.dropout,
            dtype=backbone.dtype_policy,
        )
    classifier = _text_classifier_class(type(backbone))
    return classifier(
        backbone=backbone,
        num_classes=num_outputs,
        preprocessor=None,
        activation=None,
        dropout=cfg.dropout,
    )


def load_classifier(preset_dir: Path, dtype: str | None) -> keras.Model:
    """Loads a classifier that `build_classifier` made and ``save_to_preset``
    wrote, with its preprocessor."""
    if is_mean_pooling_preset(preset_dir):
        return load_mean_pooling_classifier(preset_dir, dtype)
    return keras_hub.models.TextClassifier.from_preset(str(preset_dir), dtype=dtype)


def describe_text_classifier(model: keras.Model) -> str:
    """The pooling of the head, and how to load ``keras/`` when it is tfsft's own."""
    if isinstance(model, MeanPoolingTextClassifier):
        return (
            "mean of the token vectors (tfsft's `MeanPoolingTextClassifier`: load "
            "`keras/preset` with `tfsft.models.heads.load_classifier`, or "
            "`keras/model.keras` after `import tfsft.models.pooling`; keras-hub's "
            "`TextClassifier.from_preset` would put a fresh CLS head on it)"
        )
    return "keras-hub's classifier on the pooled [CLS] output"


def _text_classifier_class(backbone_cls: type) -> type:
    """keras-hub's `TextClassifier` subclass for a backbone class (BERT ->
    `BertTextClassifier`), as its ``from_preset`` would pick it."""
    pending = [keras_hub.models.TextClassifier]
    while pending:
        cls = pending.pop(0)
        if getattr(cls, "backbone_cls", None) is backbone_cls:
            return cls
        pending.extend(cls.__subclasses__())
    from tfsft.errors import ConfigError

    raise ConfigError(
        f"model.preset: keras-hub has no text classifier for {backbone_cls.__name__}"
    )
