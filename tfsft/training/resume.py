"""Step-based backups that survive kill -9, SIGTERM and preemption.

A backup (``<run>/backup/``) holds the model and optimizer variables, the state of
every random generator (dropout), and the global step. Because each epoch's example
order is a pure function of (seed, epoch) (see `data.pipeline.epoch_orders`), the global
step alone fixes the data position: a resumed run starts its input stream at that step
and produces exactly the batches the uninterrupted run would have, without replaying
the data before it.

Backups are written to a temp dir and swapped in, so a kill at any moment leaves
either the previous or the new backup intact.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfsft.errors import Interrupted

log = logging.getLogger("tfsft")
_WEIGHTS = "state.weights.h5"
_RNG = "rng.npy"
_PROGRESS = "progress.json"


def seed_states(model: keras.Model) -> list[Any]:
    """The state variables of every SeedGenerator (dropout RNG) in the model.

    They are not among ``model.weights``, so checkpoints leave them out.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights and "seed" in v.path]


def global_step(model: keras.Model) -> int:
    """Batches trained so far.

    Keras' public ``iterations`` counts optimizer updates, which with gradient
    accumulation is batches // N; the data position of a resumed run needs the
    batch count, which the base optimizer keeps in ``_iterations``.
    """
    optimizer = model.optimizer
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
    return int(optimizer._iterations.numpy())


def save_backup(model: keras.Model, folder: Path, step: int) -> None:
    """Writes weights, optimizer state, RNG and step; atomically replaces ``folder``."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_weights(str(tmp / _WEIGHTS))  # includes the optimizer's variables
    states = [np.asarray(v.numpy()) for v in seed_states(model)]
    np.save(tmp / _RNG, np.stack(states) if states else np.zeros((0, 2), np.int64))
    (tmp / _PROGRESS).write_text(json.dumps({"global_step": step}))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def restore_backup(model: keras.Model, folder: Path) -> int:
    """Restores the newest complete backup; returns its global step (0 if none)."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / _PROGRESS).is_file():
            break
    else:
        return 0
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(str(candidate / _WEIGHTS))
    for variable, value in zip(
        seed_states(model), np.load(candidate / _RNG), strict=True
    ):
        variable.assign(value)
    return int(json.loads((candidate / _PROGRESS).read_text())["global_step"])


class StepBackup(keras.callbacks.Callback):
    """Backs up every ``every_steps`` steps and at each epoch end; stops on signals.

    SIGTERM (preemption, `kill`) and SIGINT (Ctrl-C) set a flag; at the next step
    boundary a backup is written and training stops with `Interrupted`.

    No backup is written once the run's ``last_step`` is reached: the run finishes
    next and deletes its backup, so writing one (weights and optimizer state: 261 MB
    and 1.5-3 s for MiniLM) would only be thrown away. A process that dies in
    between resumes from the backup before, and replays the rest to the same weights.
    """

    def __init__(
        self, folder: Path, every_steps: int | None, last_step: int | None = None
    ) -> None:
        super().__init__()
        self.folder, self.every_steps, self.last_step = folder, every_steps, last_step
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._saved = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._saved = global_step(self.model)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def on_train_end(self, logs: dict | None = None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal_name:  # a second signal: stop now, keep the last backup
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: stopping after this step", self.signal_name)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = global_step(self.model)
        if self.signal_name:
            save_backup(self.model, self.folder, step)
            self.on_train_end()
            raise Interrupted(step, self.signal_name)
        # With steps_per_execution > 1 this runs every N steps, so a multiple of
        # every_steps may be stepped over: back up whenever one was crossed.
        every = self.every_steps
        if every and step // every > self._saved // every and not self._last(step):
            save_backup(self.model, self.folder, step)
            self._saved = step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._saved = global_step(self.model)
        if not self._last(self._saved):
            save_backup(self.model, self.folder, self._saved)

    def _last(self, step: int) -> bool:
        return self.last_step is not None and step >= self.last_step
