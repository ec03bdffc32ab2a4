"""`tfsft runs list|show|compare|report`: what training left in the run dirs.

Output follows the CLI's contract: tables for people on stderr, the result on
stdout. Without ``--json`` the result is the run dir path(s) the command resolved,
one per line (``RUN=$(tfsft runs show sst2)`` picks the latest run of a name); with
``--json`` it is one JSON document and no table is drawn. Nothing here imports
TensorFlow, so these commands answer at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from tfsft import console
from tfsft.cli_common import _handle_errors
from tfsft.run_index import compare_runs, describe_run, list_runs, resolve_run

runs_app = typer.Typer(
    help="List, show and compare training runs (tables on stderr; run dirs, or "
    "JSON with --json, on stdout).",
    no_args_is_help=True,
)
DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir", help="The runs folder (train.output_dir); where names are looked up."
    ),
]
STATE_STYLE = {
    "completed": "green",
    "running": "cyan",
    "interrupted": "yellow",
    "failed": "red",
    "killed": "red",
}
HISTORY_ROWS = 30  # `runs show` prints the last epochs; history.csv has them all


@runs_app.command("list")
@_handle_errors
def list_command(runs_dir: DirOpt = Path("runs")) -> None:
    """List the runs under --dir, newest first.

    --dir holds NAME/TIMESTAMP run dirs (train.output_dir), or is one NAME folder.
    A table goes to stderr (the run column, NAME/TIMESTAMP, is the start time);
    stdout gets the run dir paths, one per line, or with --json an array of runs.
    """
    runs = list_runs(runs_dir)
    if console.json_mode():
        _print_json(runs)
        return
    if not runs:
        console.show(f"no runs under {escape(str(runs_dir))}")
        return
    # The run column is NAME/TIMESTAMP, the start time; --json has it as "started".
    # One monitor shared by all runs heads its column, so the cells are numbers.
    monitors = {run["monitor"] for run in runs} - {None}
    shared = monitors.pop() if len(monitors) == 1 else None
    header = escape(shared or "best")
    table = _grid(f"runs under {escape(str(runs_dir))}", "run", "task", "status")
    for column in (header, "epochs"):
        table.add_column(column, overflow="fold")
    table.add_column("time", justify="right")
    for run in runs:
        table.add_row(
            escape(run["run"]),
            escape(str(run["task"] or "-")),
            _state(run["status"]),
            _value(run["monitor_value"]) if shared else _best(run),
            _epochs(run),
            _duration(run["seconds"]),
        )
    console.show(table)
    for run in runs:
        typer.echo(run["path"])


@runs_app.command("show")
@_handle_errors
def show_command(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="A run dir, or a run name: then its latest run under --dir.",
        ),
    ],
    runs_dir: DirOpt = Path("runs"),
) -> None:
    """Show one run in full: status, settings, best epoch, metrics, history, files.

    RUN is a run dir, or a run name: then its latest run under --dir. A killed run
    ("running" in status.json, its process gone) shows as killed. Tables go to
    stderr; stdout gets the run dir, or with --json one object holding everything,
    the resolved config included.
    """
    info = describe_run(resolve_run(run, runs_dir))
    if console.json_mode():
        _print_json(info)
        return
    console.show(_overview(info))
    if info["error"]:
        console.show(f"[bold red]error:[/] {escape(str(info['error']))}")
    if info["status"] == "killed":
        console.show(
            f"[yellow]status.json says running, but process {info['pid']} is gone[/] "
            "(killed or crashed); re-run `tfsft train` with its config to resume it"
        )
    console.show(_pairs("settings", info["settings"], _setting))
    if info["metrics"]:
        console.show(_pairs("metrics", info["metrics"], _value))
    if info["history"]:
        console.show(_history(info["history"], info["best_epoch"]))
    files = {**info["files"], "plots": ", ".join(info["plots"])}
    files = {k: v for k, v in files.items() if v}
    console.show(_pairs("files", files, str) if files else "files: none yet")
    typer.echo(info["path"])


@runs_app.command("compare")
@_handle_errors
def compare_command(
    runs: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN",
            help="Two or more run dirs or run names (latest under --dir).",
        ),
    ],
    runs_dir: DirOpt = Path("runs"),
) -> None:
    """Compare runs: metrics side by side, then the config keys that differ.

    Each RUN is a run dir or a run name (its latest run under --dir). * marks the
    best value of a row where the metric's direction is known (loss lower;
    accuracy, f1, mcc, precision, recall, ... higher). Tables go to stderr; stdout
    gets the run dirs, or with --json {"runs", "metrics", "config_diff"}.
    """
    result = compare_runs([resolve_run(r, runs_dir) for r in runs])
    if console.json_mode():
        _print_json(result)
        return
    labels = [escape(r["run"]) for r in result["runs"]]
    table = _grid("metrics", "metric", "", *labels)
    table.caption = "* best of the runs; ↑ higher is better, ↓ lower"
    arrows = {"higher": "↑", "lower": "↓", None: ""}
    for key, row in result["metrics"].items():
        decimals = _decimals(row["values"])
        cells = [
            f"[bold green]{_value(v, decimals)} *[/]"
            if i in row["best"]
            else _value(v, decimals)
            for i, v in enumerate(row["values"])
        ]
        table.add_row(escape(key), arrows[row["better"]], *cells)
    console.show(table)
    if result["config_diff"]:
        diff = _grid("config differences", "key", *labels)
        for key, values in result["config_diff"].items():
            diff.add_row(escape(key), *(escape(_setting(v)) for v in values))
        console.show(diff)
    else:
        console.show("configs: identical")
    for run in result["runs"]:
        typer.echo(run["path"])


def _overview(info: dict[str, Any]) -> Table:
    table = Table(title=escape(info["run"]), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    placement = [info.get(k) for k in ("precision", "strategy", "replicas")]
    rows = {
        "path": escape(info["path"]),
        "status": _state(info["status"]),
        "task": escape(str(info["task"] or "-")),
        "started": info["started"].replace("T", " "),
        "finished": (info["finished"] or "-").replace("T", " "),
        "time": _duration(info["seconds"]),
        "epochs": _epochs(info),
        "best": _best(info)
        + (f" (epoch {info['best_epoch']})" if info["best_epoch"] else ""),
        "precision, strategy, replicas": ", ".join(str(v or "-") for v in placement),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def _pairs(title: str, values: dict[str, Any], shown: Callable[[Any], str]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        table.add_row(escape(key), escape(shown(value)))
    return table


def _history(rows: list[dict[str, Any]], best_epoch: Any) -> Table:
    shown = rows[-HISTORY_ROWS:]
    skipped = len(rows) - len(shown)
    note = f"{skipped} earlier epochs in history.csv; " if skipped else ""
    table = Table(title="history", caption=f"{note}* the best epoch")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    for key in keys:
        table.add_column(key, justify="right")
    for row in shown:
        mark = " *" if row["epoch"] == best_epoch else ""
        cells = [str(row["epoch"]) + mark, *(_value(row.get(k)) for k in keys[1:])]
        table.add_row(*cells, style="bold" if mark else None)
    return table


def _state(state: str) -> str:
    style = STATE_STYLE.get(state, "dim")
    return f"[{style}]{state}[/]"


def _best(run: dict[str, Any]) -> str:
    if run["monitor"] is None:
        return "-"
    return f"{escape(run['monitor'])}={_value(run['monitor_value'])}"


def _epochs(run: dict[str, Any]) -> str:
    total = run["epochs_total"]
    return f"{run['epochs_done']}/{total}" if total else str(run["epochs_done"])


def _value(value: Any, decimals: int = 4) -> str:
    """A metric for a table: ``decimals`` places below 100, 1 above (throughputs)."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{decimals}f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _decimals(values: list[Any]) -> int:
    """The fewest places (4 to 8) at which different values read differently, so
    that a row never marks one of several identical-looking numbers as best."""
    distinct = {v for v in values if isinstance(v, float) and math.isfinite(v)}
    for places in range(4, 8):
        if len({_value(v, places) for v in distinct}) == len(distinct):
            return places
    return 8


def _grid(title: str, *columns: str) -> Table:
    # Compact (no side borders, shared padding) and folding rather than cutting:
    # run labels differ only in their last characters, the timestamp.
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for n, column in enumerate(columns):
        # The first column (names, keys) keeps whole: the others give way first.
        table.add_column(column, overflow="fold", no_wrap=n == 0)
    return table


def _setting(value: Any) -> str:
    # Config values as YAML spells them (null, true), lists and dicts as JSON.
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value)
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(_finite(data), indent=2, ensure_ascii=False, default=str))


def _finite(data: Any) -> Any:
    # A diverged run's NaN loss: JSON has no NaN, and jq and most parsers reject
    # Python's bare NaN token, so it is written as null.
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


@runs_app.command("report")
@_handle_errors
def report_command(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="A run dir, or a run name: then its latest run under --dir.",
        ),
    ],
    runs_dir: DirOpt = Path("runs"),
) -> None:
    """Write report.html and report.md again from a run dir's files (an older
    run's, say); prints the path of report.html."""
    from tfsft.evaluation.run_report import write_run_report

    html, markdown = write_run_report(resolve_run(run, runs_dir))
    console.show(f"wrote {escape(str(html))} and {escape(markdown.name)}")
    typer.echo(str(html))
