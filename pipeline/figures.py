"""The figures of ``report.html`` and of ``musiclime serve``, drawn as SVG and HTML text.

A matplotlib figure costs over 100 ms of CPU; these cost microseconds, so a server can draw
them per request. Colours are attributes (SVG ``fill``) or classes (``WEIGHT_CSS``), never
inline ``style``: the server's Content-Security-Policy forbids inline styles and scripts.
Every value that reaches the markup goes through :func:`esc`.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

POSITIVE, NEGATIVE = (192, 57, 43), (44, 127, 184)  # red pushes towards the class, blue away
LEVELS = 8  # colour steps of a word's weight in the lyrics (classes w-p1..w-p8, w-n1..w-n8)


def esc(value) -> str:
    """Every value that reaches a page goes through here: class names come from
    checkpoints and plugins, ids, tags, lyrics and messages from catalogues."""
    return html.escape("" if value is None else str(value), quote=True)


def _mix(rgb: tuple[int, int, int], a: float) -> str:
    r, g, b = (round(255 + (c - 255) * a) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def num(v: float, signed: bool = True) -> str:
    """A weight in at most about 6 characters: 3 decimals, or 2 significant digits when it
    is smaller than that shows (a probability-scale weight is often 0.001)."""
    fmt = ("+" if signed else "") + (".3f" if abs(v) >= 0.0095 or v == 0 else ".2g")
    return format(v, fmt)


def weight_fill(w: float, lim: float) -> str:
    """The colour of weight ``w`` on a scale whose ends are +-``lim``: white at zero."""
    if not np.isfinite(w) or lim <= 0:
        return "#ffffff"
    return _mix(POSITIVE if w > 0 else NEGATIVE, min(1.0, abs(w) / lim))


def _css() -> str:
    rules = []
    for i in range(1, LEVELS + 1):
        a = i / LEVELS
        rules.append(f".w-p{i}{{background:{_mix(POSITIVE, a * 0.85)}}}.w-n{i}{{background:{_mix(NEGATIVE, a * 0.85)}}}")
    return "".join(rules)


WEIGHT_CSS = _css()


def heatmap(matrix: np.ndarray, stems: Sequence[str], title: str, se: np.ndarray | None = None,
            cell: tuple[int, int] = (56, 30)) -> str:
    """Stems x segments as an SVG grid, each cell coloured by its weight and labelled with
    it and, when ``se`` is given, its standard error.

    matrix, se: float [n_stems, n_segments] (NaN: no such feature)."""
    m = np.asarray(matrix, float)
    n_stems, n_seg = m.shape
    cw, ch = cell
    left, top = 64, 22
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
    lim = lim or 1.0
    width, height = left + cw * n_seg + 4, top + ch * n_stems + 18
    out = [f'<svg class="heatmap" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
           f'<text x="0" y="14" font-size="12">{esc(title)}</text>']
    for i, stem in enumerate(stems):
        y = top + i * ch
        out.append(f'<text x="{left - 6}" y="{y + ch / 2 + 4:.0f}" font-size="11" text-anchor="end">{esc(stem)}</text>')
        for j in range(n_seg):
            w = m[i, j]
            x = left + j * cw
            s = None if se is None else float(se[i, j])
            tip = "no feature" if not np.isfinite(w) else f"{stem} segment {j}: weight {w:+.4f}" + (
                f" ± {s:.4f} (standard error)" if s is not None and np.isfinite(s) else "")
            out.append(f'<g class="cell" data-stem="{esc(stem)}" data-segment="{j}"><title>{esc(tip)}</title>'
                       f'<rect x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{weight_fill(w, lim)}"/>')
            if np.isfinite(w):
                out.append(f'<text x="{x + cw / 2:.0f}" y="{y + 12}" font-size="9" text-anchor="middle">{num(w)}</text>')
                if s is not None and np.isfinite(s):
                    out.append(f'<text x="{x + cw / 2:.0f}" y="{y + 24}" font-size="8" fill="#555" '
                               f'text-anchor="middle">±{num(s, False)}</text>')
            out.append("</g>")
    for j in range(n_seg):
        out.append(f'<text x="{left + j * cw + cw / 2:.0f}" y="{top + n_stems * ch + 13}" font-size="10" '
                   f'text-anchor="middle">{j}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(labels: Sequence[str], values: Sequence[float], title: str, errors: Sequence[float] | None = None,
         signs: Sequence[float] | None = None, links: Sequence[str | None] | None = None, limit: float | None = None,
         width: int = 420) -> str:
    """Horizontal bars (an SVG), one per label, with +-``errors`` whiskers; a bar is red when
    its sign is positive, blue otherwise; ``links`` make the labels links (already safe URLs
    built by the caller from escaped parts)."""
    n = len(labels)
    left, row, top = 150, 18, 20
    span = width - left - 44  # room for the value after the longest bar
    vals = np.asarray(values, float)
    errs = np.zeros(n) if errors is None else np.nan_to_num(np.asarray(errors, float))
    lim = limit or float(np.nanmax(vals + errs)) if n else 1.0
    lim = lim if lim and np.isfinite(lim) and lim > 0 else 1.0
    height = top + row * max(n, 1) + 6
    out = [f'<svg class="bars" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
           f'<text x="0" y="13" font-size="12">{esc(title)}</text>']
    for i, label in enumerate(labels):
        y = top + i * row
        v = float(vals[i]) if np.isfinite(vals[i]) else 0.0
        colour = "#2c7fb8" if signs is not None and signs[i] <= 0 else "#c0392b"
        name = f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{esc(label)}</text>'
        if links is not None and links[i]:
            name = f'<a href="{links[i]}">{name}</a>'
        tip = f"{label}: {v:.4f}" + (f" ± {errs[i]:.4f}" if errors is not None else "")
        out.append(f'<g><title>{esc(tip)}</title>{name}<rect x="{left}" y="{y + 2}" width="{max(0.0, v) / lim * span:.1f}" '
                   f'height="{row - 5}" fill="{colour}"/>')
        if errors is not None and errs[i] > 0:
            x0, x1 = (max(0.0, v - errs[i]) / lim * span + left, min(lim, v + errs[i]) / lim * span + left)
            out.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y + 8}" y2="{y + 8}" stroke="#000"/>')
        out.append(f'<text x="{left + max(0.0, v) / lim * span + 3:.1f}" y="{y + 12}" font-size="9">{v:.3f}</text></g>')
    out.append("</svg>")
    return "".join(out)


def word_chart(g, title: str, n: int = 20, links=None) -> str:
    """A class's top words by mean |weight| (global_importance rows of level word), with
    the standard error of their signed mean as whiskers; red when they push towards it."""
    import polars as pl
    words = g.filter(pl.col("level") == "word").sort("mean_abs_weight", descending=True).head(n)
    if not words.height:
        return "<p class='muted'>no words</p>"
    return bars(words["token"].to_list(), words["mean_abs_weight"].to_list(), title,
                errors=words["mean_weight_se"].fill_null(0.0).to_list(), signs=words["mean_weight"].to_list(),
                links=links(words["token"].to_list()) if links else None)


def lyrics(text: str, weights: dict[str, float], times: dict[str, list[float]] | None = None) -> str:
    """The lyrics, each explained word marked by its weight (classes ``w-p*``/``w-n*``: red
    positive, blue negative; lime's word semantics), with when it is sung in its tooltip
    when the lyrics were time-synced."""
    from musiclime.words import LyricsFactorization
    lf = LyricsFactorization(text)
    lim = max((abs(w) for w in weights.values()), default=0) or 1.0
    marks = {}
    for f, name in enumerate(lf.feature_names):
        w = weights.get(name)
        if w is None:
            continue
        level = max(1, min(LEVELS, round(abs(w) / lim * LEVELS)))
        sung = (times or {}).get(name)
        tip = f"{w:+.4f}" + (f" · sung at {', '.join(f'{t:.1f}' for t in sung)} s" if sung else "")
        for s, e in lf.spans(f):
            marks[s] = (e, f"w-{'p' if w > 0 else 'n'}{level}", tip)
    out, i = [], 0
    while i < len(text):
        if i in marks:
            e, cls, tip = marks[i]
            out.append(f'<span class="w {cls}" title="{esc(tip)}">{esc(text[i:e])}</span>')
            i = e
        else:
            out.append(esc(text[i]))
            i += 1
    return "".join(out)


def sung_under_segments(e, duration_s: float | None, n_seg: int) -> str:
    """Time-synced lyrics: each explained word under the audio segments it is sung in.

    e: a track's explanation rows (polars, with token and sung_at_s)."""
    if "sung_at_s" not in e.columns or not duration_s or n_seg <= 0:
        return ""
    seg_s = duration_s / n_seg
    cells: list[list[str]] = [[] for _ in range(n_seg)]
    for token, when in e.filter(e["sung_at_s"].is_not_null()).select("token", "sung_at_s").iter_rows():
        for t in when or []:
            cells[min(int(t // seg_s), n_seg - 1)].append(token)
    if not any(cells):
        return ""
    row = "".join(f"<td>{esc(' '.join(dict.fromkeys(c)))}</td>" for c in cells)
    return ("<table class='sung'><tr>" + "".join(f"<th>{i}</th>" for i in range(n_seg))
            + f"</tr><tr>{row}</tr></table><p class='muted'>words sung in each segment</p>")


def stem_segment_grid(rows, stems: Sequence[str], n_seg: int, value: str = "weight",
                      se: str | None = "weight_se") -> tuple[np.ndarray, np.ndarray | None]:
    """The [stems, segments] matrices of ``value`` (and ``se``) from rows with stem and
    segment columns (a track's audio weights, or a class's global stem_segment rows)."""
    m = np.full((len(stems), n_seg), np.nan)
    s = None if se is None else np.full((len(stems), n_seg), np.nan)
    cols = ["stem", "segment", value] + ([se] if se else [])
    for r in rows.select(cols).iter_rows():
        if r[0] in stems and r[1] is not None and 0 <= r[1] < n_seg:
            m[stems.index(r[0]), r[1]] = np.nan if r[2] is None else r[2]
            if s is not None:
                s[stems.index(r[0]), r[1]] = np.nan if r[3] is None else r[3]
    return m, s
