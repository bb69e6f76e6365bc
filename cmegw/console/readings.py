# -*- test-case-name: tests.test_console_readout_commands -*-
"""
A reading in the console, as `cmegw.readout.views.reading_view` orders it
and the web pages show it: who the meter is, when it was read and the
meter's own clock, the current registers (the counters first), the other
values, and every record as decoded when asked for (the word ``records``
after ``mbus read`` and ``show meter``).  Digit groups are plain spaces.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from cmegw.console.framework import Arguments, columns, table_lines
from cmegw.readout import views

#: The word that asks for every record as decoded.
RECORDS = "records"


def plain(text: str) -> str:
    """A terminal's digit groups: plain spaces (the pages' narrow no-break spaces confuse some terminals)."""
    return text.replace(views.GROUP, " ")


def wants_records(args: Arguments) -> tuple[list[str], bool]:
    """The words without a last ``records``, and whether it was there."""
    words = args.words
    if words and words[-1].lower() == RECORDS:
        return words[:-1], True
    return words, False


def register_rows(found: Sequence[views.Register]) -> list[tuple[str, str]]:
    return [(r.label, plain(r.text)) for r in found]


def identity_lines(view: views.ReadingView) -> list[str]:
    return table_lines(view.identity)


def times_line(view: views.ReadingView, read_time: float | None, now: float, reading_id: int | None = None) -> str:
    """``Read 2024-03-12 14:23:00 (2 min ago), reading 7; meter's clock 2024-03-12 14:23:00 (in step ...)``."""
    parts = []
    if read_time is not None:
        parts.append(f"Read {views.local_time(read_time)} ({views.age_text(now - read_time)})"
                     + (f", reading {reading_id}" if reading_id is not None else ""))
    if view.meter_clock:
        parts.append(f"meter's clock {view.meter_clock}" + (f" ({plain(view.drift)})" if view.drift else ""))
    return "; ".join(parts)


def record_lines(view: views.ReadingView) -> list[str]:
    table = view.records
    return columns(table.header, [tuple(plain(c) for c in row) for row in table.rows])


def reading_lines(decoded: Mapping[str, Any], read_time: float | None, now: float, records: bool = False,
                  reading_id: int | None = None, status: bool = True) -> list[str]:
    """
    The times, the current registers, the other values, the meter's status
    (unless told not to: a page that says it elsewhere), and every record
    when `records`, else how to ask for them.
    """
    view = views.reading_view(decoded, read_time)
    lines = [times_line(view, read_time, now, reading_id)]
    lines += table_lines(register_rows(view.main)) if view.main else ["  no current register"]
    if view.others:
        lines += ["Other values", *table_lines(register_rows(view.others))]
    if status and view.status:
        lines.append("Meter's status: " + ", ".join(view.status))
    if records:
        lines += [f"Every record as decoded ({len(view.records.rows)})", *record_lines(view)]
    else:
        lines.append(f"({len(view.records.rows)} records as decoded: add '{RECORDS}' to the command)")
    return lines
