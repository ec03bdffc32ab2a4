"""`SFTCausalLM`: keras-hub's CausalLM as fit() trains it for SFT.

Two things differ from calling keras-hub's model in a plain fit():

- Packed rows (with ``segment_ids``) run through `packing.packed_hidden`.
- The loss is the mean over the global batch's trained tokens, also under a
  multi-replica strategy (`_token_mean_loss`).
- The LM head runs only where the loss is: in a training step the model returns
  hidden states, and `compute_loss` gathers the positions with a non-zero weight
  (the responses) before the [hidden x vocab] projection. In instruction data most
  tokens are prompt, and the projection (and its [tokens, vocab] float32 logits,
  their softmax and gradient) is the largest single cost of a small decoder's
  step; TRL's trainer skips it the same way. Under XLA (TPU, jit_compile) the
  shapes must stay static, so there every position is projected.

Everything else (saving, generation, the preprocessor) is the wrapped model's.
"""

from __future__ import annotations

from typing import Any

import keras

from tfsft.tasks.causal_lm.packing import check_packable, packed_hidden


class SFTCausalLM(keras.Model):
    """Wraps keras-hub's CausalLM for training (see the module docstring)."""

    def __init__(self, causal_lm: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.causal_lm = causal_lm
        self.built = True  # the wrapped model's variables all exist already
        self._compact: tuple | None = None

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        backbone = self.causal_lm.backbone
        if "segment_ids" in inputs:
            check_packable(backbone)  # at trace time: before the first step
            hidden = packed_hidden(backbone, inputs, training)
        else:
            hidden = backbone(
                {k: inputs[k] for k in ("token_ids", "padding_mask")},
                training=training,
            )
        if training and self._compact_head():
            return hidden  # compute_loss applies the head where the loss is
        return backbone.token_embedding(hidden, reverse=True)

    def _compact_head(self) -> bool:
        import tensorflow as tf

        tpu = isinstance(tf.distribute.get_strategy(), tf.distribute.TPUStrategy)
        return not (tpu or getattr(self, "jit_compile", False))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        self._compact = None
        if training and sample_weight is not None and self._compact_head():
            import tensorflow as tf

            # [n, 2] (row, position) of every trained token, plus (0, 0) with
            # weight 0 so that a batch without any trained token still has one.
            where = tf.concat(
                [tf.zeros([1, 2], tf.int64), tf.where(sample_weight > 0)], axis=0
            )
            weights = tf.gather_nd(sample_weight, where)
            weights = tf.tensor_scatter_nd_update(weights, [[0]], [0.0])
            hidden = tf.gather_nd(y_pred, where)  # [n, hidden]
            logits = self.causal_lm.backbone.token_embedding(hidden, reverse=True)
            targets = tf.gather_nd(y, where)
            self._compact = (targets, logits, weights)
            return _token_mean_loss(targets, logits, weights) + sum(self.losses)
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> Any:
        if self._compact is not None:
            y, y_pred, sample_weight = self._compact
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # What the trainer and generation use of a keras-hub task is the wrapped one's.
    # (Setting goes to the wrapped model too: Keras would otherwise track a new
    # sub-layer on this built model, which it forbids.)
    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("preprocessor", "sampler"):
            setattr(self.causal_lm, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def backbone(self) -> keras.Model:
        return self.causal_lm.backbone

    @property
    def preprocessor(self) -> Any:
        return self.causal_lm.preprocessor

    @property
    def sampler(self) -> Any:
        return self.causal_lm.sampler

    def save_to_preset(self, preset_dir: str) -> None:
        self.causal_lm.save_to_preset(preset_dir)

    def generate_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.causal_lm.generate_step(*args, **kwargs)


def _token_mean_loss(targets: Any, logits: Any, weights: Any) -> Any:
    """Cross-entropy summed over this replica's trained tokens, divided by the
    trained tokens of the whole global batch.

    With N replicas, Keras sums their gradients, so each replica dividing by the
    global count gives exactly the one-device mean over the batch's tokens;
    dividing by its own count (keras' "mean_with_sample_weight") would weight a
    replica's tokens by how few it happened to get. (Keras' loss tracker scales
    a replica's loss by N and averages over replicas, which reports the same
    global mean.)
    """
    import tensorflow as tf

    nll = keras.losses.sparse_categorical_crossentropy(
        targets, tf.cast(logits, tf.float32), from_logits=True
    )
    total = tf.reduce_sum(weights)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
    return tf.math.divide_no_nan(tf.reduce_sum(weights * nll), total)
