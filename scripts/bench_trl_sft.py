"""TRL `SFTTrainer` with PEFT LoRA for causal-LM SFT, on PyTorch CPU.

    HF_VENV/bin/python scripts/bench_trl_sft.py --model DIR --data alpaca.json \\
        --train-rows 900 --eval-rows 99 --max-length 512 --epochs 1 --batch-size 8 \\
        --lr 2e-4 --lora-rank 8 --lora-alpha 16 --lora-dropout 0.05 --out OUT.json

The TRL side of benchmark.py's causal-LM mode. It runs in the HF venv (torch,
transformers, accelerate, trl, peft, datasets; no TensorFlow, no tfsft) and imports
only the standard-library `bench_common` from this folder.

Data: the first ``--train-rows`` rows of the alpaca JSON list train, the next
``--eval-rows`` rows are held out, in file order. Each row becomes ChatML, built here
rather than by TRL so that tfsft and TRL see the same tokens:

    prompt     = [<|im_start|>system\\n{system}<|im_end|>\\n]   (only with --system)
                 <|im_start|>user\\n{instruction[\\n\\n{input}]}<|im_end|>\\n
                 <|im_start|>assistant\\n
    completion = {output}<|im_end|>

The prompt and the completion are tokenized separately (no special tokens added, no
BOS) and concatenated; the trailing "\\n" after <|im_end|> is not part of the example.
Only completion tokens carry labels (-100 elsewhere). An example longer than
``--max-length`` keeps its start (the completion is cut); one whose completion would
be cut to nothing is dropped and counted.

TRL gets the tokenized rows (``input_ids`` and ``labels``), which it uses as they are:
no template, no EOS or BOS added (checked after the trainer has prepared them).
Training: PEFT LoRA on the float32 model, TRL's AdamW (the Trainer's default
optimizer) with a linear schedule after ``ceil(steps * warmup_ratio)`` warm-up steps,
no gradient checkpointing, no accumulation, each batch padded to its longest row. TRL
normalises the training loss per batch by the number of label tokens in it.

Held-out response loss, before training (the base model) and after: a token-weighted
mean NLL over every completion token of the held-out rows (sum of NLL / number of
tokens), computed by this script's own loop in eval mode, not by the Trainer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import write_json

START = time.perf_counter()  # process seconds are counted from the script's start

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


# ---- template (standard library only) ----------------------------------------------


def user_content(row: dict[str, Any]) -> str:
    """The user turn of an alpaca row: the instruction, and the input after a blank
    line when there is one."""
    instruction, extra = row["instruction"], row.get("input") or ""
    return f"{instruction}\n\n{extra}" if extra else instruction


def chatml_turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def prompt_text(row: dict[str, Any], system: str | None) -> str:
    """Everything before the response, up to and including the assistant header."""
    turns = [chatml_turn("system", system)] if system is not None else []
    turns.append(chatml_turn("user", user_content(row)))
    return "".join(turns) + f"{IM_START}assistant\n"


def completion_text(row: dict[str, Any]) -> str:
    """The trained part: the response and the end-of-turn token (EOS)."""
    return f"{row['output']}{IM_END}"


def load_split(path: Path, train_rows: int, eval_rows: int) -> tuple[list, list]:
    """The first ``train_rows`` rows and the ``eval_rows`` after them, in file order."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a JSON list of alpaca rows")
    if train_rows + eval_rows > len(rows):
        raise SystemExit(
            f"{path}: {len(rows)} rows, fewer than --train-rows {train_rows} + "
            f"--eval-rows {eval_rows}"
        )
    for i, row in enumerate(rows[: train_rows + eval_rows]):
        if not isinstance(row, dict) or not {"instruction", "output"} <= row.keys():
            raise SystemExit(f"{path}: row {i} is not an alpaca row")
    return rows[:train_rows], rows[train_rows : train_rows + eval_rows]


# ---- tokenization --------------------------------------------------------------------


@dataclass
class Encoded:
    """One split as the trainer takes it."""

    examples: list[dict[str, list[int]]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # source row index of each example
    dropped: list[int] = field(default_factory=list)  # response cut to zero tokens
    truncated: list[int] = field(default_factory=list)  # response cut, kept

    @property
    def tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def response_tokens(self) -> int:
        return sum(sum(y != -100 for y in e["labels"]) for e in self.examples)

    def summary(self) -> dict[str, Any]:
        lengths = [len(e["input_ids"]) for e in self.examples]
        return {
            "examples": len(self.examples),
            "tokens": self.tokens,
            "response_tokens": self.response_tokens,
            "max_tokens": max(lengths, default=0),
            "dropped": len(self.dropped),
            "dropped_rows": self.dropped,
            "truncated": len(self.truncated),
            "truncated_rows": self.truncated,
        }


def encode(
    tokenizer: Any,
    rows: list[dict[str, Any]],
    system: str | None,
    max_length: int,
    first_row: int = 0,
) -> Encoded:
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    out = Encoded()
    for i, row in enumerate(rows, start=first_row):
        prompt, completion = ids(prompt_text(row, system)), ids(completion_text(row))
        room = max_length - len(prompt)
        if room <= 0:
            out.dropped.append(i)
            continue
        if len(completion) > room:
            out.truncated.append(i)
            completion = completion[:room]
        out.examples.append(
            {
                "input_ids": prompt + completion,
                "labels": [-100] * len(prompt) + completion,
            }
        )
        out.rows.append(i)
    return out


def check_masks(
    tokenizer: Any, split: Encoded, rows: list, first_row: int, system: str | None
) -> int:
    """Asserts that the labelled tokens of every untruncated example are one run at
    its end that decodes to exactly its response + <|im_end|>, and that the tokens
    before it decode to its prompt; returns how many examples were checked."""
    cut = set(split.truncated)
    checked = 0
    for example, i in zip(split.examples, split.rows, strict=True):
        if i in cut:
            continue
        row = rows[i - first_row]
        ids, labels = example["input_ids"], example["labels"]
        start = first_label(labels)
        if labels[start:] != ids[start:]:
            raise AssertionError(f"row {i}: labels are not the ids after the prompt")
        for got, want in (
            (ids[start:], completion_text(row)),
            (ids[:start], prompt_text(row, system)),
        ):
            text = tokenizer.decode(got, clean_up_tokenization_spaces=False)
            if text != want:
                raise AssertionError(f"row {i}: decodes to {text!r}, not {want!r}")
        checked += 1
    return checked


def first_label(labels: list[int]) -> int:
    return next(k for k, y in enumerate(labels) if y != -100)


# ---- held-out loss -------------------------------------------------------------------


def response_loss(
    model: Any, examples: list[dict[str, list[int]]], batch_size: int, pad_id: int
) -> dict[str, Any]:
    """Token-weighted mean NLL (nats) over the completion tokens of ``examples``.

    Each labelled token is predicted from the position before it. Only those positions
    go through the LM head (in chunks), so the full [batch, length, vocab] logits are
    never built and this loop never sets the process's peak memory.
    """
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda k: len(examples[k]["input_ids"]))
    nll, correct, count = 0.0, 0, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = [examples[k] for k in order[b : b + batch_size]]
            width = max(len(e["input_ids"]) for e in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, e in enumerate(batch):
                n = len(e["input_ids"])
                ids[r, :n] = torch.tensor(e["input_ids"])
                labels[r, :n] = torch.tensor(e["labels"])
                mask[r, :n] = 1
            hidden = backbone(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != -100
            states, targets = hidden[:, :-1][keep], targets[keep]
            for c in range(0, len(targets), 1024):
                logits = head(states[c : c + 1024]).float()
                want = targets[c : c + 1024]
                nll += float(F.cross_entropy(logits, want, reduction="sum"))
                correct += int((logits.argmax(-1) == want).sum())
            count += len(targets)
    model.train(was_training)
    loss = nll / count if count else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if count else float("nan"),
        "token_accuracy": correct / count if count else float("nan"),
        "tokens": count,
        "examples": len(examples),
        "nll_sum": nll,
        "seconds": time.perf_counter() - start,
    }


# ---- memory --------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """The process's peak resident set so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- the run -------------------------------------------------------------------------


class CountingCollator:
    """TRL's collator, counting the real and padded tokens of each training batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches = self.real = self.padded = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        self.batches += 1
        self.padded += int(batch["input_ids"].numel())
        self.real += int(batch["attention_mask"].sum())
        return batch


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import accelerate
    import datasets
    import peft
    import torch
    import transformers
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    train_rows, eval_rows = load_split(args.data, args.train_rows, args.eval_rows)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # transformers 5.24 loads this folder as a GPT2Tokenizer whose pre-tokenizer
    # drops tokenizer.json's Digits(individual_digits) step ("\n\n1" then splits
    # differently from the model's own tokenizer); use the file's pre-tokenizer.
    import tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = tokenizers.Tokenizer.from_file(
        str(Path(args.model) / "tokenizer.json")
    ).pre_tokenizer
    for special in (IM_START, IM_END):
        got = tokenizer(special, add_special_tokens=False)["input_ids"]
        if len(got) != 1:
            raise SystemExit(f"{args.model}: {special} is not one token ({got})")
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = IM_END  # as SmolLM2 does; padding carries no loss
    pad_id = tokenizer.pad_token_id

    train = encode(tokenizer, train_rows, args.system, args.max_length)
    held = encode(tokenizer, eval_rows, args.system, args.max_length, len(train_rows))
    if not train.examples or not held.examples:
        raise SystemExit("no training or held-out example left after truncation")
    checked = check_masks(tokenizer, train, train_rows, 0, args.system)
    checked += check_masks(tokenizer, held, eval_rows, len(train_rows), args.system)
    # The first example whose response was not cut, as the trainer will see it.
    cut = set(train.truncated)
    k = next((k for k, i in enumerate(train.rows) if i not in cut), 0)
    sample = train.examples[k]
    start = first_label(sample["labels"])
    shown = {
        part: tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        for part, ids in (
            ("prompt", sample["input_ids"][:start]),
            ("trained", sample["input_ids"][start:]),
        )
    }
    shown["row"] = train.rows[k]
    print(f"row {train.rows[k]} prompt: {shown['prompt']!r}", file=sys.stderr)
    print(f"row {train.rows[k]} trained: {shown['trained']!r}", file=sys.stderr)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    total_params = sum(p.numel() for p in model.parameters())
    batch_eval = args.eval_batch_size or args.batch_size
    before = response_loss(model, held.examples, batch_eval, pad_id)
    print(f"held-out response loss before: {before['loss']:.4f}", file=sys.stderr)

    steps_per_epoch = math.ceil(len(train.examples) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = math.ceil(total_steps * args.warmup_ratio)
    lora = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=[t.strip() for t in args.lora_targets.split(",") if t.strip()],
        bias="none",
        task_type="CAUSAL_LM",
    )
    collator = CountingCollator(DataCollatorForLanguageModeling(pad_token_id=pad_id))
    with tempfile.TemporaryDirectory(prefix="tfsft-bench-trl-") as out_dir:
        config = SFTConfig(
            output_dir=out_dir,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=args.lr,
            lr_scheduler_type="linear",
            warmup_steps=warmup_steps,  # an int >= 1 or 0: a step count, not a ratio
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            seed=args.seed,
            data_seed=args.seed,
            bf16=False,  # TRL's default is bf16 mixed precision
            fp16=False,
            activation_checkpointing=False,  # TRL's default is on
            use_cpu=True,
            max_length=args.max_length,
            packing=False,
            padding_free=False,
            shuffle_dataset=False,
            train_sampling_strategy=(
                "group_by_length" if args.group_by_length else "random"
            ),
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=args.logging_steps,
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=datasets.Dataset.from_list(train.examples),
            processing_class=tokenizer,
            peft_config=None if args.full else lora,
            data_collator=collator,
        )
        # TRL took the rows as they are: no template, BOS or EOS of its own.
        prepared = trainer.train_dataset
        if len(prepared) != len(train.examples) or any(
            prepared[k]["input_ids"] != e["input_ids"]
            or prepared[k]["labels"] != e["labels"]
            for k, e in enumerate(train.examples)
        ):
            raise AssertionError("SFTTrainer changed the tokenized training rows")
        trainable = sum(
            p.numel() for p in trainer.model.parameters() if p.requires_grad
        )
        rss_before_train = peak_rss_bytes()
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
    rss_after_train = peak_rss_bytes()
    after = response_loss(trainer.model, held.examples, batch_eval, pad_id)

    trained_tokens = train.tokens * args.epochs
    response_tokens = train.response_tokens * args.epochs
    if collator.real != trained_tokens:  # a batch lost or seen twice
        raise AssertionError(f"collated {collator.real} tokens, not {trained_tokens}")
    history = trainer.state.log_history
    result = {
        "runner": "trl_sft",
        "train_seconds": train_seconds,
        "tokens_per_second": trained_tokens / train_seconds,
        "response_tokens_per_second": response_tokens / train_seconds,
        "trained_tokens": trained_tokens,
        "response_tokens": response_tokens,
        "padded_tokens": collator.padded,
        "peak_rss_bytes": peak_rss_bytes(),  # the whole process, evaluation included
        "peak_rss_before_train_bytes": rss_before_train,
        "peak_rss_after_train_bytes": rss_after_train,
        "held_out": {
            "before": before,
            "after": after,
            "relative_change": (after["loss"] - before["loss"]) / before["loss"],
        },
        "train_loss": next(
            (e["train_loss"] for e in history if "train_loss" in e), None
        ),
        "loss_log": [
            {"step": e["step"], "loss": e["loss"]} for e in history if "loss" in e
        ],
        "steps": trainer.state.global_step,
        "warmup_steps": warmup_steps,
        "data": {
            "file": str(args.data),
            "train_rows": [0, len(train_rows)],
            "eval_rows": [len(train_rows), len(train_rows) + len(eval_rows)],
            "template": "chatml",
            "system": args.system,
            "max_length": args.max_length,
            "masks_checked": checked,
            "example": shown,
            "train": train.summary(),
            "eval": held.summary(),
            "eos_id": eos_id,
            "pad_id": pad_id,
        },
        "train_lengths": [len(e["input_ids"]) for e in train.examples],
        "hyper": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "eval_batch_size": batch_eval,
            "learning_rate": args.lr,
            "warmup_ratio": args.warmup_ratio,
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "optimizer": str(getattr(config.optim, "value", config.optim)),
            "lr_scheduler": "linear",
            "lora": None
            if args.full
            else {
                "rank": args.lora_rank,
                "alpha": args.lora_alpha,
                "dropout": args.lora_dropout,
                "targets": lora.target_modules
                if isinstance(lora.target_modules, list)
                else sorted(lora.target_modules),
            },
            "group_by_length": args.group_by_length,
            "seed": args.seed,
        },
        "params": {"total": total_params, "trainable": trainable},
        "model": str(args.model),
        "attention": str(model.config._attn_implementation),
        "precision": "float32",
        "threads": args.threads,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
            "datasets": datasets.__version__,
        },
    }
    result["process_seconds"] = time.perf_counter() - START
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_trl_sft.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", type=Path, required=True, help="HF Llama folder")
    p.add_argument("--data", type=Path, required=True, help="alpaca JSON list")
    p.add_argument("--out", type=Path, required=True, help="result JSON")
    p.add_argument("--train-rows", type=int, default=900, help="the first N rows")
    p.add_argument("--eval-rows", type=int, default=99, help="the M rows after them")
    p.add_argument("--system", default=None, help="system turn (default: none)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--eval-batch-size", type=int, default=0, help="0: --batch-size (default)"
    )
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--lora-targets", default="q_proj,v_proj")
    p.add_argument(
        "--full",
        action="store_true",
        help="full fine-tuning, no LoRA (the ceiling a LoRA recipe is measured "
        "against; the --lora-* options are then ignored)",
    )
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--logging-steps", type=int, default=10)
    args = p.parse_args(argv)
    if args.train_rows < 1 or args.eval_rows < 1 or args.max_length < 2:
        p.error("--train-rows and --eval-rows must be >= 1, --max-length >= 2")
    if not 0 <= args.warmup_ratio < 1:
        p.error("--warmup-ratio must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    held = result["held_out"]
    print(
        f"trl_sft: {result['trained_tokens']:,} tokens in "
        f"{result['train_seconds']:.1f} s = {result['tokens_per_second']:.1f} tok/s "
        f"({result['response_tokens_per_second']:.1f} response tok/s), "
        f"peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB, held-out response loss "
        f"{held['before']['loss']:.4f} -> {held['after']['loss']:.4f} "
        f"({100 * held['relative_change']:+.1f} %), "
        f"{result['process_seconds']:.0f} s in all"
    )


if __name__ == "__main__":
    main()
