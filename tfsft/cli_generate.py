"""`tfsft generate`: completions from a causal-LM run or export, as JSON lines."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tfsft.errors import TfsftError


def generate_command(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run dir of a causal_lm run, or its export "
            "(saved_models/NAME or saved_models/NAME/VERSION)."
        ),
    ],
    prompt: Annotated[
        list[str] | None, typer.Option(help="A user message to answer (repeatable).")
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option(
            help="JSONL of {prompt}, {instruction, input} or {messages} records, "
            "or a text file of one prompt per line."
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="JSON-lines output file.")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Default: the run's generate setting.")
    ] = None,
    sampler: Annotated[
        str | None, typer.Option(help="greedy | top_k | top_p (default: the run's).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, help="Sampling temperature.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output.")] = False,
) -> None:
    """Answer --prompt or an --input file with the run's template; stops at EOS."""
    from tfsft.cli import _emit, _refuse_overwrite

    if bool(prompt) == bool(input):
        raise TfsftError("give either --prompt (repeatable) or --input FILE")
    if sampler is not None and sampler not in ("greedy", "top_k", "top_p"):
        raise TfsftError(f"--sampler {sampler!r}: expected greedy, top_k or top_p")
    _refuse_overwrite(output, force)
    from tfsft.data.chat import Turn
    from tfsft.evaluation.generate import generate, read_prompts

    if input is not None:
        conversations, where = read_prompts(input)
    else:
        conversations = [[Turn("user", p)] for p in prompt or []]
        where = [f"--prompt {i + 1}" for i in range(len(conversations))]
    with contextlib.redirect_stdout(sys.stderr):
        completions = generate(
            run, conversations, max_new_tokens, sampler, temperature, seed, where
        )
    lines = [
        {"prompt": turns[-1].text if turns else "", "completion": text}
        | ({"source": at} if input is not None else {})
        for turns, text, at in zip(conversations, completions, where, strict=True)
    ]
    _emit("\n".join(json.dumps(line, ensure_ascii=False) for line in lines), output)
