"""Exporting a trained run as a versioned SavedModel that takes raw text.

``saved_models/NAME/<version>/`` is the layout TF Serving polls. Each version holds:
- the SavedModel: ``serving_default`` (raw strings in, label names out) and
  ``serve_tokens`` (token tensors in, logits out);
- ``assets/``: ``labels.json``, ``vocab.txt``, ``config.yaml`` and the model card
  ``README.md``;
- ``keras/``: ``model.keras`` and a keras-hub preset dir, for reuse from Python.

The tokenizer runs inside the graph (tensorflow-text ops), so a server needs those
ops registered even to load the model; ``tokens_only=True`` writes a core-ops-only
SavedModel with just ``serve_tokens`` and the vocabulary for client-side tokenization.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from tfsft.config import config_to_yaml
from tfsft.errors import TfsftError
from tfsft.export.card import write_model_card
from tfsft.runs import Run, load_run

TEXT_SIGNATURE = "serving_default"
TOKENS_SIGNATURE = "serve_tokens"


class ServingModule(tf.Module):
    """The exported graph: preprocessor + Keras model + decoding of the outputs."""

    def __init__(self, run: Run, assets: dict[str, Path], with_text: bool) -> None:
        super().__init__()
        cfg = run.config
        self.model = run.model
        self.task = cfg.task
        self.threshold = cfg.evaluate.threshold
        self.delimiter = cfg.data.label_delimiter
        self.label_names = tf.constant(list(run.labels.names) or [""])
        # Tracked assets are copied into <export>/assets/ and listed in the graph.
        self.assets = {k: tf.saved_model.Asset(str(p)) for k, p in assets.items()}
        if with_text:
            self.preprocessor = run.model.preprocessor

    def logits(self, token_ids: tf.Tensor, segment_ids: tf.Tensor, mask: tf.Tensor):
        features = {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": mask,
        }
        return tf.cast(self.model(features, training=False), tf.float32)

    def decode(self, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-task outputs, each with the batch as its first dimension.

        TF Serving's row format ("instances" -> "predictions") needs every output to
        share the batch dimension, so multilabel names come as one joined string.
        """
        if self.task == "regression":
            return {"value": logits[:, 0]}
        if self.task == "classification":
            probs = tf.nn.softmax(logits, axis=-1)
            ids = tf.argmax(probs, axis=-1, output_type=tf.int32)
            labels = tf.gather(self.label_names, ids)
            return {"probabilities": probs, "label_ids": ids, "labels": labels}
        probs = tf.sigmoid(logits)
        hot = probs >= self.threshold
        names = tf.broadcast_to(self.label_names, tf.shape(hot))
        joined = tf.strings.reduce_join(
            tf.ragged.boolean_mask(names, hot), axis=-1, separator=self.delimiter
        )
        return {
            "probabilities": probs,
            "predictions": tf.cast(hot, tf.int32),
            "labels": joined,
        }

    def text_outputs(self, *segments: tf.Tensor) -> dict[str, tf.Tensor]:
        x = self.preprocessor(x=segments if len(segments) > 1 else segments[0])
        mask = tf.cast(x["padding_mask"], tf.int32)
        return self.decode(self.logits(x["token_ids"], x["segment_ids"], mask))


def build_signatures(module: ServingModule, paired: bool, with_text: bool) -> dict:
    """Concrete functions for ``serving_default`` (raw text) and ``serve_tokens``."""
    ids = tf.TensorSpec([None, None], tf.int32, name="token_ids")
    segs = tf.TensorSpec([None, None], tf.int32, name="segment_ids")
    mask = tf.TensorSpec([None, None], tf.int32, name="padding_mask")

    @tf.function(input_signature=[ids, segs, mask])
    def serve_tokens(token_ids, segment_ids, padding_mask):
        return {"logits": module.logits(token_ids, segment_ids, padding_mask)}

    signatures = {TOKENS_SIGNATURE: serve_tokens.get_concrete_function()}
    if not with_text:
        return signatures
    text = tf.TensorSpec([None], tf.string, name="text")
    if paired:
        pair = tf.TensorSpec([None], tf.string, name="text_pair")

        @tf.function(input_signature=[text, pair])
        def serve_text_pair(text, text_pair):
            return module.text_outputs(text, text_pair)

        signatures[TEXT_SIGNATURE] = serve_text_pair.get_concrete_function()
    else:

        @tf.function(input_signature=[text])
        def serve_text(text):
            return module.text_outputs(text)

        signatures[TEXT_SIGNATURE] = serve_text.get_concrete_function()
    return signatures


def export_model(
    run: Run | str | Path,
    name: str,
    out: str | Path = "saved_models",
    version: int | None = None,
    force: bool = False,
    tokens_only: bool = False,
) -> Path:
    """Writes ``out/name/<version>/`` atomically and returns its path.

    Args:
        run: a trained run (or its directory).
        name: the model name (one path component: letters, digits, ``._-``).
        out: the model base directory.
        version: the integer version; default: one above the highest present.
        force: replace an existing version (otherwise that is an error).
        tokens_only: write the core-ops-only variant (``serve_tokens`` only).

    Raises:
        TfsftError: bad name, existing version without ``force``, unwritable dir.
    """
    _check_name(name)
    run = (
        run
        if isinstance(run, Run) and run.model is not None
        else load_run(run.dir if isinstance(run, Run) else run)
    )
    base = Path(out) / name
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TfsftError(f"--out: cannot create {base}: {e.strerror}") from None
    version = version if version is not None else next_version(base)
    if version < 1:
        raise TfsftError(f"--version: must be a positive integer, got {version}")
    final = base / str(version)
    if final.exists() and not force:
        raise TfsftError(
            f"{final}: version {version} already exists; pass --force to replace it "
            "or omit --version to write the next one"
        )
    # A dot-prefixed, non-numeric temp dir in the same folder: TF Serving ignores it,
    # and the final rename is atomic on one filesystem.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    try:
        _write_export(run, tmp, tokens_only)
        if final.exists():
            old = base / f".old-{version}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def next_version(base: Path) -> int:
    """One above the highest integer-named subdirectory of ``base`` (1 if none)."""
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _write_export(run: Run, target: Path, tokens_only: bool) -> None:
    staging = target / ".staging"
    staging.mkdir()
    assets = _write_assets(run, staging, tokens_only)
    with_text = not tokens_only
    module = ServingModule(run, assets, with_text=with_text)
    paired = run.config.data.text_pair_column is not None
    signatures = build_signatures(module, paired, with_text)
    tf.saved_model.save(module, str(target), signatures=signatures)
    shutil.rmtree(staging)
    if not tokens_only:
        keras_dir = target / "keras"
        keras_dir.mkdir()
        run.model.save(str(keras_dir / "model.keras"))
        shutil.copytree(run.dir / "model", keras_dir / "preset")


def _write_assets(run: Run, folder: Path, tokens_only: bool) -> dict[str, Path]:
    tokenizer = run.model.preprocessor.tokenizer
    paths = {
        "labels": folder / "labels.json",
        "vocab": folder / "vocab.txt",
        "config": folder / "config.yaml",
        "card": folder / "README.md",
    }
    paths["labels"].write_text(
        json.dumps({"task": run.config.task, "names": list(run.labels.names)}, indent=2)
    )
    paths["vocab"].write_text("\n".join(tokenizer.get_vocabulary()) + "\n")
    paths["config"].write_text(config_to_yaml(run.config))
    write_model_card(paths["card"], run, tokens_only)
    return paths


def _check_name(name: str) -> None:
    ok = (
        name
        and name not in (".", "..")
        and all(c.isalnum() or c in "._-" for c in name)
    )
    if not ok:
        raise TfsftError(
            f"--name: {name!r} is not a valid model name; use letters, digits, '.', "
            "'_' and '-' (it becomes one directory)"
        )
