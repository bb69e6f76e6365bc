# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
A reading on a page, as `cmegw.readout.views.reading_view` orders it: when
it was read and the meter's own clock, the current registers large, the
other values and every record as decoded one click away (``<details>``).
The Meters page (a meter read from a scan) and a meter's page of the
readouts draw it with these, so both say the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from twisted.web.template import Tag, tags

from cmegw.readout.formats import age_text, local_time
from cmegw.web.pages.widgets import grid_table, kv_table

if TYPE_CHECKING:
    from cmegw.readout.views import ReadingView

#: The tables' own styles (wrapping and alignment of the record detail), linked in the pages' head.
STYLE = tags.link(rel="stylesheet", href="/static/readings.css")


def identity_table(view: ReadingView, first: Iterable[tuple[str, Any]] = ()) -> Tag:
    """Who the meter is: the `first` rows (the page's own), then what the reading says."""
    return kv_table([*first, *view.identity])


def times_line(view: ReadingView, read_time: float | None, now: float, reading_id: int | None = None) -> Tag:
    """``Read 2024-03-12 14:23:00 (just now), reading 7 · meter's clock 2024-03-12 14:23:00 (in step)``."""
    parts: list[Any] = []
    if read_time is not None:
        parts += ["Read ", tags.time(local_time(read_time)), f" ({age_text(now - read_time)})"]
        if reading_id is not None:
            parts.append(f", reading {reading_id}")
    if view.meter_clock:
        parts += [" · " if parts else "", "meter's clock ", tags.time(view.meter_clock),
                  f" ({view.drift})" if view.drift else ""]
    return tags.p(*parts, class_="muted reading-times")


def values_table(view: ReadingView) -> Tag:
    if not view.main:
        return tags.p("No current register.", class_="muted")
    return tags.table(tags.tbody(*[tags.tr(tags.th(r.label, scope="row"), tags.td(r.text, class_="value"))
                                   for r in view.main]), class_="kv values")


def reading_parts(view: ReadingView, read_time: float | None, now: float, reading_id: int | None = None,
                  status: bool = True) -> list[Any]:
    """
    The times, the current registers, the meter's status (unless the page
    shows it elsewhere), then the other values and every record folded.
    """
    parts: list[Any] = [times_line(view, read_time, now, reading_id), values_table(view)]
    if status and view.status:
        parts.append(tags.p("Meter's status: ", *[tags.span(f, class_="badge badge-warn") for f in view.status]))
    if view.others:
        parts.append(tags.details(tags.summary(f"Other values ({len(view.others)})"),
                                  kv_table([(r.label, tags.span(r.text, class_="value")) for r in view.others]),
                                  class_="reading-others"))
    records = view.records
    parts.append(tags.details(tags.summary(f"Every record as decoded ({len(records.rows)})"),
                              tags.div(grid_table(records.header, records.rows, numeric=False),
                                       class_="reading-records"),
                              class_="reading-detail"))
    return parts
