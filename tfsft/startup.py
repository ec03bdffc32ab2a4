"""A quiet start-up: TensorFlow's C++ log lines and dependencies' warnings off the
terminal, unless the user asks for them (``--verbose``, or their own
``TF_CPP_MIN_LOG_LEVEL``).

Two kinds of C++ lines reach stderr. Those logged after start-up obey
``TF_CPP_MIN_LOG_LEVEL`` (3 keeps only fatal ones). Those printed while the shared
libraries load do not: absl prints "All log messages before absl::InitializeLog()
is called are written to STDERR" and then, whatever the level, lines such as
``I0000 ... cudart_stub.cc:31] Could not find cuda drivers``. So the first import of
each of those packages runs with file descriptor 2 pointed at /dev/null, through an
import hook, wherever in tfsft (or a user's code) the import happens.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

# Packages whose import loads TensorFlow's shared libraries.
NOISY_IMPORTS = ("tensorflow", "tensorflow_text", "keras", "keras_hub", "tf_keras")
# What a C++ log line looks like, e.g. "E0000 00:00:1796248756.685896 6358 x.cc:52]"
# or "2026-12-02 21:59:20.123456: I tensorflow/...": for tests and filters.
CPP_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )"
    r"|absl::InitializeLog|oneDNN custom operations"
)
# Python warnings from these packages are theirs to fix, not the user's.
_DEPENDENCIES = (
    r"(tensorflow|tensorflow_text|keras|keras_hub|tf_keras|google|absl|h5py|numpy"
    r"|optree|ml_dtypes)(\.|$)"
)


def quiet_startup(verbose: bool = False) -> None:
    """Call before TensorFlow is imported (the CLI does, first thing)."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    warnings.filterwarnings("ignore", module=_DEPENDENCIES)
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return  # the user chose a level: show what it lets through
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if not any(isinstance(f, _SilentImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _SilentImports())


class _SilentImports(importlib.abc.MetaPathFinder):
    """Finds the noisy packages through the normal machinery, then wraps their
    loader so that executing the package (its whole import) is silenced."""

    def __init__(self) -> None:
        self.busy = False

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> Any:
        if name not in NOISY_IMPORTS or self.busy:
            return None
        self.busy = True  # find_spec below consults sys.meta_path, this one too
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _SilentLoader(spec.loader)
        return spec


class _SilentLoader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its real loader (importlib.resources and friends ask it).
        module.__loader__ = self.inner
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        with stderr_to_devnull():
            self.inner.exec_module(module)
        # TensorFlow's and absl's Python loggers: errors only.
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)


class stderr_to_devnull:
    """Points file descriptor 2 at /dev/null for the block (C++ writes there)."""

    def __enter__(self) -> None:
        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
