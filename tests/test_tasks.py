"""Pairs, multi-label and regression, trained end to end on the tiny preset."""

import pytest
from conftest import DEMO, with_sections

import tfsft
from tfsft.config import validate_config


def test_pairs_multilabel_regression_and_test_split(tmp_path, tiny_cfg):
    pair = validate_config(
        with_sections(
            tiny_cfg,
            data={
                "train": str(DEMO / "sentiment_train.tsv"),
                "validation": None,
                "validation_fraction": 0.2,
                "test": str(DEMO / "sentiment_dev.tsv"),
                "text_pair_column": "sentence",
            },
            train={"epochs": 1},
        )
    )
    run = tfsft.train(pair, verbose=0)
    assert run.metrics["num_examples"] == 64  # 20% of 320, stratified
    assert run.metrics["test_num_examples"] == 100
    assert (run.dir / "test" / "metrics.json").is_file()
    out = tfsft.predict(run, ["good"], ["good"])
    assert out[0]["label"] in ("negative", "positive")
    with pytest.raises(tfsft.TfsftError, match="classifies text pairs"):
        tfsft.predict(run, ["good"])

    multi = validate_config(
        {
            "name": "multi",
            "task": "multilabel",
            "data": {
                "train": str(DEMO / "aspects_train.csv"),
                "validation": str(DEMO / "aspects_dev.csv"),
                "label_column": "labels",
            },
            "model": {"preset": "tiny", "sequence_length": 32},
            "train": {"epochs": 1, "batch_size": 32, "output_dir": str(tmp_path)},
        }
    )
    run = tfsft.train(multi, verbose=0)
    assert run.labels.names == ("delivery", "price", "quality", "service")
    assert {"f1_micro", "f1_macro", "subset_accuracy", "hamming_loss"} <= set(
        run.metrics
    )
    pred = tfsft.predict(run, ["cheap but it broke"])[0]
    assert set(pred["probabilities"]) == set(run.labels.names)
    assert set(pred["labels"]) <= set(run.labels.names)

    reg = validate_config(
        {
            "name": "reg",
            "task": "regression",
            "data": {
                "train": str(DEMO / "ratings_train.jsonl"),
                "validation": str(DEMO / "ratings_dev.jsonl"),
                "text_column": "review",
                "label_column": "score",
            },
            "model": {"preset": "tiny", "sequence_length": 32},
            "train": {"epochs": 1, "batch_size": 32, "output_dir": str(tmp_path)},
        }
    )
    run = tfsft.train(reg, verbose=0)
    assert {"mse", "mae", "pearson", "spearman"} <= set(run.metrics)
    assert isinstance(tfsft.predict(run, ["fine"])[0]["value"], float)
    metrics = tfsft.evaluate(run.dir, split="validation")
    assert metrics["mse"] == pytest.approx(run.metrics["mse"], rel=1e-5)
