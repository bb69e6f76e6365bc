# -*- test-case-name: tests.test_ops_chart -*-
"""
One way to draw a chart: an SVG line chart on the server (no script, no
external resource) with a value axis labelled in its unit, a time axis in
the gateway's local time, a grid, and a legend where it draws more than one
line.  The last hour's graphs (`cmegw.ops.graphs`) and a meter's registers
over time (`cmegw.web.pages.charts`) both draw with `line_chart`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import attrs
from twisted.web.template import Tag

from cmegw.readout.formats import group_digits

WIDTH = 520
HEIGHT = 200
#: Room for the value labels (left), the time labels (below), the unit and legend (above).
LEFT, RIGHT, TOP, BOTTOM = 70, 14, 24, 28
#: A chart draws at most this many points per line (the lowest and highest of each slice beyond).
MAX_POINTS = 600
#: A pause longer than this many typical intervals breaks the line (nothing was measured).
GAP_FACTOR = 3.0
VALUE_TICKS = 4
TIME_TICKS = 5
MINUTE, HOUR, DAY = 60, 3600, 86400
TIME_STEPS = (MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR,
              12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 182 * DAY, 365 * DAY)
#: The colours of the lines, in order (the first is the pages' accent, styled by ``.chart .chart-line``).
COLOURS = ("#0f766e", "#b45309", "#b91c1c", "#1d4ed8", "#6d28d9")
GRID = "#dde3ea"
AXIS = "#5d6b7a"

Points = Sequence[tuple[float, "float | None"]]


@attrs.frozen
class Line:
    """One line of a chart: (time, value) oldest first; a None value breaks the line."""

    label: str
    points: Points


def reduce_points(points: Points, limit: int = MAX_POINTS) -> list[tuple[float, float | None]]:
    """At most about `limit` points: the lowest and the highest of each slice, in time order."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / (limit // 2))
    out: list[tuple[float, float | None]] = []
    for i in range(0, len(points), size):
        chunk = [p for p in points[i:i + size] if p[1] is not None]
        if not chunk:
            out.append((points[i][0], None))
            continue
        low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])  # type: ignore[arg-type,return-value]
        out.extend(sorted({low, high}))
    return out


# -- axes -----------------------------------------------------------------------------------------


def _step(span: float, count: int) -> float:
    raw = span / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude * (1 + 1e-9))


def value_ticks(low: float, high: float, count: int = VALUE_TICKS) -> tuple[list[float], int]:
    """Round values covering low..high (about `count` steps), and the decimals their labels need."""
    if high - low < 1e-12 * max(1.0, abs(high)):
        pad = abs(high) * 0.01 or 1.0
        low, high = (low - pad if low != 0 else 0.0), high + pad
    step = _step(high - low, count)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    ticks = [i * step for i in range(first, last + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6:
        decimals += 1
    return ticks, decimals


def _offset(when: float) -> float:
    return float(time.localtime(when).tm_gmtoff)


def time_ticks(start: float, end: float, count: int = TIME_TICKS) -> list[tuple[float, str]]:
    """Round local times between start and end, with their labels (time of day, or the date)."""
    span = max(end - start, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= count), TIME_STEPS[-1] * math.ceil(span / TIME_STEPS[-1] / count))
    if step < DAY:
        fmt = "%H:%M" if span <= DAY else "%m-%d %H:%M"
    else:
        fmt = "%m-%d" if span <= 200 * DAY else "%Y-%m-%d"
    offset = _offset(start)
    tick = math.ceil((start + offset) / step) * step - offset
    out = []
    for _ in range(count + 2):
        if tick > end:
            break
        out.append((tick, time.strftime(fmt, time.localtime(tick))))
        tick += step
    return out


# -- drawing --------------------------------------------------------------------------------------


def svg(name: str, **attributes: Any) -> Tag:
    """An SVG element (``class_`` -> ``class``, ``font_size`` -> ``font-size``)."""
    return Tag(name, attributes={k.rstrip("_").replace("_", "-"): str(v) for k, v in attributes.items()})


def runs(points: Points) -> list[list[tuple[float, float]]]:
    """The points split where a value is missing or nothing was measured for a while."""
    known = [p for p in points if p[1] is not None]
    gaps = [b[0] - a[0] for a, b in zip(known, known[1:])]
    import statistics  # with fractions and decimal: loaded by the first chart drawn, not at start

    limit = statistics.median(gaps) * GAP_FACTOR if len(gaps) >= 2 else 0.0
    out: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if v is None:
            out.append([])
            continue
        if out[-1] and limit > 0 and t - out[-1][-1][0] > limit:
            out.append([])
        out[-1].append((t, v))
    return [run for run in out if run]


def line_chart(title: str, unit: str, lines: Sequence[Line], start: float, end: float, *, zero: bool = False,
               empty: str = "no values in this range", description: str = "", width: int = WIDTH,
               height: int = HEIGHT) -> Tag:
    """
    The lines as one SVG chart from `start` to `end`, with labelled axes;
    `zero` keeps 0 on the value axis (counts and rates); `description` is
    the image's title (its numbers, for readers without images).
    """
    shown = [Line(line.label, reduce_points([p for p in line.points if start <= p[0] <= end])) for line in lines]
    values = [v for line in shown for _, v in line.points if v is not None]
    low, high = min(values, default=0.0), max(values, default=1.0)
    ticks, decimals = value_ticks(min(low, 0.0) if zero else low, max(high, 1.0) if zero and high <= 0 else high)
    bottom, top = ticks[0], ticks[-1]
    inner_w, inner_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + inner_w * (t - start) / span

    def y(v: float) -> float:
        return TOP + inner_h * (1 - (v - bottom) / (top - bottom))

    chart = svg("svg", xmlns="http://www.w3.org/2000/svg", width=width, height=height,
                viewBox=f"0 0 {width} {height}", role="img", class_="chart", aria_label=f"{title} in {unit} over time")
    chart(svg("title")(description or f"{title} ({unit})"))
    chart(svg("text", x=4, y=14, class_="chart-unit", fill="currentColor", font_size=12)(unit))
    for tick in ticks:
        ty = f"{y(tick):.1f}"
        chart(svg("line", x1=LEFT, x2=width - RIGHT, y1=ty, y2=ty, class_="chart-grid", stroke=GRID))
        chart(svg("text", x=LEFT - 6, y=f"{y(tick) + 4:.1f}", text_anchor="end", class_="chart-label",
                  fill="currentColor", font_size=11)(group_digits(tick, decimals)))
    for t, label in time_ticks(start, end):
        tx = f"{x(t):.1f}"
        chart(svg("line", x1=tx, x2=tx, y1=TOP, y2=height - BOTTOM, class_="chart-grid", stroke=GRID))
        chart(svg("text", x=tx, y=height - BOTTOM + 16, text_anchor="middle", class_="chart-label",
                  fill="currentColor", font_size=11)(label))
    chart(svg("line", x1=LEFT, x2=LEFT, y1=TOP, y2=height - BOTTOM, class_="chart-axis", stroke=AXIS))
    chart(svg("line", x1=LEFT, x2=width - RIGHT, y1=height - BOTTOM, y2=height - BOTTOM, class_="chart-axis",
              stroke=AXIS))
    legend_x = float(LEFT)
    for i, line in enumerate(shown):
        colour = COLOURS[i % len(COLOURS)]
        kind = "chart-line" if i == 0 else f"chart-line-{i}"
        for run in runs(line.points):
            coords = [f"{x(t):.1f},{y(v):.1f}" for t, v in run]
            if len(coords) == 1:
                cx, cy = coords[0].split(",")
                chart(svg("circle", cx=cx, cy=cy, r=2.5, class_="chart-point" if i == 0 else kind, fill=colour))
            else:
                chart(svg("polyline", points=" ".join(coords), class_=kind, fill="none", stroke=colour,
                          stroke_width=2))
        if len(shown) > 1:
            chart(svg("rect", x=f"{legend_x:.0f}", y=6, width=10, height=10, fill=colour),
                  svg("text", x=f"{legend_x + 14:.0f}", y=15, class_="chart-label", fill="currentColor",
                      font_size=11)(line.label))
            legend_x += 24 + 6.5 * len(line.label)
    if not values:
        chart(svg("text", x=LEFT + inner_w / 2, y=TOP + inner_h / 2, text_anchor="middle", class_="chart-label",
                  fill="currentColor", font_size=12)(empty))
    return chart
