"""Turning token-classification (NER) benchmark results into markdown.

The token-classification section of docs/benchmarks.md; plain functions of plain
data (no TensorFlow), so the formatting is unit-tested. The parts every mode shares
(intro, machine, commands, hyper-parameters, processes) come from bench_report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench_report import (
    compare,
    fmt,
    fmt_bytes,
    runs_section_head,
    section_tail,
)

NER_TITLES = {
    "tfsft": "tfsft (`tfsft train`)",
    "hf": "HF transformers `Trainer`, `AutoModelForTokenClassification` (PyTorch)",
}


@dataclass
class NerRow:
    """One runner's outcome; the numbers are None when it did not run."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    message: str = ""
    precision: str = ""
    train_seconds: float | None = None
    examples_per_second: float | None = None  # training sentences x epochs / s
    process_seconds: float | None = None  # the whole runner process, wall time
    cpu_seconds: float | None = None  # the whole runner process, user + system
    rss_bytes: int | None = None
    entity_f1: float | None = None  # micro average over entities (seqeval strict)
    entity_precision: float | None = None
    entity_recall: float | None = None
    f1_by_type: dict[str, float] = field(default_factory=dict)


@dataclass
class NerReport:
    date: str
    command: str
    tfsft_command: str
    machine: dict[str, str]
    versions: dict[str, str]
    hyper: dict[str, Any]
    rows: list[NerRow]
    notes: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    cores: int = 0


def results_table(rows: list[NerRow]) -> list[str]:
    lines = [
        "| runner | status | precision | train s | examples/s | whole process s "
        "| CPU s / wall s | peak RSS | entity F1 | entity P | entity R |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        title = NER_TITLES.get(r.name, r.name)
        if r.status != "ok":
            status = f"{r.status}: {r.message}" if r.message else r.status
            lines.append(f"| {title} | {status} |" + " - |" * 9)
            continue
        busy = None
        if r.cpu_seconds is not None and r.process_seconds:
            busy = r.cpu_seconds / r.process_seconds
        lines.append(
            f"| {title} | ok | {r.precision or '-'} | {fmt(r.train_seconds)} "
            f"| {fmt(r.examples_per_second)} | {fmt(r.process_seconds)} "
            f"| {fmt(busy, '.2f')} | {fmt_bytes(r.rss_bytes)} "
            f"| {fmt(r.entity_f1, '.4f')} | {fmt(r.entity_precision, '.4f')} "
            f"| {fmt(r.entity_recall, '.4f')} |"
        )
    return lines


def type_table(rows: list[NerRow]) -> list[str]:
    """Entity F1 per type and runner; empty when no runner has any."""
    done = [r for r in rows if r.status == "ok" and r.f1_by_type]
    types = list(dict.fromkeys(t for r in done for t in r.f1_by_type))
    if not types:
        return []
    return [
        "| runner | " + " | ".join(f"F1 {t}" for t in types) + " |",
        "|---|" + "---:|" * len(types),
        *[
            f"| {NER_TITLES.get(r.name, r.name)} | "
            + " | ".join(fmt(r.f1_by_type.get(t), ".4f") for t in types)
            + " |"
            for r in done
        ],
    ]


def ner_notes(sequence_length: int) -> list[str]:
    """The definitions behind the columns, for the report's last section."""
    return [
        "train s: wall time of the training epoch(s) including the end-of-epoch dev "
        "evaluation each framework runs inside fit()/train() (tfsft: its "
        "metrics.json train_seconds, which also covers its checkpoint writes). "
        "Tokenization is done up front, outside it, by both.",
        "Dev passes: at each epoch end both predict the dev set once (tfsft computes "
        "its validation loss and entity F1 from that one pass, on the host); "
        "tfsft's second pass, for its report after training with the best "
        "checkpoint, is in its whole process s only.",
        "examples/s = training sentences x epochs / train s (tfsft's own "
        "train_examples_per_second counts steps x batch size instead).",
        "whole process s and CPU s / wall s: the runner's whole process (imports, "
        "model loading, tokenization, training, evaluation, saving) from os.wait4; "
        "CPU s / wall s is how many cores it kept busy on average.",
        "peak RSS: ru_maxrss of each runner's process (os.wait4).",
        "entity F1/P/R: micro averages over the dev entities, seqeval "
        "classification_report in strict mode for the config's tag scheme, one tag "
        "per word. tfsft's come from its metrics.json (the same seqeval call); HF's "
        "from the per-word predictions its child wrote (each word's first "
        "sub-token), scored in the benchmark process.",
        f"Sentences longer than {sequence_length} sub-tokens: tfsft splits them into "
        "overlapping windows, so it trains on and predicts every word; the HF runner "
        "truncates them, as run_ner.py does, so it never trains on their tails and "
        "its dev words cut off count as predicted O.",
        "Each runner shuffles with its own RNG (same seed, different algorithms), so "
        "the sentence order differs; small F1 deltas are noise.",
    ]


def render_ner(report: NerReport) -> str:
    """The token-classification section of docs/benchmarks.md."""
    by_name = {r.name: r for r in report.rows}
    out = runs_section_head(
        "Token classification (NER)", report, results_table(report.rows)
    )
    if types := type_table(report.rows):
        out += ["Entity F1 per type (dev):", "", *types, ""]
    if "tfsft" in by_name and "hf" in by_name:
        tfsft, hf = by_name["tfsft"], by_name["hf"]
        summary = compare(tfsft, hf, "entity_f1", "entity F1", ".4f")
        out += [f"- {summary}", ""]
    return "\n".join([*out, *section_tail(report)]) + "\n"
