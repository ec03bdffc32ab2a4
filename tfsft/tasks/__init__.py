"""One home per task: `get_task(name)` returns the object that knows the task.

The trainer, CLI, evaluation and export never branch on the task's name; they look
the task up here once and ask it (its record fields, targets, encoding, head, loss,
metrics, report, decoding and serving signature; see `tfsft.tasks.base.Task`).

``TASKS`` maps each ``task:`` value of the config to the module that defines it. The
modules import TensorFlow, so they load on first use: `tfsft config ...` stays fast.
Adding a task means adding its module and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tfsft.tasks.base import Task

TASKS: dict[str, str] = {
    "classification": "tfsft.tasks.classification",
    "multilabel": "tfsft.tasks.multilabel",
    "regression": "tfsft.tasks.regression",
    "token_classification": "tfsft.tasks.token_classification",
}


def get_task(task: str | Any) -> Task:
    """The task object for a ``task:`` name (or for a config's ``task``)."""
    name = task if isinstance(task, str) else task.task
    if name not in TASKS:
        from tfsft.errors import ConfigError

        raise ConfigError(
            f"task: unknown task {name!r}; choose from {', '.join(TASKS)}"
        )
    return importlib.import_module(TASKS[name]).TASK
