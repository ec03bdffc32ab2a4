"""`tfsft config init`: a commented starter config for each task.

The starter holds the keys people change first, with short comments naming the
alternatives; everything else keeps its default (`tfsft config show` lists them,
docs/configuration.md describes them). Data paths point at the demo data that
ships inside the package, so a starter trains as written; the first line ties
the file to the JSON Schema for editors that run yaml-language-server.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import yaml

from tfsft.errors import TfsftError
from tfsft.tasks.registry import TASKS

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_DIR = PACKAGE_DIR / "demo_data"
# The committed copy of `config_schema()` (written by `python -m tfsft.docs_gen`):
# there in a source checkout, absent from an installed wheel.
SCHEMA_FILE = PACKAGE_DIR.parent / "docs" / "tfsft.schema.json"
DEFAULT_PRESETS = {"causal_lm": "smollm2-135m"}
ENCODER_PRESET = "minilm"
_COMMENT_COLUMN = 34

# (YAML text, comment): a key line with an inline comment, or a line of its own
# (a section header, a full-line comment, a blank) when the comment is empty.
Line = tuple[str, str]


def starter_config(
    task: str, preset: str | None = None, output: str | Path | None = None
) -> str:
    """The starter config for ``task`` as commented YAML.

    Args:
        task: a ``task:`` name (see `tfsft.tasks.registry.TASKS`).
        preset: ``model.preset``; default ``minilm`` (``smollm2-135m`` for causal_lm).
        output: where the file will be written, so the schema reference on its
            first line can be relative to it; default: the working directory.

    Raises:
        TfsftError: for an unknown task.
    """
    if task not in TASKS:
        raise TfsftError(
            f"--task {task!r}: unknown task; choose one of {', '.join(TASKS)}"
        )
    if task not in _SECTIONS:
        raise TfsftError(f"--task {task}: no starter config for this task yet")
    preset = preset or DEFAULT_PRESETS.get(task, ENCODER_PRESET)
    folder = Path(output).parent if output is not None else Path.cwd()
    lines = [
        *_header(task, schema_reference(folder), SCHEMA_FILE.is_file()),
        (f"name: {_scalar('my-' + task.replace('_', '-'))}", "runs go to runs/NAME/"),
        (f"# The task: {' | '.join(TASKS)}", ""),
        (f"task: {task}", ""),
        ("", ""),
        *_SECTIONS[task](preset),
    ]
    return "".join(_render(text, comment) for text, comment in lines)


def write_starter_config(path: str | Path, text: str, force: bool = False) -> Path:
    """Writes ``text`` to ``path`` (whole or not at all).

    Raises:
        TfsftError: when ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise TfsftError(f"{path}: already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def schema_reference(folder: Path, schema: Path | None = None) -> str:
    """How a YAML file in ``folder`` names the schema (default `SCHEMA_FILE`):
    relative when both are in the same checkout (so the reference survives a
    clone), else absolute; a file name to create with `tfsft config schema` when
    there is no copy (an installed wheel has no docs/)."""
    schema = schema or SCHEMA_FILE
    if not schema.is_file():
        return "tfsft.schema.json"
    folder = folder.resolve()
    if folder.is_relative_to(schema.parents[1]):
        return Path(os.path.relpath(schema, folder)).as_posix()
    return schema.as_posix()


def demo_path(name: str) -> str:
    """A demo data file as a data path: relative to the working directory (which
    data paths resolve against) when it lies below it, else absolute."""
    path, cwd = DEMO_DIR / name, Path.cwd().resolve()
    if path.is_relative_to(cwd):
        return path.relative_to(cwd).as_posix()
    return path.as_posix()


def _header(task: str, schema: str, schema_exists: bool) -> list[Line]:
    lines = [(f"# yaml-language-server: $schema={schema}", "")]
    if not schema_exists:  # an installed wheel has no docs/ folder
        lines.append(("# (write it: tfsft config schema > tfsft.schema.json)", ""))
    text = (
        f"A starter {task} config from `tfsft config init`. Keys not written "
        "here keep their defaults: `tfsft config show FILE` prints them all, "
        "docs/configuration.md describes them. Check: tfsft config validate "
        "FILE; run: tfsft train FILE (--set train.epochs=1 overrides a key)."
    )
    return [*lines, *((f"# {line}", "") for line in textwrap.wrap(text, 78))]


def _scalar(value: str) -> str:
    # Plain when YAML reads the text back unchanged; a JSON string (valid YAML)
    # otherwise, e.g. for a path with ": " or " #" in it.
    try:
        if yaml.safe_load(value) == value:
            return value
    except yaml.YAMLError:
        pass
    return json.dumps(value)


def _render(text: str, comment: str) -> str:
    if not comment:
        return text + "\n"
    return f"{text.ljust(_COMMENT_COLUMN - 2)}  # {comment}\n"


def _note(text: str) -> list[Line]:
    """A comment of its own lines inside a section."""
    return [(f"  # {line}", "") for line in textwrap.wrap(text, 76)]


def _model(
    preset: str, length: int, dropout: str = "0.1", peft: bool = False
) -> list[Line]:
    # A PEFT method freezes the backbone itself (model.freeze must stay none).
    freeze = ("  freeze: none", "none | backbone | embeddings | {first_n_layers: K}")
    return [
        ("model:", ""),
        (f"  preset: {_scalar(preset)}", "an alias, keras-hub preset, or model dir"),
        (f"  sequence_length: {length}", "tokens per example; longer is cut"),
        *([] if peft else [freeze]),
        (f"  dropout: {dropout}", ""),
        ("", ""),
    ]


_FULL_FINETUNING = [
    ("peft:", ""),
    ("  method: none", "none (train everything) | lora | adapter | ..."),
    *_note(
        "LoRA instead: method: lora, rank: 8, alpha: 16, targets: all-linear, and "
        "a learning rate about 10x higher."
    ),
    ("", ""),
]


def _train(
    epochs: int, batch: int, rate: str, decay: str, warmup: str, *extra: Line
) -> list[Line]:
    return [
        ("train:", ""),
        (f"  epochs: {epochs}", ""),
        (f"  batch_size: {batch}", "global batch, summed over all devices"),
        (f"  learning_rate: {rate}", "peak AdamW rate, reached after warm-up"),
        (f"  weight_decay: {decay}", ""),
        (f"  warmup_ratio: {warmup}", "fraction of the steps spent warming up"),
        ("  schedule: linear", "linear | cosine | constant after warm-up"),
        ("  max_grad_norm: 1.0", "clip the gradient norm; null: no clipping"),
        ("  early_stopping_patience: null", "stop after N epochs without a gain"),
        *extra,
        ("  seed: 42", "a CPU run repeats exactly"),
        ("", ""),
        ("runtime:", ""),
        ("  strategy: auto", "auto | one_device | mirrored | multi_worker | tpu"),
        ("  precision: auto", "auto (bf16 where native) | float32 | mixed_*"),
    ]


def _sentence_data(about: str, files: tuple[str, str], *columns: Line) -> list[Line]:
    """The data section of the sentence-level tasks (one text, one target)."""
    train, validation = (_scalar(demo_path(name)) for name in files)
    return [
        ("data:", ""),
        *_note(
            f"{about} Your own data: a CSV / TSV / JSONL / JSON file, or "
            "tfds:NAME[:SPLIT]."
        ),
        (f"  train: {train}", ""),
        (f"  validation: {validation}", "or validation_fraction: 0.1"),
        ("  test: null", "scored once, after training"),
        *columns,
        ("  text_pair_column: null", "a second text, for pair tasks (NLI)"),
        ("  max_train_examples: null", "first N after a seeded shuffle"),
        ("", ""),
    ]


def _classification(preset: str) -> list[Line]:
    return [
        *_sentence_data(
            "The demo sentiment set (TSV, 320 train / 100 dev rows) in tfsft.",
            ("sentiment_train.tsv", "sentiment_dev.tsv"),
            ("  text_column: sentence", "the input text"),
            ("  label_column: label", "the class name (any strings)"),
        ),
        *_model(preset, 128),
        *_FULL_FINETUNING,
        *_train(4, 16, "1.0e-4", "0.01", "0.1"),
    ]


def _multilabel(preset: str) -> list[Line]:
    return [
        *_sentence_data(
            "The demo aspects set (CSV, 240 train / 80 dev rows) in tfsft.",
            ("aspects_train.csv", "aspects_dev.csv"),
            ("  text_column: text", "the input text"),
            ("  label_column: labels", "zero or more labels per row"),
            ("  label_delimiter: ';'", "separates the labels in a cell"),
        ),
        *_model(preset, 128),
        *_FULL_FINETUNING,
        *_train(8, 16, "1.0e-4", "0.01", "0.1"),
        ("", ""),
        ("evaluate:", ""),
        ("  threshold: 0.5", "a label is predicted above this probability"),
    ]


def _regression(preset: str) -> list[Line]:
    return [
        *_sentence_data(
            "The demo review scores (JSONL, 240 train / 80 dev rows) in tfsft.",
            ("ratings_train.jsonl", "ratings_dev.jsonl"),
            ("  text_column: review", "the input text"),
            ("  label_column: score", "a number per row"),
        ),
        *_model(preset, 128),
        *_FULL_FINETUNING,
        *_train(8, 16, "1.0e-4", "0.01", "0.1"),
    ]


def _token_classification(preset: str) -> list[Line]:
    return [
        ("data:", ""),
        *_note(
            "No demo set ships for this task: point these at your files. CoNLL: "
            "one 'TOKEN ... TAG' line per word, a blank line between sentences. "
            "JSONL instead: format: jsonl, with tokens_column and tags_column."
        ),
        ("  train: data/ner/train.conll", ""),
        ("  validation: data/ner/dev.conll", "or validation_fraction: 0.1"),
        ("  test: null", "scored once, after training"),
        ("  format: conll", "auto (.conll/.txt: conll) | conll | jsonl | json"),
        ("  conll_tag_column: -1", "the tag's column; -1: the last"),
        ("  tag_scheme: auto", "auto | iob1 | iob2 | bioes"),
        ("  repair_tags: false", "true: fix I-X after O instead of stopping"),
        ("", ""),
        *_model(preset, 128),
        *_FULL_FINETUNING,
        *_train(3, 16, "1.0e-4", "0.01", "0.1"),
    ]


def _causal_lm(preset: str) -> list[Line]:
    checkpointing = ("  gradient_checkpointing: auto", "less memory on wide batches")
    return [
        ("data:", ""),
        *_note(
            "32 instruction / response pairs (alpaca JSONL) that ship with tfsft. "
            "Also read: chat {messages: [...]}, {prompt, completion} and {text} "
            "records."
        ),
        (f"  train: {_scalar(demo_path('instructions.jsonl'))}", ""),
        ("  validation_fraction: 0.1", "held out, seeded; or validation: FILE"),
        ("  template: auto", "auto | chatml | alpaca | plain | {prefixes}"),
        ("  train_on_prompt: false", "false: train the responses only"),
        ("  packing: false", "true: several examples per row"),
        ("", ""),
        *_model(preset, 512, dropout="0.0", peft=True),
        ("peft:", ""),
        ("  method: lora", "none (train everything) | lora | adapter | ..."),
        ("  rank: 8", ""),
        ("  alpha: 16", "the update is scaled by alpha / rank"),
        ("  targets: all-linear", "or a list, e.g. [query, value]"),
        ("", ""),
        *_train(3, 8, "2.0e-4", "0.0", "0.03", checkpointing),
        ("", ""),
        ("generate:", ""),
        ("  max_new_tokens: 128", ""),
        ("  sampler: greedy", "greedy | top_k | top_p"),
        ("  samples_per_epoch: 4", "validation prompts answered per epoch"),
    ]


_SECTIONS = {
    "classification": _classification,
    "multilabel": _multilabel,
    "regression": _regression,
    "token_classification": _token_classification,
    "causal_lm": _causal_lm,
}
