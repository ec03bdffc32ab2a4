"""Where a run's wall time goes: seconds per phase (metrics.json's ``phase_seconds``).

A run is more than its training steps: imports, reading and tokenizing, building the
model, validation, the final evaluation, saving the preset and writing the report.
Users comparing tfsft with another trainer on a short run pay for all of them, so
each is timed and reported (`tfsft.training.trainer`; the benchmark prints them).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import keras


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None where unknown.

    The time before ``train()`` is called is mostly Python importing TensorFlow,
    Keras and keras-hub: the start-up a command-line user waits for.
    """
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            # Field 22 (starttime, clock ticks after boot); the command name in
            # field 2 may hold spaces, so count from its closing parenthesis.
            started = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - started / os.sysconf("SC_CLK_TCK"), 0.0)


# Whether a clock has already counted this process's start-up: a second run in the
# same process (a notebook, a script, the test suite) did not wait for the imports.
_startup_counted = False


class PhaseClock:
    """Accumulates wall seconds per named phase (a phase may be entered again).

    With ``count_startup``, the first such clock of the process also holds
    ``startup``, the seconds from process start to its creation.
    """

    def __init__(self, count_startup: bool = False) -> None:
        global _startup_counted
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()
        if count_startup and not _startup_counted:
            _startup_counted = True
            age = process_age()
            if age is not None:
                self.seconds["startup"] = age

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - began)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def report(self) -> dict[str, float]:
        """The phases in the order they first ran, and ``total`` (start-up included)."""
        total = time.perf_counter() - self.start + self.seconds.get("startup", 0.0)
        return {k: round(v, 2) for k, v in {**self.seconds, "total": total}.items()}


class FitPhases(keras.callbacks.Callback):
    """Splits fit()'s time into training steps, validation and epoch-end work.

    ``validation`` is the validation pass (Keras' own, timed here, or the host-side
    one, timed by `EpochMetrics` on the same clock); ``epoch_end`` is the rest of the
    epoch-end callbacks (the best checkpoint, the resume backup, logs), so ``fit``
    minus both is the steps themselves (with their input pipeline). It must come
    first in the callback list.
    """

    async_safe = True  # no per-batch hook: Keras may dispatch batches asynchronously

    def __init__(self, clock: PhaseClock) -> None:
        super().__init__()
        self.clock = clock
        self._test_began = self._epoch_ended = self._validated = 0.0

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._test_began = time.perf_counter()

    def on_test_end(self, logs: dict | None = None) -> None:
        self.clock.add("validation", time.perf_counter() - self._test_began)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._flush_epoch_end()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._flush_epoch_end()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # First in the callback list: the epoch-end work of the others starts now.
        self._epoch_ended = time.perf_counter()
        self._validated = self.clock.seconds.get("validation", 0.0)

    def _flush_epoch_end(self) -> None:
        if self._epoch_ended:
            # A host-side validation pass (`EpochMetrics`) runs among the epoch-end
            # callbacks and is timed as ``validation`` itself.
            validated = self.clock.seconds.get("validation", 0.0) - self._validated
            spent = time.perf_counter() - self._epoch_ended - validated
            self.clock.add("epoch_end", spent)
            self._epoch_ended = 0.0
