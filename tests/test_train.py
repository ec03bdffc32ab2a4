import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import with_sections

import tfsft
from tfsft.config import validate_config
from tfsft.runs import read_status


def _cfg(raw, **sections):
    return validate_config(with_sections(raw, **sections))


def test_train_writes_a_complete_run_and_learns(tiny_cfg, easy_data):
    train, dev = easy_data
    cfg = _cfg(
        tiny_cfg,
        data={
            "train": str(train),
            "validation": str(dev),
            "max_train_examples": None,
            "length_buckets": None,
        },  # see the easy_data fixture
        train={"epochs": 3, "learning_rate": 1e-2, "warmup_ratio": 0.0},
        model={"dropout": 0.0},
    )
    run = tfsft.train(cfg, verbose=0)
    files = {p.name for p in run.dir.iterdir()}
    assert {
        "config.yaml",
        "labels.json",
        "status.json",
        "metrics.json",
        "history.csv",
        "errors.jsonl",
        "per_class.json",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "curves.png",
        "checkpoints",
        "logs",
        "model",
    } <= files
    assert "backup" not in files  # deleted once training finished
    assert read_status(run.dir)["state"] == "completed"
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert metrics == run.metrics
    assert metrics["num_examples"] == 40
    assert 0 < metrics["trainable_params"] == metrics["total_params"]
    history = run.history
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert metrics["accuracy"] >= 0.9  # chance is 0.5
    assert set(json.loads((run.dir / "labels.json").read_text())["names"]) == {
        "neg",
        "pos",
    }
    # The saved preset reloads with its tokenizer and predicts like the live model;
    # in bfloat16 two instances of the same weights may differ in the last bits.
    tol = 1e-5 if keras.config.dtype_policy().name == "float32" else 1e-3
    assert tfsft.predict(run, []) == []
    texts = ["a wonderful great film", "boring and awful plot"]
    live = tfsft.predict(run, texts)
    reloaded = tfsft.predict(run.dir, texts)
    for a, b in zip(live, reloaded, strict=True):
        assert a["label"] == b["label"]
        for name in ("neg", "pos"):
            assert a["probabilities"][name] == pytest.approx(
                b["probabilities"][name], abs=tol
            )


def test_same_seed_same_metrics(tiny_cfg):
    a = tfsft.train(validate_config(tiny_cfg), verbose=0)
    b = tfsft.train(validate_config(tiny_cfg), verbose=0)
    assert a.dir != b.dir
    for key in ("accuracy", "loss", "f1_macro"):
        assert a.metrics[key] == b.metrics[key]
    assert a.history["loss"] == b.history["loss"]


def test_resume_after_interruption(tiny_cfg, monkeypatch):
    from tfsft.training import trainer

    cfg = _cfg(tiny_cfg, train={"epochs": 3})
    real = trainer.make_callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "make_callbacks", lambda *a: [*real(*a), Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        tfsft.train(cfg, verbose=0)
    (first,) = list((Path(cfg.train.output_dir) / cfg.name).iterdir())
    assert read_status(first)["state"] == "interrupted"
    progress = first / "backup" / "progress.json"
    two_epochs = json.loads(progress.read_text())["global_step"]

    # The second session trains the last epoch, then dies before it completes. The
    # last epoch wrote no backup (the finished run would delete it), so the one
    # after epoch 2 is still the newest.
    monkeypatch.setattr(trainer, "make_callbacks", real)
    real_report = trainer.report_splits

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "report_splits", dies)
    with pytest.raises(KeyboardInterrupt):
        tfsft.train(cfg, verbose=0)
    assert read_status(first)["state"] == "interrupted"
    assert json.loads(progress.read_text())["global_step"] == two_epochs

    # The third session replays the last epoch from that backup, exactly.
    monkeypatch.setattr(trainer, "report_splits", real_report)
    run = tfsft.train(cfg, verbose=0)
    assert run.dir == first  # the same command continued the same run
    assert read_status(run.dir)["state"] == "completed"
    assert not (run.dir / "backup").exists()
    rows = list(csv.DictReader((run.dir / "history.csv").read_text().splitlines()))
    # Epochs 0-1 from the first session, 2 from the second, 2 again after resume.
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 2]
    assert float(rows[3]["val_loss"]) == pytest.approx(
        float(rows[2]["val_loss"]), abs=1e-6
    )
    assert len(run.history["loss"]) == 3


def test_completed_run_is_not_resumed(tiny_cfg):
    cfg = _cfg(tiny_cfg, train={"epochs": 1})
    assert tfsft.train(cfg, verbose=0).dir != tfsft.train(cfg, verbose=0).dir


def test_bad_data_fails_before_creating_a_run_dir(tiny_cfg, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\ngood,pos\n")
    cfg = _cfg(tiny_cfg, data={"validation": str(bad)})
    with pytest.raises(tfsft.DataError, match="labels not seen in training: 'pos'"):
        tfsft.train(cfg, verbose=0)
    assert not (tmp_path / "runs").exists()


def test_building_blocks_give_plain_keras_objects(tiny_cfg):
    cfg = validate_config(tiny_cfg)
    task = tfsft.get_task(cfg)
    splits = tfsft.load_splits(cfg)
    spec = task.build_labels(splits.train, cfg.data)
    pre = task.load_preprocessor(tfsft.resolve_preset("tiny"), 32)
    train = task.encode(splits.train, pre, spec, cfg)
    ds = tfsft.make_dataset(train, 16, shuffle=True)
    model = tfsft.build_model(cfg.model, spec.num_outputs)
    tfsft.compile_model(model, cfg, total_steps=6)
    assert isinstance(model, keras.Model)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_nan_loss_stops_with_a_hint_and_keeps_checkpoints(tiny_cfg):
    cfg = _cfg(
        tiny_cfg,
        train={
            "epochs": 3,
            "learning_rate": 1e30,
            "max_grad_norm": None,
            "warmup_ratio": 0.0,
        },
    )
    with pytest.raises(tfsft.TfsftError) as e:
        tfsft.train(cfg, verbose=0)
    assert "the loss became nan" in str(e.value).lower() or "became inf" in str(e.value)
    assert "Try a lower train.learning_rate (now 1e+30)" in str(e.value)
    (run_dir,) = list((Path(cfg.train.output_dir) / cfg.name).iterdir())
    assert read_status(run_dir)["state"] == "failed"


def test_unusable_output_dir_is_a_clear_error(tiny_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = _cfg(tiny_cfg, train={"output_dir": str(blocker / "runs")})
    with pytest.raises(
        tfsft.TfsftError, match=r"train.output_dir: cannot create .*a_file/runs"
    ):
        tfsft.train(cfg, verbose=0)


def test_validation_is_one_pass_per_epoch_shared_with_the_report(
    tiny_cfg, easy_data, monkeypatch
):
    """The last epoch's validation pass feeds the report when that epoch is the
    best; otherwise the best weights are reloaded and predicted again. Either way
    the report is the best epoch's, and metrics.json times every phase."""
    import tfsft.training.callbacks as callbacks_module
    import tfsft.training.finish as finish_module

    calls = {"epoch": 0, "report": 0}
    epoch_logits = callbacks_module.predict_logits
    report_outputs = finish_module.predict_outputs

    def counted_epoch(*args, **kwargs):
        calls["epoch"] += 1
        return epoch_logits(*args, **kwargs)

    def counted_report(*args, **kwargs):
        calls["report"] += 1
        return report_outputs(*args, **kwargs)

    monkeypatch.setattr(callbacks_module, "predict_logits", counted_epoch)
    monkeypatch.setattr(finish_module, "predict_outputs", counted_report)
    train, dev = easy_data
    data = {"train": str(train), "validation": str(dev), "max_train_examples": None}

    # One epoch: it is the best, so its pass is the report's.
    cfg = _cfg(tiny_cfg, data=data, train={"epochs": 1})
    run = tfsft.train(cfg, verbose=0)
    assert calls == {"epoch": 1, "report": 0}
    assert run.metrics["accuracy"] == run.history["val_accuracy"][-1]
    # The host-side loss is the compiled loss: Keras' evaluate agrees.
    encoded = tfsft.get_task(cfg).encode(
        tfsft.load_splits(cfg).validation, run.model.preprocessor, run.labels, cfg
    )
    x = {k: encoded.features[k] for k in encoded.features}
    attached, run.model.preprocessor = run.model.preprocessor, None
    keras_loss = run.model.evaluate(x, encoded.targets, batch_size=8, verbose=0)[0]
    run.model.preprocessor = attached
    assert abs(run.history["val_loss"][-1] - keras_loss) < 1e-5
    phases = run.metrics["phase_seconds"]
    assert {"read_data", "tokenize", "build", "fit", "validation", "epoch_end"} <= set(
        phases
    )
    assert {"evaluate", "save", "report", "total"} <= set(phases)
    assert phases["fit"] >= phases["validation"] + phases["epoch_end"]
    assert phases["total"] >= phases["fit"] + phases["tokenize"]
    on_disk = json.loads((run.dir / "metrics.json").read_text())
    assert on_disk["phase_seconds"] == phases

    # Best epoch 1 of 2 (a fake first-epoch score): reload it and predict again.
    calls.update(epoch=0, report=0)
    task_cls = type(tfsft.get_task(cfg))
    real_metrics = task_cls.logit_metrics
    scores = iter([1.0, 0.0])

    def first_epoch_best(self, logits, enc):
        return real_metrics(self, logits, enc) | {"accuracy": next(scores)}

    monkeypatch.setattr(task_cls, "logit_metrics", first_epoch_best)
    second = str(Path(tiny_cfg["train"]["output_dir"]) / "best-first")
    cfg = _cfg(tiny_cfg, data=data, train={"epochs": 2, "output_dir": second})
    run = tfsft.train(cfg, verbose=0)
    assert calls == {"epoch": 2, "report": 1}
    # A second run in the same process did not wait for the imports.
    assert "startup" not in run.metrics["phase_seconds"]
    best = json.loads((run.dir / "checkpoints" / "best.json").read_text())
    assert best["epoch"] == 1
