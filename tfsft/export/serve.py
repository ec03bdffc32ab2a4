"""`tfsft serve`: a local server with TF Serving's REST and gRPC APIs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from tfsft.errors import TfsftError
from tfsft.export.grpc_service import make_grpc_server
from tfsft.export.rest import RestServer
from tfsft.export.servables import Batcher, ModelStore

log = logging.getLogger("tfsft")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"  # loopback unless the user asks for more
    port: int = 8501
    grpc_port: int | None = 8500
    max_batch_size: int = 64
    batch_timeout_ms: float = 5.0
    max_body_mb: float = 10.0
    max_rows: int = 1024
    poll_seconds: float = 2.0
    # Every endpoint (REST, OpenAI, gRPC) then wants "Authorization: Bearer KEY".
    api_key: str | None = None


class Server:
    """REST (+ gRPC) front ends over one model store and one batcher."""

    def __init__(self, base: str | Path, options: ServeOptions | None = None) -> None:
        self.options = opts = options or ServeOptions()
        base = Path(base)
        if not base.is_dir():
            raise TfsftError(f"{base}: model base dir not found (saved_models/NAME)")
        try:
            self.store = ModelStore(base, opts.poll_seconds)
        except FileNotFoundError as e:
            raise TfsftError(str(e)) from None
        self.batcher = batcher = Batcher(opts.max_batch_size, opts.batch_timeout_ms)
        max_body = int(opts.max_body_mb * 2**20)
        try:
            self.rest = RestServer(
                (opts.host, opts.port),
                self.store,
                batcher,
                max_body,
                opts.max_rows,
                opts.api_key,
            )
        except OSError as e:
            raise TfsftError(
                f"--port {opts.port}: cannot listen: {e.strerror}"
            ) from None
        self.grpc = None
        self.grpc_port = None
        if opts.grpc_port is not None:
            self.grpc, self.grpc_port = make_grpc_server(
                f"{opts.host}:{opts.grpc_port}",
                self.store,
                batcher,
                opts.max_rows,
                max_body,
                opts.api_key,
            )
            if not self.grpc_port:
                raise TfsftError(f"--grpc-port {opts.grpc_port}: cannot listen")

    @property
    def port(self) -> int:
        return self.rest.server_address[1]

    def start(self) -> None:
        """Starts serving in background threads."""
        self.store.start_polling()
        if self.grpc is not None:
            self.grpc.start()
        threading.Thread(target=self.rest.serve_forever, daemon=True).start()
        log.info(
            "serving %s version %d: REST http://%s:%d/v1/models/%s%s",
            self.store.name,
            self.store.get(self.store.name).version,
            self.options.host,
            self.port,
            self.store.name,
            f", gRPC {self.options.host}:{self.grpc_port}" if self.grpc else "",
        )
        if self.store.get(self.store.name).generation is not None:
            log.info(
                "OpenAI-compatible chat: http://%s:%d/v1/chat/completions",
                self.options.host,
                self.port,
            )

    def stop(self) -> None:
        self.store.stop()
        self.rest.shutdown()
        self.rest.server_close()
        if self.grpc is not None:
            self.grpc.stop(grace=1)
