# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
Charts of a meter's registers over time, drawn on the server as inline SVG
(no script, no external resource): one small chart per register, with a time
axis in local time and a value axis labelled in the register's unit.

`register_series` turns kept readings into one `Series` per numeric current
register; `chart` draws one; `chart_figure` adds the figures as text.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Iterable, Sequence

import attrs
from twisted.web.template import Tag, tags

from cmegw.web.pages.readout_views import group_digits, is_number, registers

WIDTH = 520
HEIGHT = 200
#: Room for the value labels (left), the time labels (below), the unit (above).
LEFT, RIGHT, TOP, BOTTOM = 70, 14, 22, 28
#: A chart draws at most this many points (the lowest and highest of each slice beyond).
MAX_POINTS = 600
#: A pause longer than this many typical intervals breaks the line (the meter was not read).
GAP_FACTOR = 3.0
VALUE_TICKS = 4
TIME_TICKS = 5
MINUTE, HOUR, DAY = 60, 3600, 86400
TIME_STEPS = (MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR,
              12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 182 * DAY, 365 * DAY)


@attrs.frozen
class Series:
    """One register of a meter over time: (time, value in `unit`) oldest first."""

    key: str
    label: str
    unit: str
    points: tuple[tuple[float, float], ...]


def register_series(readings: Iterable[Any]) -> list[Series]:
    """One series per numeric current register of the good readings, in the newest reading's order."""
    points: dict[str, list[tuple[float, float]]] = {}
    labels: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    for reading in readings:
        if not reading.ok:
            continue
        found = [r for r in registers(reading.decoded) if r.storage == 0 and r.unit and is_number(r.value)]
        if found:
            order = [r.key for r in found]
        for r in found:
            points.setdefault(r.key, []).append((reading.time, float(r.value)))
            labels[r.key] = (r.label, r.unit)
    keys = order + [k for k in points if k not in order]
    return [Series(k, labels[k][0], labels[k][1], tuple(points[k])) for k in keys]


def reduce_points(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about `limit` points: the lowest and the highest of each slice, in time order."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / (limit // 2))
    out: list[tuple[float, float]] = []
    for i in range(0, len(points), size):
        chunk = points[i:i + size]
        low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
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
        low, high = low - pad, high + pad
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


def _svg(name: str, **attributes: Any) -> Tag:
    return Tag(name, attributes={k.rstrip("_").replace("_", "-"): str(v) for k, v in attributes.items()})


def _runs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where the meter was not read for a while."""
    if len(points) < 3:
        return [list(points)]
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:])]
    limit = statistics.median(gaps) * GAP_FACTOR
    runs: list[list[tuple[float, float]]] = [[points[0]]]
    for gap, point in zip(gaps, points[1:]):
        if limit > 0 and gap > limit:
            runs.append([])
        runs[-1].append(point)
    return runs


def chart(series: Series, start: float, end: float, width: int = WIDTH, height: int = HEIGHT) -> Tag:
    """One register as an SVG line chart from `start` to `end`, with labelled axes."""
    points = reduce_points([p for p in series.points if start <= p[0] <= end])
    values = [v for _, v in points]
    ticks, decimals = value_ticks(min(values, default=0.0), max(values, default=1.0))
    low, high = ticks[0], ticks[-1]
    inner_w, inner_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + inner_w * (t - start) / span

    def y(v: float) -> float:
        return TOP + inner_h * (1 - (v - low) / (high - low))

    svg = _svg("svg", xmlns="http://www.w3.org/2000/svg", width=width, height=height,
               viewBox=f"0 0 {width} {height}", role="img", class_="chart",
               aria_label=f"{series.label} in {series.unit} over time")
    svg(_svg("title")(f"{series.label} ({series.unit})"))
    svg(_svg("text", x=4, y=14, class_="chart-unit", fill="currentColor", font_size=12)(series.unit))
    for tick in ticks:
        ty = f"{y(tick):.1f}"
        svg(_svg("line", x1=LEFT, x2=width - RIGHT, y1=ty, y2=ty, class_="chart-grid", stroke="#dde3ea"))
        svg(_svg("text", x=LEFT - 6, y=f"{y(tick) + 4:.1f}", text_anchor="end", class_="chart-label",
                 fill="currentColor", font_size=11)(group_digits(tick, decimals)))
    for t, label in time_ticks(start, end):
        tx = f"{x(t):.1f}"
        svg(_svg("line", x1=tx, x2=tx, y1=TOP, y2=height - BOTTOM, class_="chart-grid", stroke="#dde3ea"))
        svg(_svg("text", x=tx, y=height - BOTTOM + 16, text_anchor="middle", class_="chart-label",
                 fill="currentColor", font_size=11)(label))
    svg(_svg("line", x1=LEFT, x2=LEFT, y1=TOP, y2=height - BOTTOM, class_="chart-axis", stroke="#5d6b7a"))
    svg(_svg("line", x1=LEFT, x2=width - RIGHT, y1=height - BOTTOM, y2=height - BOTTOM, class_="chart-axis",
             stroke="#5d6b7a"))
    for run in _runs(points):
        coords = [f"{x(t):.1f},{y(v):.1f}" for t, v in run]
        if len(coords) == 1:
            cx, cy = coords[0].split(",")
            svg(_svg("circle", cx=cx, cy=cy, r=2.5, class_="chart-point", fill="#0f766e"))
        elif coords:
            svg(_svg("polyline", points=" ".join(coords), class_="chart-line", fill="none", stroke="#0f766e",
                     stroke_width=2))
    if not points:
        svg(_svg("text", x=LEFT + inner_w / 2, y=TOP + inner_h / 2, text_anchor="middle", class_="chart-label",
                 fill="currentColor", font_size=12)("no readings in this range"))
    return svg


def figures_text(series: Series, start: float, end: float) -> str:
    values = [v for t, v in series.points if start <= t <= end]
    if not values:
        return "no readings in this range"
    return (f"last {group_digits(values[-1], 3).rstrip('0').rstrip('.')} {series.unit}, lowest "
            f"{group_digits(min(values), 3).rstrip('0').rstrip('.')}, highest "
            f"{group_digits(max(values), 3).rstrip('0').rstrip('.')} ({len(values)} readings)")


def chart_figure(series: Series, start: float, end: float) -> Tag:
    """A chart with its label and its figures as text (readable without images)."""
    return tags.figure(chart(series, start, end),
                       tags.figcaption(tags.strong(series.label), ": ", figures_text(series, start, end)),
                       class_="chart-figure", id=f"chart-{series.key}")
