"""`tfsft config init|validate|show|schema`: write, check and show configs.

None of these imports TensorFlow, so they answer at once (an editor or a pre-commit
hook may run `config validate` on every save).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tfsft.cli_common import ConfigArg, SetOpt, _handle_errors
from tfsft.config import config_schema, config_to_yaml, load_config
from tfsft.config_init import starter_config, write_starter_config
from tfsft.console import err
from tfsft.tasks.registry import TASKS

config_app = typer.Typer(help="Write, check and show configs.", no_args_is_help=True)


@config_app.command("init")
@_handle_errors
def config_init(
    task: Annotated[
        str, typer.Option(help=f"The task: {' | '.join(TASKS)}.", show_default=False)
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            help="model.preset; default: minilm (smollm2-135m for causal_lm)."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the config here (not stdout).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output.")] = False,
) -> None:
    """Print (or --output) a commented starter config for TASK."""
    text = starter_config(task, preset, output)
    if output is None:
        typer.echo(text, nl=False)
        return
    write_starter_config(output, text, force)
    shown = escape(str(output))
    err.print(
        f"wrote {shown}; check it with: tfsft config validate {shown}", soft_wrap=True
    )


@config_app.command("validate")
@_handle_errors
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check CONFIG; exit 0 if valid."""
    cfg = load_config(config, set_ or [])
    err.print(f"[green]ok[/]: {escape(str(config))} ({cfg.name}, task {cfg.task})")


@config_app.command("show")
@_handle_errors
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print CONFIG with overrides applied and every default filled in."""
    typer.echo(config_to_yaml(load_config(config, set_ or [])), nl=False)


@config_app.command("schema")
@_handle_errors
def config_schema_cmd() -> None:
    """Print the JSON Schema of configs (for editors: docs/tfsft.schema.json)."""
    typer.echo(config_schema())
