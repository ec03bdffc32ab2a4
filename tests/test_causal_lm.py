"""Causal-LM SFT: LoRA, reloading, backups and kill -9 resume, two workers (the
memorisation test is in test_causal_lm_memorise.py, so the scheduler can run it
beside these)."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    REPO,
    finish_training,
    local_workers,
    sft_config,
    start_training,
    train_on_workers,
    wait_for_backup,
    write,
)

import tfsft
from tfsft.config import validate_config

CONFIG = REPO / "configs" / "sft_alpaca_tiny_gpt2.yaml"


def test_lora_trains_only_its_factors_and_reloads_merged(tmp_path):
    from tfsft.models.build import build_model

    raw = sft_config(tmp_path, "lora", peft={"method": "lora", "rank": 4, "alpha": 8})
    cfg = validate_config(raw)
    initial = build_model(cfg.model, 1, "causal_lm", cfg.peft)
    before = {w.path: w.numpy() for w in initial.weights}
    run = tfsft.train(cfg, verbose=0)
    # tiny-llama: hidden 32, 4 query heads and 2 key/value heads of size 8, two
    # layers. LoRA views a kernel [32, heads, 8] as [32, heads * 8]: A [32, r] and
    # B [r, 32] for the query, B [r, 16] for the value projection, per layer.
    assert run.metrics["trainable_params"] == 2 * 4 * ((32 + 32) + (32 + 16))
    assert run.metrics["adapter_bytes"] < 20_000
    # Saving merged the factors into the query/value kernels: the run's model is
    # a plain keras-hub model, and everything else is bit-identical to the base.
    assert not [w.path for w in run.model.weights if "lora" in w.path]
    for w in run.model.weights:
        if "query" not in w.path and "value" not in w.path:
            assert np.array_equal(w.numpy(), before[w.path]), w.path
    # Saving merges the factors: the reloaded model computes the same logits.
    reloaded = tfsft.load_run(run.dir).model
    x = {"token_ids": np.array([[1, 20, 30, 40, 2]], "int32")}
    x["padding_mask"] = np.ones_like(x["token_ids"])
    np.testing.assert_allclose(
        np.asarray(reloaded(x)), np.asarray(run.model(x)), atol=1e-5
    )
    # The per-epoch samples and the response-only validation metrics.
    samples = (run.dir / "generations" / "epoch_001.jsonl").read_text().splitlines()
    assert len(samples) == 2 and {"prompt", "reference", "generated"} <= set(
        json.loads(samples[0])
    )
    assert run.metrics["perplexity"] == pytest.approx(math.exp(run.metrics["loss"]))
    assert run.metrics["train_tokens_per_second"] > 0
    # `predict` is the classifiers' command: a causal run points at `generate`.
    from tfsft.errors import TfsftError
    from tfsft.evaluation.inference import predict_lines

    with pytest.raises(TfsftError, match="generates text: use `tfsft generate"):
        predict_lines(run.dir, ["hello"])


def test_two_workers_train_the_causal_lm_as_one_device(tmp_path):
    """Two local worker processes (MultiWorkerMirroredStrategy) take the same
    steps as one device: the loss is the mean over the global batch's tokens."""
    one = tfsft.train(validate_config(sft_config(tmp_path, "one")), verbose=0)
    raw = sft_config(
        tmp_path,
        "two",
        runtime={"strategy": "multi_worker", "workers": local_workers()},
    )
    config = write(tmp_path / "two.yaml", yaml.safe_dump(raw))
    results = train_on_workers(config, tmp_path, 2)
    run_dir = Path(results[0][0].strip().splitlines()[-1])
    two = tfsft.load_run(run_dir)
    assert two.metrics["replicas"] == 2
    assert two.metrics["loss"] == pytest.approx(one.metrics["loss"], abs=1e-5)
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(two.model.get_weights(), one.model.get_weights(), strict=True)
    )
    assert diff < 3e-5


@pytest.mark.slow
def test_kill_9_resumes_a_lora_causal_lm_run_exactly(tmp_path):
    """A LoRA causal-LM run killed mid-epoch resumes to the uninterrupted run's
    metrics. (Slow suite: LoRA's backup is ordinary weights now, restored
    in-process for every method by tests/test_peft.py, and kill -9 itself is
    tests/test_resume.py's.)"""
    raw = sft_config(
        tmp_path,
        "lm",
        records=64,  # 48 train rows: 24 steps
        peft={"method": "lora", "rank": 4},
        train={"batch_size": 2, "save_every_steps": 3},
    )
    reference = tfsft.train(validate_config(raw), verbose=0).metrics
    raw["name"] = "lm-killed"
    config = write(tmp_path / "lm.yaml", yaml.safe_dump(raw))
    proc = start_training(config, tmp_path)
    # The reference run is complete, so the only backup is the killed run's.
    step = wait_for_backup(tmp_path / "runs", 12, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    metrics, err = finish_training(config, tmp_path)
    resumed_at = int(err.split("resuming at step")[1].split()[0])
    assert step <= resumed_at < 24
    for key in ("loss", "perplexity", "token_accuracy"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
