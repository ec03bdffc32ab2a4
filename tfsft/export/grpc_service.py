"""TF Serving's gRPC PredictionService (Predict, GetModelMetadata) on grpcio.

Implemented with the protos and service stubs of `tensorflow-serving-api`, so clients
built on `PredictionServiceStub` work against it unchanged.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfsft.export.rest import signature_def_map
from tfsft.export.servables import (
    BadRequest,
    Batcher,
    ModelStore,
    NotFound,
    Unauthorized,
    check_bearer,
)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, store: ModelStore, batcher: Batcher, max_rows: int) -> None:
        self.store, self.batcher, self.max_rows = store, batcher, max_rows

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            servable = self.store.get(spec.name, version)
            signature = spec.signature_name or "serving_default"
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            rows = max((len(v) for v in inputs.values() if v.ndim), default=1)
            if rows > self.max_rows:
                raise BadRequest(
                    f"{rows} rows exceed the per-request limit of {self.max_rows}"
                )
            outputs = self.batcher.run(servable, signature, inputs)
            wanted = list(request.output_filter) or list(outputs)
            unknown = sorted(set(wanted) - set(outputs))
            if unknown:
                raise BadRequest(f"output_filter names unknown outputs {unknown}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature
            for key in wanted:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            servable = self.store.get(spec.name, version)
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise BadRequest("metadata_field must be exactly ['signature_def']")
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(signature_def_map(servable))
            return response


class _status:
    """Maps tfsft's request errors to gRPC status codes."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, tb: Any) -> bool:
        if isinstance(error, NotFound):
            self.context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        if isinstance(error, BadRequest):
            self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return False


class BearerAuth(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <key>`` metadata."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        metadata = dict(details.invocation_metadata or ())
        try:
            check_bearer(metadata.get("authorization"), self.api_key)
        except Unauthorized as e:
            message = str(e)

            def refuse(request: Any, context: grpc.ServicerContext) -> None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            return grpc.unary_unary_rpc_method_handler(refuse)
        return continuation(details)


def make_grpc_server(
    address: str,
    store: ModelStore,
    batcher: Batcher,
    max_rows: int,
    max_message_bytes: int,
    api_key: str | None = None,
) -> tuple[grpc.Server, int]:
    """A started-ready gRPC server and the port it bound (0 picks a free one)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
        interceptors=[BearerAuth(api_key)] if api_key else None,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(store, batcher, max_rows), server
    )
    port = server.add_insecure_port(address)
    return server, port
