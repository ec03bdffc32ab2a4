"""Interruptions in real processes: kill -9 and SIGTERM mid-epoch, then resume.

A resumed run must end with the same validation metrics as an uninterrupted run of
the same config (tolerance 1e-6): the backup carries weights, optimizer state, the
dropout RNG and the step, and each epoch's order is a function of (seed, epoch).
"""

import json
import signal

import pytest
from conftest import finish_training, resume_config, start_training, wait_for_backup

METRICS = ("accuracy", "loss", "f1_macro", "mcc")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs in fresh processes. (No separate determinism check: a
    resumed run matching these to 1e-6 already needs two processes to agree.)"""
    tmp = tmp_path_factory.mktemp("ref")
    first, _ = finish_training(resume_config(tmp, "ref"), tmp)
    frozen, _ = finish_training(
        resume_config(tmp, "ref-frozen", model={"freeze": {"first_n_layers": 1}}), tmp
    )
    return {"full": first, "frozen": frozen}


def test_kill_9_mid_epoch_then_resume_matches_reference(tmp_path, reference):
    config = resume_config(tmp_path, "killed")
    proc = start_training(config, tmp_path)
    step = wait_for_backup(tmp_path / "runs", 45, proc)  # inside the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (run_dir,) = (tmp_path / "runs" / "killed").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"

    metrics, err = finish_training(config, tmp_path)
    assert "resuming at step" in err
    resumed_at = int(err.split("resuming at step")[1].split()[0])
    assert step <= resumed_at < 80
    for key in METRICS:
        assert metrics[key] == pytest.approx(reference["full"][key], abs=1e-6), key
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    assert not (run_dir / "backup").exists()


def test_sigterm_writes_backup_and_exits_resumable(tmp_path, reference):
    # A frozen first layer here (the kill -9 test trains everything): the backup must
    # restore a partly frozen model's weights and optimizer slots as well.
    config = resume_config(tmp_path, "term", model={"freeze": {"first_n_layers": 1}})
    proc = start_training(config, tmp_path)
    wait_for_backup(tmp_path / "runs", 10, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "stopped by SIGTERM at step" in err and "Traceback" not in err
    stopped_at = int(err.split("at step")[1].split(";")[0])
    (run_dir,) = (tmp_path / "runs" / "term").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    progress = json.loads((run_dir / "backup" / "progress.json").read_text())
    assert progress["global_step"] == stopped_at

    metrics, err = finish_training(config, tmp_path)
    assert f"resuming at step {stopped_at}" in err
    for key in METRICS:
        expected = reference["frozen"][key]
        assert metrics[key] == pytest.approx(expected, abs=1e-6), key
