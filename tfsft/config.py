"""The experiment config: strict pydantic models loaded once from YAML.

Unknown keys are errors (with a "did you mean" hint), values are type-checked, and every
message names the file, the YAML line and the dotted key path. The validated config is
frozen; library functions take it, or a sub-config, and never re-read YAML.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tfsft.config_messages import (
    apply_override,
    bad_scalar_line,
    describe_errors,
    key_lines,
    within,
)
from tfsft.config_peft import GradualUnfreezingConfig, PeftConfig, check_combinations
from tfsft.config_sft import GenerateConfig, SftDataFields
from tfsft.errors import ConfigError
from tfsft.tasks.registry import TASKS

# The task names come from the registry of tasks (a plain dict, light to import).
Task = Literal[tuple(TASKS)]
# host:port of a multi-worker process, e.g. 10.0.0.2:12345 or [::1]:2222.
_HOST_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(SftDataFields, _Strict):
    """Where the examples come from and which columns hold what."""

    train: str = Field(description="Path (CSV/TSV/JSONL/JSON) or tfds:NAME[:SPLIT].")
    validation: str | None = None
    test: str | None = None
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
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_delimiter: str = Field(
        default=";", min_length=1, description="Separates labels in a multilabel cell."
    )
    labels: list[str] | None = Field(
        default=None, description="Fixed label order; default: sorted training labels."
    )
    max_train_examples: Annotated[int, Field(gt=0)] | None = None
    skip_invalid_rows: bool = False
    max_text_chars: Annotated[int, Field(ge=1)] = Field(
        default=100_000,
        description="Longest text (per text field, in characters) a row may hold; a "
        "longer one almost always means a broken file (wrong line endings or "
        "delimiter), so it is an invalid row.",
    )
    length_buckets: Literal["auto"] | list[Annotated[int, Field(ge=1)]] | None = Field(
        default="auto",
        description="Widths a batch may be padded to: each batch is padded only to "
        "the smallest one that holds its longest example. 'auto' is eight evenly "
        "spaced widths up to model.sequence_length (8, 16, ..., 64 for 64); a list "
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
    first_n_layers: Annotated[int, Field(ge=0)]


class ModelConfig(_Strict):
    """The pretrained backbone and the task head on top of it."""

    preset: str = Field(
        default="minilm",
        description="minilm | keras-hub preset name | local preset dir | "
        "Hugging Face-format dir | tiny",
    )
    sequence_length: Annotated[int, Field(ge=8, le=4096)] = 128
    freeze: Literal["none", "backbone", "embeddings"] | FreezeLayersConfig = "none"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # cls by default, as keras-hub's and HF's classifiers: on full SST-2 mean pooling
    # was not reliably better (README, "Measured figures").
    pooling: Literal["auto", "cls", "mean"] = Field(
        default="cls",
        description="how the head pools the tokens: the pooled [CLS] output, the "
        "mean of the token vectors, or auto (the checkpoint's sentence-transformers "
        "pooling when it declares one, else cls)",
    )


class TrainConfig(_Strict):
    """Optimiser, schedule and loop settings."""

    epochs: Annotated[int, Field(ge=1)] = 3
    batch_size: Annotated[int, Field(ge=1)] = 32
    learning_rate: Annotated[float, Field(gt=0)] = 5.0e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: Annotated[float, Field(gt=0)] | None = 1.0
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="Average the gradients of this many batches per optimizer "
        "update: the effective batch is batch_size x this, in the memory of one "
        "batch. Steps (save_every_steps, the schedule) count batches.",
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        default=False,
        description="Recompute each transformer block in the backward pass: far "
        "less activation memory for about a third more compute; auto does it "
        "only for batches of 3,072 or more token positions.",
    )
    gradual_unfreezing: GradualUnfreezingConfig | None = Field(
        default=None,
        description="ULMFiT: train the head first, then unfreeze the transformer "
        "blocks from the top, one group per stage (needs model.freeze none and "
        "no peft method).",
    )
    layer_lr_decay: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="Layer-wise learning-rate decay: block l of L trains at "
        "learning_rate x decay^(L - l) (l = 1 .. L), the embeddings at decay^L, the "
        "head at the full rate.",
    )
    seed: int = 42
    early_stopping_patience: Annotated[int, Field(ge=1)] | None = None
    monitor: str | None = Field(
        default=None,
        description="Metric that picks the best checkpoint, e.g. val_accuracy; its "
        "mode (min or max) is the task's. Default: val_accuracy for classification, "
        "val_entity_f1 for token_classification, val_loss otherwise.",
    )
    save_every_steps: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Back up for resume every N steps (default: every epoch).",
    )
    output_dir: str = "runs"


class RuntimeConfig(_Strict):
    """Devices, distribution and numerics.

    ``train.batch_size`` is the global batch: each of the strategy's N replicas gets
    batch_size / N examples of every step (see `tfsft.training.distribute`).
    """

    strategy: Literal["auto", "one_device", "mirrored", "multi_worker", "tpu"] = Field(
        default="auto",
        description="auto: TPU if TPU_NAME/COLAB_TPU_ADDR say so, multi_worker if "
        "TF_CONFIG names >1 worker, mirrored if >1 GPU, else one device.",
    )
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    jit_compile: bool = Field(
        default=False,
        description="Compile the train step with XLA (one compilation per batch "
        "width); measured slower than TF's graph on CPU, see README.",
    )
    steps_per_execution: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="Batches run per call into the compiled step; more cuts Python "
        "overhead (useful on TPU), but callbacks then see every N-th step only.",
    )
    tpu: str | None = Field(
        default=None,
        min_length=1,
        description="TPU for strategy tpu: 'local' (Colab, TPU VMs), a TPU name or "
        "grpc://host:port; default: $TPU_NAME / $COLAB_TPU_ADDR, else 'local'.",
    )
    workers: list[str] | None = Field(
        default=None,
        min_length=1,
        description="host:port of every multi_worker process, chief first; "
        "`tfsft train --worker-index N` builds TF_CONFIG from it.",
    )

    @field_validator("workers")
    @classmethod
    def _host_ports(cls, workers: list[str] | None) -> list[str] | None:
        for address in workers or ():
            if not re.fullmatch(_HOST_PORT, address):
                raise ValueError(
                    f"expected host:port such as 10.0.0.2:2222 (got {address!r})"
                )
        if workers and len(set(workers)) != len(workers):
            raise ValueError("each host:port may appear only once")
        return workers

    @model_validator(mode="after")
    def _keys_fit_strategy(self) -> RuntimeConfig:
        if self.workers is not None and self.strategy not in ("auto", "multi_worker"):
            raise ValueError(
                f"workers is used by strategy multi_worker, not {self.strategy}"
            )
        if self.tpu is not None and self.strategy not in ("auto", "tpu"):
            raise ValueError(f"tpu is used by strategy tpu, not {self.strategy}")
        return self


class EvaluateConfig(_Strict):
    threshold: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.5, description="Multilabel decision threshold on probabilities."
    )
    max_errors: Annotated[int, Field(ge=0)] = 200


class ExperimentConfig(_Strict):
    """The whole experiment; see DESIGN.md for the contract of these keys."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    task: Task = "classification"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    peft: PeftConfig = PeftConfig()
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    generate: GenerateConfig = GenerateConfig()

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
    """JSON Schema of the config, for editors and docs."""
    return json.dumps(ExperimentConfig.model_json_schema(), indent=2)
