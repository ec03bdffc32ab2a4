"""AdamW with linear warm-up, then linear, cosine or no decay (BERT-style recipe)."""

from __future__ import annotations

import math

import keras

from tfsft.config import TrainConfig
from tfsft.training.replica_sync import AdamW

# Biases and LayerNorm scales/offsets are not decayed: decaying them only hurts
# (Loshchilov & Hutter; the BERT reference implementation does the same).
NO_DECAY = ["^bias$", "^gamma$", "^beta$"]  # regexes on variable.name


@keras.saving.register_keras_serializable(package="tfsft")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then decay to 0."""

    def __init__(
        self, peak: float, total_steps: int, warmup_steps: int, kind: str = "linear"
    ) -> None:
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup = self.peak * step / warm
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.kind == "cosine":
            decayed = self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "linear":
            decayed = self.peak * (1.0 - progress)
        else:
            decayed = ops.full_like(progress, self.peak)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
        }


def make_optimizer(cfg: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW configured from ``cfg`` for a run of ``total_steps`` optimizer steps."""
    schedule = WarmupDecay(
        cfg.learning_rate,
        total_steps=total_steps,
        warmup_steps=round(cfg.warmup_ratio * total_steps),
        kind=cfg.schedule,
    )
    optimizer = AdamW(  # keras' AdamW, with clipping fixed for multi-replica
        learning_rate=schedule,
        weight_decay=cfg.weight_decay,
        epsilon=1e-8,  # the value HF/PyTorch use, so recipes transfer unchanged
        global_clipnorm=cfg.max_grad_norm,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
