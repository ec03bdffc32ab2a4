"""The ``peft`` section: parameter-efficient fine-tuning methods and their options,
and the ``train.gradual_unfreezing`` schedule."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Options each method reads; setting another method's option is a config error, so
# a typo such as `rank` under `method: adapter` does not pass silently.
_OPTIONS = {
    "none": set(),
    "lora": {"rank", "alpha", "dropout", "targets", "loraplus_lr_ratio"},
    "adapter": {"adapter_dim", "placement", "activation"},
    "prompt": {"num_virtual_tokens"},
    "prefix": {"num_virtual_tokens"},
}


class PeftConfig(_Strict):
    """Parameter-efficient fine-tuning. Every method freezes the backbone and
    trains its own new weights plus the task head (and the backbone layers named
    in ``also_train``):

    - lora: low-rank updates ``(alpha / rank) * B A x`` of the target projections;
    - adapter: Houlsby bottleneck adapters after attention and/or the feed-forward
      block of every transformer layer;
    - prompt: ``num_virtual_tokens`` trainable input embeddings (after [CLS] for
      encoders, before the prompt for decoders);
    - prefix: trainable key/value prefixes in every attention layer.
    """

    method: Literal["none", "lora", "adapter", "prompt", "prefix"] = Field(
        default="none",
        description="lora | adapter | prompt | prefix, or none: no PEFT (the "
        "whole model trains, as model.freeze allows).",
    )
    rank: Annotated[int, Field(ge=1)] = Field(
        default=8,
        description="LoRA: rank r of each update B A (hidden x r x hidden); more "
        "capacity and more trained weights as it grows.",
    )
    alpha: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="LoRA scale numerator (alpha / rank); default rank."
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.0, description="LoRA: dropout on the input of the low-rank path."
    )
    targets: list[str] | Literal["all-linear"] | None = Field(
        default=None,
        description="LoRA: names of the layers it adapts (query, key, value, "
        "attention_output, feedforward_*), or all-linear for every dense layer of "
        "the transformer blocks; default: query and value.",
    )
    loraplus_lr_ratio: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="LoRA+: the B factors learn at this multiple of the learning "
        "rate, the A factors at the rate itself (the LoRA+ paper suggests 16, with "
        "a lower learning rate); default: one rate for both.",
    )
    adapter_dim: Annotated[int, Field(ge=1)] = Field(
        default=64,
        description="adapter: bottleneck width (hidden -> adapter_dim -> hidden).",
    )
    placement: list[Literal["attention", "feedforward"]] = Field(
        default=["attention", "feedforward"],
        min_length=1,
        description="adapter: after which sub-blocks of each layer adapters go.",
    )
    activation: Literal["gelu", "relu", "silu"] = Field(
        default="gelu", description="adapter: activation inside the bottleneck."
    )
    num_virtual_tokens: Annotated[int, Field(ge=1, le=512)] = Field(
        default=20,
        description="prompt, prefix: how many trainable virtual tokens (prompt "
        "tokens add to model.sequence_length within the backbone's positions).",
    )
    also_train: list[str] = Field(
        default=[],
        description="Backbone layers that train besides the method's weights: "
        "any layer whose name contains one of these, e.g. [layer_norm].",
    )

    @model_validator(mode="before")
    @classmethod
    def _options_of_the_method(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        method = data.get("method", "none")
        allowed = _OPTIONS.get(method)
        if allowed is None:
            return data  # the Literal reports the bad method
        # A resolved config spells out every default: only a set value counts.
        other = sorted(
            key
            for key in set(data) - allowed - {"method", "also_train"}
            if key in cls.model_fields and data[key] != cls.model_fields[key].default
        )
        if other:
            owners = {
                key: [m for m, opts in _OPTIONS.items() if key in opts] for key in other
            }
            detail = "; ".join(
                f"{k} is an option of {' / '.join(v) or 'no method'}"
                for k, v in owners.items()
            )
            raise ValueError(
                f"method {method} does not take {', '.join(other)} ({detail})"
            )
        if method == "none" and data.get("also_train"):
            raise ValueError(
                "also_train needs a method (lora, adapter, prompt, prefix)"
            )
        return data


class GradualUnfreezingConfig(_Strict):
    """ULMFiT's gradual unfreezing: the head trains alone first, then one group of
    transformer blocks after another becomes trainable from the top, the
    embeddings last. Set exactly one of ``every_epochs`` or ``every_steps``."""

    every_epochs: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Unfreeze the next group every N epochs."
    )
    every_steps: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Unfreeze the next group every N steps (batches)."
    )
    blocks_per_stage: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Transformer blocks in each group that unfreezes."
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> GradualUnfreezingConfig:
        if (self.every_epochs is None) == (self.every_steps is None):
            raise ValueError("set exactly one of every_epochs or every_steps")
        return self


def check_combinations(
    peft: PeftConfig, train: Any, freeze: Any, packing: bool
) -> None:
    """Raises ValueError for fine-tuning settings that cannot work together
    (``train`` is the TrainConfig, ``freeze`` model.freeze, ``packing``
    data.packing)."""
    method = peft.method
    if train.gradual_unfreezing is not None:
        if method != "none":
            raise ValueError(
                f"train.gradual_unfreezing unfreezes backbone blocks, which "
                f"peft.method {method} keeps frozen; use one or the other"
            )
        if freeze != "none":
            raise ValueError(
                "train.gradual_unfreezing decides what trains when; set "
                "model.freeze: none"
            )
    if method != "none" and freeze != "none":
        raise ValueError(
            f"model.freeze: peft.method {method} already freezes the backbone; "
            "remove model.freeze (peft.also_train names backbone layers to train)"
        )
    if method == "prompt" and packing:
        raise ValueError(
            "data.packing: prompt tuning puts its virtual tokens at the start "
            "of each sequence, which packed rows share; set data.packing: false "
            "(or use peft.method prefix, which packs)"
        )
