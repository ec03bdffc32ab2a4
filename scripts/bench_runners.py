"""Running each benchmark runner in its own process and turning results into rows.

Used by benchmark.py. Children are started one after another, never concurrently,
and each one's peak RSS comes from os.wait4 on that child alone.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import EncoderDims, TokenStats, mfu, read_json, training_flops
from bench_common import write_json as write_spec
from bench_hf_venv import ensure_hf_venv
from bench_report import FixedRow, RunnerRow

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
PEAK_KEYS = {"bf16": "bfloat16", "fp32": "float32"}
# The fixed-shapes micro-benchmark: batch 32 x 128 tokens, timed after
# 3 warm-up steps (tracing, oneDNN kernel selection).
FIXED_BATCH, FIXED_SEQ, FIXED_WARMUP = 32, 128, 3
# Why hf_fast uses what it uses: measured on the project machine (AMD EPYC Zen 3,
# 2 cores, no AVX-512/AMX) with 1,024 SST-2 rows, bench_hf.py's train seconds.
HF_FAST_EVIDENCE = (
    "Measured for hf_fast on a 2-core AMD EPYC (Zen 3; no avx512_bf16/amx_bf16), "
    "1,024 SST-2 rows, train s: the hf recipe 41.2; with length grouping and 0 "
    "data-loader workers 22.0 and 22.7, 1 worker 26.0 and 26.0, 2 workers 26.6 and "
    "25.3 (a worker competes with the 2 torch threads for the 2 cores), so 0; "
    "torch_compile=True (inductor, works offline with the system g++) 171.1, as it "
    "recompiles for each batch width, so left out; the optimizer is already "
    "transformers' default adamw_torch_fused."
)


def say(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    """Everything the runners share, resolved once in this (TensorFlow-free) process."""

    overrides: list[str]
    spec: dict[str, Any]
    dims: EncoderDims
    hyper: dict[str, Any]
    padding: str
    runners: list[str] = field(default_factory=list)  # in the order they run
    task: str = "classification"  # or token_classification


def tfsft_padding(cfg: Any) -> str:
    """How `tfsft train` pads its batches, in words."""
    from tfsft.data.pipeline import bucket_widths  # imports TF: only once data is ok

    widths = bucket_widths(cfg.data.length_buckets, cfg.model.sequence_length)
    if not widths:
        return f"fixed {cfg.model.sequence_length}"
    return (
        f"widths {widths}, length-grouped windows of {cfg.data.length_grouping} batches"
    )


def training_spec(
    config: str, overrides: list[str], model_dir: Path, cfg: Any, rows: int
) -> dict[str, Any]:
    """What every runner trains with, read from the tfsft config after overrides.

    Steps count ``rows`` training examples, as HF's Trainer counts them (tfsft's
    own count: optim.py, trainer.py).
    """
    tc = cfg.train
    total_steps = math.ceil(rows / tc.batch_size) * tc.epochs
    return {
        "config": config,
        "overrides": overrides,
        "model_dir": str(model_dir),
        "sequence_length": cfg.model.sequence_length,
        "dropout": cfg.model.dropout,
        "batch_size": tc.batch_size,
        "epochs": tc.epochs,
        "learning_rate": tc.learning_rate,
        "weight_decay": tc.weight_decay,
        "warmup_steps": round(tc.warmup_ratio * total_steps),
        "total_steps": total_steps,
        "max_grad_norm": tc.max_grad_norm,
        "seed": tc.seed,
    }


def child_env(with_tfsft: bool) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if with_tfsft:  # the tfsft this script imported (this checkout), not another
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
        )
    else:  # the HF venv must not see the tfsft venv's packages
        env.pop("PYTHONPATH", None)
    return env


@dataclass
class Child:
    """How one runner process went: its exit code and what it used."""

    code: int
    rss_bytes: int
    wall_seconds: float
    cpu_seconds: float
    load_before: float  # 1-minute load average when it started
    load_after: float


def run_child(
    command: list[str], log: Path, env: dict[str, str], stdout: Path | None = None
) -> Child:
    """Runs one runner process to the end.

    os.wait4 gives the rusage of this one child (ru_maxrss in KiB on Linux), unlike
    RUSAGE_CHILDREN, which is the maximum over every child reaped so far. CPU time
    over wall time shows how many cores the child really got on a shared machine.
    """
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(log.open("w", encoding="utf-8"))
        out = stack.enter_context(stdout.open("w", encoding="utf-8")) if stdout else err
        err.write(f"$ {shlex.join(command)}\n")
        err.flush()
        load_before, start = os.getloadavg()[0], time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: stop our child before leaving
            proc.terminate()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(
        code=proc.returncode,
        rss_bytes=usage.ru_maxrss * 1024,
        wall_seconds=time.perf_counter() - start,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


def tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:] if line.strip())


class Bench:
    """Runs the children in order and turns their results into report rows."""

    def __init__(self, args: argparse.Namespace, plan: Plan, tmp: Path) -> None:
        self.args, self.plan, self.tmp = args, plan, tmp
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs = Path(".bench") / "logs" / stamp
        self.logs.mkdir(parents=True, exist_ok=True)
        self.tfsft_runs = Path(".bench") / "tfsft-runs" / stamp
        self.spec_file = tmp / "spec.json"
        write_spec(self.spec_file, plan.spec)
        self.peaks: dict[str, dict[str, float]] = {}
        self.tfsft_precision = "float32"
        self.train_lengths: list[int] = []
        self.versions: dict[str, str] = {}
        self.notes: list[str] = []
        self.hf_python: Path | None = None
        self.hf_message = ""
        self.tfsft_command = "(tfsft runner not selected)"
        self.tfsft_status: dict[str, Any] = {}
        self.children: dict[str, Child] = {}

    def note(self, text: str) -> None:
        """Adds a note to the report once (repeated runs say the same things)."""
        if text not in self.notes:
            self.notes.append(text)

    def spawn(
        self, tag: str, command: list[str], env: dict[str, str], stdout: Path | None
    ) -> tuple[int, int, Path]:
        """Runs a child with its log in the logs dir; returns (code, RSS, log)."""
        log = self.logs / f"{tag}.log"
        child = run_child(command, log, env, stdout)
        self.children[tag] = child
        return child.code, child.rss_bytes, log

    def tf_child(
        self, mode: str, tag: str | None = None, extra: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any] | None, int, Path]:
        """Runs `bench_tf.py MODE`; returns (result or None, peak RSS, log path).

        ``tag`` names the log and result files (several fixed-shapes runs), and
        ``extra`` adds keys to that run's spec.
        """
        tag = tag or mode
        spec = self.spec_file
        if extra:
            spec = self.tmp / f"spec-{tag}.json"
            write_spec(spec, {**self.plan.spec, **extra})
        out = self.tmp / f"{tag}.json"
        command = [
            sys.executable,
            str(SCRIPTS / "bench_tf.py"),
            mode,
            str(spec),
            str(out),
        ]
        code, rss, log = self.spawn(tag, command, child_env(True), None)
        return (read_json(out) if code == 0 else None), rss, log

    def measure_peaks(self) -> None:
        say("matmul peaks (fp32, bf16) and token lengths")
        result, _, log = self.tf_child("peaks")
        if result is None:
            say(f"peaks failed: {tail(log)}")
            self.peaks = {
                k: {"flops_per_second": math.nan, "median": math.nan}
                for k in PEAK_KEYS.values()
            }
            return
        self.peaks = result["peaks"]
        self.tfsft_precision = result["tfsft_precision"]
        self.train_lengths = result["train_lengths"]
        for name, p in self.peaks.items():
            say(f"  {name} peak {p['flops_per_second'] / 1e9:,.1f} GFLOP/s")

    def row(
        self, name: str, result: dict[str, Any], tag: str, padding: str
    ) -> RunnerRow:
        """The report row of runner ``name`` from its ``result`` and its process
        (the child spawned as ``tag``)."""
        spec, precision = self.plan.spec, result["precision"]
        child = self.children[tag]
        seconds = result["train_seconds"]
        stats = TokenStats.from_lengths(result["train_lengths"], spec["epochs"])
        flops = training_flops(self.plan.dims, stats, spec["num_classes"])
        peak_name = "bf16" if "bfloat16" in precision else "fp32"
        peak = self.peaks[PEAK_KEYS[peak_name]]["flops_per_second"]
        return RunnerRow(
            name=name,
            precision=precision,
            padding=padding,
            train_seconds=seconds,
            examples_per_second=stats.sequences / seconds,
            tokens_per_second=stats.tokens / seconds,
            flops_per_second=flops / seconds,
            mfu=mfu(flops, seconds, peak),
            peak_name=peak_name,
            rss_bytes=child.rss_bytes,
            accuracy=result["accuracy"],
            process_seconds=child.wall_seconds,
            phases=result.get("phases") or {},
        )

    def train_tfsft(self, tag: str = "tfsft") -> dict[str, Any] | str:
        """Runs `tfsft train` as child ``tag``; returns its metrics.json, or why it
        failed."""
        command = ["tfsft", "train", self.args.config]
        for item in [*self.plan.overrides, f"train.output_dir={self.tfsft_runs}"]:
            command += ["--set", item]
        self.tfsft_command = shlex.join(command)
        say(f"{tag}: {self.tfsft_command}")
        stdout = self.logs / f"{tag}.stdout"
        argv = [sys.executable, "-m", "tfsft", *command[1:]]
        code, _, log = self.spawn(tag, argv, child_env(True), stdout)
        if code != 0:
            return f"exit {code}: {tail(log)}"
        run_dir = Path(stdout.read_text().strip().splitlines()[-1])
        metrics = read_json(run_dir / "metrics.json")
        from tfsft.runs import read_status  # the parent has tfsft; children may not

        self.tfsft_status = read_status(run_dir)  # holds the precision it used
        copy = self.logs / f"{tag}-metrics.json"
        shutil.copy(run_dir / "metrics.json", copy)
        kept = f"run dir {run_dir}"
        if not self.args.keep_runs:  # a run dir holds ~200 MB of weights
            shutil.rmtree(self.tfsft_runs, ignore_errors=True)  # this invocation's only
            kept = f"copied to {copy}"
        self.notes.append(
            f"{tag}'s own metrics.json: train_seconds {metrics['train_seconds']}, "
            f"train_examples_per_second {metrics['train_examples_per_second']} "
            f"({kept})."
        )
        return metrics

    def run_tfsft(self, tag: str = "tfsft") -> RunnerRow:
        metrics = self.train_tfsft(tag)
        if isinstance(metrics, str):
            return RunnerRow("tfsft", "failed", metrics)
        result = {
            "train_seconds": metrics["train_seconds"],
            "accuracy": metrics["accuracy"],
            "train_lengths": self.train_lengths,
            "precision": self.tfsft_precision,
            # Where the process's time went (newer tfsft only; a dict of seconds).
            "phases": metrics.get("phase_seconds") or {},
        }
        return self.row("tfsft", result, tag, self.plan.padding)

    def run_keras_hub(self, tag: str = "keras_hub") -> RunnerRow:
        say(f"{tag}: keras-hub TextClassifier.fit")
        result, _, log = self.tf_child("keras_hub", tag)
        if result is None:
            return RunnerRow("keras_hub", "failed", tail(log))
        padding = f"fixed {self.plan.spec['sequence_length']}"
        return self.row("keras_hub", result, tag, padding)

    def prepare_hf(self) -> None:
        """Creates or checks the HF venv (pip is CPU-heavy: before any timing)."""
        venv = self.args.hf_venv
        say(f"HF venv {venv}")
        self.hf_python, message = ensure_hf_venv(venv, self.logs / "hf-venv.log", say)
        self.hf_message = f"HF venv: {message}"
        self.notes.append(self.hf_message + ".")
        say(message)

    def train_hf(
        self, script: str, tag: str = "hf", extra: dict[str, Any] | None = None
    ) -> dict[str, Any] | str:
        """Runs an HF runner ``script`` in the HF venv (prepare_hf first) as child
        ``tag``, ``extra`` added to its spec; returns its result, or why it
        failed."""
        if self.hf_python is None:
            raise RuntimeError("train_hf: prepare_hf() found no HF venv")
        spec = self.spec_file
        if extra:
            spec = self.tmp / f"spec-{tag}.json"
            write_spec(spec, {**self.plan.spec, **extra})
        out = self.tmp / f"{tag}.json"
        command = [str(self.hf_python), str(SCRIPTS / script), str(spec), str(out)]
        code, _, log = self.spawn(tag, command, child_env(False), None)
        if code != 0:
            return f"exit {code}: {tail(log)}"
        result = read_json(out)
        self.versions |= result["versions"]
        self.note(f"HF: torch.set_num_threads({result['threads']}).")
        return result

    def run_hf(self, tag: str = "hf", fast: bool = False) -> RunnerRow:
        """The HF Trainer recipe; ``fast``: the hf_fast runner, the same recipe
        with the Trainer's CPU speed settings (bench_hf.fast_settings)."""
        name = "hf_fast" if fast else "hf"
        if self.hf_python is None:
            return RunnerRow(name, "skipped", self.hf_message)
        say(f"{tag}: HF transformers Trainer" + (", fast CPU settings" if fast else ""))
        result = self.train_hf("bench_hf.py", tag, {"fast": True} if fast else None)
        if isinstance(result, str):
            return RunnerRow(name, "failed", result)
        if self.train_lengths:
            # Both tokenizers come from the same vocab.txt; say so if they disagree.
            hf_tokens, tf_tokens = sum(result["train_lengths"]), sum(self.train_lengths)
            self.note(
                f"Real training tokens per epoch: {tf_tokens:,} with the keras-hub "
                f"tokenizer (tfsft, keras-hub), {hf_tokens:,} with the HF tokenizer."
            )
        padding = "dynamic (per batch)"
        if fast:
            settings = ", ".join(f"{k}={v!r}" for k, v in result["settings"].items())
            self.note(
                f"HF fast (hf_fast): the hf recipe plus TrainingArguments({settings}); "
                + "; ".join(result["notes"])
                + f". {HF_FAST_EVIDENCE}"
            )
            padding = "dynamic (per batch), length-grouped batches"
        return self.row(name, result, tag, padding)

    def run_hf_fast(self, tag: str = "hf_fast") -> RunnerRow:
        return self.run_hf(tag, fast=True)

    def run_fixed(self, precision: str) -> FixedRow:
        label = "tfsft default" if precision == "default" else f"tfsft {precision}"
        fixed = {
            "batch": FIXED_BATCH,
            "seq": FIXED_SEQ,
            "warmup": FIXED_WARMUP,
            "steps": self.args.fixed_steps,
            "precision": None if precision == "default" else precision,
        }
        shape = f"{FIXED_BATCH} x {FIXED_SEQ}"
        say(f"fixed shapes: {label}, {shape}, {fixed['steps']} timed steps")
        result, rss, log = self.tf_child(
            "fixed_shapes", f"fixed-{precision}", {"fixed": fixed}
        )
        if result is None:
            return FixedRow(
                label, precision, FIXED_BATCH, FIXED_SEQ, "failed", tail(log)
            )
        stats = TokenStats.fixed(result["batch"], result["seq"], result["steps"])
        flops = training_flops(self.plan.dims, stats, self.plan.spec["num_classes"])
        seconds = result["seconds"]
        return FixedRow(
            label=label,
            precision=result["precision"]
            + (", jit_compile" if result["jit_compile"] else ""),
            batch=result["batch"],
            seq=result["seq"],
            steps=result["steps"],
            seconds=seconds,
            flops=flops,
            rss_bytes=rss,
            mfu_bf16=mfu(flops, seconds, self.peaks["bfloat16"]["flops_per_second"]),
            mfu_fp32=mfu(flops, seconds, self.peaks["float32"]["flops_per_second"]),
        )
