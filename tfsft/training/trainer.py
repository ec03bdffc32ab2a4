"""`train(cfg)`: data -> model -> fit + callbacks -> best weights -> report.

The steps, each a function: `prepare_data` (read, label, encode: every data problem
surfaces before a run dir exists; `tfsft.training.prepare`), `make_feed` (plan every
batch), `build_compiled` (backbone + head inside the strategy, restored from a backup
when resuming; `tfsft.training.build`),
`_fit_steps` (Keras fit over global steps), then `report_splits` and `save_run`.
Nothing here knows which task it trains: it asks the task (`tfsft.tasks`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfsft.config import ExperimentConfig
from tfsft.errors import Interrupted
from tfsft.models.freeze import count_params
from tfsft.progress import stage
from tfsft.runs import Run, open_run_dir, write_status
from tfsft.training.build import build_compiled, single_device_copy
from tfsft.training.callbacks import (
    EpochMetrics,
    TrainProgress,
    load_best_weights,
    make_callbacks,
    validated_best,
)
from tfsft.training.distribute import (
    check_supported,
    is_chief,
    num_workers,
    strategy_name,
    worker_label,
)
from tfsft.training.feed import Feed, make_feed
from tfsft.training.finish import report_splits, run_stats, save_run
from tfsft.training.layerwise import (
    GradualUnfreezing,
)
from tfsft.training.phases import FitPhases, PhaseClock
from tfsft.training.prepare import TrainingData, log_plan, prepare_data
from tfsft.training.strategy import (
    make_strategy,
    precision_probe,
    seed_everything,
    set_precision,
)

log = logging.getLogger("tfsft")


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
    # Keras' dtype policy is process-wide: the run sets it for the layers it
    # builds (which keep it), then gives the caller back the one it had.
    previous = keras.config.dtype_policy()
    try:
        return _train(cfg, verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(cfg: ExperimentConfig, verbose: int | None) -> Run:
    clock = PhaseClock(count_startup=True)
    # The strategy comes first: multi-worker and TPU strategies configure the TF
    # runtime, which is only possible before it has run anything.
    strategy = make_strategy(cfg.runtime)
    check_supported(cfg, strategy)  # fail before any work
    # auto may time the model in both policies first (once per machine), which
    # draws random weights: seeding comes after, so that it changes no result.
    with clock.phase("precision"):
        probe = precision_probe(cfg, strategy.num_replicas_in_sync)
        policy = set_precision(cfg.runtime.precision, strategy, probe)
    seed_everything(cfg.train.seed)
    # Data problems surface before a run dir exists, so bad input leaves no debris.
    data = prepare_data(cfg, clock)
    monitor = data.task.monitor(cfg.train.monitor, data.splits.validation is not None)

    chief = is_chief(strategy)
    if chief:
        # Multi-worker runs start over: resuming would need every worker to load
        # the chief's backup, which other machines cannot read (docs/distributed.md).
        run_dir, resumed = open_run_dir(cfg, resume=num_workers(strategy) == 1)
    else:
        # Keras/TF's pattern: other workers run the chief's code path too (epoch
        # logs and checkpoints read synchronised variables, a collective every
        # worker must join) but write into a throwaway dir.
        run_dir = Path(tempfile.mkdtemp(prefix=f"tfsft-{worker_label(strategy)}-"))
        resumed = False
    log.info("%s run %s", "resuming" if resumed else "starting", run_dir)
    data.labels.save(run_dir / "labels.json")
    write_status(
        run_dir,
        "running",
        precision=policy,
        strategy=strategy_name(strategy),
        replicas=strategy.num_replicas_in_sync,
    )
    try:
        run = _run(cfg, strategy, run_dir, data, monitor, verbose, clock)
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
        write_status(
            run_dir,
            "completed",
            metrics=run.metrics,
            precision=policy,
            strategy=strategy_name(strategy),
            replicas=strategy.num_replicas_in_sync,
        )
    return run


def _run(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    data: TrainingData,
    monitor: Any,
    verbose: int | None,
    clock: PhaseClock,
) -> Run:
    tc = cfg.train
    replicas = strategy.num_replicas_in_sync
    # Validation is one prediction pass on the host (`EpochMetrics`), whose last
    # outputs the final report reuses; Keras' own pass remains for the sequence
    # tasks under a multi-replica strategy, where predict() is a collective.
    host_validation = bool(data.task.epoch_metric_names) or replicas == 1
    validation = None if host_validation else data.encoded.get("validation")
    feed = make_feed(cfg, strategy, data.encoded["train"], validation)
    with clock.phase("build"):
        model, start_step = build_compiled(cfg, strategy, run_dir, data.labels, feed)
    trainable, total = count_params(model)
    log_plan(cfg, data, feed, trainable, total, start_step)
    epoch_metrics = (
        EpochMetrics.for_split(
            cfg,
            data.task,
            data.encoded.get("validation"),
            data.labels,
            feed.widths,
            clock,
        )
        if host_validation
        else None
    )
    callbacks = [
        FitPhases(clock),
        *make_callbacks(run_dir, tc, monitor, epoch_metrics, feed.total_steps),
    ]
    if tc.gradual_unfreezing is not None:
        callbacks.append(GradualUnfreezing(tc.gradual_unfreezing, feed.steps_per_epoch))
    callbacks += data.task.callbacks(
        run_dir, cfg, data.preprocessor, data.splits.validation
    )

    start = time.perf_counter()
    spe, total_steps = feed.steps_per_epoch, feed.total_steps
    # verbose None: tfsft's own progress (tfsft.progress); an explicit value is
    # passed to Keras as is (0: silent).
    shown = (
        stage("training", total_steps, "steps", start_step) if verbose is None else None
    )
    with shown or contextlib.nullcontext() as progress:
        if progress is not None:
            epochs = total_steps // spe
            callbacks.append(
                TrainProgress(progress, spe, epochs, tc.batch_size, monitor.name)
            )
            if epoch_metrics is not None:
                epoch_metrics.stage = progress
        offset = start_step % spe
        keras_verbose = verbose or 0
        if offset:  # finish the interrupted epoch first, then whole epochs
            end = start_step - offset + spe
            _fit_steps(model, feed, start_step, end, callbacks, keras_verbose)
        resume_at = start_step - offset + (spe if offset else 0)
        if resume_at < total_steps:
            _fit_steps(model, feed, resume_at, total_steps, callbacks, keras_verbose)
    seconds = time.perf_counter() - start
    clock.add("fit", seconds)
    if not is_chief(strategy):
        return Run(run_dir, cfg, data.labels)  # the chief evaluates and saves
    if replicas > 1:
        # Evaluate and save a single-device copy, outside the strategy: under
        # MultiWorkerMirroredStrategy predict() is a collective every worker would
        # have to join (and Keras re-orders its outputs for auto-sharded data), and
        # the returned model should predict anywhere, without the strategy.
        model = single_device_copy(model, cfg, data.labels, total_steps)
    # The best epoch was the last one validated: the model holds its weights, and
    # its validation outputs are the report's (no second pass).
    validated = validated_best(callbacks) if replicas == 1 else None
    with clock.phase("evaluate"):
        if validated is None:
            load_best_weights(model, run_dir / "checkpoints")
        metrics = report_splits(
            model,
            data.task,
            cfg,
            run_dir,
            data.splits,
            data.encoded,
            data.labels,
            feed.widths,
            validated,
        )
    steps_done = min(total_steps - start_step, total_steps)
    metrics |= run_stats(seconds, steps_done, spe, tc.batch_size, data.encoded["train"])
    metrics |= {"trainable_params": trainable, "total_params": total}
    metrics["replicas"] = replicas
    history = save_run(
        model,
        data.task,
        data.preprocessor,
        run_dir,
        metrics,
        cfg,
        data.labels,
        lengths=data.encoded["train"].lengths(),
        clock=clock,
    )
    return Run(run_dir, cfg, data.labels, model=model, metrics=metrics, history=history)


def _fit_steps(
    model: keras.Model,
    feed: Feed,
    first: int,
    last: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """Runs global steps [first, last), which lie within one or more epochs."""
    spe = feed.steps_per_epoch
    epoch, offset = divmod(first, spe)
    # keras-hub's fit() wrapper only maps the (detached, so absent) preprocessor
    # over the data and rejects tf.distribute datasets; Keras' own fit() takes
    # them, so the distributed path calls it directly.
    distributed = feed.element_spec is not None
    fit = functools.partial(keras.Model.fit, model) if distributed else model.fit
    fit(
        feed.train(first, last),
        validation_data=feed.validation,
        validation_steps=feed.validation_steps,
        initial_epoch=epoch,
        epochs=epoch + 1 if offset else last // spe,
        steps_per_epoch=spe - offset if offset else spe,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the planned stream is already shuffled, per epoch
    )
