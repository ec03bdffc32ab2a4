"""Adapter-only saves: the weights a PEFT method trained, without the base model.

``<run>/adapter/`` holds ``adapter.json`` (the base preset it loads onto, the
task, the method and its options, each weight's path and shape), ``config.yaml``
and ``labels.json`` (to rebuild the head), and ``adapter.weights.npz``: the
model's trainable weights (the method's own plus the task head and any
``also_train`` layers), in ``model.trainable_weights`` order, which a model
built from the same config repeats. A few MB for LoRA r 8 on MiniLM or SmolLM2.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import yaml

from tfsft.config import ExperimentConfig, config_to_yaml, validate_config
from tfsft.data.labels import LabelSpec
from tfsft.errors import TfsftError

ADAPTER_FILE = "adapter.json"
WEIGHTS_FILE = "adapter.weights.npz"


def save_adapter(
    model: keras.Model, folder: Path, cfg: ExperimentConfig, labels: LabelSpec
) -> int:
    """Writes ``model``'s trainable weights and what rebuilds them into ``folder``
    (written beside it, then renamed into place). Returns the bytes written."""
    weights = model.trainable_weights
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.savez(tmp / WEIGHTS_FILE, *[np.asarray(w.numpy()) for w in weights])
    meta = {
        "format": 1,
        "base_preset": cfg.model.preset,
        "task": cfg.task,
        "peft": cfg.peft.model_dump(mode="json"),
        "trainable_params": sum(math.prod(w.shape) for w in weights),
        "weights": [{"path": w.path, "shape": list(w.shape)} for w in weights],
    }
    (tmp / ADAPTER_FILE).write_text(json.dumps(meta, indent=2))
    (tmp / "config.yaml").write_text(config_to_yaml(cfg))
    labels.save(tmp / "labels.json")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return sum(f.stat().st_size for f in folder.iterdir())


def read_adapter(folder: Path) -> tuple[ExperimentConfig, LabelSpec, dict[str, Any]]:
    """The config, labels and metadata of an adapter folder."""
    folder = Path(folder)
    meta_file = folder / ADAPTER_FILE
    if not meta_file.is_file():
        raise TfsftError(f"{folder}: not a tfsft adapter (no {ADAPTER_FILE})")
    config_file = folder / "config.yaml"
    cfg = validate_config(yaml.safe_load(config_file.read_text()), str(config_file))
    labels = LabelSpec.load(folder / "labels.json")
    return cfg, labels, json.loads(meta_file.read_text())


def load_adapter(folder: str | Path, base_preset: str | None = None) -> keras.Model:
    """Builds the base model (``base_preset``, default the one the adapter names)
    with the task head and the PEFT method, and loads the adapter's weights.

    Raises:
        TfsftError: when the folder is not an adapter, or its weights do not fit
            the model built from its config (another base, another method).
    """
    from tfsft.models.build import build_model

    folder = Path(folder)
    cfg, labels, meta = read_adapter(folder)
    if base_preset is not None:
        cfg = cfg.model_copy(
            update={"model": cfg.model.model_copy(update={"preset": base_preset})}
        )
    model = build_model(cfg.model, labels, cfg.task, cfg.peft)
    load_adapter_weights(model, folder, meta)
    return model


def load_adapter_weights(
    model: keras.Model, folder: Path, meta: dict[str, Any] | None = None
) -> None:
    """Assigns an adapter's weights to ``model``'s trainable weights, in order."""
    meta = meta or json.loads((Path(folder) / ADAPTER_FILE).read_text())
    saved = np.load(Path(folder) / WEIGHTS_FILE)
    weights = model.trainable_weights
    shapes = [tuple(w.shape) for w in weights]
    expected = [tuple(w["shape"]) for w in meta["weights"]]
    if shapes != expected:
        raise TfsftError(
            f"{folder}: the adapter's {len(expected)} weights do not fit this "
            f"model's {len(shapes)} trainable weights (base "
            f"{meta['base_preset']}, method {meta['peft']['method']}); load it onto "
            "the base preset and method it was trained with"
        )
    for i, variable in enumerate(weights):
        variable.assign(saved[f"arr_{i}"])
