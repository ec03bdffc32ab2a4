"""The `tfsft` command: parse -> load_config -> call one library function -> report.

Results go to stdout (the run dir, JSON); progress, tables and errors go to stderr, so
``RUN=$(tfsft train cfg.yaml)`` works in scripts. Errors a user can cause print one
clear line and exit 1 without a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

# TensorFlow is imported lazily, inside commands, after the global options have
# set up a quiet start-up (tfsft.startup).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import typer
from rich.markup import escape
from rich.table import Table

from tfsft.cli_common import ConfigArg, SetOpt, _handle_errors
from tfsft.cli_config import config_app
from tfsft.cli_generate import generate_command
from tfsft.cli_models import models_app
from tfsft.cli_options import HoistingGroup, global_options
from tfsft.cli_runs import runs_app
from tfsft.cli_summary import print_run_summary
from tfsft.config import load_config
from tfsft.console import err, show
from tfsft.errors import TfsftError

app = typer.Typer(
    help="Fine-tune pretrained language models with Keras 3 + TensorFlow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=HoistingGroup,
)
data_app = typer.Typer(help="Look at the data a config reads.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.callback()(global_options)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="tfsft")


@app.command()
@_handle_errors
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    worker_index: Annotated[
        int | None,
        typer.Option(
            help="Multi-worker: this process's index in runtime.workers (0 is the "
            "chief); sets TF_CONFIG.",
        ),
    ] = None,
) -> None:
    """Fine-tune as CONFIG says; prints the run dir. Re-run to resume."""
    cfg = load_config(config, set_ or [])
    if worker_index is not None:
        _set_tf_config(cfg.runtime, worker_index)
    from tfsft.training.trainer import train as run_training

    # Keras prints its progress bar on stdout; stdout is reserved for the result.
    with contextlib.redirect_stdout(sys.stderr):
        run = run_training(cfg)
    if not run.dir.is_dir():  # a non-chief worker: its temp run dir is gone
        err.print("worker finished; the chief (worker 0) wrote the run dir")
        return
    print_run_summary(run.dir, cfg.name, cfg.task, run.metrics)
    typer.echo(str(run.dir))


def _set_tf_config(runtime: Any, index: int) -> None:
    """TF_CONFIG for ``--worker-index``: from runtime.workers, or the existing one."""
    from tfsft.training.distribute import tf_config_for, with_worker_index

    if runtime.strategy not in ("auto", "multi_worker"):
        raise TfsftError(
            f"--worker-index: runtime.strategy is {runtime.strategy}; it applies to "
            "multi_worker (or auto)"
        )
    if runtime.workers:
        os.environ["TF_CONFIG"] = tf_config_for(runtime.workers, index)
    elif os.environ.get("TF_CONFIG"):
        os.environ["TF_CONFIG"] = with_worker_index(os.environ["TF_CONFIG"], index)
    else:
        raise TfsftError(
            "--worker-index: list the workers in runtime.workers: [host:port, ...] "
            "(chief first), or set TF_CONFIG"
        )


@app.command()
@_handle_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run dir written by `tfsft train`.")],
    data: Annotated[
        str | None, typer.Option(help="Labelled file with the run's columns.")
    ] = None,
    split: Annotated[
        str, typer.Option(help="train | validation | test")
    ] = "validation",
    output: Annotated[
        Path | None, typer.Option(help="Write metrics JSON here (not stdout).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output.")] = False,
) -> None:
    """Score a trained run; metrics JSON to stdout or --output."""
    _refuse_overwrite(output, force)
    from tfsft.evaluation.inference import evaluate as run_evaluation

    with contextlib.redirect_stdout(sys.stderr):
        metrics = run_evaluation(run, data=data, split=split)
    _print_metrics(metrics, f"{Path(data).name if data else split} metrics")
    _emit(json.dumps(metrics, indent=2), output)


@app.command()
@_handle_errors
def predict(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run dir written by `tfsft train`, or an export "
            "(saved_models/NAME or saved_models/NAME/VERSION)."
        ),
    ],
    text: Annotated[
        list[str] | None, typer.Option(help="A text to predict (repeatable).")
    ] = None,
    text_pair: Annotated[
        list[str] | None, typer.Option(help="Second text, for pair models.")
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option(help="CSV/TSV/JSONL/JSON file with the run's input columns."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="JSON-lines output file.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output.")] = False,
) -> None:
    """Predict for --text or an --input file, with a run or an export; JSON lines."""
    if bool(text) == bool(input):
        raise TfsftError("give either --text (with --text-pair for pairs) or --input")
    _refuse_overwrite(output, force)
    from tfsft.evaluation.inference import predict_lines

    texts, pairs = list(text or []), list(text_pair) if text_pair else None
    with contextlib.redirect_stdout(sys.stderr):
        lines = predict_lines(run, texts, pairs, input)
    _emit("\n".join(json.dumps(line, ensure_ascii=False) for line in lines), output)


@app.command()
@_handle_errors
def export(
    run: Annotated[
        Path | None, typer.Argument(help="Run dir written by `tfsft train`.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (a folder).")] = None,
    out: Annotated[Path, typer.Option(help="Model base dir.")] = Path("saved_models"),
    version: Annotated[
        int | None, typer.Option(help="Version number; default: the next one.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing version.")] = False,
    tokens_only: Annotated[
        bool, typer.Option(help="Core-ops-only SavedModel: token ids in, logits out.")
    ] = False,
    check: Annotated[
        Path | None, typer.Option(help="Describe an export instead of writing one.")
    ] = None,
    no_merge: Annotated[
        bool, typer.Option("--no-merge", help="LoRA: keep the factors apart.")
    ] = False,
) -> None:
    """Export RUN as saved_models/NAME/VERSION/ for TF Serving (or --check PATH)."""
    if check is not None:
        from tfsft.export.check import check_export

        report = check_export(check)
        _print_check(report)
        typer.echo(json.dumps(report, indent=2))
        return
    if run is None or not name:
        raise TfsftError("give RUN and --name NAME (or --check PATH)")
    from tfsft.export.saved_model import export_model

    with contextlib.redirect_stdout(sys.stderr):
        path = export_model(
            run, name, out, version, force, tokens_only, merge=not no_merge
        )
    typer.echo(str(path))


@app.command()
@_handle_errors
def serve(
    model_dir: Annotated[Path, typer.Argument(help="saved_models/NAME")],
    port: Annotated[int, typer.Option(help="REST port (0: any free port).")] = 8501,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: any free).")] = 8500,
    no_grpc: Annotated[bool, typer.Option(help="REST only.")] = False,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server.")
    ] = "127.0.0.1",
    max_batch_size: Annotated[int, typer.Option(help="Rows per merged batch.")] = 64,
    batch_timeout_ms: Annotated[
        float, typer.Option(help="How long a request waits for companions.")
    ] = 5.0,
    max_body_mb: Annotated[float, typer.Option(help="Request size limit.")] = 10.0,
    max_rows: Annotated[int, typer.Option(help="Rows per request limit.")] = 1024,
    poll_seconds: Annotated[
        float, typer.Option(help="How often to look for new versions.")
    ] = 2.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TFSFT_API_KEY",
            show_envvar=True,
            help="Require 'Authorization: Bearer KEY' on every endpoint (gRPC: "
            "the authorization metadata). The environment variable keeps the key "
            "out of the process list.",
        ),
    ] = None,
) -> None:
    """Serve an exported model with TF Serving's REST and gRPC APIs (and, for a
    causal LM, OpenAI's /v1/chat/completions)."""
    import threading

    from tfsft.export.serve import ServeOptions, Server

    options = ServeOptions(
        host,
        port,
        None if no_grpc else grpc_port,
        max_batch_size,
        batch_timeout_ms,
        max_body_mb,
        max_rows,
        poll_seconds,
        api_key or None,
    )
    server = Server(model_dir, options)
    server.start()
    if host not in ("127.0.0.1", "localhost", "::1"):
        unguarded = "" if api_key else " with no --api-key: anyone there can query it"
        err.print(
            f"[yellow]warning[/]: listening on {host}: reachable from the "
            f"network{unguarded}"
        )
    try:
        threading.Event().wait()
    finally:
        server.stop()


app.command("generate")(_handle_errors(generate_command))


@data_app.command("inspect")
@_handle_errors
def data_inspect(config: ConfigArg, set_: SetOpt = None) -> None:
    """Rows, labels, lengths and truncation of each split of CONFIG."""
    cfg = load_config(config, set_ or [])
    from tfsft.data.inspect import inspect_splits

    summary = inspect_splits(cfg)
    table = Table(title=f"{cfg.name}: data")
    keys = list(summary[0])
    for key in keys:
        table.add_column("tokens mean/p95/max" if key == "tokens" else key)
    for row in summary:
        table.add_row(*(str(row[k]) for k in keys))
    show(table)
    typer.echo(json.dumps(summary, indent=2))


def _print_check(report: dict[str, Any]) -> None:
    table = Table(title=report["path"])
    for column in ("signature", "inputs", "outputs", "non-core ops"):
        table.add_column(column)
    for key, sig in report["signatures"].items():
        table.add_row(
            key,
            ", ".join(sig["inputs"]),
            ", ".join(sig["outputs"]),
            ", ".join(sig["non_core_ops"]) or "none",
        )
    show(table)
    show(f"loading needs: {escape(report['requires'])}")


def _print_metrics(metrics: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    show(table)


def _refuse_overwrite(path: Path | None, force: bool) -> None:
    if path is not None and path.exists() and not force:
        raise TfsftError(f"{path}: already exists; pass --force to overwrite it")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(output)
    show(f"wrote {escape(str(output))}")
