import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write

from tfsft.config import (
    ExperimentConfig,
    FreezeLayersConfig,
    config_schema,
    config_to_yaml,
    load_config,
)
from tfsft.errors import ConfigError

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    # The resolved form (every default spelled out) validates to the same config.
    assert ExperimentConfig.model_validate(yaml.safe_load(config_to_yaml(cfg))) == cfg


def _cfg(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "c.yaml", text)


BASE = "name: t\ndata:\n  train: x.csv\n"


def test_unknown_key_names_line_path_and_suggestion(tmp_path):
    path = _cfg(tmp_path, BASE + "  text_colum: sentence\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}: line 4: data.text_colum: unknown key" in msg
    assert "did you mean 'text_column'" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"line 4: trian: unknown key; did you mean 'train'"
    ):
        load_config(_cfg(tmp_path, BASE + "trian: {epochs: 1}\n"))


def test_wrong_type_names_path_and_value(tmp_path):
    path = _cfg(tmp_path, BASE + "train:\n  epochs: three\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "line 5: train.epochs: Input should be a valid integer" in str(e.value)
    assert "'three'" in str(e.value)


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data: required key is missing"):
        load_config(_cfg(tmp_path, "name: t\n"))


def test_yaml_syntax_error_has_line(tmp_path):
    path = _cfg(tmp_path, BASE + "model: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}: line \d+: invalid YAML"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_validation_file_and_fraction_are_exclusive(tmp_path):
    text = BASE + "  validation: v.csv\n  validation_fraction: 0.1\n"
    with pytest.raises(ConfigError, match="either data.validation or"):
        load_config(_cfg(tmp_path, text))


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        _cfg(tmp_path, BASE),
        [
            "train.epochs=2",
            "train.learning_rate=3e-4",
            "data.test=null",
            "data.labels=[neg, pos]",
            "model.freeze.first_n_layers=1",
            "runtime.jit_compile=true",
            "name=other",
        ],
    )
    assert cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.data.test is None
    assert cfg.data.labels == ["neg", "pos"]
    assert cfg.model.freeze == FreezeLayersConfig(first_n_layers=1)
    assert cfg.runtime.jit_compile is True
    assert cfg.name == "other"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", r"--set: train.epochs: Input should be a valid integer"),
        ("train.epoch=2", r"--set: train.epoch: unknown key; did you mean 'epochs'"),
        ("noequals", r"expected KEY=VALUE"),
        ("name.x=1", r"name is a value, not a section"),
    ],
)
def test_override_errors(tmp_path, override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(_cfg(tmp_path, BASE), [override])


def test_config_is_frozen(tmp_path):
    cfg = load_config(_cfg(tmp_path, BASE))
    with pytest.raises(Exception, match="frozen"):
        cfg.train.epochs = 5


def test_schema_is_json_with_all_sections():
    schema = json.loads(config_schema())
    assert set(schema["properties"]) >= {"name", "task", "data", "model", "train"}
