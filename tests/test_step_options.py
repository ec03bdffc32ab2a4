"""Speed options keep the math: fused Adam, gradient accumulation, steps per
execution; and the automatic precision choice."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

import tfsft
from tfsft.config import validate_config
from tfsft.runs import read_status
from tfsft.training import precision, strategy
from tfsft.training.optim import NO_DECAY, FusedAdamW


def _model():
    """The tiny classifier with no dropout anywhere, so runs compare exactly."""
    import keras_hub

    keras.utils.set_random_seed(3)
    preset = tfsft.resolve_preset("tiny")
    backbone = keras_hub.models.Backbone.from_preset(preset, dropout=0.0)
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None, activation=None, dropout=0.0
    )


X = {
    "token_ids": np.random.default_rng(0).integers(1, 90, (24, 12)),
    "segment_ids": np.zeros((24, 12), "int32"),
    "padding_mask": np.ones((24, 12), "int32"),
}
Y = np.arange(24) % 2


def _fit(optimizer, batch_size):
    model = _model()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(X, Y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    return [v.numpy() for v in model.trainable_variables]


def _assert_same(a, b, atol):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=atol)


def test_fused_adamw_matches_keras_adamw_also_with_accumulation():
    keras.mixed_precision.set_global_policy("float32")
    # A large epsilon keeps Adam well conditioned: with the default, rows whose
    # gradient is ~0 (unused tokens) get m / sqrt(v) of rounding noise, which no
    # two summation orders agree on.
    kwargs = {
        "learning_rate": 1e-2,
        "weight_decay": 0.1,
        "global_clipnorm": 1.0,
        "epsilon": 1e-3,
    }
    runs = {}
    for cls in (keras.optimizers.AdamW, FusedAdamW):
        for batch, accumulate in ((8, None), (4, 2)):
            optimizer = cls(gradient_accumulation_steps=accumulate, **kwargs)
            optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
            runs[cls.__name__, batch] = _fit(optimizer, batch)
    initial = [v.numpy() for v in _model().trainable_variables]
    moved = max(
        np.abs(a - b).max() for a, b in zip(initial, runs["AdamW", 8], strict=True)
    )
    assert moved > 1e-3  # the optimizer did change the weights
    # Same formula, different kernels: rounding differs where v is ~0.
    _assert_same(runs["AdamW", 8], runs["FusedAdamW", 8], 1e-5)
    # Two half batches per update average to the gradient of the whole batch.
    _assert_same(runs["FusedAdamW", 8], runs["FusedAdamW", 4], 2e-5)
    _assert_same(runs["AdamW", 4], runs["FusedAdamW", 4], 1e-5)


def _train(tmp_path, name, runtime=None, **train):
    raw = tiny_config(
        name,
        tmp_path / name,
        data={"length_buckets": None},
        train={"epochs": 2, "batch_size": 8, **train},
        runtime={"precision": "float32", **(runtime or {})},
    )
    return tfsft.train(validate_config(raw), verbose=0)


def test_steps_per_execution_keeps_the_math_and_accumulation_counts_batches(
    tmp_path,
):
    from tfsft.training.resume import global_step

    reference = _train(tmp_path, "ref")
    # Same batches and dropout draws, three steps per call: the same run. Backups
    # every 2 steps are still written although callbacks see every 3rd step.
    per_call = _train(
        tmp_path, "spe", save_every_steps=2, runtime={"steps_per_execution": 3}
    )
    _assert_same(
        [v.numpy() for v in reference.model.trainable_variables],
        [v.numpy() for v in per_call.model.trainable_variables],
        1e-6,
    )
    assert per_call.metrics["accuracy"] == reference.metrics["accuracy"]
    accumulated = _train(tmp_path, "acc", gradient_accumulation_steps=3)
    assert int(accumulated.model.optimizer.iterations.numpy()) == 8  # 24 batches / 3
    assert global_step(accumulated.model) == 24  # the data position counts batches


def test_auto_precision_follows_the_hardware(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert "avx512_bf16" in strategy.cpu_flags(str(cpuinfo))
    assert strategy.cpu_flags(str(tmp_path / "missing")) == set()
    try:
        monkeypatch.setattr(strategy, "cpu_flags", lambda: {"avx2"})
        assert strategy.set_precision("auto") == "float32"
        monkeypatch.setattr(strategy, "cpu_flags", lambda: {"avx512_bf16", "amx_bf16"})
        assert strategy.set_precision("auto") == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        # AVX512-BF16 without AMX: not settled by the flags; untimed it is bf16.
        monkeypatch.setattr(strategy, "cpu_flags", lambda: {"avx512_bf16"})
        assert strategy.set_precision("auto") == "mixed_bfloat16"
        assert strategy.set_precision("float32") == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_times_the_model_once_where_flags_do_not_settle_it(
    monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv("TFSFT_CACHE", str(tmp_path))
    monkeypatch.setattr(strategy, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    calls = []

    def fake_step(preset, policy, batch, width):
        calls.append((policy, batch, width))
        return {"float32": 0.2, "mixed_bfloat16": 0.3}[policy] * width / 32

    monkeypatch.setattr(precision, "backbone_step_seconds", fake_step)
    try:
        with caplog.at_level("INFO", logger="tfsft"):
            assert strategy.set_precision("auto", None, ("p", 8, 32)) == "float32"
        assert calls == [("float32", 8, 32), ("mixed_bfloat16", 8, 32)]
        assert "float32 0.200 s/step, mixed_bfloat16 0.300 s/step" in caplog.text
        # Cached per machine, model and shape: no second timing ...
        assert strategy.set_precision("auto", None, ("p", 8, 32)) == "float32"
        assert len(calls) == 2
        assert len(json.loads((tmp_path / "precision.json").read_text())) == 1
        # ... but another shape or model is timed again.
        monkeypatch.setattr(
            precision,
            "backbone_step_seconds",
            lambda p, policy, b, w: {"float32": 0.5, "mixed_bfloat16": 0.1}[policy],
        )
        assert strategy.set_precision("auto", None, ("q", 8, 32)) == "mixed_bfloat16"
        assert len(json.loads((tmp_path / "precision.json").read_text())) == 2
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_timing_the_precision_changes_no_result(monkeypatch, tmp_path):
    """The real probe (two tiny backbones, random weights) runs before seeding:
    the run it decided is the same as one whose decision came from the cache."""
    monkeypatch.setenv("TFSFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(strategy, "cpu_flags", lambda: {"avx512_bf16"})
    seconds = precision.backbone_step_seconds(
        tfsft.resolve_preset("tiny"), "mixed_bfloat16", 2, 8
    )
    assert 0 < seconds < 60
    assert keras.config.dtype_policy().name == "float32"  # restored
    try:
        timed = _train(tmp_path, "timed", runtime={"precision": "auto"})
        assert (tmp_path / "cache" / "precision.json").is_file()
        cached = _train(tmp_path, "cached", runtime={"precision": "auto"})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    chosen = read_status(timed.dir)["precision"]
    assert chosen == read_status(cached.dir)["precision"]
    _assert_same(
        [v.numpy() for v in timed.model.trainable_variables],
        [v.numpy() for v in cached.model.trainable_variables],
        0,
    )


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_train_and_reload(tmp_path, precision):
    raw = tiny_config(
        "mixed",
        tmp_path / "runs",
        train={"epochs": 1},
        runtime={"precision": precision},
    )
    run = tfsft.train(validate_config(raw), verbose=0)
    assert np.isfinite(run.metrics["loss"])
    # The run's layers keep its policy; the caller's global one is given back.
    assert keras.config.dtype_policy().name == "float32"
    assert run.model.backbone.dtype_policy.name == precision
    if precision == "mixed_float16":  # Keras adds dynamic loss scaling
        assert isinstance(run.model.optimizer, keras.optimizers.LossScaleOptimizer)
    reloaded = tfsft.load_run(run.dir).model
    assert reloaded.backbone.dtype_policy.name == precision
    assert reloaded.backbone.dtype_policy.compute_dtype == (
        "bfloat16" if precision == "mixed_bfloat16" else "float16"
    )
    assert all(v.dtype == tf.float32 for v in reloaded.trainable_variables)
