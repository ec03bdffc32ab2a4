"""Reading run dirs back: list, describe and compare runs (``tfsft runs ...``).

Everything here reads the small files a run dir holds (``config.yaml``,
``status.json``, ``metrics.json``, ``checkpoints/best.json``, ``history.csv``) and
never imports TensorFlow, so the commands answer in a fraction of a second even over
hundreds of runs (`tfsft.run_files` reads them, tolerating damaged ones). Every
result is plain JSON-ready data (dicts, lists, str, float, None), which ``--json``
prints as is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfsft.errors import TfsftError
from tfsft.run_files import (
    best_value,
    elapsed_seconds,
    read_config,
    read_history,
    read_metrics,
    run_state,
    section,
    started_at,
)
from tfsft.runs import read_status

# Split on "_" ("val_f1_macro" -> val, f1, macro): a metric is known to improve
# upwards or downwards by one of its parts; anything else gets no direction.
HIGHER = {"accuracy", "f1", "mcc", "precision", "recall", "exact", "em", "pearson"}
HIGHER |= {"spearman", "auc", "r2", "bleu", "rouge", "rougel"}
LOWER = {"loss", "perplexity", "mae", "mse", "rmse"}
STILL = ("running", "killed", "unknown")  # no end time recorded
# What `runs show` lists as present, by key (path relative to the run dir).
ARTIFACTS = dict(
    model="model",
    adapter="adapter",
    report_html="report.html",
    report_md="report.md",
    best_checkpoint="checkpoints/best.weights.h5",
    resume_backup="backup",
    metrics="metrics.json",
    history="history.csv",
    errors="errors.jsonl",
    tensorboard_logs="logs",
)
# The settings `runs show` puts first (the whole config follows in --json).
_KEYS = {
    "model": ("preset", "sequence_length", "freeze"),
    "peft": ("method",),
    "data": ("train", "validation", "test"),
    "train": ("epochs", "batch_size", "learning_rate", "schedule", "seed", "monitor"),
    "runtime": ("strategy", "precision"),
}
KEY_SETTINGS = [f"{part}.{key}" for part, keys in _KEYS.items() for key in keys]


def is_run_dir(path: Path) -> bool:
    # `open_run_dir` writes config.yaml first, then training writes status.json.
    return (path / "config.yaml").is_file() or (path / "status.json").is_file()


def find_run_dirs(root: str | Path) -> list[Path]:
    """The run dirs under ``root``: ``root/NAME/TIMESTAMP``, newest first.

    ``root`` may also be one name's folder (``runs/NAME``) or a run dir itself.

    Raises:
        TfsftError: when ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise TfsftError(
            f"{root}: {what}; give the runs folder with --dir (train.output_dir of "
            "your configs, `runs` by default)"
        )
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    for child in _subdirs(root):
        if is_run_dir(child):
            found.append(child)  # root is one name's folder
        else:
            found.extend(d for d in _subdirs(child) if is_run_dir(d))
    return sorted(found, key=_age_key, reverse=True)


def resolve_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run dir from a path, or from a run name (its latest run under ``runs_dir``).

    Raises:
        TfsftError: when ``run`` is neither a run dir nor a name with runs.
    """
    path = Path(run)
    for candidate in (path, Path(runs_dir) / path):
        if candidate.is_dir():
            if is_run_dir(candidate):
                return candidate
            runs = [d for d in _subdirs(candidate) if is_run_dir(d)]
            if runs:
                return max(runs, key=_age_key)
    raise TfsftError(
        f"{run}: not a run dir (no config.yaml or status.json) and no runs named so "
        f"under {runs_dir}/; give runs/NAME/TIMESTAMP, or a name with --dir; "
        "`tfsft runs list` shows them"
    )


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """One run in a line: state, monitored metric, epochs, time (``runs list``)."""
    cfg, status = read_config(run_dir), read_status(run_dir)
    metrics = read_metrics(run_dir, status)
    train = section(cfg, "train")
    started = started_at(run_dir)
    history = read_history(run_dir)
    monitor = best_value(run_dir, cfg, metrics)
    return {
        "path": str(run_dir),
        "run": f"{run_dir.parent.name}/{run_dir.name}",
        "name": cfg.get("name", run_dir.parent.name),
        "task": cfg.get("task"),
        "status": run_state(status),
        "monitor": monitor["name"],
        "monitor_value": monitor["value"],
        "best_epoch": monitor["epoch"],
        "epochs_done": len(history),
        "epochs_total": train.get("epochs"),
        "seconds": elapsed_seconds(run_dir, metrics, status, started),
        "started": _iso(started),
    }


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """`summarize_run` of every run dir under ``root``, newest first."""
    return [summarize_run(d) for d in find_run_dirs(root)]


def describe_run(run_dir: str | Path) -> dict[str, Any]:
    """One run in full (``runs show``): its summary, where and how it ran, the key
    settings and whole config, all metrics, per-epoch history, files and error.

    Raises:
        TfsftError: when ``run_dir`` is not a run dir.
    """
    run_dir = _checked(run_dir)
    cfg, status = read_config(run_dir), read_status(run_dir)
    metrics, flat = read_metrics(run_dir, status), flatten(cfg)
    # A running or killed run's status time is its start, not an end.
    ended = status.get("time") if run_state(status) not in STILL else None
    files = {
        k: str(run_dir / p) for k, p in ARTIFACTS.items() if (run_dir / p).exists()
    }
    if not (run_dir / "model" / "task.json").is_file():
        files.pop("model", None)  # a half-written model is no model
    return {
        **summarize_run(run_dir),
        "recorded_state": status.get("state"),
        "pid": status.get("pid"),
        "error": status.get("error"),
        "finished": _iso(ended) if isinstance(ended, (int, float)) else None,
        "precision": status.get("precision"),
        "strategy": status.get("strategy"),
        # The completion status replaces the start one; metrics keep the count.
        "replicas": status.get("replicas") or metrics.get("replicas"),
        "settings": {k: flat[k] for k in KEY_SETTINGS if k in flat},
        "config": cfg,
        "metrics": metrics,
        "history": read_history(run_dir),
        "files": files,
        "plots": [str(p) for p in sorted(run_dir.glob("*.png"))],
    }


def compare_runs(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Runs side by side: ``{"runs", "metrics", "config_diff"}``.

    ``metrics[key]`` is ``{"values": one per run (None: not recorded), "better":
    "higher" | "lower" | None, "best": indices of the runs holding the best value}``
    (empty when the direction is unknown or all runs tie). ``config_diff`` holds
    only the dotted config keys whose values differ, one value per run.

    Raises:
        TfsftError: for fewer than two runs, or one that is not a run dir.
    """
    if len(run_dirs) < 2:
        raise TfsftError(
            f"runs compare: give two or more runs to compare (got {len(run_dirs)}); "
            "`tfsft runs show RUN` describes one"
        )
    dirs = [_checked(d) for d in run_dirs]
    all_metrics = [read_metrics(d, read_status(d)) for d in dirs]
    metrics = {}
    for key in _union(all_metrics):
        values = [m.get(key) for m in all_metrics]
        better = metric_direction(key)
        metrics[key] = {
            "values": values,
            "better": better,
            "best": _best(values, better),
        }
    configs = [flatten(read_config(d)) for d in dirs]
    diff = {}
    for key in _union(configs):
        values = [c.get(key) for c in configs]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            diff[key] = values
    return {
        "runs": [summarize_run(d) for d in dirs],
        "metrics": metrics,
        "config_diff": diff,
    }


def metric_direction(key: str) -> str | None:
    """ "higher", "lower" or None: which way ``key`` (e.g. test_f1_macro) improves."""
    parts = set(key.lower().split("_"))
    if parts & LOWER:
        return "lower"
    if parts & HIGHER:
        return "higher"
    return None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``{"train": {"epochs": 2}}`` -> train.epochs)."""
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _checked(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise TfsftError(
            f"{run_dir}: not a tfsft run dir (no config.yaml or status.json); "
            "`tfsft runs list` shows the runs"
        )
    return run_dir


def _best(values: list[Any], better: str | None) -> list[int]:
    numbers = {
        i: float(v)
        for i, v in enumerate(values)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    if better is None or len(set(numbers.values())) < 2:
        return []  # nothing to pick: no direction, one value, or a tie everywhere
    target = (max if better == "higher" else min)(numbers.values())
    return [i for i, v in numbers.items() if v == target]


def _union(dicts: list[dict[str, Any]]) -> list[str]:
    # Keys in first-seen order, so the first run's layout leads the table.
    return list(dict.fromkeys(k for d in dicts for k in d))


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def _age_key(run_dir: Path) -> tuple[float, int, str]:
    # Same-second runs are named STAMP, STAMP-2, STAMP-3: the suffix breaks the tie.
    suffix = run_dir.name[16:]
    return started_at(run_dir), int(suffix) if suffix.isdigit() else 0, str(run_dir)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:  # unreadable: nothing to list there
        return []
