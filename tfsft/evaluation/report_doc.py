"""The run report as a small document model, rendered to HTML and to Markdown.

One model, two renderers, so ``report.html`` and ``report.md`` cannot drift apart.
The HTML is self-contained (CSS inline, every PNG embedded as a base64 data URI,
no script), so it can be mailed or attached as one file; the Markdown links the
PNGs beside it in the run dir. Nothing here reads a run dir: `run_report` builds
the document, and tasks add their own parts (`tfsft.tasks.base.Task.report_parts`).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Table:
    """A titled table; numeric cells are right-aligned and formatted alike."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG in (or under) the run dir, with its alt text."""

    title: str
    path: Path
    alt: str


@dataclass(frozen=True)
class Code:
    """A verbatim block, such as the resolved config."""

    title: str
    text: str
    language: str = ""


@dataclass(frozen=True)
class Text:
    """A plain paragraph."""

    text: str


Part = Table | Figure | Code | Text


@dataclass
class Section:
    title: str
    parts: list[Part] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section]


def format_cell(value: Any) -> str:
    """One cell as text: thousands separators, 4 decimals, "n/a" for None/NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4f}"
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- HTML -----------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:26px;margin:0 0 8px}h2{font-size:20px;margin:32px 0 8px;
border-bottom:1px solid #d0d7de;padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:14px}
th,td{border:1px solid #d0d7de;padding:4px 10px;vertical-align:top;text-align:left}
thead th{background:#f6f8fa}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{max-width:520px;overflow-wrap:anywhere}
table.facts th{background:#f6f8fa;width:220px}
figure{margin:8px 0 16px}img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:13px;color:#59636e}
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:13px;line-height:1.4}
p.note{font-size:13px;color:#59636e;margin:0 0 12px}
"""


def render_html(doc: Document) -> str:
    """The whole document as one self-contained HTML page."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(doc.title)}</h1>",
    ]
    for i, section in enumerate(doc.sections):
        # The first section (the run's facts) sits under the page title.
        if i:
            out.append(f"<h2>{esc(section.title)}</h2>")
        out += [_html_part(part) for part in section.parts]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_part(part: Part) -> str:
    esc = html.escape
    if isinstance(part, Text):
        return f"<p>{esc(part.text)}</p>"
    if isinstance(part, Code):
        title = f"<h3>{esc(part.title)}</h3>" if part.title else ""
        return f"{title}<pre><code>{esc(part.text)}</code></pre>"
    if isinstance(part, Figure):
        data = base64.b64encode(part.path.read_bytes()).decode("ascii")
        return (
            f"<figure><h3>{esc(part.title)}</h3>"
            f'<img src="data:image/png;base64,{data}" alt="{esc(part.alt)}">'
            f"<figcaption>{esc(part.alt)}</figcaption></figure>"
        )
    return _html_table(part)


def _html_table(table: Table) -> str:
    esc = html.escape
    facts = table.columns == ()
    rows = []
    for row in table.rows:
        cells = []
        for j, value in enumerate(row):
            text = esc(format_cell(value))
            if facts and j == 0:
                cells.append(f'<th scope="row">{text}</th>')
            else:
                kind = "num" if _numeric(value) else "text"
                cells.append(f'<td class="{kind}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ""
    if not facts:
        # A column is numeric when its first body cell is: its header aligns too.
        first = table.rows[0] if table.rows else ()
        ths = [
            f'<th class="{"num" if j < len(first) and _numeric(first[j]) else ""}"'
            f' scope="col">{esc(c)}</th>'
            for j, c in enumerate(table.columns)
        ]
        head = "<thead><tr>" + "".join(ths) + "</tr></thead>"
    title = f"<h3>{esc(table.title)}</h3>" if table.title else ""
    note = f'<p class="note">{esc(table.note)}</p>' if table.note else ""
    kind = ' class="facts"' if facts else ""
    body = "<tbody>" + "".join(rows) + "</tbody>"
    return f"{title}<table{kind}>{head}{body}</table>{note}"


# --- Markdown -------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: str) -> str:
    """Text safe inside a GitHub-flavoured Markdown table cell or paragraph:
    HTML is escaped (GitHub renders raw HTML) and Markdown syntax neutralised."""
    text = " ".join(text.split())  # a newline would end the table row
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def render_markdown(doc: Document, run_dir: Path) -> str:
    """The document as Markdown; images link to the PNGs relative to ``run_dir``."""
    out = [f"# {md_escape(doc.title)}", ""]
    for i, section in enumerate(doc.sections):
        if i:
            out += [f"## {md_escape(section.title)}", ""]
        for part in section.parts:
            out += [*_md_part(part, run_dir), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _md_part(part: Part, run_dir: Path) -> list[str]:
    if isinstance(part, Text):
        return [md_escape(part.text)]
    if isinstance(part, Code):
        # A fence longer than any run of backticks inside cannot be closed early.
        runs = [len(m) for m in re.findall(r"`+", part.text)]
        fence = "`" * max(3, max(runs, default=0) + 1)
        title = [f"### {md_escape(part.title)}", ""] if part.title else []
        return [*title, f"{fence}{part.language}", part.text.rstrip("\n"), fence]
    if isinstance(part, Figure):
        try:
            link = part.path.relative_to(run_dir).as_posix()
        except ValueError:
            link = part.path.as_posix()
        alt = md_escape(part.alt)
        return [f"### {md_escape(part.title)}", "", f"![{alt}]({link})"]
    return _md_table(part)


def _md_table(table: Table) -> list[str]:
    facts = table.columns == ()
    columns = ("", "") if facts else table.columns
    first = table.rows[0] if table.rows else ()
    align = [
        "---:" if j < len(first) and _numeric(first[j]) and not facts else "---"
        for j in range(len(columns))
    ]
    lines = [f"### {md_escape(table.title)}", ""] if table.title else []
    lines.append("| " + " | ".join(md_escape(c) for c in columns) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for row in table.rows:
        cells = [md_escape(format_cell(v)) for v in row]
        if facts:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", f"_{md_escape(table.note)}_"]
    return lines
