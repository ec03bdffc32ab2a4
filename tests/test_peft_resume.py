"""kill -9 then resume, for the fine-tuning strategies and each PEFT method.

Gradual unfreezing with layer-wise rates runs in the default suite (its stage
and the optimizer state of weights that have not unfrozen yet must come back
from the backup); each PEFT method's kill -9 run is marked slow (the default
suite restores each method's backup in-process, tests/test_peft.py).
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
