"""Shared fixtures: tiny presets, small configs, and the real-data location."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# xdist workers share the cores: each worker's TensorFlow (and the tfsft processes
# its tests start, which inherit this) gets its share of intra-op threads, so two
# workers do not each run a full pool on the same cores. The inter-op pool is left
# alone, so the mirrored and multi-worker tests' collectives keep their threads.
if (_workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) > 1:
    _share = max(1, (os.cpu_count() or 1) // _workers)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(_share))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
DEMO = REPO / "tfsft" / "demo_data"


def pytest_configure(config: pytest.Config) -> None:
    # One tiny preset for the whole session (and across xdist workers): it is built
    # once into the repo's pytest cache, versioned by name.
    os.environ.setdefault("TFSFT_CACHE", str(REPO / ".pytest_cache" / "tfsft"))


# The files that take longest, longest first (by their tests' seconds summed from a
# `--durations` run on 2 cores). `make test` passes --no-loadscope-reorder, so
# pytest-xdist hands out files in this order: the long ones start first and the many
# short files fill in at the end, instead of a two-minute file starting last beside
# an idle worker. Order only; a file missing here runs after these.
SLOWEST_FILES = (
    "test_docs_commands.py",  # about 4 minutes: every documented command
    "test_resume.py",
    "test_export.py",
    "test_step_options.py",
    "test_peft_export.py",
    "test_causal_lm_memorise.py",
    "test_peft.py",
    "test_train.py",
    "test_causal_lm.py",
    "test_realdata.py",
    "test_strategies.py",
    "test_causal_lm_serving.py",
    "test_token_classification.py",
    "test_tasks.py",
    "test_peft_resume.py",
    "test_cli.py",
    "test_progress.py",
    "test_run_report.py",
    "test_runs_cli.py",
    "test_tokenizer_parity.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real data not found at {SHARED}")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails any test that opens a connection off this machine.

    Nothing in tfsft may download weights or data at run time; loopback stays
    allowed for local servers.
    """
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return real_connect(sock, address)
        raise AssertionError(f"test tried to reach the network: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def float32_policy_after_each_test() -> Any:
    """Keras' dtype policy is process-wide and pytest-xdist runs many tests in one
    process: a test that leaves e.g. mixed_float16 behind would make unrelated later
    tests compute in float16 on some workers only. Such a leak fails its own test."""
    yield
    keras = sys.modules.get("keras")
    if keras is None:
        return
    left = keras.config.dtype_policy().name
    if left != "float32":
        keras.mixed_precision.set_global_policy("float32")
        pytest.fail(f"the test left Keras' global dtype policy at {left}")


def tiny_config(
    name: str, output_dir: Path, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A plain-dict config training the tiny BERT on the demo sentiment data.

    Keyword arguments update the named sections, e.g. ``train={"epochs": 1}``.
    """
    raw: dict[str, Any] = {
        "name": name,
        "task": "classification",
        "data": {
            "train": str(DEMO / "sentiment_train.tsv"),
            "validation": str(DEMO / "sentiment_dev.tsv"),
            "text_column": "sentence",
            "label_column": "label",
            "max_train_examples": 96,
        },
        "model": {"preset": "tiny", "sequence_length": 32},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "output_dir": str(output_dir),
        },
    }
    return with_sections(raw, **sections)


def with_sections(raw: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """Updates sections of a config dict in place (and returns it)."""
    for key, values in sections.items():
        raw[key] = {**raw.get(key, {}), **values}
    return raw


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> dict[str, Any]:
    return tiny_config("tiny-test", tmp_path / "runs")


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def easy_data(tmp_path: Path) -> tuple[Path, Path]:
    """A synthetic sentiment task the tiny model learns in a few dozen steps.

    The tiny vocabulary splits the negative words into characters, so here length
    alone gives the label away and length buckets would make every batch one class;
    tests that check learning on it set ``data.length_buckets: null``.
    """
    rng = random.Random(0)
    pos = ["good", "great", "wonderful", "love", "best"]
    neg = ["bad", "awful", "boring", "worst", "hate"]
    filler = ["the", "film", "was", "and", "it", "plot"]

    def rows(n: int) -> str:
        out = ["sentence\tlabel"]
        for i in range(n):
            words, label = (pos, "pos") if i % 2 else (neg, "neg")
            text = " ".join(rng.sample(words, 2) + rng.sample(filler, 3))
            out.append(f"{text}\t{label}")
        return "\n".join(out) + "\n"

    return write(tmp_path / "easy_train.tsv", rows(96)), write(
        tmp_path / "easy_dev.tsv", rows(40)
    )


# ---- token classification: synthetic CoNLL data the tiny model learns quickly ----

# Entities are words of the tiny vocabulary, so a tiny model learns them quickly.
ENTITIES = {
    "PER": [["chair"], ["desk"], ["guide", "hand"]],
    "LOC": [["harbour"], ["beach"], ["airport", "hotel"]],
    "ORG": [["airline"], ["ferry", "market"]],
}
FILLER = ["the", "film", "was", "and", "good", "great", "food", "cold", "fast", "it"]


def synthetic_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words: list[str] = []
        labels: list[str] = []
        for _ in range(rng.randint(1, 3)):
            filler = rng.sample(FILLER, rng.randint(1, 3))
            words += filler
            labels += ["O"] * len(filler)
            kind = rng.choice(sorted(ENTITIES))
            entity = rng.choice(ENTITIES[kind])
            words += entity
            labels += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        out.append((words, labels))
    return out


def conll_text(sentences: list[tuple[list[str], list[str]]]) -> str:
    blocks = ["-DOCSTART- -X- -X- O\n"]
    for words, labels in sentences:
        blocks.append(
            "".join(f"{w} NN B-NP {t}\n" for w, t in zip(words, labels, strict=True))
        )
    return "\n".join(blocks)


def ner_config(root: Path, name: str = "ner", **sections) -> dict:
    raw = {
        "name": name,
        "task": "token_classification",
        "data": {
            "train": str(root / "train.txt"),
            "validation": str(root / "valid.txt"),
        },
        "model": {"preset": "tiny", "sequence_length": 16, "dropout": 0.0},
        "train": {
            "epochs": 4,
            "batch_size": 16,
            "learning_rate": 1e-2,
            "warmup_ratio": 0.0,
            "output_dir": str(root / "runs"),
        },
        # float32: the export comparison checks scores to 1e-5.
        "runtime": {"precision": "float32"},
    }
    return with_sections(raw, **sections)


def write_ner_data(root: Path) -> Path:
    """Synthetic CoNLL train (128 sentences) and validation (40) files in ``root``."""
    write(root / "train.txt", conll_text(synthetic_sentences(128, 0)))
    write(root / "valid.txt", conll_text(synthetic_sentences(40, 1)))
    return root


def local_workers(n: int = 2) -> list[str]:
    """``host:port`` addresses on 127.0.0.1 for ``n`` local multi-worker processes."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return [f"127.0.0.1:{p}" for p in ports]


def train_on_workers(
    config: Path, cwd: Path, n: int, env: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """Runs ``tfsft train CONFIG --worker-index i`` for i < n as processes and
    returns each one's (stdout, stderr); fails the test when any exits non-zero."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("TF_CONFIG", None)
    command = [sys.executable, "-m", "tfsft", "train", str(config), "--worker-index"]
    procs = [
        subprocess.Popen(
            [*command, str(i)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, (_, err)) in enumerate(zip(procs, results, strict=True)):
        assert p.returncode == 0, f"worker {i}: {err[-4000:]}"
    return results


def sft_records(n: int) -> list[dict]:
    """``n`` {prompt, completion} records of a few words each, seeded."""
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "seven", "cat", "river", "stone", "music"]
    return [
        {
            "prompt": f"Say {' '.join(rng.choice(words, 2))} twice.",
            "completion": " ".join(rng.choice(words, int(rng.integers(1, 5)))),
        }
        for _ in range(n)
    ]


def sft_config(root: Path, name: str, records: int = 32, **sections) -> dict:
    """A causal-LM config: tiny-llama, chatml, ``records`` records in ``root``."""
    train = write(
        root / "train.jsonl",
        "".join(json.dumps(r) + "\n" for r in sft_records(records)),
    )
    raw = {
        "name": name,
        "task": "causal_lm",
        "data": {
            "train": str(train),
            "validation_fraction": 0.25,
            "template": "chatml",
        },
        "model": {"preset": "tiny-llama", "sequence_length": 64, "dropout": 0.0},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "warmup_ratio": 0.0,
            "output_dir": str(root / "runs"),
        },
        "runtime": {"precision": "float32"},
        "generate": {"max_new_tokens": 4, "samples_per_epoch": 2},
    }
    return with_sections(raw, **sections)


def resume_config(tmp_path: Path, name: str, **sections: dict[str, Any]) -> Path:
    """A config file for the interruption tests: the tiny BERT, 160 rows, 40 steps
    per epoch and 80 in all, a backup every 3 steps, dropout on (so the backup
    must carry the RNG state) and length buckets (the batch plan must be as
    reproducible as a plain order). ``sections`` update the named sections."""
    cfg = {
        "name": name,
        "data": {
            "train": str(DEMO / "sentiment_train.tsv"),
            "validation": str(DEMO / "sentiment_dev.tsv"),
            "text_column": "sentence",
            "max_train_examples": 160,
            "length_buckets": [8, 16],
        },
        "model": {"preset": "tiny", "sequence_length": 24},
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "save_every_steps": 3,
            "output_dir": str(tmp_path / "runs"),
        },
    }
    return write(
        tmp_path / f"{name}.yaml", yaml.safe_dump(with_sections(cfg, **sections))
    )


def start_training(config: Path, cwd: Path) -> subprocess.Popen:
    """`tfsft train CONFIG` as a process in ``cwd`` (stdout/stderr piped)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tfsft", "train", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_training(config: Path, cwd: Path) -> tuple[dict, str]:
    """Runs `tfsft train CONFIG` to the end: its metrics.json and its stderr."""
    proc = start_training(config, cwd)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    run_dir = Path(out.strip().splitlines()[-1])
    return json.loads((run_dir / "metrics.json").read_text()), err


def wait_for_backup(run_root: Path, at_least: int, proc: subprocess.Popen) -> int:
    """Waits for a backup of step >= ``at_least`` under ``run_root/NAME/RUN``."""
    deadline = time.time() + 300
    while time.time() < deadline:
        for progress in run_root.glob("*/*/backup/progress.json"):
            try:
                step = json.loads(progress.read_text())["global_step"]
            except (OSError, ValueError):
                continue
            if step >= at_least:
                return step
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("no backup appeared")
