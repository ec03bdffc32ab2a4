"""``runtime.precision: auto``: the dtype policy that trains faster on this hardware.

Where the hardware settles it, no time is spent: TPUs compute in bfloat16; GPUs of
compute capability 8.0 or newer have bf16 tensor cores; a CPU with AMX (``amx_bf16``)
multiplies bf16 tiles several times faster than float32 (measured: 92 s against
119 s for the same SST-2 run); a CPU with neither AMX nor AVX512-BF16 only emulates
bf16, which costs conversions and gains nothing (float32). A CPU with AVX512-BF16
but no AMX is in between: its bf16 dot products help large matrices and lose to the
casts on small ones, so there the model itself is timed: a few forward + backward
steps of the configured backbone (random weights, the run's batch size) in each
policy. The verdict is cached per machine, TensorFlow version, model and shape, so
only the first run on a machine pays (about two model builds and a dozen steps).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger("tfsft")

CANDIDATES = ("float32", "mixed_bfloat16")
PROBE_WARMUP, PROBE_STEPS = 2, 4


@dataclass(frozen=True)
class Choice:
    """What ``auto`` resolved to, and why (logged, and kept in status.json)."""

    policy: str
    reason: str


def hardware_choice(
    flags: set[str], tpu: bool, gpu_capabilities: list
) -> Choice | None:
    """The policy the hardware alone settles, or None where it must be timed."""
    if tpu:
        return Choice("mixed_bfloat16", "TPU: bfloat16 matrix units")
    if gpu_capabilities:
        if all(c >= (8, 0) for c in gpu_capabilities):
            return Choice("mixed_bfloat16", "GPU with bf16 tensor cores (sm >= 8.0)")
        return Choice("float32", "GPU without bf16 tensor cores (sm < 8.0)")
    if "amx_bf16" in flags:
        return Choice("mixed_bfloat16", "CPU with AMX (amx_bf16)")
    if "avx512_bf16" not in flags:
        return Choice("float32", "CPU without bf16 units (no avx512_bf16 or amx_bf16)")
    return None


def timed_choice(
    key: str, time_step: Callable[[str], float], cache_file: Path
) -> Choice:
    """Times one training step per candidate policy (``time_step(policy)`` ->
    seconds) and picks the faster, reading and writing the verdict in
    ``cache_file`` under ``key``."""
    cache = _read(cache_file)
    if isinstance(hit := cache.get(key), dict) and hit.get("policy") in CANDIDATES:
        times = hit.get("seconds", {})
        return Choice(hit["policy"], f"timed earlier on this machine {_shown(times)}")
    times = {policy: time_step(policy) for policy in CANDIDATES}
    policy = min(times, key=times.__getitem__)
    cache[key] = {"policy": policy, "seconds": times, "at": time.time()}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(cache_file)
    except OSError as e:  # a read-only home: decide again next time
        log.warning("could not cache the precision choice in %s: %s", cache_file, e)
    return Choice(policy, f"timed on this machine {_shown(times)}")


def _shown(times: dict[str, float]) -> str:
    return "(" + ", ".join(f"{p} {s:.3f} s/step" for p, s in times.items()) + ")"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def probe_key(flags: set[str], preset: str, batch: int, width: int) -> str:
    """Machine (CPU model and flags), TF version, model and shape, hashed."""
    cpu = _cpu_model()
    text = "|".join(
        [cpu, " ".join(sorted(flags)), tf.__version__, preset, f"{batch}x{width}"]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def backbone_step_seconds(preset: str, policy: str, batch: int, width: int) -> float:
    """Median seconds of a forward + backward step of ``preset``'s backbone (random
    weights) on a [batch, width] batch of random ids, under dtype ``policy``."""
    import keras_hub

    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=False)
        rng = np.random.default_rng(0)
        vocab = int(backbone.vocabulary_size)
        features = {
            "token_ids": rng.integers(min(1000, vocab - 1), vocab, (batch, width)),
            "padding_mask": np.ones((batch, width)),
        }
        if "segment_ids" in [i.name for i in backbone.inputs]:
            features["segment_ids"] = np.zeros((batch, width))
        features = {k: tf.constant(v, tf.int32) for k, v in features.items()}

        @tf.function
        def step() -> tf.Tensor:
            with tf.GradientTape() as tape:
                out = tf.nest.flatten(backbone(features, training=True))[0]
                loss = tf.reduce_mean(tf.square(tf.cast(out, tf.float32)))
            grads = tape.gradient(loss, backbone.trainable_variables)
            return tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

        seconds = []
        for i in range(PROBE_WARMUP + PROBE_STEPS):
            began = time.perf_counter()
            step().numpy()
            if i >= PROBE_WARMUP:
                seconds.append(time.perf_counter() - began)
        return float(np.median(seconds))
    finally:
        keras.mixed_precision.set_global_policy(previous)
        keras.backend.clear_session()
