"""Reading token-classification data: the fields a sentence record holds and their
validation (words, tags and their scheme), and the gold tag ids of a split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tfsft.config import DataConfig
from tfsft.data.clean import clean_text
from tfsft.data.labels import LabelSpec, raise_unknown
from tfsft.data.readers import RowProblem, detect_format
from tfsft.data.sources import Examples, Row, read_examples
from tfsft.errors import DataError
from tfsft.tasks.token_classification import serving, tags

log = logging.getLogger("tfsft")


def read_sentences(
    spec: str, cfg: DataConfig, split: str, require_targets: bool = True
) -> Examples:
    """Word lists (and tag lists) of one split, checked sentence by sentence.

    CoNLL files (``.txt``/``.conll`` or ``data.format: conll``) or JSON/JSONL records
    with ``data.tokens_column`` and ``data.tags_column``; prediction inputs
    (``require_targets=False``) may also hold raw text in ``data.text_column``.
    """
    fmt = cfg.format
    if fmt == "auto" and Path(spec).suffix.lower() in (".txt", ".conll"):
        fmt = "conll"  # CoNLL-2003 and most NER corpora ship as .txt
    conll = detect_format(spec, fmt) == "conll"
    tokens_key, tags_key = (
        ("tokens", "tags") if conll else (cfg.tokens_column, cfg.tags_column)
    )
    raw_text = not require_targets and not conll
    columns = [] if raw_text else [tokens_key]
    columns += [tags_key] if require_targets else []

    def accept(row: int, record: dict[str, Any]) -> Row | RowProblem:
        if raw_text and tokens_key not in record:
            return _raw_text_row(row, record, cfg, tokens_key)
        words = _check_tokens(row, record.get(tokens_key), tokens_key, cfg)
        if isinstance(words, RowProblem) or not require_targets:
            return words if isinstance(words, RowProblem) else Row(words)
        lines = record.get("_lines") or [row] * len(words)
        found = _check_tags(record[tags_key], words, lines, tags_key, cfg)
        if isinstance(found, RowProblem):
            return found
        return Row(words, found, meta={"lines": lines})

    examples = read_examples(spec, cfg, split, columns, accept, fmt=fmt)
    if raw_text:
        serving.split_raw_texts(examples)  # the rows that hold raw text
    elif require_targets:
        _convert_iob1(examples, cfg)
    return examples


def _check_tokens(
    row: int, words: Any, field: str, cfg: DataConfig
) -> list[str] | RowProblem:
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return RowProblem(row, field, "expected a list of words (strings)")
    if not words:
        return RowProblem(row, field, "empty sentence (no words)")
    if sum(map(len, words)) > cfg.max_text_chars:
        return RowProblem(
            row,
            field,
            f"sentence longer than data.max_text_chars ({cfg.max_text_chars:,})",
        )
    cleaned = [clean_text(w) if cfg.clean_text else w for w in words]
    for i, word in enumerate(cleaned):
        if not word.strip():
            return RowProblem(row, field, f"word {i + 1} is empty (after cleaning)")
    return cleaned


def _check_tags(
    found: Any, words: list[str], lines: list[int], field: str, cfg: DataConfig
) -> list[str] | RowProblem:
    if not isinstance(found, list):
        return RowProblem(lines[0], field, "expected a list of tags")
    if len(found) != len(words):
        return RowProblem(
            lines[0],
            field,
            f"{len(words)} tokens but {len(found)} tags; give one tag per token",
        )
    for i, tag in enumerate(found):
        problem = tags.tag_problem(tag, cfg.tag_scheme)
        if problem:
            return RowProblem(
                lines[i], field, f"token {i + 1} ({words[i]!r}): {problem}"
            )
    return list(found)


def _raw_text_row(
    row: int, record: dict[str, Any], cfg: DataConfig, tokens_key: str
) -> Row | RowProblem:
    text = record.get(cfg.text_column)
    if not isinstance(text, str):
        return RowProblem(
            row,
            tokens_key,
            f"expected pre-tokenized words in '{tokens_key}' or raw text in "
            f"'{cfg.text_column}'",
        )
    return Row(text)


def _convert_iob1(examples: Examples, cfg: DataConfig) -> None:
    """Rewrites IOB1 tags (configured, or detected in this file) as IOB2."""
    scheme = cfg.tag_scheme
    if scheme == "auto":
        scheme = tags.detect_scheme(examples.labels)
    if scheme != "iob1":
        return
    examples.labels = [tags.repair(t, "iob2") for t in examples.labels]
    log.info("%s: IOB1 tags converted to IOB2 (the same entities)", examples.source)


def gold_tag_ids(
    examples: Examples,
    labels: LabelSpec,
    cfg: DataConfig,
    report_repairs: bool = False,
) -> list[np.ndarray]:
    """Tag ids per sentence, with illegal sequences repaired or reported.

    Raises:
        DataError: a tag of another scheme, a type the training data never had, or
            (without ``data.repair_tags``) an illegal sequence, at its line.
    """
    index = {name: i for i, name in enumerate(labels.names)}
    scheme = labels.scheme or "iob2"
    lines_of = examples.meta.get("lines") or [None] * len(examples)
    out, unknown, illegal, changed = [], {}, [], 0
    for i, sentence in enumerate(examples.labels):
        lines = lines_of[i]
        for j, tag in enumerate(sentence):
            if problem := tags.tag_problem(tag, scheme):
                raise DataError(
                    f"{_at(examples, i, lines, j)}: field '{cfg.tags_column}': "
                    f"token {j + 1}: {problem}, the scheme of the training data"
                )
        fixed = tags.repair(sentence, scheme)
        wrong = [
            j for j, (a, b) in enumerate(zip(sentence, fixed, strict=True)) if a != b
        ]
        if wrong:
            illegal.append((i, wrong[0]))
            changed += len(wrong)
        for j, tag in enumerate(fixed):
            if tag not in index:
                unknown.setdefault(tag, lines[j] if lines else examples.rows[i])
        out.append(np.array([index.get(t, 0) for t in fixed], np.int32))
    raise_unknown(unknown, examples, cfg.tags_column)
    if illegal and not cfg.repair_tags:
        i, j = illegal[0]
        previous = examples.labels[i][j - 1] if j else "the sentence start"
        raise DataError(
            f"{_at(examples, i, lines_of[i], j)}: field '{cfg.tags_column}': token "
            f"{j + 1}: tag {examples.labels[i][j]!r} after {previous!r} is not legal "
            f"in {scheme.upper()} ({len(illegal)} sentences with illegal tags); set "
            "data.repair_tags: true to repair them (an I-X after O becomes B-X)"
        )
    if illegal and report_repairs:
        log.warning(
            "%s: repaired %d tags in %d sentences (data.repair_tags)",
            examples.source,
            changed,
            len(illegal),
        )
    return out


def _at(examples: Examples, i: int, lines: list[int] | None, j: int) -> str:
    row = lines[j] if lines else examples.rows[i]
    return f"{examples.source}: {examples.row_kind} {row}"
