"""Turning classification benchmark results into markdown (docs/benchmarks.md).

Plain functions of plain data (no TensorFlow), so the formatting is unit-tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench_common import EncoderDims

RUNNER_TITLES = {
    "tfsft": "tfsft (`tfsft train`)",
    "keras_hub": "keras-hub `TextClassifier.fit`",
    "hf": "HF transformers `Trainer` (PyTorch)",
}
SHORT_NAMES = {"tfsft": "tfsft", "keras_hub": "keras-hub", "hf": "HF"}
ISSUE_GOAL_MFU_BF16 = 0.40  # issue 5: >= 40 % of the bf16 matmul peak on fixed shapes


@dataclass
class RunnerRow:
    """One training runner's outcome; the numbers are None when it did not run."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    message: str = ""
    precision: str = ""
    padding: str = ""
    train_seconds: float | None = None
    examples_per_second: float | None = None
    tokens_per_second: float | None = None
    flops_per_second: float | None = None
    mfu: float | None = None
    peak_name: str = ""
    rss_bytes: int | None = None
    accuracy: float | None = None


@dataclass
class FixedRow:
    """The fixed-shapes micro-benchmark of tfsft's model in one precision."""

    label: str
    precision: str
    batch: int
    seq: int
    status: str = "ok"  # ok | failed
    message: str = ""
    steps: int = 0
    seconds: float = math.nan
    flops: float = math.nan
    rss_bytes: int | None = None
    mfu_bf16: float = math.nan
    mfu_fp32: float = math.nan


@dataclass
class Report:
    date: str
    command: str
    tfsft_command: str
    machine: dict[str, str]
    versions: dict[str, str]
    hyper: dict[str, Any]
    peaks: dict[str, dict[str, float]]
    rows: list[RunnerRow]
    fixed: list[FixedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # One dict per child process: process, wall_seconds, cpu_seconds, rss_bytes,
    # load_before, load_after (see bench_runners.Child).
    processes: list[dict[str, Any]] = field(default_factory=list)
    cores: int = 0


def fmt(value: float | None, spec: str = ",.1f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def fmt_pct(x: float | None) -> str:
    return fmt(None if x is None else 100 * x, ".1f", " %")


def compare(
    a: Any, b: Any, metric: str = "accuracy", label: str = "accuracy", spec: str = ".3f"
) -> str:
    """One sentence comparing runner row ``a`` with ``b``: the time ratio and the
    delta of their dev ``metric`` (a row attribute, shown as ``label``)."""
    name_a, name_b = (SHORT_NAMES.get(r.name, r.name) for r in (a, b))
    if a.status != "ok" or b.status != "ok" or not a.train_seconds:
        return f"{name_a} vs {name_b}: not available ({name_b} did not run)"
    ratio = a.train_seconds / (b.train_seconds or math.nan)
    speed = 1 / ratio if ratio <= 1 else ratio
    faster = f"{name_a} {speed:.2f}x as {'fast' if ratio <= 1 else 'slow'}"
    value_a, value_b = getattr(a, metric), getattr(b, metric)
    delta = 100 * ((value_a or 0) - (value_b or 0))
    return (
        f"{name_a} vs {name_b}: train time ratio {ratio:.2f} ({faster}); "
        f"dev {label} {fmt(value_a, spec)} vs {fmt(value_b, spec)} "
        f"(delta {delta:+.1f} points)"
    )


def results_table(rows: list[RunnerRow]) -> list[str]:
    lines = [
        "| runner | precision | padding | train s | examples/s | real tokens/s "
        "| achieved GFLOP/s | MFU (peak used) | peak RSS | dev accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        title = RUNNER_TITLES.get(r.name, r.name)
        if r.status != "ok":
            lines.append(f"| {title} | {r.status}: {r.message} |" + " |" * 8)
            continue
        gflops = None if r.flops_per_second is None else r.flops_per_second / 1e9
        lines.append(
            f"| {title} | {r.precision} | {r.padding} | {fmt(r.train_seconds)} "
            f"| {fmt(r.examples_per_second)} | {fmt(r.tokens_per_second, ',.0f')} "
            f"| {fmt(gflops)} | {fmt_pct(r.mfu)} ({r.peak_name}) "
            f"| {fmt_bytes(r.rss_bytes)} | {fmt(r.accuracy, '.3f')} |"
        )
    return lines


def fixed_table(rows: list[FixedRow]) -> list[str]:
    lines = [
        "| model | precision | batch x seq | timed steps | s/step | tokens/s "
        "| achieved GFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak | peak RSS |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.label} | {r.status}: {r.message} |" + " |" * 8)
            continue
        per_step = r.seconds / max(r.steps, 1)
        tokens = r.batch * r.seq * r.steps / r.seconds
        lines.append(
            f"| {r.label} | {r.precision} | {r.batch} x {r.seq} | {r.steps} "
            f"| {per_step:.3f} | {tokens:,.0f} | {r.flops / r.seconds / 1e9:,.1f} "
            f"| {fmt_pct(r.mfu_bf16)} | {fmt_pct(r.mfu_fp32)} "
            f"| {fmt_bytes(r.rss_bytes)} |"
        )
    return lines


def process_table(processes: list[dict[str, Any]], cores: int) -> list[str]:
    lines = [
        "| process | wall s | CPU s | cores busy (CPU s / wall s) "
        "| 1-min load average before -> after | peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in processes:
        busy = p["cpu_seconds"] / max(p["wall_seconds"], 1e-9)
        lines.append(
            f"| {p['process']} | {p['wall_seconds']:,.1f} | {p['cpu_seconds']:,.1f} "
            f"| {busy:.2f} of {cores} | {p['load_before']:.2f} -> "
            f"{p['load_after']:.2f} | {fmt_bytes(p['rss_bytes'])} |"
        )
    return lines


def contention_warning(
    processes: list[dict[str, Any]], cores: int, peaks: bool = True
) -> str | None:
    """A warning when other jobs clearly shared the CPUs during the run, else None.

    A runner busy on every core adds about ``cores`` to the load average by itself;
    a load above ``cores + 1`` means at least one more busy thread from elsewhere.
    """
    if not processes or not cores:
        return None
    peak_load = max(max(p["load_before"], p["load_after"]) for p in processes)
    if peak_load <= cores + 1:
        return None
    busy = [p["cpu_seconds"] / max(p["wall_seconds"], 1e-9) for p in processes]
    return (
        f"**This run shared the machine with other jobs**: the 1-minute load "
        f"average reached {peak_load:.1f} on {cores} cores (this benchmark alone "
        f"accounts for about {cores}), and the runner processes kept only "
        f"{min(busy):.2f}-{max(busy):.2f} of {cores} cores busy on average. Times "
        "are inflated, "
        + ("the matmul peaks deflated, " if peaks else "")
        + "and the ratios between runners may differ on an idle machine."
    )


def goal_sentence(rows: list[FixedRow]) -> str:
    default = next((r for r in rows if r.status == "ok"), None)
    if default is None:
        return "The fixed-shapes micro-benchmark did not run."
    met = "meets" if default.mfu_bf16 >= ISSUE_GOAL_MFU_BF16 else "does not meet"
    best = max((r for r in rows if r.status == "ok"), key=lambda r: r.mfu_bf16)
    text = (
        f"Issue 5's goal is >= {ISSUE_GOAL_MFU_BF16:.0%} of the bf16 peak on fixed "
        f"shapes. tfsft's default precision ({default.precision}) reaches "
        f"{fmt_pct(default.mfu_bf16)} of the bf16 peak, which {met} it"
    )
    if best is not default:
        text += f"; the best row here ({best.label}) reaches {fmt_pct(best.mfu_bf16)}"
    return text + "."


def method_notes(d: EncoderDims) -> list[str]:
    """The definitions behind every column, for the report's last section."""
    return [
        "train s: wall time of the training epoch(s) including the end-of-epoch "
        "dev evaluation each framework runs inside fit()/train() (tfsft: its "
        "metrics.json train_seconds, which also covers its checkpoint writes). "
        "Tokenization is outside it for tfsft and HF (done up front) and inside it "
        "for keras-hub (the preprocessor is mapped in tf.data during fit).",
        "examples/s = training rows x epochs / train s.",
        "real tokens/s = non-padding tokens trained on ([CLS] and [SEP] included, "
        "truncated at the max length) x epochs / train s; padding is not counted.",
        f"Training FLOPs = 6 x P x T + 12 x L x d x sum(s_i^2) + 6 x P_head x S, "
        f"with P = {d.per_token_params:,} non-embedding parameters "
        f"({d.layers} layers, d = {d.hidden}, FFN {d.intermediate}), T real tokens, "
        "s_i the real length of sequence i (the attention term: Q.K^T and "
        "attention.V, forward + backward), P_head = pooler + classifier applied once "
        "per sequence, S sequences. Padding, softmax, GELU, LayerNorm and optimizer "
        "arithmetic are not counted, so padded runs score lower: MFU measures useful "
        "work.",
        "MFU = training FLOPs / train s / matmul peak. Runs in bf16 are compared with "
        "the bf16 peak, all others with the fp32 peak; the HF row (PyTorch) is "
        "compared with TensorFlow's fp32 matmul peak, measured in the same invocation.",
        "peak RSS: ru_maxrss of each runner's process (os.wait4), so imports, the "
        "model, the data and the framework's own buffers are all in it.",
        "Each runner shuffles with its own RNG (same seed, different algorithms), so "
        "the example order differs; on 4,000 SST-2 rows the order alone moves dev "
        "accuracy by about 1.5 points (docs/experiments.md), so small accuracy "
        "deltas are noise.",
        "Fixed shapes: tfsft's build_model + compile_model (its optimizer, loss and "
        "precision setting) fed one random batch of 32 x 128 token ids repeatedly "
        "(no padding, no data pipeline); timed over the steps after 3 warm-up steps.",
    ]


def intro_lines(
    date: str, processes: list[dict[str, Any]], cores: int, peaks: bool = True
) -> list[str]:
    """What every section says first: when, how, and a warning if the CPUs were
    shared (``peaks``: the section reports matmul peaks)."""
    warning = contention_warning(processes, cores, peaks)
    return [
        f"Written by `scripts/benchmark.py` on {date}. Each runner ran in its own "
        "process, one after another. The machine may have been shared with other "
        "jobs (load averages below), so treat the timings as indicative. Re-run with "
        "the command below (`python scripts/benchmark.py --help` lists the flags); "
        "a run in this mode replaces this part of the file and keeps the rest.",
        "",
        *([warning, ""] if warning else []),
    ]


def setup_lines(
    machine: dict[str, str],
    versions: dict[str, str],
    command: str,
    tfsft_command: str,
    hyper: dict[str, Any],
) -> list[str]:
    """Machine, versions, the exact commands and the hyper-parameters."""
    return [
        "### Machine and versions",
        "",
        *[f"- {k}: {v}" for k, v in machine.items()],
        *[f"- {k}: {v}" for k, v in versions.items()],
        "",
        "### Command",
        "",
        # The docs test runs every ```bash block unless it is marked like this.
        "<!-- docs-test: skip: the benchmark itself: real data and models, minutes "
        "to an hour on 2 cores -->",
        "```bash",
        command,
        "```",
        "",
        "The tfsft runner ran:",
        "",
        "<!-- docs-test: skip: a record of what that benchmark run executed, not an "
        "instruction -->",
        "```bash",
        tfsft_command,
        "```",
        "",
        "### Hyper-parameters (from the tfsft config after overrides; all runners)",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in hyper.items()],
        "",
    ]


def processes_lines(processes: list[dict[str, Any]], cores: int) -> list[str]:
    if not processes:
        return []
    return [
        "### Processes (how much of the machine each runner got)",
        "",
        "Whole process lifetimes (imports, model loading and tokenization "
        "included). A load average above the core count while a runner ran "
        "means other jobs shared the CPUs, and its times are inflated.",
        "",
        *process_table(processes, cores),
        "",
    ]


def report_head(title: str, report: Any, peaks: bool = True) -> list[str]:
    """A section's title, intro, and machine / versions / command / settings."""
    return [
        f"## {title}",
        "",
        *intro_lines(report.date, report.processes, report.cores, peaks=peaks),
        *setup_lines(
            report.machine,
            report.versions,
            report.command,
            report.tfsft_command,
            report.hyper,
        ),
    ]


def runs_section_head(title: str, report: Any, table: list[str]) -> list[str]:
    """A fine-tuning section's title, intro, machine/versions/command and its
    one-run-each results ``table`` (NER and causal-LM reports share the shape)."""
    return [
        *report_head(title, report, peaks=False),
        "### Fine-tuning, one run each",
        "",
        *table,
        "",
    ]


def section_tail(report: Any) -> list[str]:
    """The processes table and the notes on how the figures are computed."""
    return [
        *processes_lines(report.processes, report.cores),
        "### How the figures are computed",
        "",
        *[f"- {n}" for n in report.notes],
    ]


def render(report: Report) -> str:
    """The classification section of docs/benchmarks.md (bench_sections places it)."""
    by_name = {r.name: r for r in report.rows}
    out = [
        *report_head("Sentence classification", report),
        "### Matmul peaks (TensorFlow, 2048 x 2048 x 2048, best of 5 rounds)",
        "",
        "| dtype | peak GFLOP/s | median GFLOP/s |",
        "|---|---:|---:|",
        *[
            f"| {name} | {p['flops_per_second'] / 1e9:,.1f} "
            f"| {p['median'] / 1e9:,.1f} |"
            for name, p in report.peaks.items()
        ],
        "",
        "### Fine-tuning, one run each",
        "",
        *results_table(report.rows),
        "",
    ]
    if "tfsft" in by_name:
        out += [
            f"- {compare(by_name['tfsft'], other)}"
            for key in ("keras_hub", "hf")
            if (other := by_name.get(key))
        ]
        out.append("")
    if report.fixed:
        out += [
            "### Fixed shapes (tfsft's model, random token ids, no padding)",
            "",
            *fixed_table(report.fixed),
            "",
            goal_sentence(report.fixed),
            "",
        ]
    out += processes_lines(report.processes, report.cores)
    out += ["### How the figures are computed", "", *[f"- {n}" for n in report.notes]]
    return "\n".join(out) + "\n"
