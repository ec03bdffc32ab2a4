"""Instruction and chat data for causal-LM SFT: records, templates, loss masks.

A record (alpaca ``{instruction, input, output}``, chat ``{"messages": [...]}``,
``{prompt, completion}`` or plain ``{text}``) becomes a list of `Turn`s; a
`Template` renders the turns as text segments, each with the weight its tokens get
in the loss. Rendering segment by segment (never the whole string at once and then
searching for the response) is what makes the masks exact: a token belongs to one
segment, so it is trained or not, with no guessing at boundaries.

    system:    system_prefix + text + system_suffix                  weight 0
    user:      user_prefix + text + user_suffix                      weight 0
    assistant: assistant_prefix (0) + text (w) + eos (w) + suffix (0)

``w`` is the message's ``loss_weight`` (default 1). With ``train_on_prompt`` the
weight-0 parts get 1, except messages whose own ``loss_weight`` says otherwise.
The eos ends every assistant turn and is trained, so the model learns to stop.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tfsft.errors import ConfigError

ROLES = ("system", "user", "assistant")
# Other spellings of the roles seen in public SFT sets (ShareGPT, LLaMA-Factory).
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "model": "assistant"}


@dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant | text (a plain-text record)
    text: str
    weight: float | None = None  # the record's loss_weight, if it gave one
    input: str | None = None  # an alpaca record's input, joined to the text by
    # the template's input_separator when rendered

    def content(self, template: Template) -> str:
        if self.input:
            return self.text + template.input_separator + self.input
        return self.text


@dataclass(frozen=True)
class Template:
    """The text around each turn (see the module docstring)."""

    name: str
    system_prefix: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    eos: str = ""  # the token ending each assistant turn; "" = the tokenizer's
    input_separator: str = "\n\n"  # joins an alpaca record's instruction and input
    system_prompt: str | None = None  # used when a conversation has none

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Template:
        return cls(**json.loads(text))


CHATML = Template(
    name="chatml",
    system_prefix="<|im_start|>system\n",
    system_suffix="<|im_end|>\n",
    user_prefix="<|im_start|>user\n",
    user_suffix="<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant_suffix="\n",
    eos="<|im_end|>",
)
ALPACA = Template(
    name="alpaca",
    system_suffix="\n\n",
    user_prefix="### Instruction:\n",
    user_suffix="\n\n",
    assistant_prefix="### Response:\n",
    assistant_suffix="\n\n",
    input_separator="\n\n### Input:\n",
    system_prompt="Below is an instruction that describes a task. Write a response "
    "that appropriately completes the request.",
)
PLAIN = Template(name="plain", input_separator="\n")
TEMPLATES = {t.name: t for t in (CHATML, ALPACA, PLAIN)}


def resolve_template(
    setting: Any, system_prompt: str | None, tokenizer: Any, model_dir: str | None
) -> Template:
    """The template a run uses, with its eos and system prompt filled in.

    Args:
        setting: ``data.template``: a name, "auto", or a `TemplateConfig`.
        system_prompt: ``data.system_prompt`` (None: the model's or template's).
        tokenizer: the keras-hub tokenizer (its special tokens decide "auto" and
            the default eos).
        model_dir: the preset dir, to read the model's own chat template from.

    Raises:
        ConfigError: when the eos is not a single token of the vocabulary.
    """
    vocab = _special_tokens(tokenizer)
    if setting == "auto":
        setting = "chatml" if {"<|im_start|>", "<|im_end|>"} <= vocab else "alpaca"
    if isinstance(setting, str):
        template = TEMPLATES[setting]
        if setting == "chatml":
            shipped = model_system_prompt(model_dir)
            if shipped is not None:
                template = replace(template, system_prompt=shipped)
    else:
        template = Template(name="custom", **setting.model_dump())
        template = replace(template, eos=template.eos or "")
    if not template.eos:
        template = replace(template, eos=tokenizer.end_token)
    if system_prompt is not None:
        template = replace(template, system_prompt=system_prompt or None)
    if tokenizer.token_to_id(template.eos) is None or template.eos not in vocab:
        raise ConfigError(
            f"data.template: the end token {template.eos!r} of template "
            f"{template.name} is not a special token of this model's tokenizer; "
            "choose a template whose eos the tokenizer knows (e.g. alpaca or plain, "
            "which end turns with the tokenizer's own end token)"
        )
    return template


def model_system_prompt(model_dir: str | None) -> str | None:
    """The default system prompt of a ChatML chat template shipped with a model
    (``tokenizer_config.json``'s ``chat_template``), or None."""
    path = Path(model_dir or "") / "tokenizer_config.json"
    try:
        source = json.loads(path.read_text()).get("chat_template") or ""
    except (OSError, ValueError):
        return None
    # ChatML templates insert their default system turn as a literal string.
    # (a real newline, or an escaped one inside a Jinja string)
    found = re.search(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", source)
    return found.group(1) if found else None


def _special_tokens(tokenizer: Any) -> set[str]:
    tokens = set(getattr(tokenizer, "special_tokens", None) or ())
    tokens |= set(getattr(tokenizer, "unsplittable_tokens", None) or ())
    for name in ("end_token", "start_token", "pad_token"):
        if getattr(tokenizer, name, None):
            tokens.add(getattr(tokenizer, name))
    return tokens


def record_turns(record: dict[str, Any]) -> list[Turn] | str:
    """The turns of one record, or what is wrong with it (a message naming the
    field). The record's kind is told by its fields."""
    if "messages" in record:
        return _chat_turns(record["messages"])
    if "instruction" in record:
        return _alpaca_turns(record)
    if "prompt" in record or "completion" in record:
        prompt = _string(record, "prompt", allow_empty=True)
        completion = _string(record, "completion")
        for value in (prompt, completion):
            if isinstance(value, _Problem):
                return value.message
        return [Turn("user", str(prompt)), Turn("assistant", str(completion))]
    if "text" in record:
        text = _string(record, "text")
        return text.message if isinstance(text, _Problem) else [Turn("text", text)]
    return (
        "field 'messages', 'instruction', 'prompt' or 'text': none present; "
        "expected a chat, alpaca, prompt/completion or plain-text record"
    )


def _alpaca_turns(record: dict[str, Any]) -> list[Turn] | str:
    fields = {}
    for key, optional in (("instruction", False), ("input", True), ("output", False)):
        value = _string(record, key, allow_empty=optional, optional=optional)
        if isinstance(value, _Problem):
            return value.message
        fields[key] = value
    turns = [Turn("system", record["system"])] if record.get("system") else []
    given = fields["input"] if fields["input"].strip() else None
    user = Turn("user", fields["instruction"], input=given)
    return [*turns, user, Turn("assistant", fields["output"])]


def _chat_turns(messages: Any) -> list[Turn] | str:
    if not isinstance(messages, list) or not messages:
        return "field 'messages': expected a non-empty list of messages"
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return f"field '{where}': expected an object with role and content"
        role = message.get("role", message.get("from"))
        role = _ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            return f"field '{where}.role': {role!r} is not one of {', '.join(ROLES)}"
        if role == "system" and i > 0:
            return f"field '{where}': a system message may only come first"
        text = _content_text(message.get("content", message.get("value")))
        if text is None:
            return (
                f"field '{where}.content': expected a string or a list of "
                "{type: text, value} parts"
            )
        weight = message.get("loss_weight")
        if weight is not None and (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or weight < 0
        ):
            return (
                f"field '{where}.loss_weight': expected a number >= 0 (got {weight!r})"
            )
        turns.append(Turn(role, text, None if weight is None else float(weight)))
    if not any(t.role == "assistant" for t in turns):
        return "field 'messages': no assistant message to learn from"
    return turns


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            value = part.get("value", part.get("text"))
            if not isinstance(value, str):
                return None
            parts.append(value)
        else:
            return None  # images and other modalities are not supported
    return "".join(parts)


@dataclass(frozen=True)
class _Problem:
    message: str


def _string(
    record: dict[str, Any], key: str, allow_empty: bool = False, optional: bool = False
) -> str | _Problem:
    value = record.get(key, "" if optional else None)
    if value is None and optional:
        value = ""
    if not isinstance(value, str):
        return _Problem(f"field '{key}': expected a string (got {_kind(value)})")
    if not allow_empty and not value.strip():
        return _Problem(f"field '{key}': empty")
    return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def render(
    turns: list[Turn], template: Template, train_on_prompt: bool = False
) -> list[tuple[str, float]]:
    """The text segments of a conversation with the loss weight of their tokens.

    A plain-text record (one ``text`` turn, for continued pre-training) is all
    trained, then the eos. Empty segments are left out.
    """
    prompt_weight = 1.0 if train_on_prompt else 0.0
    if turns and turns[0].role == "text":
        return [(turns[0].text, 1.0), (template.eos, 1.0)]
    segments: list[tuple[str, float]] = []
    if turns[0].role != "system" and template.system_prompt:
        turns = [Turn("system", template.system_prompt), *turns]
    for turn in turns:
        if turn.role == "assistant":
            w = 1.0 if turn.weight is None else turn.weight
            segments += [
                (template.assistant_prefix, prompt_weight if w else 0.0),
                (turn.text, w),
                (template.eos, w),
                (template.assistant_suffix, prompt_weight if w else 0.0),
            ]
        else:
            w = prompt_weight if turn.weight is None else turn.weight
            prefix, suffix = (
                (template.system_prefix, template.system_suffix)
                if turn.role == "system"
                else (template.user_prefix, template.user_suffix)
            )
            segments += [(prefix + turn.content(template) + suffix, w)]
    return [(text, w) for text, w in segments if text]


def render_prompt(turns: list[Turn], template: Template) -> str:
    """The text a model continues to answer ``turns`` (a conversation whose last
    turn is not the assistant's): the rendered turns, then the assistant prefix."""
    if turns and turns[-1].role == "assistant":
        raise ConfigError("the last message must not be the assistant's")
    return "".join(s for s, _ in render(turns, template)) + template.assistant_prefix


def render_prompts(
    prompts: list[str] | list[list[Turn]], template: Template, where: list[str]
) -> list[str]:
    """`render_prompt` for each prompt (a user message or a conversation).

    Raises:
        ConfigError: naming the prompt (``where``) that has no text.
    """
    conversations = [[Turn("user", p)] if isinstance(p, str) else p for p in prompts]
    for turns, at in zip(conversations, where, strict=True):
        if not any(t.text.strip() for t in turns if t.role != "system"):
            raise ConfigError(f"{at}: the prompt is empty")
    return [render_prompt(turns, template) for turns in conversations]
