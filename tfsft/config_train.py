"""The ``train`` and ``runtime`` sections: the optimisation recipe and the hardware
it runs on.

Kept apart from `tfsft.config` (which takes them in and re-exports them) so each
config module stays one screen of section classes.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tfsft.config_peft import GradualUnfreezingConfig

# host:port of a multi-worker process, e.g. 10.0.0.2:12345 or [::1]:2222.
_HOST_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(_Strict):
    """Optimiser, schedule and loop settings: AdamW with a linear warm-up, then
    decay; the best checkpoint by ``monitor`` is kept."""

    epochs: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Passes over the training set."
    )
    batch_size: Annotated[int, Field(ge=1)] = Field(
        default=32,
        description="Examples per step, summed over all replicas (the global "
        "batch); see also gradient_accumulation_steps.",
    )
    learning_rate: Annotated[float, Field(gt=0)] = Field(
        default=5.0e-5,
        description="Peak AdamW learning rate, reached at the end of warm-up. "
        "Typical: 2e-5 to 1e-4 for full fine-tuning, 1e-4 to 2e-3 with LoRA.",
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(
        default=0.01,
        description="AdamW decoupled weight decay; biases and LayerNorm "
        "gamma/beta are never decayed. 0 turns it off.",
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1,
        description="Fraction of all training steps over which the learning rate "
        "rises linearly from 0 to learning_rate.",
    )
    schedule: Literal["linear", "cosine", "constant"] = Field(
        default="linear",
        description="Learning rate after warm-up: linear or cosine decay to 0 at "
        "the last step, or constant.",
    )
    max_grad_norm: Annotated[float, Field(gt=0)] | None = Field(
        default=1.0,
        description="Clip the global gradient norm (over all replicas) to this; "
        "null: no clipping.",
    )
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
        "no peft method). null: everything that trains, trains from the start.",
    )
    layer_lr_decay: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="Layer-wise learning-rate decay: block l of L trains at "
        "learning_rate x decay^(L - l) (l = 1 .. L), the embeddings at decay^L, the "
        "head at the full rate. null (or 1): one rate for all.",
    )
    seed: int = Field(
        default=42,
        description="Seeds Python, NumPy, TensorFlow and Keras, the shuffles, the "
        "validation_fraction hold-out and max_train_examples: a CPU run repeats "
        "exactly.",
    )
    early_stopping_patience: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Stop after this many epochs without improvement of monitor; "
        "null: train all epochs.",
    )
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
    output_dir: str = Field(
        default="runs",
        description="Runs are written to OUTPUT_DIR/NAME/TIMESTAMP/ (relative to "
        "the working directory).",
    )


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
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = Field(
        default="auto",
        description="Keras dtype policy. auto: the faster here: mixed_bfloat16 on "
        "TPU, Ampere+ GPU and AMX CPUs, float32 without bf16 units; a CPU with "
        "AVX512-BF16 but no AMX times the model in both once (cached per machine). "
        "mixed_float16 (older GPUs) adds loss scaling; weights stay float32.",
    )
    jit_compile: bool = Field(
        default=False,
        description="Compile the train step with XLA (one compilation per batch "
        "width); measured slower than TF's graph on CPU, see docs/experiments.md.",
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
