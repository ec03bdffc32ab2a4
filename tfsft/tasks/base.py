"""The task interface: what differs from one task to the next, in one object.

Modelled on keras-hub's Backbone / Preprocessor / Task split (encoding yields
``(x, y, sample_weight)``, loss masks travel as sample weights) and on TF Model
Garden's ``base_task.Task`` (one object owns inputs, head, losses, metrics and the
host-side aggregation of validation outputs). A task object holds no state: the
config, the label space and the data are passed in, so one instance serves every run.

The stages call the hooks in this order:

    load_examples -> build_labels -> encode -> build_model / loss / metrics / monitor
    -> (fit) -> outputs -> epoch_metrics / write_report / decode -> serving_signatures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig, ModelConfig
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import Examples
from tfsft.errors import ConfigError

if TYPE_CHECKING:
    import keras

    from tfsft.evaluation.report_doc import Part

# Task modules import TensorFlow and Keras inside the hooks that use them, not at
# the top: looking a task up, reading and validating data (and failing on bad data)
# then never waits for TensorFlow to load.


@dataclass(frozen=True)
class Monitor:
    """The metric that picks the best checkpoint, and whether lower is better."""

    name: str  # a logged key, e.g. "val_accuracy"
    mode: str  # "min" | "max"


class Task:
    """Defaults shared by every task; subclasses override what differs.

    Class attributes:
        name: the config's ``task:`` value.
        metric_modes: every metric the task logs (in fit and on the host), with
            "min" or "max"; the checkpoint monitor's mode is read from here.
        default_monitor: what picks the best checkpoint when the config says nothing
            and there is validation data.
        epoch_metric_names: the metrics `epoch_metrics` returns; when there are
            any, the trainer computes them after every epoch from one prediction
            pass over the validation set, in place of Keras' validation pass.
    """

    name: ClassVar[str]
    metric_modes: ClassVar[dict[str, str]] = {"loss": "min"}
    default_monitor: ClassVar[str] = "val_loss"
    # Validation metrics computed on the host after each epoch (`epoch_metrics`),
    # instead of Keras' own validation pass (so they include the loss).
    epoch_metric_names: ClassVar[tuple[str, ...]] = ()
    # What happens to an input longer than model.sequence_length (data inspect).
    over_length: ClassVar[str] = "truncated"
    # Whether `tfsft serve` adds `decode_serving`'s JSON to REST row-format
    # responses (for outputs that are awkward as tensors, such as entity lists).
    serving_json: ClassVar[bool] = False
    # Whether the raw-text serving signature may cut a batch's unused padding
    # columns (outputs with no per-token dimension: `tfsft.export.saved_model`).
    serving_trims_padding: ClassVar[bool] = False

    # --- data -------------------------------------------------------------------
    def load_examples(
        self, spec: str, cfg: DataConfig, split: str, require_targets: bool = True
    ) -> Examples:
        """Reads and validates one split (``require_targets=False``: inputs only)."""
        raise NotImplementedError

    def stratify_on(self, examples: Examples) -> list[str] | None:
        """Per-example keys a hold-out split keeps in proportion (None: random)."""
        return None

    def build_labels(self, train: Examples, cfg: DataConfig) -> LabelSpec:
        """The label space, from the training split (or the config)."""
        raise NotImplementedError

    def check_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> None:
        """Raises `DataError` for targets outside the label space (cheap: run on
        every split before any model or tokenizer is loaded)."""

    def load_preprocessor(self, preset: str, sequence_length: int) -> Any:
        """The keras-hub preprocessor that tokenizes this task's inputs (here the
        text classifier's: tokenizer and [CLS]/[SEP] packer)."""
        from tfsft.models.backbones import load_preprocessor

        return load_preprocessor(preset, sequence_length)

    def encode(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec | None,
        cfg: ExperimentConfig,
    ) -> Encoded:
        """Token features, and targets and weights when ``labels`` is given."""
        raise NotImplementedError

    def encode_train(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec,
        cfg: ExperimentConfig,
    ) -> Encoded:
        """The training split (a task may lay it out differently, e.g. packed)."""
        return self.encode(examples, preprocessor, labels, cfg)

    def token_counts(
        self, examples: Examples, preprocessor: Any, cfg: ExperimentConfig
    ) -> np.ndarray:
        """Tokens per example [N] before truncation, special tokens included."""
        raise NotImplementedError

    def describe_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> str:
        """One line about a split's targets, for ``tfsft data inspect`` (it also
        checks them, as `check_targets` does)."""
        raise NotImplementedError

    # --- model ------------------------------------------------------------------
    def build_model(
        self,
        backbone: keras.Model,
        cfg: ModelConfig,
        labels: LabelSpec,
        preset: str,
    ) -> keras.Model:
        """A fresh head for ``labels`` on a loaded backbone (preprocessor detached)."""
        raise NotImplementedError

    def load_model(self, preset_dir: Path, dtype: str | None) -> keras.Model:
        """Loads what `build_model` built and ``save_to_preset`` wrote."""
        raise NotImplementedError

    def save_extras(self, model_dir: Path, preprocessor: Any) -> None:
        """Writes what the task needs beside the saved model (none here)."""

    def callbacks(
        self, run_dir: Path, cfg: ExperimentConfig, preprocessor: Any, validation: Any
    ) -> list[keras.callbacks.Callback]:
        """The task's own training callbacks (none here); ``validation`` is the
        validation `Examples` or None."""
        return []

    def describe_head(self, model: keras.Model) -> str:
        """The head, for the model card."""
        return f"tfsft's {type(model).__name__}"

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def metrics(self) -> list[keras.metrics.Metric]:
        """Cheap in-graph metrics shown during fit (the report comes later)."""
        return []

    def weighted_metrics(self) -> list[keras.metrics.Metric]:
        """In-graph metrics that honour the sample weights (Keras leaves them out
        of `metrics`), e.g. accuracy over labelled tokens only."""
        return []

    def monitor(self, requested: str | None, has_validation: bool) -> Monitor:
        """The checkpoint monitor: ``train.monitor`` or the task's default.

        Raises:
            ConfigError: for a metric this task does not log.
        """
        if requested is None:
            requested = self.default_monitor if has_validation else "loss"
        base = requested.removeprefix("val_")
        if base not in self.metric_modes:
            known = ", ".join(
                f"{p}{m}" for m in self.metric_modes for p in ("val_", "")
            )
            raise ConfigError(
                f"train.monitor: '{requested}' is not a metric of task {self.name}; "
                f"choose from {known}"
            )
        return Monitor(requested, self.metric_modes[base])

    # --- outputs ------------------------------------------------------------------
    def token_outputs(self, model: keras.Model, x: dict[str, Any]) -> Any:
        """In the graph, per token-level batch: what of ``model`` on ``x`` reaches
        the host, [rows, width, ...] (here all the logits, as float32)."""
        import tensorflow as tf

        return tf.cast(model(x, training=False), tf.float32)

    def outputs(self, logits: np.ndarray, encoded: Encoded) -> Any:
        """Per-example outputs (probabilities, values, ...) from per-row logits."""
        raise NotImplementedError

    def epoch_metrics(
        self, outputs: Any, encoded: Encoded, labels: LabelSpec
    ) -> dict[str, float]:
        """Validation metrics computed on the host after each epoch (none here).

        For metrics that need whole examples put back together, such as entity F1,
        which in-graph metrics cannot compute batch by batch. They replace Keras'
        validation pass, so they include ``loss``; logged as ``val_<name>``.
        """
        return {}

    def logit_metrics(self, logits: np.ndarray, encoded: Encoded) -> dict[str, float]:
        """The compiled loss and metrics (what Keras' validation pass would log),
        computed on the host from one prediction pass's logits [rows, ...].

        The trainer validates this way on one device, so that the last epoch's
        prediction pass also feeds the final report instead of being run again.
        """
        y = encoded.targets
        out = {"loss": float(self.loss()(y, logits))}
        for metric in self.metrics():
            metric.update_state(y, logits)
            out[metric.name] = float(metric.result())
        return out

    def write_report(
        self,
        out_dir: Path,
        examples: Examples,
        encoded: Encoded,
        outputs: Any,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> dict[str, float | None]:
        """Writes metrics.json and the task's other files; returns the metrics."""
        raise NotImplementedError

    def report_parts(self, out_dir: Path) -> list[Part]:
        """The task's tables and figures for the run report (per-class scores,
        confusion matrix, ...), read from the files `write_report` wrote into
        ``out_dir`` (the run dir, or its ``test/``); none here."""
        return []

    def check_predict(self, where: str) -> None:
        """Raises `TfsftError` (prefixed with ``where``) when the task's runs do
        not `predict` at all, before any input is read or encoded."""

    def decode(
        self,
        outputs: Any,
        examples: Examples,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        """One JSON-ready prediction per example."""
        raise NotImplementedError

    def input_examples(
        self,
        texts: list[str],
        pairs: list[str] | None,
        cfg: ExperimentConfig,
        where: str = "<input>",
    ) -> Examples:
        """Raw texts to predict (``tfsft predict --text``) as examples.

        Raises:
            TfsftError: (prefixed with ``where``) when the inputs do not fit the
                model, e.g. single texts for a text-pair model.
        """
        raise NotImplementedError

    def input_rows(self, examples: Examples) -> list[dict[str, Any]]:
        """What to echo beside each prediction of an input file (its row, text)."""
        raise NotImplementedError

    # --- export -------------------------------------------------------------------
    def serving_signatures(
        self,
        model: keras.Model,
        preprocessor: Any,
        labels: LabelSpec,
        cfg: ExperimentConfig,
        with_text: bool,
    ) -> dict[str, Any]:
        """Concrete functions by signature name: raw text in (``serving_default``,
        when ``with_text``) and token tensors in (``serve_tokens``)."""
        raise NotImplementedError

    def serving_usage(self, cfg: ExperimentConfig) -> str:
        """The model card's account of the raw-text signature's inputs and outputs."""
        raise NotImplementedError

    def serving_assets(
        self, model: keras.Model, preprocessor: Any, cfg: ExperimentConfig
    ) -> dict[str, str]:
        """Extra files (name -> text) for the export's ``assets/`` (none here)."""
        return {}

    def decode_serving(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        """JSON rows, as `decode` gives them, from the raw-text signature's
        outputs (``tfsft predict EXPORT``)."""
        raise NotImplementedError


TEXT_SIGNATURE = "serving_default"
TOKENS_SIGNATURE = "serve_tokens"


def token_signature(model: keras.Model, logits_fn: Any) -> Any:
    """``serve_tokens``: the model's own token inputs in, float32 ``logits`` out.

    The inputs are whatever the backbone takes (BERT: token_ids, segment_ids,
    padding_mask), each int32 [batch, length].
    """
    import tensorflow as tf

    names = sorted(model.input) if isinstance(model.input, dict) else ["token_ids"]
    specs = [tf.TensorSpec([None, None], tf.int32, name=n) for n in names]

    @tf.function(input_signature=specs)
    def serve_tokens(*tensors: Any) -> dict[str, Any]:
        return {"logits": logits_fn(dict(zip(names, tensors, strict=True)))}

    return serve_tokens.get_concrete_function()
