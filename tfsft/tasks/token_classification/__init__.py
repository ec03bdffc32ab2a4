"""``task: token_classification`` (NER): a tag per word, entities out.

Reads CoNLL column files (``TOKEN ... TAG``, blank lines between sentences) and
JSON/JSONL records ``{"tokens": [...], "tags": [...]}``; validates the tags against
their scheme (`tags`); splits words into sub-tokens and long sentences into
overlapping windows (`windows`); labels each word's first sub-token (the others and
the special tokens get sample weight 0); puts a per-token head on the backbone
(`head`); scores entities with seqeval in strict mode and decodes them, with
character offsets, in Python and in the exported graph (`report`, `serving`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig, ModelConfig
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec, label_names
from tfsft.data.sources import Examples
from tfsft.errors import DataError, TfsftError
from tfsft.tasks.base import Task
from tfsft.tasks.token_classification import report, serving, tags
from tfsft.tasks.token_classification.reading import gold_tag_ids, read_sentences

if TYPE_CHECKING:
    import keras

    from tfsft.evaluation.report_doc import Part


@dataclass
class TokenEncoded(Encoded):
    """Windows of sub-tokens, and where each word of each sentence is read back."""

    word_window: np.ndarray | None = None  # [words] window row of each word
    word_position: np.ndarray | None = None  # [words] its first piece's position
    word_splits: np.ndarray | None = None  # [sentences + 1] words of sentence i
    word_tags: np.ndarray | None = None  # [words] gold tag ids (with labels)


class TokenClassification(Task):
    name = "token_classification"
    metric_modes: ClassVar[dict[str, str]] = {
        "loss": "min",
        "token_accuracy": "max",
        "entity_f1": "max",
        "entity_precision": "max",
        "entity_recall": "max",
    }
    default_monitor = "val_entity_f1"
    epoch_metric_names = (
        "loss",
        "token_accuracy",
        "entity_f1",
        "entity_precision",
        "entity_recall",
    )
    over_length = "windowed"  # long sentences are split, never truncated
    serving_json = True

    # --- data -------------------------------------------------------------------
    def load_examples(
        self, spec: str, cfg: DataConfig, split: str, require_targets: bool = True
    ) -> Examples:
        return read_sentences(spec, cfg, split, require_targets)

    def build_labels(self, train: Examples, cfg: DataConfig) -> LabelSpec:
        scheme = cfg.tag_scheme
        if scheme in ("auto", "iob1"):  # IOB1 was converted to IOB2 when read
            scheme = tags.detect_scheme(train.labels)
        # data.labels, when set, lists the entity types (PER, LOC, ...).
        types = label_names(
            train,
            cfg,
            lambda i: set(tags.entity_types(train.labels[i])),
            cfg.tags_column,
        )
        if not types:
            raise DataError(
                f"{train.source}: field '{cfg.tags_column}': no entity tags in the "
                "training data (every tag is O); token classification needs some"
            )
        names = tags.label_names(types, scheme)
        return LabelSpec(self.name, tuple(names), scheme)

    def check_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> None:
        gold_tag_ids(examples, labels, cfg, report_repairs=True)

    def encode(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec | None,
        cfg: ExperimentConfig,
    ) -> TokenEncoded:
        from tfsft.tasks.token_classification import windows

        length = cfg.model.sequence_length
        overlap = windows.overlap_tokens(length, cfg.data.stride)
        win = windows.encode_words(examples.texts, preprocessor, length, overlap)
        encoded = TokenEncoded(
            features=win.features,
            example_index=win.sentence.numpy(),
            token_level=True,
            word_window=win.word_window.flat_values.numpy(),
            word_position=win.word_position.flat_values.numpy(),
            word_splits=win.word_window.row_splits.numpy(),
        )
        if labels is not None:
            gold = gold_tag_ids(examples, labels, cfg.data)
            flat = np.concatenate(gold) if gold else np.zeros(0, np.int32)
            piece_word = win.piece_word.numpy()  # [rows, L] word index or -1
            labelled = piece_word >= 0
            encoded.targets = np.where(labelled, flat[np.maximum(piece_word, 0)], 0)
            encoded.targets = encoded.targets.astype(np.int32)
            encoded.sample_weight = labelled.astype(np.float32)
            encoded.word_tags = flat
        return encoded

    def token_counts(
        self, examples: Examples, preprocessor: Any, cfg: ExperimentConfig
    ) -> np.ndarray:
        from tfsft.tasks.token_classification import windows

        return windows.piece_counts(examples.texts, preprocessor) + 2

    def describe_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> str:
        gold = gold_tag_ids(examples, labels, cfg)
        return report.describe_entities(np.concatenate(gold), labels)

    # --- model ------------------------------------------------------------------
    def build_model(
        self,
        backbone: keras.Model,
        cfg: ModelConfig,
        labels: LabelSpec,
        preset: str,
    ) -> keras.Model:
        from tfsft.tasks.token_classification.head import TokenClassifier

        return TokenClassifier(
            backbone=backbone, num_classes=labels.num_outputs, dropout=cfg.dropout
        )

    def load_model(self, preset_dir: Path, dtype: str | None) -> keras.Model:
        from tfsft.tasks.token_classification.head import load_token_classifier

        return load_token_classifier(preset_dir, dtype)

    def describe_head(self, model: keras.Model) -> str:
        return (
            "tfsft's `TokenClassifier`: dropout and a dense layer on every token "
            "vector (load `keras/preset` with "
            "`tfsft.tasks.token_classification.head.load_token_classifier`, or "
            "`keras/model.keras` after `import tfsft.tasks.token_classification.head`)"
        )

    def loss(self) -> keras.losses.Loss:
        import keras

        # The mean over labelled positions (first sub-tokens), as HF's -100 labels.
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        )

    def weighted_metrics(self) -> list[keras.metrics.Metric]:
        import keras

        # Over first sub-tokens only: the padding and other pieces weigh 0.
        return [keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")]

    # --- outputs ------------------------------------------------------------------
    def outputs(self, logits: np.ndarray, encoded: TokenEncoded) -> report.WordOutputs:
        return report.word_outputs(logits, encoded)

    def epoch_metrics(
        self, outputs: report.WordOutputs, encoded: TokenEncoded, labels: LabelSpec
    ) -> dict[str, float]:
        scores = report.entity_scores(outputs, encoded, labels)
        return {k: scores[k] for k in self.epoch_metric_names}

    def write_report(
        self,
        out_dir: Path,
        examples: Examples,
        encoded: TokenEncoded,
        outputs: report.WordOutputs,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> dict[str, float | None]:
        return report.write_report(out_dir, examples, encoded, outputs, labels, cfg)

    def report_parts(self, out_dir: Path) -> list[Part]:
        return report.report_parts(out_dir)

    def decode(
        self,
        outputs: report.WordOutputs,
        examples: Examples,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        return report.decode(outputs, examples, labels)

    def input_examples(
        self,
        texts: list[str],
        pairs: list[str] | None,
        cfg: ExperimentConfig,
        where: str = "<input>",
    ) -> Examples:
        if pairs is not None:
            raise TfsftError(f"{where}: this model tags single texts, not text pairs")
        examples = Examples(
            source="<input>",
            texts=list(texts),
            labels=[None] * len(texts),
            rows=list(range(1, len(texts) + 1)),
        )
        serving.split_raw_texts(examples)
        return examples

    def input_rows(self, examples: Examples) -> list[dict[str, Any]]:
        return serving.input_rows(examples)

    # --- export -------------------------------------------------------------------
    def serving_signatures(
        self,
        model: keras.Model,
        preprocessor: Any,
        labels: LabelSpec,
        cfg: ExperimentConfig,
        with_text: bool,
    ) -> dict[str, Any]:
        return serving.signatures(model, preprocessor, labels, cfg, with_text)

    def serving_usage(self, cfg: ExperimentConfig) -> str:
        return serving.USAGE

    def decode_serving(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        return serving.decode_outputs(inputs, outputs)


TASK = TokenClassification()
