"""tfsft: supervised fine-tuning of pretrained language models with Keras 3 and TF.

The public Python API. Each step returns plain Keras / keras-hub objects, so a script
can stop at any point and call ``model.fit`` itself::

    import tfsft
    cfg = tfsft.load_config("configs/quickstart.yaml", ["train.epochs=1"])
    run = tfsft.train(cfg)              # Run(dir, config, labels, model, metrics)
    tfsft.predict(run, ["what a lovely film"])
    tfsft.evaluate(run.dir, split="validation")

Building blocks: `get_task` (the task object: labels, encoding, head, report),
`load_splits`, `prepare_data`, `resolve_preset`, `make_dataset`, `build_model`,
`compile_model`, `make_callbacks`, `make_optimizer`, `count_params`; PEFT on
any keras-hub model: `apply_peft`, `merge_lora`, `load_adapter`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Keras reads the backend once, at its first import; tfsft is TensorFlow-only.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tfsft.config import ExperimentConfig, load_config
from tfsft.errors import ConfigError, DataError, TfsftError

__version__ = "0.1.0"

# Heavy names (they import TensorFlow) load on first use, so `tfsft config ...` and
# `import tfsft` stay fast.
_LAZY = {
    "train": "tfsft.training.trainer",
    "compile_model": "tfsft.training.build",
    "predict": "tfsft.evaluation.inference",
    "evaluate": "tfsft.evaluation.inference",
    "Run": "tfsft.runs",
    "load_run": "tfsft.runs",
    "prepare_data": "tfsft.training.prepare",
    "get_task": "tfsft.tasks",
    "load_splits": "tfsft.data.splits",
    "make_dataset": "tfsft.data.pipeline",
    "resolve_preset": "tfsft.models.backbones",
    "build_model": "tfsft.models.build",
    "count_params": "tfsft.models.freeze",
    "apply_peft": "tfsft.models.peft",
    "merge_lora": "tfsft.models.peft",
    "load_adapter": "tfsft.models.peft.adapter_io",
    "make_callbacks": "tfsft.training.callbacks",
    "make_optimizer": "tfsft.training.optim",
    "export_model": "tfsft.export.saved_model",
    "generate": "tfsft.evaluation.generate",
}

__all__ = [
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "TfsftError",
    "load_config",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfsft' has no attribute {name!r}")
