"""``task: multilabel``: any set of labels per text, one sigmoid per label."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig
from tfsft.data.labels import LabelSpec, label_names, raise_unknown
from tfsft.data.sources import Examples
from tfsft.errors import DataError
from tfsft.evaluation.metrics import multilabel_metrics, per_class_report
from tfsft.runs import write_json
from tfsft.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    import keras


class Multilabel(SequenceTask):
    name = "multilabel"
    metric_modes: ClassVar[dict[str, str]] = {"loss": "min", "binary_accuracy": "max"}
    output_doc = (
        "`probabilities` [batch, K] (sigmoid per label), `predictions` [batch, K] "
        "(0/1 at `evaluate.threshold`) and `labels` [batch] (the predicted names, "
        "joined by `data.label_delimiter`, as one string so that every output "
        "shares the batch dimension)"
    )

    def build_labels(self, train: Examples, cfg: DataConfig) -> LabelSpec:
        names = label_names(train, cfg, lambda i: _label_set(train, i, cfg))
        return LabelSpec(self.name, tuple(names))

    def encode_targets(
        self, labels: LabelSpec, examples: Examples, cfg: DataConfig
    ) -> np.ndarray:
        """Multi-hot float32 [N, K]."""
        index = {name: i for i, name in enumerate(labels.names)}
        unknown: dict[str, int] = {}
        hot = np.zeros((len(examples), len(labels.names)), np.float32)
        for i in range(len(examples)):
            for name in _label_set(examples, i, cfg):
                if name in index:
                    hot[i, index[name]] = 1.0
                else:
                    unknown.setdefault(name, examples.rows[i])
        raise_unknown(unknown, examples, cfg.label_column)
        return hot

    def describe_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> str:
        hot = self.encode_targets(labels, examples, cfg)
        counts = hot.sum(axis=0).astype(int).tolist()
        return ", ".join(f"{n}: {c}" for n, c in zip(labels.names, counts, strict=True))

    def loss(self) -> keras.losses.Loss:
        import keras

        return keras.losses.BinaryCrossentropy(from_logits=True)

    def metrics(self) -> list[keras.metrics.Metric]:
        import keras

        # Logits > 0 is probability > 0.5.
        return [keras.metrics.BinaryAccuracy(name="binary_accuracy", threshold=0.0)]

    def scores(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logits))

    def compute_metrics(
        self,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> dict[str, float]:
        return multilabel_metrics(y, scores, cfg.threshold)

    def write_details(
        self,
        out_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> None:
        pred = (scores >= cfg.threshold).astype(np.int64)
        write_json(out_dir / "per_class.json", per_class_report(y, pred, names))

    def errors(
        self, y: np.ndarray, scores: np.ndarray, cfg: EvaluateConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        # Worst: the largest total probability error over the labels.
        pred = (scores >= cfg.threshold).astype(np.int64)
        wrong = np.flatnonzero((pred != y).any(axis=-1))
        return wrong, np.abs(scores[wrong] - y[wrong]).sum(axis=-1)

    def describe_error(
        self, truth: Any, score: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        row = self.decode_row(score, names, cfg)
        return {
            "labels": [n for n, t in zip(names, truth, strict=True) if t],
            "predicted": row["labels"],
            "probabilities": row["probabilities"],
        }

    def decode_row(
        self, scores: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        return {
            "labels": [
                n for n, p in zip(names, scores, strict=True) if p >= cfg.threshold
            ],
            "probabilities": {
                n: round(float(p), 6) for n, p in zip(names, scores, strict=True)
            },
        }

    def serving_outputs(self, labels: LabelSpec, cfg: ExperimentConfig) -> Any:
        import tensorflow as tf

        names = tf.constant(list(labels.names))
        threshold = cfg.evaluate.threshold
        delimiter = cfg.data.label_delimiter

        def decode(logits: tf.Tensor) -> dict[str, tf.Tensor]:
            probs = tf.sigmoid(logits)
            hot = probs >= threshold
            picked = tf.ragged.boolean_mask(tf.broadcast_to(names, tf.shape(hot)), hot)
            joined = tf.strings.reduce_join(picked, axis=-1, separator=delimiter)
            return {
                "probabilities": probs,
                "predictions": tf.cast(hot, tf.int32),
                "labels": joined,
            }

        return decode


def _label_set(examples: Examples, i: int, cfg: DataConfig) -> set[str]:
    """The names in a multilabel cell: a JSON list, or text split on the delimiter."""
    raw = examples.labels[i]
    if isinstance(raw, list):
        names = [str(v).strip() for v in raw]
    else:
        names = [n.strip() for n in str(raw).split(cfg.label_delimiter)]
    names = [n for n in names if n]
    if not names:
        raise DataError(
            f"{examples.locate(i)}: field '{cfg.label_column}': no labels; a "
            "multilabel row needs at least one"
        )
    return set(names)


TASK = Multilabel()
