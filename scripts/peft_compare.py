"""Compares fine-tuning methods on SST-2 with MiniLM, and LoRA on the causal LM.

    python scripts/peft_compare.py            # every method; writes peft-results.md
    python scripts/peft_compare.py --only lora-r8 --rows 2000 --out /tmp/p.md

Each method trains in its own `tfsft train` process (configs/sst2_minilm.yaml on
a fixed, seeded subset of ``--rows`` training rows, one epoch; the dev set is the
full SST-2 dev set), one after another, so peak RSS (os.wait4 of that process)
and train time are its own. The causal-LM row trains LoRA on the first
``--sft-rows`` records of configs/sft_alpaca_smollm2.yaml's split and reports the
held-out response loss before (the base model, measured in a child process) and
after.

Each method's learning rate is its own (METHODS): methods that train few
weights from a zero or random start need larger steps than full fine-tuning.
Results are kept in ``--work`` as JSON, so ``--reuse`` rewrites the table
without retraining what is already there.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench_env import machine_facts, package_versions
from bench_runners import REPO, child_env, run_child, say, tail

SST2 = REPO / "configs" / "sst2_minilm.yaml"
SFT = REPO / "configs" / "sft_alpaca_smollm2.yaml"


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    overrides: tuple[str, ...]
    why: str


METHODS = [
    Method(
        "full",
        "full fine-tuning",
        ("train.learning_rate=1e-4",),
        "the shipped SST-2 recipe (configs/sst2_minilm.yaml: 1e-4 beat 5e-5 on "
        "4,000 rows)",
    ),
    Method(
        "head",
        "head only (frozen backbone)",
        ("model.freeze=backbone", "train.learning_rate=1e-2"),
        "a linear probe on the frozen pooled [CLS] vector (one layer from a random "
        "start): 1e-2; 1e-3 gave 0.532 on the same rows, near chance",
    ),
    Method(
        "lora-r8",
        "LoRA r 8 (query, value), alpha 16",
        (
            "peft.method=lora",
            "peft.rank=8",
            "peft.alpha=16",
            "train.learning_rate=2e-3",
        ),
        "B starts at zero and the update is low-rank, so LoRA wants far more than "
        "full fine-tuning's rate; on these rows 1e-3 gave 0.828, 2e-3 0.831, 4e-3 "
        "0.811 (one run each, before this table)",
    ),
    Method(
        "lora-r8-all",
        "LoRA r 8 (all-linear: q, k, v, o and both feed-forward), alpha 16",
        (
            "peft.method=lora",
            "peft.rank=8",
            "peft.alpha=16",
            "peft.targets=all-linear",
            "train.learning_rate=1e-3",
        ),
        "1e-3, the first rate tried (0.846 in a run before this table)",
    ),
    Method(
        "adapter",
        "bottleneck adapters (dim 64, attention + feed-forward)",
        ("peft.method=adapter", "peft.adapter_dim=64", "train.learning_rate=1e-3"),
        "Houlsby et al. used 1e-4 to 1e-3; the top of that range for one epoch",
    ),
    Method(
        "prompt",
        "prompt tuning (20 virtual tokens)",
        (
            "peft.method=prompt",
            "peft.num_virtual_tokens=20",
            "train.learning_rate=3e-2",
        ),
        "only 20 x 384 input embeddings train: prompt tuning needs rates of 1e-2 "
        "to 3e-1 (Lester et al. used 0.3 with Adafactor); 3e-2 with AdamW",
    ),
]


def train_child(config: Path, overrides: list[str], out: Path) -> dict:
    """`tfsft train CONFIG --set ...` in a child process: its metrics and what the
    process used (or the error it ended with)."""
    command = [sys.executable, "-m", "tfsft", "train", str(config)]
    for item in overrides:
        command += ["--set", item]
    child = run_child(command, out / "train.log", child_env(True), out / "stdout.txt")
    if child.code != 0:
        return {"error": tail(out / "train.log")}
    run_dir = Path((out / "stdout.txt").read_text().strip().splitlines()[-1])
    return {
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "rss_bytes": child.rss_bytes,
        "cpu_per_wall": child.cpu_seconds / max(child.wall_seconds, 1e-9),
        "run_dir": str(run_dir),
    }


def run_method(method: Method, rows: int, work: Path) -> dict:
    """Trains one method on the SST-2 subset."""
    out = work / method.name
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"name=peft-{method.name}",
        f"data.max_train_examples={rows}",
        f"train.output_dir={out / 'runs'}",
        *method.overrides,
    ]
    say(f"{method.name}: training on {rows:,} rows")
    return train_child(SST2, overrides, out)


def run_causal(records: int, work: Path) -> dict:
    """LoRA SFT of SmolLM2 on ``records`` rows; held-out loss before and after."""
    out = work / "causal-lora"
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        "name=peft-causal-lora",
        f"data.max_train_examples={records}",
        f"train.output_dir={out / 'runs'}",
        "generate.samples_per_epoch=0",
    ]
    base_file = out / "base.json"
    if not base_file.is_file():
        say("causal LM: the base model's held-out loss")
        command = [sys.executable, __file__, "--base-loss", str(base_file), "--"]
        child = run_child([*command, *overrides], out / "base.log", child_env(True))
        if child.code != 0:
            return {"error": tail(out / "base.log")}
    say(f"causal LM: LoRA on {records} records")
    result = train_child(SFT, overrides, out)
    if "error" not in result:
        result["base"] = json.loads(base_file.read_text())
    return result


def base_loss(out: Path, overrides: list[str]) -> None:
    """Child: the untrained model's response loss on the held-out split."""
    import tfsft
    from tfsft.evaluation.inference import config_widths, predict_outputs
    from tfsft.models.build import build_model
    from tfsft.tasks.causal_lm import response_metrics
    from tfsft.training.prepare import prepare_data
    from tfsft.training.strategy import seed_everything, set_precision

    cfg = tfsft.load_config(SFT, overrides)
    seed_everything(cfg.train.seed)
    policy = set_precision(cfg.runtime.precision)
    data = prepare_data(cfg)
    held = data.encoded["validation"]
    model = build_model(cfg.model, data.labels, cfg.task)
    outputs = predict_outputs(
        model, data.task, held, cfg.train.batch_size, config_widths(cfg)
    )
    metrics = response_metrics(outputs, held.sample_weight)
    out.write_text(
        json.dumps(metrics | {"precision": policy, "rows": len(data.splits.validation)})
    )


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / max(whole, 1):.2f} %"


def write_table(results: dict[str, dict], rows: int, records: int, out: Path) -> None:
    lines = [
        "# Fine-tuning methods compared",
        "",
        "Written by `python scripts/peft_compare.py` (rerun it to refresh; one run "
        "per method, one seed, so differences of a point or two are within "
        "seed noise).",
        "",
        f"## SST-2, MiniLM (all-MiniLM-L6-v2), {rows:,} training rows, 1 epoch",
        "",
        "Dev accuracy on the full SST-2 dev set (872 sentences). Train time is "
        "`fit()` alone; examples/s = steps x batch / train time; peak RSS is the "
        "training process's.",
        "",
        "| method | learning rate | dev accuracy | trainable params | trainable % "
        "| train s | examples/s | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        result = results.get(method.name)
        if result is None:
            continue
        if "error" in result:
            lines.append(f"| {method.label} | | failed: {result['error']} | | | | | |")
            continue
        m = result["metrics"]
        lr = next(o for o in method.overrides if o.startswith("train.learning_rate"))
        lines.append(
            f"| {method.label} | {lr.split('=')[1]} | {m['accuracy']:.3f} "
            f"| {m['trainable_params']:,} "
            f"| {_pct(m['trainable_params'], m['total_params'])} "
            f"| {m['train_seconds']:.1f} | {m['train_examples_per_second']:.1f} "
            f"| {result['rss_bytes'] / 2**30:.2f} GiB |"
        )
    full = results.get("full")
    for name in ("lora-r8", "lora-r8-all"):
        lora = results.get(name)
        if full and lora and "error" not in full and "error" not in lora:
            gap = 100 * (lora["metrics"]["accuracy"] - full["metrics"]["accuracy"])
            label = next(m.label for m in METHODS if m.name == name)
            lines += ["", f"{label} vs full fine-tuning: {gap:+.1f} points."]
    lines += ["", "Learning rates, and why:", ""]
    lines += [f"- {m.label}: {m.why}." for m in METHODS if m.name in results]
    causal = results.get("causal-lora")
    if causal:
        lines += [
            "",
            f"## Causal LM: LoRA SFT of SmolLM2-135M-Instruct, {records} alpaca "
            "records, 1 epoch",
            "",
            "configs/sft_alpaca_smollm2.yaml (LoRA r 16 on every projection, lr "
            f"1e-3, batch 4) on the first {records} of its 900 training records; "
            "held-out: its 99 records' response loss.",
            "",
        ]
        if "error" in causal:
            lines.append(f"failed: {causal['error']}")
        else:
            m, base = causal["metrics"], causal["base"]
            lines += [
                "| held-out loss before | after | change | trainable params "
                "| trainable % | train s | tokens/s | peak RSS |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|",
                f"| {base['loss']:.4f} | {m['loss']:.4f} "
                f"| {100 * (m['loss'] - base['loss']) / base['loss']:+.1f} % "
                f"| {m['trainable_params']:,} "
                f"| {_pct(m['trainable_params'], m['total_params'])} "
                f"| {m['train_seconds']:.1f} | {m['train_tokens_per_second']:.1f} "
                f"| {causal['rss_bytes'] / 2**30:.2f} GiB |",
            ]
    lines += ["", "## Machine", ""]
    facts = machine_facts() | package_versions()
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    cpu = [
        f"{name} {r['cpu_per_wall']:.2f}"
        for name, r in results.items()
        if "cpu_per_wall" in r
    ]
    lines.append(
        f"- CPU seconds per wall second of each training process: {', '.join(cpu)}"
    )
    out.write_text("\n".join(lines) + "\n")
    say(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--sft-rows", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="method names (and causal-lora)")
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "peft")
    # Not docs/peft.md itself: that page holds the how-to too; paste the tables.
    parser.add_argument("--out", type=Path, default=Path("peft-results.md"))
    parser.add_argument("--reuse", action="store_true", help="keep finished results")
    parser.add_argument("--base-loss", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.base_loss:
        base_loss(args.base_loss, [r for r in rest if r != "--"])
        return
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / "results.json"
    results = json.loads(saved.read_text()) if saved.is_file() else {}
    names = args.only or [m.name for m in METHODS] + ["causal-lora"]
    for method in METHODS:
        if method.name in names and not (args.reuse and method.name in results):
            results[method.name] = run_method(method, args.rows, args.work)
            saved.write_text(json.dumps(results, indent=2))
    if "causal-lora" in names and not (args.reuse and "causal-lora" in results):
        results["causal-lora"] = run_causal(args.sft_rows, args.work)
        saved.write_text(json.dumps(results, indent=2))
    write_table(results, args.rows, args.sft_rows, args.out)


if __name__ == "__main__":
    main()
