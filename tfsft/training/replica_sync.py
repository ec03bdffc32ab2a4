"""Gradient clipping that sees the global batch's gradient under tf.distribute.

Keras 3 (3.15, TensorFlow backend) clips gradients in ``_backend_apply_gradients``
*before* ``_backend_update_step`` all-reduces them across replicas. With N replicas
each replica then clips its own part of the gradient (its slice's mean loss divided
by N), so ``global_clipnorm`` limits N partial norms instead of the norm of their
sum: the update differs from a single device's on the same global batch whenever the
clip is active, which for BERT fine-tuning (max_grad_norm 1.0) is most early steps.

`SyncedClipping` moves the all-reduce in front of the clipping: ``_clip_gradients``
sums the gradients over replicas and clips the sum, and ``_all_reduce_sum_gradients``
then passes them through instead of summing them a second time. One all-reduce per
step, as before. Both hooks run once per update in that order in Keras 3.15; the
strategy tests compare a 2-replica run with a one-device run with clipping active
and would catch a Keras change here.
"""

from __future__ import annotations

import tensorflow as tf


def _in_multi_replica_step() -> tf.distribute.ReplicaContext | None:
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


class SyncedClipping:
    """Optimizer mixin: all-reduce gradients before clipping them (see module doc)."""

    def _clip_gradients(self, grads):
        context = _in_multi_replica_step()
        if context is not None:
            present = [g for g in grads if g is not None]
            summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
            grads = [None if g is None else next(summed) for g in grads]
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if _in_multi_replica_step() is not None:
            return list(grads_and_vars)  # summed in _clip_gradients already
        return super()._all_reduce_sum_gradients(grads_and_vars)
