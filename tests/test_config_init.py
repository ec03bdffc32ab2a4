"""The config's user-facing side: field descriptions in the JSON Schema, the
editor header of the schema, and `tfsft config init` starter configs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from typer.testing import CliRunner

from tfsft import config_init
from tfsft.cli import app
from tfsft.config import config_schema, load_config
from tfsft.config_init import schema_reference, starter_config
from tfsft.errors import TfsftError
from tfsft.tasks.registry import TASKS

runner = CliRunner()
TFSFT = Path(sys.executable).parent / "tfsft"


def undocumented(schema: dict[str, Any]) -> list[str]:
    """Every model without a docstring and property without a description."""
    models = {"(root)": schema, **schema.get("$defs", {})}
    missing = [
        f"{name} (model)" for name, m in models.items() if not m.get("description")
    ]
    for name, model in models.items():
        for key, prop in model.get("properties", {}).items():
            if not str(prop.get("description", "")).strip():
                missing.append(f"{name}.{key}")
    return missing


def test_every_config_field_and_model_has_a_description():
    assert undocumented(json.loads(config_schema())) == []


def test_undocumented_finds_a_missing_description():
    schema = {
        "description": "root",
        "properties": {"a": {"description": "x"}},
        "$defs": {"Sub": {"properties": {"b": {"type": "int"}}}},
    }
    assert undocumented(schema) == ["Sub (model)", "Sub.b"]


def _keywords(node: Any, names: bool = False) -> set[str]:
    """The JSON Schema keywords used anywhere (``names``: the keys of ``node`` are
    property or model names, not keywords)."""
    if isinstance(node, list):
        return set().union(*(_keywords(item) for item in node))
    if not isinstance(node, dict):
        return set()
    found = set() if names else set(node)
    if not names and "$ref" in node and len(node) > 1:
        found.add("$ref with siblings")
    for key, value in node.items():
        found |= _keywords(value, not names and key in ("properties", "$defs"))
    return found


def test_schema_header_suits_yaml_language_server():
    schema = json.loads(config_schema())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["title"] == "ExperimentConfig"
    assert schema["additionalProperties"] is False
    # Draft-07 is what yaml-language-server validates: nothing newer may appear,
    # and a $ref's siblings (descriptions shown on hover) would be ignored.
    newer = {"prefixItems", "unevaluatedProperties", "dependentRequired", "$anchor"}
    found = _keywords(schema)
    assert not found & (newer | {"$ref with siblings"})
    assert schema["properties"]["model"]["allOf"] == [{"$ref": "#/$defs/ModelConfig"}]
    assert "backbone" in schema["properties"]["model"]["description"]


@pytest.mark.parametrize("task", list(TASKS))
def test_starter_config_validates_and_reads_the_demo_data(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(REPO)
    text = starter_config(task)
    path = tmp_path / "starter.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.task == task
    assert cfg.model.preset == ("smollm2-135m" if task == "causal_lm" else "minilm")
    assert text.splitlines()[0].startswith("# yaml-language-server: $schema=")
    # Comments are the point of a starter: most keys carry one.
    keys = [
        line for line in text.splitlines() if line.startswith("  ") and ": " in line
    ]
    assert sum("#" in line for line in keys) >= len(keys) / 2
    if task == "token_classification":
        assert cfg.data.format == "conll"  # no demo set: a placeholder path
        return
    train = REPO / cfg.data.train
    assert train.is_file() and train.parent == REPO / "tfsft" / "demo_data"
    if task == "causal_lm":
        record = json.loads(train.read_text().splitlines()[0])
        assert {"instruction", "output"} <= set(record)
        return
    assert (REPO / cfg.data.validation).is_file()
    if train.suffix == ".jsonl":
        columns = set(json.loads(train.read_text().splitlines()[0]))
    else:
        delimiter = "\t" if train.suffix == ".tsv" else ","
        columns = set(next(csv.reader(train.open(), delimiter=delimiter)))
    assert {cfg.data.text_column, cfg.data.label_column} <= columns


def test_starter_demo_paths_are_absolute_outside_the_package_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    train = yaml.safe_load(starter_config("regression"))["data"]["train"]
    assert Path(train).is_absolute() and Path(train).is_file()


def test_preset_override_is_quoted_when_yaml_needs_it(tmp_path: Path):
    odd = "./my models/run: 2 #best"
    cfg = yaml.safe_load(starter_config("classification", preset=odd))
    assert cfg["model"]["preset"] == odd
    causal = yaml.safe_load(starter_config("causal_lm", preset="tiny-gpt2"))
    assert causal["model"]["preset"] == "tiny-gpt2"


def test_unknown_task_names_the_tasks():
    with pytest.raises(TfsftError, match="unknown task; choose one of classification"):
        starter_config("ner")
    result = runner.invoke(app, ["config", "init", "--task", "ner"])
    assert result.exit_code == 1
    assert "--task 'ner': unknown task" in result.output
    assert "token_classification, causal_lm" in result.output


def test_schema_reference_relative_in_the_checkout_absolute_outside(tmp_path: Path):
    assert schema_reference(REPO / "configs") == "../docs/tfsft.schema.json"
    assert schema_reference(REPO) == "docs/tfsft.schema.json"
    outside = schema_reference(tmp_path)
    assert outside == (REPO / "docs" / "tfsft.schema.json").as_posix()
    assert schema_reference(tmp_path, tmp_path / "none.json") == "tfsft.schema.json"


def test_schema_reference_names_the_committed_schema(tmp_path: Path):
    text = starter_config("multilabel", output=tmp_path / "sub" / "c.yaml")
    reference = text.splitlines()[0].split("$schema=", 1)[1]
    schema = (tmp_path / "sub" / reference).resolve()  # absolute stays absolute
    assert schema.read_text() == config_schema() + "\n"


def test_without_a_schema_copy_the_header_says_how_to_write_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(config_init, "SCHEMA_FILE", tmp_path / "absent.json")
    lines = starter_config("regression").splitlines()
    assert lines[0] == "# yaml-language-server: $schema=tfsft.schema.json"
    assert "tfsft config schema > tfsft.schema.json" in lines[1]


def test_init_prints_writes_and_refuses_to_overwrite(tmp_path: Path):
    result = runner.invoke(app, ["config", "init", "--task", "regression"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["task"] == "regression"

    out = tmp_path / "configs" / "ratings.yaml"
    args = ["config", "init", "--task", "classification", "--output", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    first = out.read_text()
    assert yaml.safe_load(first)["task"] == "classification"

    result = runner.invoke(app, [*args, "--preset", "tiny"])
    assert result.exit_code == 1
    assert f"{out}: already exists; pass --force to overwrite it" in result.output
    assert out.read_text() == first

    result = runner.invoke(app, [*args, "--preset", "tiny", "--force"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text())["model"]["preset"] == "tiny"
    result = runner.invoke(app, ["config", "validate", str(out)])
    assert result.exit_code == 0 and "ok" in result.output


def test_config_commands_start_without_tensorflow(tmp_path: Path):
    out = tmp_path / "c.yaml"
    script = f"""
import sys
from typer.testing import CliRunner
from tfsft.cli import app
runner = CliRunner()
for args in (["config", "init", "--task", "causal_lm", "--output", {str(out)!r}],
             ["config", "validate", {str(out)!r}], ["config", "schema"]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
heavy = sorted(m for m in ("tensorflow", "keras", "keras_hub") if m in sys.modules)
assert not heavy, heavy
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file()


def test_the_installed_command_writes_a_config_that_validates(tmp_path: Path):
    out = tmp_path / "ner.yaml"
    init = [str(TFSFT), "config", "init", "--task", "token_classification"]
    done = subprocess.run(
        [*init, "--output", str(out)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # the file is the result; the message is on stderr
    done = subprocess.run(
        [str(TFSFT), "config", "validate", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "task token_classification" in done.stderr
