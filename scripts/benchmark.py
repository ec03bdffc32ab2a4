"""tfsft vs plain keras-hub vs HF transformers: same model, data and hyper-parameters.

Run from the repository root (the config's data paths are relative to it):

    python scripts/benchmark.py                      # 4,000 SST-2 rows, all runners
    python scripts/benchmark.py --train-rows 256 --runners tfsft,keras_hub
    python scripts/benchmark.py --set train.batch_size=32 --out /tmp/bench.md
    python scripts/benchmark.py --runners tfsft,hf,hf_fast --repeat 3  # medians
    python scripts/benchmark.py --config configs/conll2003_minilm.yaml  # NER
    python scripts/benchmark.py --config configs/sft_alpaca_smollm2.yaml  # SFT

Runners (each in its own process, one after another):
  tfsft      `tfsft train CONFIG --set data.max_train_examples=N --set train.epochs=1`
  keras_hub  keras_hub.models.TextClassifier.from_preset(...).fit, fixed padding
  hf         transformers Trainer on PyTorch CPU, dynamic padding, in its own venv
  hf_fast    the same Trainer recipe plus HF's documented CPU speed settings:
             length-grouped batches, a data-loader worker, bf16 autocast only on a
             CPU with native bf16 (bench_hf.fast_settings says what and why)
  fixed      tfsft's model on random ids, batch 32 x 128 tokens (MFU micro-benchmark)

Every runner's whole process is timed too (wall time from start to exit), next to
its training time. --repeat N runs the training runners N times, taking turns
(tfsft, hf, hf_fast, tfsft, hf, hf_fast, ...), and reports each runner's medians and
every run's figures; the matmul peaks and the fixed shapes run once. When tfsft's
metrics.json has `phase_seconds`, the report shows tfsft's time by phase.

The config's task picks the mode: `classification` (all five runners),
`token_classification` (tfsft and hf, the latter with AutoModelForTokenClassification
as HF's run_ner.py does; see bench_ner.py) or `causal_lm` (tfsft, tfsft_fp32 and trl:
LoRA SFT through `tfsft train` and TRL's SFTTrainer with PEFT; see bench_sft.py).
Hyper-parameters and the training rows come from the tfsft config after overrides,
so all runners train the same thing. The markdown goes to stdout and into the
mode's own section of --out (the other modes' sections are kept; see
bench_sections.py), progress to stderr. A benchmark, not a test: it asserts no times.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import EncoderDims, read_json
from bench_env import machine_facts, package_versions
from bench_ner import make_ner_plan, run_ner
from bench_report import FixedRow, Report, RunnerRow, method_notes, render
from bench_report_ner import NerReport, NerRow, ner_notes, render_ner
from bench_report_sft import SftReport, SftRow, render_sft, sft_notes
from bench_runners import Bench, Plan, say, tfsft_padding, training_spec
from bench_sections import SectionError, check_out, write_section
from bench_sft import SFT_RUNNERS, SftBench, make_sft_plan, run_sft

RUNNERS = ("tfsft", "keras_hub", "hf", "hf_fast", "fixed")
TRAINING_RUNNERS = ("tfsft", "keras_hub", "hf", "hf_fast")  # what --repeat repeats
ALL_RUNNERS = (*RUNNERS, *(r for r in SFT_RUNNERS if r not in RUNNERS))
TASKS = ("classification", "token_classification", "causal_lm")
CLASSIFICATION_ROWS = 4000  # --train-rows default but in the causal-LM mode (900)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__.split("\n\n")[0],
        epilog="Paths are relative to the working directory (run from the repo root).",
    )
    parser.add_argument("--config", default="configs/sst2_minilm.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tfsft config override, passed to every runner (repeatable)",
    )
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="training rows (tfsft's seeded subset); 0 = the whole training file; "
        f"default {CLASSIFICATION_ROWS}. Causal LM: the first N records (default 900)",
    )
    parser.add_argument(
        "--eval-rows",
        type=int,
        default=None,
        help="causal LM only: the held-out records after the training ones "
        "(default 99)",
    )
    parser.add_argument(
        "--runners",
        default=None,
        help=f"comma-separated subset of {','.join(ALL_RUNNERS)} (default: "
        f"{','.join(RUNNERS)} for a classification config, tfsft,hf for token "
        f"classification, {','.join(SFT_RUNNERS)} for causal LM)",
    )
    parser.add_argument(
        "--out",
        default="docs/benchmarks.md",
        type=Path,
        help="markdown file whose section for this mode is replaced (the rest kept)",
    )
    parser.add_argument(
        "--hf-venv",
        default=".bench/hf-venv",
        type=Path,
        help="venv with torch + transformers; created here when missing",
    )
    parser.add_argument(
        "--keep-runs",
        action="store_true",
        help="keep the tfsft run dir (default: keep only its metrics.json)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="classification: run each training runner N times, taking turns, and "
        "report the medians and every run (default 1)",
    )
    parser.add_argument("--fixed-steps", type=int, default=20, help="timed steps")
    parser.add_argument(
        "--fixed-precisions",
        default="default,mixed_bfloat16",
        help="precisions of the fixed-shapes rows; 'default' = the config's",
    )
    args = parser.parse_args(argv)
    if args.runners is not None:  # None: the mode's default, known once configured
        runners = [r.strip() for r in args.runners.split(",") if r.strip()]
        unknown = sorted(set(runners) - set(ALL_RUNNERS))
        if unknown or not runners:
            parser.error(
                f"--runners: unknown {unknown}; choose from {','.join(ALL_RUNNERS)}"
            )
        args.runners = [r for r in ALL_RUNNERS if r in runners]  # in this order
    if (args.train_rows or 0) < 0 or args.fixed_steps < 1:
        parser.error("--train-rows must be >= 0 and --fixed-steps >= 1")
    if args.eval_rows is not None and args.eval_rows < 1:
        parser.error("--eval-rows must be >= 1")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def run_order(runners: list[str], repeat: int) -> list[tuple[str, str]]:
    """(runner, child tag) for every training run, in the order they run: one run
    of each selected training runner per round, ``repeat`` rounds. Round 1's tag is
    the runner's name, later ones add "-2", "-3", ... (logs, Processes table)."""
    names = [r for r in TRAINING_RUNNERS if r in runners]
    return [
        (name, name if n == 1 else f"{name}-{n}")
        for n in range(1, repeat + 1)
        for name in names
    ]


def make_plan(args: argparse.Namespace) -> Plan:
    """Loads the config, the model dir and tfsft's training rows.

    Raises:
        TfsftError: a bad config, missing data, or MiniLM not installed.
    """
    import tfsft
    from tfsft.errors import ConfigError

    default_rows = CLASSIFICATION_ROWS if args.train_rows is None else args.train_rows
    rows = default_rows or "null"
    overrides = [f"data.max_train_examples={rows}", "train.epochs=1", *args.overrides]
    cfg = tfsft.load_config(args.config, overrides)
    if cfg.task not in TASKS:
        raise ConfigError(
            f"{args.config}: the benchmark needs task: {' or '.join(TASKS)} "
            f"(got {cfg.task})"
        )
    if args.repeat > 1 and cfg.task != "classification":
        raise ConfigError(
            f"--repeat: {cfg.task} configs run each runner once; --repeat is for "
            "classification configs"
        )
    if cfg.task == "token_classification" and "hf_fast" in (args.runners or ()):
        raise ConfigError(
            "--runners: hf_fast runs classification configs only; use "
            "--runners tfsft,hf for a token-classification config"
        )
    if cfg.task == "causal_lm":  # its own rows, split and checks (bench_sft.py)
        return make_sft_plan(args, cfg, ["train.epochs=1", *args.overrides])
    args.train_rows = default_rows
    extra = [r for r in args.runners or () if r not in RUNNERS]
    if extra:
        raise ConfigError(
            f"--runners: {','.join(extra)} run causal_lm configs only; choose from "
            f"{','.join(RUNNERS)}"
        )
    if cfg.task == "token_classification":  # before loading data: a quick error
        from bench_ner import ner_runners

        ner_runners(args.runners)
    if not cfg.data.validation:
        raise ConfigError(f"{args.config}: the benchmark needs a data.validation file")
    if cfg.train.schedule != "linear":
        # The keras-hub and HF runners implement the linear schedule only.
        raise ConfigError(
            f"train.schedule: the benchmark compares linear schedules only "
            f"(got {cfg.train.schedule!r}); add --set train.schedule=linear"
        )
    model_dir = Path(tfsft.resolve_preset(cfg.model.preset))
    hf_config = read_json(model_dir / "config.json") if model_dir.is_dir() else {}
    if "hidden_size" not in hf_config:
        raise ConfigError(
            f"model.preset: {cfg.model.preset} is not a Hugging Face-format model dir "
            "(config.json with hidden_size); all three runners need one"
        )
    dims = EncoderDims.from_hf_config(hf_config)
    if cfg.task == "token_classification":
        return make_ner_plan(args, cfg, overrides, model_dir, dims)
    # The very rows `tfsft train` will use: tfsft's own loader and seeded subset.
    splits = tfsft.load_splits(cfg)
    task = tfsft.get_task(cfg)
    labels = task.build_labels(splits.train, cfg.data)
    tc = cfg.train
    spec = training_spec(
        str(args.config), overrides, model_dir, cfg, len(splits.train)
    ) | {
        "num_classes": labels.num_outputs,
        "train": _split(
            splits.train, task.encode_targets(labels, splits.train, cfg.data)
        ),
        "validation": _split(
            splits.validation,
            task.encode_targets(labels, splits.validation, cfg.data),
        ),
    }
    warmup_steps, total_steps = spec["warmup_steps"], spec["total_steps"]
    hyper = {
        "model": f"{cfg.model.preset} ({model_dir})",
        "max length (tokens)": cfg.model.sequence_length,
        "batch size": tc.batch_size,
        "learning rate (peak)": tc.learning_rate,
        "schedule": f"linear warm-up {warmup_steps} steps "
        f"(ratio {tc.warmup_ratio}), then {tc.schedule} decay to 0 at {total_steps}",
        "optimizer": "AdamW, eps 1e-8, no decay on biases and LayerNorm",
        "weight decay": tc.weight_decay,
        "max grad norm (global)": tc.max_grad_norm,
        "epochs": tc.epochs,
        "seed": tc.seed,
        "dropout (head)": cfg.model.dropout,
        "train rows": f"{len(splits.train):,} of {cfg.data.train} "
        f"(tfsft's seeded subset, data.max_train_examples={rows})",
        "dev rows": f"{len(splits.validation):,} ({cfg.data.validation})",
        "tfsft runtime": f"precision {cfg.runtime.precision}, "
        f"jit_compile {cfg.runtime.jit_compile}",
    }
    runners = args.runners or list(RUNNERS)
    return Plan(overrides, spec, dims, hyper, tfsft_padding(cfg), runners)


def _split(examples: Any, labels: Any) -> dict[str, list]:
    if examples.pairs is not None:
        from tfsft.errors import ConfigError

        raise ConfigError("the benchmark covers single-text classification only")
    return {"texts": list(examples.texts), "labels": [int(y) for y in labels]}


def run_all(
    bench: Bench, runners: list[str], precisions: str, repeat: int = 1
) -> tuple[list[RunnerRow], list[FixedRow]]:
    """The selected runners, strictly one after another; the training runners
    ``repeat`` times, taking turns (run_order). Returns every training run's row."""
    if "hf" in runners or "hf_fast" in runners:
        bench.prepare_hf()  # pip is CPU-heavy: done before anything is timed
    bench.measure_peaks()
    rows = [
        getattr(bench, f"run_{name}")(tag) for name, tag in run_order(runners, repeat)
    ]
    fixed = []
    if "fixed" in runners:
        for precision in dict.fromkeys(p.strip() for p in precisions.split(",")):
            fixed.append(bench.run_fixed(precision))
    return rows, fixed


def render_section(
    plan: Plan,
    bench: Bench,
    rows: list[RunnerRow] | list[NerRow] | list[SftRow],
    fixed: list[FixedRow],
    argv: list[str] | None,
    load_start: tuple[float, float, float],
) -> str:
    """The markdown of this mode's section of the report."""
    machine = machine_facts()
    machine["load average (1/5/15 min) at start; at end"] = "; ".join(
        " ".join(f"{x:.2f}" for x in load) for load in (load_start, os.getloadavg())
    )
    shared = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "command": shlex.join(
            ["python", "scripts/benchmark.py", *(argv or sys.argv[1:])]
        ),
        "tfsft_command": bench.tfsft_command,
        "machine": machine,
        "versions": package_versions() | bench.versions,
        "hyper": plan.hyper,
        "processes": [
            {"process": tag, **dataclasses.asdict(child)}
            for tag, child in bench.children.items()
        ],
        "cores": len(os.sched_getaffinity(0)),
    }
    if plan.task == "token_classification":
        notes = ner_notes(plan.spec["sequence_length"]) + bench.notes
        return render_ner(NerReport(rows=rows, notes=notes, **shared))
    if isinstance(bench, SftBench):
        notes = sft_notes() + bench.notes
        samples, runner = bench.samples, bench.sample_runner
        report = SftReport(
            rows=rows, samples=samples, sample_runner=runner, notes=notes, **shared
        )
        return render_sft(report)
    notes = method_notes(plan.dims) + bench.notes
    return render(
        Report(peaks=bench.peaks, rows=rows, fixed=fixed, notes=notes, **shared)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from tfsft.errors import TfsftError
    except ImportError:
        print(
            "benchmark: error: cannot import tfsft; run it with the project's venv "
            "from the repo root (e.g. .venv/bin/python scripts/benchmark.py)",
            file=sys.stderr,
        )
        return 2
    try:
        check_out(args.out)  # a broken --out would only fail after the whole run
        plan = make_plan(args)
    except (TfsftError, SectionError) as e:
        hint = ""
        if "not found" in str(e):
            cwd = Path.cwd()
            hint = f" (relative paths resolve against {cwd}: run from the repo root)"
        print(f"benchmark: error: {e}{hint}", file=sys.stderr)
        return 2
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tfsft-bench-"))  # the data copy: never kept
    fixed: list[FixedRow] = []
    try:
        if plan.task == "causal_lm":
            bench = SftBench(args, plan, tmp)
            rows: list[RunnerRow] | list[NerRow] | list[SftRow] = run_sft(
                bench, plan.runners
            )
        elif plan.task == "token_classification":
            bench = Bench(args, plan, tmp)
            rows = run_ner(bench, plan.runners)
        else:
            bench = Bench(args, plan, tmp)
            rows, fixed = run_all(
                bench, plan.runners, args.fixed_precisions, args.repeat
            )
    except KeyboardInterrupt:
        print("benchmark: interrupted; nothing written", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render_section(plan, bench, rows, fixed, argv, load_start)
    print(text)  # first: the results survive a failed write below
    try:
        write_section(args.out, plan.task, text)
    except (OSError, SectionError) as e:  # e.g. its markers were edited meanwhile
        print(f"benchmark: error: not written: {e}", file=sys.stderr)
        return 2
    say(f"wrote the {plan.task} section of {args.out}; logs in {bench.logs}")
    failed = list(dict.fromkeys(r.name for r in rows if r.status == "failed"))
    failed += [r.label for r in fixed if r.status == "failed"]
    if failed:
        say(f"failed: {', '.join(failed)} (see the logs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
