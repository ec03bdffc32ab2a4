"""The run report (report.html, report.md): content, escaping, embedded plots,
re-reporting from a run dir's files, and rendering in headless Chromium.

One tiny classification run serves the module: its validation (and test) split
holds the same hostile text twice with opposite labels, so exactly one of the two
is always an error and its text must show up escaped in the report.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time
from importlib.metadata import version

import matplotlib.image
import numpy as np
import pytest
from chromium import check_page, find_chromium, screenshot
from conftest import tiny_config, write

import tfsft
from tfsft.config import validate_config
from tfsft.errors import TfsftError
from tfsft.evaluation import report_doc as doc
from tfsft.evaluation.report import plot_lengths
from tfsft.evaluation.run_report import finish_report, write_run_report

HOSTILE = "<script>alert('x')</script> & <b>bold</b> | pipe"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["Metrics", "Training", "Validation", "Test", "Environment", "Configuration"]


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rows = [(HOSTILE, "positive"), (HOSTILE, "negative")]
    rows += [("a lovely film", "positive"), ("dull", "negative")]
    dev = write(
        root / "dev.tsv", "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)
    )
    raw = tiny_config(
        "report-test",
        root / "runs",
        data={"validation": str(dev), "test": str(dev), "max_train_examples": 32},
    )
    return tfsft.train(validate_config(raw), verbose=0)


def _images(page: str) -> list[tuple[str, str]]:
    """(src, alt) of every <img> (the renderer writes src before alt)."""
    return re.findall(r'<img src="([^"]*)" alt="([^"]*)">', page)


def _decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
    return pixels


def test_report_holds_every_section_escaped_and_self_contained(report_run):
    run_dir = report_run.dir
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page
    assert "<title>tfsft run report: report-test</title>" in page
    assert re.findall(r"<h2>(.*?)</h2>", page) == SECTIONS
    assert re.findall(r"^## (.*)$", md, re.M) == SECTIONS
    # The header: status, best checkpoint, throughput, parameters.
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    best_text = f"{best['value']:.4f} at epoch {best['epoch']} of 2"
    metrics = report_run.metrics
    for text in (
        "completed",
        f"best {best['monitor']}",
        best_text,
        f"{metrics['train_seconds']:,.1f} s",
        f"{metrics['total_params']:,} trainable of {metrics['total_params']:,}",
    ):
        assert text in page and text in md.replace("\\_", "_")
    # Validation and test metrics side by side, numbers right-aligned.
    row = (
        '<tr><td class="text">accuracy</td>'
        f'<td class="num">{metrics["accuracy"]:.4f}</td>'
        f'<td class="num">{metrics["test_accuracy"]:.4f}</td></tr>'
    )
    assert row in page
    assert "| class | precision | recall | F1 | support |" in md
    # The environment training ran in, and the resolved config verbatim.
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["tensorflow"] == version("tensorflow")
    assert f'<td class="text">{env["keras-hub"]}</td>' in page
    assert env["precision"] == "float32" and env["replicas"] == 1
    assert "name: report-test\ntask: classification\n" in page
    assert "```yaml\nname: report-test\n" in md
    # The hostile error text is escaped, in both files, and nothing can run.
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &lt;b&gt;bold" in md
    assert "\\| pipe" in md and "<script" not in md
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_every_plot_is_an_embedded_png_and_linked_from_the_markdown(report_run):
    run_dir = report_run.dir
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    images = _images(page)
    # curves, token lengths, and a confusion matrix for validation and for test
    assert len(images) == page.count("<img") == 4
    for src, alt in images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix) and alt
        _decode_png(base64.b64decode(src[len(prefix) :], validate=True))
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)
    assert links == [
        "curves.png",
        "token_lengths.png",
        "confusion_matrix.png",
        "test/confusion_matrix.png",
    ]
    for link in links:
        _decode_png((run_dir / link).read_bytes())


def test_an_older_run_is_re_reported_from_its_files(report_run, tmp_path):
    old = tmp_path / "20240102-030405"
    shutil.copytree(report_run.dir, old, ignore=shutil.ignore_patterns("model"))
    for name in ("environment.json", "token_lengths.png", "report.html", "report.md"):
        (old / name).unlink()
    html_path, md_path = write_run_report(old)
    page = html_path.read_text(encoding="utf-8")
    assert md_path.is_file() and page.count("<img") == 3  # no lengths plot
    assert "2024-01-02 03:04:05" in page  # started, from the dir's name
    assert "not recorded for this run (no environment.json)" in page
    # status.json still says what the trainer recorded: precision survives.
    assert '<th scope="row">precision</th><td class="text">float32</td>' in page
    with pytest.raises(TfsftError, match="not a tfsft run dir"):
        write_run_report(tmp_path)


def test_a_failing_plot_costs_only_that_plot(report_run, tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(report_run.dir, run_dir, ignore=shutil.ignore_patterns("model"))
    (run_dir / "token_lengths.png").unlink()

    def broken(*args):
        raise RuntimeError("no fonts")

    monkeypatch.setattr("tfsft.evaluation.run_report.plot_lengths", broken)
    start = time.perf_counter()
    finish_report(run_dir, report_run.history, np.array([3, 5, 8]), 32)
    seconds = time.perf_counter() - start
    assert "could not write the token-length histogram: RuntimeError: no fonts" in (
        caplog.text
    )
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.count("<img") == 3 and "Token lengths" not in page
    assert seconds < 20  # curves and report: well under a second on a laptop


def test_lengths_histogram_and_markdown_escaping(tmp_path):
    plot_lengths(np.array([5, 9, 9, 12, 32, 40]), 32, tmp_path / "lengths.png")
    _decode_png((tmp_path / "lengths.png").read_bytes())
    plot_lengths(np.array([], int), 32, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    assert doc.md_escape("a|b *c* <d>\nnext") == "a\\|b \\*c\\* &lt;d&gt; next"
    code = doc.Code("x", "```\ninside\n```", "text")
    md = doc.render_markdown(doc.Document("t", [doc.Section("s", [code])]), tmp_path)
    assert "````text\n```\ninside\n```\n````" in md  # a longer fence
    assert [doc.format_cell(v) for v in (None, 1234567, 0.5, 12345.678, True)] == [
        "n/a",
        "1,234,567",
        "0.5000",
        "12,345.7",
        "true",
    ]


# ---- a real browser ----------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium not found (Debian: apt-get install chromium; .ci/run does)",
)


@needs_chromium
def test_report_renders_in_chromium_without_errors(report_run, tmp_path):
    page = report_run.dir / "report.html"
    check = check_page(page, tmp_path)
    assert check.images == 4
    assert check.ok, check
    shot = tmp_path / "report.png"
    screenshot(page, shot, tmp_path)
    pixels = _decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels[:800, :, :3].std() > 0.05  # text and tables, not a blank page


@needs_chromium
@pytest.mark.parametrize(
    ("body", "field"),
    [
        # valid base64, but not a PNG
        ('<img src="data:image/png;base64,iVBORw0KGgoAAAAbroken" alt="bad">', "broken"),
        ("<script>throw new Error('boom')</script>", "errors"),
        ("<script>console.error('oops')</script>", "errors"),
        ("<script>console.log('chatty')</script>", "console"),
    ],
)
def test_the_browser_check_catches_a_broken_page(tmp_path, body, field):
    page = write(
        tmp_path / "broken.html",
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head>'
        f"<body><p>page</p>{body}</body></html>",
    )
    check = check_page(page, tmp_path)
    assert not check.ok and getattr(check, field), check
