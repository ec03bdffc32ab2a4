import json

import keras
import numpy as np
import pytest

from tfsft.errors import TfsftError
from tfsft.training.callbacks import BestCheckpoint, EpochMetrics, load_best_weights


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.train_on_batch(np.ones((2, 3)), np.ones((2, 2)))  # builds optimizer state
    return model


def test_best_checkpoint_keeps_best_across_resume(tmp_path):
    model = _model()
    cb = BestCheckpoint(tmp_path, "val_accuracy", "max")
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_accuracy": 0.7})
    best = [w.numpy().copy() for w in model.weights]
    for w in model.weights:
        w.assign(w + 1.0)
    cb.on_epoch_end(1, {"val_accuracy": 0.6})  # worse: not saved
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 1

    # A new session (resume) must not replace the 0.7 checkpoint with a worse one.
    resumed = BestCheckpoint(tmp_path, "val_accuracy", "max")
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"val_accuracy": 0.65})
    assert load_best_weights(model, tmp_path)
    for w, b in zip(model.weights, best, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)
    resumed.on_epoch_end(3, {"val_accuracy": float("nan")})
    assert json.loads((tmp_path / "best.json").read_text())["value"] == 0.7


def test_best_checkpoint_leaves_out_optimizer_state(tmp_path):
    model = _model()
    cb = BestCheckpoint(tmp_path, "val_loss", "min")
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    with_opt = tmp_path / "full.weights.h5"
    model.save_weights(str(with_opt))
    assert (tmp_path / "best.weights.h5").stat().st_size < with_opt.stat().st_size


def test_unknown_monitor_is_a_clear_error(tmp_path):
    cb = BestCheckpoint(tmp_path, "val_f1", "max")
    cb.set_model(_model())
    cb.on_train_begin()
    with pytest.raises(
        TfsftError, match="train.monitor: 'val_f1' is not among the logged metrics"
    ):
        cb.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})


def test_monitor_mode_comes_from_the_task_not_the_name():
    from tfsft.errors import ConfigError
    from tfsft.tasks import get_task

    # "mae" has neither "loss" nor "error" in its name, and lower is better.
    assert get_task("regression").monitor("val_mae", True).mode == "min"
    assert get_task("classification").monitor(None, True).name == "val_accuracy"
    assert get_task("classification").monitor(None, True).mode == "max"
    assert get_task("multilabel").monitor(None, False).name == "loss"
    with pytest.raises(ConfigError, match="'val_f1' is not a metric of task"):
        get_task("classification").monitor("val_f1", True)


def test_min_mode_monitor_keeps_the_lowest_epoch(tmp_path):
    """train.monitor: val_mae keeps the epoch with the lowest validation MAE."""
    from conftest import DEMO

    import tfsft
    from tfsft.config import validate_config

    cfg = validate_config(
        {
            "name": "mae",
            "task": "regression",
            "data": {
                "train": str(DEMO / "ratings_train.jsonl"),
                "validation": str(DEMO / "ratings_dev.jsonl"),
                "text_column": "review",
                "label_column": "score",
            },
            "model": {"preset": "tiny", "sequence_length": 16},
            # A large constant rate makes the validation MAE go up and down.
            "train": {
                "epochs": 4,
                "batch_size": 32,
                "learning_rate": 3e-2,
                "schedule": "constant",
                "warmup_ratio": 0.0,
                "monitor": "val_mae",
                "output_dir": str(tmp_path),
            },
        }
    )
    run = tfsft.train(cfg, verbose=0)
    maes = run.history["val_mae"]
    best = json.loads((run.dir / "checkpoints" / "best.json").read_text())
    assert best["monitor"] == "val_mae"
    assert best["value"] == pytest.approx(min(maes))
    assert best["epoch"] == int(np.argmin(maes)) + 1
    # The kept weights are those of that epoch: the report's MAE is its MAE.
    assert run.metrics["mae"] == pytest.approx(min(maes), rel=1e-2)


class _Recorder:
    """Stands in for the run's progress display: records the phase it is told."""

    def __init__(self):
        self.phases = []

    def update(self, done=None, **fields):
        if "phase" in fields:
            self.phases.append(fields["phase"])


def test_host_validation_shows_as_validating_on_the_progress_line():
    seen = []
    recorder = _Recorder()

    def compute(model):
        seen.append(list(recorder.phases))  # what the display says mid-pass
        if len(seen) == 2:
            raise RuntimeError("validation failed")
        return "outputs", {"accuracy": 0.5}

    cb = EpochMetrics(compute)
    cb.set_model(_model())
    cb.stage = recorder
    logs = {}
    cb.on_epoch_end(0, logs)
    assert seen[0] == ["validating"] and recorder.phases == ["validating", None]
    assert logs == {"val_accuracy": 0.5} and cb.last == (0, "outputs")
    with pytest.raises(RuntimeError):
        cb.on_epoch_end(1, {})
    assert recorder.phases[-1] is None and cb.last is None  # cleared on failure too
