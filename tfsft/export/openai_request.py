"""Validating an OpenAI chat-completions request body (`tfsft.export.openai_api`).

Every problem is an `OpenAIError` naming the parameter, as OpenAI's API names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from tfsft.data.chat import Turn

# OpenAI's "developer" messages are its newer name for system messages.
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
# Parameters tfsft cannot honour, and the values that mean "not used".
_UNSUPPORTED = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "audio": (None,),
}


class OpenAIError(Exception):
    """A request error, sent in OpenAI's error shape."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": str(self),
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class ChatRequest:
    turns: list[Turn]
    max_tokens: int | None
    sampling: dict[str, Any]  # temperature, top_k, top_p, seed (None: default)
    stop: list[str]
    stream: bool
    include_usage: bool


def parse_chat(request: dict[str, Any]) -> ChatRequest:
    """Validates a chat-completions body.

    Raises:
        OpenAIError: 400, naming the parameter.
    """
    for key, unused in _UNSUPPORTED.items():
        if request.get(key) not in unused:
            raise bad(f"{key} is not supported by this server", key)
    fmt = request.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise bad(
            "only response_format {'type': 'text'} is supported", "response_format"
        )
    if request.get("n") not in (None, 1):
        raise bad("only n=1 is supported (one choice per request)", "n")
    max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise bad("max_tokens must be a positive integer", "max_tokens")
    stream = request.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean", "stream")
    options = request.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    return ChatRequest(
        turns=_turns(request.get("messages")),
        max_tokens=max_tokens,
        sampling=_sampling(request),
        stop=_stops(request.get("stop")),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
    )


def _sampling(request: dict[str, Any]) -> dict[str, Any]:
    temperature = request.get("temperature")
    if temperature is not None and not (
        _is_number(temperature) and 0 <= temperature <= 2
    ):
        raise bad("temperature must be a number from 0 to 2", "temperature")
    top_p = request.get("top_p")
    if top_p is not None and not (_is_number(top_p) and 0 < top_p <= 1):
        raise bad("top_p must be a number above 0 and at most 1", "top_p")
    top_k = request.get("top_k")
    if top_k is not None and not (_is_int(top_k) and top_k >= -1):
        raise bad("top_k must be an integer (0 or -1: no limit)", "top_k")
    seed = request.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad("seed must be an integer", "seed")
    if temperature is not None and temperature > 0 and top_p is None and top_k is None:
        top_p, top_k = 1.0, 0  # OpenAI's defaults: plain sampling at temperature
    return {
        "temperature": temperature,
        "top_k": max(top_k, 0) if top_k is not None else None,
        "top_p": top_p,
        "seed": None if seed is None else seed % 2**63,
    }


def _turns(messages: Any) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad(f"{where}: expected an object with role and content", where)
        role = _ROLES.get(message.get("role"))
        if role is None:
            raise bad(
                f"{where}.role: {message.get('role')!r} is not one of "
                "system, developer, user, assistant",
                f"{where}.role",
            )
        content = _content(message.get("content"))
        if content is None:
            raise bad(
                f"{where}.content: expected a string or a list of text parts",
                f"{where}.content",
            )
        turns.append(Turn(role, content))
    if not any(t.text.strip() for t in turns if t.role != "system"):
        raise bad("messages: every user and assistant message is empty", "messages")
    return turns


def _content(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text"):
            return None  # images, audio, files: a text-only model
        if not isinstance(part.get("text"), str):
            return None
        parts.append(part["text"])
    return "".join(parts)


def _stops(stop: Any) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return []
    if (
        not isinstance(stops, list)
        or len(stops) > 4
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise bad(
            "stop must be a string or a list of up to 4 non-empty strings", "stop"
        )
    return stops


def bad(message: str, param: str | None, code: str | None = None) -> OpenAIError:
    return OpenAIError(HTTPStatus.BAD_REQUEST, message, param, code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
