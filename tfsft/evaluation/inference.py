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
from tfsft.progress import stage
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
    width = encoded.width if encoded.token_level else None
    try:
        with shown as rows_done:
            fn = _logits_function(model, ds, width, outputs if width else None)
            batches = []
            for x in ds:
                batches.append(fn(x).numpy())
                if rows_done is not None:
                    rows_done.advance(len(batches[-1]))
    finally:
        model.preprocessor = attached
    return np.concatenate(batches)[np.argsort(order)]


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


def _logits_function(
    model: keras.Model, ds: tf.data.Dataset, width: int | None, outputs: Any
) -> Any:
    """The model's float32 logits of one batch, traced once per model, dataset
    structure and width (and kept on the model).

    Keras' predict() retraces its step for new batch shapes, and makes a new one
    per call, so each epoch's validation pass and the final evaluation paid for
    several traces (seconds each for MiniLM on 2 cores); the dataset's spec, with
    its unknown batch and length dimensions, serves every batch from one trace.
    Per-token logits (``width`` set) are padded back to the encoded width in the
    graph, so batches of different widths stack into one array; ``outputs``
    (model, features) -> tensor replaces them (a task's `token_outputs`).
    """
    cache = model.__dict__.setdefault("_tfsft_logits", {})
    key = (repr(ds.element_spec), width, getattr(outputs, "__qualname__", None))
    if key not in cache:

        @tf.function(input_signature=[ds.element_spec])
        def logits(x: dict[str, tf.Tensor]) -> tf.Tensor:
            if outputs is None:
                y = tf.cast(model(x, training=False), tf.float32)
            else:
                y = outputs(model, x)  # [rows, w, ...]
            if width is None:
                return y
            return tf.pad(y, [[0, 0], [0, width - tf.shape(y)[1]], [0, 0]])

        cache[key] = logits
    return cache[key]


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
    return bucket_widths(
        cfg.data.length_buckets, cfg.model.sequence_length, cfg.runtime.jit_compile
    )


def _loaded(run: Run | str | Path) -> Run:
    if isinstance(run, Run) and run.model is not None:
        return run
    return load_run(run.dir if isinstance(run, Run) else run)
