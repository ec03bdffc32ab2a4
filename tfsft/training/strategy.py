"""Devices, precision and seeding: everything set once before the model is built."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfsft.config import RuntimeConfig
from tfsft.training import distribute


def make_strategy(cfg: RuntimeConfig) -> tf.distribute.Strategy:
    """The distribution strategy whose scope the model is built in.

    ``one_device`` is TF's default strategy (all local CPU cores or the first GPU);
    ``auto``, ``mirrored``, ``multi_worker`` and ``tpu`` are described in
    `tfsft.training.distribute`. Create it before any other TensorFlow work.
    """
    return distribute.make_strategy(cfg)


def set_precision(
    precision: str, strategy: tf.distribute.Strategy | None = None
) -> str:
    """Sets Keras' global dtype policy and returns its name.

    ``auto`` is ``mixed_bfloat16`` where the hardware computes in bfloat16 natively
    (TPUs, Ampere or newer GPUs, CPUs with AVX512-BF16 or AMX), else float32.
    bf16 keeps float32's exponent range, so unlike float16 it needs no loss
    scaling; weights and optimizer state stay float32. Measured on SST-2 with
    MiniLM it trained faster at the same dev accuracy (docs/experiments.md, issue 5).
    ``mixed_float16`` gets dynamic loss scaling from Keras' compile().
    """
    name = precision
    if precision == "auto":
        name = "mixed_bfloat16" if has_native_bf16(strategy) else "float32"
    keras.mixed_precision.set_global_policy(name)
    return name


def has_native_bf16(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether the devices training runs on have bfloat16 matmul units."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(g) for g in gpus]
        return all(d.get("compute_capability", (0, 0)) >= (8, 0) for d in details)
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


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
