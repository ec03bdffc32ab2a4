"""The ``peft`` section: parameter-efficient fine-tuning methods and their options."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeftConfig(_Strict):
    """Parameter-efficient fine-tuning. LoRA trains low-rank updates of the
    attention projections (the backbone's other weights are frozen)."""

    method: Literal["none", "lora"] = "none"
    rank: Annotated[int, Field(ge=1)] = 8
    alpha: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="LoRA scale numerator (alpha / rank); default rank."
    )
    targets: list[str] | None = Field(
        default=None,
        description="Names of the layers LoRA adapts; default: the backbone's "
        "query and value projections.",
    )
