"""OpenAI-compatible chat endpoints for a causal-LM export, beside TF Serving's API.

- ``GET  /v1/models``: the served model;
- ``POST /v1/chat/completions``: ``messages`` are rendered with the export's
  template (`tfsft.data.chat.render_prompt`) and completed by its
  ``generate_text`` signature through the server's batcher.

Sampling: ``temperature`` 0 is greedy, above 0 samples (with ``top_p``, and the
non-OpenAI ``top_k`` that vLLM also takes). Without ``temperature`` the export's
own default applies (greedy unless its config says otherwise), not OpenAI's 1,
so a plain request answers as `tfsft generate` does. ``max_tokens`` (or
``max_completion_tokens``) defaults to the export's ``max_new_tokens``, lowered to
what the context leaves. ``stop`` strings cut the completion after generation.
``stream: true`` sends the finished completion as server-sent events (a role
chunk, one content chunk, a final chunk, the usage chunk when
``stream_options.include_usage``, then ``data: [DONE]``). ``n`` above 1, tools,
log-probs and penalties are refused with a 400.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from http import HTTPStatus
from typing import Any

import numpy as np

from tfsft.data.chat import render_prompt
from tfsft.errors import ConfigError
from tfsft.export.generate import (
    GENERATE_TEXT,
    count_tokens,
    prompt_problem,
    sampling_inputs,
)
from tfsft.export.openai_request import ChatRequest, OpenAIError, bad, parse_chat
from tfsft.export.servables import BadRequest, NotFound

log = logging.getLogger("tfsft")
PATHS = ("/v1/models", "/v1/chat/completions")


def handle(handler: Any, path: str, post: bool, body: bytes) -> None:
    """Answers one request to `PATHS` on the REST server's handler."""
    server = handler.server
    try:
        if path == "/v1/models" and not post:
            name = server.store.name
            created = int(server.store.get(name).path.stat().st_mtime)
            model = {"id": name, "object": "model", "created": created}
            payload = {"object": "list", "data": [model | {"owned_by": "tfsft"}]}
            handler._send(HTTPStatus.OK, payload)
        elif path == "/v1/chat/completions" and post:
            _chat(handler, body)
        else:
            raise OpenAIError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{handler.command} {path}: not allowed"
            )
    except OpenAIError as e:
        handler._send(e.status, e.body())
    except BadRequest as e:
        error = OpenAIError(HTTPStatus.BAD_REQUEST, str(e))
        handler._send(error.status, error.body())
    except NotFound as e:
        error = OpenAIError(HTTPStatus.NOT_FOUND, str(e), code="model_not_found")
        handler._send(error.status, error.body())
    except Exception as e:  # an answer, not a dropped connection
        log.exception("chat completion failed")
        error = OpenAIError(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            f"internal error: {e}",
            kind="server_error",
        )
        handler._send(error.status, error.body())


def _chat(handler: Any, body: bytes) -> None:
    server = handler.server
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise OpenAIError(HTTPStatus.BAD_REQUEST, f"invalid JSON body: {e}") from None
    if not isinstance(request, dict):
        raise OpenAIError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    name = request.get("model")
    if name != server.store.name:
        raise OpenAIError(
            HTTPStatus.NOT_FOUND,
            f"The model {name!r} does not exist; this server serves "
            f"{server.store.name!r}",
            "model",
            "model_not_found",
        )
    servable = server.store.get(name)
    generation = servable.generation
    if generation is None or GENERATE_TEXT not in servable.signature_defs:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            f"{name} is not a causal-LM export; use /v1/models/{name}:predict",
            "model",
        )
    chat = parse_chat(request)
    content, finish, usage = _complete(server.batcher, servable, chat)
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": name,
    }
    if chat.stream:
        _stream(handler, head, content, finish, usage if chat.include_usage else None)
        return
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "logprobs": None,
        "finish_reason": finish,
    }
    result = head | {"object": "chat.completion", "choices": [choice]}
    handler._send(HTTPStatus.OK, result | {"usage": usage})


def _complete(
    batcher: Any, servable: Any, chat: ChatRequest
) -> tuple[str, str, dict[str, int]]:
    """The completion, its finish reason (stop | length) and the token usage."""
    generation = servable.generation
    try:
        text = render_prompt(chat.turns, generation.template)
    except ConfigError as e:  # the last message is the assistant's
        raise OpenAIError(HTTPStatus.BAD_REQUEST, str(e), "messages") from None
    prompt_tokens = count_tokens(servable, [text])[0]
    max_new = _budget(chat.max_tokens, prompt_tokens, generation)
    inputs = {
        "text": np.array([text], dtype=object),
        "max_new_tokens": np.array([max_new], np.int32),
    } | sampling_inputs(generation.defaults, 1, **chat.sampling)
    # Through the batcher: concurrent chats share one generation call.
    out = batcher.run(servable, GENERATE_TEXT, inputs)
    content = out["completion"][0].decode("utf-8", "replace")
    finish = "stop" if bool(out["stopped"][0]) else "length"
    cut = cut_at_stop(content, chat.stop)
    if cut != content:
        content, finish = cut, "stop"
    completion_tokens = int(out["completion_tokens"][0])  # generated, before a cut
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return content, finish, usage


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to (not including) the earliest of ``stops``."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(found)] if found else text


def _budget(asked: int | None, prompt_tokens: int, generation: Any) -> int:
    """max_new_tokens: as asked (checked), or the default, fitted to the context."""
    context = generation.context
    if asked is None:
        asked = int(generation.defaults.get("max_new_tokens", 128))
        if context is not None:
            asked = min(asked, context - prompt_tokens)
        if asked < 1:
            asked = 1  # too long a prompt: fails below, naming the context
    problem = prompt_problem(prompt_tokens, asked, context)
    if problem:
        code = "context_length_exceeded" if "context" in problem else None
        raise bad(problem, "messages" if code else "max_tokens", code)
    return asked


def _stream(
    handler: Any, head: dict, content: str, finish: str, usage: dict | None
) -> None:
    """The finished completion as server-sent events, in chunked encoding."""
    base = head | {"object": "chat.completion.chunk"}
    extra = {"usage": None} if usage is not None else {}

    def chunk(delta: dict, reason: str | None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return base | {"choices": [choice]} | extra

    events = [chunk({"role": "assistant", "content": ""}, None)]
    if content:
        events.append(chunk({"content": content}, None))
    events.append(chunk({}, finish))
    if usage is not None:
        events.append(base | {"choices": [], "usage": usage})
    handler.send_response(HTTPStatus.OK)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for data in [*(json.dumps(e) for e in events), "[DONE]"]:
        payload = f"data: {data}\n\n".encode()
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()
