"""Validation metrics of causal-LM SFT, from per-token log-probabilities."""

from __future__ import annotations

import math

import numpy as np


def response_metrics(outputs: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Token-weighted loss over trained tokens, its perplexity, and the accuracy
    of the top prediction on them."""
    total = float(weights.sum())
    if total == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "token_accuracy": 0.0}
    loss = float(-(weights * outputs[..., 0]).sum() / total)
    hits = float(((weights > 0) * outputs[..., 1]).sum() / max((weights > 0).sum(), 1))
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "token_accuracy": hits,
    }
