"""Small inline SVG charts drawn on the server: a family's recent queue waits, a month's daily spend.

Server-rendered so the pages need no JavaScript and nothing from a CDN, and so
the chart is in the HTML a visitor (or a test) receives.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

CHART_WINDOW_SEC = 15 * 60
WIDTH, HEIGHT, PAD = 120, 28, 2
DAILY_WIDTH, DAILY_HEIGHT = 600, 80


def wait_chart(family: str, recent_waits: Sequence[Sequence[float]], now: float) -> Markup:
    """Waits of the last 15 minutes, oldest left; the peak sets the scale. Flat dashed line when none."""
    start = now - CHART_WINDOW_SEC
    points = sorted((float(t), max(float(w), 0.0)) for t, w in recent_waits if float(t) >= start)
    peak = max((w for _, w in points), default=0.0)
    if points:
        label = f"{family}: waits of the last 15 minutes, longest {_short(peak)}"
    else:
        label = f"{family}: nobody waited in the last 15 minutes"
    spread = [((t - start) / CHART_WINDOW_SEC, w) for t, w in points]
    return _svg("wait-chart", f'data-family="{escape(family)}"', label, spread, WIDTH, HEIGHT, least_peak=1.0)


def daily_chart(month: str, days_in_month: int, spend_by_day: dict[int, float]) -> Markup:
    """A month's spend (USD) per day, the 1st left; the dearest day sets the scale. Flat dashed line when none."""
    points = sorted((day, max(cost, 0.0)) for day, cost in spend_by_day.items() if 1 <= day <= days_in_month)
    if points:
        peak_day, peak = max(points, key=lambda p: p[1])
        label = f"Spend per day in {month}: dearest day {month}-{peak_day:02d}, ${peak:,.2f}"
    else:
        label = f"Nothing was spent in {month}"
    # Every day of the month is a point (0 when nothing was spent), so a quiet day shows as a dip.
    spent = dict(points)
    spread = [((day - 1) / max(days_in_month - 1, 1), spent.get(day, 0.0)) for day in range(1, days_in_month + 1)]
    return _svg("daily-chart", f'data-month="{escape(month)}"', label, spread if points else [],
                DAILY_WIDTH, DAILY_HEIGHT, least_peak=1e-6)


def _svg(kind: str, data: str, label: str, spread: Sequence[tuple[float, float]], width: int, height: int, *,
         least_peak: float) -> Markup:
    """A line over a shaded area: `spread` is (x from 0 to 1, value); the largest value (at least `least_peak`,
    so a flat series of tiny values stays low) sets the scale."""
    scale = max(max((v for _, v in spread), default=0.0), least_peak)
    inner_h = height - 2 * PAD
    coords = [(round(x * width, 1), round(height - PAD - v / scale * inner_h, 1)) for x, v in spread]
    baseline = height - PAD
    parts = [
        f'<svg class="{kind}" {data} role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="0" y1="{baseline}" x2="{width}" y2="{baseline}"'
        + (' stroke-dasharray="3 3"' if not coords else "")
        + " />",
    ]
    if coords:
        if len(coords) == 1:  # one point: a short bar is easier to see than a dot
            coords = [(max(coords[0][0] - 2, 0), coords[0][1]), coords[0]]
        line = " ".join(f"{x},{y}" for x, y in coords)
        area = f"{coords[0][0]},{baseline} {line} {coords[-1][0]},{baseline}"
        parts.append(f'<polygon class="area" points="{area}" />')
        parts.append(f'<polyline class="line" points="{line}" />')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
