"""The causal LM: keras-hub's CausalLM for the backbone, LoRA, loading a saved one.

The language-model head is the backbone's own (tied) token embedding, so the
"head" here is keras-hub's task class for the backbone (GPT2CausalLM,
Llama3CausalLM, ...), found by its ``backbone_cls``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from tfsft.errors import ConfigError
from tfsft.models.layers import nested_layers


def causal_lm_class(backbone: keras.Model) -> type:
    """keras-hub's CausalLM subclass made for this backbone's class."""
    import keras_hub

    def subclasses(cls: type) -> list[type]:
        return [s for c in cls.__subclasses__() for s in (c, *subclasses(c))]

    matches = [
        c
        for c in subclasses(keras_hub.models.CausalLM)
        if getattr(c, "backbone_cls", None) is not None
        and isinstance(backbone, c.backbone_cls)
    ]
    if not matches:
        raise ConfigError(
            f"model.preset: {type(backbone).__name__} is not a decoder keras-hub "
            "can generate with (task causal_lm needs a GPT-2, Llama, Mistral, ... "
            "backbone)"
        )
    # The most specific backbone class wins (Llama3CausalLM over LlamaCausalLM).
    return max(matches, key=lambda c: len(c.backbone_cls.__mro__))


def build_causal_lm(backbone: keras.Model, dropout: float) -> keras.Model:
    """The backbone's CausalLM (in an `SFTCausalLM`), preprocessor detached
    (tokenization is in tf.data).

    ``model.dropout`` becomes the rate of every dropout of the backbone (there is
    no head of its own to put it on); rates are read when the graph is traced.
    """
    from tfsft.tasks.causal_lm.training import SFTCausalLM

    for layer in nested_layers(backbone):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = dropout
    causal_lm = causal_lm_class(backbone)(backbone=backbone, preprocessor=None)
    # Wrapped for fit(): packed rows, and the LM head only where the loss is.
    return SFTCausalLM(causal_lm)


def load_causal_lm(preset_dir: Path, dtype: str | None) -> keras.Model:
    """A saved causal LM with its preprocessor (as `save_to_preset` wrote it)."""
    import keras_hub

    from tfsft.models.decoders import register_decoders

    register_decoders()  # saved Llama presets need tfsft's tokenizer class
    return keras_hub.models.CausalLM.from_preset(str(preset_dir), dtype=dtype)


def load_causal_preprocessor(preset: str, sequence_length: int) -> Any:
    """The preset's CausalLM preprocessor, adding no start token: the template
    decides every token of a sequence."""
    import keras_hub

    from tfsft.models.decoders import register_decoders

    register_decoders()
    preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
        preset, sequence_length=sequence_length
    )
    preprocessor.add_start_token = False
    preprocessor.add_end_token = False
    return preprocessor
