"""The callbacks every run gets: best checkpoint, resume backups, logs, NaN guard."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from tfsft.config import ExperimentConfig, TrainConfig
from tfsft.console import emit_event
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.errors import TfsftError
from tfsft.evaluation.inference import predict_logits
from tfsft.progress import Stage
from tfsft.tasks.base import Monitor, Task
from tfsft.training.phases import PhaseClock
from tfsft.training.resume import StepBackup, global_step

log = logging.getLogger("tfsft")


def make_callbacks(
    run_dir: Path,
    cfg: TrainConfig,
    monitor: Monitor,
    epoch_metrics: keras.callbacks.Callback | None = None,
    total_steps: int | None = None,
) -> list[keras.callbacks.Callback]:
    """Builds the callback list for `model.fit`.

    Args:
        run_dir: the run directory; everything is written below it.
        cfg: training settings (early stopping, backup frequency).
        monitor: the logged metric that decides the best checkpoint, e.g.
            ``val_accuracy``, and its mode (from the task's metric declarations).
        epoch_metrics: a callback that adds host-computed validation metrics to
            each epoch's logs (`EpochMetrics`); it runs before anything reads them.
        total_steps: the run's last global step: no backup is written there (the
            finished run deletes it); None backs up at every epoch end.
    """
    mode = monitor.mode
    callbacks: list[keras.callbacks.Callback] = [
        # First: a NaN step must stop training before anything saves its weights.
        StopOnNaN(run_dir, cfg.learning_rate),
        *([epoch_metrics] if epoch_metrics else []),
        BestCheckpoint(run_dir / "checkpoints", monitor.name, mode),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), profile_batch=0),
    ]
    # Last, so that an epoch's checkpoint and log row exist before its backup does.
    callbacks.append(StepBackup(run_dir / "backup", cfg.save_every_steps, total_steps))
    if cfg.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor.name,
                mode=mode,
                patience=cfg.early_stopping_patience,
                restore_best_weights=False,  # the best checkpoint is reloaded anyway
            )
        )
    return callbacks


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss with a hint; earlier checkpoints stay."""

    def __init__(self, run_dir: Path, learning_rate: float) -> None:
        super().__init__()
        self.run_dir, self.learning_rate = run_dir, learning_rate

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        step = global_step(self.model)
        raise TfsftError(
            f"train: the loss became {loss} at step {step}; training stopped and the "
            f"last good checkpoint and backup in {self.run_dir} were kept. Try a lower "
            f"train.learning_rate (now {self.learning_rate:g}), train.max_grad_norm: "
            "1.0, or runtime.precision: float32"
        )


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by ``monitor`` in ``best.weights.h5``.

    Unlike `keras.callbacks.ModelCheckpoint` it leaves the optimizer state out (a third
    of the size; the backups carry it for resuming), writes atomically, and records the
    best value in ``best.json`` so that a resumed run does not overwrite a better
    checkpoint from before the interruption.
    """

    def __init__(self, folder: Path, monitor: str, mode: str) -> None:
        super().__init__()
        self.folder, self.monitor, self.mode = folder, monitor, mode
        self.path = folder / "best.weights.h5"
        self.meta = folder / "best.json"

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best = None
        self.saved_epoch: int | None = None  # the epoch this fit() last saved
        if self.meta.is_file() and self.path.is_file():
            saved = json.loads(self.meta.read_text())
            if saved.get("monitor") == self.monitor:
                self.best = saved["value"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise TfsftError(
                f"train.monitor: '{self.monitor}' is not among the logged metrics "
                f"({', '.join(sorted(logs or {}))})"
            )
        value = float(value)
        better = self.best is None or (
            value < self.best if self.mode == "min" else value > self.best
        )
        if not better or value != value:  # NaN is never best
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".best.tmp.weights.h5"
        keras.saving.save_weights(
            self.model, str(tmp), objects_to_skip=[self.model.optimizer]
        )
        tmp.replace(self.path)
        record = {"monitor": self.monitor, "value": value, "epoch": epoch + 1}
        self.meta.write_text(json.dumps(record))
        self.best, self.saved_epoch = value, epoch


def load_best_weights(model: keras.Model, folder: Path) -> bool:
    """Loads ``best.weights.h5`` into ``model`` if it exists; returns whether it did."""
    path = folder / "best.weights.h5"
    if not path.is_file():
        return False
    keras.saving.load_weights(model, str(path), objects_to_skip=[model.optimizer])
    return True


class TrainProgress(keras.callbacks.Callback):
    """Feeds a `tfsft.progress.Stage` over the whole run: the global step, the
    epoch, the loss, the monitored metric's last value and examples/s (Keras' own
    bar is off: it knows one fit() call, not the resumed run as a whole)."""

    def __init__(
        self, stage: Stage, feed_steps: int, epochs: int, batch_size: int, monitor: str
    ) -> None:
        super().__init__()
        self.stage, self.spe, self.epochs = stage, feed_steps, epochs
        self.batch_size, self.monitor = batch_size, monitor
        self.first = self.step = int(stage.done)
        self.start = time.perf_counter()
        self.last_monitor: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.epoch_first = epoch, self.step
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # ``batch`` counts within this fit() call's epoch (a resumed epoch starts
        # part-way), so the global step is the epoch's first step plus it.
        self.step = self.epoch_first + batch + 1
        elapsed = time.perf_counter() - self.start
        rate = (self.step - self.first) * self.batch_size / max(elapsed, 1e-9)
        self.stage.update(
            self.step,
            epoch=f"{self.epoch + 1}/{self.epochs}",
            loss=_number((logs or {}).get("loss")),
            **{self.monitor: self.last_monitor},
            examples_per_second=round(rate, 1),
        )

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.stage.update(phase="validating")

    def on_test_end(self, logs: dict | None = None) -> None:
        self.stage.update(phase=None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {k: _number(v) for k, v in (logs or {}).items()}
        self.last_monitor = logs.get(self.monitor, self.last_monitor)
        seconds = time.perf_counter() - self.epoch_start
        shown = "  ".join(
            f"{k} {v:.4f}"
            for k, v in logs.items()
            if k != "learning_rate" and v is not None
        )
        self.stage.note(f"epoch {epoch + 1}/{self.epochs}  {shown}  ({seconds:.1f} s)")
        emit_event(
            "epoch",
            epoch=epoch + 1,
            epochs=self.epochs,
            step=self.step,
            seconds=round(seconds, 2),
            logs=logs,
        )


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class EpochMetrics(keras.callbacks.Callback):
    """Validates on the host after each epoch: one prediction pass over the
    validation set, whose metrics go into the epoch logs as ``val_<name>``.

    Some metrics need whole examples put back together before they can be computed
    (entity F1 over sentences split into windows), which in-graph metrics cannot do
    batch by batch; as in TF Model Garden's aggregated validation logs, they are
    computed here from the model's outputs. Other tasks get their compiled loss and
    metrics (`Task.logit_metrics`). The last pass's outputs are kept (``last``), so
    the final report reuses them when the model still holds that epoch's weights.
    """

    def __init__(
        self, compute: Callable[[keras.Model], tuple[Any, dict[str, float]]]
    ) -> None:
        super().__init__()
        self.compute = compute
        self.last: tuple[int, Any] | None = None  # (epoch, outputs)
        # The run's progress display, told while the pass runs (it is no
        # Keras test loop, so TrainProgress.on_test_begin never hears of it).
        self.stage: Stage | None = None

    @classmethod
    def for_split(
        cls,
        cfg: ExperimentConfig,
        task: Task,
        validation: Encoded | None,
        labels: LabelSpec,
        widths: list[int] | None,
        clock: PhaseClock | None = None,
    ) -> EpochMetrics | None:
        """The callback validating on ``validation`` (None without one), timed as
        ``validation`` on ``clock``."""
        if validation is None:
            return None
        clock = clock or PhaseClock()

        def compute(model: keras.Model) -> tuple[Any, dict[str, float]]:
            with clock.phase("validation"):
                return _validate(model)

        def _validate(model: keras.Model) -> tuple[Any, dict[str, float]]:
            logits = predict_logits(
                model, validation, cfg.train.batch_size, widths, task.token_outputs
            )
            outputs = task.outputs(logits, validation)
            if task.epoch_metric_names:
                return outputs, task.epoch_metrics(outputs, validation, labels)
            return outputs, task.logit_metrics(logits, validation)

        return cls(compute)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        self.last = None  # a failure below must not leave an older epoch's outputs
        if self.stage is not None:
            self.stage.update(phase="validating")
        try:
            outputs, metrics = self.compute(self.model)
        finally:
            if self.stage is not None:
                self.stage.update(phase=None)
        for key, value in metrics.items():
            logs[f"val_{key}"] = value
        self.last = (epoch, outputs)


def validated_best(callbacks: list[keras.callbacks.Callback]) -> Any:
    """The validation outputs of the epoch whose weights the model holds now, if
    that epoch is also the best checkpoint saved by this fit (else None: load the
    best weights and predict again)."""
    host = next((c for c in callbacks if isinstance(c, EpochMetrics)), None)
    best = next((c for c in callbacks if isinstance(c, BestCheckpoint)), None)
    if host is None or best is None or host.last is None:
        return None
    epoch, outputs = host.last
    return outputs if best.saved_epoch == epoch else None
