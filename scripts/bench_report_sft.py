"""Turning causal-LM SFT benchmark results into markdown.

The causal-LM section of docs/benchmarks.md; plain functions of plain data (no
TensorFlow, no torch), so the formatting can be unit-tested. The parts every mode
shares (intro, machine, commands, hyper-parameters, processes) come from
bench_report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bench_report import fmt, fmt_bytes, runs_section_head, section_tail

SFT_TITLES = {
    "tfsft": "tfsft (`tfsft train`)",
    "tfsft_fp32": "tfsft (`tfsft train`, `--set runtime.precision=float32`)",
    "trl": "TRL `SFTTrainer` + PEFT LoRA (PyTorch)",
}
SFT_SHORT = {"tfsft": "tfsft", "tfsft_fp32": "tfsft fp32", "trl": "TRL"}
ISSUE_SPEED_GOAL = 1.5  # issue 13: >= 1.5x TRL's tokens/s at equal held-out loss
ISSUE_RSS_GOAL = 6 * 2**30  # issue 13: a LoRA run of the shipped configs < 6 GiB
ISSUE_LOSS_DROP = 0.10  # issue 13, acceptance 4: held-out loss falls >= 10 %


@dataclass
class SftRow:
    """One runner's outcome; the numbers are None when it did not run."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    message: str = ""
    precision: str = ""
    train_seconds: float | None = None
    tokens_per_second: float | None = None  # real (non-padding) tokens x epochs / s
    response_tokens_per_second: float | None = None  # loss-carrying tokens / s
    process_seconds: float | None = None  # the whole training process, wall time
    cpu_seconds: float | None = None  # the whole training process, user + system
    rss_bytes: int | None = None  # peak RSS of the training process
    loss_before: float | None = None  # held-out response loss of the base model
    loss_after: float | None = None  # ... after training
    accuracy_after: float | None = None  # held-out response token accuracy, after
    steps: int | None = None
    trainable_params: int | None = None

    @property
    def change(self) -> float | None:
        """Relative change of the held-out loss (negative: it fell)."""
        if self.loss_before is None or self.loss_after is None or not self.loss_before:
            return None
        return (self.loss_after - self.loss_before) / self.loss_before


@dataclass
class Sample:
    """One held-out prompt: the reference answer and greedy generations."""

    prompt: str  # the user turn (instruction, and input after a blank line)
    reference: str
    before: str | None = None  # the base model
    after: str | None = None  # the fine-tuned model


@dataclass
class SftReport:
    date: str
    command: str
    tfsft_command: str
    machine: dict[str, str]
    versions: dict[str, str]
    hyper: dict[str, Any]
    rows: list[SftRow]
    samples: list[Sample] = field(default_factory=list)
    sample_runner: str = ""  # whose generations "after" shows
    notes: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    cores: int = 0


def results_table(rows: list[SftRow]) -> list[str]:
    lines = [
        "| runner | status | precision | train s | tokens/s | response tokens/s "
        "| whole process s | CPU s / wall s | peak RSS | held-out loss before "
        "| held-out loss after | change | trainable params |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        title = SFT_TITLES.get(r.name, r.name)
        if r.status != "ok":
            status = f"{r.status}: {r.message}" if r.message else r.status
            lines.append(f"| {title} | {_cell(status)} |" + " - |" * 11)
            continue
        busy = None
        if r.cpu_seconds is not None and r.process_seconds:
            busy = r.cpu_seconds / r.process_seconds
        change = None if r.change is None else 100 * r.change
        lines.append(
            f"| {title} | ok | {r.precision or '-'} | {fmt(r.train_seconds)} "
            f"| {fmt(r.tokens_per_second)} | {fmt(r.response_tokens_per_second)} "
            f"| {fmt(r.process_seconds)} | {fmt(busy, '.2f')} "
            f"| {fmt_bytes(r.rss_bytes)} | {fmt(r.loss_before, '.4f')} "
            f"| {fmt(r.loss_after, '.4f')} | {fmt(change, '+.1f', ' %')} "
            f"| {fmt(r.trainable_params, ',d')} |"
        )
    return lines


def compare_sft(a: SftRow, b: SftRow) -> str:
    """One sentence: tokens/s ratio of ``a`` over ``b`` and their held-out losses."""
    name_a, name_b = SFT_SHORT.get(a.name, a.name), SFT_SHORT.get(b.name, b.name)
    if a.status != "ok" or b.status != "ok":
        missing = name_a if a.status != "ok" else name_b
        return f"{name_a} vs {name_b}: not available ({missing} did not run)"
    ratio = None
    if a.tokens_per_second and b.tokens_per_second:
        ratio = a.tokens_per_second / b.tokens_per_second
    delta = None
    if a.loss_after is not None and b.loss_after is not None:
        delta = a.loss_after - b.loss_after
    return (
        f"{name_a} ({a.precision}) vs {name_b} ({b.precision}): tokens/s ratio "
        f"{fmt(ratio, '.2f', 'x')}; held-out response loss after training "
        f"{fmt(a.loss_after, '.4f')} vs {fmt(b.loss_after, '.4f')} "
        f"(delta {fmt(delta, '+.4f')})"
    )


def goal_lines(rows: list[SftRow]) -> list[str]:
    """Issue 13's goals, each with what was measured."""
    by_name = {r.name: r for r in rows if r.status == "ok"}
    out = []
    trl = by_name.get("trl")
    for name in ("tfsft", "tfsft_fp32"):
        r = by_name.get(name)
        if (
            r is None
            or trl is None
            or not (r.tokens_per_second and trl.tokens_per_second)
        ):
            continue
        ratio = r.tokens_per_second / trl.tokens_per_second
        met = "met" if ratio >= ISSUE_SPEED_GOAL else "not met"
        out.append(
            f"Speed goal (>= {ISSUE_SPEED_GOAL:.1f}x TRL's tokens/s at equal held-out "
            f"loss), {SFT_SHORT[name]} ({r.precision}): {ratio:.2f}x, {met} on "
            f"speed; held-out loss {fmt(r.loss_after, '.4f')} vs TRL's "
            f"{fmt(trl.loss_after, '.4f')}."
        )
    for name in ("tfsft", "tfsft_fp32"):
        r = by_name.get(name)
        if r is None or r.rss_bytes is None:
            continue
        met = "met" if r.rss_bytes < ISSUE_RSS_GOAL else "not met"
        out.append(
            f"Memory goal (LoRA run under {ISSUE_RSS_GOAL / 2**30:.0f} GiB peak RSS), "
            f"{SFT_SHORT[name]} ({r.precision}): {fmt_bytes(r.rss_bytes)}, {met}."
        )
    for r in rows:
        if r.status != "ok" or r.change is None:
            continue
        met = "met" if -r.change >= ISSUE_LOSS_DROP else "not met"
        out.append(
            f"Held-out loss drop (acceptance 4: >= {ISSUE_LOSS_DROP:.0%}), "
            f"{SFT_SHORT.get(r.name, r.name)}: {fmt(r.loss_before, '.4f')} -> "
            f"{fmt(r.loss_after, '.4f')} ({-100 * r.change:.1f} % lower), {met}."
        )
    return out


def fenced(text: str | None) -> list[str]:
    """``text`` as a fenced block whose fence no run of backticks in it closes."""
    if text is None:
        return ["(not generated)"]
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [
        f"{fence}text",
        text if text else "(empty: the model stopped at once)",
        fence,
    ]


def sample_lines(samples: list[Sample], runner: str) -> list[str]:
    """The held-out prompts with their reference and greedy generations."""
    if not samples:
        return []
    out = [
        "### Held-out generations (greedy), before and after training",
        "",
        f"The first {len(samples)} held-out prompts, rendered with the same template "
        "as in training; generation stops at the end-of-turn token. Before: the base "
        f"model; after: the {SFT_SHORT.get(runner, runner)} run.",
        "",
    ]
    for i, s in enumerate(samples, 1):
        out += [
            f"#### Held-out prompt {i}",
            "",
            "Prompt:",
            "",
            *fenced(s.prompt),
            "",
            "Reference answer:",
            "",
            *fenced(s.reference),
            "",
            "Before training:",
            "",
            *fenced(s.before),
            "",
            "After training:",
            "",
            *fenced(s.after),
            "",
        ]
    return out


def sft_notes() -> list[str]:
    """The definitions behind the columns, for the report's last section."""
    return [
        "train s: wall time of training as each framework measures it. tfsft: its "
        "metrics.json train_seconds (fit(), including the tracing of its step "
        "graphs, its end-of-epoch pass over the held-out rows and its checkpoint "
        "write); TRL: trainer.train() only (eager PyTorch, no evaluation inside "
        "it). Tokenization is done up front, outside it, by both.",
        "tokens/s = real (non-padding) tokens of the training rows x epochs / train "
        "s; response tokens/s counts only the tokens that carry loss (each "
        "response and the <|im_end|> that ends it), the same tokens for both "
        "runners.",
        "held-out loss: the token-weighted mean NLL (nats) over every response "
        "token of the held-out rows (sum of NLL / number of tokens), before "
        "training (the base model) and after. tfsft: its own evaluation "
        "(predict + response_metrics; after: its metrics.json loss) in the run's "
        "precision; TRL: bench_trl_sft.py's loop in float32, eval mode.",
        "peak RSS: ru_maxrss of each runner's training process (os.wait4), imports, "
        "model, data, training and the final evaluation included. tfsft's base-"
        "model evaluation and generations run in separate processes (tfsft-base, "
        "tfsft-after), not counted in its row.",
        "whole process s and CPU s / wall s: the training process from os.wait4; "
        "CPU s / wall s is how many cores it kept busy on average.",
        "Each runner shuffles with its own RNG (same seed, different algorithms) "
        "and initialises LoRA's A factor differently (B = 0 in both, so training "
        "starts from the base model), so small loss deltas are noise.",
    ]


def render_sft(report: SftReport) -> str:
    """The causal-LM section of docs/benchmarks.md (bench_sections places it)."""
    by_name = {r.name: r for r in report.rows}
    out = runs_section_head("Causal-LM SFT (LoRA)", report, results_table(report.rows))
    if "trl" in by_name:
        comparisons = [
            f"- {compare_sft(by_name[name], by_name['trl'])}"
            for name in ("tfsft", "tfsft_fp32")
            if name in by_name
        ]
        out += [*comparisons, ""] if comparisons else []
    if goals := goal_lines(report.rows):
        out += [*[f"- {g}" for g in goals], ""]
    out += sample_lines(report.samples, report.sample_runner)
    return "\n".join([*out, *section_tail(report)]) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a table cell (one line, no column breaks)."""
    return " ".join(text.split()).replace("|", "\\|")
