"""Every shell command in README.md and docs/*.md runs (see tests/docs_harness.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED
from docs_harness import (
    RUNNABLE,
    CommandServer,
    extract_blocks,
    make_workdir,
    needs_shared_data,
    page_script,
    run_in_process,
)

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Blocks of shell commands must be ```bash (run) or carry a skip reason; other shell
# spellings would slip past the harness.
SHELL_SPELLINGS = {"console", "shell", "zsh", "shell-session"}


def _runnable(page: Path) -> list:
    return [
        b
        for b in extract_blocks(page)
        if b.language in RUNNABLE and b.skip_reason is None
    ]


def test_shell_blocks_run_or_say_why_not():
    problems = []
    for page in PAGES:
        for block in extract_blocks(page):
            where = f"{page.relative_to(REPO)}:{block.line}"
            if block.language in SHELL_SPELLINGS:
                problems.append(f"{where}: use ```bash (run) or ```text (output)")
            if block.skip_reason is not None and not block.skip_reason.strip():
                problems.append(f"{where}: a docs-test skip needs a reason")
    assert not problems, "\n".join(problems)
    assert sum(len(_runnable(p)) for p in PAGES) >= 10  # the harness finds them


def test_extract_blocks_reads_fences_and_skip_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n```bash\ntfsft --help\n```\n\n<!-- docs-test: skip: needs Docker -->\n"
        "```bash\ndocker run x\n```\n```text\nout\n```\n"
    )
    blocks = extract_blocks(page)
    assert [(b.line, b.language, b.skip_reason) for b in blocks] == [
        (2, "bash", None),
        (7, "bash", "needs Docker"),
        (10, "text", None),
    ]
    script = page_script(blocks)
    assert "tfsft --help" in script and "docker run" not in script


@pytest.fixture(scope="module")
def command_server(tmp_path_factory):
    # minilm / smollm2-135m resolve to the tiny random models, and training runs
    # one epoch of at most 256 rows, in this process only (the commands themselves
    # are unchanged).
    import tfsft.cli
    from tfsft.models import backbones

    folder = tmp_path_factory.mktemp("docs")
    patch = pytest.MonkeyPatch()
    aliases = backbones.preset_aliases()
    patch.setattr(
        backbones,
        "preset_aliases",
        lambda: (
            aliases | {"minilm": aliases["tiny"], "smollm2-135m": aliases["tiny-llama"]}
        ),
    )
    load = tfsft.cli.load_config

    def capped(path, overrides=()):
        cfg = load(path, overrides)
        rows = min(cfg.data.max_train_examples or 256, 256)
        extra = [f"data.max_train_examples={rows}", "train.epochs=1"]
        return load(path, [*overrides, *extra])

    patch.setattr(tfsft.cli, "load_config", capped)
    server = CommandServer(folder, run_in_process)
    yield server
    server.close()
    patch.undo()


@pytest.mark.parametrize(
    "page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name
)
def test_documented_commands_run(page, tmp_path, command_server):
    blocks = extract_blocks(page)
    if needs_shared_data(blocks, REPO) and not SHARED.is_dir():
        pytest.skip(f"{page.name} reads ../shared/data, which is absent")
    work = make_workdir(tmp_path, REPO)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "DOCS_SOCKET": str(command_server.path),
        "DOCS_CLIENT": str(command_server.client),
        "DOCS_PYTHON": sys.executable,
        "TFSFT_BIN": str(bin_dir / "tfsft"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["bash", "-c", page_script(blocks)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"{page.name}: a documented command failed (the last '### block at' line "
        f"says which block)\n--- stderr (tail)\n{proc.stderr[-6000:]}\n"
        f"--- stdout (tail)\n{proc.stdout[-2000:]}"
    )
