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


def set_precision(precision: str) -> str:
    """Sets Keras' global dtype policy and returns its name.

    ``auto`` is float32 for now; picking bfloat16 automatically needs an accuracy check
    per model that has not been done yet.
    """
    name = "float32" if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(name)
    return name


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy, TF and Keras so that a run repeats exactly on CPU."""
    keras.utils.set_random_seed(seed)
