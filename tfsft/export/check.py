"""`tfsft export --check`: what each signature of a SavedModel needs to load and run.

A SavedModel loads all of its functions at once, so one signature that uses a custom
op (here: the tensorflow-text tokenizer ops) makes the whole model unloadable on a
server without those ops, including its core-ops-only signatures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfsft.errors import TfsftError


def check_export(path: str | Path) -> dict[str, Any]:
    """Each signature's inputs, outputs and non-core ops, and what loading needs."""
    meta = _read(Path(path))
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    nodes = {n.name: n for n in meta.graph_def.node}
    signatures: dict[str, Any] = {}
    needed: set[str] = set()
    for key, sig in sorted(meta.signature_def.items()):
        if key.startswith("__"):
            continue
        ops: set[str] = set()
        for info in sig.outputs.values():
            node = nodes.get(info.name.split(":")[0])
            if node is not None:
                _collect(node, library, ops, set())
        custom = sorted(op for op in ops if not hasattr(tf.raw_ops, op))
        needed.update(custom)
        signatures[key] = {
            "inputs": {k: _spec(v) for k, v in sig.inputs.items()},
            "outputs": {k: _spec(v) for k, v in sig.outputs.items()},
            "non_core_ops": custom,
        }
    if needed:
        requires = (
            "the tensorflow-text ops (Python: `import tensorflow_text` before "
            "tf.saved_model.load; TF Serving: a build with tensorflow-text ops) to "
            "load any signature at all; export with --tokens-only for a core-ops-only "
            "model"
        )
    else:
        requires = "core TensorFlow only; any TF Serving build loads it"
    return {"path": str(path), "signatures": signatures, "requires": requires}


def _read(path: Path) -> Any:
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise TfsftError(f"{path}: no saved_model.pb; not a SavedModel directory")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception:  # protobuf raises DecodeError subclasses of various bases
        raise TfsftError(f"{pb}: not a valid SavedModel protobuf") from None
    return proto.meta_graphs[0]


def _collect(node: Any, library: dict[str, Any], ops: set[str], seen: set[str]) -> None:
    """Adds the ops a node runs, following function calls into the library."""
    called = [node.op] if node.op in library else []
    for attr in node.attr.values():
        if attr.HasField("func"):
            called.append(attr.func.name)
        called.extend(f.name for f in attr.list.func)
    if node.op not in library:
        ops.add(node.op)
    for name in called:
        if name in seen or name not in library:
            continue
        seen.add(name)
        for inner in library[name].node_def:
            _collect(inner, library, ops, seen)


def _spec(info: Any) -> dict[str, Any]:
    dims = [d.size for d in info.tensor_shape.dim]
    return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": dims}
