"""`tfsft models ...`: importing model checkpoints (GGUF) as Hugging Face folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

models_app = typer.Typer(help="Import model checkpoints.", no_args_is_help=True)


def _run(fn: Any, *args: Any) -> Any:
    # `tfsft.cli` imports this module to register the sub-app, so its error
    # handler (one clear line, exit 1, no traceback) is looked up at call time.
    from tfsft.cli import _handle_errors

    return _handle_errors(fn)(*args)


@models_app.command("import-gguf")
def import_gguf_command(
    file: Annotated[Path, typer.Argument(help="A llama.cpp .gguf model file.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out if it exists.")
    ] = False,
) -> None:
    """Convert a Llama-family GGUF file to a Hugging Face-format folder (prints it).

    The folder loads with keras-hub and as `model.preset`.
    """

    def convert(file: Path, out: Path, force: bool) -> Path:
        from tfsft.models.gguf import import_gguf

        return import_gguf(file, out, force=force)

    typer.echo(str(_run(convert, file, out, force)))
