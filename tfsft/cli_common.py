"""What every `tfsft` command module shares: the error handler and the config
argument types.

A module of its own so that `tfsft.cli` and its command groups (`tfsft.cli_config`,
...) import it without importing each other.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from tfsft.console import emit_event, err, json_mode
from tfsft.errors import Interrupted, TfsftError

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a key, e.g. --set train.epochs=2 (repeatable)."
    ),
]


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a command: errors a user can cause print one clear line on stderr and
    exit 1 (interrupts 130/143, bugs 3) without a traceback; in ``--json`` mode
    the line is an ``error`` event."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            code = 143 if e.signame == "SIGTERM" else 130
            _fail(code, "[yellow]interrupted[/]: ", str(e))
        except TfsftError as e:
            _fail(1, "[bold red]error:[/] ", str(e))
        except KeyboardInterrupt:
            _fail(130, "[yellow]interrupted[/]: ", "re-run the same command to resume")
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            _fail(1, "[bold red]error:[/] ", where + str(e.strerror or e))
        except Exception as e:
            if os.environ.get("TFSFT_DEBUG"):
                raise
            _fail(
                3,
                "[bold red]internal error:[/] ",
                f"{type(e).__name__}: {e}\nThis is a bug in tfsft; run with "
                "TFSFT_DEBUG=1 for the traceback.",
            )

    return wrapper


def _fail(code: int, label: str, message: str) -> NoReturn:
    if json_mode():
        emit_event("error", message=message, exit_code=code)
    else:
        err.print(label + escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None
