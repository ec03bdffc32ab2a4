"""Inference with a trained run: logits over a split, predictions, evaluation."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfsft.config import ExperimentConfig
from tfsft.data.encoded import Encoded
from tfsft.data.pipeline import bucket_widths, make_eval_dataset
from tfsft.data.sources import other_file
from tfsft.data.splits import load_splits
from tfsft.errors import TfsftError
from tfsft.progress import Stage, stage
from tfsft.runs import Run, load_run
from tfsft.tasks import get_task


def predict_logits(
    model: keras.Model,
    encoded: Encoded,
    batch_size: int,
    widths: list[int] | None = None,
    outputs: Any = None,
    progress: str | None = None,
) -> np.ndarray:
    """The model's float logits for every row of ``encoded``, in row order.

    Rows are batched by length (padded to ``widths`` buckets) and put back into
    order. Per-token logits of batches of different widths are padded back to the
    encoded width, so the result is one array [rows, width, ...]; ``outputs``
    (model, features) -> tensor replaces the logits of each token-level batch in
    the graph (a task's `token_outputs`); ``progress`` names a progress stage to
    show (`tfsft.progress`), none by default.
    """
    ds, order = make_eval_dataset(encoded, batch_size, widths)
    # A keras-hub task with a preprocessor attached would tokenize the (already
    # tokenized) batches again inside predict(); detach it for the call.
    attached, model.preprocessor = model.preprocessor, None
    shown = stage(progress, encoded.rows) if progress else contextlib.nullcontext()
    try:
        with shown as rows_done:
            counter = _RowCounter(rows_done)
            if encoded.token_level:
                logits = _token_logits(model, ds, encoded.width, outputs, counter)
            else:
                logits = model.predict(ds, verbose=0, callbacks=[counter])
    finally:
        model.preprocessor = attached
    return np.asarray(logits)[np.argsort(order)]


def predict_outputs(
    model: keras.Model,
    task: Any,
    encoded: Encoded,
    batch_size: int,
    widths: list[int] | None = None,
    progress: str | None = None,
) -> Any:
    """The task's per-example outputs (probabilities, values, per-word tags) for
    an encoded split: `predict_logits`, then ``task.outputs``."""
    logits = predict_logits(
        model, encoded, batch_size, widths, task.token_outputs, progress
    )
    return task.outputs(logits, encoded)


class _RowCounter(keras.callbacks.Callback):
    """Advances a progress stage (if any) by the rows of each predicted batch."""

    def __init__(self, progress: Stage | None) -> None:
        super().__init__()
        self.progress = progress

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.progress is None:
            return
        rows = tf.nest.flatten((logs or {}).get("outputs", []))
        self.progress.advance(int(rows[0].shape[0]) if rows else 0)


def _token_logits(
    model: keras.Model,
    ds: tf.data.Dataset,
    width: int,
    outputs: Any = None,
    counter: _RowCounter | None = None,
) -> np.ndarray:
    """Per-token logits [rows, width, tags] of batches trimmed to different widths.

    Keras' predict() would join them into a ragged tensor through Python lists;
    each batch is padded back to the encoded width in the graph instead, which is
    traced once for the dataset's shapes (not once per batch width).
    """

    # Traced once per model, dataset structure and width, and kept on the model:
    # the per-epoch validation pass would otherwise retrace it every epoch.
    cache = model.__dict__.setdefault("_tfsft_padded_logits", {})
    key = (repr(ds.element_spec), width, getattr(outputs, "__qualname__", None))
    if key not in cache:

        @tf.function(input_signature=[ds.element_spec])
        def padded_logits(x: dict[str, tf.Tensor]) -> tf.Tensor:
            if outputs is None:
                logits = tf.cast(model(x, training=False), tf.float32)
            else:
                logits = outputs(model, x)  # [rows, w, ...]
            return tf.pad(logits, [[0, 0], [0, width - tf.shape(logits)[1]], [0, 0]])

        cache[key] = padded_logits
    padded_logits = cache[key]
    batches = []
    for x in ds:
        batches.append(padded_logits(x).numpy())
        if counter is not None:
            counter.on_predict_batch_end(0, {"outputs": batches[-1]})
    return np.concatenate(batches)


def predict(
    run: Run | str | Path, texts: list[str], pairs: list[str] | None = None
) -> list[dict[str, Any]]:
    """Predicts raw texts (and text pairs) with a trained run.

    Returns:
        One JSON-ready dict per text, as the task decodes it: ``label`` +
        ``probabilities`` (classification), ``labels`` + ``probabilities``
        (multilabel), ``value`` (regression), ``entities`` (token classification).
    """
    if not texts:
        return []
    run = _loaded(run)
    task = get_task(run.config)
    examples = task.input_examples(list(texts), pairs, run.config, where=str(run.dir))
    return predict_examples(run, examples)


def predict_examples(run: Run, examples: Any) -> list[dict[str, Any]]:
    """Predictions for examples read with the run's task (no labels needed)."""
    cfg = run.config
    task = get_task(cfg)
    task.check_predict(str(run.dir))
    encoded = task.encode(examples, run.model.preprocessor, None, cfg)
    # A few --text rows need no bar; an --input file of thousands does.
    label = "predicting" if len(examples) >= 256 else None
    outputs = predict_outputs(
        run.model, task, encoded, cfg.train.batch_size, config_widths(cfg), label
    )
    return task.decode(outputs, examples, run.labels, cfg.evaluate)


def predict_lines(
    target: str | Path,
    texts: list[str],
    pairs: list[str] | None = None,
    input: str | Path | None = None,
) -> list[dict[str, Any]]:
    """What ``tfsft predict`` prints: each input (its row and text) with its
    prediction, from a run dir or an export (``saved_models/NAME[/VERSION]``).

    Args:
        target: the run dir or export.
        texts: texts to predict (ignored with ``input``).
        pairs: their text pairs, for pair models.
        input: a file with the run's input columns instead of ``texts``.
    """
    from tfsft.export.predict import (
        is_export,
        open_export,
        predict_export,
        read_export_inputs,
    )

    rows: list[dict[str, Any]] = [
        {"text": t} | ({"text_pair": p} if pairs else {})
        for t, p in zip(texts, pairs or texts, strict=True)
    ]
    if is_export(target):
        servable = open_export(target)
        predict_export(servable, [])  # refuses a causal-LM export before reading
        if input is not None:
            rows, texts, pairs = read_export_inputs(servable, input)
        predictions = predict_export(servable, texts, pairs)
    else:
        run = load_run(target)
        get_task(run.config).check_predict(str(run.dir))
        if input is not None:
            rows, examples = read_inputs(input, run)
        else:
            task = get_task(run.config)
            examples = task.input_examples(texts, pairs, run.config, str(run.dir))
        predictions = predict_examples(run, examples)
    return [row | pred for row, pred in zip(rows, predictions, strict=True)]


def evaluate(
    run: Run | str | Path,
    data: str | None = None,
    split: str = "validation",
    output_dir: str | Path | None = None,
) -> dict[str, float | None]:
    """Scores a trained run on a split of its config, or on another labelled file.

    The file must have the run's columns; its labels must be known to the run. The
    report (metrics.json, per-class, confusion matrix, errors.jsonl) is written to
    ``output_dir``, by default ``<run>/eval/<split or file stem>/``.
    """
    run = _loaded(run)
    cfg = run.config
    task = get_task(cfg)
    if data:
        examples = task.load_examples(data, other_file(cfg.data), split)
    else:
        if split not in ("train", "validation", "test"):
            raise TfsftError(f"--split {split!r}: expected train, validation or test")
        # Re-deriving the splits reproduces a seeded validation_fraction hold-out.
        examples = getattr(load_splits(cfg), split)
        if examples is None:
            raise TfsftError(
                f"{run.dir}: the config has no {split} data; pass --data FILE"
            )
    name = Path(data).stem if data else split
    with stage(f"tokenizing {name}", len(examples)) as tokenizing:
        encoded = task.encode(examples, run.model.preprocessor, run.labels, cfg)
        tokenizing.update(len(examples))
    outputs = predict_outputs(
        run.model,
        task,
        encoded,
        cfg.train.batch_size,
        config_widths(cfg),
        f"evaluating {name}",
    )
    out = Path(output_dir) if output_dir else run.dir / "eval" / name
    return task.write_report(out, examples, encoded, outputs, run.labels, cfg.evaluate)


def read_inputs(path: str | Path, run: Run) -> tuple[list[dict[str, Any]], Any]:
    """Reads inputs to predict from a file with the run's input fields.

    Returns:
        (rows, examples): per-row provenance records (line and inputs) to echo in
        the output, and the examples to pass to `predict_examples`.
    """
    task = get_task(run.config)
    examples = task.load_examples(
        str(path), other_file(run.config.data), "predict", require_targets=False
    )
    return task.input_rows(examples), examples


def config_widths(cfg: ExperimentConfig) -> list[int] | None:
    """The padded batch widths a config's length buckets allow."""
    return bucket_widths(cfg.data.length_buckets, cfg.model.sequence_length)


def _loaded(run: Run | str | Path) -> Run:
    if isinstance(run, Run) and run.model is not None:
        return run
    return load_run(run.dir if isinstance(run, Run) else run)
