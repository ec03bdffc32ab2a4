"""Evaluation files every task writes: metrics.json, errors.jsonl, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tfsft.data.sources import Examples
from tfsft.runs import write_json


def write_metrics(out_dir: Path, metrics: dict[str, float], examples: int) -> dict:
    """Writes ``metrics.json`` (NaN as null) with ``num_examples``; returns it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = finite(metrics)
    written["num_examples"] = examples
    write_json(out_dir / "metrics.json", written)
    return written


def write_errors(out_dir: Path, records: list[dict[str, Any]], limit: int) -> None:
    """Writes the first ``limit`` records (worst first) to ``errors.jsonl``."""
    with (out_dir / "errors.jsonl").open("w", encoding="utf-8") as f:
        for record in records[:limit]:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def source_fields(examples: Examples, i: int) -> dict[str, Any]:
    """Where example ``i`` came from and its text(s), to lead an error record."""
    record: dict[str, Any] = {examples.row_kind: examples.rows[i]}
    record["text"] = examples.texts[i]
    if examples.pairs is not None:
        record["text_pair"] = examples.pairs[i]
    return record


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
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(bases), figsize=(4 * len(bases), 3), squeeze=False)
    for ax, key in zip(axes[0], bases, strict=True):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:  # each epoch a tick, even a single one
            ax.set_xticks(list(epochs))
            ax.set_xlim(0.5, len(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_lengths(lengths: np.ndarray, sequence_length: int, path: Path) -> None:
    """Histogram of the training rows' token counts [N], the sequence length
    marked: how much of the data the limit cuts (or how much padding it buys)."""
    lengths = np.asarray(lengths).reshape(-1)
    if not lengths.size:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    top = max(int(lengths.max()), sequence_length)
    ax.hist(lengths, bins=min(50, top), range=(0.5, top + 0.5), color="#4c78a8")
    ax.axvline(
        sequence_length, color="#e45756", linestyle="--", label="sequence length"
    )
    # A row as long as the limit was (most likely) truncated to it.
    at_limit = float((lengths >= sequence_length).mean())
    ax.set_title(
        f"{lengths.size:,} rows: mean {lengths.mean():.1f}, "
        f"p95 {np.percentile(lengths, 95):.0f}, max {lengths.max()}; "
        f"{at_limit:.1%} at the limit",
        fontsize=10,
    )
    ax.set_xlabel("tokens per row (special tokens included)")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(values: dict[str, float], title: str, path: Path) -> None:
    """One horizontal bar per name (e.g. F1 per entity type), values in [0, 1]."""
    if not values:
        return
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color="#4c78a8")
    ax.invert_yaxis()  # the first name on top, as in the tables
    ax.set_xlim(0, 1)
    for i, n in enumerate(names):
        ax.text(min(values[n], 0.88) + 0.01, i, f"{values[n]:.3f}", va="center")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no NaN; an undefined metric (e.g. correlation of a constant) is null.
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
