"""The model card (README.md) written into every export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfsft.runs import Run
from tfsft.tasks import get_task
from tfsft.tasks.base import TEXT_SIGNATURE, TOKENS_SIGNATURE


def write_model_card(path: Path, run: Run, signatures: dict[str, Any]) -> None:
    """Task, base model, data, metrics, labels, and how to query the export."""
    cfg = run.config
    task = get_task(cfg)
    metrics = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in run.metrics.items()
    )
    labels = ", ".join(run.labels.names) or "(none: the model outputs values)"
    if run.labels.scheme:
        labels += f" (tagging scheme {run.labels.scheme})"
    if TEXT_SIGNATURE in signatures:
        usage = _text_usage(
            task.serving_usage(cfg), _inputs(signatures[TEXT_SIGNATURE])
        )
    else:
        tokens = ", ".join(f"`{n}`" for n in _inputs(signatures[TOKENS_SIGNATURE]))
        usage = (
            "This variant holds only core TensorFlow ops: it takes token ids.\n"
            "Tokenize on the client with `assets/vocab.txt` (WordPiece, "
            f"sequence length {cfg.model.sequence_length}) and call the "
            f"`{TOKENS_SIGNATURE}` signature with {tokens} (int32, [batch, "
            "length]); it returns `logits`."
        )
    validation = cfg.data.validation or (
        f"{cfg.data.validation_fraction:.0%} of train"
        if cfg.data.validation_fraction
        else "none"
    )
    path.write_text(
        f"""# {cfg.name}

Fine-tuned with tfsft.

- task: {cfg.task}
- base model: `{cfg.model.preset}` (sequence length {cfg.model.sequence_length})
- head: {task.describe_head(run.model)}
- fine-tuning: {_method(cfg, run.model)}
- training data: `{cfg.data.train}`; validation: `{validation}`
- labels: {labels}

## Validation metrics

| metric | value |
|---|---|
{metrics}

## Querying

{usage}
""",
        encoding="utf-8",
    )


def _method(cfg: Any, model: Any) -> str:
    """The PEFT method, and whether LoRA is merged into this export's weights."""
    from tfsft.models.peft import peft_state

    method = cfg.peft.method
    if method == "none":
        return (
            "all weights"
            if cfg.model.freeze == "none"
            else f"freeze {cfg.model.freeze}"
        )
    state = peft_state(getattr(model, "causal_lm", model))
    if method == "lora":
        merged = state is None or state.merged
        how = "merged into the weights" if merged else "kept apart (--no-merge)"
        return f"LoRA r {cfg.peft.rank}, {how}"
    return f"{method} (peft section of assets/config.yaml)"


def _inputs(function: Any) -> list[str]:
    """A signature's input names, in the order it declares them."""
    return [spec.name for spec in tf.nest.flatten(function.structured_input_signature)]


def _text_usage(outputs: str, inputs: list[str]) -> str:
    examples = {
        "text": "first",
        "text_pair": "second",
        "prompt": "Name three colours.",
        "max_new_tokens": 32,
    }
    values = {name: examples.get(name, name) for name in inputs}
    instance = json.dumps(values if len(inputs) > 1 else values[inputs[0]])
    args = ", ".join(f"{k}=tf.constant([{v!r}])" for k, v in values.items())
    return f"""Signature `{TEXT_SIGNATURE}` takes raw text and needs the
tensorflow-text ops (`import tensorflow_text` before `tf.saved_model.load`; a TF Serving
build that includes them). `{TOKENS_SIGNATURE}` takes token ids and returns logits.

{outputs}

```bash
curl -s -X POST localhost:8501/v1/models/NAME:predict \\
  -d '{{"instances": [{instance}]}}'
```

```python
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops
model = tf.saved_model.load("saved_models/NAME/VERSION")
model.signatures["{TEXT_SIGNATURE}"]({args})
```"""
