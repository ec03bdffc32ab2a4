"""`tfsft runs list|show|compare`: one real tiny run, the variations written by hand."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config
from typer.testing import CliRunner

import tfsft
from tfsft import console
from tfsft.cli import app
from tfsft.config import config_to_yaml, validate_config
from tfsft.run_files import read_history
from tfsft.run_index import flatten, metric_direction

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # Tables on an 80-column pipe fold long cells; the assertions read whole rows.
    monkeypatch.setattr(console.err, "_width", 240)
    yield
    console.set_mode("auto")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "runs"
    raw = tiny_config("runs-real", root, train={"epochs": 2})
    raw["data"]["max_train_examples"] = 32
    return tfsft.train(validate_config(raw), verbose=0).dir


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


def fake_run(
    root: Path,
    name: str,
    stamp: str,
    state: str = "completed",
    pid: int | None = None,
    metrics: dict | None = None,
    best: dict | None = None,
    epochs_done: int = 0,
    error: str | None = None,
    **sections: dict,
) -> Path:
    """A run dir as training leaves it, without training."""
    run_dir = root / name / stamp
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = validate_config(tiny_config(name, root, **sections))
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    status = {"state": state, "pid": pid or 1, "time": _stamp_time(stamp) + 90}
    if error:
        status["error"] = error
    (run_dir / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if best is not None:
        (run_dir / "checkpoints" / "best.json").write_text(json.dumps(best))
    rows = [f"{e},0.5,{1 - e / 10}" for e in range(epochs_done)]
    (run_dir / "history.csv").write_text("\n".join(["epoch,accuracy,loss", *rows]))
    return run_dir


def _stamp_time(stamp: str) -> float:
    return time.mktime(time.strptime(stamp[:15], "%Y%m%d-%H%M%S"))


def invoke(*args: str, json_output: bool = False):
    result = runner.invoke(app, [*(["--json"] if json_output else []), *args])
    return result


def row(text: str, label: str) -> str:
    """The one table row whose first cell is ``label``, box lines dropped."""
    rows = [" ".join(line.translate(BOX).split()) for line in text.splitlines()]
    (found,) = [r for r in rows if f"{r} ".startswith(f"{label} ")]
    return found


BOX = str.maketrans("│┃", "  ")


@pytest.fixture
def runs_root(tmp_path, real_run, dead_pid) -> Path:
    """Six runs: the real one (newest) and five by hand, one per state."""
    root = tmp_path / "runs"
    shutil.copytree(real_run, root / "runs-real" / real_run.name)
    best = {"monitor": "val_accuracy", "value": 0.8, "epoch": 2}
    fake_run(
        root,
        "alpha",
        "20240101-090000",
        metrics={"accuracy": 0.8, "loss": 0.4, "train_seconds": 125.0},
        best=best,
        epochs_done=3,
        train={"epochs": 3},
    )
    fake_run(root, "alpha", "20240102-090000", "failed", error="ValueError: boom")
    killed = fake_run(
        root, "beta", "20240103-090000", "running", pid=dead_pid, epochs_done=1
    )
    # Its last epoch log, 5 minutes in, is the last sign of life.
    last = _stamp_time(killed.name) + 300
    os.utime(killed / "history.csv", (last, last))
    # Same second, second run: the -2 suffix is the newer one.
    fake_run(root, "beta", "20240103-090000-2", "running", pid=os.getppid())
    fake_run(root, "gamma", "20240104-090000", "interrupted", epochs_done=2)
    return root


def test_list_newest_first_with_states_metric_and_epochs(runs_root, real_run):
    result = invoke("runs", "list", "--dir", str(runs_root), json_output=True)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert [r["run"] for r in runs] == [
        f"runs-real/{real_run.name}",
        "gamma/20240104-090000",
        "beta/20240103-090000-2",
        "beta/20240103-090000",
        "alpha/20240102-090000",
        "alpha/20240101-090000",
    ]
    assert [r["status"] for r in runs] == [
        "completed",
        "interrupted",
        "running",  # its pid is alive
        "killed",  # "running" on disk, its process gone
        "failed",
        "completed",
    ]
    alpha = runs[-1]
    assert (alpha["monitor"], alpha["monitor_value"], alpha["best_epoch"]) == (
        "val_accuracy",
        0.8,
        2,
    )
    assert (alpha["epochs_done"], alpha["epochs_total"], alpha["seconds"]) == (
        3,
        3,
        125,
    )
    assert runs[3]["seconds"] == 300  # killed: start to its last epoch log
    assert runs[4]["seconds"] == 90  # failed: start to its status time
    assert runs[4]["monitor"] is None  # failed before its first epoch
    best = json.loads((real_run / "checkpoints" / "best.json").read_text())
    assert runs[0]["monitor_value"] == best["value"]
    assert (runs[0]["epochs_done"], runs[0]["epochs_total"]) == (2, 2)

    result = invoke("runs", "list", "--dir", str(runs_root))
    assert result.exit_code == 0, result.output
    # stdout: the run dirs, newest first, for scripts; the table is on stderr.
    assert result.stdout.splitlines() == [r["path"] for r in runs]
    table = result.stderr
    assert "val_accuracy" in table.splitlines()[1]  # the shared monitor heads a column
    alpha_row = row(table, "alpha/20240101-090000").split()
    assert alpha_row[1:] == ["classification", "completed", "0.8000", "3/3", "2m05s"]
    assert row(table, "beta/20240103-090000").split()[2] == "killed"
    assert row(table, "alpha/20240102-090000").split()[2:4] == ["failed", "-"]


def test_list_one_name_folder_a_run_dir_empty_and_missing(runs_root, tmp_path):
    result = invoke("runs", "list", "--dir", str(runs_root / "alpha"))
    assert result.exit_code == 0, result.output
    assert [Path(p).name for p in result.stdout.split()] == [
        "20240102-090000",
        "20240101-090000",
    ]
    one = runs_root / "gamma" / "20240104-090000"
    assert invoke("runs", "list", "--dir", str(one)).stdout.split() == [str(one)]

    (tmp_path / "empty").mkdir()
    result = invoke("runs", "list", "--dir", str(tmp_path / "empty"))
    assert (result.exit_code, result.stdout) == (0, "")
    assert "no runs under" in result.stderr
    result = invoke("runs", "list", "--dir", str(tmp_path / "empty"), json_output=True)
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])

    result = invoke("runs", "list", "--dir", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "nope: does not exist" in result.stderr and "--dir" in result.stderr
    assert "Traceback" not in result.output


def test_show_real_run_in_full(real_run):
    # A name finds its latest run under --dir.
    args = ("runs", "show", "runs-real", "--dir", str(real_run.parent.parent))
    result = invoke(*args, json_output=True)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["path"] == str(real_run)
    assert (info["status"], info["task"]) == ("completed", "classification")
    assert info["settings"]["model.preset"] == "tiny"
    assert info["config"] == yaml.safe_load((real_run / "config.yaml").read_text())
    assert info["metrics"] == json.loads((real_run / "metrics.json").read_text())
    best = json.loads((real_run / "checkpoints" / "best.json").read_text())
    assert (info["monitor"], info["best_epoch"]) == (best["monitor"], best["epoch"])
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert set(info["history"][0]) == {
        "epoch",
        "accuracy",
        "loss",
        "val_accuracy",
        "val_loss",
    }
    assert info["files"]["model"] == str(real_run / "model")
    assert "adapter" not in info["files"] and info["error"] is None

    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{real_run}\n"
    text = result.stderr
    assert row(text, "status").split()[-1] == "completed"
    assert f"={best['value']:.4f} (epoch {best['epoch']})" in row(text, "best")
    assert row(text, "model.preset").split()[-1] == "tiny"
    assert row(text, "accuracy").split()[-1] == f"{info['metrics']['accuracy']:.4f}"
    assert row(text, f"{best['epoch']} *")  # the best epoch marked in the history
    assert row(text, "model").split()[-1] == str(real_run / "model")


def test_show_failed_and_killed_runs(runs_root):
    # "alpha" resolves to its newest run, the failed one.
    result = invoke("runs", "show", "alpha", "--dir", str(runs_root))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("alpha/20240102-090000")
    assert row(result.stderr, "status").split()[-1] == "failed"
    assert "error: ValueError: boom" in result.stderr

    killed = runs_root / "beta" / "20240103-090000"
    result = invoke("runs", "show", str(killed))
    assert result.exit_code == 0, result.output
    assert row(result.stderr, "status").split()[-1] == "killed"
    assert "is gone" in result.stderr and "resume" in result.stderr
    info = json.loads(invoke("runs", "show", str(killed), json_output=True).stdout)
    assert (info["status"], info["recorded_state"]) == ("killed", "running")


def test_show_not_a_run(tmp_path):
    result = invoke("runs", "show", str(tmp_path), "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "not a run dir" in result.stderr and "tfsft runs list" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_compare_marks_best_values_and_shows_only_differing_config(tmp_path):
    root = tmp_path / "runs"
    a = fake_run(
        root,
        "cmp",
        "20240101-090000",
        metrics={"accuracy": 0.9, "loss": 0.3, "f1_macro": 0.5, "total_params": 100}
        | {"mcc": 0.123451},
        train={"learning_rate": 1e-3},
    )
    b = fake_run(
        root,
        "cmp",
        "20240102-090000",
        metrics={"accuracy": 0.8, "loss": 0.2, "f1_macro": 0.5, "total_params": 50}
        | {"test_accuracy": 0.7, "mcc": 0.123459},
        train={"learning_rate": 5e-4},
        model={"dropout": 0.2},
    )
    result = invoke("runs", "compare", str(a), str(b), json_output=True)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["path"] for r in report["runs"]] == [str(a), str(b)]
    metrics = report["metrics"]
    assert metrics["accuracy"] == {
        "values": [0.9, 0.8],
        "better": "higher",
        "best": [0],
    }
    assert metrics["loss"] == {"values": [0.3, 0.2], "better": "lower", "best": [1]}
    assert metrics["f1_macro"]["best"] == []  # a tie marks nobody
    assert metrics["total_params"] == {"values": [100, 50], "better": None, "best": []}
    assert metrics["test_accuracy"]["values"] == [None, 0.7]
    assert report["config_diff"] == {
        "model.dropout": [0.1, 0.2],
        "train.learning_rate": [1e-3, 5e-4],
    }

    # By name: "cmp" is its latest run, b.
    result = invoke("runs", "compare", str(a), "cmp", "--dir", str(root))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(a), str(b)]
    text = result.stderr
    assert row(text, "accuracy").split()[1:] == ["↑", "0.9000", "*", "0.8000"]
    assert row(text, "loss").split()[1:] == ["↓", "0.3000", "0.2000", "*"]
    assert "*" not in row(text, "total_params") + row(text, "f1_macro")
    # Values equal to 4 places get the places that tell them apart.
    assert row(text, "mcc").split()[1:] == ["↑", "0.12345", "0.12346", "*"]
    assert row(text, "train.learning_rate").split()[1:] == ["0.001", "0.0005"]
    assert row(text, "model.dropout").split()[1:] == ["0.1", "0.2"]
    assert "train.epochs" not in text and "data.train" not in text


def test_compare_identical_configs_and_too_few_runs(real_run, tmp_path):
    copy = tmp_path / "runs-real" / "copy"
    shutil.copytree(real_run, copy)
    result = invoke("runs", "compare", str(real_run), str(copy), json_output=True)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config_diff"] == {}
    assert all(m["best"] == [] for m in report["metrics"].values())  # all tie
    text = invoke("runs", "compare", str(real_run), str(copy)).stderr
    assert "configs: identical" in text

    result = invoke("runs", "compare", str(real_run))
    assert result.exit_code == 1
    assert "two or more runs" in result.stderr
    result = invoke("runs", "compare", str(real_run), str(tmp_path / "nope"))
    assert result.exit_code == 1 and "not a run dir" in result.stderr


def test_history_keeps_redone_epochs_once_and_json_has_no_nan(tmp_path):
    run_dir = fake_run(tmp_path, "h", "20240101-090000", epochs_done=0)
    # A resumed run logs epoch 2 twice (interrupted, then redone); NA: not logged.
    lines = ["epoch,loss,val_loss", "0,0.9,0.8", "1,0.7,NA", "1,0.6,0.5", "2,nan,0.4"]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")
    history = read_history(run_dir)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[1] == {"epoch": 2, "loss": 0.6, "val_loss": 0.5}
    assert math.isnan(history[2]["loss"])
    result = invoke("runs", "show", str(run_dir), json_output=True)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["history"][2]["loss"] is None


@pytest.mark.parametrize(
    ("key", "direction"),
    [
        ("accuracy", "higher"),
        ("test_f1_macro", "higher"),
        ("entity_precision", "higher"),
        ("val_loss", "lower"),
        ("perplexity", "lower"),
        ("mae", "lower"),
        ("train_seconds", None),
        ("trainable_params", None),
    ],
)
def test_metric_direction(key, direction):
    assert metric_direction(key) == direction


def test_flatten_dotted_keys():
    nested = {"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "f": None}
    assert flatten(nested) == {"a.b": 1, "a.c.d": [1, 2], "a.e": {}, "f": None}


def test_runs_commands_do_not_import_tensorflow(runs_root):
    a, b = runs_root / "alpha" / "20240101-090000", runs_root / "gamma"
    script = f"""
import sys
from tfsft.cli import main
for args in (["list", "--dir", {str(runs_root)!r}], ["show", {str(a)!r}],
             ["compare", {str(a)!r}, {str(b)!r}]):
    sys.argv = ["tfsft", "runs", *args]
    try:
        main()
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
print("tensorflow" in sys.modules, "keras" in sys.modules, file=sys.stderr)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "False False"


def test_report_rewrites_a_runs_report(real_run):
    html = real_run / "report.html"
    html.unlink()
    result = invoke("runs", "report", str(real_run))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(html)
    assert "<title>" in html.read_text() and (real_run / "report.md").is_file()
    result = invoke("runs", "report", str(real_run.parent / "nope"))
    assert result.exit_code == 1 and "nope" in result.output
