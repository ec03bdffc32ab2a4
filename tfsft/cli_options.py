"""The CLI's global output flags: ``--verbose``, ``--quiet``, ``--json``.

They belong to the ``tfsft`` command itself, so click wants them before the
sub-command (``tfsft --json train cfg.yaml``); people write them anywhere
(``tfsft train cfg.yaml --json``), so the root group (`HoistingGroup`) moves them to
the front before parsing.
"""

from __future__ import annotations

from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from tfsft import console
from tfsft.startup import quiet_startup

GLOBAL_FLAGS = ("--verbose", "--quiet", "--json")
# Options whose value is free text: "--text --json" predicts the text "--json".
_TAKES_TEXT = ("--text", "--text-pair", "--prompt", "--set", "--data", "--input")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """``argv`` with the global flags moved before the first sub-command word."""
    hoisted, rest = [], []
    for i, word in enumerate(argv):
        after_text_option = i > 0 and argv[i - 1] in _TAKES_TEXT
        if word in GLOBAL_FLAGS and not after_text_option and "--" not in argv[:i]:
            hoisted.append(word)
        else:
            rest.append(word)
    return hoisted + rest


class HoistingGroup(TyperGroup):
    """The root command group: global flags are moved to the front first."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_flags(args))


def global_options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show TensorFlow's C++ log lines and dependencies' warnings "
            "(hidden by default).",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", help="No progress or tables: warnings, errors and the result."
        ),
    ] = False,
    json_events: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Progress, warnings and errors as one JSON object per line on "
            "stderr; `runs` commands print JSON on stdout.",
        ),
    ] = False,
) -> None:
    """Fine-tune pretrained language models with Keras 3 + TensorFlow.

    Global flags (--verbose, --quiet, --json) may go anywhere on the line.
    """
    if quiet and json_events:
        raise typer.BadParameter("--quiet and --json: choose one")
    console.set_mode("json" if json_events else "quiet" if quiet else "auto")
    quiet_startup(verbose)
    console.configure_logging()
