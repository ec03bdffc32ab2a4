"""Reading one run dir's files: config, status, metrics, best epoch, history.

Damaged or half-written files read as missing rather than failing: `tfsft runs list`
must survive the one run that crashed mid-write. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import yaml

from tfsft.errors import TfsftError
from tfsft.runs import _alive

STAMP = "%Y%m%d-%H%M%S"  # run dir names, as `tfsft.runs.open_run_dir` writes them
# What training writes as it goes: the newest of them dates a killed run's end.
LAST_WRITTEN = ("history.csv", "checkpoints/best.json", "backup")


def run_state(status: dict[str, Any]) -> str:
    """The recorded state, with "killed" for a "running" whose process is gone.

    A SIGKILL (OOM killer, preemption, kill -9) ends a process before it can write
    "interrupted", so its status still says "running". The pid is checked on this
    machine only: a run training on another host reads as killed here.
    """
    state = status.get("state")
    if not state:
        return "unknown"  # created, but training never wrote a status
    if state == "running" and not _alive(status.get("pid")):
        return "killed"
    return str(state)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config as a plain dict ({} if missing or unreadable).

    Not re-validated: a run written by an older tfsft (renamed or removed keys)
    still lists and compares.
    """
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(run_dir: Path, status: dict[str, Any]) -> dict[str, Any]:
    """metrics.json, or the metrics status.json recorded at completion."""
    metrics = read_json(run_dir / "metrics.json")
    if not metrics and isinstance(status.get("metrics"), dict):
        metrics = status["metrics"]
    return metrics


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """history.csv as rows, one per epoch, with 1-based ``epoch`` as best.json has.

    A resumed run may log an epoch twice (the interrupted attempt and the redo): the
    later row wins.
    """
    try:
        with (run_dir / "history.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for n, row in enumerate(rows):
        epoch = _number(row.get("epoch"))
        index = int(epoch) + 1 if isinstance(epoch, float) else n + 1
        values = {k: _number(v) for k, v in row.items() if k and k != "epoch"}
        by_epoch[index] = {"epoch": index, **values}
    return [by_epoch[k] for k in sorted(by_epoch)]


def best_value(
    run_dir: Path, cfg: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    """The monitored metric: ``{"name", "value", "epoch"}`` (None where unknown).

    From checkpoints/best.json (the best epoch); without one (no epoch finished, or
    an older run), the final metrics' value of train.monitor or the task's default.
    """
    best = read_json(run_dir / "checkpoints" / "best.json")
    if "monitor" in best:
        return {
            "name": best["monitor"],
            "value": best.get("value"),
            "epoch": best.get("epoch"),
        }
    name = section(cfg, "train").get("monitor") or _default_monitor(cfg, metrics)
    value = metrics.get(name.removeprefix("val_")) if name else None
    return {"name": name, "value": value, "epoch": None}


def started_at(run_dir: Path) -> float:
    """When the run started: its dir name (``20250101-120000[-2]``), else mtime."""
    try:
        return time.mktime(time.strptime(run_dir.name[:15], STAMP))
    except ValueError:
        target = run_dir / "config.yaml"
        return (target if target.exists() else run_dir).stat().st_mtime


def elapsed_seconds(
    run_dir: Path, metrics: dict[str, Any], status: dict[str, Any], started: float
) -> float | None:
    """Training time: train_seconds when recorded, else elapsed wall time.

    A killed run's status was last written at its start, so its end is the last
    file training touched (the epoch log, the best checkpoint, a backup).
    """
    if isinstance(metrics.get("train_seconds"), (int, float)):
        return float(metrics["train_seconds"])
    state = run_state(status)
    end = time.time() if state == "running" else status.get("time")
    if state == "killed":
        end = max([_mtime(run_dir / p) for p in LAST_WRITTEN] + [end or 0.0])
    if not isinstance(end, (int, float)):
        return None
    return round(max(0.0, end - started), 1)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _default_monitor(cfg: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    if not metrics or not isinstance(cfg.get("task"), str):
        return None
    # Only reached for runs without best.json; importing the task costs ~1 s.
    from tfsft.tasks import get_task

    try:
        return get_task(cfg["task"]).default_monitor
    except TfsftError:  # a task this version does not know
        return None


def section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    section = cfg.get(name)
    return section if isinstance(section, dict) else {}


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(text: str | None) -> float | None:
    # CSVLogger writes "NA" for a metric an epoch did not log.
    try:
        return float(text) if text not in (None, "", "NA") else None
    except ValueError:
        return None
