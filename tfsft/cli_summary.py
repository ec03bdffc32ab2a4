"""The table `tfsft train` ends with: what was reached, what it cost, where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from tfsft import console

# metrics.json keys that describe the run, not the model's quality.
BOOKKEEPING = {
    "num_examples",
    "train_seconds",
    "train_examples_per_second",
    "train_tokens_per_second",
    "trainable_params",
    "total_params",
    "replicas",
    "adapter_bytes",
    "phase_seconds",
}
HEADLINE_METRICS = 5


def run_summary(run_dir: Path, name: str, task: str, metrics: dict[str, Any]) -> dict:
    """The summary of a finished run as plain data (the ``summary`` JSON event)."""
    best = _read_json(run_dir / "checkpoints" / "best.json")
    quality = {
        k: v
        for k, v in metrics.items()
        if k not in BOOKKEEPING and not k.startswith("test_")
    }
    tests = {k: v for k, v in metrics.items() if k.startswith("test_")}
    report = run_dir / "report.html"
    return {
        "name": name,
        "task": task,
        "best": best or None,
        "metrics": dict(list(quality.items())[:HEADLINE_METRICS]),
        "test_metrics": dict(list(tests.items())[:HEADLINE_METRICS]),
        "train_seconds": metrics.get("train_seconds"),
        "examples_per_second": metrics.get("train_examples_per_second"),
        "tokens_per_second": metrics.get("train_tokens_per_second"),
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"),
        "run_dir": str(run_dir),
        "report": str(report) if report.is_file() else None,
        "model": str(run_dir / "model"),
    }


def print_run_summary(
    run_dir: Path, name: str, task: str, metrics: dict[str, Any]
) -> None:
    """One table on stderr (or a ``summary`` event in json mode)."""
    summary = run_summary(run_dir, name, task, metrics)
    console.emit_event("summary", **summary)
    table = Table(title=f"{name}: done", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    if best := summary["best"]:
        table.add_row(
            "best", f"{best['monitor']} {best['value']:.4f} at epoch {best['epoch']}"
        )
    for label, values in (
        ("validation", summary["metrics"]),
        ("test", summary["test_metrics"]),
    ):
        if values:
            table.add_row(label, _join(values))
    if (seconds := summary["train_seconds"]) is not None:
        rate = summary["examples_per_second"] or 0
        tokens = summary["tokens_per_second"] or 0
        speed = f"{rate:,.1f} examples/s, {tokens:,.0f} tokens/s"
        table.add_row("time", f"{_duration(seconds)} ({speed})")
    trainable, total = summary["trainable_params"], summary["total_params"]
    if trainable is not None and total:
        share = 100 * trainable / total
        table.add_row(
            "trainable", f"{trainable:,} of {total:,} parameters ({share:.2f} %)"
        )
    table.add_row("run dir", summary["run_dir"])
    if summary["report"]:
        table.add_row("report", summary["report"])
    table.add_row("model", summary["model"])
    console.show(table)


def _join(values: dict[str, Any]) -> str:
    return "  ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in values.items()
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
