"""Runs the shell commands of README.md and docs/*.md, page by page.

Each page's ```bash blocks, in order, make one bash script (variables such as
``RUN=$(tfsft train ...)`` carry from block to block), run in a temp dir laid out
like the repo root. A block preceded by ``<!-- docs-test: skip: REASON -->`` is not
run (make targets, Docker, hour-long benchmarks) and must say why.

Starting TensorFlow costs seconds per process, and a page holds many ``tfsft``
commands, so bash's ``tfsft`` is a function that hands its argv to a server thread
in the test process, which runs the real Typer app (`tfsft.cli.app`) there, with
TensorFlow already loaded; ``tfsft serve`` is the exception, a real background
process (it must listen), and so are ``python`` scripts other than
docs/examples/*.py, which the server also runs in-process. In that process the
``minilm`` and ``smollm2-135m`` presets resolve to the tiny random models, and
training runs 1 epoch of at most 256 training rows, so a page runs in
seconds; the commands are otherwise exactly the documented ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shutil
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNNABLE = ("bash", "sh")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)```+\s*([\w+-]*)")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip_reason: str | None


def extract_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with their skip markers."""
    blocks, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = match.groups()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(
                lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i]
            )
            i += 1
        i += 1
        previous = next(
            (lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), ""
        )
        skip = SKIP.search(previous)
        blocks.append(
            Block(
                page,
                start + 1,
                language.lower(),
                "\n".join(body),
                skip and skip.group(1),
            )
        )
    return blocks


def needs_shared_data(blocks: list[Block], repo: Path) -> bool:
    """Whether a page's commands read ../shared/data (directly or via a config)."""
    for block in blocks:
        if block.language not in RUNNABLE or block.skip_reason is not None:
            continue
        if "../shared" in block.text:
            return True
        for name in re.findall(r"configs/[\w.-]+\.ya?ml", block.text):
            config = repo / name
            if config.is_file() and "../shared" in config.read_text():
                return True
    return False


def page_script(blocks: list[Block]) -> str:
    """One bash script of a page's runnable blocks, each announced on stderr."""
    parts = [_PRELUDE]
    for block in blocks:
        if block.language not in RUNNABLE or block.skip_reason is not None:
            continue
        where = f"{block.page.name}:{block.line}"
        parts.append(f"echo '### block at {where}' >&2\n{block.text}\n")
    return "\n".join(parts)


_PRELUDE = r"""
set -euo pipefail
SERVE_PIDS=()
# A server is stopped and waited for, so the next page's server gets the port.
stop_servers() {
  for p in "${SERVE_PIDS[@]:-}"; do
    if [ -n "$p" ] && kill "$p" 2>/dev/null; then wait "$p" 2>/dev/null || true; fi
  done
  return 0
}
trap 'status=$?; stop_servers; exit $status' EXIT
# An HTTP error status fails the page, as a failed command does.
curl() { command curl --fail-with-body "$@"; }
tfsft() {
  if [[ "${1:-}" == serve ]]; then
    local port=8501 previous=""
    for word in "$@"; do
      [[ "$previous" == --port ]] && port=$word
      previous=$word
    done
    "$TFSFT_BIN" "$@" >> serve.log 2>&1 &
    SERVE_PIDS+=($!)
    for _ in $(seq 1 240); do
      command curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
      sleep 0.5
    done
    echo "tfsft serve did not answer on port $port" >&2
    cat serve.log >&2
    return 1
  fi
  "$DOCS_PYTHON" "$DOCS_CLIENT" tfsft "$@"
}
python() {
  if [[ "${1:-}" == docs/examples/* ]]; then
    "$DOCS_PYTHON" "$DOCS_CLIENT" python "$@"
  else
    "$DOCS_PYTHON" "$@"
  fi
}
"""

_CLIENT = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["DOCS_SOCKET"])
env = {k: v for k, v in os.environ.items() if k.startswith("TFSFT_")}
request = {"kind": sys.argv[1], "argv": sys.argv[2:], "cwd": os.getcwd(), "env": env}
s.sendall(json.dumps(request).encode())
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
reply = json.loads(data)
sys.stdout.write(reply["stdout"])
sys.stderr.write(reply["stderr"])
sys.exit(reply["code"])
"""


class CommandServer:
    """Runs `tfsft` argv (and docs/examples scripts) in this process, one at a
    time, for the page scripts' ``tfsft`` function."""

    def __init__(self, folder: Path, handle: Any) -> None:
        self.path = folder / "docs.sock"
        self.client = folder / "docs_client.py"
        self.client.write_text(_CLIENT)
        self.handle = handle
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(self.path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                reply = self._run(json.loads(data))
                conn.sendall(json.dumps(reply).encode())

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        cwd, saved_env = os.getcwd(), dict(os.environ)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        try:
            os.chdir(request["cwd"])
            os.environ.update(request["env"])
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = self.handle(request["kind"], request["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            err.write(traceback.format_exc())
            code = 99
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        return {"stdout": out.getvalue(), "stderr": err.getvalue(), "code": code}


def run_in_process(kind: str, argv: list[str]) -> int:
    """What the server runs: the Typer app, or a docs example script."""
    if kind == "python":
        saved = sys.argv
        sys.argv = list(argv)
        try:
            runpy.run_path(argv[0], run_name="__main__")
        finally:
            sys.argv = saved
        return 0
    from typer.testing import CliRunner

    from tfsft.cli import app

    result = CliRunner().invoke(app, argv, prog_name="tfsft")
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.exception and not isinstance(result.exception, SystemExit):
        sys.stderr.write("".join(traceback.format_exception(result.exception)))
        return 99
    return result.exit_code


def make_workdir(root: Path, repo: Path) -> Path:
    """A folder that looks like the repo root to the documented commands."""
    work = root / "repo"
    for name in ("configs", "docs", "scripts"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(repo / name, work / name)
    (work / "tfsft").mkdir()
    os.symlink(repo / "tfsft" / "demo_data", work / "tfsft" / "demo_data")
    shared = repo.parent / "shared"
    if shared.is_dir():
        os.symlink(shared, root / "shared")
    shutil.copy(repo / "Makefile", work / "Makefile")
    return work
