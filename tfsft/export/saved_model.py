"""Exporting a trained run as a versioned SavedModel that takes raw text.

``saved_models/NAME/<version>/`` is the layout TF Serving polls. Each version holds:
- the SavedModel with the task's signatures: ``serving_default`` (raw strings in,
  decoded outputs such as label names out) and ``serve_tokens`` (token tensors in,
  logits out);
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
from typing import Any

import tensorflow as tf

from tfsft.config import config_to_yaml
from tfsft.data.labels import LabelSpec
from tfsft.errors import TfsftError
from tfsft.export.card import write_model_card
from tfsft.models.peft import peft_state
from tfsft.progress import stage
from tfsft.runs import Run, load_run
from tfsft.tasks import get_task


class ServingModule(tf.Module):
    """What the SavedModel tracks: the Keras model, the preprocessor and the assets.

    The signatures (the task's, see `tfsft.tasks`) capture the model and the
    preprocessor; tracking them here saves their variables and lookup tables.
    """

    def __init__(self, run: Run, assets: dict[str, Path], with_text: bool) -> None:
        super().__init__()
        self.model = saved_model_of(run.model)
        # Tracked assets are copied into <export>/assets/ and listed in the graph.
        self.assets = {k: tf.saved_model.Asset(str(p)) for k, p in assets.items()}
        if with_text:
            self.preprocessor = run.model.preprocessor


def export_model(
    run: Run | str | Path,
    name: str,
    out: str | Path = "saved_models",
    version: int | None = None,
    force: bool = False,
    tokens_only: bool = False,
    merge: bool = True,
) -> Path:
    """Writes ``out/name/<version>/`` atomically and returns its path.

    Args:
        run: a trained run (or its directory).
        name: the model name (one path component: letters, digits, ``._-``).
        out: the model base directory.
        version: the integer version; default: one above the highest present.
        force: replace an existing version (otherwise that is an error).
        tokens_only: write the core-ops-only variant (``serve_tokens`` only).
        merge: export a LoRA run with its factors merged into the kernels (the
            run's saved model; no LoRA ops in the graph). False: the base
            weights and the LoRA layers apart, as trained (``--no-merge``).

    Raises:
        TfsftError: bad name, existing version without ``force``, unwritable dir.
    """
    _check_name(name)
    run = (
        run
        if isinstance(run, Run) and run.model is not None
        else load_run(run.dir if isinstance(run, Run) else run)
    )
    if not merge:
        run = _unmerged(run)
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


def _unmerged(run: Run) -> Run:
    """The run's model with LoRA apart: its base preset plus its adapter."""
    from tfsft.models.peft.adapter_io import load_adapter

    if run.config.peft.method != "lora":
        raise TfsftError(
            f"--no-merge: only LoRA merges into the base weights; this run's "
            f"peft.method is {run.config.peft.method}, exported as trained"
        )
    model = load_adapter(run.dir / "adapter")
    model.preprocessor = run.model.preprocessor
    return Run(run.dir, run.config, run.labels, model=model, metrics=run.metrics)


class TrimPadding:
    """The preprocessor, with the padding columns that no row of the batch uses cut
    off its outputs.

    The preprocessor pads every text to ``model.sequence_length``; a sentence
    classifier's outputs do not depend on masked padding (attention and pooling
    skip it), so the raw-text signature computes the same predictions (up to float
    rounding) on the batch's own length: for short sentences a fraction of the
    work. Only for tasks that declare ``serving_trims_padding`` (the sequence tasks:
    classification, multi-label, regression), whose outputs hold no per-token
    dimension.
    """

    def __init__(self, preprocessor: Any) -> None:
        self.preprocessor = preprocessor

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return trim_padding(self.preprocessor(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.preprocessor, name)


def trim_padding(features: Any) -> Any:
    """``features`` (token tensors [batch, length] with a ``padding_mask``) cut
    after the last column any row uses. Left-padded rows use the last column:
    nothing is cut then.

    Cut exactly, not rounded up to a multiple of 8 as first built: a new
    (batch, length) shape costs the CPU kernels nothing measurable, while rounding
    a 17-token sentence up to 24 cost a third of the throughput (MiniLM, batch
    64: 338 against 222 sentences/s; docs/serving.md).
    """
    used = tf.reduce_any(tf.cast(features["padding_mask"], tf.bool), axis=0)
    full = tf.shape(used)[0]
    last = tf.reduce_max(tf.where(used, tf.range(1, full + 1), 0))
    length = tf.minimum(tf.maximum(last, 1), full)
    return {k: v[:, :length] for k, v in features.items()}


def saved_model_of(model: Any) -> Any:
    """The model to save: the one a training wrapper holds (the causal LM's
    `SFTCausalLM`, which Keras cannot serialise), else the model itself."""
    return getattr(model, "causal_lm", model)


def next_version(base: Path) -> int:
    """One above the highest integer-named subdirectory of ``base`` (1 if none)."""
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _write_export(run: Run, target: Path, tokens_only: bool) -> None:
    staging = target / ".staging"
    staging.mkdir()
    with_text = not tokens_only
    # Steps: trace the signatures, write the SavedModel, (the Keras forms).
    with stage("exporting", 2 if tokens_only else 3, "steps") as progress:
        task = get_task(run.config)
        preprocessor = run.model.preprocessor
        if with_text and task.serving_trims_padding:
            preprocessor = TrimPadding(preprocessor)
        signatures = task.serving_signatures(
            run.model, preprocessor, run.labels, run.config, with_text
        )
        assets = _write_assets(run, staging, signatures)
        module = ServingModule(run, assets, with_text=with_text)
        progress.advance(1)
        model = saved_model_of(run.model)
        # A model fresh from training still holds its optimizer, whose slots (and
        # list of trained variables: LoRA's, before merging) the SavedModel would
        # otherwise carry along: twice the weights, none of them served.
        optimizer, model.optimizer = model.optimizer, None
        if hasattr(model, "_delete_tracking"):  # None alone leaves TF's dependency
            model._delete_tracking("optimizer")
        try:
            tf.saved_model.save(module, str(target), signatures=signatures)
            shutil.rmtree(staging)
            progress.advance(1)
            if not tokens_only:
                _write_keras(run, model, target / "keras")
                progress.advance(1)
        finally:
            model.optimizer = optimizer


def _write_keras(run: Run, model: Any, keras_dir: Path) -> None:
    """The Keras forms beside the SavedModel: the run's preset, and the model as a
    .keras file; an unmerged PEFT model (re-wired keras-hub layers, which a .keras
    file cannot describe) has its adapter folder instead, to load onto the preset
    with `tfsft.load_adapter`."""
    keras_dir.mkdir()
    state = peft_state(model)
    if state is not None and not state.merged:
        shutil.copytree(run.dir / "adapter", keras_dir / "adapter")
    else:
        model.save(str(keras_dir / "model.keras"))
    shutil.copytree(run.dir / "model", keras_dir / "preset")


def _write_assets(
    run: Run, folder: Path, signatures: dict[str, Any]
) -> dict[str, Path]:
    tokenizer = run.model.preprocessor.tokenizer
    paths = {
        "labels": folder / "labels.json",
        "vocab": folder / "vocab.txt",
        "config": folder / "config.yaml",
        "card": folder / "README.md",
    }
    paths["labels"].write_text(json.dumps(_label_asset(run.labels), indent=2))
    paths["vocab"].write_text("\n".join(tokenizer.get_vocabulary()) + "\n")
    paths["config"].write_text(config_to_yaml(run.config))
    write_model_card(paths["card"], run, signatures)
    task = get_task(run.config)
    for name, text in task.serving_assets(
        run.model, run.model.preprocessor, run.config
    ).items():
        paths[Path(name).stem] = folder / name
        paths[Path(name).stem].write_text(text)
    return paths


def _label_asset(labels: LabelSpec) -> dict:
    data = {"task": labels.task, "names": list(labels.names)}
    return data | ({"scheme": labels.scheme} if labels.scheme else {})


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
