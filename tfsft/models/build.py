"""`build_model`: the pretrained backbone, loaded once, with a task's head on it."""

from __future__ import annotations

import keras

from tfsft.config import ModelConfig, PeftConfig
from tfsft.data.labels import LabelSpec
from tfsft.models.backbones import load_backbone, resolve_preset
from tfsft.models.freeze import apply_freeze
from tfsft.models.peft import apply_peft


def build_model(
    cfg: ModelConfig,
    labels: LabelSpec | int,
    task: str = "classification",
    peft: PeftConfig | None = None,
) -> keras.Model:
    """Loads ``cfg.preset``'s backbone, puts ``task``'s head on it, applies freezing.

    Args:
        cfg: the ``model`` section (preset, dropout, pooling, freeze).
        labels: the label space (`tfsft.tasks` builds it from the training data),
            or a number of outputs for a sentence-level task.
        task: a ``task:`` name.
        peft: the ``peft`` section (every method freezes the backbone and adds
            its own weights; the head stays trainable).

    Returns:
        A plain Keras (keras-hub) model taking the backbone's token tensors and
        returning logits; its preprocessor is detached (tokenization stays in
        tf.data).
    """
    from tfsft.tasks import get_task  # the tasks import this module's siblings

    if isinstance(labels, int):
        labels = LabelSpec(task, tuple(str(i) for i in range(labels)))
    preset = resolve_preset(cfg.preset)
    model = get_task(task).build_model(load_backbone(preset), cfg, labels, preset)
    apply_freeze(model, cfg.freeze)
    if peft is not None:
        apply_peft(model, peft, cfg.sequence_length)
    return model
