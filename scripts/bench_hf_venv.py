"""The HF runners' own venv: torch (CPU), transformers, TRL, PEFT; apart from tfsft.

PyPI's ``torch`` wheel declares the CUDA runtime (``nvidia-*`` wheels, ``triton``,
several GB) as dependencies, and download.pytorch.org, home of the CPU-only builds, may
be unreachable. So torch is installed with ``--no-deps`` (pip takes a local
``torch-X+cpu`` wheel when its configured ``find-links`` offers one, PyPI's wheel
otherwise), then its pure-Python requirements without the CUDA ones, then
transformers and accelerate (the Trainer needs it), TRL and PEFT (the causal-LM
mode's SFTTrainer with LoRA), pinned to the versions the benchmark was written for.
Whether that torch imports and multiplies on the CPU is checked before the venv is
used.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

TORCH = "torch==2.13.0"
HF_PACKAGES = [
    "transformers==5.24.0",
    "accelerate==1.15.0",
    "trl==1.16.0",
    "peft==0.21.2",
]
# Written into venvs this script made, so that it only ever rebuilds its own.
MARKER = ".tfsft-bench-venv"
# Requirements of the torch wheel that only its CUDA build needs.
_CUDA_REQUIREMENT = re.compile(r"^(nvidia-|triton|cuda-|cusparselt)", re.IGNORECASE)

_SMOKE = (
    "import torch, transformers, accelerate, trl, peft; "
    "x = torch.ones(64, 64); assert float((x @ x)[0, 0]) == 64.0; "
    "print(f'torch {torch.__version__}, transformers {transformers.__version__}, "
    "trl {trl.__version__}, peft {peft.__version__}')"
)
_LIST_TORCH_REQUIRES = (
    "import importlib.metadata as m; print('\\n'.join(m.requires('torch') or []))"
)


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def check_venv(venv: Path) -> str | None:
    """The torch and transformers versions if the venv works, else None."""
    python = python_of(venv)
    if not python.is_file():
        return None
    done = subprocess.run(
        [str(python), "-c", _SMOKE], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_requirements(requires: list[str]) -> list[str]:
    """torch's requirement strings minus extras and the CUDA runtime wheels."""
    kept = []
    for line in requires:
        requirement, _, marker = line.partition(";")
        requirement = requirement.strip()
        if not requirement or "extra ==" in marker or "extra==" in marker:
            continue
        if _CUDA_REQUIREMENT.match(requirement):
            continue
        # The marker (python_version, platform) still applies; pip evaluates it.
        kept.append(
            f"{requirement}; {marker.strip()}" if marker.strip() else requirement
        )
    return kept


def ensure_hf_venv(
    venv: Path, log_file: Path, say: Callable[[str], None]
) -> tuple[Path | None, str]:
    """Creates (or reuses) the venv; returns (its python or None, what happened).

    pip's output goes to ``log_file``. A failure returns None and a message naming
    the step, so the caller can skip the HF row and go on.
    """
    found = check_venv(venv)
    if found:
        return python_of(venv), f"reused {venv} ({found})"
    if venv.exists() and not (venv / MARKER).is_file():
        return None, (
            f"hf venv: {venv} exists but is not a working torch + transformers venv, "
            "and this script did not make it, so it is left alone; remove it or pass "
            "another --hf-venv"
        )
    start = time.perf_counter()
    with log_file.open("a", encoding="utf-8") as log:
        failed = _install(venv, log, say)
    if failed:
        return None, f"hf venv: `{failed}` failed; see {log_file}"
    found = check_venv(venv)
    seconds = time.perf_counter() - start
    if not found:
        # PyPI's (CUDA) torch wheel fails here with e.g. "libcudnn.so.9: cannot open
        # shared object file": its CUDA libraries come only with the nvidia-* wheels.
        return None, (
            f"hf venv: torch does not import and run on this CPU after installing "
            f"({seconds:.0f} s). PyPI's torch wheel needs the CUDA wheels this script "
            "leaves out: put a torch==2.13.0+cpu wheel on pip's find-links, install "
            f"the full CUDA build yourself ({venv}/bin/pip install {TORCH}, several "
            f"GB), or pass --hf-venv PATH to a working venv; see {log_file}"
        )
    return python_of(venv), f"installed {venv} in {seconds:.0f} s ({found})"


def _install(venv: Path, log: IO[str], say: Callable[[str], None]) -> str | None:
    """Runs the install steps; returns the failed step's command, or None."""

    def run(command: list[str]) -> bool:
        shown = " ".join(command)
        say(f"hf venv: {shown}")
        log.write(f"$ {shown}\n")
        log.flush()
        return (
            subprocess.run(command, stdout=log, stderr=log, check=False).returncode == 0
        )

    python = str(python_of(venv))
    pip = [python, "-m", "pip", "install", "--quiet"]
    create = [sys.executable, "-m", "venv", "--clear", str(venv)]
    if not run(create):
        return " ".join(create)
    (venv / MARKER).write_text("made by scripts/benchmark.py\n")
    if not run([*pip, "--no-deps", TORCH]):
        return f"pip install --no-deps {TORCH}"
    listed = subprocess.run(
        [python, "-c", _LIST_TORCH_REQUIRES],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        log.write(listed.stderr)
        return "importlib.metadata.requires('torch')"
    packages = [*cpu_requirements(listed.stdout.splitlines()), *HF_PACKAGES]
    if not run([*pip, *packages]):
        return "pip install " + " ".join(packages)
    return None
