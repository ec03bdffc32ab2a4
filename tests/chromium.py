"""Headless Chromium for tests: does an HTML page load cleanly in a real browser?

No Python browser driver is needed: a checking script is injected into a copy of
the page; on load it decodes every image and writes a JSON verdict into the DOM,
which ``--dump-dom`` prints. Console messages (uncaught errors among them) come
from Chromium's own log on stderr. Chromium runs as root here, so ``--no-sandbox``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 90

# Injected first in <head>, so it also sees errors from the page's own scripts.
# console.error is recorded, not printed, so the page's errors land in the verdict.
# Images are decoded with createImageBitmap: img.decode() of an image in the
# document waits for a frame that --dump-dom may never paint (it hung here).
_CHECK = """<script>
(() => {
  const errors = [];
  window.addEventListener("error", (e) => {
    if (e.target === window) errors.push(String(e.message));
  }, true);
  console.error = (...args) => errors.push(args.map(String).join(" "));
  window.addEventListener("load", async () => {
    const images = [...document.images];
    const broken = [];
    for (const img of images) {
      try {
        const bitmap = await createImageBitmap(img);  // decodes every pixel
        if (!(img.naturalWidth > 0 && bitmap.width > 0)) {
          broken.push(img.alt || "(no alt)");
        }
      } catch (e) {
        broken.push(img.alt || "(no alt)");
      }
    }
    const resources = performance.getEntriesByType("resource").map((r) => r.name);
    const pre = document.createElement("pre");
    pre.id = "tfsft-verdict";
    pre.textContent = JSON.stringify({images: images.length, broken, errors, resources});
    document.body.appendChild(pre);
  });
})();
</script>"""
_VERDICT = re.compile(r'<pre id="tfsft-verdict">(.*?)</pre>', re.S)
# Chromium logs every console message (any level) as "...:CONSOLE:<line>]" or,
# in older versions, "...:CONSOLE(<line>)]".
_CONSOLE = re.compile(r":CONSOLE[:(]")


@dataclass
class PageCheck:
    images: int  # <img> elements on the page
    broken: list[str]  # alt texts of images that did not decode
    errors: list[str]  # uncaught errors and console.error calls
    console: list[str]  # console lines in Chromium's log
    resources: list[str]  # what the page fetched beyond itself (URLs)

    @property
    def ok(self) -> bool:
        return not (self.broken or self.errors or self.console or self.resources)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], work: Path) -> subprocess.CompletedProcess:
    browser = find_chromium()
    assert browser is not None, "chromium is not installed"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # A profile of its own: parallel test workers must not share one.
        f"--user-data-dir={work / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def check_page(page: Path, work: Path) -> PageCheck:
    """Loads a checked copy of ``page`` (written into ``work``) and reports."""
    text = page.read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", text)
    at = head.end() if head else 0
    checked = work / f"checked-{page.name}"
    checked.write_text(text[:at] + _CHECK + text[at:], encoding="utf-8")
    done = _run(
        [
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",  # load, decode, then dump
            "--dump-dom",
            checked.resolve().as_uri(),
        ],
        work,
    )
    found = _VERDICT.search(done.stdout)
    assert found, (
        f"no verdict in Chromium's DOM (exit {done.returncode}):\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    verdict = json.loads(html.unescape(found.group(1)))
    console = [line for line in done.stderr.splitlines() if _CONSOLE.search(line)]
    return PageCheck(
        verdict["images"],
        verdict["broken"],
        verdict["errors"],
        console,
        verdict["resources"],
    )


def screenshot(page: Path, png: Path, work: Path, size: str = "1280,4000") -> None:
    """Renders ``page`` into ``png`` at ``size`` (width,height) pixels."""
    done = _run(
        [
            "--hide-scrollbars",
            f"--window-size={size}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        work,
    )
    assert png.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr}"
