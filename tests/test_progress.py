"""Quiet start-up, progress in every output mode, and the end-of-run summary."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import write
from typer.testing import CliRunner

from tfsft import console
from tfsft.cli import app
from tfsft.cli_options import hoist_global_flags
from tfsft.progress import stage
from tfsft.startup import CPP_LOG_LINE

runner = CliRunner()


def _env_without_log_level() -> dict[str, str]:
    # The suite sets TF_CPP_MIN_LOG_LEVEL; a user who set it chose what to see.
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def test_quiet_startup_hides_the_lines_tensorflow_prints_while_loading():
    code = "import tensorflow as tf; tf.config.list_physical_devices()"
    quiet = "from tfsft.startup import quiet_startup; quiet_startup(); " + code
    env = _env_without_log_level()
    plain = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    hushed = subprocess.run(
        [sys.executable, "-c", quiet], capture_output=True, text=True, env=env
    )
    assert plain.returncode == hushed.returncode == 0, hushed.stderr
    assert not [x for x in hushed.stderr.splitlines() if CPP_LOG_LINE.search(x)]
    if not any(CPP_LOG_LINE.search(x) for x in plain.stderr.splitlines()):
        pytest.skip("this TensorFlow build prints nothing while loading")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "c.yaml", "--json"], ["--json", "train", "c.yaml"]),
        (["runs", "list", "--quiet"], ["--quiet", "runs", "list"]),
        (["predict", "r", "--text", "--json"], ["predict", "r", "--text", "--json"]),
        (["--verbose", "train", "c.yaml"], ["--verbose", "train", "c.yaml"]),
    ],
)
def test_global_flags_may_go_anywhere(argv, expected):
    assert hoist_global_flags(argv) == expected


def test_stage_lines_events_and_silence(capsys, monkeypatch):
    try:
        console.set_mode("auto")  # stderr is not a terminal here: plain lines
        monkeypatch.setattr("tfsft.progress.PLAIN_EVERY_SECONDS", 0.0)
        with stage("tokenizing train", 4) as s:
            s.advance(2, loss=0.5)
            s.advance(2)
        lines = capsys.readouterr().err.splitlines()
        assert lines[0].startswith("tokenizing train: 2/4 rows in")
        assert "loss 0.5" in lines[0] and "ETA" in lines[0]
        assert lines[-1].startswith("tokenizing train: 4 rows in")

        console.set_mode("json")
        monkeypatch.setattr("tfsft.progress.JSON_EVERY_SECONDS", 0.0)
        with stage("generating", 2, "prompts") as s:
            s.advance(1)
        events = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
        assert [e["event"] for e in events] == ["stage_begin", "progress", "stage_end"]
        assert events[1]["done"] == 1 and events[1]["total"] == 2
        assert events[-1]["ok"] is True and events[-1]["unit"] == "prompts"

        console.set_mode("quiet")
        with stage("exporting", 3, "steps") as s:
            s.advance(3)
        assert capsys.readouterr().err == ""
    finally:
        console.set_mode("auto")


def test_train_json_events_then_quiet_evaluate(tmp_path, tiny_cfg, easy_data):
    train, dev = easy_data
    tiny_cfg["data"] |= {"train": str(train), "validation": str(dev)}
    tiny_cfg["data"]["length_buckets"] = None
    tiny_cfg["train"] |= {"epochs": 2}
    config = write(tmp_path / "tiny.yaml", yaml.safe_dump(tiny_cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "tfsft", "train", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env_without_log_level(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # Every stderr line is an event: no C++ log line, no stray print.
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    begun = [e["stage"] for e in events if e["event"] == "stage_begin"]
    assert begun[:2] == ["reading data", "tokenizing train"]
    assert "training" in begun and "evaluating validation" in begun
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert "val_accuracy" in epochs[-1]["logs"]
    summary = events[kinds.index("summary")]
    run_dir = proc.stdout.strip()
    assert summary["run_dir"] == run_dir
    assert summary["best"]["monitor"] == "val_accuracy"
    assert summary["best"]["epoch"] in (1, 2)
    assert summary["trainable_params"] == summary["total_params"] > 0

    result = runner.invoke(app, ["evaluate", run_dir, "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress, no table
    assert json.loads(result.stdout)["num_examples"] > 0
