"""`train(cfg)`: data -> model -> fit + callbacks -> best weights -> report."""

from __future__ import annotations

import csv
import functools
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfsft.config import ExperimentConfig
from tfsft.data.distributed import (
    eval_dataset_fn,
    full_batch_plan,
    train_dataset_fn,
)
from tfsft.data.labels import LabelSpec, build_label_spec, encode_labels
from tfsft.data.pipeline import (
    gather_slices,
    make_eval_dataset,
    plan_batches,
    token_lengths,
    tokenize_all,
)
from tfsft.data.sources import describe_skipped
from tfsft.data.splits import Splits, load_splits
from tfsft.errors import Interrupted
from tfsft.evaluation.inference import config_widths, predict_scores
from tfsft.evaluation.report import plot_history, write_report
from tfsft.models.backbones import load_preprocessor, resolve_preset
from tfsft.models.heads import default_monitor, make_loss, make_metrics
from tfsft.models.peft import count_params
from tfsft.models.tasks import build_model
from tfsft.runs import Run, open_run_dir, write_json, write_status
from tfsft.training.callbacks import (
    ProgressLog,
    load_best_weights,
    make_callbacks,
    progress_verbosity,
)
from tfsft.training.distribute import (
    build_for_fit,
    check_supported,
    is_chief,
    num_workers,
    worker_label,
)
from tfsft.training.optim import make_optimizer
from tfsft.training.resume import restore_backup
from tfsft.training.strategy import make_strategy, seed_everything, set_precision

log = logging.getLogger("tfsft")


def compile_model(model: keras.Model, cfg: ExperimentConfig, total_steps: int) -> None:
    """Compiles ``model`` with the task loss, AdamW + schedule and in-graph metrics."""
    model.compile(
        optimizer=make_optimizer(cfg.train, total_steps),
        loss=make_loss(cfg.task),
        metrics=make_metrics(cfg.task),
        jit_compile=cfg.runtime.jit_compile,
        steps_per_execution=cfg.runtime.steps_per_execution,
    )


def train(cfg: ExperimentConfig, verbose: int | None = None) -> Run:
    """Fine-tunes the configured model and writes a complete run dir.

    Re-running with the same config after an interruption or failure resumes the
    unfinished run at the step of its last backup (weights, optimizer state, dropout
    RNG and data position), so at most ``train.save_every_steps`` steps are redone.

    Under ``runtime.strategy`` with N replicas, ``train.batch_size`` is the global
    batch (batch_size / N per replica). In a multi-worker run every worker calls
    this; only the chief writes the run dir, the others write to a temp dir that is
    deleted at the end, and return a `Run` whose dir no longer exists.

    Args:
        cfg: a validated config (see `tfsft.load_config`).
        verbose: Keras fit verbosity; default: a progress bar on a terminal.

    Returns:
        The `Run`, with the trained Keras model and the validation metrics.
    """
    # The strategy comes first: multi-worker and TPU strategies configure the TF
    # runtime, which is only possible before it has run anything.
    strategy = make_strategy(cfg.runtime)
    check_supported(cfg, strategy)  # fail before any work
    replicas = strategy.num_replicas_in_sync
    seed_everything(cfg.train.seed)
    policy = set_precision(cfg.runtime.precision, strategy)  # auto: bf16 on TPU
    # Data problems surface before a run dir exists, so bad input leaves no debris.
    splits = load_splits(cfg)
    for _, examples in splits.items():
        if message := describe_skipped(examples):
            log.warning(message)
    labels = build_label_spec(cfg.task, splits.train, cfg.data)
    encoded = {n: encode_labels(labels, e, cfg.data) for n, e in splits.items()}
    preset = resolve_preset(cfg.model.preset)

    chief = is_chief(strategy)
    if chief:
        # Multi-worker runs start over: resuming would need every worker to load
        # the chief's backup, which other machines cannot read (see README).
        run_dir, resumed = open_run_dir(cfg, resume=num_workers(strategy) == 1)
    else:
        # Keras/TF's pattern: other workers run the chief's code path too (epoch
        # logs and checkpoints read synchronised variables, a collective every
        # worker must join) but write into a throwaway dir.
        run_dir = Path(tempfile.mkdtemp(prefix=f"tfsft-{worker_label(strategy)}-"))
        resumed = False
    log.info("%s run %s", "resuming" if resumed else "starting", run_dir)
    labels.save(run_dir / "labels.json")
    write_status(
        run_dir,
        "running",
        precision=policy,
        strategy=type(strategy).__name__,
        replicas=replicas,
    )
    try:
        run = _fit(cfg, strategy, run_dir, splits, labels, encoded, preset, verbose)
    except (KeyboardInterrupt, Interrupted):
        write_status(run_dir, "interrupted")
        raise
    except BaseException as e:
        write_status(run_dir, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
    if chief:
        write_status(run_dir, "completed", metrics=run.metrics, precision=policy)
    return run


def _fit(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    splits: Splits,
    labels: LabelSpec,
    encoded: dict[str, np.ndarray],
    preset: str,
    verbose: int | None,
) -> Run:
    tc = cfg.train
    replicas = strategy.num_replicas_in_sync
    preprocessor = load_preprocessor(preset, cfg.model.sequence_length)
    tokens = tokenize_all(splits.train, preprocessor)
    widths = config_widths(cfg)
    if widths and isinstance(strategy, tf.distribute.TPUStrategy):
        # A TPU compiles one program per batch shape: pad every batch fully.
        log.info("length buckets off on TPU: batches padded to the sequence length")
        widths = None
    val_ds, val_steps, val_tokens = None, None, None
    if splits.validation is not None:
        val_tokens = tokenize_all(splits.validation, preprocessor)
        if replicas == 1:
            val_ds = make_eval_dataset(
                val_tokens, encoded["validation"], tc.batch_size, widths
            )[0]
        else:
            val_steps = math.ceil(len(splits.validation) / tc.batch_size)
            val_ds = strategy.distribute_datasets_from_function(
                eval_dataset_fn(
                    val_tokens, encoded["validation"], tc.batch_size, widths, replicas
                )
            )
    # Every step's examples and padded width, planned once for the whole run.
    plan_args = (
        token_lengths(tokens),
        tc.batch_size,
        tc.epochs,
        tc.seed,
        widths,
        int(tokens["token_ids"].shape[1]),
        cfg.data.length_grouping,
    )
    if replicas == 1:
        plan, plan_widths = plan_batches(*plan_args)
        steps_per_epoch = math.ceil(len(splits.train) / tc.batch_size)
    else:  # the plan without the incomplete batches (see data.distributed)
        plan, plan_widths, steps_per_epoch = full_batch_plan(*plan_args)
    total_steps = steps_per_epoch * tc.epochs
    with strategy.scope():
        model = build_model(cfg.model, labels.num_outputs)
        compile_model(model, cfg, total_steps)
        # Inside the scope: the optimizer's slots must be created by the strategy.
        start_step = restore_backup(model, run_dir / "backup")
    trainable, total = count_params(model)
    log.info(
        "%s: %s train / %s validation examples; trainable params %s of %s (%.1f%%)",
        cfg.name,
        len(splits.train),
        len(splits.validation) if splits.validation else 0,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / max(total, 1),
    )
    log.info(
        "precision %s; batches padded to %s",
        keras.config.dtype_policy().name,
        f"widths {widths}"
        + (" grouped by length" if cfg.data.length_grouping > 1 else "")
        if widths
        else "the sequence length",
    )
    if start_step:
        log.info("resuming at step %d of %d", start_step, total_steps)
    monitor = tc.monitor or (default_monitor(cfg.task) if val_ds else "loss")
    callbacks = make_callbacks(run_dir, tc, monitor)
    verbose = progress_verbosity() if verbose is None else verbose
    if verbose == 2:
        callbacks.append(ProgressLog(steps_per_epoch, tc.batch_size))

    def train_data(first: int, last: int) -> Any:
        """Batches of global steps [first, last)."""
        if replicas == 1:
            return gather_slices(
                tokens,
                encoded["train"],
                plan[first:last],
                plan_widths[first:last] if widths else None,
            )
        return strategy.distribute_datasets_from_function(
            train_dataset_fn(
                tokens,
                encoded["train"],
                plan[first:last],
                plan_widths[first:last] if widths else None,
                replicas,
            )
        )

    if replicas > 1:
        first_pipeline = tf.distribute.InputContext(1, 0, replicas)
        spec = train_dataset_fn(tokens, encoded["train"], plan[:1], None, replicas)(
            first_pipeline
        ).element_spec
        build_for_fit(model, strategy, spec)

    def fit_steps(first: int, last: int) -> None:
        """Runs global steps [first, last), which lie within one or more epochs."""
        epoch, offset = divmod(first, steps_per_epoch)
        # keras-hub's fit() wrapper only maps the (detached, so absent) preprocessor
        # over the data and rejects tf.distribute datasets; Keras' own fit() takes
        # them, so the distributed path calls it directly.
        fit = model.fit if replicas == 1 else functools.partial(keras.Model.fit, model)
        fit(
            train_data(first, last),
            validation_data=val_ds,
            # A distributed dataset's cardinality counts per-replica elements,
            # not steps; say how many global batches a validation pass has.
            validation_steps=val_steps,
            initial_epoch=epoch,
            epochs=epoch + 1 if offset else tc.epochs,
            steps_per_epoch=steps_per_epoch - offset if offset else steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the planned stream is already shuffled, per epoch
        )

    start = time.perf_counter()
    offset = start_step % steps_per_epoch
    if offset:  # finish the interrupted epoch first, then whole epochs
        fit_steps(start_step, start_step - offset + steps_per_epoch)
    resume_at = start_step - offset + (steps_per_epoch if offset else 0)
    if resume_at < total_steps:
        fit_steps(resume_at, total_steps)
    seconds = time.perf_counter() - start
    if not is_chief(strategy):
        return Run(run_dir, cfg, labels)  # the chief evaluates and saves
    if replicas > 1:
        # Evaluate and save a single-device copy, outside the strategy: under
        # MultiWorkerMirroredStrategy predict() is a collective every worker would
        # have to join (and Keras re-orders its outputs for auto-sharded data), and
        # the returned model should predict anywhere, without the strategy.
        model = _single_device_copy(model, cfg, labels.num_outputs, total_steps)
    load_best_weights(model, run_dir / "checkpoints")

    metrics: dict[str, Any] = {}
    for name in ("validation", "test"):
        examples = getattr(splits, name)
        if examples is None:
            continue
        scores = predict_scores(
            model,
            preprocessor,
            examples,
            tc.batch_size,
            cfg.task,
            widths,
            tokens=val_tokens if name == "validation" else None,
        )
        out_dir = run_dir if name == "validation" else run_dir / name
        split_metrics = write_report(
            out_dir,
            cfg.task,
            examples,
            encoded[name],
            scores,
            labels.names,
            cfg.evaluate.threshold,
            cfg.evaluate.max_errors,
        )
        prefix = "" if name == "validation" else "test_"
        metrics |= {f"{prefix}{k}": v for k, v in split_metrics.items()}
    metrics |= {
        "train_seconds": round(seconds, 2),
        "train_examples_per_second": round(
            min(total_steps - start_step, total_steps)
            * tc.batch_size
            / max(seconds, 1e-9),
            2,
        ),
        "trainable_params": trainable,
        "total_params": total,
        "replicas": replicas,
    }
    write_json(run_dir / "metrics.json", metrics)
    history = read_history(run_dir / "history.csv")
    plot_history(history, run_dir / "curves.png")

    # A self-contained keras-hub preset: backbone config, weights, head, tokenizer.
    # The optimizer is detached so its state (2x the weights) is not saved with it.
    optimizer, model.optimizer = model.optimizer, None
    model.preprocessor = preprocessor
    model.save_to_preset(str(run_dir / "model"))
    model.optimizer = optimizer
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing to resume
    return Run(run_dir, cfg, labels, model=model, metrics=metrics, history=history)


def _single_device_copy(
    model: keras.Model, cfg: ExperimentConfig, num_outputs: int, total_steps: int
) -> keras.Model:
    """The same model and weights, built outside the strategy (on one device)."""
    copy = build_model(cfg.model, num_outputs)
    compile_model(copy, cfg, total_steps)
    copy.set_weights(model.get_weights())
    return copy


def read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch logs from the CSV log (complete even across resumed sessions)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    # CSVLogger writes "NA" for a metric an epoch did not log.
    history = {
        k: [float(r[k]) for r in rows if r.get(k) not in (None, "", "NA")] for k in keys
    }
    return {k: v for k, v in history.items() if v}
