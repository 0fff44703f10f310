"""The Results page: the latest zero-shot report (`reports/<name>.md`), rendered without a
Markdown dependency: headings, pipe tables, images and paragraphs are all the reports use."""

from __future__ import annotations

import html
import re
from pathlib import Path

REPORT_NAMES = ("zeroshot", "demo")  # the benchmark's report first, else the demo's
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")


def latest_report(reports_dir: Path) -> Path | None:
    """The newest of the known reports that exists, or None."""
    found = [reports_dir / f"{n}.md" for n in REPORT_NAMES if (reports_dir / f"{n}.md").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _inline(text: str) -> str:
    out = html.escape(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def render_markdown(text: str, image_url: str = "/reports/") -> str:
    """HTML for a report's Markdown (escaped; images point under `image_url`)."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    in_code = False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
        elif in_code:
            out.append(html.escape(line))
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)  # the page has its own h1
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not re.fullmatch(r"\|?[\s:|-]+\|?", lines[i]):
                    rows.append(_cells(lines[i]))
                i += 1
            head, body = rows[0], rows[1:]
            out.append('<table class="report"><tr>')
            out.append("".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            for r in body:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
            continue
        elif m := _IMAGE.match(line.strip()):
            name = Path(m.group(2)).name  # only files beside the report
            out.append(
                f'<img class="report" alt="{html.escape(m.group(1))}" '
                f'src="{image_url}{html.escape(name)}">'
            )
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    if in_code:
        out.append("</pre>")
    return "\n".join(out)
