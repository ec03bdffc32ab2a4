"""Loaded model versions, version polling, and server-side request batching.

Shared by the REST and gRPC front ends of `tfsft serve`. Like TF Serving's default
version policy, the highest version in the model base dir is served, and a newly
exported version replaces it without a restart.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops the exports use
from tensorflow.core.protobuf import saved_model_pb2

log = logging.getLogger("tfsft")


class NotFound(Exception):
    """The model, version or signature does not exist (HTTP 404, gRPC NOT_FOUND)."""


class BadRequest(Exception):
    """The request does not fit the signature (HTTP 400, gRPC INVALID_ARGUMENT)."""


class Unauthorized(Exception):
    """No or a wrong API key (HTTP 401, gRPC UNAUTHENTICATED)."""


def check_bearer(header: str | None, api_key: str | None) -> None:
    """Checks an ``Authorization`` value against the server's key (if it has one).

    Raises:
        Unauthorized: the header is missing or holds another key.
    """
    if not api_key:
        return
    if not header:
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>'"
        )
    scheme, _, given = header.partition(" ")
    # A constant-time comparison: response times must not leak the key.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), api_key.encode()
    ):
        raise Unauthorized("incorrect API key provided")


@dataclass
class Servable:
    """One loaded version: its signatures and their SignatureDef protos."""

    version: int
    path: Path
    module: Any
    signature_defs: dict[str, Any]
    functions: dict[str, Any] = field(default_factory=dict)
    # The tfsft export's task, label space and config (None for other models).
    task: Any = None
    labels: Any = None
    config: Any = None
    # A causal LM's template and generation defaults (`tfsft.export.generate`).
    generation: Any = None

    @classmethod
    def load(cls, path: Path) -> Servable:
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        defs = {
            k: v
            for k, v in proto.meta_graphs[0].signature_def.items()
            if not k.startswith("__")
        }
        module = tf.saved_model.load(str(path))
        functions = {k: module.signatures[k] for k in defs}
        servable = cls(int(path.name), path, module, defs, functions)
        servable.task, servable.labels, servable.config = read_export_assets(path)
        from tfsft.export.generate import read_generation

        servable.generation = read_generation(path)
        return servable

    def check(self, signature: str, arrays: dict[str, np.ndarray]) -> None:
        """Checks a request's rows beyond the signature's specs (a causal LM's
        prompt lengths) before it joins a merged batch, where one bad row would
        fail every request in the batch."""
        if self.generation is not None:
            from tfsft.export.generate import check_request

            check_request(self, signature, arrays)

    def json_rows(
        self, signature: str, inputs: dict[str, Any], outputs: dict[str, np.ndarray]
    ) -> list[dict[str, Any]] | None:
        """The task's JSON rows for a raw-text call, where the task asks for them
        in REST responses (entity lists); None otherwise."""
        if signature != "serving_default" or not getattr(self.task, "serving_json", 0):
            return None
        return self.task.decode_serving(
            inputs, outputs, self.labels, self.config.evaluate
        )

    def input_specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        return self.function(signature).structured_input_signature[1]

    def function(self, signature: str) -> Any:
        if signature not in self.functions:
            raise NotFound(
                f'Serving signature name: "{signature}" not found in signature def'
            )
        return self.functions[signature]

    def prepare(self, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Checks names, dtypes and shapes against the signature; returns arrays."""
        specs = self.input_specs(signature)
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise BadRequest(
                f"signature '{signature}' takes inputs {sorted(specs)}; "
                f"missing {missing}, unexpected {extra}"
            )
        arrays = {}
        for key, spec in specs.items():
            try:
                tensor = tf.convert_to_tensor(inputs[key], dtype=spec.dtype)
            except (TypeError, ValueError) as e:
                raise BadRequest(
                    f"input '{key}': expected {spec.dtype.name} values ({e})"
                ) from None
            if not spec.shape.is_compatible_with(tensor.shape):
                raise BadRequest(
                    f"input '{key}': shape {tensor.shape.as_list()} does not fit "
                    f"{spec.shape.as_list()}"
                )
            arrays[key] = tensor.numpy()
        return arrays

    def run(
        self, signature: str, arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Calls a signature on prepared arrays."""
        try:
            outputs = self.function(signature)(
                **{k: tf.constant(v) for k, v in arrays.items()}
            )
        except tf.errors.InvalidArgumentError as e:
            raise BadRequest(e.message) from None
        return {k: v.numpy() for k, v in outputs.items()}


def read_export_assets(path: Path) -> tuple[Any, Any, Any]:
    """(task, label space, config) of a tfsft export, from its assets; (None, None,
    None) for a SavedModel tfsft did not write."""
    assets = path / "assets"
    if not (assets / "labels.json").is_file() or not (assets / "config.yaml").is_file():
        return None, None, None
    import yaml

    from tfsft.config import validate_config
    from tfsft.data.labels import LabelSpec
    from tfsft.tasks import get_task

    config = validate_config(
        yaml.safe_load((assets / "config.yaml").read_text()),
        source=str(assets / "config.yaml"),
    )
    return get_task(config), LabelSpec.load(assets / "labels.json"), config


class ModelStore:
    """The versions of one model; polls its base dir for new versions."""

    def __init__(self, base: Path, poll_seconds: float = 2.0) -> None:
        self.base = Path(base)
        self.name = self.base.name
        self.poll_seconds = poll_seconds
        self._servable: Servable | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        if self._servable is None:
            raise FileNotFoundError(
                f"{self.base}: no version to serve (expected <int>/saved_model.pb)"
            )

    def refresh(self) -> None:
        """Loads the highest complete version if it is newer than the served one."""
        versions = sorted(
            (
                int(p.name)
                for p in self.base.iterdir()
                if p.name.isdigit() and (p / "saved_model.pb").is_file()
            ),
            reverse=True,
        )
        current = self._servable.version if self._servable else 0
        if not versions or versions[0] <= current:
            return
        servable = Servable.load(self.base / str(versions[0]))
        with self._lock:
            self._servable = servable
        log.info("serving %s version %d", self.name, servable.version)

    def start_polling(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.refresh()
                except Exception as e:  # a half-copied dir must not kill the server
                    log.warning("could not load a new version of %s: %s", self.name, e)

        threading.Thread(target=loop, name="version-poll", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def get(self, name: str, version: int | None = None) -> Servable:
        with self._lock:
            servable = self._servable
        if name != self.name or servable is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if version is not None and version != servable.version:
            raise NotFound(
                f"Servable not found for request: Specific({name}, {version})"
            )
        return servable


@dataclass
class _Job:
    servable: Servable
    signature: str
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future = field(default_factory=Future)


class Batcher:
    """Merges concurrent requests to the same signature into one model call.

    A request waits at most ``max_wait_ms`` for companions, and a merged batch holds
    at most ``max_batch_size`` rows, so latency and memory stay bounded.
    """

    def __init__(self, max_batch_size: int = 64, max_wait_ms: float = 5.0) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[_Job] = queue.Queue()
        # Merged model calls made so far (fewer than requests when batching works).
        self.calls = 0
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def run(
        self, servable: Servable, signature: str, inputs: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Validates one request, waits for its batch to run, returns its rows."""
        arrays = servable.prepare(signature, inputs)  # bad input fails alone
        servable.check(signature, arrays)
        rows = {len(v) for v in arrays.values() if v.ndim > 0}
        if len(rows) != 1:
            # No common batch dimension to split on: run it by itself.
            return servable.run(signature, arrays)
        job = _Job(servable, signature, arrays, rows.pop())
        self._queue.put(job)
        return job.future.result()

    def _loop(self) -> None:
        pending: list[_Job] = []
        while True:
            first = pending.pop(0) if pending else self._queue.get()
            batch, size = [first], first.rows
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch_size:
                try:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if _key(job) == _key(first) and size + job.rows <= self.max_batch_size:
                    batch.append(job)
                    size += job.rows
                else:
                    pending.append(job)
            self._run(batch)
            self.calls += 1

    @staticmethod
    def _run(batch: list[_Job]) -> None:
        first = batch[0]
        try:
            merged = {
                k: np.concatenate([j.inputs[k] for j in batch]) for k in first.inputs
            }
            outputs = first.servable.run(first.signature, merged)
        except Exception as e:  # every waiter gets the error of the merged call
            for job in batch:
                job.future.set_exception(e)
            return
        start = 0
        for job in batch:
            stop = start + job.rows
            job.future.set_result({k: v[start:stop] for k, v in outputs.items()})
            start = stop


def _key(job: _Job) -> tuple:
    shapes = tuple(
        (k, np.asarray(v).dtype.kind, np.shape(v)[1:])
        for k, v in sorted(job.inputs.items())
    )
    return (id(job.servable), job.signature, shapes)
