"""docs/benchmarks.md holds one part per benchmark mode, between marker comments.

A run replaces only its own part, so a classification run keeps the last
token-classification results and the other way round:

    <!-- benchmark:classification -->
    ## Sentence classification
    ...
    <!-- /benchmark:classification -->

Text outside the markers (the title, anything written by hand) is kept as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

# The modes, in the order a new file lists them.
SECTIONS = ("classification", "token_classification", "causal_lm")
HEADER = (
    "# Benchmarks\n"
    "\n"
    "Written by `scripts/benchmark.py`, one part per mode: sentence classification "
    "(`--config configs/sst2_minilm.yaml`, the default), token classification "
    "(`--config configs/conll2003_minilm.yaml`) and causal-LM SFT "
    "(`--config configs/sft_alpaca_smollm2.yaml`). A run replaces only its own "
    "mode's part, between the marker comments, and keeps the rest of this file.\n"
)
_MARKER = re.compile(r"<!-- (/?)benchmark:([\w-]+) -->")


class SectionError(ValueError):
    """The file's markers are broken: writing would lose or garble text."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"


def check_sections(text: str, where: str = "<text>") -> None:
    """Every section opens once, closes once, after it opens, and holds no other.

    Raises:
        SectionError: naming the section and what is wrong with its markers.
    """
    open_name: str | None = None
    seen: set[str] = set()
    for match in _MARKER.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if not closing:
            if open_name is not None:
                raise SectionError(
                    f"{where}: section {name!r} opens inside section {open_name!r}"
                )
            if name in seen:
                raise SectionError(f"{where}: section {name!r} appears twice")
            open_name = name
            seen.add(name)
        elif name != open_name:
            raise SectionError(f"{where}: section {name!r} closes without opening")
        else:
            open_name = None
    if open_name is not None:
        raise SectionError(f"{where}: section {open_name!r} is never closed")


def place_section(
    existing: str | None, name: str, body: str, where: str = "<text>"
) -> str:
    """``existing`` with section ``name`` replaced by ``body`` (or appended to it;
    ``None``: a new file with the header).

    Raises:
        SectionError: ``existing`` has broken markers.
    """
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    if existing is None:
        return f"{HEADER}\n{block}\n"
    check_sections(existing, where)
    if start not in existing:
        return f"{existing.rstrip()}\n\n{block}\n"
    before, rest = existing.split(start, 1)
    return before + block + rest.split(end, 1)[1]


def check_out(path: Path) -> None:
    """Fails before any run when ``path`` could not take a section afterwards.

    Raises:
        SectionError: the file's markers are broken, or it is not a text file.
    """
    if not path.exists():
        return
    try:
        check_sections(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise SectionError(f"{path}: cannot read it as text ({e})") from e


def write_section(path: Path, name: str, body: str) -> str:
    """Replaces section ``name`` of ``path`` with ``body``; returns the whole file.

    Written via a temp file and a rename, so an interrupted write leaves the old
    file whole.
    """
    existing = path.read_text(encoding="utf-8") if path.exists() else None
    text = place_section(existing, name, body, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    # mkstemp makes the file private (0600); a report keeps the old file's mode.
    if existing is None:
        os.chmod(tmp, 0o644)
    else:
        shutil.copymode(path, tmp)
    os.replace(tmp, path)
    return text
