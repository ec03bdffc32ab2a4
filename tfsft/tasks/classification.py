"""``task: classification``: one class per text (or text pair), softmax over K."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig
from tfsft.data.labels import (
    LabelSpec,
    check_one_type,
    label_names,
    raise_unknown,
    show_names,
)
from tfsft.data.sources import Examples
from tfsft.errors import DataError
from tfsft.evaluation.metrics import classification_metrics, confusion, per_class_report
from tfsft.evaluation.report import plot_confusion
from tfsft.runs import write_json
from tfsft.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    import keras


class Classification(SequenceTask):
    name = "classification"
    metric_modes: ClassVar[dict[str, str]] = {"loss": "min", "accuracy": "max"}
    default_monitor = "val_accuracy"
    output_doc = (
        "`probabilities` [batch, K] (softmax), `label_ids` [batch] and `labels` "
        "[batch] (the names of the most probable classes)"
    )

    def stratify_on(self, examples: Examples) -> list[str]:
        return [str(v) for v in examples.labels]

    def build_labels(self, train: Examples, cfg: DataConfig) -> LabelSpec:
        check_one_type(train, cfg.label_column)
        names = label_names(train, cfg, lambda i: {str(train.labels[i])})
        if len(names) < 2:
            raise DataError(
                f"{train.source}: field '{cfg.label_column}': found only one class "
                f"({show_names(names)}); classification needs at least two"
            )
        return LabelSpec(self.name, tuple(names))

    def encode_targets(
        self, labels: LabelSpec, examples: Examples, cfg: DataConfig
    ) -> np.ndarray:
        """Class ids, int32 [N]."""
        check_one_type(examples, cfg.label_column)
        index = {name: i for i, name in enumerate(labels.names)}
        unknown: dict[str, int] = {}
        ids = np.zeros(len(examples), np.int32)
        for i, raw in enumerate(examples.labels):
            name = str(raw)
            if name in index:
                ids[i] = index[name]
            else:
                unknown.setdefault(name, examples.rows[i])
        raise_unknown(unknown, examples, cfg.label_column)
        return ids

    def describe_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> str:
        ids = self.encode_targets(labels, examples, cfg)
        counts = Counter(labels.names[i] for i in ids.tolist())
        return ", ".join(f"{n}: {counts.get(n, 0)}" for n in labels.names)

    def loss(self) -> keras.losses.Loss:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self) -> list[keras.metrics.Metric]:
        import keras

        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def scores(self, logits: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    def compute_metrics(
        self,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> dict[str, float]:
        return classification_metrics(y, scores, len(names))

    def write_details(
        self,
        out_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> None:
        pred = scores.argmax(axis=-1)
        report = per_class_report(y, pred, names, labels=list(range(len(names))))
        write_json(out_dir / "per_class.json", report)
        matrix = confusion(y, pred, len(names))
        write_json(
            out_dir / "confusion_matrix.json",
            {"labels": list(names), "matrix": matrix.tolist()},
        )
        plot_confusion(matrix, names, out_dir / "confusion_matrix.png")

    def errors(
        self, y: np.ndarray, scores: np.ndarray, cfg: EvaluateConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        # Worst: the lowest probability given to the true class.
        wrong = np.flatnonzero(scores.argmax(axis=-1) != y)
        return wrong, -scores[wrong, y[wrong]]

    def describe_error(
        self, truth: Any, score: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        return {
            "label": names[int(truth)],
            "predicted": names[int(score.argmax())],
            "probabilities": _rounded(names, score),
        }

    def decode_row(
        self, scores: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        return {
            "label": names[int(scores.argmax())],
            "probabilities": _rounded(names, scores),
        }

    def serving_outputs(self, labels: LabelSpec, cfg: ExperimentConfig) -> Any:
        import tensorflow as tf

        names = tf.constant(list(labels.names))

        def decode(logits: tf.Tensor) -> dict[str, tf.Tensor]:
            probs = tf.nn.softmax(logits, axis=-1)
            ids = tf.argmax(probs, axis=-1, output_type=tf.int32)
            return {
                "probabilities": probs,
                "label_ids": ids,
                "labels": tf.gather(names, ids),
            }

        return decode


def _rounded(names: tuple[str, ...], scores: np.ndarray) -> dict[str, float]:
    return {n: round(float(p), 6) for n, p in zip(names, scores, strict=True)}


TASK = Classification()
