"""Every PEFT method through the export: written, reloaded in a fresh process,
the same outputs as the run; LoRA merged (no LoRA weights or ops) or, with
--no-merge, apart; prompt and prefix tuning of a decoder generating through
the export as `tfsft generate` does on the run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import sft_config, tiny_config
from typer.testing import CliRunner

import tfsft
from tfsft.cli import app
from tfsft.config import validate_config
from tfsft.errors import TfsftError
from tfsft.export.saved_model import export_model

TEXTS = ["a great and lovely film", "the worst plot ever", "fine"]
METHODS = {
    "lora": {"method": "lora", "rank": 4, "targets": "all-linear"},
    "adapter": {"method": "adapter", "adapter_dim": 4},
    "prompt": {"method": "prompt", "num_virtual_tokens": 3},
    "prefix": {"method": "prefix", "num_virtual_tokens": 3},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("peft-runs")
    result = {}
    for name, peft in METHODS.items():
        raw = tiny_config(
            f"peft-{name}",
            out / "runs",
            data={"max_train_examples": 32, "validation": None},
            train={"epochs": 1, "learning_rate": 1e-2},
            peft=peft,
        )
        result[name] = tfsft.train(validate_config(raw), verbose=0)
    return result


def _reload_all(paths: dict[str, str]) -> dict:
    """Each export's probabilities and variable names, from one fresh process."""
    script = textwrap.dedent(f"""
        import json
        import tensorflow as tf
        import tensorflow_text  # noqa: F401
        out = {{}}
        for name, path in {paths!r}.items():
            model = tf.saved_model.load(path)
            probs = model.signatures["serving_default"](text=tf.constant({TEXTS!r}))
            out[name] = {{
                "probabilities": probs["probabilities"].numpy().tolist(),
                # The checkpoint's keys: the attribute path of every variable.
                "variables": [k for k, _ in tf.train.list_variables(
                    path + "/variables/variables")],
            }}
        print(json.dumps(out))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_method_exports_and_reloads_in_a_fresh_process(runs, tmp_path):
    paths = {n: str(export_model(run, n, tmp_path)) for n, run in runs.items()}
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(runs["lora"].dir),
            "--name",
            "apart",
            "--out",
            str(tmp_path),
            "--no-merge",
        ],
    )
    assert result.exit_code == 0, result.output
    paths["lora-apart"] = str(tmp_path / "apart" / "1")
    got = _reload_all(paths)
    for name in [*METHODS, "lora-apart"]:
        run = runs[name.split("-")[0]]
        # load_run: the saved preset, plus the adapter for unmerged methods.
        expected = tfsft.predict(tfsft.load_run(run.dir), TEXTS)
        for i, pred in enumerate(expected):
            for j, label in enumerate(run.labels.names):
                assert got[name]["probabilities"][i][j] == pytest.approx(
                    pred["probabilities"][label], abs=1e-5
                ), name
    lora_variables = [v for v in got["lora"]["variables"] if "lora" in v]
    assert not lora_variables  # merged: the plain model's weights only
    assert [v for v in got["lora-apart"]["variables"] if "lora" in v]
    assert any("_tfsft_prefix/keys" in v for v in got["prefix"]["variables"])
    # No optimizer state rides along with a model fresh from training.
    assert not [v for n in got for v in got[n]["variables"] if "optimizer" in v]
    with pytest.raises(TfsftError, match="only LoRA merges"):
        export_model(runs["adapter"], "x", tmp_path, merge=False)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_decoder_prompt_and_prefix_generate_through_the_export(tmp_path, method):
    """A decoder's virtual tokens and prefixes must reach generation's KV-cache
    loop, in the run and in the exported graph alike."""
    peft = {"method": method, "num_virtual_tokens": 4}
    raw = sft_config(
        tmp_path,
        f"lm-{method}",
        records=16,
        peft=peft,
        data={"validation_fraction": None},
        generate={"samples_per_epoch": 0},
    )
    run = tfsft.train(validate_config(raw), verbose=0)
    path = export_model(run, method, tmp_path / "sm")
    prompts = ["Say red blue twice.", "Say cat music twice."]
    if method == "prompt":  # in a fresh process, as `tfsft generate` runs
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tfsft",
                "generate",
                str(path),
                *[a for p in prompts for a in ("--prompt", p)],
                "--max-new-tokens",
                "6",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = [json.loads(line)["completion"] for line in proc.stdout.splitlines()]
    else:  # the same SavedModel path, loaded here (the fresh process costs 10 s)
        got = tfsft.generate(path, prompts, max_new_tokens=6)
    reloaded = tfsft.load_run(run.dir)
    expected = tfsft.generate(reloaded, prompts, max_new_tokens=6)
    assert got == expected
    # The virtual tokens matter: without them the same weights generate otherwise.
    from tfsft.models.peft import detached

    with detached(reloaded.model):
        plain = tfsft.generate(reloaded, prompts, max_new_tokens=6)
    assert plain != expected
