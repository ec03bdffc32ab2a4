"""The issue's end-to-end check of masks, template and end token: a tiny random
GPT-2 (the real GPT-2 tokenizer) trained from the shipped config must give back
every response exactly, greedily, and stop. In a file of its own: at about two
minutes it is the longest test, and pytest-xdist schedules whole files.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

import tfsft
from tfsft.config import load_config
from tfsft.data.chat import Turn
from tfsft.tasks.causal_lm.generation import generate_ids, make_sampler

CONFIG = REPO / "configs" / "sft_alpaca_tiny_gpt2.yaml"


@pytest.mark.realdata  # the GPT-2 vocabulary lives in ../shared/data
@pytest.mark.parametrize(
    "pairs, epochs",
    [
        # The default suite: 8 of the pairs (a quarter of the steps), same recipe.
        (8, 90),
        # The shipped config as it stands: all 32 pairs (about two minutes).
        pytest.param(32, None, marks=pytest.mark.slow),
    ],
)
def test_tiny_gpt2_memorises_the_instruction_pairs(tmp_path, pairs, epochs):
    lines = (REPO / "tfsft/demo_data/instructions.jsonl").read_text().splitlines()
    assert len(lines) == 32
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines[:pairs]) + "\n")
    overrides = [f"train.output_dir={tmp_path}", f"data.train={data}"]
    overrides += [f"train.epochs={epochs}"] if epochs else []
    cfg = load_config(CONFIG, overrides)
    run = tfsft.train(cfg, verbose=0)
    rows = [json.loads(line) for line in lines[:pairs]]
    prompts = [[Turn("user", r["instruction"], input=r["input"] or None)] for r in rows]
    completions = tfsft.generate(run, prompts)
    wrong = [
        (r["output"], c)
        for r, c in zip(rows, completions, strict=True)
        if c != r["output"]
    ]
    assert not wrong, f"{len(wrong)} of {pairs} not reproduced: {wrong}"
    # Every generation ended at the end token, not at the length limit.
    task = tfsft.get_task(cfg)
    preprocessor = run.model.preprocessor
    template = task.template(preprocessor, cfg)
    from tfsft.data.chat import render_prompt
    from tfsft.tasks.causal_lm.encoding import tokenize_unique

    texts = [render_prompt(p, template) for p in prompts]
    pieces = tokenize_unique(set(texts), preprocessor.tokenizer)
    new = generate_ids(
        run.model,
        [pieces[t] for t in texts],
        cfg.generate.max_new_tokens,
        task.stop_ids(preprocessor, cfg),
        make_sampler(cfg.generate),
        pad_id=0,
    )
    assert max(len(n) for n in new) < cfg.generate.max_new_tokens
    metrics = tfsft.evaluate(run, data=str(data))
    assert metrics["token_accuracy"] == 1.0 and metrics["loss"] < 0.1
