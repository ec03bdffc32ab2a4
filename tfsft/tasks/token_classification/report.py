"""Token-classification outputs: per-word probabilities, entity metrics (seqeval,
strict mode), the evaluation report and JSON predictions with character offsets."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfsft.config import EvaluateConfig
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import Examples
from tfsft.evaluation.metrics import confusion
from tfsft.evaluation.report import (
    plot_bars,
    plot_confusion,
    write_errors,
    write_metrics,
)
from tfsft.evaluation.report_doc import Part
from tfsft.evaluation.report_parts import figure, per_class_table
from tfsft.runs import write_json
from tfsft.tasks.token_classification import tags

Span = tuple[int, int, str]  # [start, end) words, type
TYPE_F1_PLOT = "per_type_f1.png"


@dataclass
class WordOutputs:
    """Each word's tag probabilities, read from its window with the most context."""

    probs: np.ndarray  # [words, tags] float64
    splits: np.ndarray  # [sentences + 1]: sentence i is words splits[i]:splits[i+1]

    @property
    def tag_ids(self) -> np.ndarray:
        return self.probs.argmax(axis=-1)


def word_outputs(logits: np.ndarray, encoded: Any) -> WordOutputs:
    """Per-window logits [rows, L, tags] -> per-word softmax probabilities."""
    picked = np.asarray(logits, np.float64)[encoded.word_window, encoded.word_position]
    shifted = np.exp(picked - picked.max(axis=-1, keepdims=True))
    return WordOutputs(
        shifted / shifted.sum(axis=-1, keepdims=True), encoded.word_splits
    )


def sentence_spans(
    tag_ids: np.ndarray, splits: np.ndarray, labels: LabelSpec
) -> list[list[Span]]:
    """The entities of every sentence, read strictly (as the metrics read them)."""
    import tensorflow as tf

    from tfsft.tasks.token_classification.windows import extract_spans

    prefixes, kinds, types = tags.tag_tables(labels.names)
    ragged = tf.RaggedTensor.from_row_splits(
        tf.constant(tag_ids, tf.int64), tf.constant(splits, tf.int64)
    )
    starts, ends, type_ids = extract_spans(
        ragged,
        tf.constant(prefixes, tf.int64),
        tf.constant(kinds, tf.int64),
        bioes=labels.scheme == "bioes",
    )
    return [
        [(int(s), int(e), types[int(k)]) for s, e, k in zip(*row, strict=True)]
        for row in zip(
            starts.to_list(), ends.to_list(), type_ids.to_list(), strict=True
        )
    ]


def entity_scores(
    outputs: WordOutputs, encoded: Any, labels: LabelSpec
) -> dict[str, float]:
    """Entity-level P/R/F1 (micro, macro, per type; seqeval strict) and token
    accuracy and loss over words."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    names = np.array(labels.names, dtype=object)
    gold, pred = encoded.word_tags, outputs.tag_ids
    cut = outputs.splits

    def sentences(ids: np.ndarray) -> list[list[str]]:
        return [names[ids[a:b]].tolist() for a, b in itertools.pairwise(cut)]

    table = classification_report(
        sentences(gold),
        sentences(pred),
        mode="strict",
        scheme=IOBES if labels.scheme == "bioes" else IOB2,
        output_dict=True,
        zero_division=0,
    )
    out = {}
    for key, average in (("", "micro avg"), ("_macro", "macro avg")):
        row = table.get(average, {})
        out[f"entity_precision{key}"] = float(row.get("precision", 0.0))
        out[f"entity_recall{key}"] = float(row.get("recall", 0.0))
        out[f"entity_f1{key}"] = float(row.get("f1-score", 0.0))
    gold_prob = outputs.probs[np.arange(len(gold)), gold]
    out["token_accuracy"] = float((pred == gold).mean()) if len(gold) else 0.0
    out["loss"] = float(-np.log(np.clip(gold_prob, 1e-12, 1.0)).mean())
    for kind in tags.entity_types(labels.names):
        row = table.get(kind, {})
        for metric, key in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
        ):
            out[f"{metric}_{kind}"] = float(row.get(key, 0.0))
        out[f"support_{kind}"] = int(row.get("support", 0))
    out["per_type"] = {k: v for k, v in table.items()}
    return out


def write_report(
    out_dir: Path,
    examples: Examples,
    encoded: Any,
    outputs: WordOutputs,
    labels: LabelSpec,
    cfg: EvaluateConfig,
) -> dict[str, float | None]:
    """metrics.json, per_class.json (seqeval's table), the per-type confusion of
    words, and errors.jsonl (sentences whose entities differ, worst first)."""
    scores = entity_scores(outputs, encoded, labels)
    per_type = scores.pop("per_type")
    metrics = write_metrics(out_dir, scores, len(examples))
    write_json(out_dir / "per_class.json", _plain(per_type))
    f1 = {
        k: float(per_type.get(k, {}).get("f1-score", 0.0))
        for k in tags.entity_types(labels.names)
    }
    plot_bars(f1, "entity F1 by type (strict)", out_dir / TYPE_F1_PLOT)
    _write_confusion(out_dir, encoded.word_tags, outputs.tag_ids, labels)
    gold = sentence_spans(encoded.word_tags, outputs.splits, labels)
    pred = sentence_spans(outputs.tag_ids, outputs.splits, labels)
    write_errors(
        out_dir, _errors(examples, encoded, outputs, gold, pred), cfg.max_errors
    )
    return metrics


def report_parts(out_dir: Path) -> list[Part]:
    """The run report's per-type table, F1 chart and word confusion matrix."""
    parts = [
        per_class_table(out_dir / "per_class.json", "Per entity type", "type"),
        figure(
            out_dir / TYPE_F1_PLOT,
            "Entity F1 by type",
            "bar chart of the strict entity F1 of each entity type",
        ),
        figure(
            out_dir / "confusion_matrix.png",
            "Confusion of words by entity type",
            "confusion matrix of words: gold entity type (or O) by row, predicted "
            "by column",
        ),
    ]
    return [p for p in parts if p is not None]


def decode(
    outputs: WordOutputs, examples: Examples, labels: LabelSpec
) -> list[dict[str, Any]]:
    """``{"entities": [{"text", "type", "start", "end", "score"}]}`` per example,
    with character offsets into the input text (the words joined by single spaces
    for pre-tokenized input)."""
    spans = sentence_spans(outputs.tag_ids, outputs.splits, labels)
    best = outputs.probs.max(axis=-1)
    rows = []
    for i, sentence in enumerate(spans):
        text, starts, ends = _offsets(examples, i)
        first = outputs.splits[i]
        rows.append(
            {
                "entities": [
                    {
                        "text": text[starts[s] : ends[e - 1]],
                        "type": kind,
                        "start": starts[s],
                        "end": ends[e - 1],
                        "score": round(float(best[first + s : first + e].mean()), 6),
                    }
                    for s, e, kind in sentence
                ]
            }
        )
    return rows


def describe_entities(word_tags: np.ndarray, labels: LabelSpec) -> str:
    """Gold entities per type (each begins with B- or S-), from legal tag ids."""
    counts = dict.fromkeys(tags.entity_types(labels.names), 0)
    for tag_id in word_tags:
        prefix, kind = tags.split_tag(labels.names[tag_id])
        if prefix in ("B", "S"):
            counts[kind] += 1
    return ", ".join(f"{k}: {n}" for k, n in counts.items())


def _offsets(examples: Examples, i: int) -> tuple[str, list[int], list[int]]:
    """The text entities are cut from, and each word's character start and end."""
    if "text" in examples.meta:
        return (
            examples.meta["text"][i],
            examples.meta["starts"][i],
            examples.meta["ends"][i],
        )
    words = examples.texts[i]
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    return (
        " ".join(words),
        starts,
        [s + len(w) for s, w in zip(starts, words, strict=True)],
    )


def _write_confusion(
    out_dir: Path, gold: np.ndarray, pred: np.ndarray, labels: LabelSpec
) -> None:
    """Words by gold entity type (or O) and predicted type: which types blur."""
    names = [*tags.entity_types(labels.names), "O"]
    kind_of = np.array([names.index(tags.split_tag(n)[1] or "O") for n in labels.names])
    matrix = confusion(kind_of[gold], kind_of[pred], len(names))
    write_json(
        out_dir / "confusion_matrix.json",
        {"labels": names, "matrix": matrix.tolist(), "unit": "words"},
    )
    plot_confusion(matrix, tuple(names), out_dir / "confusion_matrix.png")


def _errors(
    examples: Examples,
    encoded: Any,
    outputs: WordOutputs,
    gold: list[list[Span]],
    pred: list[list[Span]],
) -> list[dict[str, Any]]:
    """Sentences whose predicted entities differ from the gold ones, worst first:
    most wrong entities, then the least probability on the gold tags."""
    gold_prob = outputs.probs[np.arange(len(encoded.word_tags)), encoded.word_tags]
    found = []
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        wrong = len(set(g) ^ set(p))
        if not wrong:
            continue
        a, b = outputs.splits[i], outputs.splits[i + 1]
        found.append((-wrong, float(gold_prob[a:b].mean()), i))
    records = []
    for _, _, i in sorted(found):
        words = examples.texts[i]

        def show(spans: list[Span], words: list[str] = words) -> list[dict[str, Any]]:
            return [
                {"text": " ".join(words[s:e]), "type": k, "start": s, "end": e}
                for s, e, k in spans
            ]

        records.append(
            {
                examples.row_kind: examples.rows[i],
                "text": " ".join(words),
                "gold": show(gold[i]),
                "predicted": show(pred[i]),
            }
        )
    return records


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value
