"""What a run ran on, recorded in its run dir as ``environment.json``.

Recorded by the training process itself: a report regenerated later, elsewhere,
must describe the machine the run trained on, not the one re-reporting it.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tfsft.runs import read_status, write_json

ENVIRONMENT = "environment.json"


def record_environment(run_dir: Path) -> dict[str, Any]:
    """Writes environment.json: versions, CPU, accelerators, precision, strategy.

    Called in the training process, after training (status.json then still holds
    the strategy and replicas the trainer recorded at the start)."""
    status = read_status(run_dir)
    env = {
        "python": platform.python_version(),
        **{name: _version(name) for name in ("tensorflow", "keras", "keras-hub")},
        "tfsft": _version("tfsft"),
        "platform": platform.platform(),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "accelerators": _accelerators(str(status.get("strategy", ""))),
        "precision": status.get("precision"),
        "strategy": status.get("strategy"),
        "replicas": status.get("replicas"),
    }
    write_json(run_dir / ENVIRONMENT, env)
    return env


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _accelerators(strategy: str) -> str:
    if "TPU" in strategy:
        return "TPU"
    tf = sys.modules.get("tensorflow")  # only look if training loaded it
    if tf is None:
        return "unknown"
    names = [
        tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")
    ]
    # TensorFlow places ops on the first visible GPU on its own.
    return ", ".join(names) or "none (CPU)"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
