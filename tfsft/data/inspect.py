"""`tfsft data inspect`: what the model will see, before spending time training."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import tensorflow as tf

from tfsft.config import ExperimentConfig
from tfsft.data.labels import build_label_spec, encode_labels
from tfsft.data.sources import Examples
from tfsft.data.splits import load_splits
from tfsft.models.backbones import load_preprocessor, resolve_preset


def inspect_splits(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Per split: rows, skipped rows, label counts, token lengths, truncation rate.

    Reading and encoding the labels runs every validation check training would, so a
    clean inspect means training will not stop on bad data.
    """
    splits = load_splits(cfg)
    spec = build_label_spec(cfg.task, splits.train, cfg.data)
    tokenizer = load_preprocessor(
        resolve_preset(cfg.model.preset), cfg.model.sequence_length
    ).tokenizer
    out = []
    for name, examples in splits.items():
        encoded = encode_labels(spec, examples, cfg.data)
        lengths = _token_lengths(tokenizer, examples)
        out.append(
            {
                "split": name,
                "rows": len(examples),
                "skipped": len(examples.skipped),
                "labels": _label_summary(cfg.task, encoded, spec.names),
                "tokens": (
                    f"{lengths.mean():.1f}/{np.percentile(lengths, 95):.0f}/"
                    f"{lengths.max()}"
                ),
                "truncated": f"{(lengths > cfg.model.sequence_length).mean():.1%}",
            }
        )
    return out


def _token_lengths(tokenizer: Any, examples: Examples) -> np.ndarray:
    """Packed lengths including [CLS]/[SEP] markers, as the model would see them."""

    def count(texts: list[str]) -> np.ndarray:
        # One vectorised call for the whole split; eager keras-hub returns lists.
        return np.array([len(ids) for ids in tokenizer(tf.constant(texts))])

    lengths = count(examples.texts) + 2
    if examples.pairs is not None:
        lengths += count(examples.pairs) + 1
    return lengths


def _label_summary(task: str, encoded: np.ndarray, names: tuple[str, ...]) -> str:
    if task == "regression":
        values = encoded.reshape(-1)
        return f"mean {values.mean():.3g}, range {values.min():.3g}..{values.max():.3g}"
    if task == "multilabel":
        counts = dict(zip(names, encoded.sum(axis=0).astype(int).tolist(), strict=True))
    else:
        counts = Counter(names[i] for i in encoded.tolist())
    return ", ".join(f"{n}: {counts.get(n, 0)}" for n in names)
