"""The bad-input corpus: every broken config or data file is a clear one-line error.

Each folder under tests/data/bad/ is one case:

- ``config.yaml`` (relative data paths, resolved against the case folder) and the
  data file(s) it names;
- ``expected.txt``: ``#`` lines describe the case; every other line is a substring
  the error message must contain (file, ``line N`` / ``record N``, field, phrase);
- ``command.txt`` (optional): the CLI arguments, one per line; default
  ``train config.yaml``;
- ``xfail.txt`` (optional): a known bug outside the data/config modules, with where
  to fix it; the case is a strict xfail until then.

The run goes through the CLI in a temporary copy of the folder, so a case can never
leave a run dir in the repo, and training itself is stubbed out: every case must
stop on its input before a model is built.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tfsft.cli import app

BAD = Path(__file__).parent / "data" / "bad"
CASES = sorted(p.name for p in BAD.iterdir() if p.is_dir())
TEN_MB = 10 * 2**20

runner = CliRunner()


def _write_ten_mb_line(folder: Path) -> None:
    # Prose without newlines: what a file whose line breaks were lost, or a whole
    # document pasted into one cell, looks like to the reader.
    words = "the film was slow but the acting carried it, mostly. "
    text = (words * (TEN_MB // len(words) + 1))[:TEN_MB].replace(",", ";")
    (folder / "train.csv").write_text(f"text,label\n{text},pos\n", encoding="utf-8")


# Cases whose data is too big to commit; written into the temporary copy.
GENERATED: dict[str, Callable[[Path], None]] = {
    "ten_mb_single_line": _write_ten_mb_line
}


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def _param(case: str):
    reason = " ".join(_lines(BAD / case / "xfail.txt"))
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(case, marks=marks, id=case)


def test_corpus_is_complete_and_small():
    assert len(CASES) >= 28
    for case in CASES:
        folder = BAD / case
        assert (folder / "config.yaml").is_file(), case
        assert _lines(folder / "expected.txt"), f"{case}: no expected substrings"
        assert (folder / "expected.txt").read_text().startswith("#"), (
            f"{case}: expected.txt should start with a '#' line saying what it tests"
        )
    files = [p for p in BAD.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files) < 20_000
    assert sum(p.stat().st_size for p in files) < 200_000


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails loudly (exit 3) if a case gets past input validation."""
    # Loading the model is the first step after the data checks (prepare_data).
    import tfsft.training.prepare as prepare

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input was accepted and training was about to start")

    monkeypatch.setattr(prepare, "resolve_preset", refuse)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_one_clear_error(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_training: None
):
    folder = tmp_path / case
    shutil.copytree(BAD / case, folder)
    if case in GENERATED:
        GENERATED[case](folder)
    monkeypatch.chdir(folder)
    args = _lines(folder / "command.txt") or ["train", "config.yaml"]

    start = time.perf_counter()
    result = runner.invoke(app, args)
    seconds = time.perf_counter() - start

    output = result.output
    # An exception escaping the CLI's handler also ends with exit code 1 in CliRunner.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{output}"
    )
    assert result.exit_code == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    starts = [i for i, line in enumerate(output.splitlines()) if "error:" in line]
    assert len(starts) == 1 and output.splitlines()[starts[0]].startswith("error: "), (
        output
    )
    message = "\n".join(output.splitlines()[starts[0] :]).removeprefix("error: ")
    message_lines = message.strip().splitlines()
    if len(message_lines) > 1:
        # Only config validation reports several problems, one per line, each with
        # its own location.
        for line in message_lines:
            assert re.match(r"(config\.yaml: line \d+|--set): ", line), message
    for expected in _lines(folder / "expected.txt"):
        assert expected in message, f"missing {expected!r} in:\n{message}"
    if case in GENERATED:
        assert seconds < 10, f"{case} took {seconds:.1f}s"
