"""Houlsby bottleneck adapters: ``h + up(act(down(h)))`` after a sub-block.

An adapter wraps the layer whose output is a sub-block's result just before the
residual add: the attention's output projection (``attention_output``) and the
feed-forward block's output projection (``feedforward_output_dense``). keras-hub's
transformer layers call these through attributes, so `rewire.replace_sublayer`
swaps in a `BottleneckAdapter` holding the original; dropout, the residual add
and the layer norm that follow in the transformer layer are untouched.

The up-projection starts at zero, so before training each adapter is the
identity and the model is exactly the base model.
"""

from __future__ import annotations

from typing import Any

import keras


class BottleneckAdapter(keras.layers.Layer):
    """A frozen layer followed by a residual bottleneck (hidden -> dim -> hidden)."""

    def __init__(
        self, base: keras.layers.Layer, dim: int, activation: str, **kwargs: Any
    ) -> None:
        super().__init__(name=f"{base.name}_adapter", dtype=base.dtype_policy, **kwargs)
        self.base = base
        base.trainable = False
        hidden = int(base.kernel.shape[-1])
        policy = base.dtype_policy
        self.down = keras.layers.Dense(
            dim,
            activation=activation,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=policy,
            name="down",
        )
        self.up = keras.layers.Dense(
            hidden, kernel_initializer="zeros", dtype=policy, name="up"
        )
        self.down.build((None, hidden))
        self.up.build((None, dim))
        self.built = True

    def call(self, inputs: Any) -> Any:
        h = self.base(inputs)
        return h + self.up(self.down(h))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.base.compute_output_shape(input_shape)
