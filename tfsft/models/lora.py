"""LoRA on any keras-hub backbone: low-rank factors on the attention projections.

Keras' ``EinsumDense``/``Dense`` layers carry LoRA themselves (``enable_lora``);
saving merges the factors into the kernels. The PEFT issue adds merge-on-export,
adapter-only saves and the other methods.
"""

from __future__ import annotations

from typing import Any

import keras

from tfsft.errors import ConfigError


def apply_lora(model: keras.Model, rank: int, alpha: float | None, targets: Any) -> int:
    """Freezes the backbone and adds rank-``rank`` LoRA factors to the target
    layers (default: the backbone's query and value projections).

    keras-hub's ``enable_lora`` has no alpha; Keras' layer-level ``enable_lora``
    has, so the targets are enabled one by one here, as keras-hub does.

    Returns:
        The number of layers adapted.

    Raises:
        ConfigError: when no layer of the backbone has a target's name.
    """
    backbone = model.backbone
    names = list(targets or backbone.default_lora_layer_names())
    backbone.trainable = True
    layers = [layer for layer in backbone._flatten_layers(include_self=False)]
    for layer in layers:
        layer.trainable = False
    adapted = 0
    found: set[str] = set()
    for layer in layers:
        if layer.name in names and hasattr(layer, "enable_lora") and layer.weights:
            layer.trainable = True
            layer.enable_lora(rank, lora_alpha=alpha or rank)
            adapted += 1
            found.add(layer.name)
    if targets and (missing := set(targets) - found):
        known = sorted({lyr.name for lyr in layers if hasattr(lyr, "enable_lora")})
        raise ConfigError(
            f"peft.targets: no layer named {', '.join(sorted(missing))} in "
            f"{type(backbone).__name__}; layers LoRA can adapt: {', '.join(known)}"
        )
    if not adapted:
        raise ConfigError(
            f"peft.targets: none of {', '.join(names)} is a layer of "
            f"{type(backbone).__name__}"
        )
    return adapted
