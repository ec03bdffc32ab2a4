"""The end of a run: the best weights, the evaluation report, the saved model."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfsft.config import ExperimentConfig
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.data.splits import Splits
from tfsft.evaluation.inference import predict_outputs
from tfsft.evaluation.run_report import finish_report
from tfsft.models.peft import detached, merge_lora, peft_state
from tfsft.models.peft.adapter_io import save_adapter
from tfsft.run_files import read_history
from tfsft.runs import write_json
from tfsft.tasks.base import Task
from tfsft.training.phases import PhaseClock


def report_splits(
    model: keras.Model,
    task: Task,
    cfg: ExperimentConfig,
    run_dir: Path,
    splits: Splits,
    encoded: dict[str, Encoded],
    labels: LabelSpec,
    widths: list[int] | None,
    validation_outputs: Any = None,
) -> dict[str, Any]:
    """Evaluates the validation and test splits and writes their reports.

    The validation report goes into the run dir, the test report into
    ``<run>/test/``; the returned metrics carry the test ones as ``test_<name>``.
    ``validation_outputs``: the task's outputs for the validation split if they
    are already known (the last epoch's validation pass); not predicted again.
    """
    metrics: dict[str, Any] = {}
    for name in ("validation", "test"):
        examples = getattr(splits, name)
        if examples is None:
            continue
        batch = cfg.train.batch_size
        outputs = validation_outputs if name == "validation" else None
        if outputs is None:
            outputs = predict_outputs(
                model, task, encoded[name], batch, widths, f"evaluating {name}"
            )
        out_dir = run_dir if name == "validation" else run_dir / name
        split_metrics = task.write_report(
            out_dir, examples, encoded[name], outputs, labels, cfg.evaluate
        )
        prefix = "" if name == "validation" else "test_"
        metrics |= {f"{prefix}{k}": v for k, v in split_metrics.items()}
    return metrics


def run_stats(
    seconds: float, steps: int, steps_per_epoch: int, batch_size: int, train: Encoded
) -> dict[str, float]:
    """Training throughput over ``steps`` steps done in ``seconds`` (this session)."""
    seconds = max(seconds, 1e-9)
    # Real (non-padding) tokens: the unit decoder benchmarks compare.
    tokens = float(train.lengths().sum()) * steps / steps_per_epoch
    return {
        "train_seconds": round(seconds, 2),
        "train_examples_per_second": round(steps * batch_size / seconds, 2),
        "train_tokens_per_second": round(tokens / seconds, 1),
    }


def save_run(
    model: keras.Model,
    task: Task,
    preprocessor: Any,
    run_dir: Path,
    metrics: dict[str, Any],
    cfg: ExperimentConfig,
    labels: LabelSpec,
    lengths: np.ndarray | None = None,
    clock: PhaseClock | None = None,
) -> dict[str, list[float]]:
    """Writes metrics.json, the model, the plots and the report; returns the history.

    The model is saved as a self-contained keras-hub preset (backbone config,
    weights, head, tokenizer) in ``<run>/model``, and the resume backup, no longer
    needed, is deleted. A PEFT run also writes ``<run>/adapter/`` (its trained
    weights alone) first; then LoRA is merged into the kernels, so ``model`` and
    the preset are a plain keras-hub model; the other methods' preset holds the
    base weights and head, which `tfsft.runs.load_run` puts the adapter back onto.
    Then come the training curves, the histogram of ``lengths`` (the training
    rows' token counts [rows]) and ``report.html`` / ``report.md``
    (`tfsft.evaluation.run_report`), last, so a failure there costs no model.
    With a ``clock``, metrics.json ends with ``phase_seconds`` (the run's wall time
    by phase, `tfsft.training.phases`), rewritten once the report is done.
    """
    clock = clock or PhaseClock()
    began = time.perf_counter()
    if (state := peft_state(model)) is not None:
        metrics["adapter_bytes"] = save_adapter(model, run_dir / "adapter", cfg, labels)
        if state.cfg.method == "lora":
            merge_lora(model)
    write_json(run_dir / "metrics.json", metrics)
    # The optimizer is detached so its state (2x the weights) is not saved with it.
    optimizer, model.optimizer = model.optimizer, None
    model.preprocessor = preprocessor
    with detached(model):
        model.save_to_preset(str(run_dir / "model"))
    task.save_extras(run_dir / "model", preprocessor)
    model.optimizer = optimizer
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing to resume
    clock.add("save", time.perf_counter() - began)
    history = epoch_logs(run_dir)
    with clock.phase("report"):
        finish_report(run_dir, history, lengths, cfg.model.sequence_length)
    metrics["phase_seconds"] = clock.report()
    write_json(run_dir / "metrics.json", metrics)
    return history


def epoch_logs(run_dir: Path) -> dict[str, list[float]]:
    """Per-epoch logs as Keras' History holds them, complete across resumed sessions.

    An epoch logged twice (its session died after logging it, before the run
    finished, and the resumed session replayed it) counts once: its later row.
    """
    rows = read_history(run_dir)
    keys = dict.fromkeys(k for row in rows for k in row if k != "epoch")
    history = {k: [row[k] for row in rows if row.get(k) is not None] for k in keys}
    return {k: v for k, v in history.items() if v}
