"""TensorFlow-side benchmark runners, one per process (started by benchmark.py).

    python scripts/bench_tf.py peaks SPEC.json OUT.json        # matmul peaks + lengths
    python scripts/bench_tf.py keras_hub SPEC.json OUT.json    # plain keras-hub fit
    python scripts/bench_tf.py fixed_shapes SPEC.json OUT.json # tfsft model, random ids

Each writes a JSON result; the parent measures the peak RSS of the process.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from bench_common import child_args, write_json

# Big enough that one matmul (17 GFLOP) dwarfs the per-call overhead, small enough
# (16 MiB per fp32 operand) to stay quick on 2 cores.
_PEAK_SIZE = 2048


def measure_matmul_peak(dtype: tf.DType, size: int = _PEAK_SIZE) -> dict[str, float]:
    """Best sustained FLOP/s of a square matmul in ``dtype`` (5 rounds, best kept).

    The best round, not the mean, is the peak: the machine is shared, and the slower
    rounds measure the neighbours rather than the hardware.
    """
    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal((size, size)), dtype)
    b = tf.cast(rng.normal((size, size)), dtype)
    matmul = tf.function(tf.linalg.matmul)
    flops_per_call = 2.0 * size**3
    for _ in range(2):  # trace, and let oneDNN pick and cache its kernel
        matmul(a, b).numpy()
    start = time.perf_counter()
    matmul(a, b).numpy()
    # About 0.5 s per round whatever the speed of this dtype on this CPU.
    calls = max(2, math.ceil(0.5 / max(time.perf_counter() - start, 1e-4)))
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            out = matmul(a, b)
        out.numpy()  # CPU eager ops are synchronous; this only makes it explicit
        rounds.append(calls * flops_per_call / (time.perf_counter() - start))
    return {"flops_per_second": max(rounds), "median": float(np.median(rounds))}


def keras_hub_lengths(
    model_dir: str, sequence_length: int, texts: list[str]
) -> list[int]:
    """Real (non-padding) token count of each text, as the keras-hub packer makes it."""
    import keras_hub

    pre = keras_hub.models.TextClassifierPreprocessor.from_preset(
        model_dir, sequence_length=sequence_length
    )
    return padding_lengths(pre, texts)


def padding_lengths(preprocessor: Any, texts: list[str]) -> list[int]:
    lengths: list[int] = []
    for i in range(0, len(texts), 512):  # the WordPiece op is vectorised: big chunks
        mask = preprocessor(tf.constant(texts[i : i + 512]))["padding_mask"]
        lengths += np.asarray(mask).sum(axis=1).astype(int).tolist()
    return lengths


def run_peaks(spec: dict[str, Any]) -> dict[str, Any]:
    """The fp32 and bf16 matmul peaks, and the token lengths tfsft will train on.

    tfsft tokenizes with the keras-hub preprocessor of its preset at
    ``model.sequence_length``; counting with that same preprocessor here gives the
    tfsft row its real-token count without reaching into tfsft's run.
    """
    peaks = {
        "float32": measure_matmul_peak(tf.float32),
        "bfloat16": measure_matmul_peak(tf.bfloat16),
    }
    lengths = keras_hub_lengths(
        spec["model_dir"], spec["sequence_length"], spec["train"]["texts"]
    )
    return {
        "peaks": peaks,
        "train_lengths": lengths,
        "tfsft_precision": tfsft_precision(spec),
        "versions": tf_versions(),
    }


def tfsft_precision(spec: dict[str, Any]) -> str:
    """The dtype policy `tfsft train` will use, as tfsft itself resolves it."""
    import tfsft
    from tfsft.training.strategy import set_precision

    cfg = tfsft.load_config(spec["config"], spec["overrides"])
    return set_precision(cfg.runtime.precision)


def tf_versions() -> dict[str, str]:
    import keras_hub

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
    }


@keras.saving.register_keras_serializable(package="bench")
class LinearWarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak``, then linear decay to 0 at ``total``.

    Written here, as a keras-hub user would, rather than imported from tfsft: this
    runner is the baseline tfsft is measured against.
    """

    def __init__(self, peak: float, warmup: int, total: int) -> None:
        self.peak, self.warmup, self.total = float(peak), int(warmup), int(total)

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        rising = self.peak * step / max(self.warmup, 1)
        falling = self.peak * keras.ops.maximum(
            0.0, (self.total - step) / max(self.total - self.warmup, 1)
        )
        return keras.ops.where(step < self.warmup, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total}


def run_keras_hub(spec: dict[str, Any]) -> dict[str, Any]:
    """What a keras-hub user writes: from_preset, raw strings in, fit, evaluate."""
    import keras_hub

    keras.utils.set_random_seed(spec["seed"])
    # Default float32 policy, stated so that nothing inherited changes it.
    keras.mixed_precision.set_global_policy("float32")
    classifier = keras_hub.models.TextClassifier.from_preset(
        spec["model_dir"], num_classes=spec["num_classes"], dropout=spec["dropout"]
    )
    classifier.preprocessor.sequence_length = spec["sequence_length"]  # fixed padding
    optimizer = keras.optimizers.AdamW(
        learning_rate=LinearWarmupDecay(
            spec["learning_rate"], spec["warmup_steps"], spec["total_steps"]
        ),
        weight_decay=spec["weight_decay"],
        epsilon=1e-8,
        global_clipnorm=spec["max_grad_norm"],
    )
    # The BERT recipe (and keras-hub's own fine-tuning guides): no decay on biases
    # and LayerNorm parameters.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    classifier.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    train, dev = spec["train"], spec["validation"]
    batch = spec["batch_size"]
    train_ds = (
        tf.data.Dataset.from_tensor_slices((train["texts"], train["labels"]))
        .shuffle(len(train["texts"]), seed=spec["seed"])
        .batch(batch)
    )
    dev_ds = tf.data.Dataset.from_tensor_slices((dev["texts"], dev["labels"])).batch(
        batch
    )
    # Timed like tfsft's train_seconds: the epochs including the end-of-epoch
    # validation that fit() runs, tokenization included (it happens inside fit here).
    start = time.perf_counter()
    history = classifier.fit(
        train_ds, validation_data=dev_ds, epochs=spec["epochs"], verbose=2
    )
    seconds = time.perf_counter() - start
    lengths = padding_lengths(classifier.preprocessor, train["texts"])
    return {
        "train_seconds": seconds,
        "accuracy": float(history.history["val_accuracy"][-1]),
        "train_lengths": lengths,
        "precision": keras.mixed_precision.global_policy().name,
        "params": int(classifier.count_params()),
    }


class _StepClock(keras.callbacks.Callback):
    """Wall time at the end of every training step."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def run_fixed_shapes(spec: dict[str, Any]) -> dict[str, Any]:
    """tfsft's model and optimizer on random token ids of one fixed shape.

    The model, loss, optimizer and precision come from tfsft itself (its public
    API and its precision setting), so this measures what `tfsft train` runs, minus
    the data pipeline and the padding of real text.
    """
    import tfsft
    from tfsft.training.strategy import seed_everything, set_precision

    fixed = spec["fixed"]
    cfg = tfsft.load_config(spec["config"], spec["overrides"])
    seed_everything(cfg.train.seed)
    precision = set_precision(fixed["precision"] or cfg.runtime.precision)
    batch, seq, warmup, steps = (
        fixed["batch"],
        fixed["seq"],
        fixed["warmup"],
        fixed["steps"],
    )
    model = tfsft.build_model(cfg.model, spec["num_classes"])
    tfsft.compile_model(model, cfg, total_steps=warmup + steps)
    rng = np.random.default_rng(0)
    vocab = int(model.backbone.vocabulary_size)
    # Ids above the special tokens; every position is real (padding_mask all ones).
    features = {
        "token_ids": rng.integers(1000, vocab, (batch, seq)).astype("int32"),
        "segment_ids": np.zeros((batch, seq), "int32"),
        "padding_mask": np.ones((batch, seq), "int32"),
    }
    labels = rng.integers(0, spec["num_classes"], batch).astype("int32")
    ds = tf.data.Dataset.from_tensors((features, labels)).repeat()
    clock = _StepClock()
    model.fit(
        ds, steps_per_epoch=warmup + steps, epochs=1, callbacks=[clock], verbose=0
    )
    # From the end of the last warm-up step (tracing and oneDNN kernel selection
    # done) to the end of the last step.
    seconds = clock.ends[-1] - clock.ends[warmup - 1]
    return {
        "seconds": seconds,
        "steps": steps,
        "batch": batch,
        "seq": seq,
        "precision": precision,
        "jit_compile": cfg.runtime.jit_compile,
        "step_seconds": np.diff(clock.ends[warmup - 1 :]).round(4).tolist(),
    }


_MODES = {
    "peaks": run_peaks,
    "keras_hub": run_keras_hub,
    "fixed_shapes": run_fixed_shapes,
}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in _MODES:
        raise SystemExit(
            f"usage: bench_tf.py {{{','.join(_MODES)}}} SPEC.json OUT.json"
        )
    spec, out = child_args(sys.argv[2:])
    write_json(out, _MODES[sys.argv[1]](spec))


if __name__ == "__main__":
    main()
