"""Facts about the machine and the software a benchmark ran on."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine_facts() -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
        for line in lscpu.stdout.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    flags = set(info.get("Flags", "").split())
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"]
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "CPU (lscpu)": f"{info.get('Model name', platform.processor() or '?')}, "
        f"family {info.get('CPU family', '?')} model {info.get('Model', '?')}, "
        f"{info.get('CPU(s)', '?')} CPUs, {info.get('Thread(s) per core', '?')} "
        f"thread(s) per core, L2 {info.get('L2 cache', '?')}, "
        f"L3 {info.get('L3 cache', '?')}",
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU flags that matter here": " ".join(f for f in wanted if f in flags)
        + " (absent: "
        + (" ".join(f for f in wanted if f not in flags) or "none")
        + ")",
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "keras-hub", "tensorflow-text"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    git = ["git", "-C", str(REPO)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        versions["tfsft commit"] = head + (" (with local changes)" if dirty else "")
    return versions
