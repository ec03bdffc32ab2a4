"""The compiled model: backbone + head + task loss and metrics + AdamW, built
inside the strategy and restored from a backup when resuming."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from tfsft.config import ExperimentConfig
from tfsft.data.labels import LabelSpec
from tfsft.models.build import build_model
from tfsft.models.peft import lora_layers
from tfsft.models.remat import AUTO_MIN_TOKENS, enable_block_remat
from tfsft.tasks import get_task
from tfsft.training.distribute import build_for_fit
from tfsft.training.feed import Feed
from tfsft.training.layerwise import build_for_unfreezing, layer_lr_factors
from tfsft.training.optim import make_optimizer
from tfsft.training.resume import restore_backup


def compile_model(model: keras.Model, cfg: ExperimentConfig, total_steps: int) -> None:
    """Compiles ``model`` with the task's loss and metrics, AdamW and its schedule."""
    task = get_task(cfg)
    if cfg.train.gradient_checkpointing:
        auto = cfg.train.gradient_checkpointing == "auto"
        enable_block_remat(model.backbone, AUTO_MIN_TOKENS if auto else 0)
    optimizer = make_optimizer(cfg.train, total_steps)
    factors = lr_factors(model, cfg)
    if factors:
        object.__setattr__(optimizer, "lr_factors", factors)
    model.compile(
        optimizer=optimizer,
        loss=task.loss(),
        metrics=task.metrics(),
        weighted_metrics=task.weighted_metrics() or None,
        jit_compile=cfg.runtime.jit_compile,
        steps_per_execution=cfg.runtime.steps_per_execution,
    )


def lr_factors(model: keras.Model, cfg: ExperimentConfig) -> dict[int, float]:
    """``id(variable)`` -> learning-rate factor: layer-wise decay, times LoRA+'s
    ratio on the B factors (both by variable, so they compose)."""
    factors: dict[int, float] = {}
    if cfg.train.layer_lr_decay is not None:
        factors = layer_lr_factors(model, cfg.train.layer_lr_decay)
    ratio = cfg.peft.loraplus_lr_ratio if cfg.peft.method == "lora" else None
    if ratio is not None:
        for layer in lora_layers(model):
            key = id(layer.lora_b)
            factors[key] = factors.get(key, 1.0) * ratio
    return factors


def build_compiled(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    labels: LabelSpec,
    feed: Feed,
) -> tuple[keras.Model, int]:
    """The compiled model inside the strategy, and the step to resume at (0: new)."""
    with strategy.scope():
        model = build_model(cfg.model, labels, cfg.task, cfg.peft)
        compile_model(model, cfg, feed.total_steps)
        if cfg.train.gradual_unfreezing is not None:
            build_for_unfreezing(model, cfg.train.gradual_unfreezing)
        # Inside the scope: the optimizer's slots must be created by the strategy.
        start_step = restore_backup(model, run_dir / "backup")
        # Before fit: tf.function traces a first call that creates variables (the
        # slots) twice, which cost ~9 s of MiniLM's 25 s first step on 2 cores.
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    if feed.element_spec is not None:
        build_for_fit(model, strategy, feed.element_spec)
    return model, start_step


def single_device_copy(
    model: keras.Model, cfg: ExperimentConfig, labels: LabelSpec, total_steps: int
) -> keras.Model:
    """The same model and weights, built outside the strategy (on one device)."""
    copy = build_model(cfg.model, labels, cfg.task, cfg.peft)
    compile_model(copy, cfg, total_steps)
    copy.set_weights(model.get_weights())
    return copy
