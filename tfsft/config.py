"""The experiment config: strict pydantic models loaded once from YAML.

Unknown keys are errors (with a "did you mean" hint), values are type-checked, and every
message names the file, the YAML line and the dotted key path. The validated config is
frozen; library functions take it, or a sub-config, and never re-read YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tfsft.config_messages import (
    apply_override,
    bad_scalar_line,
    describe_errors,
    key_lines,
    within,
)
from tfsft.config_peft import PeftConfig, check_combinations
from tfsft.config_sft import GenerateConfig, SftDataFields

# Defined apart to keep this module short; `from tfsft.config import TrainConfig,
# RuntimeConfig` is their public import path.
from tfsft.config_train import RuntimeConfig, TrainConfig
from tfsft.errors import ConfigError
from tfsft.tasks.registry import TASKS

# The task names come from the registry of tasks (a plain dict, light to import).
Task = Literal[tuple(TASKS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(SftDataFields, _Strict):
    """Where the examples come from and which columns hold what."""

    train: str = Field(
        description="Training data: a CSV/TSV/JSONL/JSON/CoNLL file (relative to "
        "the working directory) or tfds:NAME[:SPLIT]."
    )
    validation: str | None = Field(
        default=None,
        description="Validation data (same forms as train), scored every epoch to "
        "pick the best checkpoint, and reported at the end. null: none, or "
        "validation_fraction.",
    )
    test: str | None = Field(
        default=None,
        description="Test data (same forms as train), scored once after training "
        "into <run>/test/ (test_* metrics). null: none.",
    )
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None,
        description="Hold out this fraction of train (stratified, seeded) when "
        "there is no validation file.",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "conll"] = Field(
        default="auto",
        description="auto: from the extension (.txt is tsv, or conll for "
        "token_classification; .conll is conll).",
    )
    text_column: str = Field(
        default="text",
        description="Column (CSV/TSV header) or field (JSON) holding the input text.",
    )
    text_pair_column: str | None = Field(
        default=None,
        description="Column of a second text for pair tasks (paraphrase, NLI); "
        "null: single texts.",
    )
    label_column: str = Field(
        default="label",
        description="Column holding the target: a class name (classification), "
        "delimited labels (multilabel) or a number (regression).",
    )
    label_delimiter: str = Field(
        default=";", min_length=1, description="Separates labels in a multilabel cell."
    )
    labels: list[str] | None = Field(
        default=None, description="Fixed label order; default: sorted training labels."
    )
    max_train_examples: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description="Train on only the first N examples after a seeded shuffle "
        "(train.seed); null: all.",
    )
    skip_invalid_rows: bool = Field(
        default=False,
        description="Drop malformed rows (missing text, unknown label, ...) and "
        "report them, instead of stopping at the first one.",
    )
    max_text_chars: Annotated[int, Field(ge=1)] = Field(
        default=100_000,
        description="Longest text (per text field, in characters) a row may hold; a "
        "longer one almost always means a broken file (wrong line endings or "
        "delimiter), so it is an invalid row.",
    )
    length_buckets: Literal["auto"] | list[Annotated[int, Field(ge=1)]] | None = Field(
        default="auto",
        description="Widths a batch may be padded to: each batch is padded only to "
        "the smallest one that holds its longest example. 'auto' is up to 64 evenly "
        "spaced widths from 8 up to model.sequence_length (8, 9, ..., 64 for 64; "
        "eight, 8, 16, ..., with runtime.jit_compile); a list "
        "such as [16, 32, 64] is capped at model.sequence_length; null pads every "
        "batch to model.sequence_length.",
    )
    length_grouping: Annotated[int, Field(ge=1)] = Field(
        default=8,
        description="With length_buckets, sort each shuffled window of this many "
        "batches by length before cutting it into batches, so examples of similar "
        "length share a batch and little is padded (HF Trainer's group_by_length); "
        "the batches are then shuffled. 1 keeps batches fully random.",
    )
    clean_text: bool = Field(
        default=True, description="Normalise Unicode (NFC) and collapse whitespace."
    )
    tokens_column: str = Field(
        default="tokens",
        description="token_classification, JSON/JSONL: the field with a sentence's "
        "words (a list).",
    )
    tags_column: str = Field(
        default="tags",
        description="token_classification, JSON/JSONL: the field with their tags.",
    )
    conll_tag_column: int = Field(
        default=-1,
        description="token_classification, CoNLL files: the column holding the tag "
        "(0 is the token; negative counts from the end; default the last).",
    )
    tag_scheme: Literal["auto", "iob1", "iob2", "bioes"] = Field(
        default="auto",
        description="token_classification: the tags' scheme, or auto to detect it "
        "from the training data. IOB1 is converted to IOB2 when read.",
    )
    repair_tags: bool = Field(
        default=False,
        description="token_classification: rewrite illegal tag sequences (an I-X "
        "after O becomes B-X) instead of stopping, and report how many changed.",
    )
    stride: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="token_classification: sub-tokens that consecutive windows of a "
        "sentence longer than model.sequence_length share (default: a quarter of "
        "a window).",
    )
    tfds_data_dir: str | None = Field(
        default=None, description="data_dir of prepared TFDS datasets (works offline)."
    )

    @model_validator(mode="after")
    def _one_validation_source(self) -> DataConfig:
        if self.validation and self.validation_fraction:
            raise ValueError(
                "set either data.validation or data.validation_fraction, not both"
            )
        return self


class FreezeLayersConfig(_Strict):
    """Freeze the bottom of the backbone: the embeddings and the first K blocks."""

    first_n_layers: Annotated[int, Field(ge=0)] = Field(
        description="K: how many transformer blocks, counted from the embeddings, "
        "are frozen (together with the embeddings)."
    )


class ModelConfig(_Strict):
    """The pretrained backbone and the task head on top of it."""

    preset: str = Field(
        default="minilm",
        description="The pretrained model: an alias (minilm, smollm2-135m; tiny, "
        "tiny-gpt2 and tiny-llama are random test models), a keras-hub preset "
        "name (downloads on first use), a keras-hub preset dir or a Hugging "
        "Face-format dir (config.json + model.safetensors).",
    )
    sequence_length: Annotated[int, Field(ge=8, le=4096)] = Field(
        default=128,
        description="Most tokens per example, special tokens included; longer "
        "inputs are truncated (token_classification: split into overlapping "
        "windows). Also the widest batch (see data.length_buckets).",
    )
    freeze: Literal["none", "backbone", "embeddings"] | FreezeLayersConfig = Field(
        default="none",
        description="What does not train: none, backbone (only the head trains), "
        "embeddings, or {first_n_layers: K} (embeddings and the first K blocks).",
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1,
        description="Dropout rate before the task head (causal_lm: every dropout "
        "of the backbone).",
    )
    # cls by default, as keras-hub's and HF's classifiers: on full SST-2 mean pooling
    # was not reliably better (docs/experiments.md, "Measured figures").
    pooling: Literal["auto", "cls", "mean"] = Field(
        default="cls",
        description="How the head pools the tokens: the pooled [CLS] output, the "
        "mean of the token vectors, or auto (the checkpoint's sentence-transformers "
        "pooling when it declares one, else cls).",
    )


class EvaluateConfig(_Strict):
    """The reports written after training and by `tfsft evaluate`."""

    threshold: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.5, description="Multilabel decision threshold on probabilities."
    )
    max_errors: Annotated[int, Field(ge=0)] = Field(
        default=200,
        description="Most wrong predictions written to errors.jsonl (worst "
        "first); 0 writes none.",
    )


class ExperimentConfig(_Strict):
    """A tfsft experiment config: one YAML file per fine-tuning recipe."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=100,
        description="Experiment name (letters, digits, . _ -): runs go to "
        "train.output_dir/NAME/.",
    )
    task: Task = Field(
        default="classification",
        description="What the model learns: " + " | ".join(TASKS) + ".",
    )
    data: DataConfig = Field(description="Where the examples come from.")
    model: ModelConfig = Field(
        default=ModelConfig(), description="The pretrained backbone and its head."
    )
    peft: PeftConfig = Field(
        default=PeftConfig(),
        description="Parameter-efficient fine-tuning (LoRA, adapters, prompt or "
        "prefix tuning); method none trains the whole model.",
    )
    train: TrainConfig = Field(
        default=TrainConfig(), description="Optimiser, schedule and loop settings."
    )
    runtime: RuntimeConfig = Field(
        default=RuntimeConfig(), description="Devices, distribution and numerics."
    )
    evaluate: EvaluateConfig = Field(
        default=EvaluateConfig(), description="The evaluation reports."
    )
    generate: GenerateConfig = Field(
        default=GenerateConfig(),
        description="Text generation settings (causal_lm only).",
    )

    @model_validator(mode="after")
    def _token_classification_keys(self) -> ExperimentConfig:
        if self.task != "token_classification":
            return self
        if self.data.text_pair_column is not None:
            raise ValueError(
                "data.text_pair_column: token_classification tags single sentences"
            )
        window = self.model.sequence_length - 2
        if self.data.stride is not None and self.data.stride >= window:
            raise ValueError(
                f"data.stride: {self.data.stride} must be less than the "
                f"{window} sub-tokens a window holds (model.sequence_length - 2)"
            )
        return self

    @model_validator(mode="after")
    def _methods_combine(self) -> ExperimentConfig:
        check_combinations(self.peft, self.train, self.model.freeze, self.data.packing)
        return self

    @model_validator(mode="after")
    def _tpu_shapes_are_static(self) -> ExperimentConfig:
        # A TPU program is compiled for fixed shapes; buckets vary the batch width.
        # The default "auto" is simply not applied on a TPU (see the trainer).
        if self.runtime.strategy == "tpu" and isinstance(
            self.data.length_buckets, list
        ):
            raise ValueError(
                "runtime.strategy tpu pads every batch to model.sequence_length; "
                "set data.length_buckets to auto (not applied on a TPU) or null"
            )
        return self


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Reads, overrides and validates a YAML config.

    Args:
        path: YAML file.
        overrides: ``a.b=value`` strings; values are parsed as YAML scalars/lists, so
            ``train.epochs=2`` is an int and ``data.test=null`` is None.

    Raises:
        ConfigError: naming the file, line and key path of the first problem(s).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        line = e.object.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
            "re-save the file as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
        lines = key_lines(yaml.compose(text))
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as e:  # a scalar Python cannot build: a bad date, a huge int
        problem = "number too long" if "digits" in str(e) else str(e)
        raise ConfigError(
            f"{path}: line {bad_scalar_line(text)}: invalid YAML value ({problem}); "
            "quote it to keep it as text"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f": line {mark.line + 1}" if mark else ""
        if isinstance(e, yaml.reader.ReaderError):  # a control character
            line = f": line {text.count(chr(10), 0, e.position) + 1}"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        start = getattr(e, "context_mark", None)
        if start and mark and start.line != mark.line and e.context:
            problem += f" ({e.context} started on line {start.line + 1})"
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    for item in overrides:
        key = apply_override(raw, item)
        # An overridden key is reported as coming from --set, not from the file.
        lines = {k: v for k, v in lines.items() if not within(k, key)}
        parts = key.split(".")
        for n in range(1, len(parts) + 1):  # sections the override created, too
            lines.setdefault(".".join(parts[:n]), -1)
        lines[key] = -1
    return validate_config(raw, source=str(path), lines=lines)


def validate_config(
    raw: dict[str, Any], source: str = "<config>", lines: dict[str, int] | None = None
) -> ExperimentConfig:
    """Validates a plain dict (already parsed YAML) into an `ExperimentConfig`."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            describe_errors(e.errors(), ExperimentConfig, source, lines or {})
        ) from None


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (every default spelled out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_schema() -> str:
    """JSON Schema of the config, for editors (yaml-language-server) and docs.

    Declared draft-07, the newest draft yaml-language-server validates; pydantic's
    output uses nothing newer except ``$defs``, which ``$ref`` pointers reach in
    any draft.
    """
    schema = _wrap_refs(ExperimentConfig.model_json_schema())
    header = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": "tfsft config file; generated from tfsft.config.ExperimentConfig",
    }
    return json.dumps(header | schema, indent=2)


def _wrap_refs(node: Any) -> Any:
    # Draft-07 ignores the keywords beside a $ref, and with them the description
    # and default an editor shows on hover: move the $ref into an allOf.
    if isinstance(node, list):
        return [_wrap_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _wrap_refs(value) for key, value in node.items()}
    if "$ref" in node and len(node) > 1:
        node = {"allOf": [{"$ref": node.pop("$ref")}], **node}
    return node
