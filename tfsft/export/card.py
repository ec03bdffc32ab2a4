"""The model card (README.md) written into every export."""

from __future__ import annotations

from pathlib import Path

from tfsft.runs import Run


def write_model_card(path: Path, run: Run, tokens_only: bool) -> None:
    """Task, base model, data, metrics, labels, and how to query the export."""
    cfg = run.config
    paired = cfg.data.text_pair_column is not None
    metrics = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in run.metrics.items()
    )
    labels = ", ".join(run.labels.names) or "(regression: one value)"
    instance = '{"text": "first", "text_pair": "second"}' if paired else '"some text"'
    if tokens_only:
        usage = (
            "This variant holds only core TensorFlow ops: it takes token ids.\n"
            "Tokenize on the client with `assets/vocab.txt` (WordPiece, "
            f"sequence length {cfg.model.sequence_length}) and call the "
            "`serve_tokens` signature with `token_ids`, `segment_ids` and "
            "`padding_mask` (int32, [batch, length]); it returns `logits`."
        )
    else:
        usage = f"""Signature `serving_default` takes raw text and needs the
tensorflow-text ops (`import tensorflow_text` before `tf.saved_model.load`; a TF Serving
build that includes them). `serve_tokens` takes token ids and returns logits.

```bash
curl -s -X POST localhost:8501/v1/models/NAME:predict \\
  -d '{{"instances": [{instance}]}}'
```

```python
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops
model = tf.saved_model.load("saved_models/NAME/VERSION")
model.signatures["serving_default"]({_python_args(paired)})
```"""
    path.write_text(
        f"""# {cfg.name}

Fine-tuned with tfsft.

- task: {cfg.task}
- base model: `{cfg.model.preset}` (sequence length {cfg.model.sequence_length})
- head: {_head(run)}
- training data: `{cfg.data.train}`; validation: `{
            cfg.data.validation
            or (
                f"{cfg.data.validation_fraction:.0%} of train"
                if cfg.data.validation_fraction
                else "none"
            )
        }`
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


def _python_args(paired: bool) -> str:
    args = 'text=tf.constant(["first"])'
    return args + (', text_pair=tf.constant(["second"])' if paired else "")


def _head(run: Run) -> str:
    """The pooling of the head, and how to load ``keras/`` when it is tfsft's own."""
    from tfsft.models.pooling import MeanPoolingTextClassifier

    if isinstance(run.model, MeanPoolingTextClassifier):
        return (
            "mean of the token vectors (tfsft's `MeanPoolingTextClassifier`: load "
            "`keras/preset` with `tfsft.models.tasks.load_classifier`, or "
            "`keras/model.keras` after `import tfsft.models.pooling`; keras-hub's "
            "`TextClassifier.from_preset` would put a fresh CLS head on it)"
        )
    return "keras-hub's classifier on the pooled [CLS] output"
