"""What the sentence-level tasks share: a text (or a text pair) in, one vector out.

Classification, multilabel classification and regression read the same columns,
tokenize the same way (keras-hub's text-classifier preprocessor: [CLS] a [SEP] b
[SEP]), put the same head on the backbone (`tfsft.models.heads`) and export the same
raw-text signature. They differ in their targets, loss, metrics and how logits
become predictions, which each defines in its own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig, ModelConfig
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import Examples, load_examples
from tfsft.errors import TfsftError
from tfsft.evaluation.report import source_fields, write_errors, write_metrics
from tfsft.evaluation.report_parts import figure, per_class_table
from tfsft.tasks.base import (
    TEXT_SIGNATURE,
    TOKENS_SIGNATURE,
    Task,
    token_signature,
)

if TYPE_CHECKING:
    import keras

    from tfsft.evaluation.report_doc import Part


class SequenceTask(Task):
    """Shared hooks; subclasses define targets, loss, metrics and decoding."""

    serving_trims_padding = True  # one output row per text: padding never shows

    def load_examples(
        self, spec: str, cfg: DataConfig, split: str, require_targets: bool = True
    ) -> Examples:
        return load_examples(spec, cfg, split, require_label=require_targets)

    def encode(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec | None,
        cfg: ExperimentConfig,
    ) -> Encoded:
        from tfsft.data.tokenize import tokenize_all

        targets = None
        if labels is not None:
            targets = self.encode_targets(labels, examples, cfg.data)
        features = tokenize_all(examples, preprocessor)
        return Encoded(features, np.arange(len(examples)), targets)

    def encode_targets(
        self, labels: LabelSpec, examples: Examples, cfg: DataConfig
    ) -> np.ndarray:
        """The model's targets for ``examples``: one row per example."""
        raise NotImplementedError

    def check_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> None:
        self.encode_targets(labels, examples, cfg)

    def token_counts(
        self, examples: Examples, preprocessor: Any, cfg: ExperimentConfig
    ) -> np.ndarray:
        import tensorflow as tf

        def count(texts: list[str]) -> np.ndarray:
            # One vectorised call for the whole split; eager keras-hub gives lists.
            return np.array(
                [len(ids) for ids in preprocessor.tokenizer(tf.constant(texts))]
            )

        paired = examples.pairs is not None
        # The packer's special tokens ([CLS], [SEP], ...): what it adds to nothing.
        empty = tf.constant([""])
        packed = preprocessor(x=(empty, empty) if paired else empty)
        specials = int(np.asarray(packed["padding_mask"]).sum())
        lengths = count(examples.texts) + specials
        if paired:
            lengths += count(examples.pairs)
        return lengths

    # --- model ------------------------------------------------------------------
    def build_model(
        self,
        backbone: keras.Model,
        cfg: ModelConfig,
        labels: LabelSpec,
        preset: str,
    ) -> keras.Model:
        from tfsft.models.heads import build_classifier

        return build_classifier(backbone, labels.num_outputs, cfg, preset)

    def load_model(self, preset_dir: Path, dtype: str | None) -> keras.Model:
        from tfsft.models.heads import load_classifier

        return load_classifier(preset_dir, dtype)

    def describe_head(self, model: keras.Model) -> str:
        from tfsft.models.heads import describe_text_classifier

        return describe_text_classifier(model)

    # --- outputs ------------------------------------------------------------------
    def outputs(self, logits: np.ndarray, encoded: Encoded) -> np.ndarray:
        # One row per example, in example order: only the scores change.
        return self.scores(np.asarray(logits, np.float64))

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities or values [N, K] from logits [N, K]."""
        raise NotImplementedError

    def write_report(
        self,
        out_dir: Path,
        examples: Examples,
        encoded: Encoded,
        outputs: np.ndarray,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> dict[str, float | None]:
        y = encoded.targets
        metrics = write_metrics(
            out_dir, self.compute_metrics(y, outputs, labels.names, cfg), len(examples)
        )
        self.write_details(out_dir, y, outputs, labels.names, cfg)
        records = self.error_records(examples, y, outputs, labels.names, cfg)
        write_errors(out_dir, records, cfg.max_errors)
        return metrics

    def report_parts(self, out_dir: Path) -> list[Part]:
        parts = [
            per_class_table(out_dir / "per_class.json", "Per class", "class"),
            figure(
                out_dir / "confusion_matrix.png",
                "Confusion matrix",
                "confusion matrix: true classes by row, predicted by column",
            ),
        ]
        return [p for p in parts if p is not None]

    def error_records(
        self,
        examples: Examples,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        """Wrong predictions, worst first, with the text and the model's scores."""
        wrong, badness = self.errors(y, scores, cfg)
        return [
            source_fields(examples, i)
            | self.describe_error(y[i], scores[i], names, cfg)
            for i in wrong[np.argsort(-badness, kind="stable")]
        ]

    def compute_metrics(
        self,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> dict[str, float]:
        """Headline metrics of a split."""
        raise NotImplementedError

    def write_details(
        self,
        out_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        names: tuple[str, ...],
        cfg: EvaluateConfig,
    ) -> None:
        """Files beyond metrics.json and errors.jsonl (per class, confusion)."""

    def errors(
        self, y: np.ndarray, scores: np.ndarray, cfg: EvaluateConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices of wrong predictions, how bad each is): the worst go first."""
        raise NotImplementedError

    def describe_error(
        self, truth: Any, score: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        raise NotImplementedError

    def decode(
        self,
        outputs: np.ndarray,
        examples: Examples,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        return [self.decode_row(row, labels.names, cfg) for row in outputs]

    def decode_row(
        self, scores: np.ndarray, names: tuple[str, ...], cfg: EvaluateConfig
    ) -> dict[str, Any]:
        raise NotImplementedError

    def input_examples(
        self,
        texts: list[str],
        pairs: list[str] | None,
        cfg: ExperimentConfig,
        where: str = "<input>",
    ) -> Examples:
        paired = cfg.data.text_pair_column is not None
        if paired and (pairs is None or len(pairs) != len(texts)):
            raise TfsftError(
                f"{where}: this model classifies text pairs; give one text_pair per "
                "text"
            )
        if not paired and pairs is not None:
            raise TfsftError(f"{where}: this model takes single texts, not text pairs")
        return Examples(
            source="<input>",
            texts=list(texts),
            labels=[None] * len(texts),
            rows=list(range(1, len(texts) + 1)),
            pairs=None if pairs is None else list(pairs),
        )

    def input_rows(self, examples: Examples) -> list[dict[str, Any]]:
        return [source_fields(examples, i) for i in range(len(examples))]

    # --- export -------------------------------------------------------------------
    def serving_signatures(
        self,
        model: keras.Model,
        preprocessor: Any,
        labels: LabelSpec,
        cfg: ExperimentConfig,
        with_text: bool,
    ) -> dict[str, Any]:
        import tensorflow as tf

        def logits(features: dict[str, tf.Tensor]) -> tf.Tensor:
            return tf.cast(model(features, training=False), tf.float32)

        signatures = {TOKENS_SIGNATURE: token_signature(model, logits)}
        if not with_text:
            return signatures
        decode = self.serving_outputs(labels, cfg)

        def text_outputs(*segments: tf.Tensor) -> dict[str, tf.Tensor]:
            x = dict(preprocessor(x=segments if len(segments) > 1 else segments[0]))
            x["padding_mask"] = tf.cast(x["padding_mask"], tf.int32)
            return decode(logits(x))

        text = tf.TensorSpec([None], tf.string, name="text")
        if cfg.data.text_pair_column is not None:
            pair = tf.TensorSpec([None], tf.string, name="text_pair")

            @tf.function(input_signature=[text, pair])
            def serve_text_pair(text, text_pair):
                return text_outputs(text, text_pair)

            signatures[TEXT_SIGNATURE] = serve_text_pair.get_concrete_function()
        else:

            @tf.function(input_signature=[text])
            def serve_text(text):
                return text_outputs(text)

            signatures[TEXT_SIGNATURE] = serve_text.get_concrete_function()
        return signatures

    def decode_serving(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        scores = outputs.get("probabilities")
        if scores is None:  # regression
            scores = np.asarray(outputs["value"]).reshape(-1, 1)
        return [self.decode_row(np.asarray(row), labels.names, cfg) for row in scores]

    def serving_outputs(self, labels: LabelSpec, cfg: ExperimentConfig) -> Any:
        """A TF function: logits [batch, K] -> the raw-text signature's outputs,
        each with the batch as its first dimension (TF Serving's row format)."""
        raise NotImplementedError

    def serving_usage(self, cfg: ExperimentConfig) -> str:
        paired = cfg.data.text_pair_column is not None
        inputs = "`text` and `text_pair`" if paired else "`text`"
        return f"Inputs: {inputs} (strings, [batch]). Outputs: {self.output_doc}."

    output_doc = ""
