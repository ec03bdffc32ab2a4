"""Evaluation artefacts: metrics.json, per-class report, confusion matrix, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tfsft.data.sources import Examples
from tfsft.evaluation.metrics import (
    compute_metrics,
    confusion,
    per_class_report,
    predict_labels,
)
from tfsft.runs import write_json


def write_report(
    out_dir: Path,
    task: str,
    examples: Examples,
    y_true: np.ndarray,
    scores: np.ndarray,
    names: tuple[str, ...],
    threshold: float = 0.5,
    max_errors: int = 200,
) -> dict[str, float | None]:
    """Computes the metrics of one split and writes every artefact into ``out_dir``.

    Returns:
        The flat metrics dict that was written to ``metrics.json`` (NaN as None).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = _finite(compute_metrics(task, y_true, scores, names, threshold))
    metrics["num_examples"] = len(examples)
    write_json(out_dir / "metrics.json", metrics)
    if task != "regression":
        report = per_class_report(task, y_true, scores, names, threshold)
        write_json(out_dir / "per_class.json", report)
    if task == "classification":
        matrix = confusion(y_true, scores, len(names))
        write_json(
            out_dir / "confusion_matrix.json",
            {"labels": list(names), "matrix": matrix.tolist()},
        )
        plot_confusion(matrix, names, out_dir / "confusion_matrix.png")
    errors = worst_errors(task, examples, y_true, scores, names, threshold)
    with (out_dir / "errors.jsonl").open("w", encoding="utf-8") as f:
        for record in errors[:max_errors]:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return metrics


def worst_errors(
    task: str,
    examples: Examples,
    y_true: np.ndarray,
    scores: np.ndarray,
    names: tuple[str, ...],
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Wrong predictions, worst first, with the text and the model's scores.

    "Worst" is the lowest probability given to the true class (classification), the
    largest total probability error (multilabel) or the largest absolute error
    (regression).
    """
    if task == "classification":
        pred = scores.argmax(axis=-1)
        wrong = np.flatnonzero(pred != y_true)
        badness = -scores[wrong, y_true[wrong]]
    elif task == "multilabel":
        pred = predict_labels(task, scores, threshold)
        wrong = np.flatnonzero((pred != y_true).any(axis=-1))
        badness = np.abs(scores[wrong] - y_true[wrong]).sum(axis=-1)
    else:
        err = np.abs(scores.reshape(-1) - y_true.reshape(-1))
        wrong = np.arange(len(err))
        badness = err
    records = []
    for i in wrong[np.argsort(-badness, kind="stable")]:
        record: dict[str, Any] = {examples.row_kind: examples.rows[i]}
        record["text"] = examples.texts[i]
        if examples.pairs is not None:
            record["text_pair"] = examples.pairs[i]
        record |= _describe(task, y_true[i], scores[i], names, threshold)
        records.append(record)
    return records


def _describe(
    task: str, truth: Any, score: np.ndarray, names: tuple[str, ...], threshold: float
) -> dict[str, Any]:
    if task == "classification":
        return {
            "label": names[int(truth)],
            "predicted": names[int(score.argmax())],
            "probabilities": {
                n: round(float(p), 6) for n, p in zip(names, score, strict=True)
            },
        }
    if task == "multilabel":
        return {
            "labels": [n for n, t in zip(names, truth, strict=True) if t],
            "predicted": [
                n for n, p in zip(names, score, strict=True) if p >= threshold
            ],
            "probabilities": {
                n: round(float(p), 6) for n, p in zip(names, score, strict=True)
            },
        }
    return {"label": float(truth[0]), "predicted": float(score[0])}


def plot_confusion(matrix: np.ndarray, names: tuple[str, ...], path: Path) -> None:
    plt = _pyplot()
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for (r, c), v in np.ndenumerate(matrix):
        color = "white" if v > peak / 2 else "black"
        ax.text(c, r, str(v), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Training curves: one panel per metric, train and validation together."""
    bases = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    if not bases or not any(history[k] for k in bases):
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(bases), figsize=(4 * len(bases), 3), squeeze=False)
    for ax, key in zip(axes[0], bases, strict=True):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN; an undefined metric (e.g. correlation of a constant) is null.
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
