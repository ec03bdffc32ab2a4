"""benchmark.py's token-classification (NER) mode: tfsft vs the HF Trainer.

Chosen by a config with ``task: token_classification``. The runners get tfsft's own
training sentences (its loader and seeded subset) and hyper-parameters: `tfsft
train` as in the classification mode, and bench_hf_ner.py (HF's run_ner.py recipe)
in the HF venv. Both runs' dev predictions are scored with the same seqeval call
(strict mode): tfsft's in its metrics.json, HF's here, from the per-word tag ids
its child writes. keras-hub has no token-classification task, so the keras_hub
and fixed runners have no counterpart in this mode.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench_common import EncoderDims
from bench_report_ner import NerRow
from bench_runners import Bench, Plan, say, tfsft_padding, training_spec

NER_RUNNERS = ("tfsft", "hf")


def ner_runners(requested: list[str] | None) -> list[str]:
    """The runners of a NER run: the requested ones, or tfsft and hf.

    Raises:
        ConfigError: a runner without a token-classification counterpart.
    """
    from tfsft.errors import ConfigError

    if requested is None:
        return list(NER_RUNNERS)
    unsupported = [r for r in requested if r not in NER_RUNNERS]
    if unsupported:
        raise ConfigError(
            f"--runners: {','.join(unsupported)} cannot run a token-classification "
            "config (keras-hub has no token-classification task); use "
            f"--runners {','.join(NER_RUNNERS)}"
        )
    return requested


def make_ner_plan(
    args: argparse.Namespace,
    cfg: Any,
    overrides: list[str],
    model_dir: Path,
    dims: EncoderDims,
) -> Plan:
    """The plan of a NER run from a loaded token-classification config.

    Raises:
        TfsftError: an unsupported runner, missing data, or bad tags.
    """
    import tfsft

    # tfsft's own sentence -> tag ids, with the repairs data.repair_tags makes, so
    # the HF runner trains on exactly the tags tfsft does. (The token task has no
    # public encode_targets; its per-word ids come from this helper.)
    from tfsft.tasks.token_classification.reading import gold_tag_ids

    runners = ner_runners(args.runners)
    splits = tfsft.load_splits(cfg)
    labels = tfsft.get_task(cfg).build_labels(splits.train, cfg.data)
    train_tags = gold_tag_ids(splits.train, labels, cfg.data)
    dev_tags = gold_tag_ids(splits.validation, labels, cfg.data)
    padding = tfsft_padding(cfg)  # imports TF: only once the data is known good
    tc = cfg.train
    # Per sentence, as the HF Trainer counts them; tfsft counts windows, one more
    # per training sentence longer than the sequence length (rare in CoNLL-2003).
    spec = training_spec(
        str(args.config), overrides, model_dir, cfg, len(splits.train)
    ) | {
        "task": "token_classification",
        "label_names": list(labels.names),
        "scheme": labels.scheme,
        "num_classes": labels.num_outputs,
        "train": _sentences(splits.train.texts, train_tags),
        "validation": _sentences(splits.validation.texts, dev_tags),
    }
    warmup_steps, total_steps = spec["warmup_steps"], spec["total_steps"]
    rows = args.train_rows or "null"
    dev_words = sum(len(t) for t in dev_tags)
    hyper = {
        "model": f"{cfg.model.preset} ({model_dir})",
        "tags": f"{', '.join(labels.names)} ({(labels.scheme or '').upper()})",
        "max length (sub-tokens)": f"{cfg.model.sequence_length} (longer sentences: "
        "tfsft splits them into overlapping windows, HF truncates them)",
        "batch size": tc.batch_size,
        "learning rate (peak)": tc.learning_rate,
        "schedule": f"linear warm-up {warmup_steps} steps "
        f"(ratio {tc.warmup_ratio}), then {tc.schedule} decay to 0 at {total_steps} "
        "(tfsft batches windows: a sentence over the max length adds one)",
        "optimizer": "AdamW, eps 1e-8, no decay on biases and LayerNorm",
        "weight decay": tc.weight_decay,
        "max grad norm (global)": tc.max_grad_norm,
        "epochs": tc.epochs,
        "seed": tc.seed,
        "dropout (head)": cfg.model.dropout,
        "loss": "cross-entropy on each word's first sub-token, averaged over them",
        "train sentences": f"{len(splits.train):,} of {cfg.data.train} "
        f"(tfsft's seeded subset, data.max_train_examples={rows})",
        "dev sentences": f"{len(splits.validation):,} ({cfg.data.validation}): "
        f"{dev_words:,} words, {count_entities(dev_tags, labels.names):,} entities",
        "padding": f"tfsft: {padding}; HF: dynamic, to each batch's longest "
        "(DataCollatorForTokenClassification)",
        "tfsft runtime": f"precision {cfg.runtime.precision}, "
        f"jit_compile {cfg.runtime.jit_compile}",
    }
    return Plan(overrides, spec, dims, hyper, padding, runners, "token_classification")


def _sentences(words: list[list[str]], tags: list[Any]) -> dict[str, list]:
    return {
        "words": [list(w) for w in words],
        "tags": [[int(t) for t in sentence] for sentence in tags],
    }


def entity_types(names: list[str]) -> list[str]:
    """Entity types in the order of the tag vocabulary (B-PER -> PER)."""
    return list(dict.fromkeys(n[2:] for n in names if n != "O" and n[1:2] == "-"))


def count_entities(tags: list[Any], names: list[str] | tuple[str, ...]) -> int:
    """Gold entities: each begins with a B- (IOB2) or S- (BIOES) tag."""
    starts = {i for i, n in enumerate(names) if n[:2] in ("B-", "S-")}
    return sum(int(t) in starts for sentence in tags for t in sentence)


def entity_scores(
    gold: list[list[int]], pred: list[list[int]], names: list[str], scheme: str
) -> dict[str, Any]:
    """Entity P/R/F1 (micro) and F1 per type: seqeval strict, as tfsft scores.

    Raises:
        ValueError: ``pred`` does not have one tag per gold word.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    if len(gold) != len(pred):
        raise ValueError(f"{len(pred)} predicted sentences for {len(gold)}")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"dev sentence {i}: {len(p)} tags for {len(g)} words")

    def as_names(sentences: list[list[int]]) -> list[list[str]]:
        return [[names[t] for t in s] for s in sentences]

    table = classification_report(
        as_names(gold),
        as_names(pred),
        mode="strict",
        scheme=IOBES if scheme == "bioes" else IOB2,
        output_dict=True,
        zero_division=0,
    )
    micro = table["micro avg"]
    return {
        "entity_f1": float(micro["f1-score"]),
        "entity_precision": float(micro["precision"]),
        "entity_recall": float(micro["recall"]),
        "f1_by_type": {
            t: float(table.get(t, {}).get("f1-score", 0.0)) for t in entity_types(names)
        },
    }


def run_ner(bench: Bench, runners: list[str]) -> list[NerRow]:
    """The selected runners, strictly one after another."""
    if "hf" in runners:
        bench.prepare_hf()  # pip is CPU-heavy: done before anything is timed
    rows = []
    if "tfsft" in runners:
        rows.append(tfsft_row(bench))
    if "hf" in runners:
        rows.append(hf_row(bench))
    return rows


def tfsft_row(bench: Bench) -> NerRow:
    metrics = bench.train_tfsft()
    if isinstance(metrics, str):
        return NerRow("tfsft", "failed", metrics)
    names = bench.plan.spec["label_names"]
    scores = {
        "entity_f1": metrics["entity_f1"],
        "entity_precision": metrics["entity_precision"],
        "entity_recall": metrics["entity_recall"],
        "f1_by_type": {
            t: metrics[f"f1_{t}"] for t in entity_types(names) if f"f1_{t}" in metrics
        },
    }
    precision = bench.tfsft_status.get("precision", "")
    return _row(bench, "tfsft", metrics["train_seconds"], precision, scores)


def hf_row(bench: Bench) -> NerRow:
    if bench.hf_python is None:
        return NerRow("hf", "skipped", bench.hf_message)
    say("HF transformers Trainer, AutoModelForTokenClassification")
    result = bench.train_hf("bench_hf_ner.py")
    if isinstance(result, str):
        return NerRow("hf", "failed", result)
    spec = bench.plan.spec
    scores = entity_scores(
        spec["validation"]["tags"],
        result["predictions"],
        spec["label_names"],
        spec["scheme"],
    )
    cut = result["truncated"]
    bench.notes.append(
        f"HF truncation at {spec['sequence_length']} sub-tokens: "
        f"{cut['dev_sentences']:,} dev sentences lost {cut['dev_words']:,} words "
        f"(predicted O); {cut['train_sentences']:,} training sentences lost "
        f"{cut['train_words']:,} words. HF ran {result['steps']} optimizer steps; "
        f"its token accuracy (first sub-tokens kept) {result['token_accuracy']:.4f}."
    )
    return _row(bench, "hf", result["train_seconds"], result["precision"], scores)


def _row(
    bench: Bench, name: str, seconds: float, precision: str, scores: dict[str, Any]
) -> NerRow:
    child = bench.children[name]
    sentences = len(bench.plan.spec["train"]["words"]) * bench.plan.spec["epochs"]
    return NerRow(
        name,
        precision=precision,
        train_seconds=seconds,
        examples_per_second=sentences / seconds if seconds else None,
        process_seconds=child.wall_seconds,
        cpu_seconds=child.cpu_seconds,
        rss_bytes=child.rss_bytes,
        **scores,
    )
