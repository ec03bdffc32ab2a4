"""Hugging Face transformers `Trainer` on PyTorch CPU (started by benchmark.py).

    HF_VENV/bin/python scripts/bench_hf.py SPEC.json OUT.json

Runs in its own venv (torch + transformers, no TensorFlow, no tfsft), so it imports
only the standard-library `bench_common` from this folder. The recipe is what an HF
user writes: `BertForSequenceClassification.from_pretrained`, texts tokenized once up
front, dynamic padding per batch (`DataCollatorWithPadding`), the Trainer's AdamW
with a linear warm-up/decay schedule and its own evaluation at the end of the epoch.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from bench_common import child_args, write_json


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
        args = training_arguments(spec, out_dir)
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
        "precision": "float32",
        "threads": threads,
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


def training_arguments(spec: dict[str, Any], out_dir: str) -> Any:
    """The Trainer's settings from the spec, shared by both HF runners so the
    classification and token-classification comparisons use one recipe."""
    from transformers import TrainingArguments

    return TrainingArguments(
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


def main() -> None:
    spec, out = child_args()
    write_json(out, run_hf(spec))


if __name__ == "__main__":
    main()
