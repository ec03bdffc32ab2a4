"""`tfsft data inspect`: what the model will see, before spending time training."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfsft.config import ExperimentConfig
from tfsft.data.splits import load_splits
from tfsft.models.backbones import resolve_preset


def inspect_splits(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Per split: rows, skipped rows, targets, token lengths, and the share of
    examples longer than the sequence length (truncated, or split into windows).

    Reading the splits and their targets runs every data check training would, so
    a clean inspect means training will not stop on bad data. Lengths are counted before
    truncation, special tokens included, as the model would see them.
    """
    from tfsft.tasks import get_task

    task = get_task(cfg)
    splits = load_splits(cfg)
    labels = task.build_labels(splits.train, cfg.data)
    length = cfg.model.sequence_length
    preprocessor = task.load_preprocessor(resolve_preset(cfg.model.preset), length)
    out = []
    for name, examples in splits.items():
        lengths = task.token_counts(examples, preprocessor, cfg)
        out.append(
            {
                "split": name,
                "rows": len(examples),
                "skipped": len(examples.skipped),
                "labels": task.describe_targets(examples, labels, cfg.data),
                "tokens": (
                    f"{lengths.mean():.1f}/{np.percentile(lengths, 95):.0f}/"
                    f"{lengths.max()}"
                ),
                task.over_length: f"{(lengths > length).mean():.1%}",
            }
        )
    return out
