"""The pieces of an HTML report: which tiles to show, tables, galleries, and the self-contained document.

The document carries its style inline and every image as a data URI (``images.data_uri``): no link to a web
page, a font, a script or a file, so it opens offline, by e-mail and years later. Text is escaped.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:24px;margin-bottom:4px} h2{font-size:19px;border-bottom:2px solid #ccc;padding-bottom:3px;margin-top:34px}
h3{font-size:15px;margin:14px 0 6px} p.meta{color:#666;font-size:13px;margin-top:0}
table{border-collapse:collapse;font-size:12px;margin:6px 0 10px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.swatch{display:inline-block;width:16px;height:16px;border:1px solid #555;vertical-align:middle;margin-right:6px}
.gallery{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:8px}
.gallery figure{margin:0;text-align:center;font-size:10px;color:#555}
.gallery img{width:112px;height:112px;image-rendering:auto;border:1px solid #999;display:block}
.pair img{width:112px;height:112px}
.row{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
img.plot{max-width:100%;border:1px solid #ddd}
img.thumb{border:1px solid #999;image-rendering:pixelated}
.note{color:#a15c00;font-size:13px}
"""


@dataclass(frozen=True)
class Section:
    """One part of the report: a heading (``level`` 2 or 3) and its HTML body."""

    title: str
    body: str
    level: int = 2
    anchor: str = ""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def gallery_picks(dist, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(closest, random): the positions of the ``n`` tiles nearest the cluster centre (smallest ``dist``, ties by
    position) and of up to ``n`` others drawn at random (seeded), never one of the closest."""
    dist = np.asarray(dist, dtype=np.float64)
    order = np.lexsort((np.arange(len(dist)), dist))
    closest = order[:n]
    rest = order[n:]
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(rest, size=min(n, len(rest)), replace=False)) if len(rest) else rest
    return closest, picked


def img(uri: str, alt: str, cls: str = "", width: int | None = None) -> str:
    size = f' width="{int(width)}"' if width else ""
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{uri}" alt="{esc(alt)}"{klass}{size}>'


def gallery(items) -> str:
    """A row of figures; ``items`` are (data URI, caption)."""
    figures = "".join(f"<figure>{img(uri, caption)}<figcaption>{esc(caption)}</figcaption></figure>"
                      for uri, caption in items)
    return f'<div class="gallery">{figures}</div>'


def pair_gallery(items) -> str:
    """Before/after pairs; ``items`` are (before URI, after URI, caption)."""
    figures = "".join(f'<figure class="pair">{img(a, caption + " before")}{img(b, caption + " after")}'
                      f"<figcaption>{esc(caption)}</figcaption></figure>" for a, b, caption in items)
    return f'<div class="gallery">{figures}</div>'


def table(frame, digits: int = 3, index: bool = True) -> str:
    """A pandas DataFrame as an HTML table: numbers rounded to ``digits`` significant places, text escaped."""
    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else f"{v:.{digits}g}"
        return esc(v)

    head = ([esc(frame.index.name or "")] if index else []) + [esc(c) for c in frame.columns]
    rows = []
    for key, row in frame.iterrows():
        cells = ([f"<td>{esc(key)}</td>"] if index else []) + [f"<td>{cell(v)}</td>" for v in row.tolist()]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>"


def swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{esc(color)}"></span>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def document(title: str, subtitle: str, sections) -> str:
    """The whole HTML page: title, a contents list of the level-2 sections, then every section."""
    contents = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections
                       if s.level == 2 and s.anchor)
    body = "".join(f'<h{s.level}{f" id={chr(34)}{esc(s.anchor)}{chr(34)}" if s.anchor else ""}>{esc(s.title)}'
                   f"</h{s.level}>{s.body}" for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(subtitle)}</p>"
            f"<ul>{contents}</ul>{body}</body></html>\n")
