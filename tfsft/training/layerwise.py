"""Fine-tuning strategies that treat the backbone layer by layer.

- Layer-wise learning-rate decay (`layer_lr_factors`): block l of L (1 = the
  bottom) trains at ``decay^(L - l)`` of the learning rate, the embeddings at
  ``decay^L``, everything else (the head, a final norm, the pooler) at the full
  rate. Factors go by variable identity, not name: the weights PEFT adds to a
  block (LoRA factors, adapters, prefixes) are that block's.
- Gradual unfreezing (ULMFiT; `GradualUnfreezing`): stage 0 trains the head
  alone, each later stage also the next group of blocks from the top, the
  embeddings last. The stage is a pure function of the global step, so a resumed
  run is at the same stage as the uninterrupted one at that step. The optimizer
  is built for every weight that will ever train (`build_for_unfreezing`), so a
  weight's moments stay zero until its stage: its state starts fresh, and a
  backup holds the same variables at every stage.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras

from tfsft.config_peft import GradualUnfreezingConfig
from tfsft.models.freeze import embedding_layers, transformer_blocks
from tfsft.models.layers import nested_layers
from tfsft.training.resume import global_step

log = logging.getLogger("tfsft")


def layer_lr_factors(model: keras.Model, decay: float) -> dict[int, float]:
    """``id(variable)`` -> learning-rate factor for the backbone's weights."""
    blocks = transformer_blocks(model.backbone)
    depth = len(blocks)
    factors = {
        id(w): decay**depth
        for layer in embedding_layers(model.backbone)
        for w in layer.weights
    }
    for level, block in enumerate(blocks, start=1):
        factors |= {id(w): decay ** (depth - level) for w in block.weights}
    return factors


def unfreezing_groups(model: keras.Model, per_stage: int) -> list[list[Any]]:
    """Groups of backbone layers in the order they unfreeze: blocks from the top,
    ``per_stage`` at a time, then the embeddings."""
    blocks = transformer_blocks(model.backbone)[::-1]
    groups = [blocks[i : i + per_stage] for i in range(0, len(blocks), per_stage)]
    return [*groups, embedding_layers(model.backbone)]


def build_for_unfreezing(model: keras.Model, cfg: GradualUnfreezingConfig) -> None:
    """Builds the optimizer for every weight that will train, then freezes all
    the groups (stage 0: the head alone). Call after compile, before restoring a
    backup."""
    groups = unfreezing_groups(model, cfg.blocks_per_stage)
    for group in groups:
        for layer in group:
            layer.trainable = True
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for group in groups:
        for layer in group:
            layer.trainable = False
    _retrace(model)


def _retrace(model: keras.Model) -> None:
    # A traced train step captured the old trainable set: trace it anew. Keras
    # also records the trainable state at compile time and warns at the next
    # fit() when it changed; the change here is deliberate, so record it.
    model._compiled_trainable_state = {
        layer: layer.trainable for layer in [model, *nested_layers(model)]
    }
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


class GradualUnfreezing(keras.callbacks.Callback):
    """Sets the trainable groups for the current stage before each step."""

    def __init__(self, cfg: GradualUnfreezingConfig, steps_per_epoch: int) -> None:
        super().__init__()
        self.cfg, self.steps_per_epoch = cfg, steps_per_epoch
        self.stage = -1
        self._groups: list[list[Any]] = []

    def stage_at(self, step: int) -> int:
        if self.cfg.every_steps is not None:
            return step // self.cfg.every_steps
        return step // self.steps_per_epoch // self.cfg.every_epochs

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.stage = -1
        self._groups = unfreezing_groups(self.model, self.cfg.blocks_per_stage)
        self._update()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._update()

    def _update(self) -> None:
        groups = self._groups
        stage = min(self.stage_at(global_step(self.model)), len(groups))
        if stage == self.stage:
            return
        for i, group in enumerate(groups):
            for layer in group:
                layer.trainable = i < stage
        self.stage = stage
        _retrace(self.model)
        trainable = sum(math.prod(w.shape) for w in self.model.trainable_weights)
        log.info(
            "gradual unfreezing: stage %d of %d (%s trainable params)",
            stage,
            len(groups),
            f"{trainable:,}",
        )
