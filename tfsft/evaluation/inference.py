"""Batch inference with a trained run: scores, decoded predictions, evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfsft.config import DataConfig, ExperimentConfig
from tfsft.data.labels import encode_labels
from tfsft.data.pipeline import bucket_widths, make_eval_dataset, tokenize_all
from tfsft.data.sources import Examples, load_examples
from tfsft.data.splits import load_splits
from tfsft.errors import TfsftError
from tfsft.evaluation.report import write_report
from tfsft.models.heads import logits_to_scores
from tfsft.runs import Run, load_run


def predict_scores(
    model: keras.Model,
    preprocessor: Any,
    examples: Examples,
    batch_size: int,
    task: str,
    widths: list[int] | None = None,
    tokens: dict[str, Any] | None = None,
) -> np.ndarray:
    """Probabilities [N, K] (classifiers) or values [N, 1] (regression), in order.

    Examples are batched by length (padded to ``widths`` buckets) and the scores put
    back into the input order. ``tokens``, `tokenize_all`'s output for ``examples``,
    saves tokenizing them again when the caller already has it.
    """
    if tokens is None:
        tokens = tokenize_all(examples, preprocessor)
    ds, order = make_eval_dataset(tokens, None, batch_size, widths)
    # A keras-hub task with a preprocessor attached would tokenize the (already
    # tokenized) batches again inside predict(); detach it for the call.
    attached, model.preprocessor = model.preprocessor, None
    try:
        logits = model.predict(ds, verbose=0)
    finally:
        model.preprocessor = attached
    return logits_to_scores(task, logits[np.argsort(order)])


def decode(
    task: str, scores: np.ndarray, names: tuple[str, ...], threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One JSON-ready prediction per row: label name(s) and probabilities or value."""
    out = []
    for row in scores:
        if task == "regression":
            out.append({"value": float(row[0])})
            continue
        probs = {n: round(float(p), 6) for n, p in zip(names, row, strict=True)}
        if task == "classification":
            out.append({"label": names[int(row.argmax())], "probabilities": probs})
        else:
            picked = [n for n, p in zip(names, row, strict=True) if p >= threshold]
            out.append({"labels": picked, "probabilities": probs})
    return out


def predict(
    run: Run | str | Path, texts: list[str], pairs: list[str] | None = None
) -> list[dict[str, Any]]:
    """Predicts raw texts (and text pairs) with a trained run.

    Returns:
        One dict per text: ``label`` + ``probabilities`` (classification), ``labels``
        + ``probabilities`` (multilabel) or ``value`` (regression).
    """
    if not texts:
        return []
    run = _loaded(run)
    paired = run.config.data.text_pair_column is not None
    if paired and (pairs is None or len(pairs) != len(texts)):
        raise TfsftError(
            f"{run.dir}: this model classifies text pairs; give one text_pair per text"
        )
    if not paired and pairs is not None:
        raise TfsftError(f"{run.dir}: this model takes single texts, not text pairs")
    examples = Examples(
        source="<input>",
        texts=list(texts),
        labels=[None] * len(texts),
        rows=list(range(1, len(texts) + 1)),
        pairs=None if pairs is None else list(pairs),
    )
    scores = predict_scores(
        run.model,
        run.model.preprocessor,
        examples,
        run.config.train.batch_size,
        run.config.task,
        config_widths(run.config),
    )
    return decode(
        run.config.task, scores, run.labels.names, run.config.evaluate.threshold
    )


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
    if data:
        examples = load_examples(data, cfg.data, split)
    else:
        if split not in ("train", "validation", "test"):
            raise TfsftError(f"--split {split!r}: expected train, validation or test")
        # Re-deriving the splits reproduces a seeded validation_fraction hold-out.
        examples = getattr(load_splits(cfg), split)
        if examples is None:
            raise TfsftError(
                f"{run.dir}: the config has no {split} data; pass --data FILE"
            )
    y_true = encode_labels(run.labels, examples, cfg.data)
    scores = predict_scores(
        run.model,
        run.model.preprocessor,
        examples,
        cfg.train.batch_size,
        cfg.task,
        config_widths(cfg),
    )
    name = Path(data).stem if data else split
    out = Path(output_dir) if output_dir else run.dir / "eval" / name
    return write_report(
        out,
        cfg.task,
        examples,
        y_true,
        scores,
        run.labels.names,
        cfg.evaluate.threshold,
        cfg.evaluate.max_errors,
    )


def read_inputs(
    path: str | Path, cfg: DataConfig
) -> tuple[list[dict[str, Any]], list[str], list[str] | None]:
    """Reads texts to predict from a file with the run's text column(s).

    Returns:
        (rows, texts, pairs): per-row provenance records (line and texts) to echo in
        the output, the cleaned texts, and the text pairs (or None).
    """
    examples = load_examples(str(path), cfg, "predict", require_label=False)
    rows = []
    for i in range(len(examples)):
        row: dict[str, Any] = {examples.row_kind: examples.rows[i]}
        row["text"] = examples.texts[i]
        if examples.pairs is not None:
            row["text_pair"] = examples.pairs[i]
        rows.append(row)
    return rows, examples.texts, examples.pairs


def config_widths(cfg: ExperimentConfig) -> list[int] | None:
    """The padded batch widths a config's length buckets allow."""
    return bucket_widths(cfg.data.length_buckets, cfg.model.sequence_length)


def _loaded(run: Run | str | Path) -> Run:
    if isinstance(run, Run) and run.model is not None:
        return run
    return load_run(run.dir if isinstance(run, Run) else run)
