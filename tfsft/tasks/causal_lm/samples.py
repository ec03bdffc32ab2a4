"""Greedy generations for a few fixed validation prompts, written after every
epoch into ``<run>/generations/epoch_NNN.jsonl``: the quickest way to see what a
fine-tune is learning (and whether it learned to stop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras

from tfsft.config_sft import GenerateConfig
from tfsft.data.chat import Template, Turn, render_prompt


def prompt_and_reference(turns: list[Turn]) -> tuple[list[Turn], str] | None:
    """A conversation cut before its last assistant turn, and that turn's text."""
    last = max((i for i, t in enumerate(turns) if t.role == "assistant"), default=-1)
    if last < 1:
        return None
    return turns[:last], turns[last].text


class GenerationSamples(keras.callbacks.Callback):
    """Writes greedy completions of fixed validation prompts after each epoch."""

    def __init__(
        self,
        run_dir: Path,
        conversations: list[list[Turn]],
        template: Template,
        tokenizer: Any,
        stop_ids: list[int],
        max_new_tokens: int,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        pairs = [p for p in map(prompt_and_reference, conversations) if p]
        self.prompts = [render_prompt(turns, template) for turns, _ in pairs]
        self.references = [ref for _, ref in pairs]
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.cfg = GenerateConfig(max_new_tokens=max_new_tokens)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from tfsft.tasks.causal_lm.generation import generate_texts

        if not self.prompts:
            return
        texts = generate_texts(
            self.model, self.tokenizer, self.prompts, self.cfg, self.stop_ids
        )
        path = self.run_dir / "generations" / f"epoch_{epoch + 1:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {"prompt": p, "reference": r, "generated": g}
            for p, r, g in zip(self.prompts, self.references, texts, strict=True)
        ]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
