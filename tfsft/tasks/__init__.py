"""One home per task: `get_task(name)` returns the object that knows the task.

The trainer, CLI, evaluation and export never branch on the task's name; they look
the task up here once and ask it (its record fields, targets, encoding, head, loss,
metrics, report, decoding and serving signature; see `tfsft.tasks.base.Task`).

``TASKS`` (`tfsft.tasks.registry`) maps each ``task:`` value of the config to the
module that defines it; the modules load on first use. Adding a task means adding
its module and one line there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tfsft.tasks.registry import TASKS

if TYPE_CHECKING:
    from tfsft.tasks.base import Task


def get_task(task: str | Any) -> Task:
    """The task object for a ``task:`` name (or for a config's ``task``)."""
    name = task if isinstance(task, str) else task.task
    if name not in TASKS:
        from tfsft.errors import ConfigError

        raise ConfigError(
            f"task: unknown task {name!r}; choose from {', '.join(TASKS)}"
        )
    return importlib.import_module(TASKS[name]).TASK
