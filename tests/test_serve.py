import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import tfsft
from tfsft.config import validate_config
from tfsft.export.saved_model import export_model, trim_padding
from tfsft.export.serve import ServeOptions, Server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    cfg = validate_config(
        tiny_config(
            "srv",
            out / "runs",
            data={"max_train_examples": 64},
            train={"epochs": 1, "batch_size": 32},
        )
    )
    run = tfsft.train(cfg, verbose=0)
    export_model(run, "sent", out / "models")
    server = Server(
        out / "models" / "sent",
        ServeOptions(
            port=0,
            grpc_port=0,
            poll_seconds=0.2,
            max_body_mb=0.05,
            max_rows=64,
            max_batch_size=16,
            batch_timeout_ms=10,
        ),
    )
    server.start()
    yield server, run, out
    server.stop()


def _call(server, path, body=None, raw=None):
    url = f"http://127.0.0.1:{server.port}{path}"
    data = (
        raw
        if raw is not None
        else (json.dumps(body).encode() if body is not None else None)
    )
    req = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_status_and_metadata(served):
    server, _, _ = served
    code, body = _call(server, "/v1/models/sent")
    assert code == 200
    assert body["model_version_status"][0]["version"] == "1"
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    code, meta = _call(server, "/v1/models/sent/metadata")
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "serve_tokens"}
    assert sigs["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_row_and_columnar_formats_match_the_run(served):
    server, run, _ = served
    texts = ["great wonderful film", "awful boring plot"]
    expected = tfsft.predict(run, texts)
    code, rows = _call(server, "/v1/models/sent:predict", {"instances": texts})
    assert code == 200
    assert [r["labels"] for r in rows["predictions"]] == [e["label"] for e in expected]
    for r, e in zip(rows["predictions"], expected, strict=True):
        assert r["probabilities"] == pytest.approx(
            list(e["probabilities"].values()), abs=1e-5
        )
    code, cols = _call(
        server, "/v1/models/sent/versions/1:predict", {"inputs": {"text": texts}}
    )
    assert code == 200
    assert cols["outputs"]["labels"] == [e["label"] for e in expected]
    code, named = _call(
        server, "/v1/models/sent:predict", {"instances": [{"text": t} for t in texts]}
    )
    assert named == rows
    code, tokens = _call(
        server,
        "/v1/models/sent:predict",
        {
            "signature_name": "serve_tokens",
            "inputs": {
                "token_ids": [[2, 10, 3]],
                "segment_ids": [[0, 0, 0]],
                "padding_mask": [[1, 1, 1]],
            },
        },
    )
    assert code == 200 and np.array(tokens["outputs"]).shape == (1, 2)


@pytest.mark.parametrize(
    ("path", "body", "code", "message"),
    [
        ("/v1/models/other:predict", {"instances": ["x"]}, 404, "Servable not found"),
        (
            "/v1/models/sent/versions/9:predict",
            {"instances": ["x"]},
            404,
            "Specific(sent, 9)",
        ),
        (
            "/v1/models/sent:predict",
            {"instances": ["x"], "signature_name": "nope"},
            404,
            "nope",
        ),
        (
            "/v1/models/sent:predict",
            {"instances": [{"txt": "x"}]},
            400,
            "expected keys ['text']",
        ),
        (
            "/v1/models/sent:predict",
            {"inputs": {"text": [1, 2]}},
            400,
            "expected string",
        ),
        ("/v1/models/sent:predict", {"foo": 1}, 400, "'instances' or 'inputs'"),
        (
            "/v1/models/sent:predict",
            {"instances": ["x"] * 65},
            400,
            "per-request limit of 64",
        ),
        (
            "/v1/models/..%2F..%2Fetc:predict",
            {"instances": ["x"]},
            404,
            "Servable not found",
        ),
        ("/v1/models/../../etc/passwd", None, 404, "Malformed request"),
        ("/v2/whatever", None, 404, "Malformed request"),
    ],
)
def test_errors_have_tf_serving_codes(served, path, body, code, message):
    server, _, _ = served
    got, payload = _call(server, path, body)
    assert got == code and message in payload["error"]


def test_malformed_json_and_oversized_body(served):
    server, _, _ = served
    code, payload = _call(server, "/v1/models/sent:predict", raw=b"{not json")
    assert code == 400 and payload["error"].startswith("JSON Parse error")
    big = json.dumps({"instances": ["x" * 100_000]}).encode()
    code, payload = _call(server, "/v1/models/sent:predict", raw=big)
    assert code == 413 and "exceeds the limit" in payload["error"]


def test_grpc_predict_and_metadata_with_the_real_client(served):
    server, run, _ = served
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sent"
    request.model_spec.signature_name = "serving_default"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["great wonderful film"]))
    response = stub.Predict(request, timeout=60)
    assert response.model_spec.version.value == 1
    labels = tf.make_ndarray(response.outputs["labels"])
    assert (
        labels[0].decode() == tfsft.predict(run, ["great wonderful film"])[0]["label"]
    )

    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "sent"
    meta.metadata_field.append("signature_def")
    result = stub.GetModelMetadata(meta, timeout=60)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(sig_map)
    assert "serving_default" in sig_map.signature_def

    request.model_spec.name = "missing"
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


def _predict_each(server, texts, workers):
    """One single-instance :predict request per text, sent concurrently."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(
                lambda t: _call(server, "/v1/models/sent:predict", {"instances": [t]}),
                texts,
            )
        )


def test_concurrent_requests_are_batched_without_errors(served):
    server, _, _ = served
    texts = [f"review {i} was great" for i in range(40)]
    results = _predict_each(server, texts, workers=20)
    assert all(code == 200 for code, _ in results)
    assert all(len(body["predictions"]) == 1 for _, body in results)


def test_trim_padding_cuts_only_columns_no_row_uses():
    mask = tf.constant([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1] * 9 + [0] * 3])
    features = {"token_ids": mask * 7, "padding_mask": mask}
    out = trim_padding(features)
    # Cut right after the longest row, every tensor alike.
    assert out["token_ids"].shape == out["padding_mask"].shape == (2, 9)
    np.testing.assert_array_equal(out["token_ids"], features["token_ids"][:, :9])
    short = trim_padding({"padding_mask": tf.constant([[True, True, False, False]])})
    assert short["padding_mask"].shape == (1, 2)
    long = tf.constant([[1] * 17 + [0] * 23])
    assert trim_padding({"padding_mask": long})["padding_mask"].shape == (1, 17)
    # Left padding uses the last column: nothing is cut.
    left = tf.constant([[0] * 30 + [1] * 10])
    assert trim_padding({"padding_mask": left})["padding_mask"].shape == (1, 40)
    # A batch with no token at all keeps one column; an empty one stays empty.
    none = tf.zeros([2, 5], tf.int32)
    assert trim_padding({"padding_mask": none})["padding_mask"].shape == (2, 1)
    empty = tf.zeros([3, 0], tf.int32)
    assert trim_padding({"padding_mask": empty})["padding_mask"].shape == (3, 0)


def test_trimmed_signature_gives_the_same_predictions_at_every_batch_length(served):
    """The raw-text signature runs on the batch's own length: a text's outputs do
    not depend on its companions (short, long, truncated) and equal the run's."""
    server, run, _ = served
    texts = [
        "ok",
        "great wonderful film",
        "awful boring plot that went on and on without any point at all",
        "word " * 80,  # truncated at the sequence length
    ]
    signature = server.store.get("sent").function("serving_default")
    together = signature(text=tf.constant(texts))
    expected = tfsft.predict(run, texts)
    for i, text in enumerate(texts):
        alone = signature(text=tf.constant([text]))
        assert alone["labels"].numpy()[0] == together["labels"].numpy()[i]
        np.testing.assert_allclose(
            alone["probabilities"].numpy()[0],
            together["probabilities"].numpy()[i],
            atol=1e-6,
        )
        assert together["labels"].numpy()[i].decode() == expected[i]["label"]
        assert together["probabilities"].numpy()[i] == pytest.approx(
            list(expected[i]["probabilities"].values()), abs=1e-5
        )


def test_concurrent_distinct_requests_each_get_their_own_answer(served):
    server, _, _ = served
    texts = [
        f"review {i}: " + "great " * (i % 7) + "boring " * (i % 5) for i in range(48)
    ]
    single = {
        t: _call(server, "/v1/models/sent:predict", {"instances": [t]})[1]
        for t in texts[:6]
    }
    calls_before = server.batcher.calls
    results = _predict_each(server, texts, workers=24)
    assert all(code == 200 for code, _ in results)
    assert server.batcher.calls - calls_before < len(texts)  # merged into batches
    direct = server.store.get("sent").function("serving_default")(
        text=tf.constant(texts)
    )
    for i, (_, body) in enumerate(results):
        (row,) = body["predictions"]
        assert row["labels"] == direct["labels"].numpy()[i].decode()
        assert row["probabilities"] == pytest.approx(
            direct["probabilities"].numpy()[i].tolist(), abs=1e-6
        )
        if texts[i] in single:
            assert row["labels"] == single[texts[i]]["predictions"][0]["labels"]


def _answers(data):
    """The complete HTTP answers (status code, JSON body) at the start of data."""
    answers = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        if len(rest) < length:
            break
        answers.append((int(head.split(b" ")[1]), fields, json.loads(rest[:length])))
        data = rest[length:]
    return answers


def _raw_exchange(server, requests, expect):
    """Sends raw HTTP requests on one connection; returns ``expect`` answers and
    whether the server closed the connection after them."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"".join(requests))
        data = b""
        while len(_answers(data)) < expect:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection early"
            data += chunk
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return _answers(data), closed


def test_keep_alive_answers_pipelined_requests_in_order(served):
    server, _, _ = served
    bodies = [json.dumps({"instances": [t]}).encode() for t in ("good", "bad film")]
    requests = [
        b"POST /v1/models/sent:predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in bodies
    ]
    requests.append(b"GET /v1/models/sent HTTP/1.1\r\nHost: x\r\n\r\n")
    answers, closed = _raw_exchange(server, requests, expect=3)
    assert [code for code, _, _ in answers] == [200, 200, 200] and not closed
    assert all(f[b"content-type"] == b"application/json" for _, f, _ in answers)
    assert len(answers[0][2]["predictions"]) == 1
    assert len(answers[1][2]["predictions"]) == 1
    assert "model_version_status" in answers[2][2]
    # HTTP/1.0 without keep-alive: one answer, then the server closes.
    answers, closed = _raw_exchange(
        server, [b"GET /v1/models/sent HTTP/1.0\r\n\r\n"], expect=1
    )
    assert answers[0][0] == 200 and closed


def test_new_version_is_picked_up_without_restart(served):
    server, run, out = served
    export_model(run, "sent", out / "models")  # version 2
    deadline = time.time() + 60
    while time.time() < deadline:
        _, body = _call(server, "/v1/models/sent")
        if body["model_version_status"][0]["version"] == "2":
            break
        time.sleep(0.2)
    assert body["model_version_status"][0]["version"] == "2"
    code, _ = _call(server, "/v1/models/sent/versions/2:predict", {"instances": ["ok"]})
    assert code == 200


def test_expect_100_continue_is_answered_before_the_body_is_sent(served):
    """curl and other clients send ``Expect: 100-continue`` with larger bodies and
    wait for the interim answer: it must leave at once, not sit in the buffered
    writer until the (never sent) body has been read."""
    server, _, _ = served
    body = json.dumps({"instances": ["good"]}).encode()
    head = (
        b"POST /v1/models/sent:predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        data = interim.partition(b"\r\n\r\n")[2]
        while not _answers(data):
            data += sock.recv(65536)
    ((code, _, answer),) = _answers(data)
    assert code == 200 and len(answer["predictions"]) == 1
