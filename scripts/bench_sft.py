"""benchmark.py's causal-LM mode: tfsft vs TRL's `SFTTrainer` with PEFT LoRA.

Chosen by a config with ``task: causal_lm`` (configs/sft_alpaca_smollm2.yaml). The
config's alpaca file (a JSON list) is split in file order: the first --train-rows
records train (default 900), the next --eval-rows are held out (default 99). Every
runner gets those records, the config's ChatML template and system prompt, its
sequence length, LoRA rank, alpha and targets, and its hyper-parameters:

  tfsft       `tfsft train CONFIG --set data.train=TRAIN.json
              --set data.validation=HELDOUT.json ...` in the config's precision
  tfsft_fp32  the same with --set runtime.precision=float32 (TRL's precision on CPU)
  trl         bench_trl_sft.py in the HF venv: TRL SFTTrainer + PEFT LoRA, PyTorch
              CPU, float32

Two more tfsft processes compute what `tfsft train` does not report
(``python scripts/bench_sft.py base|after SPEC.json OUT.json``): ``base``, before
training, the token counts of the training rows, the base model's held-out response
loss in each selected tfsft runner's precision and greedy generations for the first
five held-out prompts; ``after`` the same generations from the trained run
(`tfsft.generate`). They run apart from the training processes, whose peak RSS is
the one reported.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import EncoderDims, read_json, write_json
from bench_report_sft import Sample, SftRow
from bench_runners import SCRIPTS, Bench, Plan, child_env, say, tail, tfsft_padding

SFT_RUNNERS = ("tfsft", "tfsft_fp32", "trl")
TRAIN_ROWS, EVAL_ROWS = 900, 99  # issue 13, acceptance 4
SAMPLES = 5  # held-out prompts generated before and after training
# keras-hub's Llama layer names -> the Hugging Face module names PEFT targets.
LORA_NAMES = {
    "query": "q_proj",
    "key": "k_proj",
    "value": "v_proj",
    "attention_output": "o_proj",
    "feedforward_gate_dense": "gate_proj",
    "feedforward_intermediate_dense": "up_proj",
    "feedforward_output_dense": "down_proj",
}
DEFAULT_LORA = ("query", "value")  # what tfsft's LoRA adapts on Llama by default


def sft_runners(requested: list[str] | None) -> list[str]:
    """The runners of a causal-LM run: the requested ones, or all three.

    Raises:
        ConfigError: a runner without a causal-LM counterpart.
    """
    from tfsft.errors import ConfigError

    if requested is None:
        return list(SFT_RUNNERS)
    unsupported = [r for r in requested if r not in SFT_RUNNERS]
    if unsupported:
        raise ConfigError(
            f"--runners: {','.join(unsupported)} cannot run a causal_lm config; "
            f"choose from {','.join(SFT_RUNNERS)}"
        )
    return requested


def make_sft_plan(args: argparse.Namespace, cfg: Any, overrides: list[str]) -> Plan:
    """The plan of a causal-LM run from a loaded ``task: causal_lm`` config.

    Raises:
        TfsftError: an unsupported runner or setting, a bad data file, or the model
            not installed.
    """
    import tfsft
    from tfsft.data.chat import model_system_prompt
    from tfsft.errors import ConfigError

    runners = sft_runners(args.runners)
    train_rows = TRAIN_ROWS if args.train_rows is None else args.train_rows
    eval_rows = EVAL_ROWS if args.eval_rows is None else args.eval_rows
    if train_rows < 1:
        raise ConfigError("--train-rows: the causal-LM mode needs at least 1 row")
    _check_comparable(cfg)
    rows = read_alpaca(cfg.data.train, train_rows + eval_rows)
    model_dir = Path(tfsft.resolve_preset(cfg.model.preset))
    hf_config = read_json(model_dir / "config.json") if model_dir.is_dir() else {}
    if hf_config.get("model_type") != "llama":
        raise ConfigError(
            f"model.preset: {cfg.model.preset} is not a Hugging Face-format Llama "
            "folder (config.json with model_type llama); the TRL runner loads it "
            "with AutoModelForCausalLM and LoRA's targets are mapped by Llama names"
        )
    targets = (
        list(LORA_NAMES)
        if cfg.peft.targets == "all-linear"
        else list(cfg.peft.targets or DEFAULT_LORA)
    )
    unknown = [t for t in targets if t not in LORA_NAMES]
    if unknown:
        raise ConfigError(
            f"peft.targets: {', '.join(unknown)} has no PEFT counterpart here; "
            f"choose from {', '.join(LORA_NAMES)}"
        )
    d, tc = cfg.data, cfg.train
    # The system turn tfsft's ChatML adds to records without one (data.system_prompt,
    # else the model's own default); the TRL runner gets it as --system.
    if d.system_prompt is not None:
        system = d.system_prompt or None
    else:
        system = model_system_prompt(str(model_dir))
    total_steps = math.ceil(train_rows / tc.batch_size) * tc.epochs
    warmup_steps = round(tc.warmup_ratio * total_steps)  # tfsft's count (optim.py)
    padding = tfsft_padding(cfg)  # imports TF: only once the config is known good
    grouped = bool(d.length_buckets) and d.length_grouping > 1
    alpha = cfg.peft.alpha or cfg.peft.rank
    spec = {
        "config": str(args.config),
        "overrides": overrides,
        "model_dir": str(model_dir),
        "data": d.train,
        "train_rows": train_rows,
        "eval_rows": eval_rows,
        "rows": rows,
        "system": system,
        "sequence_length": cfg.model.sequence_length,
        "batch_size": tc.batch_size,
        "epochs": tc.epochs,
        "learning_rate": tc.learning_rate,
        "weight_decay": tc.weight_decay,
        "max_grad_norm": tc.max_grad_norm,
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "seed": tc.seed,
        "lora_rank": cfg.peft.rank,
        "lora_alpha": alpha,
        "lora_targets": targets,
        "hf_lora_targets": [LORA_NAMES[t] for t in targets],
        "group_by_length": grouped,
        "precision": cfg.runtime.precision,
        "max_new_tokens": cfg.generate.max_new_tokens,
        "samples": min(SAMPLES, eval_rows),
    }
    shown_system = "none" if system is None else f'"{system}"'
    hyper = {
        "model": f"{cfg.model.preset} ({model_dir}): Llama, "
        f"{hf_config.get('num_hidden_layers')} layers, hidden "
        f"{hf_config.get('hidden_size')}, {hf_config.get('num_attention_heads')} "
        f"heads ({hf_config.get('num_key_value_heads')} KV)",
        "data": f"{d.train}: records 1-{train_rows:,} train, "
        f"{train_rows + 1:,}-{train_rows + eval_rows:,} held out (file order)",
        "template": f"ChatML; system turn {shown_system}; user = instruction "
        '(+ "\\n\\n" + input); trained: the response and its <|im_end|>',
        "max length (tokens)": f"{cfg.model.sequence_length} (a longer example keeps "
        "its start; one whose response would be cut to nothing is dropped)",
        "batch size": tc.batch_size,
        "learning rate (peak)": tc.learning_rate,
        "schedule": f"linear warm-up {warmup_steps} steps (ratio {tc.warmup_ratio}), "
        f"then linear decay to 0 at {total_steps}",
        "optimizer": "AdamW (betas 0.9, 0.999; eps 1e-8)",
        "weight decay": tc.weight_decay,
        "max grad norm (global)": tc.max_grad_norm or "none",
        "LoRA": f"rank {cfg.peft.rank}, alpha {alpha:g}, dropout 0 (Keras' LoRA has "
        f"none); targets {', '.join(targets)} (tfsft) = "
        f"{', '.join(LORA_NAMES[t] for t in targets)} (PEFT)",
        "epochs": tc.epochs,
        "seed": tc.seed,
        "loss": "cross-entropy on response tokens, mean over the batch's response "
        "tokens (both)",
        "batching": f"tfsft: {padding}; TRL: padded to each batch's longest"
        + (", group_by_length" if grouped else ""),
        "gradient checkpointing": f"tfsft: {tc.gradient_checkpointing}; TRL: off",
        "precision": f"tfsft: {cfg.runtime.precision} (the config); tfsft_fp32: "
        "float32; TRL: float32 (PyTorch CPU)",
        "generation": f"greedy, up to {cfg.generate.max_new_tokens} new tokens, "
        f"first {spec['samples']} held-out prompts",
    }
    dims = EncoderDims.from_hf_config(hf_config)  # unused by this mode's report
    return Plan(overrides, spec, dims, hyper, padding, runners, "causal_lm")


def _check_comparable(cfg: Any) -> None:
    """Settings the TRL runner cannot mirror stop the run before it starts.

    Raises:
        ConfigError: naming the setting and the override that fixes it.
    """
    from tfsft.errors import ConfigError

    d, tc, problems = cfg.data, cfg.train, []
    if cfg.peft is None or cfg.peft.method != "lora":
        problems.append("peft.method: the TRL runner trains LoRA (peft.method=lora)")
    if d.template not in ("chatml", "auto"):
        problems.append("data.template: the TRL runner renders ChatML only (chatml)")
    if d.train_on_prompt:
        problems.append("data.train_on_prompt: TRL trains responses only (false)")
    if d.packing:
        problems.append("data.packing: the TRL runner trains unpacked rows (false)")
    if tc.schedule != "linear":
        problems.append("train.schedule: the TRL runner's schedule is linear")
    if tc.gradient_accumulation_steps != 1:
        problems.append("train.gradient_accumulation_steps: the TRL runner uses 1")
    if d.train.startswith("tfds:"):
        problems.append("data.train: needs an alpaca JSON file, not TFDS")
    if problems:
        raise ConfigError(
            "the causal-LM benchmark cannot compare this config: " + "; ".join(problems)
        )


def read_alpaca(path: str, rows: int) -> list[dict[str, Any]]:
    """The first ``rows`` records of an alpaca JSON list.

    Raises:
        DataError: the file is missing, not a list of alpaca records, or too short.
    """
    from tfsft.errors import DataError

    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of alpaca records")
    if len(records) < rows:
        raise DataError(
            f"{path}: {len(records)} records, fewer than --train-rows + --eval-rows "
            f"({rows})"
        )
    for i, r in enumerate(records[:rows], 1):
        if not isinstance(r, dict) or not all(
            isinstance(r.get(k), str) for k in ("instruction", "output")
        ):
            raise DataError(f"{path}: record {i} is not an alpaca record")
    return records[:rows]


def user_text(row: dict[str, Any]) -> str:
    extra = row.get("input") or ""
    return f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]


class SftBench(Bench):
    """Bench with the causal-LM runners, their helper processes and the samples."""

    def __init__(self, args: argparse.Namespace, plan: Plan, tmp: Path) -> None:
        super().__init__(args, plan, tmp)
        spec = plan.spec
        self.samples = [
            Sample(user_text(r), r["output"])
            for r in spec["rows"][spec["train_rows"] :][: spec["samples"]]
        ]
        self.sample_runner = ""
        self.base: dict[str, Any] = {}
        self.trl: dict[str, Any] = {}
        # The split as files, kept with the logs so the tfsft command can be re-run.
        data = self.logs / "sft-data"
        data.mkdir(parents=True, exist_ok=True)
        self.train_file, self.heldout_file = data / "train.json", data / "heldout.json"
        cut = spec["train_rows"]
        for path, part in (
            (self.train_file, spec["rows"][:cut]),
            (self.heldout_file, spec["rows"][cut:]),
        ):
            path.write_text(json.dumps(part, ensure_ascii=False, indent=1))

    def tfsft_overrides(self, name: str) -> list[str]:
        """Everything `tfsft train` is given on top of the config for ``name``."""
        out = [
            *self.plan.overrides,
            f"data.train={self.train_file}",
            "data.validation_fraction=null",
            f"data.validation={self.heldout_file}",
            "data.test=null",
            "data.max_train_examples=null",
            "generate.samples_per_epoch=0",  # the samples come from tfsft-after
        ]
        if name == "tfsft_fp32":
            out.append("runtime.precision=float32")
        return out

    def run_base(self, names: list[str]) -> None:
        """The base model's held-out loss per precision, token counts, samples."""
        spec = self.tmp / "sft-base.json"
        precisions = {
            n: "float32" if n == "tfsft_fp32" else self.plan.spec["precision"]
            for n in names
        }
        write_json(
            spec,
            {
                "config": self.plan.spec["config"],
                "overrides": self.tfsft_overrides(names[0]),
                "precisions": precisions,
                "samples": self.plan.spec["samples"],
                "max_new_tokens": self.plan.spec["max_new_tokens"],
            },
        )
        say("tfsft base model: held-out loss, token counts, generations before")
        out = self.tmp / "sft-base-out.json"
        command = [sys.executable, str(SCRIPTS / "bench_sft.py"), "base"]
        command += [str(spec), str(out)]
        code, _, log = self.spawn("tfsft-base", command, child_env(True), None)
        if code != 0:
            self.notes.append(f"tfsft-base failed (no loss before): {tail(log)}")
            return
        self.base = read_json(out)
        for sample, text in zip(self.samples, self.base["generated"], strict=True):
            sample.before = text
        template = self.base["template"]
        if template["system_prompt"] != self.plan.spec["system"]:
            self.notes.append(
                f"**Warning**: tfsft's template has system prompt "
                f"{template['system_prompt']!r}, the TRL runner got "
                f"{self.plan.spec['system']!r}; the token sequences differ."
            )
        self.notes.append(
            "Base-model held-out pass (tfsft-base, predict + response_metrics): "
            + ", ".join(
                f"{b['precision']} {b['seconds']:.1f} s"
                for b in self.base["base"].values()
            )
            + f"; tfsft's train s includes one such pass over the held-out rows. "
            f"Generations before training in {self.base['sample_precision']}."
        )

    def train(self, name: str) -> tuple[SftRow, Path | None]:
        """Runs `tfsft train` for ``name``; returns its row and run dir."""
        overrides = self.tfsft_overrides(name)
        overrides.append(f"train.output_dir={self.tfsft_runs / name}")
        command = ["tfsft", "train", self.args.config]
        for item in overrides:
            command += ["--set", item]
        if name == "tfsft" or self.tfsft_command.startswith("("):
            self.tfsft_command = shlex.join(command)
        say(f"{name}: {shlex.join(command)}")
        stdout = self.logs / f"{name}.stdout"
        argv = [sys.executable, "-m", "tfsft", *command[1:]]
        code, _, log = self.spawn(name, argv, child_env(True), stdout)
        if code != 0:
            return SftRow(name, "failed", f"exit {code}: {tail(log)}"), None
        run_dir = Path(stdout.read_text().strip().splitlines()[-1])
        metrics = read_json(run_dir / "metrics.json")
        from tfsft.runs import read_status  # the parent has tfsft; children may not

        shutil.copy(run_dir / "metrics.json", self.logs / f"{name}-metrics.json")
        status = read_status(run_dir)
        seconds = metrics["train_seconds"]
        base = self.base.get("base", {}).get(name, {})
        response = self.base.get("train", {}).get("response_tokens")
        epochs = self.plan.spec["epochs"]
        child = self.children[name]
        self.notes.append(
            f"{name}: metrics.json train_seconds {seconds}, train_tokens_per_second "
            f"{metrics['train_tokens_per_second']}, perplexity "
            f"{metrics.get('perplexity', float('nan')):.3f}, token accuracy "
            f"{metrics.get('token_accuracy', float('nan')):.4f} (copied to "
            f"{self.logs / f'{name}-metrics.json'})."
        )
        row = SftRow(
            name,
            precision=status.get("precision", ""),
            train_seconds=seconds,
            tokens_per_second=metrics["train_tokens_per_second"],
            response_tokens_per_second=response * epochs / seconds
            if response and seconds
            else None,
            process_seconds=child.wall_seconds,
            cpu_seconds=child.cpu_seconds,
            rss_bytes=child.rss_bytes,
            loss_before=base.get("loss"),
            loss_after=metrics["loss"],
            accuracy_after=metrics.get("token_accuracy"),
            steps=self.plan.spec["total_steps"],
            trainable_params=metrics.get("trainable_params"),
        )
        return row, run_dir

    def run_after(self, name: str, run_dir: Path) -> None:
        """Greedy generations of the trained run for the sample prompts."""
        spec = self.tmp / "sft-after.json"
        rows = self.plan.spec["rows"][self.plan.spec["train_rows"] :]
        write_json(
            spec,
            {
                "run_dir": str(run_dir),
                "records": rows[: self.plan.spec["samples"]],
                "max_new_tokens": self.plan.spec["max_new_tokens"],
            },
        )
        say(f"{name}: generations after training")
        out = self.tmp / "sft-after-out.json"
        command = [sys.executable, str(SCRIPTS / "bench_sft.py"), "after"]
        command += [str(spec), str(out)]
        code, _, log = self.spawn("tfsft-after", command, child_env(True), None)
        if code != 0:
            self.notes.append(f"tfsft-after failed (no generations): {tail(log)}")
            return
        result = read_json(out)
        for sample, text in zip(self.samples, result["generated"], strict=True):
            sample.after = text
        self.sample_runner = name

    def run_trl(self) -> SftRow:
        if self.hf_python is None:
            return SftRow("trl", "skipped", self.hf_message)
        s = self.plan.spec
        out = self.tmp / "trl.json"
        total, warm = s["total_steps"], s["warmup_steps"]
        # bench_trl_sft.py warms up for ceil(total x ratio) steps; this ratio gives
        # exactly tfsft's round(total x warmup_ratio).
        ratio = (warm - 0.5) / total if warm else 0.0
        command = [
            str(self.hf_python),
            str(SCRIPTS / "bench_trl_sft.py"),
            *("--model", s["model_dir"], "--data", s["data"], "--out", str(out)),
            *("--train-rows", str(s["train_rows"]), "--eval-rows", str(s["eval_rows"])),
            *("--max-length", str(s["sequence_length"]), "--epochs", str(s["epochs"])),
            *("--batch-size", str(s["batch_size"]), "--lr", str(s["learning_rate"])),
            *("--warmup-ratio", repr(ratio), "--weight-decay", str(s["weight_decay"])),
            *("--max-grad-norm", str(s["max_grad_norm"] or 0)),
            *("--lora-rank", str(s["lora_rank"]), "--lora-alpha", str(s["lora_alpha"])),
            *("--lora-dropout", "0", "--lora-targets", ",".join(s["hf_lora_targets"])),
            *("--seed", str(s["seed"]), "--threads", str(_cores())),
        ]
        if s["system"] is not None:
            command += ["--system", s["system"]]
        if s["group_by_length"]:
            command.append("--group-by-length")
        say("TRL SFTTrainer + PEFT LoRA (PyTorch CPU, float32)")
        code, _, log = self.spawn("trl", command, child_env(False), None)
        if code != 0:
            return SftRow("trl", "failed", f"exit {code}: {tail(log)}")
        result = self.trl = read_json(out)
        shutil.copy(out, self.logs / "trl-result.json")
        self.versions |= result["versions"]
        held, child = result["held_out"], self.children["trl"]
        data = result["data"]
        self.notes.append(
            f"TRL: {result['steps']} optimizer steps "
            f"({result['warmup_steps']} warm-up), optimizer "
            f"{result['hyper']['optimizer']}, attention "
            f"{result['attention']}, torch.set_num_threads({result['threads']}); "
            f"training rows {data['train']['examples']:,} "
            f"({data['train']['dropped']} dropped, {data['train']['truncated']} "
            f"truncated), {result['padded_tokens']:,} tokens fed with padding; masks "
            f"checked on {data['masks_checked']:,} rows; its peak RSS before "
            f"training {result['peak_rss_before_train_bytes'] / 2**30:.2f} GiB "
            f"(result copied to {self.logs / 'trl-result.json'})."
        )
        return SftRow(
            "trl",
            precision=result["precision"],
            train_seconds=result["train_seconds"],
            tokens_per_second=result["tokens_per_second"],
            response_tokens_per_second=result["response_tokens_per_second"],
            process_seconds=child.wall_seconds,
            cpu_seconds=child.cpu_seconds,
            rss_bytes=child.rss_bytes,
            loss_before=held["before"]["loss"],
            loss_after=held["after"]["loss"],
            accuracy_after=held["after"]["token_accuracy"],
            steps=result["steps"],
            trainable_params=result["params"]["trainable"],
        )

    def token_notes(self) -> None:
        """Whether both runners trained and scored the same tokens."""
        if not self.base or not self.trl:
            return
        tf_train, tf_held = self.base["train"], self.base["heldout"]
        trl_train, trl_held = self.trl["data"]["train"], self.trl["data"]["eval"]
        off = length_mismatches(
            tf_train.get("lengths"),
            self.trl.get("train_lengths"),
            self.plan.spec["sequence_length"],
        )
        same = (
            tf_train["examples"] == trl_train["examples"]
            and tf_train["response_tokens"] == trl_train["response_tokens"]
            and tf_held["response_tokens"] == trl_held["response_tokens"]
            and off == 0
        )
        verdict = (
            "the same rows, row lengths and response tokens"
            if same
            else f"**different**: {'?' if off is None else off} of "
            f"{len(tf_train.get('lengths') or [])} training rows differ in length "
            "(held-out rows are compared by response-token count only); the two "
            "tokenizations disagree, so the runners did not see "
            "identical token sequences and the losses are not strictly comparable. "
            "A known cause: transformers 5 loads SmolLM2's folder as "
            "GPT2Tokenizer (its tokenizer_config.json), whose pre-tokenizer drops "
            "tokenizer.json's Digits(individual_digits) step, so a whitespace run "
            "before a digit splits differently from tokenizer.json (which tfsft "
            "follows)"
        )
        self.notes.append(
            f"Tokens per epoch: tfsft {tf_train['tokens']:,} real tokens in "
            f"{tf_train['examples']:,} rows, {tf_train['response_tokens']:,} of them "
            f"trained; TRL {trl_train['tokens']:,} in {trl_train['examples']:,} rows, "
            f"{trl_train['response_tokens']:,} trained. Held-out response tokens: "
            f"tfsft {tf_held['response_tokens']:,}, TRL "
            f"{trl_held['response_tokens']:,} ({verdict}). tfsft's rows also hold "
            'the template\'s untrained "\\n" after each <|im_end|> (one token per '
            "row TRL's do not have), which its tokens/s counts."
        )

    def params_note(self, rows: list[SftRow]) -> None:
        """Why LoRA of the same rank may train different numbers of parameters."""
        counts = {r.name: r.trainable_params for r in rows if r.status == "ok"}
        tf_count = counts.get("tfsft", counts.get("tfsft_fp32"))
        trl_count = counts.get("trl")
        if not tf_count or not trl_count or tf_count == trl_count:
            return
        self.notes.append(
            f"Trainable parameters differ at the same LoRA rank: tfsft "
            f"{tf_count:,}, PEFT {trl_count:,}: the two runs do not adapt the same "
            "layers; compare the targets above."
        )


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def run_sft(bench: SftBench, runners: list[str]) -> list[SftRow]:
    """The selected runners, strictly one after another."""
    if "trl" in runners:
        bench.prepare_hf()  # pip is CPU-heavy: done before anything is timed
    tf_runners = [r for r in runners if r != "trl"]
    if tf_runners:
        bench.run_base(tf_runners)
    rows = []
    try:
        for name in tf_runners:
            row, run_dir = bench.train(name)
            rows.append(row)
            if run_dir is not None and not bench.sample_runner:
                bench.run_after(name, run_dir)
    finally:
        if not bench.args.keep_runs:  # each run dir holds the model's weights
            shutil.rmtree(bench.tfsft_runs, ignore_errors=True)
    if "trl" in runners:
        rows.append(bench.run_trl())
    if bench.args.keep_runs:
        bench.notes.append(f"tfsft run dirs kept in {bench.tfsft_runs}.")
    bench.token_notes()
    bench.params_note(rows)
    return rows


def length_mismatches(
    tfsft_lengths: list[int] | None, trl_lengths: list[int] | None, max_length: int
) -> int | None:
    """Training rows whose tfsft length is not TRL's + 1 (the template's trailing
    newline), capped at ``max_length``; None when the rows cannot be aligned."""
    if not tfsft_lengths or not trl_lengths or len(tfsft_lengths) != len(trl_lengths):
        return None
    return sum(
        a != min(b + 1, max_length)
        for a, b in zip(tfsft_lengths, trl_lengths, strict=True)
    )


# ---- the tfsft helper processes (python scripts/bench_sft.py base|after ...) --------


def child_base(spec: dict[str, Any]) -> dict[str, Any]:
    """Token counts, the base model's held-out loss per precision and its greedy
    generations for the first held-out prompts."""
    import gc

    import keras

    import tfsft
    from tfsft.config_sft import GenerateConfig
    from tfsft.data.chat import render_prompt
    from tfsft.evaluation.inference import config_widths, predict_outputs
    from tfsft.models.build import build_model
    from tfsft.tasks.causal_lm import response_metrics
    from tfsft.tasks.causal_lm.generation import generate_texts
    from tfsft.tasks.causal_lm.samples import prompt_and_reference
    from tfsft.training.prepare import prepare_data
    from tfsft.training.strategy import seed_everything, set_precision

    cfg = tfsft.load_config(spec["config"], spec["overrides"])
    seed_everything(cfg.train.seed)
    data = prepare_data(cfg)
    train, held = data.encoded["train"], data.encoded["validation"]
    template = data.task.template(data.preprocessor, cfg)
    stops = data.task.stop_ids(data.preprocessor, cfg)
    conversations = data.splits.validation.texts[: spec["samples"]]
    prompts = [
        render_prompt(prompt_and_reference(t)[0], template) for t in conversations
    ]
    result: dict[str, Any] = {
        "template": {"name": template.name, "system_prompt": template.system_prompt},
        "train": _counts(train) | {"lengths": train.lengths().tolist()},
        "heldout": _counts(held),
        "base": {},
        "generated": [],
    }
    for name, precision in spec["precisions"].items():
        policy = set_precision(precision)
        model = build_model(cfg.model, data.labels, cfg.task)
        start = time.perf_counter()
        outputs = predict_outputs(
            model, data.task, held, cfg.train.batch_size, config_widths(cfg)
        )
        seconds = time.perf_counter() - start
        metrics = response_metrics(outputs, held.sample_weight)
        result["base"][name] = metrics | {"precision": policy, "seconds": seconds}
        print(f"{name} ({policy}): base held-out loss {metrics['loss']:.4f}")
        if not result["generated"]:
            result["generated"] = generate_texts(
                getattr(model, "causal_lm", model),
                data.preprocessor.tokenizer,
                prompts,
                GenerateConfig(max_new_tokens=spec["max_new_tokens"]),
                stops,
                batch_size=cfg.train.batch_size,
            )
            result["sample_precision"] = policy
        del model, outputs
        keras.backend.clear_session()
        gc.collect()
    return result


def _counts(encoded: Any) -> dict[str, int]:
    return {
        "examples": encoded.rows,
        "tokens": int(encoded.lengths().sum()),
        "response_tokens": int((encoded.sample_weight > 0).sum()),
    }


def child_after(spec: dict[str, Any]) -> dict[str, Any]:
    """The trained run's greedy generations for the same prompts (`tfsft.generate`)."""
    import tfsft
    from tfsft.data.chat import record_turns
    from tfsft.tasks.causal_lm.samples import prompt_and_reference

    conversations = []
    for record in spec["records"]:
        turns = record_turns(record)
        if isinstance(turns, str):
            raise SystemExit(f"held-out record: {turns}")
        conversations.append(prompt_and_reference(turns)[0])
    generated = tfsft.generate(
        spec["run_dir"],
        conversations,
        max_new_tokens=spec["max_new_tokens"],
        sampler="greedy",
    )
    return {"generated": generated}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    modes = {"base": child_base, "after": child_after}
    if len(argv) != 3 or argv[0] not in modes:
        raise SystemExit("usage: bench_sft.py base|after SPEC.json OUT.json")
    write_json(argv[2], modes[argv[0]](read_json(argv[1])))


if __name__ == "__main__":
    main()
