"""A run's report, ``report.html`` and ``report.md``, built from its run dir's files.

Everything comes from files the run already wrote (config.yaml, status.json,
metrics.json, checkpoints/best.json, history.csv, errors.jsonl, the plots,
environment.json), so `write_run_report` can re-report any finished run, and the
report of a run says only what its files say. Task-specific tables and plots come
from the task (`tfsft.tasks.base.Task.report_parts`): this module never branches on
a task's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tfsft.errors import TfsftError
from tfsft.evaluation import report_doc as doc
from tfsft.evaluation.environment import ENVIRONMENT, record_environment
from tfsft.evaluation.report import plot_history, plot_lengths
from tfsft.evaluation.report_parts import cell, error_table, figure, read_json
from tfsft.runs import read_status

log = logging.getLogger("tfsft")

ERROR_ROWS = 10  # the worst errors shown; errors.jsonl has them all
CURVES, LENGTHS = "curves.png", "token_lengths.png"
# metrics.json keys the trainer adds about the run as a whole, not about a split.
RUN_STATS = (
    "train_seconds",
    "train_examples_per_second",
    "train_tokens_per_second",
    "trainable_params",
    "total_params",
    "replicas",
    "adapter_bytes",
    "phase_seconds",
)


def finish_report(
    run_dir: Path,
    history: dict[str, list[float]],
    lengths: np.ndarray | None,
    sequence_length: int,
) -> None:
    """The end of a training run: plots, environment.json, then the report.

    Called after the model is saved; each step only logs a warning when it fails,
    so a plotting problem costs at most a figure, never the run.
    """
    _guarded("the training curves", plot_history, history, run_dir / CURVES)
    if lengths is not None:
        _guarded(
            "the token-length histogram",
            plot_lengths,
            lengths,
            sequence_length,
            run_dir / LENGTHS,
        )
    _guarded(ENVIRONMENT, record_environment, run_dir)
    # status.json still says "running": the trainer marks it completed after this.
    _guarded("the run report", write_run_report, run_dir, "completed")


def write_run_report(
    run_dir: str | Path, state: str | None = None
) -> tuple[Path, Path]:
    """(Re)writes ``report.html`` and ``report.md`` from a run dir's files.

    Args:
        run_dir: a tfsft run dir (``runs/<name>/<timestamp>``).
        state: the run state to show instead of status.json's.

    Returns:
        The paths of report.html and report.md.

    Raises:
        TfsftError: when ``run_dir`` is not a tfsft run dir.
    """
    run_dir = Path(run_dir)
    document = build_report(run_dir, state)
    paths = run_dir / "report.html", run_dir / "report.md"
    texts = doc.render_html(document), doc.render_markdown(document, run_dir)
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a reader never sees half a report
    return paths


def build_report(run_dir: Path, state: str | None = None) -> doc.Document:
    """The report of the run in ``run_dir`` as a `report_doc.Document`."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise TfsftError(f"{run_dir}: not a tfsft run dir (no config.yaml)")
    config_text = config_file.read_text(encoding="utf-8")
    # Read, not validated: an older run's config may predate today's schema.
    config = yaml.safe_load(config_text) or {}
    task_name = str(config.get("task", "classification"))
    metrics = read_json(run_dir / "metrics.json") or {}
    status = read_status(run_dir)
    env = read_json(run_dir / ENVIRONMENT) or {}

    sections = [
        doc.Section(
            "Run", [_header(run_dir, config, task_name, metrics, status, state)]
        ),
        doc.Section("Metrics", [_metrics_table(metrics)]),
        doc.Section("Training", _figures(run_dir)),
    ]
    task = _task(task_name)
    for title, split_dir in (("Validation", run_dir), ("Test", run_dir / "test")):
        parts = list(task.report_parts(split_dir)) if task is not None else []
        parts.append(error_table(split_dir / "errors.jsonl", ERROR_ROWS))
        if parts := [p for p in parts if p is not None]:  # a split evaluated
            sections.append(doc.Section(title, parts))
    sections.append(doc.Section("Environment", [_environment(env, status, metrics)]))
    sections.append(
        doc.Section("Configuration", [doc.Code("config.yaml", config_text, "yaml")])
    )
    for section in sections:
        if not section.parts:
            section.parts.append(doc.Text("Nothing recorded."))
    title = f"tfsft run report: {config.get('name', run_dir.parent.name)}"
    return doc.Document(title, sections)


# --- the parts ---------------------------------------------------------------------


def _header(
    run_dir: Path,
    config: dict[str, Any],
    task: str,
    metrics: dict[str, Any],
    status: dict[str, Any],
    state: str | None,
) -> doc.Table:
    state = state or status.get("state", "unknown")
    facts: list[tuple[str, Any]] = [
        ("run", config.get("name", "")),
        ("task", task),
        ("status", state),
    ]
    if status.get("error"):
        facts.append(("error", status["error"]))
    facts.append(("run dir", str(run_dir)))
    if started := _started(run_dir):
        facts.append(("started", started))
    # Shown as of now when the trainer reports (status.json is written after).
    finished = time.time() if state != status.get("state") else status.get("time")
    if finished and state != "running":
        facts.append(("finished", _when(finished)))
    best = read_json(run_dir / "checkpoints" / "best.json")
    if isinstance(best, dict) and "value" in best:
        facts.append(
            (
                f"best {best.get('monitor', '')}",
                f"{best['value']:.4f} at epoch "
                f"{best.get('epoch', '?')} of {_epochs(run_dir) or '?'}",
            )
        )
    if "train_seconds" in metrics:
        facts.append(("train time", f"{metrics['train_seconds']:,.1f} s"))
    if isinstance(phases := metrics.get("phase_seconds"), dict):  # re-reported runs
        shown = ", ".join(f"{k} {v:,.1f}" for k, v in phases.items())
        facts.append(("seconds by phase", shown))
    rates = [
        f"{metrics[k]:,.1f} {unit}/s"
        for k, unit in (
            ("train_examples_per_second", "examples"),
            ("train_tokens_per_second", "tokens"),
        )
        if metrics.get(k) is not None
    ]
    if rates:
        facts.append(("throughput", ", ".join(rates)))
    if metrics.get("total_params"):
        trainable, total = metrics.get("trainable_params", 0), metrics["total_params"]
        share = 100 * trainable / total
        facts.append(
            ("parameters", f"{trainable:,} trainable of {total:,} ({share:.1f}%)")
        )
    return doc.Table("", (), facts)


def _metrics_table(metrics: dict[str, Any]) -> doc.Table | None:
    """Validation metrics beside the test ones (``test_<name>`` in metrics.json)."""
    values: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if key in RUN_STATS or not (value is None or isinstance(value, int | float)):
            continue
        split, name = (
            ("test", key[5:]) if key.startswith("test_") else ("validation", key)
        )
        values.setdefault(name, {})[split] = value
    if not values:
        return None
    splits = [s for s in ("validation", "test") if any(s in v for v in values.values())]
    rows = [(name, *(v.get(s) for s in splits)) for name, v in values.items()]
    return doc.Table("", ("metric", *splits), rows)


def _figures(run_dir: Path) -> list[doc.Part]:
    parts = [
        figure(
            run_dir / CURVES,
            "Loss and metrics by epoch",
            "training curves: loss and metrics per epoch, train and validation",
        ),
        figure(
            run_dir / LENGTHS,
            "Token lengths of the training data",
            "histogram of training rows by token count, the sequence length marked",
        ),
    ]
    return [p for p in parts if p is not None]


def _environment(
    env: dict[str, Any], status: dict[str, Any], metrics: dict[str, Any]
) -> doc.Table:
    # A run from before environment.json still has what status.json recorded.
    merged = {
        "precision": status.get("precision"),
        "strategy": status.get("strategy"),
        "replicas": metrics.get("replicas", status.get("replicas")),
    } | {k: v for k, v in env.items() if v is not None}
    if not env:
        merged["recorded"] = "not recorded for this run (no environment.json)"
    facts = [(k, v) for k, v in merged.items() if v not in (None, "", [])]
    return doc.Table("", (), [(k, cell(v)) for k, v in facts])


# --- helpers -----------------------------------------------------------------------


def _task(name: str) -> Any:
    from tfsft.tasks import get_task

    try:
        return get_task(name)
    except TfsftError:  # a task this version no longer has: no task parts
        return None


def _guarded(what: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:  # a report problem must not fail the run
        log.warning("could not write %s: %s: %s", what, type(e).__name__, e)


def _epochs(run_dir: Path) -> int:
    path = run_dir / "history.csv"
    if not path.is_file():
        return 0
    return max(0, len(path.read_text().strip().splitlines()) - 1)


def _started(run_dir: Path) -> str | None:
    # The run dir is named by its start time: YYYYmmdd-HHMMSS[-n].
    try:
        return _when(time.mktime(time.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S")))
    except ValueError:
        return None


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))
