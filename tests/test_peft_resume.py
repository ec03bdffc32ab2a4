"""Interrupted and resumed runs, for the fine-tuning strategies and each PEFT
method.

The default suite interrupts a gradual-unfreezing run with layer-wise rates in
process (SIGTERM at a step, as a preemption: the backup is written there) and
resumes it: its stage and the optimizer state of weights that have not
unfrozen yet must come back. `kill -9` in real processes, for it and for each
PEFT method, is in the slow suite (the default one restores each method's
backup in-process, tests/test_peft.py).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import finish_training, resume_config, start_training, wait_for_backup

METRICS = ("accuracy", "loss", "f1_macro")


def _kill_and_resume(tmp_path: Path, peft: dict | None, **train) -> None:
    sections = {"train": train, **({"peft": peft} if peft else {})}
    reference, _ = finish_training(resume_config(tmp_path, "ref", **sections), tmp_path)
    config = resume_config(tmp_path, "killed", **sections)
    proc = start_training(config, tmp_path)
    step = wait_for_backup(tmp_path / "runs", 45, proc)  # inside the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    metrics, err = finish_training(config, tmp_path)
    resumed_at = int(err.split("resuming at step")[1].split()[0])
    assert step <= resumed_at < 80
    for key in (*METRICS, "trainable_params"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    (run_dir,) = (tmp_path / "runs" / "killed").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def test_interrupted_gradual_unfreezing_resumes_to_the_same_run(tmp_path, monkeypatch):
    """80 rows, 20 steps an epoch, 40 in all, a stage every 10 steps: SIGTERM
    after step 25 (stage 2), then the same config again: the uninterrupted run's
    metrics (1e-6)."""
    import os

    import keras

    import tfsft
    from tfsft.config import load_config
    from tfsft.errors import Interrupted

    sections = {
        "data": {"max_train_examples": 80},
        "train": {"gradual_unfreezing": {"every_steps": 10}, "layer_lr_decay": 0.8},
    }
    reference = tfsft.train(
        load_config(resume_config(tmp_path, "ref", **sections)), verbose=0
    ).metrics

    class TermAt25(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 25:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = load_config(resume_config(tmp_path, "term", **sections))
    from tfsft.training import trainer

    original = trainer.make_callbacks
    monkeypatch.setattr(
        trainer, "make_callbacks", lambda *a, **k: [*original(*a, **k), TermAt25()]
    )
    with pytest.raises(Interrupted):
        tfsft.train(cfg, verbose=0)
    monkeypatch.undo()
    resumed = tfsft.train(cfg, verbose=0).metrics
    for key in (*METRICS, "trainable_params"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key


@pytest.mark.slow
def test_kill_9_resumes_gradual_unfreezing_with_layer_wise_rates(tmp_path):
    """Stages every 20 steps: the kill lands in stage 2 (top block + head), after
    stages whose optimizer slots were still zero for the lower layers."""
    _kill_and_resume(
        tmp_path, None, gradual_unfreezing={"every_steps": 20}, layer_lr_decay=0.8
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "peft",
    [
        {"method": "lora", "rank": 4, "dropout": 0.1},
        {"method": "adapter", "adapter_dim": 8},
        {"method": "prompt", "num_virtual_tokens": 4},
        {"method": "prefix", "num_virtual_tokens": 4},
    ],
    ids=lambda p: p["method"],
)
def test_kill_9_resumes_each_peft_method(tmp_path, peft):
    _kill_and_resume(tmp_path, peft, learning_rate=1e-2)
