"""How a classifier turns the backbone's token vectors into one vector per text.

`model.pooling`:
- ``cls`` (the default): keras-hub's own head, on the backbone's pooled output (for
  BERT the [CLS] vector through the pretrained tanh "pooler" layer);
- ``mean``: the average of the token vectors under the padding mask, the pooling
  sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained with;
- ``auto``: what the checkpoint declares in a sentence-transformers
  ``1_Pooling/config.json`` beside its weights (mean or CLS), else ``cls``.

A checkpoint trained for mean pooling never trained its [CLS] vector or pooler as a
summary of the text, so a CLS head starts from a feature made for something else.
Measured with all-MiniLM-L6-v2 on SST-2 (docs/experiments.md, "Measured
figures"), mean pooling helped on 4,000 rows and was not reliably better on the full
set, so ``cls`` stays the default, as in keras-hub's and Hugging Face's classifiers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import keras_hub

from tfsft.errors import ConfigError
from tfsft.models.backbones import load_saved_task, saved_task_name
from tfsft.models.layers import freeze_pooler, output_layers

# Where sentence-transformers stores the pooling of its first module.
_ST_POOLING = Path("1_Pooling") / "config.json"


def resolve_pooling(pooling: str, preset: str) -> str:
    """``cls`` or ``mean`` for a `model.pooling` value and a resolved preset."""
    if pooling != "auto":
        return pooling
    declared = Path(preset) / _ST_POOLING
    if not declared.is_file():
        return "cls"
    try:
        modes = json.loads(declared.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"model.pooling: auto reads {declared}, which is not valid JSON ({e}); "
            "fix the file or set model.pooling to cls or mean"
        ) from None
    if isinstance(modes, dict) and modes.get("pooling_mode_mean_tokens"):
        return "mean"
    return "cls"


@keras.saving.register_keras_serializable(package="tfsft")
class MeanPoolingTextClassifier(keras_hub.models.TextClassifier):
    """A keras-hub text classifier whose head reads the mean of the token vectors.

    Inputs and outputs are those of keras-hub's classifiers: a dict of
    ``token_ids``, ``segment_ids`` and ``padding_mask`` [batch, seq] in, logits
    [batch, num_classes] out. The head is the same dropout and dense layer; only
    the pooled vector differs.
    """

    def __init__(
        self,
        backbone: keras_hub.models.Backbone,
        num_classes: int,
        preprocessor: Any = None,
        activation: Any = None,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        # Layers first, then the functional graph (keras-hub's task pattern).
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout, self.output_dense = output_layers(
            backbone, num_classes, dropout, activation
        )
        inputs = backbone.input
        outputs = backbone(inputs)
        if isinstance(outputs, dict):
            outputs = outputs["sequence_output"]  # [batch, seq, hidden]
        # Summed in float32: a bfloat16 sum of 64+ vectors loses most of its bits.
        vectors = keras.ops.cast(outputs, "float32")
        mask = keras.ops.cast(inputs["padding_mask"], "float32")[:, :, None]
        count = keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)  # [batch, 1]
        pooled = keras.ops.sum(vectors * mask, axis=1) / count  # [batch, hidden]
        logits = self.output_dense(self.output_dropout(pooled))
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        freeze_pooler(backbone)  # the head reads the token vectors, not [CLS]
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
            }
        )
        return config


def load_mean_pooling_classifier(
    preset_dir: Path, dtype: str | None
) -> MeanPoolingTextClassifier:
    """Loads a `MeanPoolingTextClassifier` that ``save_to_preset`` wrote."""
    keys = ("num_classes", "activation", "dropout")
    return load_saved_task(MeanPoolingTextClassifier, preset_dir, dtype, keys)


def is_mean_pooling_preset(preset_dir: Path) -> bool:
    """Whether a saved task preset holds a `MeanPoolingTextClassifier`."""
    return MeanPoolingTextClassifier.__name__ in saved_task_name(preset_dir)
