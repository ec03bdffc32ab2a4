"""Token ids, next-token targets and loss weights of rendered conversations.

Each segment of a rendered conversation (`tfsft.data.chat.render`) is tokenized on
its own and the pieces are joined, so every token carries its segment's weight.
Row ``i`` of the result predicts token ``t + 1`` at position ``t``: ``targets[t] =
ids[t + 1]`` with the weight of token ``t + 1``, so the last prompt token predicts
the first response token and the response's last token predicts the eos.

Packing (`pack`) lays several examples end to end in one row; ``segment_ids``
(1, 2, ... per example, 0 for padding) tell the model where attention must stop,
and the position that ends one example predicts nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfsft.data.chat import Template, Turn, render
from tfsft.data.sources import Examples
from tfsft.errors import DataError

log = logging.getLogger("tfsft")


@dataclass
class TokenizedConversations:
    """Per example: token ids and per-token loss weights (before shifting)."""

    ids: list[np.ndarray]
    weights: list[np.ndarray]
    truncated: list[int]  # examples cut to model.sequence_length
    emptied: list[int]  # of those, examples whose trained tokens were all cut


def tokenize_conversations(
    conversations: list[list[Turn]],
    template: Template,
    tokenizer: Any,
    max_length: int,
    train_on_prompt: bool,
) -> TokenizedConversations:
    """Tokenizes each conversation's segments and cuts it to ``max_length``."""
    rendered = [
        merge_segments(render(turns, template, train_on_prompt))
        for turns in conversations
    ]
    pieces = tokenize_unique({text for segs in rendered for text, _ in segs}, tokenizer)
    out = TokenizedConversations([], [], [], [])
    for i, segments in enumerate(rendered):
        ids = np.concatenate([pieces[text] for text, _ in segments]).astype(np.int32)
        weights = np.concatenate(
            [np.full(len(pieces[text]), w, np.float32) for text, w in segments]
        )
        if len(ids) > max_length:
            out.truncated.append(i)
            # Only tokens after the first are ever predicted (there is no BOS).
            if weights[1:max_length].sum() == 0 and weights[1:].sum() > 0:
                out.emptied.append(i)
            ids, weights = ids[:max_length], weights[:max_length]
        out.ids.append(ids)
        out.weights.append(weights)
    return out


def merge_segments(segments: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Joins neighbouring segments of equal weight into one text.

    The prompt before each response is then tokenized as one string, exactly as a
    prompt is tokenized for generation (`tfsft.data.chat.render_prompt`): byte-level
    BPE merges across the template's pieces (alpaca's blank line before "### Response:"
    tokenizes differently apart and together), and training must see what
    generation sees.
    """
    merged: list[tuple[str, float]] = []
    for text, weight in segments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged


def tokenize_unique(texts: set[str], tokenizer: Any) -> dict[str, np.ndarray]:
    """Token ids of each distinct text, tokenized in one vectorised call (the
    template's markers repeat in every example)."""
    import tensorflow as tf

    order = sorted(texts)
    if not order:
        return {}
    tokens = tokenizer(tf.constant(order))
    # keras-hub returns a tf.RaggedTensor, or nested lists outside a TF graph.
    if hasattr(tokens, "to_list"):
        tokens = tokens.to_list()
    rows = [np.asarray(r, np.int32).reshape(-1) for r in tokens]
    return dict(zip(order, rows, strict=True))


def shifted_rows(
    ids: list[np.ndarray],
    weights: list[np.ndarray],
    width: int,
    pad_id: int,
    segments: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Pads examples (or packed rows) into [rows, width] arrays.

    Returns:
        token_ids, padding_mask (int32) and, with ``segments``, segment_ids; plus
        ``targets`` (the next token) and ``sample_weight`` (its weight; 0 where a
        position ends an example or is padding).
    """
    n = len(ids)
    out = {
        "token_ids": np.full((n, width), pad_id, np.int32),
        "padding_mask": np.zeros((n, width), np.int32),
        "targets": np.zeros((n, width), np.int32),
        "sample_weight": np.zeros((n, width), np.float32),
    }
    if segments is not None:
        out["segment_ids"] = np.zeros((n, width), np.int32)
    for i, (row, w) in enumerate(zip(ids, weights, strict=True)):
        k = len(row)
        out["token_ids"][i, :k] = row
        out["padding_mask"][i, :k] = 1
        out["targets"][i, : k - 1] = row[1:]
        out["sample_weight"][i, : k - 1] = w[1:]
        if segments is not None:
            seg = segments[i]
            out["segment_ids"][i, :k] = seg
            # The last token of one example does not predict the next example's
            # first token.
            out["sample_weight"][i, : k - 1] *= seg[1:] == seg[:-1]
    return out


def pack(
    ids: list[np.ndarray], weights: list[np.ndarray], width: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """Lays examples end to end, in order, into rows of at most ``width`` tokens.

    An example never spans two rows (each is at most ``width`` long after
    truncation); a row is closed when the next example does not fit.

    Returns:
        (row ids, row weights, row segment ids, the examples in each row).
    """
    rows: list[list[int]] = []
    used = 0
    for i, row in enumerate(ids):
        if not rows or used + len(row) > width:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += len(row)
    packed_ids = [np.concatenate([ids[i] for i in r]) for r in rows]
    packed_weights = [np.concatenate([weights[i] for i in r]) for r in rows]
    segment_ids = [
        np.concatenate([np.full(len(ids[i]), s + 1, np.int32) for s, i in enumerate(r)])
        for r in rows
    ]
    return packed_ids, packed_weights, segment_ids, rows


def keep_after_truncation(
    examples: Examples, emptied: list[int], policy: str
) -> np.ndarray:
    """Reports the examples whose responses truncation emptied; returns the
    indices of the examples to keep (``policy``: drop or keep them)."""
    where = "; ".join(examples.locate(i) for i in emptied[:3])
    more = f" and {len(emptied) - 3} more" if len(emptied) > 3 else ""
    action = "dropped" if policy == "drop" else "kept, training nothing"
    log.warning(
        "%s: %d example(s) lose every response token to model.sequence_length "
        "and are %s (data.truncated_response: %s): %s%s",
        examples.source,
        len(emptied),
        action,
        policy,
        where,
        more,
    )
    keep = np.setdiff1d(np.arange(len(examples)), emptied) if policy == "drop" else None
    if keep is not None and keep.size == 0:
        raise DataError(
            f"{examples.source}: every example loses its response to truncation; "
            "raise model.sequence_length"
        )
    return np.arange(len(examples)) if keep is None else keep
