"""The callbacks every run gets: best checkpoint, resume backups, logs, NaN guard."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import keras

from tfsft.config import TrainConfig

log = logging.getLogger("tfsft")


def make_callbacks(
    run_dir: Path, cfg: TrainConfig, monitor: str
) -> list[keras.callbacks.Callback]:
    """Builds the callback list for `model.fit`.

    Args:
        run_dir: the run directory; everything is written below it.
        cfg: training settings (early stopping, backup frequency).
        monitor: the logged metric that decides the best checkpoint, e.g.
            ``val_accuracy``; its mode (max/min) follows from the name.
    """
    mode = "min" if "loss" in monitor or "error" in monitor else "max"
    callbacks: list[keras.callbacks.Callback] = [
        # Resume: re-running the same command restores weights, optimizer state
        # and the epoch counter from here.
        keras.callbacks.BackupAndRestore(
            backup_dir=str(run_dir / "backup"),
            save_freq=cfg.save_every_steps or "epoch",
        ),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.weights.h5"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
    ]
    if cfg.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=cfg.early_stopping_patience,
                restore_best_weights=False,  # the best checkpoint is reloaded anyway
            )
        )
    return callbacks


def progress_verbosity() -> int:
    """Keras fit verbosity: a live bar on a terminal, one line per epoch otherwise."""
    return 1 if sys.stderr.isatty() else 2


class ProgressLog(keras.callbacks.Callback):
    """Logs step, loss, throughput and ETA every ``every_seconds``.

    Keras' one-line-per-epoch mode (used when output is not a terminal: CI logs,
    nohup, notebooks) says nothing for the whole of a long epoch.
    """

    def __init__(
        self, steps_per_epoch: int, batch_size: int, every_seconds: float = 30
    ):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.every_seconds = every_seconds

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_seconds:
            return
        self.last = now
        done = batch + 1
        rate = done * self.batch_size / (now - self.start)
        eta = (self.steps_per_epoch - done) * self.batch_size / max(rate, 1e-9)
        loss = (logs or {}).get("loss", float("nan"))
        log.info(
            "epoch %d step %d/%d  loss %.4f  %.1f examples/s  epoch ETA %.0fs",
            self.epoch + 1,
            done,
            self.steps_per_epoch,
            loss,
            rate,
            eta,
        )
