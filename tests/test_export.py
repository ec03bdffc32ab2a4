import json
import subprocess
import sys
import textwrap

import pytest
from conftest import DEMO, tiny_config

import tfsft
from tfsft.config import validate_config
from tfsft.errors import TfsftError
from tfsft.export.check import check_export
from tfsft.export.saved_model import export_model

TEXTS = ["a wonderful great film", "boring and awful plot", "fine"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny single-text run (CLS head) and one pair run (mean pooling head)."""
    out = tmp_path_factory.mktemp("runs")
    small = {"max_train_examples": 64}
    base = tiny_config("exp", out, data=small, train={"epochs": 1, "batch_size": 32})
    single = tfsft.train(validate_config(base), verbose=0)
    base["name"] = "exp-pair"
    base["data"]["text_pair_column"] = "sentence"
    base["model"]["pooling"] = "mean"  # the other head, through the same checks
    pair = tfsft.train(validate_config(base), verbose=0)
    return single, pair


def _reload_in_fresh_process(path, texts, pairs=None):
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401
        model = tf.saved_model.load({str(path)!r})
        args = {{"text": tf.constant({texts!r})}}
        if {pairs!r} is not None:
            args["text_pair"] = tf.constant({pairs!r})
        out = model.signatures["serving_default"](**args)
        print(json.dumps({{k: v.numpy().tolist() if v.dtype != tf.string else
                          [x.decode() for x in v.numpy()] for k, v in out.items()}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["single", "pair"])
def test_export_reload_in_fresh_process_matches_keras(runs, tmp_path, kind):
    run = runs[0] if kind == "single" else runs[1]
    pairs = list(reversed(TEXTS)) if kind == "pair" else None
    path = export_model(run, "m", tmp_path)
    assert path == tmp_path / "m" / "1"
    expected = tfsft.predict(run, TEXTS, pairs)
    got = _reload_in_fresh_process(path, TEXTS, pairs)
    names = list(run.labels.names)
    for i, pred in enumerate(expected):
        for j, name in enumerate(names):
            assert got["probabilities"][i][j] == pytest.approx(
                pred["probabilities"][name], abs=1e-5
            )
        assert got["labels"][i] == pred["label"]
        assert names[got["label_ids"][i]] == pred["label"]


def test_versions_are_sequential_atomic_and_never_overwritten(runs, tmp_path):
    run = runs[0]
    assert export_model(run, "m", tmp_path).name == "1"
    assert export_model(run, "m", tmp_path).name == "2"
    with pytest.raises(TfsftError, match="version 2 already exists; pass --force"):
        export_model(run, "m", tmp_path, version=2)
    stamp = (tmp_path / "m" / "2" / "saved_model.pb").stat().st_mtime_ns
    assert export_model(run, "m", tmp_path, version=2, force=True).name == "2"
    assert (tmp_path / "m" / "2" / "saved_model.pb").stat().st_mtime_ns != stamp
    assert export_model(run, "m", tmp_path, version=7).name == "7"
    # Only complete, integer-named versions are ever visible: no temp dirs left.
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "7"]
    files = {p.name for p in (tmp_path / "m" / "1" / "assets").iterdir()}
    assert files == {"labels.json", "vocab.txt", "config.yaml", "README.md"}
    card = (tmp_path / "m" / "1" / "assets" / "README.md").read_text()
    assert "task: classification" in card and "accuracy" in card
    # The .keras file loads in Keras' safe mode (no lambdas, no pickled code).
    import keras

    reloaded = keras.saving.load_model(
        tmp_path / "m" / "1" / "keras" / "model.keras", safe_mode=True
    )
    assert reloaded.count_params() == run.model.count_params()
    assert (tmp_path / "m" / "1" / "keras" / "preset" / "task.json").is_file()


def test_failed_export_leaves_nothing(runs, tmp_path, monkeypatch):
    from tfsft.export import saved_model

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model.tf.saved_model, "save", boom)
    with pytest.raises(RuntimeError):
        export_model(runs[0], "m", tmp_path)
    assert list((tmp_path / "m").iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".."])
def test_bad_names_are_rejected(runs, tmp_path, name):
    with pytest.raises(TfsftError, match="not a valid model name"):
        export_model(runs[0], name, tmp_path)


def test_check_lists_non_core_ops_and_tokens_only_is_core(runs, tmp_path):
    full = check_export(export_model(runs[0], "m", tmp_path))
    assert set(full["signatures"]) == {"serving_default", "serve_tokens"}
    assert (
        "FastWordpieceTokenizeWithOffsets"
        in full["signatures"]["serving_default"]["non_core_ops"]
    )
    assert full["signatures"]["serve_tokens"]["non_core_ops"] == []
    assert "tensorflow-text" in full["requires"]

    tokens = export_model(runs[0], "t", tmp_path, tokens_only=True)
    report = check_export(tokens)
    assert list(report["signatures"]) == ["serve_tokens"]
    assert report["requires"].startswith("core TensorFlow only")
    # It loads in a process that never imports tensorflow_text.
    script = (
        "import sys, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(tokens)!r})\n"
        "ids = tf.constant([[2, 10, 3, 0]]); seg = tf.zeros_like(ids)\n"
        "out = m.signatures['serve_tokens'](token_ids=ids, segment_ids=seg,"
        " padding_mask=tf.constant([[1, 1, 1, 0]]))\n"
        "assert 'tensorflow_text' not in sys.modules\n"
        "print(out['logits'].shape)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(1, 2)" in proc.stdout
    assert (tokens / "assets" / "vocab.txt").is_file()


def test_saved_model_cli_shows_the_export(runs, tmp_path):
    path = export_model(runs[0], "m", tmp_path)
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run(
        [*cli, "show", "--all", "--dir", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signature_def['serving_default']" in proc.stdout
    assert "outputs['labels']" in proc.stdout


def test_multilabel_and_regression_exports_have_their_outputs(tmp_path):
    common = {
        "model": {"preset": "tiny", "sequence_length": 32},
        "train": {"epochs": 1, "batch_size": 32, "output_dir": str(tmp_path / "runs")},
    }
    multi = tfsft.train(
        validate_config(
            {
                "name": "ml",
                "task": "multilabel",
                **common,
                "data": {
                    "train": str(DEMO / "aspects_train.csv"),
                    "label_column": "labels",
                    "max_train_examples": 64,
                },
                "evaluate": {"threshold": 0.3},
            }
        ),
        verbose=0,
    )
    reg = tfsft.train(
        validate_config(
            {
                "name": "rg",
                "task": "regression",
                **common,
                "data": {
                    "train": str(DEMO / "ratings_train.jsonl"),
                    "text_column": "review",
                    "label_column": "score",
                    "max_train_examples": 64,
                },
            }
        ),
        verbose=0,
    )
    texts = ["cheap and it arrived late", "lovely"]
    got = _reload_in_fresh_process(export_model(multi, "ml", tmp_path), texts)
    assert set(got) == {"probabilities", "predictions", "labels"}
    expected = tfsft.predict(multi, texts)
    for i, pred in enumerate(expected):
        assert got["labels"][i] == ";".join(pred["labels"])  # names above 0.3, joined
        assert got["predictions"][i] == [
            int(n in pred["labels"]) for n in multi.labels.names
        ]
    got = _reload_in_fresh_process(export_model(reg, "rg", tmp_path), texts)
    assert list(got) == ["value"]
    for value, pred in zip(got["value"], tfsft.predict(reg, texts), strict=True):
        assert value == pytest.approx(pred["value"], abs=1e-5)


def test_mean_pooling_run_reloads_from_disk_and_as_keras_file(runs, tmp_path):
    from tfsft.models.pooling import MeanPoolingTextClassifier

    run = runs[1]
    assert isinstance(run.model, MeanPoolingTextClassifier)
    pairs = list(reversed(TEXTS))
    expected = tfsft.predict(run, TEXTS, pairs)
    # keras-hub's TextClassifier.from_preset would put a fresh CLS head on the
    # backbone here; load_run must give back the trained mean-pooling head.
    reloaded = tfsft.load_run(run.dir)
    assert isinstance(reloaded.model, MeanPoolingTextClassifier)
    for a, b in zip(expected, tfsft.predict(reloaded, TEXTS, pairs), strict=True):
        assert a["label"] == b["label"]
        for name, p in a["probabilities"].items():
            # bf16 kernels may round a last bit differently; a fresh head would be
            # off by far more than this.
            assert abs(p - b["probabilities"][name]) < 1e-3
    import keras

    path = export_model(run, "mean", tmp_path)
    card = (path / "assets" / "README.md").read_text()
    assert "mean of the token vectors" in card and "load_classifier" in card
    model = keras.saving.load_model(path / "keras" / "model.keras", safe_mode=True)
    assert isinstance(model, MeanPoolingTextClassifier)
    assert model.count_params() == run.model.count_params()
