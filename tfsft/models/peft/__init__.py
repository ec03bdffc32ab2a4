"""Parameter-efficient fine-tuning on plain keras-hub models: `apply_peft`.

``tfsft.apply_peft(model, cfg.peft)`` takes any keras-hub task model (or tfsft's
own heads) with a ``backbone``, freezes the backbone and adds the method's
weights; the head stays trainable. The methods live in sibling modules (lora,
adapters, prompt, prefix); how they re-wire keras-hub's layers is in `rewire`.

The changes are recorded on the backbone (`PeftState`) so that a model can be
saved in its plain keras-hub form (`detached`), LoRA merged into the kernels
(`merge_lora`), and the trained weights alone written and read back
(`tfsft.models.peft.adapter_io`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import keras

from tfsft.config_peft import PeftConfig
from tfsft.errors import ConfigError
from tfsft.models.freeze import freeze_backbone_layers, transformer_blocks
from tfsft.models.layers import nested_layers
from tfsft.models.peft.adapters import BottleneckAdapter
from tfsft.models.peft.lora import LoraDense, kernel_split, merge_into_base
from tfsft.models.peft.prefix import apply_prefix
from tfsft.models.peft.prompt import apply_prompt
from tfsft.models.peft.rewire import Edit, replace_sublayer, sublayers

# What the placements of bottleneck adapters wrap (the output projection of
# each sub-block, whose result the transformer layer then adds to its residual).
_ADAPTER_TARGETS = {
    "attention": "attention_output",
    "feedforward": "feedforward_output_dense",
}
_DEFAULT_LORA = ("query", "value")


@dataclass
class PeftState:
    """The method applied to a model and the edits that applied it."""

    cfg: PeftConfig
    edits: list[Edit] = field(default_factory=list)
    merged: bool = False


def peft_state(model: keras.Model) -> PeftState | None:
    """The PEFT state of ``model`` (None: no method applied)."""
    return getattr(model.backbone, "_tfsft_peft", None)


def apply_peft(
    model: keras.Model,
    cfg: PeftConfig,
    sequence_length: int | None = None,
    seed: int = 0,
) -> keras.Model:
    """Applies ``cfg.method`` to ``model`` in place and returns it.

    Args:
        model: a keras-hub task model (``TextClassifier``, ``CausalLM``, ...) or a
            tfsft head model; it must have a ``backbone``. Call before compile.
        cfg: the ``peft`` section.
        sequence_length: the longest input the model will get (prompt tuning
            checks that the virtual tokens still fit the backbone's positions).
        seed: seeds prompt tuning's initial table.

    Raises:
        ConfigError: for targets the backbone lacks, or a method the backbone
            cannot take.
    """
    if cfg.method == "none":
        return model
    if peft_state(model) is not None:
        raise ConfigError("peft: a method is already applied to this model")
    backbone = model.backbone
    if cfg.method == "lora":
        edits = _apply_lora(backbone, cfg)
    elif cfg.method == "adapter":
        edits = _apply_adapters(backbone, cfg)
    elif cfg.method == "prompt":
        edits = apply_prompt(model, cfg.num_virtual_tokens, sequence_length, seed)
    else:
        edits = apply_prefix(model, cfg.num_virtual_tokens)
    _train_also(backbone, cfg.also_train)
    object.__setattr__(backbone, "_tfsft_peft", PeftState(cfg, edits))
    return model


def _targets(
    backbone: keras.Model, names: set[str] | None
) -> list[tuple[keras.layers.Layer, str]]:
    """(parent, attribute) of the dense layers in the transformer blocks whose
    name is in ``names`` (None: every dense layer)."""
    found = []
    for block in transformer_blocks(backbone):
        for parent, attr in sublayers(block):
            layer = getattr(parent, attr)
            if isinstance(parent, LoraDense | BottleneckAdapter):
                continue
            dense = isinstance(layer, keras.layers.Dense | keras.layers.EinsumDense)
            if dense and (names is None or layer.name in names):
                found.append((parent, attr))
    return found


def _dense_names(backbone: keras.Model) -> list[str]:
    return sorted({getattr(p, a).name for p, a in _targets(backbone, None)})


def _apply_lora(backbone: keras.Model, cfg: PeftConfig) -> list[Edit]:
    freeze_backbone_layers(backbone)
    names = None if cfg.targets == "all-linear" else set(cfg.targets or _DEFAULT_LORA)
    targets = _targets(backbone, names)
    missing = (names or set()) - {getattr(p, a).name for p, a in targets}
    if missing or not targets:
        raise ConfigError(
            f"peft.targets: no dense layer named {', '.join(sorted(missing))} in the "
            f"transformer blocks of {type(backbone).__name__}; layers LoRA can "
            f"adapt: {', '.join(_dense_names(backbone))} (or all-linear)"
        )
    alpha = cfg.alpha or cfg.rank
    edits = []
    for parent, attr in targets:
        kernel_split(getattr(parent, attr))  # a clear error before any change
    for parent, attr in targets:
        wrapper = LoraDense(getattr(parent, attr), cfg.rank, alpha, cfg.dropout)
        edits.append(replace_sublayer(parent, attr, wrapper))
    return edits


def _apply_adapters(backbone: keras.Model, cfg: PeftConfig) -> list[Edit]:
    freeze_backbone_layers(backbone)
    edits = []
    for place in cfg.placement:
        targets = _targets(backbone, {_ADAPTER_TARGETS[place]})
        if len(targets) != len(transformer_blocks(backbone)):
            raise ConfigError(
                f"peft.placement: {place}: {type(backbone).__name__} has no "
                f"{_ADAPTER_TARGETS[place]} layer in every transformer block"
            )
        for parent, attr in targets:
            adapter = BottleneckAdapter(
                getattr(parent, attr), cfg.adapter_dim, cfg.activation
            )
            edits.append(replace_sublayer(parent, attr, adapter))
    return edits


def _train_also(backbone: keras.Model, names: list[str]) -> None:
    if not names:
        return
    layers = nested_layers(backbone)
    for name in names:
        matched = [layer for layer in layers if name in layer.name and layer.weights]
        if not matched:
            raise ConfigError(
                f"peft.also_train: no layer of {type(backbone).__name__} has "
                f"{name!r} in its name"
            )
        for layer in matched:
            layer.trainable = True


@contextlib.contextmanager
def detached(model: keras.Model) -> Iterator[keras.Model]:
    """The model in its plain keras-hub form (no PEFT layers) for the duration,
    e.g. to save it as a preset. LoRA should be merged first (`merge_lora`), or
    the plain form lacks its update."""
    state = peft_state(model)
    if state is None or state.merged:
        yield model
        return
    for edit in reversed(state.edits):
        edit.undo()
    try:
        yield model
    finally:
        for edit in state.edits:
            edit.redo()


def merge_lora(model: keras.Model) -> None:
    """Folds every LoRA update into its kernel and removes the LoRA layers, in
    place (PEFT's ``merge_and_unload``): the model is then a plain keras-hub
    model with the same outputs (float32: within 1e-5)."""
    state = peft_state(model)
    if state is None or state.cfg.method != "lora" or state.merged:
        return
    wrappers = lora_layers(model)
    for edit in reversed(state.edits):
        edit.undo()
    for wrapper in wrappers:
        merge_into_base(wrapper)
        # A graph traced before the merge still calls the wrapper: with B zeroed it
        # computes the merged kernel alone instead of adding the update twice.
        wrapper.lora_b.assign(keras.ops.zeros_like(wrapper.lora_b))
    forget_traced_functions(model)
    state.merged = True


def forget_traced_functions(model: keras.Model) -> None:
    """Drops the model's traced predict/evaluate/train/generate functions, which
    captured the layers as they were (re-traced on next use)."""
    for owner in (model, getattr(model, "causal_lm", None)):
        if owner is None:
            continue
        for name in ("predict_function", "test_function", "train_function"):
            if getattr(owner, name, None) is not None:
                setattr(owner, name, None)
        if getattr(owner, "generate_function", None) is not None:
            owner.generate_function = None
        owner.__dict__.pop("_tfsft_generate", None)
        owner.__dict__.pop("_tfsft_logits", None)  # tfsft.evaluation.inference


def lora_layers(model: keras.Model) -> list[LoraDense]:
    """The model's active LoRA layers."""
    return [
        layer for layer in nested_layers(model.backbone) if isinstance(layer, LoraDense)
    ]
