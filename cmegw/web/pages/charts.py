# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
Charts of a meter's registers over time, drawn on the server as inline SVG
by `cmegw.ops.chart.line_chart` (no script, no external resource): one small
chart per register, with a time axis in local time and a value axis
labelled in the register's unit.

`register_series` turns kept readings into one `Series` per numeric current
register; `chart` draws one; `chart_figure` adds the figures as text.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs
from twisted.web.template import Tag, tags

from cmegw.ops.chart import Line, line_chart
from cmegw.readout.formats import group_digits, in_unit, is_number


@attrs.frozen
class Series:
    """One register of a meter over time: (time, value in `unit`) oldest first."""

    key: str
    label: str
    unit: str
    points: tuple[tuple[float, float], ...]


def register_series(readings: Iterable[Any]) -> list[Series]:
    """One series per numeric current register of the good readings, in the newest reading's order."""
    from cmegw.readout.views import registers  # the readings' views load with the first reading shown

    points: dict[str, list[tuple[float, float, str]]] = {}
    labels: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    for reading in readings:
        if not reading.ok:
            continue
        found = [r for r in registers(reading.decoded) if r.storage == 0 and r.unit and is_number(r.value)]
        if found:
            order = [r.key for r in found]
        for r in found:
            points.setdefault(r.key, []).append((reading.time, float(r.value), r.unit))
            labels[r.key] = (r.label, r.unit)
    keys = order + [k for k in points if k not in order]
    out = []
    for k in keys:
        label, unit = labels[k]  # the newest reading's unit: durations move from hours to days as a meter ages
        said = [(t, in_unit(v, u, unit)) for t, v, u in points[k]]
        out.append(Series(k, label, unit, tuple((t, v) for t, v in said if v is not None)))
    return out


def chart(series: Series, start: float, end: float) -> Tag:
    """One register as an SVG line chart from `start` to `end`, with labelled axes."""
    return line_chart(series.label, series.unit, [Line(series.label, series.points)], start, end,
                      empty="no readings in this range")


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
