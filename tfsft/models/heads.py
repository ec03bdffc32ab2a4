"""What each task's head outputs, how it is trained, and how outputs are decoded.

Every task uses keras-hub's `TextClassifier` head (pooled output -> dropout -> dense
logits); tasks differ only in the width of the dense layer, the loss, and how logits
become predictions: softmax (classification), per-label sigmoid (multilabel), or the raw
value (regression).
"""

from __future__ import annotations

import keras
import numpy as np


def make_loss(task: str) -> keras.losses.Loss:
    if task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task == "multilabel":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def make_metrics(task: str) -> list[keras.metrics.Metric]:
    """Cheap in-graph metrics shown during fit (the full report is computed later)."""
    if task == "classification":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if task == "multilabel":
        # Logits > 0 is probability > 0.5.
        return [keras.metrics.BinaryAccuracy(name="binary_accuracy", threshold=0.0)]
    return [keras.metrics.MeanAbsoluteError(name="mae")]


def default_monitor(task: str) -> str:
    return "val_accuracy" if task == "classification" else "val_loss"


def logits_to_scores(task: str, logits: np.ndarray) -> np.ndarray:
    """Probabilities [N, K] for the classifiers, values [N, 1] for regression."""
    logits = np.asarray(logits, np.float64)
    if task == "classification":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits
