"""Generating with a causal-LM export: `tfsft generate EXPORT`, and what the
server needs to check and call its generation signatures.

An export carries what generation needs beside the graph (`assets/template.json`,
`assets/generation.json`), so prompts and chat messages are rendered here in
Python exactly as with the run (`tfsft.data.chat.render_prompt`) and sent to the
``generate_text`` signature. Prompt lengths are checked with ``count_tokens``
first, so a bad prompt gets a message naming it (and, in the server, fails its
own request instead of the merged batch it would have joined).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfsft.data.chat import Template, Turn, render_prompt, render_prompts
from tfsft.errors import TfsftError
from tfsft.progress import stage

GENERATE_TEXT = "generate_text"  # the names `tfsft.tasks.causal_lm.serving` exports
COUNT_TOKENS = "count_tokens"
MAX_NEW_TOKENS = 4096  # GenerateConfig's bound; also caps a request's memory


@dataclass(frozen=True)
class ExportGeneration:
    """An export's template and generation defaults (``assets/generation.json``:
    max_new_tokens, sampler, temperature, top_k, top_p, seed, context_length)."""

    template: Template
    defaults: dict[str, Any]

    @property
    def context(self) -> int | None:
        return self.defaults.get("context_length")


def read_generation(path: Path) -> ExportGeneration | None:
    """The generation assets of an export version dir (None: not a causal LM)."""
    assets = Path(path) / "assets"
    if not (assets / "template.json").is_file():
        return None
    template = Template.from_json((assets / "template.json").read_text())
    defaults_file = assets / "generation.json"
    defaults = json.loads(defaults_file.read_text()) if defaults_file.is_file() else {}
    return ExportGeneration(template, defaults)


def prompt_problem(tokens: int, max_new: int, context: int | None) -> str | None:
    """What is wrong with a rendered prompt of ``tokens`` tokens, or None."""
    if not 1 <= max_new <= MAX_NEW_TOKENS:
        return f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS} (got {max_new})"
    if context is not None and tokens + max_new > context:
        return (
            f"the prompt is {tokens} tokens; with max_new_tokens {max_new} that "
            f"exceeds the model's context of {context} tokens; shorten the prompt "
            "or lower max_new_tokens"
        )
    return None


def count_tokens(servable: Any, texts: list[str]) -> list[int]:
    """Tokens of each rendered text, from the export's ``count_tokens``."""
    out = servable.run(COUNT_TOKENS, {"text": np.array(texts, dtype=object)})
    return [int(n) for n in out["token_count"]]


def check_request(servable: Any, signature: str, arrays: dict[str, np.ndarray]) -> None:
    """Checks a generation request's rows before it joins a merged batch.

    Raises:
        BadRequest: naming the row (empty prompt, too long for the context).
    """
    from tfsft.export.servables import BadRequest

    generation = servable.generation
    if signature not in ("serving_default", GENERATE_TEXT):
        return
    if len({len(v) for v in arrays.values()}) != 1:
        raise BadRequest(
            f"signature '{signature}': every input needs one value per row"
        )
    if signature == "serving_default":
        prompts = [_text(p) for p in arrays["prompt"]]
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise BadRequest(f"row {i}: the prompt is empty")
        texts = [render_prompt([Turn("user", p)], generation.template) for p in prompts]
    else:
        texts = [_text(t) for t in arrays["text"]]
    counts = count_tokens(servable, texts)
    for i, (n, m) in enumerate(zip(counts, arrays["max_new_tokens"], strict=True)):
        problem = "the text is empty" if n == 0 else None
        problem = problem or prompt_problem(n, int(m), generation.context)
        if problem:
            raise BadRequest(f"row {i}: {problem}")


def sampling_inputs(
    defaults: dict[str, Any],
    rows: int,
    sampler: str | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """``generate_text``'s sampling inputs for ``rows`` rows.

    ``sampler`` (greedy | top_k | top_p) and the other settings default to the
    export's. Greedy is temperature 0; a temperature given without a sampler
    samples (OpenAI's meaning), with the export's top_k / top_p if its sampler
    uses them. Without a seed, a random one is drawn.
    """
    asked, sampler = sampler, sampler or defaults.get("sampler", "greedy")
    if asked == "greedy":
        temperature = 0.0
    elif temperature is None:
        temperature = 0.0 if sampler == "greedy" else defaults.get("temperature", 1.0)
    if top_k is None:
        top_k = defaults.get("top_k", 50) if sampler == "top_k" else 0
    if top_p is None:
        top_p = defaults.get("top_p", 0.9) if sampler == "top_p" else 1.0
    if seed is None:
        seed = defaults.get("seed")
    if seed is None:
        seed = secrets.randbits(62)
    full = np.full
    return {
        "temperature": full(rows, temperature, np.float32),
        "top_k": full(rows, top_k, np.int32),
        "top_p": full(rows, top_p, np.float32),
        "seed": full(rows, seed, np.int64),
    }


def generate_export(
    target: str | Path | Any,
    prompts: list[str] | list[list[Turn]],
    max_new_tokens: int | None = None,
    sampler: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    where: list[str] | None = None,
) -> list[str]:
    """Completes each prompt (a user message or a conversation) with an export.

    Args:
        target: ``saved_models/NAME`` (its highest version), a version dir, or
            a loaded `Servable`.
        prompts, max_new_tokens, sampler, temperature, seed: as for a run
            (`tfsft.evaluation.generate.generate`); defaults: the export's.
        where: where each prompt came from, for error messages.

    Raises:
        TfsftError: not a causal-LM export, an empty prompt, or one too long
            for the model's context (naming the prompt).
    """
    from tfsft.export.predict import open_export
    from tfsft.export.servables import Servable

    servable = target if isinstance(target, Servable) else open_export(target)
    generation = servable.generation
    if generation is None or GENERATE_TEXT not in servable.signature_defs:
        raise TfsftError(
            f"{servable.path}: not a causal-LM export with generation signatures "
            "(a tokens-only export, or another task)"
        )
    if sampler is not None and sampler not in ("greedy", "top_k", "top_p"):
        raise TfsftError(f"sampler {sampler!r}: expected greedy, top_k or top_p")
    if temperature is not None and temperature <= 0:
        raise TfsftError(f"temperature must be above 0 (got {temperature})")
    max_new = max_new_tokens or int(generation.defaults.get("max_new_tokens", 128))
    where = where or [f"prompt {i + 1}" for i in range(len(prompts))]
    texts = render_prompts(prompts, generation.template, where)
    if not texts:
        return []
    for n, at in zip(count_tokens(servable, texts), where, strict=True):
        problem = prompt_problem(n, max_new, generation.context)
        if problem:
            raise TfsftError(f"{at}: {problem}")
    # The run's batch size, as `generate RUN` batches: the same rows together.
    batch = servable.config.train.batch_size
    completions: list[str] = []
    with stage("generating", len(texts), "prompts") as progress:
        for start in range(0, len(texts), batch):
            chunk = texts[start : start + batch]
            inputs = {
                "text": np.array(chunk, dtype=object),
                "max_new_tokens": np.full(len(chunk), max_new, np.int32),
            } | sampling_inputs(
                generation.defaults, len(chunk), sampler, temperature, seed=seed
            )
            out = servable.run(GENERATE_TEXT, inputs)
            completions += [_text(c) for c in out["completion"]]
            progress.advance(len(chunk))
    return completions


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
