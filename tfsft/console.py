"""Where tfsft's terminal output goes, and in which form.

One process-wide setting, chosen by the CLI's global flags (``--quiet``, ``--json``,
``--verbose``) or left at "auto" for library use:

- auto: rich tables and a live progress bar on a terminal, plain lines otherwise
  (CI logs, nohup, notebooks);
- quiet: warnings, errors and the command's result only;
- json: every event is one JSON object per line on stderr (``{"event": ...}``), so
  a script reads stderr as a stream of events and stdout stays the command's
  result, as in every mode (``RUN=$(tfsft train cfg.yaml)`` keeps working).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape

Mode = Literal["auto", "quiet", "json"]

err = Console(stderr=True)
_mode: Mode = "auto"


def set_mode(mode: Mode) -> None:
    global _mode
    _mode = mode


def mode() -> Mode:
    return _mode


def json_mode() -> bool:
    return _mode == "json"


def quiet() -> bool:
    """Whether human-readable progress and tables are suppressed (quiet or json)."""
    return _mode != "auto"


def interactive() -> bool:
    """Whether a live progress display fits: auto mode on a real terminal."""
    return _mode == "auto" and err.is_terminal


def emit_event(event: str, **fields: Any) -> None:
    """Writes one JSON event line to stderr (json mode only; a no-op otherwise)."""
    if _mode != "json":
        return
    record = {"event": event, "time": round(time.time(), 3), **fields}
    sys.stderr.write(json.dumps(record, default=_plain, ensure_ascii=False) + "\n")
    sys.stderr.flush()


def show(renderable: Any) -> None:
    """Prints a table or message for people (auto mode only)."""
    if _mode == "auto":
        err.print(renderable)


def _plain(value: Any) -> Any:
    # numpy scalars and paths, which json cannot write by itself.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class ConsoleLogHandler(logging.Handler):
    """tfsft's log records in the console's mode: a short line for people (info
    plain, warnings and errors labelled), a ``log`` event in json mode, and
    warnings and errors only under ``--quiet``."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _mode == "json":
            emit_event("log", level=record.levelname.lower(), message=message)
            return
        if _mode == "quiet" and record.levelno < logging.WARNING:
            return
        label = (
            "[bold red]error:[/] "
            if record.levelno >= logging.ERROR
            else "[yellow]warning:[/] "
            if record.levelno >= logging.WARNING
            else ""
        )
        err.print(label + escape(message), highlight=False, soft_wrap=True)


def configure_logging() -> None:
    """Routes log records to `ConsoleLogHandler`: tfsft's from INFO, every other
    library's from WARNING (their INFO lines are not for the user)."""
    root = logging.getLogger()
    # Others' handlers stay (pytest's capture, a notebook's); ours is not doubled.
    kept = [h for h in root.handlers if not isinstance(h, ConsoleLogHandler)]
    root.handlers = [*kept, ConsoleLogHandler()]
    root.setLevel(logging.WARNING)
    logging.getLogger("tfsft").setLevel(logging.INFO)
