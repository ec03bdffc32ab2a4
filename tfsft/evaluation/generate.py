"""`generate`: completions from a trained causal-LM run or its export.

The run's template is applied to each prompt (one user turn, or a whole
conversation), generation stops at the template's end token, and only the new text
comes back.
"""

from __future__ import annotations

import json
from pathlib import Path

from tfsft.config_sft import GenerateConfig
from tfsft.data.chat import Turn, render_prompts
from tfsft.errors import DataError, TfsftError
from tfsft.runs import Run, load_run
from tfsft.tasks import get_task


def generate(
    target: Run | str | Path,
    prompts: list[str] | list[list[Turn]],
    max_new_tokens: int | None = None,
    sampler: str | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    where: list[str] | None = None,
) -> list[str]:
    """Completes each prompt with a causal-LM run (or an export's directory).

    Args:
        target: a run (dir or `Run`) or ``saved_models/NAME[/VERSION]``.
        prompts: user messages, or conversations as lists of `Turn`s.
        max_new_tokens, sampler, temperature, seed: override the run's
            ``generate`` settings.
        where: where each prompt came from, for error messages.

    Raises:
        TfsftError: for an empty prompt or one too long for the context.
    """
    from tfsft.export.predict import is_export

    if not isinstance(target, Run) and is_export(target):
        from tfsft.export.generate import generate_export

        return generate_export(
            target, prompts, max_new_tokens, sampler, temperature, seed, where
        )
    run = target if isinstance(target, Run) and target.model else load_run(target)
    cfg = run.config
    task = get_task(cfg)
    if not hasattr(task, "stop_ids"):
        raise TfsftError(f"{run.dir}: a {cfg.task} run does not generate text")
    settings = cfg.generate.model_copy(
        update={
            k: v
            for k, v in {
                "max_new_tokens": max_new_tokens,
                "sampler": sampler,
                "temperature": temperature,
                "seed": seed,
            }.items()
            if v is not None
        }
    )
    GenerateConfig.model_validate(settings.model_dump())  # range checks
    preprocessor = run.model.preprocessor
    template = task.template(preprocessor, cfg)
    where = where or [f"prompt {i + 1}" for i in range(len(prompts))]
    texts = render_prompts(prompts, template, where)
    from tfsft.tasks.causal_lm.generation import generate_texts

    return generate_texts(
        run.model,
        preprocessor.tokenizer,
        texts,
        settings,
        task.stop_ids(preprocessor, cfg),
        batch_size=cfg.train.batch_size,
        where=where,
    )


def read_prompts(path: str | Path) -> tuple[list[list[Turn]], list[str]]:
    """Prompts from a JSONL file: ``{"prompt": ...}``, ``{"instruction", "input"}``
    or ``{"messages": [...]}`` (a final assistant message is left out), or plain
    text lines.

    Returns:
        (conversations, where each came from).

    Raises:
        DataError: naming the line of a malformed record.
    """
    from tfsft.data.chat import record_turns

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    conversations, where = [], []
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"{path}: line {n}"
        if not jsonl:
            conversations.append([Turn("user", line)])
            where.append(at)
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DataError(f"{at}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{at}: expected a JSON object")
        if "prompt" in record and "completion" not in record:
            record = {**record, "completion": "-"}  # a prompt alone is fine here
        if "instruction" in record and "output" not in record:
            record = {**record, "output": "-"}
        if "messages" in record and isinstance(record["messages"], list):
            msgs = record["messages"]
            if not msgs or msgs[-1].get("role") != "assistant":
                msgs = [*msgs, {"role": "assistant", "content": "-"}]
            record = {**record, "messages": msgs}
        turns = record_turns(record)
        if isinstance(turns, str):
            raise DataError(f"{at}: {turns}")
        conversations.append(turns[:-1] if turns[-1].role == "assistant" else turns)
        where.append(at)
    if not conversations:
        raise DataError(f"{path}: no prompts (the file is empty)")
    return conversations, where
