"""Property: whatever the input, config and data loading fail only with a TfsftError.

Any other exception escaping `load_config` or the data readers ends up as an
"internal error" (exit 3) in the CLI, so each one found here is a bug to fix.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# Hypothesis caches (constants, Unicode tables) go outside the repo; with
# database=None below, nothing is written to ./.hypothesis.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY",
    str(Path(tempfile.gettempdir()) / "tfsft-hypothesis"),
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfsft.config import DataConfig, ExperimentConfig, load_config
from tfsft.data.sources import describe_skipped, load_examples
from tfsft.errors import ConfigError, DataError, TfsftError
from tfsft.tasks import get_task


def build_label_spec(task, examples, cfg):
    return get_task(task).build_labels(examples, cfg)


def encode_labels(spec, examples, cfg):
    return get_task(spec.task).encode_targets(spec, examples, cfg)


FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Module-scoped: hypothesis runs many examples per test function, and a
    # function-scoped tmp_path would be shared by all of them anyway.
    with tempfile.TemporaryDirectory(prefix="tfsft-fuzz-") as d:
        yield Path(d)


def _expect_only_tfsft_errors(fn, allowed: type[TfsftError]) -> Any:
    try:
        return fn()
    except allowed as e:
        assert str(e).strip(), "an error with an empty message"
        assert "Traceback" not in str(e)
        return None


# ---- configs ----

# Every key the config knows, a few near misses, and odd ones.
KEYS = sorted(
    {
        name
        for model in (ExperimentConfig, DataConfig)
        for name in model.model_fields
    }
    | {
        "epochs", "batch_size", "learning_rate", "seed", "output_dir", "monitor",
        "preset", "sequence_length", "freeze", "first_n_layers", "dropout",
        "method", "strategy", "precision", "jit_compile", "threshold", "max_errors",
        "Train", "DATA", "text_colum", "literal['none']", "FreezeLayersConfig",
        "", " ", "0", "a.b", "<<",
    }
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.sampled_from(
        ["classification", "multilabel", "regression", "tiny", "none", "backbone",
         "auto", "csv", "json", "linear", "x.csv", "tfds:imdb", "1e-4", "0.5", "-1"]
    ),
    st.text(max_size=20),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4
        )
    ),
    max_leaves=12,
)
YAML_CHARS = st.sampled_from(
    list("abcdeilmnprstxy_019 .:-[]{},'\"#&*!|>%@`?~\\=\n\t\r\x00\x07\x85\u2028\ufeffé")
)
YAML_TEXT = st.one_of(
    st.text(YAML_CHARS, max_size=120),
    st.text(max_size=60),
    # Lines of "key: value" with random indentation, closer to real configs.
    st.lists(
        st.tuples(
            st.sampled_from(["", "  ", "    ", "\t", "- "]),
            st.sampled_from(KEYS),
            st.sampled_from([": ", ":", " = ", ": [", ": {", ": |", ": &a ", ": *a"]),
            st.text(YAML_CHARS, max_size=12),
        ).map("".join),
        max_size=12,
    ).map("\n".join),
    # Fragments that reach the parser's limits: deep nesting, huge scalars.
    st.lists(
        st.sampled_from(["[" * 2000, "{a: " * 500, "- " * 500, "9" * 5000, "&a [*a]"])
        | YAML_CHARS,
        max_size=6,
    ).map("".join),
)
OVERRIDE_KEY = st.lists(st.sampled_from(KEYS) | st.text(max_size=4), max_size=4).map(
    ".".join
)
OVERRIDES = st.lists(
    st.one_of(
        st.tuples(
            OVERRIDE_KEY,
            st.sampled_from(["=", "==", " = ", ""]),
            st.one_of(SCALARS.map(str), st.text(YAML_CHARS, max_size=20)),
        ).map("".join),
        st.text(max_size=20),
    ),
    max_size=4,
)
BASE = {"name": "fuzz", "data": {"train": "x.csv"}, "model": {"preset": "tiny"}}


def _mutate(base: dict[str, Any], changes: list[tuple[list[str], Any]]) -> Any:
    out = copy.deepcopy(base)
    for path, value in changes:
        if not path:
            return value  # replace the whole document
        node = out
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
        if not isinstance(out, dict):
            break
    return out


@FUZZ
@given(text=YAML_TEXT, overrides=OVERRIDES)
def test_load_config_on_arbitrary_text(workdir: Path, text: str, overrides: list[str]):
    path = workdir / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _expect_only_tfsft_errors(lambda: load_config(path, overrides), ConfigError)


@FUZZ
@given(
    changes=st.lists(
        st.tuples(st.lists(st.sampled_from(KEYS), max_size=3), VALUES), max_size=5
    ),
    overrides=OVERRIDES,
)
def test_load_config_on_random_documents(
    workdir: Path, changes: list[tuple[list[str], Any]], overrides: list[str]
):
    doc = _mutate(BASE, changes)
    path = workdir / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    cfg = _expect_only_tfsft_errors(lambda: load_config(path, overrides), ConfigError)
    if cfg is not None:  # a config that loads must survive a round trip
        assert ExperimentConfig.model_validate(cfg.model_dump()) == cfg


@FUZZ
@given(raw=st.binary(max_size=200))
def test_load_config_on_random_bytes(workdir: Path, raw: bytes):
    path = workdir / "fuzz.yaml"
    path.write_bytes(raw)
    _expect_only_tfsft_errors(lambda: load_config(path), ConfigError)


# ---- data files ----

COLUMNS = ["text", "label", "sentence", "a", "", " text", "Text", "0"]
CELL_CHARS = st.sampled_from(
    list("ab xyz01;,\t\"'\\\n\r\x00\x0b\x0c\x1c\x85\u2028\u200b\ufeffé[]{}:")
)
CELL = st.one_of(
    st.text(CELL_CHARS, max_size=12),
    st.sampled_from(["pos", "neg", "1", "0", "2.5", "nan", "inf", ";", "a;b", ""]),
)


@st.composite
def delimited(draw: st.DrawFn) -> bytes:
    delimiter = draw(st.sampled_from([",", "\t", ";"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    header = draw(st.lists(st.sampled_from(COLUMNS) | CELL, min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(CELL, max_size=5), max_size=6))
    lines = [delimiter.join(header), *(delimiter.join(r) for r in rows)]
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + text.encode(
        "utf-8", "surrogatepass"
    )


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1, 1e308, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    CELL,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(COLUMNS), inner, max_size=4)
    ),
    max_leaves=10,
)
RECORDS = st.one_of(
    st.lists(
        st.one_of(st.dictionaries(st.sampled_from(COLUMNS), JSON_VALUES), JSON_VALUES),
        max_size=6,
    ),
    # Mostly well-formed rows, so the label checks behind the readers run too.
    st.lists(
        st.fixed_dictionaries(
            {"text": CELL, "label": JSON_VALUES}, optional={"sentence": CELL}
        ),
        min_size=1,
        max_size=6,
    ),
)


# JSON token soup: mostly invalid, and reaching json's limits (nesting depth, the
# 4300-digit cap on integers) that raise something other than JSONDecodeError.
JSON_TOKENS = st.lists(
    st.sampled_from(
        ["[", "]", "{", "}", ":", ",", '"text"', '"label"', '"a"', "1", "-1.5e3",
         "null", "true", "NaN", "-Infinity", "1e400", "9" * 5000, "[" * 3000,
         '{"a":' * 1500, "\n", " ", '"\\ud800"', '"\\u0000"']
    ),
    max_size=30,
).map(lambda tokens: "".join(tokens).encode())  # fmt: skip
# Files that are (nearly) nothing: byte-order marks, Unicode line breaks, blanks.
EDGE_BYTES = st.sampled_from(
    [b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b"\xc2\x85", b"\xe2\x80\xa8", b"\n\n",
     b"\r", b"\x00", b",", b"\t", b'"', b"text\n\xef\xbb\xbf", b"[]", b"{}", b'{"data": 1}']
)  # fmt: skip


def _corrupt(data: bytes, cut: int, junk: bytes) -> bytes:
    cut = cut % (len(data) + 1)
    return data[:cut] + junk + data[cut:]


DATA = st.one_of(
    delimited(),
    RECORDS.map(lambda rs: json.dumps(rs).encode()),
    JSON_VALUES.map(lambda v: json.dumps({"data": v}).encode()),
    RECORDS.map(lambda rs: "\n".join(json.dumps(r) for r in rs).encode()),
    st.builds(
        _corrupt,
        delimited() | RECORDS.map(lambda rs: json.dumps(rs).encode()),
        st.integers(min_value=0),
        st.binary(min_size=1, max_size=4),
    ),
    JSON_TOKENS,
    EDGE_BYTES,
    st.binary(max_size=200),
)


@st.composite
def data_configs(draw: st.DrawFn) -> DataConfig:
    column = st.sampled_from(COLUMNS)
    return DataConfig(
        train="unused",
        format=draw(st.sampled_from(["auto"] * 4 + ["csv", "tsv", "jsonl", "json"])),
        text_column=draw(st.just("text") | column),
        text_pair_column=draw(st.none() | st.none() | column),
        label_column=draw(st.just("label") | column),
        label_delimiter=draw(st.sampled_from([";", ",", "|", " "])),
        labels=draw(st.none() | st.lists(CELL, max_size=3)),
        skip_invalid_rows=draw(st.booleans()),
        clean_text=draw(st.booleans()),
        max_text_chars=draw(st.sampled_from([1, 5, 100_000])),
    )


@FUZZ
@given(
    data=DATA,
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".txt"]),
    cfg=data_configs(),
    task=st.sampled_from(["classification", "multilabel", "regression"]),
    require_label=st.booleans(),
)
def test_load_examples_and_labels_on_arbitrary_files(
    workdir: Path,
    data: bytes,
    suffix: str,
    cfg: DataConfig,
    task: str,
    require_label: bool,
):
    path = workdir / f"fuzz{suffix}"
    path.write_bytes(data)

    def run() -> None:
        examples = load_examples(str(path), cfg, "train", require_label=require_label)
        assert len(examples) == len(examples.labels) == len(examples.rows) > 0
        describe_skipped(examples)
        if require_label:
            spec = build_label_spec(task, examples, cfg)
            encode_labels(spec, examples, cfg)

    _expect_only_tfsft_errors(run, DataError)
