"""Generating completions with a causal LM: keras-hub's compiled generation loop
(``generate_step``: a KV cache and a sampler inside one TF graph), fed with prompts
tokenized exactly as training tokenized them.

keras-hub's own ``generate()`` tokenizes with its preprocessor (adding a start
token for some models) and returns prompt and completion as one string; here the
prompt is rendered with the run's template, and only the completion up to (not
including) the end token comes back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfsft.config_sft import GenerateConfig
from tfsft.errors import TfsftError
from tfsft.progress import stage


def make_sampler(cfg: GenerateConfig) -> Any:
    """The keras-hub sampler ``cfg`` names (greedy, top_k or top_p)."""
    import keras_hub

    if cfg.sampler == "greedy":
        return keras_hub.samplers.GreedySampler()
    if cfg.sampler == "top_k":
        return keras_hub.samplers.TopKSampler(
            k=cfg.top_k, seed=cfg.seed, temperature=cfg.temperature
        )
    return keras_hub.samplers.TopPSampler(
        p=cfg.top_p, seed=cfg.seed, temperature=cfg.temperature
    )


def context_length(model: Any) -> int | None:
    """The longest sequence the backbone takes (None: not limited by the model),
    less the virtual tokens prompt tuning puts in front of every prompt."""
    limit = getattr(model.backbone, "max_sequence_length", None)
    virtual = getattr(model.backbone, "_tfsft_prompt_count", 0)
    return None if limit is None else limit - virtual


def generate_ids(
    model: Any,
    prompts: list[np.ndarray],
    max_new_tokens: int,
    stop_ids: list[int],
    sampler: Any,
    pad_id: int = 0,
) -> list[np.ndarray]:
    """New token ids after each prompt, up to the first stop token (excluded).

    Prompts are padded on the right to a common width plus ``max_new_tokens``;
    keras-hub's loop starts at the shortest prompt and keeps each row's own prompt
    tokens where its mask says so.
    """
    import tensorflow as tf

    if not prompts:
        return []
    lengths = np.array([len(p) for p in prompts])
    width = int(lengths.max()) + max_new_tokens
    pad_id = safe_pad_id(pad_id, stop_ids)
    ids = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p
        mask[i, : len(p)] = True
    step = _generate_fn(model, sampler, tuple(stop_ids))
    out = step(tf.constant(ids), tf.constant(mask))
    tokens = np.asarray(out["token_ids"])
    results = []
    for i, n in enumerate(lengths):
        new = tokens[i, n : n + max_new_tokens]
        stops = np.flatnonzero(np.isin(new, stop_ids))
        results.append(new[: stops[0]] if stops.size else new)
    return results


def safe_pad_id(pad_id: int, stop_ids: list[int]) -> int:
    """A pad id that is no stop id.

    keras-hub's loop ends once every row holds a stop token past its prompt, pads
    included, so a pad that is a stop id (Llama: pad = eos) would end it before the
    first step. Pads are never attended (the cache is causal), so any id will do.
    """
    if pad_id not in stop_ids:
        return pad_id
    return min(set(range(len(stop_ids) + 1)) - set(stop_ids))


def _generate_fn(model: Any, sampler: Any, stop_ids: tuple[int, ...]) -> Any:
    """A compiled ``generate_step`` for this model and sampler (cached on the
    model, so a callback or a batch loop traces it once per shape)."""
    import tensorflow as tf

    cache = model.__dict__.setdefault("_tfsft_generate", {})
    key = (id(sampler), stop_ids)
    if key not in cache:

        @tf.function(reduce_retracing=True)
        def step(token_ids: tf.Tensor, padding_mask: tf.Tensor) -> dict:
            model.sampler = sampler
            return model.generate_step(
                {"token_ids": token_ids, "padding_mask": padding_mask},
                stop_token_ids=stop_ids,
            )

        cache.clear()  # one sampler at a time: old graphs hold old samplers
        cache[key] = step
    return cache[key]


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    cfg: GenerateConfig,
    stop_ids: list[int],
    batch_size: int = 8,
    where: list[str] | None = None,
) -> list[str]:
    """Completions of rendered prompt texts, batch by batch.

    Raises:
        TfsftError: for an empty prompt or one that leaves no room for
            ``cfg.max_new_tokens`` in the model's context (``where`` names each
            prompt's source, e.g. "--prompt" or "input.jsonl: line 3").
    """
    from tfsft.tasks.causal_lm.encoding import tokenize_unique

    where = where or [f"prompt {i + 1}" for i in range(len(prompts))]
    pieces = tokenize_unique(set(prompts), tokenizer)
    limit = context_length(model)
    ids = []
    for text, at in zip(prompts, where, strict=True):
        tokens = pieces[text]
        if not text.strip() or len(tokens) == 0:
            raise TfsftError(f"{at}: the prompt is empty")
        if limit is not None and len(tokens) + cfg.max_new_tokens > limit:
            raise TfsftError(
                f"{at}: the prompt is {len(tokens)} tokens; with max_new_tokens "
                f"{cfg.max_new_tokens} that exceeds the model's context of {limit} "
                "tokens; shorten the prompt or lower --max-new-tokens"
            )
        ids.append(tokens)
    sampler = make_sampler(cfg)
    pad = int(tokenizer.pad_token_id or 0) if hasattr(tokenizer, "pad_token_id") else 0
    texts: list[str] = []
    with stage("generating", len(ids), "prompts") as progress:
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            new = generate_ids(model, batch, cfg.max_new_tokens, stop_ids, sampler, pad)
            texts += [_detokenize(tokenizer, t) for t in new]
            progress.advance(len(batch))
    return texts


def _detokenize(tokenizer: Any, ids: np.ndarray) -> str:
    if len(ids) == 0:
        return ""
    text = tokenizer.detokenize(np.asarray(ids, np.int32))
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
