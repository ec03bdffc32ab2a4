import json
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
from tfsft.export.saved_model import export_model
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


def test_concurrent_requests_are_batched_without_errors(served):
    server, _, _ = served
    texts = [f"review {i} was great" for i in range(40)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(
            pool.map(
                lambda t: _call(server, "/v1/models/sent:predict", {"instances": [t]}),
                texts,
            )
        )
    assert all(code == 200 for code, _ in results)
    assert all(len(body["predictions"]) == 1 for _, body in results)


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
