"""A family's recent queue waits as a small inline SVG, drawn on the server.

Server-rendered so the page needs no JavaScript and nothing from a CDN, and so
the chart is in the HTML a visitor (or a test) receives.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

CHART_WINDOW_SEC = 15 * 60
WIDTH, HEIGHT, PAD = 120, 28, 2


def wait_chart(family: str, recent_waits: Sequence[Sequence[float]], now: float) -> Markup:
    """Waits of the last 15 minutes, oldest left; the peak sets the scale. Flat dashed line when none."""
    start = now - CHART_WINDOW_SEC
    points = sorted((float(t), max(float(w), 0.0)) for t, w in recent_waits if float(t) >= start)
    peak = max((w for _, w in points), default=0.0)
    if points:
        label = f"{family}: waits of the last 15 minutes, longest {_short(peak)}"
    else:
        label = f"{family}: nobody waited in the last 15 minutes"
    scale = max(peak, 1.0)
    inner_h = HEIGHT - 2 * PAD
    coords = [
        (round((t - start) / CHART_WINDOW_SEC * WIDTH, 1), round(HEIGHT - PAD - w / scale * inner_h, 1))
        for t, w in points
    ]
    baseline = HEIGHT - PAD
    parts = [
        f'<svg class="wait-chart" data-family="{escape(family)}" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="0" y1="{baseline}" x2="{WIDTH}" y2="{baseline}"'
        + (' stroke-dasharray="3 3"' if not coords else "")
        + " />",
    ]
    if coords:
        if len(coords) == 1:  # one wait: a short bar is easier to see than a dot
            coords = [(max(coords[0][0] - 2, 0), coords[0][1]), coords[0]]
        line = " ".join(f"{x},{y}" for x, y in coords)
        area = f"{coords[0][0]},{baseline} {line} {coords[-1][0]},{baseline}"
        parts.append(f'<polygon class="area" points="{area}" />')
        parts.append(f'<polyline class="line" points="{line}" />')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
