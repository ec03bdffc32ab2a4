"""Devices, precision and seeding: everything set once before the model is built."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from tfsft.config import ExperimentConfig, RuntimeConfig
from tfsft.models.backbones import cache_dir, resolve_preset
from tfsft.training import distribute, precision

log = logging.getLogger("tfsft")


def make_strategy(cfg: RuntimeConfig) -> tf.distribute.Strategy:
    """The distribution strategy whose scope the model is built in.

    ``one_device`` is TF's default strategy (all local CPU cores or the first GPU);
    ``auto``, ``mirrored``, ``multi_worker`` and ``tpu`` are described in
    `tfsft.training.distribute`. Create it before any other TensorFlow work.
    """
    return distribute.make_strategy(cfg)


def set_precision(
    precision: str,
    strategy: tf.distribute.Strategy | None = None,
    probe: tuple[str, int, int] | None = None,
) -> str:
    """Sets Keras' global dtype policy and returns its name.

    ``auto`` picks what trains faster here (`tfsft.training.precision`): the
    hardware settles it on TPUs, GPUs and most CPUs; on a CPU with AVX512-BF16 but
    no AMX, ``probe`` = (preset, batch, width) times the model in both policies
    once per machine (without a probe such a CPU gets bf16). The choice and its
    reason are logged. bf16 keeps float32's exponent range, so unlike float16 it
    needs no loss scaling; weights and optimizer state stay float32.
    ``mixed_float16`` gets dynamic loss scaling from Keras' compile().
    """
    name = precision
    if precision == "auto":
        choice = auto_precision(strategy, probe)
        name = choice.policy
        log.info("precision auto: %s, %s", name, choice.reason)
    keras.mixed_precision.set_global_policy(name)
    return name


def precision_probe(
    cfg: ExperimentConfig, replicas: int = 1
) -> tuple[str, int, int] | None:
    """What ``auto`` times where the hardware does not settle it: the model's
    preset, one replica's batch and up to 64 tokens per row (None unless auto)."""
    if cfg.runtime.precision != "auto":
        return None
    width = min(cfg.model.sequence_length, 64)
    batch = max(cfg.train.batch_size // replicas, 1)
    return resolve_preset(cfg.model.preset), batch, width


def auto_precision(
    strategy: tf.distribute.Strategy | None, probe: tuple[str, int, int] | None
) -> precision.Choice:
    """What ``runtime.precision: auto`` resolves to on these devices."""
    tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    gpus = [] if tpu else tf.config.list_physical_devices("GPU")
    capabilities = [
        tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
        for g in gpus
    ]
    flags = cpu_flags()
    choice = precision.hardware_choice(flags, tpu, capabilities)
    if choice is not None:
        return choice
    if probe is None:
        return precision.Choice("mixed_bfloat16", "CPU with AVX512-BF16 (not timed)")
    preset, batch, width = probe
    key = precision.probe_key(flags, preset, batch, width)
    cache = cache_dir() / "precision.json"
    return precision.timed_choice(
        key,
        lambda policy: precision.backbone_step_seconds(preset, policy, batch, width),
        cache,
    )


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy, TF and Keras so that a run repeats exactly on CPU."""
    keras.utils.set_random_seed(seed)
