"""Run directories: ``runs/<name>/<timestamp>/`` and their status.

A run dir holds the resolved ``config.yaml``, ``labels.json``, ``status.json``, the best
checkpoint, resume backups, logs, ``metrics.json`` and the trained model as a keras-hub
preset (``model/``, tokenizer included). Re-running the same config while its latest
run is unfinished (killed, preempted) continues that run instead of starting over.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfsft.config import ExperimentConfig, config_to_yaml, validate_config
from tfsft.data.labels import LabelSpec
from tfsft.errors import TfsftError

STATUS = "status.json"


@dataclass
class Run:
    """A finished (or loaded) run: where it lives and what it produced."""

    dir: Path
    config: ExperimentConfig
    labels: LabelSpec
    model: Any = None  # the task's keras-hub model; None until loaded
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)


def open_run_dir(cfg: ExperimentConfig, resume: bool = True) -> tuple[Path, bool]:
    """Returns (run dir, resumed): this config's unfinished run, or a new one.

    With ``resume=False`` it is always a new one.

    Raises:
        TfsftError: when the output directory cannot be created.
    """
    parent = Path(cfg.train.output_dir) / cfg.name
    resolved = config_to_yaml(cfg)
    candidates = sorted(parent.glob("*/"), reverse=True) if resume else []
    for candidate in candidates:
        status = read_status(candidate)
        # A killed process leaves "running"; a crash (disk full, ...) "failed".
        if status.get("state") not in ("running", "interrupted", "failed"):
            continue
        if _alive(status.get("pid")):
            continue  # someone is training there right now
        config_file = candidate / "config.yaml"
        if config_file.is_file() and config_file.read_text() == resolved:
            return candidate, True
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = parent / stamp
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = parent / f"{stamp}-{n}"
    try:
        run_dir.mkdir(parents=True)
    except OSError as e:
        raise TfsftError(
            f"train.output_dir: cannot create {run_dir}: {e.strerror}"
        ) from None
    (run_dir / "config.yaml").write_text(resolved)
    return run_dir, False


def write_status(run_dir: Path, state: str, **extra: Any) -> None:
    """Atomically records the run state (running | completed | failed | interrupted)."""
    data = {"state": state, "pid": os.getpid(), "time": time.time(), **extra}
    tmp = run_dir / f".{STATUS}.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(run_dir / STATUS)


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: Any) -> None:
    """Writes JSON via a temp file so that readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)


def load_run(run_dir: str | Path, with_model: bool = True) -> Run:
    """Loads a finished run's config, labels and (optionally) its trained model.

    Raises:
        TfsftError: when the directory is not a completed tfsft run.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise TfsftError(f"{run_dir}: not a tfsft run dir (no config.yaml)")
    cfg = validate_config(
        yaml.safe_load(config_file.read_text()), source=str(config_file)
    )
    if not (run_dir / "model" / "task.json").is_file():
        state = read_status(run_dir).get("state", "unknown")
        raise TfsftError(
            f"{run_dir}: has no trained model (run state: {state}); re-run "
            "`tfsft train` with its config to finish it"
        )
    labels = LabelSpec.load(run_dir / "labels.json")
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    model = None
    if with_model:
        from tfsft.tasks import get_task

        with warnings.catch_warnings():
            # The saved preset has no optimizer state, by design; keras warns that
            # the (unused) default optimizer found nothing to load.
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model = get_task(cfg).load_model(
                run_dir / "model", saved_dtype_policy(run_dir / "model")
            )
        model = _reattach_peft(model, cfg, run_dir / "adapter")
    return Run(run_dir, cfg, labels, model=model, metrics=metrics)


def _reattach_peft(model: Any, cfg: ExperimentConfig, adapter_dir: Path) -> Any:
    """The saved preset plus the run's adapter, for methods that are not merged
    (adapters, prompt and prefix tuning; LoRA's preset is already merged)."""
    if cfg.peft.method in ("none", "lora"):
        return model
    from tfsft.models.peft import apply_peft
    from tfsft.models.peft.adapter_io import load_adapter_weights

    apply_peft(model, cfg.peft, cfg.model.sequence_length)
    load_adapter_weights(model, adapter_dir)
    return model


def saved_dtype_policy(preset_dir: Path) -> str | None:
    """The dtype policy a preset's backbone was trained in (None if unrecorded).

    It is passed back to ``from_preset`` explicitly: keras-hub 0.32 otherwise
    rejects a mixed policy name such as ``mixed_bfloat16``, and a model evaluated in
    the precision it was trained and validated in reproduces its metrics.
    """
    try:
        config = json.loads((preset_dir / "config.json").read_text())
        return config["config"]["dtype"]["config"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
