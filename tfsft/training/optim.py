"""AdamW with linear warm-up, then linear, cosine or no decay (BERT-style recipe)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfsft.config import TrainConfig
from tfsft.training.replica_sync import SyncedClipping

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


@keras.saving.register_keras_serializable(package="tfsft")
class FusedAdamW(SyncedClipping, keras.optimizers.AdamW):
    """Keras AdamW whose Adam update is TF's fused ``ResourceApplyAdam`` kernel.

    `SyncedClipping` makes ``global_clipnorm`` clip the gradient summed over
    replicas, as one device would (see `tfsft.training.replica_sync`).

    Keras' generic update is about ten element-wise ops per variable, each a full
    pass over weights, moments and gradient; the fused kernel computes the same
    formula (bias-corrected step size, epsilon outside the square root) in one
    pass. Measured alone, one MiniLM update took 41 ms against Keras' 71 ms; inside
    a whole training step the difference was within noise, as TF runs Keras'
    per-variable ops in parallel with other work (docs/experiments.md, "Speed").
    Weight decay, clipping and the schedule stay Keras'. Under a multi-replica
    strategy, or with AMSGrad, the generic update runs, so distributed updates take
    the path Keras tests.
    """

    # id(variable) -> learning-rate factor (layer-wise decay); set before build.
    lr_factors: dict[int, float] | None = None

    def build(self, variables):
        super().build(variables)
        factors = self.lr_factors or {}
        # By index, as update_step finds a variable (ids do not survive tracing).
        self._lr_by_index = [factors.get(id(v), 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._lr_by_index[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        if (
            self.amsgrad
            or not isinstance(variable, tf.Variable)
            or tf.distribute.get_strategy().num_replicas_in_sync > 1
        ):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.value.handle,
            v=v.value.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            # Embedding gradients arrive as IndexedSlices; Adam's moments decay on
            # every row anyway, so the dense form is the exact update.
            grad=tf.convert_to_tensor(tf.cast(gradient, dtype)),
            use_locking=False,
        )


def make_optimizer(cfg: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW configured from ``cfg`` for a run of ``total_steps`` batches.

    The schedule counts batches, also with gradient accumulation (Keras evaluates
    it on the batch counter), so warm-up and decay span the run either way.
    """
    schedule = WarmupDecay(
        cfg.learning_rate,
        total_steps=total_steps,
        warmup_steps=round(cfg.warmup_ratio * total_steps),
        kind=cfg.schedule,
    )
    optimizer = FusedAdamW(
        learning_rate=schedule,
        weight_decay=cfg.weight_decay,
        epsilon=1e-8,  # the value HF/PyTorch use, so recipes transfer unchanged
        global_clipnorm=cfg.max_grad_norm,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps
        if cfg.gradient_accumulation_steps > 1
        else None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
