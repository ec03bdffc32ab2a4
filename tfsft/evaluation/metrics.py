"""Metrics from labels and model outputs, as flat ``{name: float}`` dicts.

Plain functions of arrays, shared by the tasks (`tfsft.tasks`), which pick theirs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def classification_metrics(
    y: np.ndarray, probs: np.ndarray, k: int
) -> dict[str, float]:
    """Accuracy, MCC, log loss and P/R/F1 (macro, micro, weighted).

    Args:
        y: true class ids [N].
        probs: probabilities [N, k].
        k: the number of classes (absent ones count in the macro averages).
    """
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


def multilabel_metrics(
    y: np.ndarray, probs: np.ndarray, threshold: float
) -> dict[str, float]:
    """Subset accuracy, Hamming loss, binary cross-entropy and P/R/F1.

    Args:
        y: multi-hot truth [N, K].
        probs: per-label probabilities [N, K].
        threshold: the decision threshold on probabilities.
    """
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


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE (also the loss), MAE, Pearson and Spearman correlation of [N] arrays."""
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


def per_class_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    names: tuple[str, ...],
    labels: list[int] | None = None,
) -> dict[str, Any]:
    """Precision/recall/F1/support per class (scikit-learn's report as a dict).

    ``y_true`` and ``y_pred`` are ids [N] (pass ``labels`` to list every class) or
    multi-hot [N, K].
    """
    kwargs: dict[str, Any] = {"target_names": list(names), "zero_division": 0}
    if labels is not None:
        kwargs["labels"] = labels
    return skm.classification_report(y_true, y_pred, output_dict=True, **kwargs)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix [true, predicted] of class ids."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
