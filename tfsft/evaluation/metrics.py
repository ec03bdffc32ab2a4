"""Task metrics from labels and model scores, as flat ``{name: float}`` dicts."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def compute_metrics(
    task: str,
    y_true: np.ndarray,
    scores: np.ndarray,
    names: tuple[str, ...] = (),
    threshold: float = 0.5,
) -> dict[str, float]:
    """Headline metrics for a split.

    Args:
        task: classification | multilabel | regression.
        y_true: int ids [N], multi-hot [N, K] or values [N, 1].
        scores: probabilities [N, K] (classifiers) or predicted values [N, 1].
        names: class names in id order.
        threshold: multilabel decision threshold.
    """
    if task == "classification":
        return _classification(y_true, scores, len(names))
    if task == "multilabel":
        return _multilabel(y_true, scores, threshold)
    return _regression(y_true.reshape(-1), scores.reshape(-1))


def per_class_report(
    task: str,
    y_true: np.ndarray,
    scores: np.ndarray,
    names: tuple[str, ...],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Precision/recall/F1/support per class (scikit-learn's report as a dict)."""
    if task == "regression":
        return {}
    y_pred = predict_labels(task, scores, threshold)
    kwargs: dict[str, Any] = {"target_names": list(names), "zero_division": 0}
    if task == "classification":
        kwargs["labels"] = list(range(len(names)))
    return skm.classification_report(y_true, y_pred, output_dict=True, **kwargs)


def confusion(y_true: np.ndarray, scores: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix [true, predicted] of a single-label classifier."""
    return skm.confusion_matrix(
        y_true, scores.argmax(axis=-1), labels=list(range(num_classes))
    )


def predict_labels(task: str, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Decisions from scores: ids [N] or multi-hot [N, K]."""
    if task == "classification":
        return scores.argmax(axis=-1)
    return (scores >= threshold).astype(np.int64)


def _classification(y: np.ndarray, probs: np.ndarray, k: int) -> dict[str, float]:
    pred = probs.argmax(axis=-1)
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "mcc": skm.matthews_corrcoef(y, pred),
        "loss": skm.log_loss(y, np.clip(probs, 1e-12, 1.0), labels=list(range(k))),
    }
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, average=avg, labels=list(range(k)), zero_division=0
        )
        out |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
    return {k: float(v) for k, v in out.items()}


def _multilabel(y: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (probs >= threshold).astype(np.int64)
    y = y.astype(np.int64)
    clipped = np.clip(probs, 1e-12, 1 - 1e-12)
    bce = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean()
    out = {
        "subset_accuracy": skm.accuracy_score(y, pred),
        "hamming_loss": skm.hamming_loss(y, pred),
        "loss": bce,
    }
    for avg in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, average=avg, zero_division=0
        )
        out |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
    return {k: float(v) for k, v in out.items()}


def _regression(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    out = {
        "mse": skm.mean_squared_error(y, pred),
        "mae": skm.mean_absolute_error(y, pred),
        "loss": skm.mean_squared_error(y, pred),
    }
    # Correlations are undefined for a constant input; report NaN rather than warn.
    constant = np.ptp(y) == 0 or np.ptp(pred) == 0
    out["pearson"] = np.nan if constant else stats.pearsonr(y, pred).statistic
    out["spearman"] = np.nan if constant else stats.spearmanr(y, pred).statistic
    return {k: float(v) for k, v in out.items()}
