"""Devices, precision and seeding: everything set once before the model is built."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfsft.config import RuntimeConfig


def make_strategy(cfg: RuntimeConfig) -> tf.distribute.Strategy:
    """The distribution strategy whose scope the model is built in.

    ``auto`` and ``one_device`` use TF's default strategy (all local CPU cores or the
    first GPU); the multi-device strategies come with their own config values.
    """
    return tf.distribute.get_strategy()


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
