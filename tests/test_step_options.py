"""Speed options keep the math: fused Adam, gradient accumulation, steps per
execution; and the automatic precision choice."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

import tfsft
from tfsft.config import validate_config
from tfsft.training import strategy
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
        monkeypatch.setattr(strategy, "cpu_flags", lambda: {"avx512_bf16"})
        assert strategy.set_precision("auto") == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        assert strategy.set_precision("float32") == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


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
    if precision == "mixed_float16":  # Keras adds dynamic loss scaling
        assert isinstance(run.model.optimizer, keras.optimizers.LossScaleOptimizer)
    reloaded = tfsft.load_run(run.dir).model
    assert reloaded.backbone.dtype_policy.name == precision
    assert reloaded.backbone.dtype_policy.compute_dtype == (
        "bfloat16" if precision == "mixed_bfloat16" else "float16"
    )
    assert all(v.dtype == tf.float32 for v in reloaded.trainable_variables)
