"""Progress of long steps (reading, tokenizing, training, evaluating, exporting,
generating) in the form the console mode asks for (see `tfsft.console`).

One API, four renderings::

    with stage("tokenizing train", total=len(rows), unit="rows") as s:
        for chunk in chunks:
            ...
            s.advance(len(chunk))

- a live rich bar on a terminal (rate, elapsed and ETA), one bar per open stage
  in a single live display, and a closing line with the count and rate;
- plain lines elsewhere: the closing line, and a progress line every 30 s for a
  long stage, so a CI log shows a long epoch is alive;
- JSON events (``stage_begin``, ``progress`` at most once a second, ``stage_end``);
- nothing under ``--quiet``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tfsft import console

PLAIN_EVERY_SECONDS = 30.0
JSON_EVERY_SECONDS = 1.0
_live: Progress | None = None
_open = 0


class Stage:
    """One long step: counts work done and reports it (see the module docstring)."""

    def __init__(
        self, name: str, total: float | None, unit: str, start: float = 0
    ) -> None:
        self.name, self.total, self.unit = name, total, unit
        # ``start``: work done before this process (a resumed run); not in the rate.
        self.done = self.base = start
        self.fields: dict[str, Any] = {}
        self.start = self.last_report = time.perf_counter()
        self._task: Any = None

    def advance(self, n: float = 1, **fields: Any) -> None:
        """Adds ``n`` units of work; ``fields`` (loss, ...) are shown beside it."""
        self.done += n
        self.update(**fields)

    def update(self, done: float | None = None, **fields: Any) -> None:
        """Sets the work done so far (absolute) and the fields shown beside it."""
        if done is not None:
            self.done = done
        self.fields.update(fields)
        now = time.perf_counter()
        if self._task is not None and _live is not None:
            _live.update(
                self._task, completed=self.done, extra=_format_fields(self.fields)
            )
        elif console.json_mode():
            if now - self.last_report >= JSON_EVERY_SECONDS:
                self.last_report = now
                console.emit_event("progress", **self._state(now))
        elif not console.quiet() and now - self.last_report >= PLAIN_EVERY_SECONDS:
            self.last_report = now
            console.err.print(
                self._line(now, final=False), highlight=False, soft_wrap=True
            )

    def note(self, message: str) -> None:
        """A line that stays above the live display (an epoch's summary, say)."""
        if console.json_mode() or console.quiet():
            return
        (_live.console if _live is not None else console.err).print(
            message, highlight=False, soft_wrap=True
        )

    def rate(self, now: float | None = None) -> float:
        elapsed = (now or time.perf_counter()) - self.start
        return (self.done - self.base) / elapsed if elapsed > 0 else 0.0

    def _state(self, now: float) -> dict[str, Any]:
        rate = self.rate(now)
        state = {
            "stage": self.name,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "per_second": round(rate, 2),
            "elapsed_seconds": round(now - self.start, 2),
        }
        if self.total and rate > 0:
            state["eta_seconds"] = round((self.total - self.done) / rate, 1)
        return state | self.fields

    def _line(self, now: float, final: bool) -> str:
        rate, elapsed = self.rate(now), now - self.start
        count = f"{self.done - self.base:,.0f}" + (
            f"/{self.total:,.0f}" if self.total and not final else ""
        )
        text = f"{self.name}: {count} {self.unit} in {elapsed:.1f} s"
        if elapsed > 0 and rate:
            text += f" ({rate:,.{0 if rate >= 100 else 1}f} {self.unit}/s)"
        if not final and self.total and rate > 0:
            text += f", ETA {(self.total - self.done) / rate:.0f} s"
        extra = _format_fields(self.fields)
        return f"{text}  {extra}" if extra else text


@contextmanager
def stage(
    name: str, total: float | None = None, unit: str = "rows", start: float = 0
) -> Iterator[Stage]:
    """Opens a `Stage` for the duration of the block (see the module docstring)."""
    global _live, _open
    current = Stage(name, total, unit, start)
    if console.interactive():
        if _live is None:
            _live = _make_live()
            _live.start()
        _open += 1
        current._task = _live.add_task(name, total=total, completed=start, extra="")
    console.emit_event("stage_begin", stage=name, total=total, unit=unit)
    ok = False
    try:
        yield current
        ok = True
    finally:
        now = time.perf_counter()
        if current._task is not None and _live is not None:
            _live.remove_task(current._task)
            _open -= 1
            if _open == 0:
                _live.stop()
                _live = None
        if console.json_mode():
            console.emit_event("stage_end", ok=ok, **current._state(now))
        elif ok and not console.quiet():
            console.err.print(
                current._line(now, final=True), highlight=False, soft_wrap=True
            )


def _make_live() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console.err,
        transient=True,  # the closing line replaces the bar
        refresh_per_second=4,
    )


# Short labels for the terminal (JSON events keep the full names).
_LABELS = {"examples_per_second": "ex/s"}


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{_LABELS.get(key, key)} {shown}")
    return "  ".join(parts)
