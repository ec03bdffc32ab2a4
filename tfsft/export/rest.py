"""TF Serving's REST API (v1) over the standard library's threading HTTP server.

- ``GET  /v1/models/NAME[/versions/N]``: version status;
- ``GET  /v1/models/NAME[/versions/N]/metadata``: signature defs;
- ``POST /v1/models/NAME[/versions/N]:predict``: ``instances`` (row) or ``inputs``
  (columnar) in, ``predictions`` or ``outputs`` back.

Errors are ``{"error": "..."}`` with TF Serving's status codes (400 bad request, 404
unknown model/version/signature, 413 body too large; 401 without the API key when
the server has one). A causal-LM export also answers OpenAI's ``/v1/models`` and
``/v1/chat/completions`` (`tfsft.export.openai_api`).
"""

from __future__ import annotations

import base64
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from tfsft.export import openai_api
from tfsft.export.servables import (
    BadRequest,
    Batcher,
    ModelStore,
    NotFound,
    Unauthorized,
    check_bearer,
)

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?P<verb>/metadata|:predict)?$"
)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib default listen backlog (5) resets bursts of concurrent clients.
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        store: ModelStore,
        batcher: Batcher,
        max_body_bytes: int = 10 * 2**20,
        max_rows: int = 1024,
        api_key: str | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.store, self.batcher = store, batcher
        self.max_body_bytes, self.max_rows = max_body_bytes, max_rows
        self.api_key = api_key


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: a response's last segment leaves at once instead of waiting for
    # the client's (delayed) ACK of the one before it, up to 40 ms on Linux.
    disable_nagle_algorithm = True
    # A buffered socket writer: the status line, headers and body of a response
    # collect in one buffer and leave in one write when the request is done (the
    # base class flushes after every request), instead of a write per header.
    wbufsize = -1

    def handle_expect_100(self) -> bool:
        # The interim "100 Continue" must reach the client now: it waits for it
        # before sending the body this handler is about to read.
        sent = super().handle_expect_100()
        self.wfile.flush()
        return sent

    def log_message(self, format: str, *args: Any) -> None:  # quiet access log
        return

    def do_GET(self) -> None:
        self._handle(post=False)

    def do_POST(self) -> None:
        self._handle(post=True)

    def _handle(self, post: bool) -> None:
        path = self.path.split("?")[0]
        openai = path in openai_api.PATHS
        body = self._admit(post, openai)
        if body is None:
            return
        if openai:
            openai_api.handle(self, path, post, body)
            return
        try:
            match = _PATH.match(path)
            if not match or (match["verb"] == ":predict") != post:
                raise NotFound(f"Malformed request: {self.command} {self.path}")
            version = int(match["version"]) if match["version"] else None
            servable = self.server.store.get(match["name"], version)
            if match["verb"] == ":predict":
                result = self._predict(servable, body)
            elif match["verb"] == "/metadata":
                result = metadata(match["name"], servable)
            else:
                result = status(servable)
            self._send(HTTPStatus.OK, result)
        except NotFound as e:
            self._send(HTTPStatus.NOT_FOUND, {"error": str(e)})
        except BadRequest as e:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(e)})

    def _admit(self, post: bool, openai: bool) -> bytes | None:
        """The body, once the API key is checked; None when an error was sent
        (in OpenAI's error shape on its paths)."""
        headers, reason = {}, None
        try:
            check_bearer(self.headers.get("Authorization"), self.server.api_key)
            return self._read_body() if post else b""
        except Unauthorized as e:
            self.close_connection = True  # the body of a stranger stays unread
            code, message, reason = HTTPStatus.UNAUTHORIZED, str(e), "invalid_api_key"
            headers = {"WWW-Authenticate": "Bearer"}
        except BadRequest as e:
            code, message = HTTPStatus.BAD_REQUEST, str(e)
        except _TooLarge as e:
            code, message = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(e)
        error = openai_api.OpenAIError(code, message, code=reason)
        self._send(code, error.body() if openai else {"error": message}, headers)
        return None

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
        if length > self.server.max_body_bytes:
            self.close_connection = True  # the unread body makes the stream unusable
            raise _TooLarge(
                f"request body of {length} bytes exceeds the limit of "
                f"{self.server.max_body_bytes}"
            )
        return self.rfile.read(length)

    def _predict(self, servable: Any, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"JSON Parse error: {e}") from None
        if not isinstance(request, dict):
            raise BadRequest(
                "JSON Value: expected an object with 'instances' or 'inputs'"
            )
        signature = request.get("signature_name") or "serving_default"
        names = sorted(servable.input_specs(signature))
        if ("instances" in request) == ("inputs" in request):
            raise BadRequest("exactly one of 'instances' or 'inputs' must be given")
        row_format = "instances" in request
        inputs = (
            _rows_to_columns(request["instances"], names)
            if row_format
            else (_columns(request["inputs"], names))
        )
        rows = max((len(v) for v in inputs.values() if isinstance(v, list)), default=1)
        if rows > self.server.max_rows:
            raise BadRequest(
                f"{rows} rows exceed the per-request limit of {self.server.max_rows}"
            )
        arrays = self.server.batcher.run(servable, signature, inputs)
        outputs = {k: _to_json(v) for k, v in arrays.items()}
        if row_format:
            if len(outputs) == 1:
                return {"predictions": next(iter(outputs.values()))}
            keys = list(outputs)
            count = len(outputs[keys[0]])
            rows = [{k: outputs[k][i] for k in keys} for i in range(count)]
            # TF Serving's tensors, plus the task's JSON (entities) where it has one.
            extra = servable.json_rows(signature, inputs, arrays)
            for row, more in zip(rows, extra or [{}] * count, strict=True):
                row.update(more)
            return {"predictions": rows}
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values()))}
        return {"outputs": outputs}

    def _send(
        self,
        code: HTTPStatus,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class _TooLarge(Exception):
    pass


def status(servable: Any) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(servable.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def signature_def_map(servable: Any) -> Any:
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in servable.signature_defs.items():
        sig_map.signature_def[key].CopyFrom(sig)
    return sig_map


def metadata(name: str, servable: Any) -> dict[str, Any]:
    return {
        "model_spec": {
            "name": name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {
            "signature_def": json_format.MessageToDict(
                signature_def_map(servable), preserving_proto_field_name=True
            )
        },
    }


def _decode(value: Any) -> Any:
    """Turns TF Serving's ``{"b64": ...}`` binary values into bytes, recursively."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise BadRequest("invalid base64 in a 'b64' value") from None
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _rows_to_columns(instances: Any, names: list[str]) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list")
    named = [isinstance(x, dict) and "b64" not in x for x in instances]
    if all(named):
        columns: dict[str, list[Any]] = {n: [] for n in names}
        for i, row in enumerate(instances):
            if set(row) != set(names):
                raise BadRequest(
                    f"instance {i}: expected keys {names}, got {sorted(row)}"
                )
            for n in names:
                columns[n].append(_decode(row[n]))
        return columns
    if any(named):
        raise BadRequest("instances mix named (object) and unnamed values")
    if len(names) != 1:
        raise BadRequest(
            f"this signature takes {names}; send each instance as an object"
        )
    return {names[0]: _decode(instances)}


def _columns(inputs: Any, names: list[str]) -> dict[str, Any]:
    if isinstance(inputs, dict) and not set(inputs) <= {"b64"}:
        return {k: _decode(v) for k, v in inputs.items()}
    if len(names) != 1:
        raise BadRequest(f"this signature takes {names}; send 'inputs' as an object")
    return {names[0]: _decode(inputs)}


def _to_json(array: np.ndarray) -> Any:
    if array.dtype.kind in ("S", "O"):
        return _strings(array.tolist())
    return array.tolist()


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
