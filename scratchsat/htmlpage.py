"""Self-contained HTML pages (``train``'s ``report.html``, ``evaluate --html``): tables, and
PNG pictures embedded as data URIs, so a page opens offline and travels as one file."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; } .swatch { display: inline-block; width: 0.9em; height: 0.9em;
  border: 1px solid #777; vertical-align: middle; margin-right: 0.3em; }
figure { margin: 0.5em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def cell(value: object) -> str:
    """A table cell: numbers right-aligned with separators, scores and other fractions to
    three decimals everywhere (0.004 beside 0.367, not 0.00367), text left-aligned and
    escaped."""
    if isinstance(value, bool) or value is None:
        return f'<td class="text">{escape("–" if value is None else str(value))}</td>'
    if isinstance(value, int):
        return f"<td>{value:,}</td>"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"<td>{value:,.0f}</td>"
        return f"<td>{value:.3f}</td>"
    if isinstance(value, Raw):
        return f'<td class="text">{value.html}</td>'
    return f'<td class="text">{escape(str(value))}</td>'


class Raw:
    """Markup that goes into a page as it is (made by this module)."""

    def __init__(self, html: str) -> None:
        self.html = html


def swatch(colour: str, text: str) -> Raw:
    return Raw(f'<span class="swatch" style="background:{escape(colour)}"></span>{escape(text)}')


def table(
    headers: Sequence[str] | None, rows: Iterable[Sequence[object]], caption: str = ""
) -> str:
    head = (
        "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>"
        if headers
        else ""
    )
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>\n" for row in rows)
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{title}{head}<tbody>\n{body}</tbody></table>\n"


def pairs(items: Iterable[tuple[str, object]]) -> str:
    """A two-column table of settings or facts."""
    return table(None, ([k, v] for k, v in items))


def image(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    note = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">{note}</figure>\n'


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>\n{''.join(parts)}</section>\n"


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>\n"


def page(title: str, sections: Sequence[str]) -> str:
    """A whole page: no scripts, no links out, everything inline."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n{''.join(sections)}</body></html>\n"
    )
