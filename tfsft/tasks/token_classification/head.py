"""The token-classification head: dropout and a dense layer on every token vector.

keras-hub has no token-classification task (keras-io #1765), so this is one, built
the way keras-hub builds its tasks (layers first, then the functional graph on
``backbone.input``), so that ``save_to_preset`` writes it like any keras-hub task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import keras_hub

from tfsft.models.backbones import load_saved_task
from tfsft.models.layers import freeze_pooler, output_layers


@keras.saving.register_keras_serializable(package="tfsft")
class TokenClassifier(keras_hub.models.Task):
    """Per-token logits [batch, seq, num_classes] from any keras-hub encoder.

    Takes the backbone's token tensors (``token_ids``, ``padding_mask`` and, for
    BERT, ``segment_ids``; each [batch, seq]).
    """

    def __init__(
        self,
        backbone: keras_hub.models.Backbone,
        num_classes: int,
        preprocessor: Any = None,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout, self.output_dense = output_layers(
            backbone, num_classes, dropout
        )
        inputs = backbone.input
        outputs = backbone(inputs)
        if isinstance(outputs, dict):
            outputs = outputs["sequence_output"]  # [batch, seq, hidden]
        logits = self.output_dense(self.output_dropout(outputs))
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        freeze_pooler(backbone)  # the head reads the token vectors, not [CLS]
        self.num_classes = num_classes
        self.dropout = dropout

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "dropout": self.dropout})
        return config


def load_token_classifier(preset_dir: Path, dtype: str | None) -> TokenClassifier:
    """Loads a `TokenClassifier` that ``save_to_preset`` wrote, with its tokenizer."""
    return load_saved_task(
        TokenClassifier, preset_dir, dtype, ("num_classes", "dropout")
    )
