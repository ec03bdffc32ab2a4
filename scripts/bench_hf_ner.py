"""HF transformers `Trainer` for token classification (NER), on PyTorch CPU.

    HF_VENV/bin/python scripts/bench_hf_ner.py SPEC.json OUT.json

Started by benchmark.py for a ``task: token_classification`` config, in the HF venv
(no TensorFlow, no tfsft, no seqeval). The recipe is HF's run_ner.py: a fast
tokenizer on pre-split words (``is_split_into_words=True``), the tag on each word's
first sub-token and -100 on its other sub-tokens and the special tokens, truncation
to the max length, dynamic padding (`DataCollatorForTokenClassification`), and the
classification runner's Trainer settings (`bench_hf.training_arguments`).

The output holds each dev word's predicted tag id, read from its first sub-token
(words cut off by truncation are predicted O), so that the parent scores the HF and
tfsft runs with the same seqeval call.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bench_common import child_args, write_json
from bench_hf import training_arguments, use_all_cores


@dataclass
class Encoded:
    """One split as the Trainer takes it, and where each word's label sits."""

    rows: list[dict[str, Any]]
    # Per row: the index of each labelled word, in the order of its labelled
    # position (a word that truncation cut off, or that has no sub-token, is absent).
    labelled_words: list[list[int]]
    truncated_sentences: int
    truncated_words: int


def label_first_pieces(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """run_ner.py's alignment: a word's tag on its first sub-token, -100 elsewhere.

    ``word_ids`` is the fast tokenizer's sub-token -> word map (None for [CLS],
    [SEP] and padding).
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else tags[word])
        previous = word
    return labels


def encode(tokenizer: Any, split: dict[str, Any], max_length: int) -> Encoded:
    enc = tokenizer(
        split["words"], is_split_into_words=True, truncation=True, max_length=max_length
    )
    rows, labelled, cut_sentences, cut_words = [], [], 0, 0
    for i, tags in enumerate(split["tags"]):
        word_ids = enc.word_ids(i)
        labels = label_first_pieces(word_ids, tags)
        rows.append({**{k: enc[k][i] for k in enc}, "labels": labels})
        labelled.append([w for w, y in zip(word_ids, labels, strict=True) if y != -100])
        # Truncation keeps a prefix of the words: those after the last one kept
        # are lost (a sentence has one tag per word).
        kept = max((w for w in word_ids if w is not None), default=-1) + 1
        cut_sentences += kept < len(tags)
        cut_words += len(tags) - kept
    return Encoded(rows, labelled, cut_sentences, cut_words)


def word_predictions(
    pred_ids: Any, label_ids: Any, dev: Encoded, tags: list[list[int]], o_id: int
) -> list[list[int]]:
    """Per-word tag ids from the eval arrays [rows, width] (padded with -100).

    The Trainer concatenates eval batches padded to one width, on the right, as the
    collator pads; a row's labelled positions are therefore its first sub-tokens in
    order, matching ``dev.labelled_words``. Words without one are predicted O.
    """
    out = []
    for i, words in enumerate(dev.labelled_words):
        picked = pred_ids[i][label_ids[i] != -100].tolist()
        if len(picked) != len(words):
            raise RuntimeError(f"dev row {i}: {len(picked)} labels for {len(words)}")
        sentence = [o_id] * len(tags[i])
        for word, tag in zip(words, picked, strict=True):
            sentence[word] = int(tag)
        out.append(sentence)
    return out


def run_hf_ner(spec: dict[str, Any]) -> dict[str, Any]:
    import accelerate
    import numpy as np
    import torch
    import transformers
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        set_seed,
    )

    threads = use_all_cores()
    set_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if not tokenizer.is_fast:  # word_ids() exists on fast tokenizers only
        raise SystemExit(f"{spec['model_dir']}: no fast tokenizer (needs word_ids)")
    length = spec["sequence_length"]
    train = encode(tokenizer, spec["train"], length)
    dev = encode(tokenizer, spec["validation"], length)
    names = spec["label_names"]
    model = AutoModelForTokenClassification.from_pretrained(
        spec["model_dir"],
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        classifier_dropout=spec["dropout"],
    )
    predictions: list[list[list[int]]] = []

    def capture(prediction: Any) -> dict[str, float]:
        # The Trainer's epoch-end evaluation (inside train(), as for classification);
        # entity scores are computed by the parent, from the words kept here.
        logits, label_ids = prediction
        pred_ids = np.argmax(logits, axis=-1)
        predictions.append(
            word_predictions(
                pred_ids, label_ids, dev, spec["validation"]["tags"], names.index("O")
            )
        )
        mask = label_ids != -100
        return {"token_accuracy": float((pred_ids[mask] == label_ids[mask]).mean())}

    with tempfile.TemporaryDirectory(prefix="tfsft-bench-hf-ner-") as out_dir:
        trainer = Trainer(
            model=model,
            args=training_arguments(spec, out_dir),
            train_dataset=train.rows,
            eval_dataset=dev.rows,
            data_collator=DataCollatorForTokenClassification(tokenizer),
            compute_metrics=capture,
        )
        # Timed like tfsft's train_seconds: the epochs plus the evaluation the
        # Trainer runs at each epoch end.
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    evals = [e for e in trainer.state.log_history if "eval_token_accuracy" in e]
    return {
        "train_seconds": seconds,
        "predictions": predictions[-1],
        "token_accuracy": evals[-1]["eval_token_accuracy"],
        "train_lengths": [len(row["input_ids"]) for row in train.rows],
        "truncated": {
            "train_sentences": train.truncated_sentences,
            "train_words": train.truncated_words,
            "dev_sentences": dev.truncated_sentences,
            "dev_words": dev.truncated_words,
        },
        "precision": "float32",
        "threads": threads,
        "steps": trainer.state.global_step,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
    }


def main() -> None:
    spec, out = child_args()
    write_json(out, run_hf_ner(spec))


if __name__ == "__main__":
    main()
