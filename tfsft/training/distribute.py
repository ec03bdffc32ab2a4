"""Distribution strategies: which one runs, how many replicas, who writes files.

``runtime.strategy``:

- ``one_device``: TF's default strategy (the first GPU, or the CPU).
- ``mirrored``: `tf.distribute.MirroredStrategy` over the local GPUs, or over the
  logical CPU devices when there is no GPU (tests configure two).
- ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy`; the cluster comes from
  the ``TF_CONFIG`` environment variable, which ``tfsft train --worker-index N`` builds
  from ``runtime.workers`` (`tf_config_for`). Worker 0 is the chief.
- ``tpu``: `tf.distribute.TPUStrategy` on ``runtime.tpu`` (``local`` on Colab and TPU
  VMs, a TPU name, or ``grpc://host:port``).
- ``auto``: TPU only when the environment says so (``runtime.tpu``, ``TPU_NAME`` or
  ``COLAB_TPU_ADDR``; nothing is probed over the network), multi_worker when TF_CONFIG
  (or ``runtime.workers``) names more than one worker, mirrored with more than one
  GPU, else one device.

``train.batch_size`` is the global batch; see `tfsft.data.distributed` for how it is
split and why the update equals a single device's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from tfsft.config import ExperimentConfig, RuntimeConfig
from tfsft.data.distributed import per_replica_batch
from tfsft.errors import ConfigError, TfsftError

log = logging.getLogger("tfsft")


def make_strategy(cfg: RuntimeConfig) -> tf.distribute.Strategy:
    """Creates the configured strategy and logs which one and how many replicas.

    Call it before any other TensorFlow work in the process: MultiWorkerMirrored and
    TPU strategies configure the runtime, which TF allows only at startup.

    Raises:
        ConfigError: when the environment lacks what the strategy needs (TF_CONFIG).
        TfsftError: when the TPU cannot be reached or initialised.
    """
    name = choose_strategy(cfg, os.environ, len(tf.config.list_physical_devices("GPU")))
    if name == "tpu":
        address = tpu_address(cfg, os.environ)
        strategy: tf.distribute.Strategy = connect_tpu(address)
        detail = f" on TPU {address!r}"
    elif name == "multi_worker":
        cluster = read_tf_config(cfg, os.environ)
        strategy = _multi_worker(json.dumps(cluster, sort_keys=True))
        task = cluster.get("task", {})
        detail = f" (task {task.get('type')} {task.get('index')})"
    elif name == "mirrored":
        strategy = _mirrored()
        detail = f" on {', '.join(strategy.extended.worker_devices)}"
    else:
        strategy = tf.distribute.get_strategy()
        detail = ""
    log.info(
        "strategy %s: %d replica(s) in sync%s",
        name,
        strategy.num_replicas_in_sync,
        detail,
    )
    return strategy


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The ``runtime.strategy`` name of a strategy object (for status and reports)."""
    kind = type(strategy).__name__
    if "TPU" in kind:
        return "tpu"
    if "MultiWorker" in kind or "CollectiveAllReduce" in kind:
        return "multi_worker"
    return "mirrored" if "Mirrored" in kind else "one_device"


def choose_strategy(cfg: RuntimeConfig, env: Mapping[str, str], gpus: int) -> str:
    """Resolves ``auto`` from the environment and the local GPU count (no network)."""
    if cfg.strategy != "auto":
        return cfg.strategy
    if cfg.tpu or env.get("TPU_NAME") or env.get("COLAB_TPU_ADDR"):
        return "tpu"
    if _tf_config_workers(env.get("TF_CONFIG")) > 1 or len(cfg.workers or ()) > 1:
        return "multi_worker"
    return "mirrored" if gpus > 1 else "one_device"


def tpu_address(cfg: RuntimeConfig, env: Mapping[str, str]) -> str:
    """``runtime.tpu``, else ``$TPU_NAME``, else ``$COLAB_TPU_ADDR`` (old Colab TPU
    nodes serve gRPC there), else ``local`` (Colab TPU VMs and Cloud TPU VMs)."""
    if cfg.tpu:
        return cfg.tpu
    if env.get("TPU_NAME"):
        return env["TPU_NAME"]
    if env.get("COLAB_TPU_ADDR"):
        return f"grpc://{env['COLAB_TPU_ADDR']}"
    return "local"


def connect_tpu(address: str) -> tf.distribute.Strategy:
    """Resolves, connects to and initialises the TPU; returns its TPUStrategy."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        # A no-op for "local"; for a remote TPU it points eager execution at it.
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise TfsftError(
            f"runtime.strategy tpu: cannot use TPU {address!r}: {e}. On Colab pick "
            "Runtime > Change runtime type > TPU and set runtime.tpu: local"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def read_tf_config(cfg: RuntimeConfig, env: Mapping[str, str]) -> dict:
    """The parsed TF_CONFIG that MultiWorkerMirroredStrategy will read.

    Raises:
        ConfigError: when it is missing or malformed, saying how to provide it.
    """
    raw = env.get("TF_CONFIG")
    if not raw:
        how = (
            "pass --worker-index N (0 for the chief) to `tfsft train`"
            if cfg.workers
            else "list the workers in runtime.workers and pass --worker-index N, or "
            "set TF_CONFIG"
        )
        raise ConfigError(f"runtime.strategy multi_worker: TF_CONFIG is not set; {how}")
    return _parse_tf_config(raw)


def tf_config_for(workers: list[str], index: int) -> str:
    """TF_CONFIG for worker ``index`` of ``workers`` (worker 0 is the chief).

    Raises:
        ConfigError: when ``index`` is not a position in ``workers``.
    """
    _check_index(index, len(workers), "runtime.workers")
    cluster = {"cluster": {"worker": list(workers)}}
    return json.dumps(cluster | {"task": {"type": "worker", "index": index}})


def with_worker_index(tf_config: str, index: int) -> str:
    """An existing TF_CONFIG with its task set to worker ``index``."""
    cluster = _parse_tf_config(tf_config, need_task=False)
    _check_index(index, len(cluster["cluster"]["worker"]), "TF_CONFIG")
    cluster["task"] = {"type": "worker", "index": index}
    return json.dumps(cluster)


def _parse_tf_config(raw: str, need_task: bool = True) -> dict:
    try:
        cluster = json.loads(raw)
        workers = cluster["cluster"]["worker"]
        task = cluster["task"] if need_task else {"type": "worker", "index": 0}
        ok = (
            isinstance(workers, list)
            and bool(workers)
            and {"type", "index"} <= set(task)
        )
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(
            'TF_CONFIG: expected JSON like {"cluster": {"worker": ["host:port", '
            f'...]}}, "task": {{"type": "worker", "index": 0}}}} (got {raw!r})'
        )
    return cluster


def _check_index(index: int, count: int, source: str) -> None:
    if not 0 <= index < count:
        raise ConfigError(
            f"--worker-index {index}: {source} lists {count} worker(s), so the "
            f"index must be 0..{count - 1}"
        )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run dir (always, except on non-chief workers).

    MultiWorkerMirroredStrategy answers False on every worker but the chief; the
    other strategies run in one process, which is the chief.
    """
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many processes train together (1 unless multi-worker)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker"))


def worker_label(strategy: tf.distribute.Strategy) -> str:
    """``worker N`` for a multi-worker process, for log lines and temp dir names."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = getattr(resolver, "task_id", None)
    return f"worker{task_id}" if task_id is not None else "worker"


def _tf_config_workers(raw: str | None) -> int:
    try:
        return len(json.loads(raw)["cluster"]["worker"]) if raw else 0
    except (ValueError, KeyError, TypeError):
        return 0  # malformed: not "clearly" multi-worker; multi_worker reports it


# One strategy object per process and device set, reused by later runs: collective
# ops of a second MirroredStrategy over the same devices reuse the first one's
# instance keys and abort on mismatched shapes, and a process can configure
# multi-worker collectives only once.
@functools.cache
def _multi_worker(tf_config: str) -> tf.distribute.Strategy:
    return tf.distribute.MultiWorkerMirroredStrategy()


def _mirrored() -> tf.distribute.Strategy:
    # MirroredStrategy() alone takes every GPU, or only CPU:0 when there is none; the
    # logical CPU devices (tf.config.set_logical_device_configuration) are listed
    # explicitly so that a CPU-only machine can run (and test) several replicas.
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return _mirrored_over(tuple(d.name for d in devices))


@functools.cache
def _mirrored_over(devices: tuple[str, ...]) -> tf.distribute.Strategy:
    return tf.distribute.MirroredStrategy(list(devices))


def build_for_fit(
    model: keras.Model, strategy: tf.distribute.Strategy, element_spec: Any
) -> None:
    """Builds metrics, loss and optimizer state from the per-replica batch spec.

    Keras 3.15's fit() and evaluate() build that state from the first batch, reduced
    across replicas with ``strategy.reduce``; MultiWorkerMirroredStrategy's reduce
    rejects nested batches such as our dict of token tensors (keras-team/keras
    issue 20329). Building from the spec needs no batch, so the reduce is skipped.
    """
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if num_workers(strategy) > 1:
        # Keras 3.15 reduces each step's per-replica logs across workers with
        # strategy.reduce("MEAN", value, axis=0), which fails on scalar metrics
        # (tensorflow/tensorflow issue 72388). Rank-1 logs reduce to the replica
        # mean; epoch logs are read from the metric variables either way.
        model.train_step = _rank1_logs(model.train_step)
        model.test_step = _rank1_logs(model.test_step)


def _rank1_logs(step: Any) -> Any:
    def step_with_rank1_logs(data: Any) -> dict[str, tf.Tensor]:
        return {k: tf.reshape(v, [1]) for k, v in step(data).items()}

    return step_with_rank1_logs


def check_supported(cfg: ExperimentConfig, strategy: tf.distribute.Strategy) -> None:
    """Fails early, naming the key, on settings multi-replica training cannot run.

    Raises:
        ConfigError: an uneven global batch, or a Keras 3.15 limitation under
            tf.distribute (gradient accumulation; several steps per execution on
            MirroredStrategy and MultiWorkerMirroredStrategy).
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return
    per_replica_batch(cfg.train.batch_size, replicas)
    if cfg.train.gradient_accumulation_steps > 1:
        # Keras accumulates in a tf.cond whose update branch synchronises replicas,
        # which tf.distribute rejects ("merge_call called while defining a graph").
        raise ConfigError(
            f"train.gradient_accumulation_steps: {replicas} replicas cannot "
            "accumulate gradients (a Keras 3.15 limitation under tf.distribute); "
            "train.batch_size is the global batch over all replicas, so raise it "
            "instead"
        )
    if cfg.runtime.steps_per_execution > 1 and not isinstance(
        strategy, tf.distribute.TPUStrategy
    ):
        # Keras' multi-step while loop fails on tf.distribute iterators here
        # ("You must feed a value for placeholder tensor"); TPUs are untested.
        raise ConfigError(
            "runtime.steps_per_execution: must be 1 with strategy mirrored or "
            "multi_worker (a Keras 3.15 limitation with distributed datasets)"
        )
