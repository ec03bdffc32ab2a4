"""Turning classification benchmark results into markdown (docs/benchmarks.md).

Plain functions of plain data (no TensorFlow), so the formatting is unit-tested.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench_common import EncoderDims

RUNNER_TITLES = {
    "tfsft": "tfsft (`tfsft train`)",
    "keras_hub": "keras-hub `TextClassifier.fit`",
    "hf": "HF transformers `Trainer` (PyTorch)",
    "hf_fast": "HF `Trainer`, fastest CPU settings (PyTorch)",
}
SHORT_NAMES = {
    "tfsft": "tfsft",
    "keras_hub": "keras-hub",
    "hf": "HF",
    "hf_fast": "HF fast",
}
# Rows the tfsft row is compared with, in this order.
COMPARED = ("keras_hub", "hf", "hf_fast")
# The figures a median row takes over its runs (peak RSS: the largest).
MEDIAN_FIELDS = (
    "train_seconds",
    "process_seconds",
    "examples_per_second",
    "tokens_per_second",
    "flops_per_second",
    "mfu",
    "accuracy",
)
# metrics.json phase_seconds keys that are parts of another phase.
PART_OF = {"validation": "fit", "epoch_end": "fit"}
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
    process_seconds: float | None = None  # the runner's whole process, wall time
    phases: dict[str, float] = field(default_factory=dict)  # tfsft's phase_seconds
    runs: list[RunnerRow] = field(default_factory=list)  # what a median row sums up


def median_rows(rows: list[RunnerRow]) -> list[RunnerRow]:
    """One row per runner (in first-run order); a runner that ran more than once
    gets the median of its ok runs' figures, its phases' medians, and the runs
    themselves in ``runs`` (in run order)."""
    groups: dict[str, list[RunnerRow]] = {}
    for r in rows:
        groups.setdefault(r.name, []).append(r)
    out = []
    for runs in groups.values():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        ok = [r for r in runs if r.status == "ok"]
        if not ok:
            first = runs[0]
            out.append(
                dataclasses.replace(
                    first, message=f"{first.message} (all {len(runs)} runs)", runs=runs
                )
            )
            continue
        medians: dict[str, Any] = {
            key: _median([getattr(r, key) for r in ok]) for key in MEDIAN_FIELDS
        }
        sizes = [r.rss_bytes for r in ok if r.rss_bytes is not None]
        failed = len(runs) - len(ok)
        out.append(
            dataclasses.replace(
                ok[0],
                **medians,
                rss_bytes=max(sizes) if sizes else None,
                phases=median_phases([r.phases for r in ok]),
                message=f"{failed} of {len(runs)} runs failed" if failed else "",
                runs=runs,
            )
        )
    return out


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(known) if known else None


def median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each phase's median over the runs that timed it (first-seen order)."""
    keys = dict.fromkeys(k for phases in runs for k in phases)
    return {k: statistics.median(p[k] for p in runs if k in p) for k in keys}


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
    rows: list[RunnerRow]  # every training run, in run order (see render)
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


def _times(ratio: float, what: str) -> str:
    """``ratio`` (a's speed over b's) as "tfsft 1.25x as fast ..." words."""
    if math.isnan(ratio) or ratio <= 0:
        return "not comparable"
    if ratio >= 1:
        return f"{ratio:.2f}x as fast {what}"
    return f"{1 / ratio:.2f}x as slow {what}"


def compare_speed(a: RunnerRow, b: RunnerRow) -> str:
    """One sentence comparing (median) runner row ``a`` with ``b``: the ratio of
    their training examples/s, of their whole processes' wall times, and the
    delta of their dev accuracy."""
    name_a, name_b = (SHORT_NAMES.get(r.name, r.name) for r in (a, b))
    if a.status != "ok" or b.status != "ok" or not a.examples_per_second:
        return f"{name_a} vs {name_b}: not available ({name_b} did not run)"
    speed = a.examples_per_second / (b.examples_per_second or math.nan)
    text = (
        f"{name_a} vs {name_b}: training examples/s ratio {speed:.2f} "
        f"({name_a} {_times(speed, 'in training')}); "
    )
    if a.process_seconds and b.process_seconds:
        wall = a.process_seconds / b.process_seconds
        text += (
            f"whole-process wall ratio {wall:.2f} ({fmt(a.process_seconds)} s vs "
            f"{fmt(b.process_seconds)} s: {name_a} {_times(1 / wall, 'end to end')}); "
        )
    else:
        text += "whole-process wall ratio not available; "
    delta = 100 * ((a.accuracy or 0) - (b.accuracy or 0))
    return (
        text + f"dev accuracy {fmt(a.accuracy, '.3f')} vs {fmt(b.accuracy, '.3f')} "
        f"(delta {delta:+.1f} points)"
    )


def results_table(rows: list[RunnerRow]) -> list[str]:
    """One row per runner (medians for repeated runners: see median_rows)."""
    lines = [
        "| runner | precision | padding | train s | whole process s | examples/s "
        "| real tokens/s | achieved GFLOP/s | MFU (peak used) | peak RSS "
        "| dev accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        title = RUNNER_TITLES.get(r.name, r.name)
        if r.status != "ok":
            lines.append(f"| {title} | {r.status}: {r.message} |" + " |" * 9)
            continue
        if r.message:  # e.g. 1 of 3 runs failed
            title += f" ({r.message})"
        gflops = None if r.flops_per_second is None else r.flops_per_second / 1e9
        lines.append(
            f"| {title} | {r.precision} | {r.padding} | {fmt(r.train_seconds)} "
            f"| {fmt(r.process_seconds)} | {fmt(r.examples_per_second)} "
            f"| {fmt(r.tokens_per_second, ',.0f')} "
            f"| {fmt(gflops)} | {fmt_pct(r.mfu)} ({r.peak_name}) "
            f"| {fmt_bytes(r.rss_bytes)} | {fmt(r.accuracy, '.3f')} |"
        )
    return lines


def each_run_table(rows: list[RunnerRow]) -> list[str]:
    """Every run's figures, " / "-separated in run order, for runners that ran
    more than once (nothing when none did)."""
    repeated = [r for r in rows if len(r.runs) > 1]
    if not repeated:
        return []
    lines = [
        "| runner | runs ok | train s | whole process s | examples/s | MFU "
        "| dev accuracy |",
        "|---|---:|---|---|---|---|---|",
    ]
    columns = [
        ("train_seconds", ",.1f", 1),
        ("process_seconds", ",.1f", 1),
        ("examples_per_second", ",.1f", 1),
        ("mfu", ".1f", 100),
        ("accuracy", ".3f", 1),
    ]
    for r in repeated:
        ok = sum(run.status == "ok" for run in r.runs)
        cells = [
            " / ".join(
                fmt(None if v is None else scale * v, spec)
                if run.status == "ok" and (v := getattr(run, key)) is not None
                else ("-" if run.status == "ok" else run.status)
                for run in r.runs
            )
            + (" %" if key == "mfu" else "")
            for key, spec, scale in columns
        ]
        title = RUNNER_TITLES.get(r.name, r.name)
        lines.append(f"| {title} | {ok} of {len(r.runs)} | " + " | ".join(cells) + " |")
    return lines


def phase_lines(phases: dict[str, float]) -> list[tuple[str, float]]:
    """(label, seconds) rows of one tfsft run's phase_seconds: its phases in their
    order, the parts of fit under it, fit's own training steps, what no phase
    covers, and the total."""
    total = phases.get("total")
    top = {k: v for k, v in phases.items() if k != "total" and k not in PART_OF}
    out: list[tuple[str, float]] = []
    for key, seconds in top.items():
        out.append((key, seconds))
        parts = {k: v for k, v in phases.items() if PART_OF.get(k) == key}
        for part, value in parts.items():
            out.append((f"{key}: {part}", value))
        if parts:
            out.append(
                (
                    f"{key}: the rest (steps, input pipeline)",
                    seconds - sum(parts.values()),
                )
            )
    if total is not None:
        rest = total - sum(top.values())
        if rest >= 0.05:  # shown as 0.1 s or more
            out.append(("not in any phase", rest))
        out.append(("total (the whole process, from its start)", total))
    return out


def phase_table(row: RunnerRow) -> list[str]:
    """tfsft's time by phase: the medians over its ok runs (with each run's value
    when it ran more than once); nothing when its metrics.json had no phases."""
    runs = [r for r in row.runs if r.status == "ok" and r.phases] or (
        [row] if row.phases else []
    )
    if row.status != "ok" or not runs:
        return []
    per_run = [dict(phase_lines(r.phases)) for r in runs]
    labels = dict.fromkeys(label for lines in per_run for label in lines)
    totals = [r.phases["total"] for r in runs if "total" in r.phases]
    total = statistics.median(totals) if totals else None
    several = len(runs) > 1
    lines = [
        "| phase | seconds | share of the total |" + (" each run |" if several else ""),
        "|---|---:|---:|" + ("---|" if several else ""),
    ]
    for label in labels:
        values = [p.get(label) for p in per_run]
        median = statistics.median(v for v in values if v is not None)
        share = fmt_pct(median / total) if total else "-"
        each = " / ".join(fmt(v) for v in values)
        lines.append(
            f"| {label} | {fmt(median)} | {share} |" + (f" {each} |" if several else "")
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
        "whole process s: wall time of the runner's whole process, from its start "
        "to its exit (imports, reading and tokenizing the data, loading the model, "
        "training, the final evaluation, and for tfsft saving the model and "
        "writing its report): what a user running the command waits for. The "
        "comparison lines give both ratios: training examples/s (tfsft's over the "
        "other's) and whole-process wall time (tfsft's over the other's).",
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


def machine_summary(machine: dict[str, str]) -> str:
    """The machine in one line (CPU model, family/model, CPUs, the flags that
    matter), for every section with speed figures in it."""
    cpu = machine.get("CPU (lscpu)", "").split(", L2")[0]
    flags = machine.get("CPU flags that matter here", "")
    if not cpu:
        return "the machine under Machine and versions above"
    return cpu + (f"; flags {flags}" if flags else "")


def machine_line(machine: dict[str, str] | None) -> list[str]:
    return [] if machine is None else [f"Machine: {machine_summary(machine)}.", ""]


def processes_lines(
    processes: list[dict[str, Any]], cores: int, machine: dict[str, str] | None = None
) -> list[str]:
    if not processes:
        return []
    return [
        "### Processes (how much of the machine each runner got)",
        "",
        *machine_line(machine),
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
    """The classification section of docs/benchmarks.md (bench_sections places it).

    ``report.rows`` holds every training run; a runner that ran more than once
    (--repeat) is shown as its medians (median_rows) and each run's figures.
    """
    rows = median_rows(report.rows)
    by_name = {r.name: r for r in rows}
    runs = max((len(r.runs) for r in rows), default=1) or 1
    machine = machine_line(report.machine)
    if runs > 1:
        title = f"### Fine-tuning, median of {runs} runs each"
        how = (
            f"Each training runner ran {runs} times, the runners taking turns "
            "(one run of each, then the next round), so a slow spell on a shared "
            "machine hits them alike. The table shows each runner's medians; "
            "every run's figures follow it."
        )
    else:
        title, how = "### Fine-tuning, one run each", ""
    out = [
        *report_head("Sentence classification", report),
        "### Matmul peaks (TensorFlow, 2048 x 2048 x 2048, best of 5 rounds)",
        "",
        *machine,
        "| dtype | peak GFLOP/s | median GFLOP/s |",
        "|---|---:|---:|",
        *[
            f"| {name} | {p['flops_per_second'] / 1e9:,.1f} "
            f"| {p['median'] / 1e9:,.1f} |"
            for name, p in report.peaks.items()
        ],
        "",
        title,
        "",
        *machine,
        *([how, ""] if how else []),
        *results_table(rows),
        "",
    ]
    if "tfsft" in by_name:
        compared = [
            f"- {compare_speed(by_name['tfsft'], other)}"
            for key in COMPARED
            if (other := by_name.get(key))
        ]
        out += [*compared, ""] if compared else []
    each = each_run_table(rows)
    if each:
        out += [
            "### Each run (in the order they ran, separated by /)",
            "",
            *machine,
            *each,
            "",
        ]
    phases = phase_table(by_name["tfsft"]) if "tfsft" in by_name else []
    if phases:
        timed = [r for r in by_name["tfsft"].runs if r.status == "ok" and r.phases]
        median = f" (medians over its {len(timed)} runs)" if len(timed) > 1 else ""
        out += [
            "### tfsft time by phase",
            "",
            *machine,
            f"From its metrics.json `phase_seconds`{median}: where the whole "
            "`tfsft train` process's wall time went. A name like `fit: validation` "
            "is a part of the phase before the colon.",
            "",
            *phases,
            "",
        ]
    if report.fixed:
        out += [
            "### Fixed shapes (tfsft's model, random token ids, no padding)",
            "",
            *machine,
            *fixed_table(report.fixed),
            "",
            goal_sentence(report.fixed),
            "",
        ]
    out += processes_lines(report.processes, report.cores, report.machine)
    out += ["### How the figures are computed", "", *[f"- {n}" for n in report.notes]]
    return "\n".join(out) + "\n"
