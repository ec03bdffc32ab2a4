"""``task: regression``: one real value per text (or text pair), mean squared error."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import Examples
from tfsft.errors import DataError
from tfsft.evaluation.metrics import regression_metrics
from tfsft.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    import keras


class Regression(SequenceTask):
    name = "regression"
    metric_modes: ClassVar[dict[str, str]] = {"loss": "min", "mae": "min"}
    output_doc = "`value` [batch]"

    def build_labels(self, train: Examples, cfg: DataConfig) -> LabelSpec:
        return LabelSpec(self.name)

    def encode_targets(
        self, labels: LabelSpec, examples: Examples, cfg: DataConfig
    ) -> np.ndarray:
        """Values, float32 [N, 1]."""
        column = cfg.label_column
        return np.array(
            [[_to_float(examples, i, column)] for i in range(len(examples))],
            np.float32,
        )

    def describe_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> str:
        values = self.encode_targets(labels, examples, cfg).reshape(-1)
        return f"mean {values.mean():.3g}, range {values.min():.3g}..{values.max():.3g}"

    def loss(self) -> keras.losses.Loss:
        import keras

        return keras.losses.MeanSquaredError()

    def metrics(self) -> list[keras.metrics.Metric]:
        import keras

        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def scores(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def compute_metrics(
        self,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> dict[str, float]:
        return regression_metrics(y.reshape(-1), scores.reshape(-1))

    def errors(
        self, y: np.ndarray, scores: np.ndarray, cfg: EvaluateConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        # Every row, the largest absolute error first.
        err = np.abs(scores.reshape(-1) - y.reshape(-1))
        return np.arange(len(err)), err

    def describe_error(
        self, truth: Any, score: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        return {"label": float(truth[0]), "predicted": float(score[0])}

    def decode_row(
        self, scores: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        return {"value": float(scores[0])}

    def serving_outputs(self, labels: LabelSpec, cfg: ExperimentConfig) -> Any:
        return lambda logits: {"value": logits[:, 0]}


def _to_float(examples: Examples, i: int, column: str) -> float:
    raw = examples.labels[i]
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value):
        raise DataError(
            f"{examples.locate(i)}: field '{column}': expected a finite number for "
            f"regression, got {raw!r}"
        )
    return value


TASK = Regression()
