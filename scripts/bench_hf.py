"""Hugging Face transformers `Trainer` on PyTorch CPU (started by benchmark.py).

    HF_VENV/bin/python scripts/bench_hf.py SPEC.json OUT.json

Runs in its own venv (torch + transformers, no TensorFlow, no tfsft), so it imports
only the standard-library `bench_common` from this folder. The recipe is what an HF
user writes: `BertForSequenceClassification.from_pretrained`, texts tokenized once up
front, dynamic padding per batch (`DataCollatorWithPadding`), the Trainer's AdamW
with a linear warm-up/decay schedule and its own evaluation at the end of the epoch.

With ``"fast": true`` in the spec (the benchmark's `hf_fast` runner) the same recipe
adds the Trainer's documented CPU speed settings (`fast_settings`): length-grouped
batches, data-loader workers where they help (FAST_WORKERS), and bf16 autocast only
where the CPU has native bf16.
A spec's ``"fast_overrides"`` dict is merged over them (for measuring alternatives,
e.g. ``{"torch_compile": true}``); the benchmark itself never sets it.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from bench_common import child_args, write_json

# CPU flags with native bf16 arithmetic (AVX512-BF16 dot products, AMX tiles). Without
# them PyTorch's CPU autocast emulates bf16 and trains slower than float32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Data-loader workers for hf_fast. Measured on the 2-core project machine (AMD EPYC
# Zen 3, 1,024 SST-2 rows, length-grouped, train s, two rounds): 0 workers 22.0 /
# 22.7, 1 worker 26.0 / 26.0, 2 workers 26.6 / 25.3. A worker process competes
# with the two torch threads for the 2 cores, so 0 (collating in the main process)
# is HF's fastest here; set 1 or 2 on a machine with spare cores.
FAST_WORKERS = 0


def run_hf(spec: dict[str, Any]) -> dict[str, Any]:
    import accelerate
    import numpy as np
    import torch
    import transformers
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    threads = use_all_cores()
    extra: dict[str, Any] = {}
    notes: list[str] = []
    if spec.get("fast"):
        extra, notes = fast_settings(cpu_flags(), supported_arguments())
        extra |= spec.get("fast_overrides") or {}
    set_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])

    def encode(split: dict[str, Any]) -> list[dict[str, Any]]:
        # Truncated to the same max length as the TF runners; no padding here (the
        # collator pads each batch to its longest row).
        enc = tokenizer(
            split["texts"], truncation=True, max_length=spec["sequence_length"]
        )
        return [
            {**{k: enc[k][i] for k in enc}, "labels": label}
            for i, label in enumerate(split["labels"])
        ]

    train, dev = encode(spec["train"]), encode(spec["validation"])
    model = BertForSequenceClassification.from_pretrained(
        spec["model_dir"],
        num_labels=spec["num_classes"],
        classifier_dropout=spec["dropout"],
    )

    def accuracy(prediction: Any) -> dict[str, float]:
        logits, labels = prediction
        return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}

    with tempfile.TemporaryDirectory(prefix="tfsft-bench-hf-") as out_dir:
        args = training_arguments(spec, out_dir, extra)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=dev,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
        )
        # Timed like tfsft's train_seconds: the epochs plus the evaluation the
        # Trainer runs at each epoch end.
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    return {
        "train_seconds": seconds,
        "accuracy": evals[-1]["eval_accuracy"],
        "train_lengths": [len(row["input_ids"]) for row in train],
        "precision": "bfloat16 autocast" if extra.get("bf16") else "float32",
        "threads": threads,
        "settings": extra,
        "notes": notes,
        "steps": trainer.state.global_step,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
    }


def use_all_cores() -> int:
    """Gives PyTorch every core, as TF takes by default (2 on the project machine)."""
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's flags (empty where /proc/cpuinfo is unreadable)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def supported_arguments() -> set[str]:
    """The TrainingArguments fields of the installed transformers."""
    import dataclasses

    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments)}


def fast_settings(flags: set[str], supported: set[str]) -> tuple[dict, list[str]]:
    """The hf_fast runner's TrainingArguments on top of the shared recipe, and the
    notes saying why (``flags``: the CPU's, ``supported``: TrainingArguments'
    fields, as transformers 5 renamed group_by_length).

    Left out after measuring on the project machine (bench_runners.HF_FAST_EVIDENCE):
    torch_compile (inductor; works offline with the system g++ but recompiles for
    every batch width: 6.6x slower) and data-loader workers (FAST_WORKERS). Already
    the default: optim="adamw_torch_fused" (transformers 5 with torch >= 2.8).
    """
    settings: dict[str, Any] = {}
    if "group_by_length" in supported:  # transformers 4
        settings["group_by_length"] = True
    else:  # transformers 5: the same LengthGroupedSampler under its new name
        settings["train_sampling_strategy"] = "group_by_length"
    settings["dataloader_num_workers"] = FAST_WORKERS
    if FAST_WORKERS:  # keeps the workers alive from the epoch into the evaluation
        settings["dataloader_persistent_workers"] = True
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    if native:
        settings["bf16"] = True
        why = f"bf16 autocast on: the CPU has native bf16 ({', '.join(native)})"
    else:
        why = (
            "bf16 autocast off (float32): the CPU has neither "
            f"{' nor '.join(NATIVE_BF16_FLAGS)}, so autocast would run its bf16 "
            "matmuls without hardware support"
        )
    return settings, [why]


def training_arguments(
    spec: dict[str, Any], out_dir: str, extra: dict[str, Any] | None = None
) -> Any:
    """The Trainer's settings from the spec, shared by every HF runner so the
    classification and token-classification comparisons use one recipe; ``extra``
    (hf_fast's speed settings) is added on top."""
    from transformers import TrainingArguments

    base: dict[str, Any] = dict(
        output_dir=out_dir,
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"],
        weight_decay=spec["weight_decay"],
        # The step count, not a ratio: the same rounded number as the TF runs.
        warmup_steps=spec["warmup_steps"],
        lr_scheduler_type="linear",
        adam_epsilon=1e-8,
        max_grad_norm=spec["max_grad_norm"] or 0.0,  # 0 disables clipping
        seed=spec["seed"],
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return TrainingArguments(**(base | (extra or {})))


def main() -> None:
    spec, out = child_args()
    write_json(out, run_hf(spec))


if __name__ == "__main__":
    main()
