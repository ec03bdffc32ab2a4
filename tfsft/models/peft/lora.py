"""LoRA: ``y = W x + (alpha / r) * B A dropout(x)`` on dense layers, with merge.

tfsft's own layer rather than Keras' ``enable_lora``, which has no dropout and
merges the factors into the kernel on every call and on every save (so a backup
could not keep them apart). `LoraDense` wraps a keras ``Dense`` or ``EinsumDense``
(query, key, value, attention_output, feedforward_*) and computes the original
projection itself, before the activation (BERT's intermediate dense carries its
GELU), from the frozen kernel.

Shapes follow PEFT: A is [in, r] (Kaiming-uniform, as PEFT), B is [r, out] (zeros,
so training starts at the base model). An ``EinsumDense`` kernel is viewed as
[in..., out...] flattened to [in, out]: for "abc,cde->abde" (query) in = c and
out = d*e; for "abcd,cde->abe" (attention_output) in = c*d, out = e.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfsft.errors import ConfigError


class LoraDense(keras.layers.Layer):
    """A frozen dense layer plus a trainable low-rank update."""

    def __init__(
        self,
        base: keras.layers.Layer,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=f"{base.name}_lora", dtype=base.dtype_policy, **kwargs)
        self.base, self.rank, self.scale = base, rank, alpha / rank
        base.trainable = False
        self.in_shape, self.out_shape = kernel_split(base)
        fan_in, fan_out = math.prod(self.in_shape), math.prod(self.out_shape)
        self.dropout = keras.layers.Dropout(dropout, dtype=base.dtype_policy)
        # PEFT's init: A ~ Kaiming uniform (a = sqrt(5)) over fan_in, B = 0.
        bound = 1.0 / math.sqrt(fan_in)
        self.lora_a = self.add_weight(
            name="lora_a",
            shape=(fan_in, rank),
            initializer=keras.initializers.RandomUniform(-bound, bound),
        )
        self.lora_b = self.add_weight(
            name="lora_b", shape=(rank, fan_out), initializer="zeros"
        )
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        base = self.base
        kernel = ops.cast(base.kernel, self.compute_dtype)
        if isinstance(base, keras.layers.EinsumDense):
            y = ops.einsum(base.equation, inputs, kernel)
        else:
            y = ops.matmul(inputs, kernel)
        if base.bias is not None:
            y = y + ops.cast(base.bias, self.compute_dtype)
        # [..., *in] -> [..., in] -> [..., r] -> [..., out] -> [..., *out]
        lead = ops.shape(inputs)[: len(inputs.shape) - len(self.in_shape)]
        x = self.dropout(inputs, training=training)
        x = ops.reshape(x, (*lead, math.prod(self.in_shape)))
        a = ops.cast(self.lora_a, self.compute_dtype)
        b = ops.cast(self.lora_b, self.compute_dtype)
        delta = ops.matmul(ops.matmul(x, a), b) * ops.cast(
            self.scale, self.compute_dtype
        )
        y = y + ops.reshape(delta, (*lead, *self.out_shape))
        return base.activation(y) if base.activation is not None else y

    def merged_kernel(self) -> Any:
        """The base kernel plus the scaled update, in float32, in the kernel's shape."""
        delta = ops.matmul(
            ops.cast(self.lora_a, "float32"), ops.cast(self.lora_b, "float32")
        )
        kernel = ops.cast(self.base.kernel, "float32")
        return kernel + self.scale * ops.reshape(delta, kernel.shape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.base.compute_output_shape(input_shape)


def kernel_split(layer: keras.layers.Layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input dims, output dims) of a Dense or EinsumDense kernel.

    Raises:
        ConfigError: for a layer whose kernel is not laid out [in..., out...]
            with the inputs' and outputs' trailing axes in the same order.
    """
    shape = tuple(int(d) for d in layer.kernel.shape)
    if not isinstance(layer, keras.layers.EinsumDense):
        return shape[:1], shape[1:]
    lhs, out = layer.equation.split("->")
    inp, ker = lhs.split(",")
    contracted = [c for c in ker if c in inp and c not in out]
    produced = [c for c in ker if c in out]
    n = len(contracted)
    if (
        list(ker) != contracted + produced
        or not inp.endswith("".join(contracted))
        or not out.endswith("".join(produced))
    ):
        raise ConfigError(
            f"peft.targets: LoRA cannot adapt {layer.name} (equation "
            f"{layer.equation}: its kernel is not [inputs..., outputs...])"
        )
    return shape[:n], shape[n:]


def merge_into_base(wrapper: LoraDense) -> None:
    """Writes the merged kernel into the wrapped layer's own kernel."""
    wrapper.base.kernel.assign(wrapper.merged_kernel())
