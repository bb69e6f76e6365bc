# -*- test-case-name: tests.test_web_pages_serial -*-
"""
The M-Bus Serial pages: statistics and configuration (baud rate) of each line.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import BAUD_RATES
from cmegw.ops.graphs import graphs_panel
from cmegw.stats import LINE_COUNTERS, line_rows
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.layout import live
from cmegw.web.pages.forms import Field, FormState, applies_text, setting_field, settings_form, settings_state
from cmegw.web.pages.ops import STYLE as GRAPHS_STYLE
from cmegw.web.pages.widgets import byte_size, card, grid_table, unavailable

TABS = (("Statistics", "/serial"), ("Configuration", "/serial/configuration"), ("Trace", "/trace"))

#: (label, attribute of LineStatistics) in the device's order.
STATISTICS = LINE_COUNTERS


def line_fields(n: int) -> list[Field]:
    return [setting_field(f"line.{n}.baud_rate", "select",
                          tuple((str(b), f"{b}") for b in BAUD_RATES),
                          help="M-Bus meters talk 300 or 2400 bit/s; some accept more."),
            setting_field(f"line.{n}.extra_slack", "number",
                          help="Seconds added to every timeout beyond the adapter's own slack (radio links, "
                               "repeaters); 0 for a wired bus."),
            setting_field(f"line.{n}.scan_silent_retries", "number",
                          help="How often a scan tries an address again that did not answer; 0 halves the scan "
                               "of a sparse bus. A garbled answer is always tried again.")]


def counter_cell(label: str, value: int | None) -> object:
    """A line counter as the page shows it: byte counts as people read them (the exact count in the title)."""
    return byte_size(value) if value is not None and label.endswith(" bytes") else unavailable(value)


def statistics_content(admin: Admin) -> Tag:
    stats = admin.gateway.state.lines
    numbers = list(admin.gateway.state.config.lines)
    header = ["Counter"] + [f"Line {n}" for n in numbers]
    rows = []
    per_line = {n: dict(line_rows(stats[n])) for n in numbers if n in stats}
    for label, _ in STATISTICS:
        rows.append([label] + [counter_cell(label, per_line[n][label]) if n in per_line else "—" for n in numbers])
    rows.append(["State"] + [stats[n].state if n in stats else "stopped" for n in numbers])
    rows.append(["Device"] + [stats[n].device if n in stats else "—" for n in numbers])
    rows.append(["Baud rate"] + [stats[n].baud_rate if n in stats else "—" for n in numbers])
    timing = {n: dict(admin.gateway.state.line_timing(n)) for n in numbers}
    for label in dict.fromkeys(label for rows_of_line in timing.values() for label in rows_of_line):
        rows.append([label] + [timing[n].get(label, "—") for n in numbers])
    return card("Statistics", grid_table(header, rows),
                tags.p("Error counters come from the serial port's driver; "
                       "\u201cunavailable\u201d where the driver keeps none.", class_="muted"), wide=True,
                id="serial-statistics")


def baud_warning(admin: Admin, n: int) -> list[Tag]:
    """A warning when line `n` runs at another rate than the one its last scan found meters at."""
    bus = admin.gateway.state.bus.get(n)
    stats = admin.gateway.state.lines.get(n)
    scan = getattr(bus, "scan", None)
    if scan is None or not scan.found or not scan.baud or stats is None or stats.baud_rate in (None, scan.baud):
        return []
    count = len(scan.found)
    return [tags.p(f"The last scan found {count} meter{'s' if count != 1 else ''} at {scan.baud} baud; the line "
                   f"runs at {stats.baud_rate} baud now. Meters set to {scan.baud} baud do not answer at another "
                   f"rate: set the line back, or switch the meters first.", class_="notice notice-warn")]


def configuration_content(admin: Admin, request: IRequest, states: dict[int, FormState]) -> Tag:
    forms = []
    for n, line in admin.gateway.store.config.lines.items():
        fields = line_fields(n)
        state = states.get(n) or settings_state(admin, fields)
        stats = admin.gateway.state.lines.get(n)
        device = stats.device if stats is not None and stats.device else line.device
        forms.append(card(f"Line {n}", tags.p(tags.code(device), class_="muted"), *baud_warning(admin, n),
                          settings_form(admin, request, "/serial/configuration", str(n), fields, state,
                                        applies=applies_text(fields)),
                          id=f"line-{n}"))
    return tags.div(*forms, class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin, "serial", "M-Bus Serial", TABS)
    page = route.page

    @route.get("/serial")
    def serial_statistics(request: IRequest) -> Any:
        last_hour = live(card("Last hour", graphs_panel(admin.gateway.state, tunnels=False), wide=True,
                              id="serial-graphs"))
        return page(request, tags.div(live(statistics_content(admin)), last_hour, class_="cards"), head=GRAPHS_STYLE)

    route.numbered_settings("/serial/configuration", "serial_configuration", lambda: admin.gateway.store.config.lines,
                            line_fields, configuration_content, anchor="line-")
