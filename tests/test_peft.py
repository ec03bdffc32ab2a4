"""PEFT methods and fine-tuning strategies: what trains, what stays, merging,
adapter-only saves, starting as the base model, backups, and config errors.

The tiny BERT (tfsft's ``tiny`` preset) has hidden size 16, feed-forward size 32,
two transformer layers and, with two labels, a 16 x 2 + 2 = 34-parameter head;
the hand counts below are in those terms.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config

import tfsft
from tfsft.config import validate_config
from tfsft.errors import ConfigError, TfsftError
from tfsft.models.build import build_model
from tfsft.models.freeze import count_params, embedding_layers, transformer_blocks
from tfsft.models.layers import nested_layers
from tfsft.models.peft import merge_lora, peft_state

HIDDEN, FFN, LAYERS, HEAD = 16, 32, 2, 16 * 2 + 2


def _cfg(tmp_path, peft=None, **sections):
    raw = tiny_config("peft", tmp_path / "runs", **sections)
    raw["model"]["dropout"] = 0.0
    raw["train"] |= {"warmup_ratio": 0.0, "weight_decay": 0.0}
    if peft:
        raw["peft"] = peft
    return validate_config(raw)


def _batch(n=8, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 60, (n, length)).astype("int32")
    ids[:, 0] = 2  # [CLS]
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    return x, (np.arange(n) % 2).astype("int32")


def _compiled(cfg, steps=2):
    from tfsft.training.build import compile_model

    model = build_model(cfg.model, 2, cfg.task, cfg.peft)
    compile_model(model, cfg, total_steps=steps)
    return model


def _sequence(model, x):
    out = model.backbone(x)
    return np.asarray(out["sequence_output"] if isinstance(out, dict) else out)


METHODS = {
    # name: (peft section, model.freeze, trainable params by hand)
    "lora": (
        {"method": "lora"},  # rank 8 on query and value: A [16, 8], B [8, 16]
        "none",
        LAYERS * 2 * 8 * (HIDDEN + HIDDEN) + HEAD,
    ),
    "lora-all-linear": (
        {"method": "lora", "rank": 2, "targets": "all-linear", "dropout": 0.1},
        "none",
        # q, k, v, attention_output: 2 x (16 + 16); intermediate 2 x (16 + 32);
        # output 2 x (32 + 16)
        LAYERS * (4 * 2 * 32 + 2 * 48 + 2 * 48) + HEAD,
    ),
    "adapter": (
        {"method": "adapter", "adapter_dim": 4},
        "none",
        # down 16 x 4 + 4, up 4 x 16 + 16; after attention and feed-forward
        LAYERS * 2 * (16 * 4 + 4 + 4 * 16 + 16) + HEAD,
    ),
    "prompt": ({"method": "prompt", "num_virtual_tokens": 3}, "none", 3 * 16 + HEAD),
    "prefix": (
        {"method": "prefix", "num_virtual_tokens": 3},
        "none",
        LAYERS * 2 * 3 * HIDDEN + HEAD,  # keys and values, [3, heads, head_dim]
    ),
    "head-only": ({}, "backbone", HEAD),
    "also-train": (
        {"method": "lora", "rank": 1, "also_train": ["layer_norm"]},
        "none",
        # LoRA r 1 on query/value, plus gamma and beta of the embeddings' norm and
        # the two norms of each layer
        LAYERS * 2 * (16 + 16) + (1 + LAYERS * 2) * 2 * 16 + HEAD,
    ),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_what_moved_after_training_steps(tmp_path, name):
    peft, freeze, hand_count = METHODS[name]
    cfg = _cfg(
        tmp_path, peft or None, model={"freeze": freeze}, train={"learning_rate": 1e-2}
    )
    model = _compiled(cfg, steps=10)
    trainable, total = count_params(model)
    assert trainable == hand_count
    norms = (1 + LAYERS * 2) * 2 * 16 if peft.get("also_train") else 0
    added = hand_count - HEAD - norms  # the method's own new weights
    assert total == count_params(build_model(cfg.model, 2))[1] + added
    before = [w.numpy().copy() for w in model.weights]
    trained = {id(w) for w in model.trainable_weights}
    x, y = _batch()
    # LoRA's A and an adapter's down-projection have no gradient before the
    # zero-initialised B / up-projection has moved: they move from step 2.
    for _ in range(3):
        model.train_on_batch(x, y)
    for w, old in zip(model.weights, before, strict=True):
        if id(w) in trained:
            assert not np.array_equal(w.numpy(), old), f"{w.path} did not train"
        else:
            assert np.array_equal(w.numpy(), old), f"{w.path} is frozen but moved"


@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_lora_and_adapters_start_as_the_base_model(tmp_path, name):
    cfg = _cfg(tmp_path, METHODS[name][0])
    x, _ = _batch()
    base = _sequence(build_model(cfg.model, 2), x)
    np.testing.assert_array_equal(
        _sequence(build_model(cfg.model, 2, peft=cfg.peft), x), base
    )


def test_prompt_tuning_starts_as_the_base_model_on_its_virtual_tokens(tmp_path):
    """Exactly equal outputs are impossible (the virtual tokens are attended by
    design); the prompt table starts as copies of P vocabulary rows, so the
    prompted model is the base model reading those P tokens after [CLS]."""
    cfg = _cfg(tmp_path, {"method": "prompt", "num_virtual_tokens": 3})
    model = build_model(cfg.model, 2, peft=cfg.peft)
    table = model.backbone.token_embedding._tfsft_prompt
    x, _ = _batch()
    ids = x["token_ids"]
    inserted = np.broadcast_to(table.source_ids, (len(ids), 3)).astype("int32")
    longer = {
        "token_ids": np.concatenate([ids[:, :1], inserted, ids[:, 1:]], axis=1),
        "segment_ids": np.zeros((len(ids), ids.shape[1] + 3), "int32"),
        "padding_mask": np.concatenate(
            [
                x["padding_mask"][:, :1],
                np.ones_like(inserted),
                x["padding_mask"][:, 1:],
            ],
            axis=1,
        ),
    }
    base = _sequence(build_model(cfg.model, 2), longer)
    expected = np.concatenate([base[:, :1], base[:, 4:]], axis=1)
    np.testing.assert_allclose(_sequence(model, x), expected, atol=1e-6)


def test_lora_merge_matches_within_1e5_and_removes_every_lora_layer(tmp_path):
    cfg = _cfg(tmp_path, {"method": "lora", "rank": 4, "targets": "all-linear"})
    model = build_model(cfg.model, 2, peft=cfg.peft)
    rng = np.random.default_rng(1)
    for w in model.trainable_weights:  # a real update, not B = 0
        w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))
    x, _ = _batch()
    unmerged = np.asarray(model(x))
    assert np.abs(unmerged - np.asarray(build_model(cfg.model, 2)(x))).max() > 1e-2
    np.testing.assert_allclose(model.predict(x, verbose=0), unmerged, atol=1e-5)
    merge_lora(model)
    np.testing.assert_allclose(np.asarray(model(x)), unmerged, atol=1e-5)
    # predict() traced the LoRA layers before the merge: it must not add the
    # update a second time on top of the merged kernels.
    np.testing.assert_allclose(model.predict(x, verbose=0), unmerged, atol=1e-5)
    assert not [w.path for w in model.weights if "lora" in w.path]
    assert count_params(model)[1] == count_params(build_model(cfg.model, 2))[1]


def test_backups_restore_every_method_exactly(tmp_path):
    """The resume backup holds each method's own weights and their optimizer
    state: a restored model takes the same next step as the original."""
    from tfsft.training.resume import restore_backup, save_backup

    x, y = _batch()
    for name in ("lora", "adapter", "prompt", "prefix"):
        cfg = _cfg(tmp_path, METHODS[name][0])
        model = _compiled(cfg, steps=4)
        model.train_on_batch(x, y)
        save_backup(model, tmp_path / name, step=1)
        fresh = _compiled(cfg, steps=4)
        assert restore_backup(fresh, tmp_path / name) == 1
        for a, b in zip(fresh.weights, model.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        model.train_on_batch(x, y)
        fresh.train_on_batch(x, y)
        for a, b in zip(fresh.weights, model.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_layer_wise_rates_scale_each_blocks_first_adam_step(tmp_path):
    """Adam's first step moves every weight with a gradient by about its
    learning rate, so the step sizes show the factors: decay^(L - l) for block
    l, decay^L for the embeddings, 1 for the head."""
    decay, lr = 0.5, 1e-3
    cfg = _cfg(
        tmp_path,
        train={"layer_lr_decay": decay, "learning_rate": lr, "max_grad_norm": None},
    )
    model = _compiled(cfg)
    groups = {
        "embeddings": [
            w for la in embedding_layers(model.backbone) for w in la.weights
        ],
        **{
            f"block {i}": block.weights
            for i, block in enumerate(transformer_blocks(model.backbone), start=1)
        },
        "head": model.get_layer("logits").weights,
    }
    before = {id(w): w.numpy().copy() for ws in groups.values() for w in ws}
    x, y = _batch()
    model.train_on_batch(x, y)
    expected = {"embeddings": decay**2, "block 1": decay, "block 2": 1.0, "head": 1.0}
    for name, weights in groups.items():
        steps = np.concatenate(
            [np.abs(w.numpy() - before[id(w)]).ravel() for w in weights]
        )
        # |m / (sqrt(v) + eps)| < 1, and ~1 where the gradient dwarfs eps.
        assert steps.max() == pytest.approx(lr * expected[name], rel=0.01), name


def test_loraplus_ratio_scales_only_the_b_factors_steps(tmp_path):
    """LoRA+: B learns at ratio x the rate, A at the rate, composing with the
    layer-wise factors. B starts at zero, so the first step moves only B (A's
    gradient is zero) by about its rate; the second moves A, by at most its rate."""
    from tfsft.models.peft.lora import LoraDense

    decay, lr, ratio = 0.5, 1e-3, 4.0
    cfg = _cfg(
        tmp_path,
        peft={"method": "lora", "loraplus_lr_ratio": ratio},
        train={"layer_lr_decay": decay, "learning_rate": lr, "max_grad_norm": None},
    )
    model = _compiled(cfg, steps=10_000)  # the schedule's rate stays ~lr for two steps
    # A negligible epsilon: Adam's first step is then exactly its rate for every
    # weight with a gradient (B's gradients here are small enough for 1e-7 to
    # shave a few percent off).
    model.optimizer.epsilon = 1e-12
    blocks = transformer_blocks(model.backbone)
    loras = {
        level: [la for la in nested_layers(block) if isinstance(la, LoraDense)]
        for level, block in enumerate(blocks, start=1)
    }
    assert all(len(found) == 2 for found in loras.values())  # query and value
    x, y = _batch()

    def steps(attr):
        before = {
            level: [getattr(la, attr).numpy().copy() for la in found]
            for level, found in loras.items()
        }
        model.train_on_batch(x, y)
        return {
            level: max(
                float(np.abs(getattr(la, attr).numpy() - old).max())
                for la, old in zip(loras[level], before[level], strict=True)
            )
            for level in loras
        }

    depth = len(blocks)
    for level, step in steps("lora_b").items():
        assert step == pytest.approx(lr * ratio * decay ** (depth - level), rel=1e-3)
    for level, step in steps("lora_a").items():
        # Adam's first nonzero gradient at step 2: |m_hat / sqrt(v_hat)| ~ 0.74.
        assert 0.5 * lr * decay ** (depth - level) < step
        assert step <= 1.001 * lr * decay ** (depth - level), level
    with pytest.raises(ConfigError, match="loraplus_lr_ratio"):
        _cfg(tmp_path, peft={"method": "adapter", "loraplus_lr_ratio": 16})


def test_gradual_unfreezing_trains_the_head_then_blocks_from_the_top(tmp_path):
    """Two steps per stage, four steps: the head alone, then also the top block;
    the bottom block and the embeddings never unfreeze in this run."""
    cfg = _cfg(
        tmp_path,
        data={"max_train_examples": 64, "validation": None},
        train={"epochs": 1, "gradual_unfreezing": {"every_steps": 2}},
    )
    initial = build_model(cfg.model, 2)
    before = {w.path: w.numpy() for w in initial.weights}
    run = tfsft.train(cfg, verbose=0)
    model = run.model

    def moved(layers):
        return [
            not np.array_equal(w.numpy(), before[w.path])
            for la in layers
            for w in la.weights
        ]

    bottom, top = transformer_blocks(model.backbone)
    assert not any(moved(embedding_layers(model.backbone)))
    assert not any(moved([bottom]))
    assert all(moved([model.get_layer("logits")]))
    assert any(moved([top]))
    # At the start: the head and BERT's pooler (above the last block) alone.
    assert run.metrics["trainable_params"] == HEAD + HIDDEN * HIDDEN + HIDDEN


def test_adapter_only_save_reloads_onto_a_fresh_base(tmp_path):
    from tfsft.models.peft.adapter_io import load_adapter

    raw = tiny_config(
        "lora",
        tmp_path / "runs",
        data={"max_train_examples": 32},
        train={"epochs": 1},
        peft={"method": "lora", "rank": 4},
    )
    run = tfsft.train(validate_config(raw), verbose=0)
    adapter = run.dir / "adapter"
    size = sum(f.stat().st_size for f in adapter.iterdir())
    assert size == run.metrics["adapter_bytes"] < 50_000
    meta = (adapter / "adapter.json").read_text()
    assert '"base_preset": "tiny"' in meta
    model = load_adapter(adapter)  # the base preset, LoRA apart, the adapter's weights
    assert peft_state(model) is not None and not peft_state(model).merged
    x, _ = _batch()
    # run.model was merged when the run was saved: the same function.
    np.testing.assert_allclose(
        np.asarray(model(x)), np.asarray(run.model(x)), atol=1e-5
    )
    with pytest.raises(TfsftError, match="do not fit this model"):
        other = tiny_config("x", tmp_path, peft={"method": "lora", "rank": 2})
        from tfsft.models.peft.adapter_io import load_adapter_weights

        cfg = validate_config(other)
        load_adapter_weights(build_model(cfg.model, 2, peft=cfg.peft), adapter)


def test_apply_peft_on_a_plain_keras_hub_classifier():
    import keras
    import keras_hub

    from tfsft.config_peft import PeftConfig
    from tfsft.models.backbones import resolve_preset

    backbone = keras_hub.models.Backbone.from_preset(resolve_preset("tiny"))
    model = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    tfsft.apply_peft(model, PeftConfig(method="lora", rank=2))
    assert all("lora" in w.path or "logits" in w.path for w in model.trainable_weights)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy"
    )
    x, y = _batch()
    frozen = {id(w): w.numpy().copy() for w in model.non_trainable_weights}
    model.fit(x, y, epochs=2, verbose=0)
    for w in model.non_trainable_weights:
        np.testing.assert_array_equal(w.numpy(), frozen[id(w)])


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"peft": {"method": "lora"}, "model": {"freeze": "backbone"}},
            "peft.method lora already freezes the backbone",
        ),
        (
            {
                "peft": {"method": "adapter"},
                "train": {"gradual_unfreezing": {"every_epochs": 1}},
            },
            "peft.method adapter keeps frozen",
        ),
        (
            {"train": {"gradual_unfreezing": {"every_epochs": 1, "every_steps": 5}}},
            "set exactly one of every_epochs or every_steps",
        ),
        (
            {"peft": {"method": "adapter", "rank": 4}},
            "rank is an option of lora",
        ),
        (
            {"peft": {"method": "none", "also_train": ["layer_norm"]}},
            "also_train needs a method",
        ),
        ({"train": {"layer_lr_decay": 1.5}}, "train.layer_lr_decay"),
    ],
)
def test_impossible_combinations_are_config_errors(tmp_path, sections, expected):
    raw = tiny_config("bad", tmp_path)
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values}
    with pytest.raises(ConfigError, match=expected):
        validate_config(raw)


@pytest.mark.parametrize(
    ("peft", "expected"),
    [
        ({"method": "lora", "targets": ["query", "nope"]}, "no dense layer named nope"),
        ({"method": "prompt", "num_virtual_tokens": 500}, "exceed the 512 positions"),
        (
            {"method": "lora", "also_train": ["zzz"]},
            "no layer of BertBackbone has 'zzz'",
        ),
    ],
)
def test_targets_the_backbone_lacks_are_config_errors(tmp_path, peft, expected):
    cfg = _cfg(tmp_path, peft)
    with pytest.raises(ConfigError, match=expected):
        build_model(cfg.model, 2, peft=cfg.peft)


@pytest.mark.parametrize("name", ["lora", "adapter", "prompt", "prefix"])
def test_every_method_trains_in_mixed_bfloat16(tmp_path, name):
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        cfg = _cfg(tmp_path, METHODS[name][0], train={"learning_rate": 1e-2})
        model = _compiled(cfg, steps=10)
        before = [w.numpy().copy() for w in model.trainable_weights]
        x, y = _batch()
        losses = [float(model.train_on_batch(x, y)[0]) for _ in range(3)]
        out = model(x)
    finally:
        keras.config.set_dtype_policy("float32")
    assert out.dtype == "bfloat16" and all(np.isfinite(losses))
    # The method's weights stay float32 (bf16 compute) and all of them train.
    for w, old in zip(model.trainable_weights, before, strict=True):
        assert w.dtype == "float32" and not np.array_equal(w.numpy(), old), w.path


@pytest.mark.parametrize(
    "peft",
    [{"method": "prompt", "num_virtual_tokens": 2}, {"method": "lora", "rank": 2}],
    ids=["prompt", "lora"],
)
def test_token_classification_trains_and_reloads_with_peft(tmp_path, peft):
    """Tagging reads every token's vector: prompt tuning's virtual tokens must
    leave the positions the tags align to."""
    from conftest import ner_config, write_ner_data

    raw = ner_config(
        write_ner_data(tmp_path), "ner-peft", peft=peft, train={"epochs": 1}
    )
    run = tfsft.train(validate_config(raw), verbose=0)
    assert 0 <= run.metrics["entity_f1"] <= 1
    sentences = ["EU rejects German call", "Peter lives in Paris"]
    expected = tfsft.predict(run, sentences)
    assert tfsft.predict(tfsft.load_run(run.dir), sentences) == expected
