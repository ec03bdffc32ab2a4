import json

import numpy as np
import pytest

from tfsft.config import EvaluateConfig
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import Examples
from tfsft.tasks import get_task


def compute_metrics(task, y, scores, names=(), threshold=0.5):
    return get_task(task).compute_metrics(
        y, scores, names, EvaluateConfig(threshold=threshold)
    )


def write_report(out_dir, task, examples, y, scores, names):
    encoded = Encoded({}, np.arange(len(examples)), y)
    return get_task(task).write_report(
        out_dir, examples, encoded, scores, LabelSpec(task, names), EvaluateConfig()
    )


def worst_errors(task, examples, y, scores, names):
    return get_task(task).error_records(examples, y, scores, names, EvaluateConfig())


def test_classification_metrics_match_definitions():
    y = np.array([0, 0, 1, 1, 2])
    probs = np.array(
        [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0, 0, 1.0]]
    )
    m = compute_metrics("classification", y, probs, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(4 / 5)
    # per-class F1: a = 2/3 (p 1, r .5), b = 0.8 (p 2/3, r 1), c = 1
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert m["f1_micro"] == pytest.approx(0.8)
    expected_loss = -np.mean(np.log([0.9, 0.2, 0.8, 0.6, 1.0]))
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert -1 <= m["mcc"] <= 1


def test_multilabel_metrics():
    y = np.array([[1, 0], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.2], [0.8, 0.3], [0.1, 0.7]])
    m = compute_metrics("multilabel", y, p, ("x", "y"), threshold=0.5)
    assert m["subset_accuracy"] == pytest.approx(2 / 3)
    assert m["hamming_loss"] == pytest.approx(1 / 6)
    assert m["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1))


def test_regression_metrics():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    pred = np.array([[1.5], [2.0], [2.5], [5.0]])
    m = compute_metrics("regression", y, pred)
    assert m["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert m["mae"] == pytest.approx(0.5)
    assert m["spearman"] == pytest.approx(1.0)
    assert 0.9 < m["pearson"] < 1.0


def test_report_files_and_errors_worst_first(tmp_path):
    ex = Examples("mem", ["t0", "t1", "t2", "t3"], [0, 1, 0, 1], [2, 3, 4, 5])
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.05, 0.95], [0.2, 0.8]])
    metrics = write_report(tmp_path, "classification", ex, y, probs, ("neg", "pos"))
    assert metrics["accuracy"] == 0.5
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    cm = json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert cm == {"labels": ["neg", "pos"], "matrix": [[1, 1], [1, 1]]}
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").open()]
    assert [e["line"] for e in errors] == [4, 3]  # 0.05 on the truth before 0.4
    assert errors[0] == {
        "line": 4,
        "text": "t2",
        "label": "neg",
        "predicted": "pos",
        "probabilities": {"neg": 0.05, "pos": 0.95},
    }
    per_class = json.loads((tmp_path / "per_class.json").read_text())
    assert per_class["pos"]["support"] == 2


def test_regression_errors_sorted_by_absolute_error():
    ex = Examples("mem", ["a", "b", "c"], [1, 2, 3], [1, 2, 3])
    errs = worst_errors(
        "regression",
        ex,
        np.array([[1.0], [2.0], [3.0]]),
        np.array([[1.1], [4.0], [2.0]]),
        (),
    )
    assert [e["text"] for e in errs] == ["b", "c", "a"]
