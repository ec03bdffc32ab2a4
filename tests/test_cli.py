import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write
from typer.testing import CliRunner

from tfsft.cli import app

runner = CliRunner()


def _config(tmp_path, tiny_cfg, easy_data):
    train, dev = easy_data
    tiny_cfg["data"] |= {
        "train": str(train),
        "validation": str(dev),
        "max_train_examples": None,
        "length_buckets": None,  # see the easy_data fixture
    }
    tiny_cfg["train"] |= {"epochs": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0}
    return write(tmp_path / "tiny.yaml", yaml.safe_dump(tiny_cfg))


def test_cli_end_to_end_with_tiny(tmp_path, tiny_cfg, easy_data):
    config = _config(tmp_path, tiny_cfg, easy_data)
    result = runner.invoke(app, ["train", str(config), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    assert Path(run_dir).parent == tmp_path / "runs" / "tiny-test"
    saved = yaml.safe_load(Path(run_dir, "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3  # the override is what was recorded

    result = runner.invoke(app, ["evaluate", run_dir])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] >= 0.9
    assert (
        json.loads(Path(run_dir, "eval/validation/metrics.json").read_text()) == metrics
    )

    result = runner.invoke(
        app,
        [
            "predict",
            run_dir,
            "--text",
            "great wonderful film",
            "--text",
            "awful boring plot",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert [x["label"] for x in lines] == ["pos", "neg"]
    assert lines[0]["text"] == "great wonderful film"
    assert sum(lines[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)

    inputs = write(
        tmp_path / "in.jsonl",
        '{"sentence": "love the best plot"}\n{"sentence": "hate it"}\n',
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["predict", run_dir, "--input", str(inputs), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and rows[0]["label"] == "pos"
    # An existing output is never overwritten without --force.
    result = runner.invoke(
        app, ["predict", run_dir, "--input", str(inputs), "--output", str(out)]
    )
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    result = runner.invoke(
        app,
        ["predict", run_dir, "--input", str(inputs), "--output", str(out), "--force"],
    )
    assert result.exit_code == 0

    other = tmp_path / "other.tsv"
    other.write_text("sentence\tlabel\ngood great\tpos\nworst\tneg\n")
    result = runner.invoke(
        app,
        [
            "evaluate",
            run_dir,
            "--data",
            str(other),
            "--output",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["num_examples"] == 2


def test_config_commands(tmp_path):
    result = runner.invoke(
        app, ["config", "validate", str(REPO / "configs/quickstart.yaml")]
    )
    assert result.exit_code == 0 and "ok" in result.output
    result = runner.invoke(
        app,
        [
            "config",
            "show",
            str(REPO / "configs/quickstart.yaml"),
            "--set",
            "train.epochs=9",
        ],
    )
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["epochs"] == 9 and shown["runtime"]["precision"] == "auto"
    result = runner.invoke(app, ["config", "schema"])
    assert json.loads(result.stdout)["title"] == "ExperimentConfig"


def test_data_inspect(tmp_path, tiny_cfg, easy_data):
    config = _config(tmp_path, tiny_cfg, easy_data)
    result = runner.invoke(app, ["data", "inspect", str(config)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("[") :])
    assert [(s["split"], s["rows"]) for s in summary] == [
        ("train", 96),
        ("validation", 40),
    ]
    assert summary[0]["labels"] == "neg: 48, pos: 48"
    assert summary[0]["truncated"] == "0.0%"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.yaml"], "missing.yaml: config file not found"),
        (["evaluate", "."], "not a tfsft run dir"),
        (["predict", "."], "give either --text"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_console_script_exit_code_and_clean_error(tmp_path):
    bad = write(tmp_path / "bad.yaml", "name: x\ndata:\n  train: nope.csv\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tfsft", "train", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "nope.csv: data file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_export_and_check_from_the_cli(tmp_path, tiny_cfg, easy_data):
    config = _config(tmp_path, tiny_cfg, easy_data)
    result = runner.invoke(app, ["train", str(config), "--set", "train.epochs=1"])
    run_dir = result.stdout.strip().splitlines()[-1]
    out = tmp_path / "models"
    result = runner.invoke(
        app, ["export", run_dir, "--name", "easy", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "easy" / "1")
    result = runner.invoke(
        app, ["export", run_dir, "--name", "easy", "--out", str(out), "--version", "1"]
    )
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    result = runner.invoke(app, ["export", "--check", str(out / "easy" / "1")])
    assert result.exit_code == 0
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["signatures"]["serve_tokens"]["non_core_ops"] == []
    result = runner.invoke(app, ["export", run_dir])
    assert result.exit_code == 1 and "--name" in result.output
