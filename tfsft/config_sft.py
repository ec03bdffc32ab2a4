"""The config keys of causal-LM SFT: chat templates, loss masks, packing, generation.

Kept apart from `tfsft.config` (which takes them in) so that module stays one screen
of section classes; every key here is read only by ``task: causal_lm``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateConfig(_Strict):
    """A user-defined chat template: the text around each turn.

    A conversation renders as ``system_prefix + system + system_suffix`` (when there
    is a system prompt), then for each user turn ``user_prefix + text + user_suffix``
    and for each assistant turn ``assistant_prefix + text + eos + assistant_suffix``.
    Only the assistant's text and ``eos`` are trained (unless data.train_on_prompt).
    """

    system_prefix: str = Field(default="", description="Text before the system prompt.")
    system_suffix: str = Field(default="", description="Text after the system prompt.")
    user_prefix: str = Field(default="", description="Text before each user turn.")
    user_suffix: str = Field(default="", description="Text after each user turn.")
    assistant_prefix: str = Field(
        default="",
        description="Text before each assistant turn (also ends every prompt at "
        "generation time).",
    )
    assistant_suffix: str = Field(
        default="",
        description="Text after each assistant turn's eos (trained only with "
        "data.train_on_prompt).",
    )
    eos: str | None = Field(
        default=None,
        description="The token that ends every assistant turn (it must be one "
        "token of the vocabulary); default: the tokenizer's end token.",
    )
    input_separator: str = Field(
        default="\n\n",
        description="Joins an alpaca record's instruction and input.",
    )
    system_prompt: str | None = Field(
        default=None, description="The system prompt used when a record has none."
    )


class SftDataFields(_Strict):
    """``data`` keys read by ``task: causal_lm``."""

    template: Literal["auto", "chatml", "alpaca", "plain"] | TemplateConfig = Field(
        default="auto",
        description="causal_lm: how records become token sequences: chatml, "
        "alpaca, plain (prompt then completion), a mapping of prefixes and "
        "suffixes (see TemplateConfig), or auto: chatml when the tokenizer has "
        "<|im_start|> and <|im_end|> tokens, else alpaca.",
    )
    system_prompt: str | None = Field(
        default=None,
        description="causal_lm: system prompt for records without one; default: "
        "the model's own (from its chat template) or the template's; '' for none.",
    )
    train_on_prompt: bool = Field(
        default=False,
        description="causal_lm: also train on prompt tokens (system, user and the "
        "template's markers); by default only assistant / response tokens and the "
        "EOS that ends each assistant turn are trained.",
    )
    truncated_response: Literal["drop", "keep"] = Field(
        default="drop",
        description="causal_lm: an example whose responses are cut to zero tokens "
        "by model.sequence_length: drop it (reported) or keep it (reported; it "
        "trains nothing).",
    )
    packing: bool = Field(
        default=False,
        description="causal_lm: pack several training examples into each row of "
        "model.sequence_length tokens; attention stays within each example "
        "(block-diagonal masks, positions restart).",
    )


class GenerateConfig(_Strict):
    """Text generation: `tfsft generate`, the per-epoch samples, the export."""

    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=128,
        description="Most tokens generated per prompt; generation also stops at "
        "the end token.",
    )
    sampler: Literal["greedy", "top_k", "top_p"] = Field(
        default="greedy",
        description="greedy (the most likely token, deterministic), top_k or top_p "
        "(nucleus) sampling.",
    )
    temperature: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="top_k, top_p: divides the logits; below 1 is more "
        "conservative, above 1 more varied.",
    )
    top_k: Annotated[int, Field(ge=1)] = Field(
        default=50, description="top_k: sample among this many most likely tokens."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9,
        description="top_p: sample among the most likely tokens whose "
        "probabilities sum to this.",
    )
    seed: int | None = Field(
        default=None,
        description="Sampler seed, so top_k/top_p output repeats; null: random.",
    )
    samples_per_epoch: Annotated[int, Field(ge=0)] = Field(
        default=4,
        description="Greedy generations for this many fixed validation prompts "
        "are written to <run>/generations/ after every epoch.",
    )
