# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
One meter's page (``/readouts/<id>``): who the meter is (manufacturer,
identification, medium, version, secondary address), its last reading as a
person reads the meter (the main registers first, every record one click
away), a chart of each register over the chosen range (24 h, 7 d, 30 d,
all) with CSV and JSON downloads of that range, and its settings.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet import defer
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.web.pages.admin import Admin
from cmegw.web.pages.charts import chart_figure, register_series
from cmegw.web.pages.forms import FormState, applies_text, post_form, settings_form, settings_state
from cmegw.web.pages.layout import LIVE_SECONDS, live
from cmegw.web.pages.reading_view import reading_parts
from cmegw.web.pages.readout_views import alarm_text, interval_text, meter_fields, next_read_text
from cmegw.web.pages.widgets import button, card, hidden, kv_table

DAY = 86400
#: The history ranges: (query value, label, seconds; None = everything kept).
RANGES = (("24h", "24 h", DAY), ("7d", "7 d", 7 * DAY), ("30d", "30 d", 30 * DAY), ("all", "all", None))
DEFAULT_RANGE = "7d"
#: The most readings one page charts (the newest of the range).
HISTORY_LIMIT = 20000


def chosen_range(request: IRequest) -> tuple[str, float | None]:
    """The range the page shows: its name and its length in seconds (None: all)."""
    values = (request.args or {}).get(b"range") or [b""]
    name = values[0].decode("ascii", "replace")
    for key, _, seconds in RANGES:
        if key == name:
            return key, seconds
    return DEFAULT_RANGE, dict((k, s) for k, _, s in RANGES)[DEFAULT_RANGE]


def _text(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def identity_card(admin: Admin, key: str, status: Any) -> Tag:
    from cmegw.readout.views import reading_view, status_flags  # the readings' views load with the first reading shown

    config = admin.gateway.store.config
    meter = config.meters.get(key)
    last = status.last_reading if status is not None else None
    decoded: Mapping[str, Any] = last.decoded if last is not None else {}
    rows: list[tuple[str, Any]] = []
    if meter is not None:
        rows += [("Name", _text(meter.name)), ("Line", str(meter.line)), ("Address", tags.code(meter.address))]
    rows += reading_view(decoded).identity if decoded else [("Meter", "not read yet")]
    if meter is not None:
        rows += [("Read every", interval_text(config, key, status)),
                 ("Next read", next_read_text(status, meter.enabled))]
    alarm = alarm_text(status)
    flags = status_flags(decoded.get("status"))
    rows.append(("Alarm", tags.span(alarm, class_="badge badge-alarm", role="alert") if alarm else "no"))
    rows.append(("Meter's status", tags.span(*[tags.span(f, class_="badge badge-warn") for f in flags])
                 if flags else ("ok" if last is not None else "—")))
    if status is not None:
        rows.append(("Reads", f"{status.reads} ({status.failures} failed, {status.overruns} missed: "
                              "still busy when due)"))
        if status.last_error and not alarm:
            rows.append(("Last error", tags.span(status.last_error, class_="text-error")))
    return card("Meter", kv_table(rows), id="identity")


def last_reading_card(admin: Admin, status: Any) -> Tag:
    last = status.last_reading if status is not None else None
    if last is None:
        return card("Last reading", tags.p("No good reading yet.", class_="muted"), id="last-reading")
    from cmegw.readout.views import reading_view  # the readings' views load with the first reading shown

    view = reading_view(last.decoded, last.time)
    return card("Last reading", *reading_parts(view, last.time, admin.clock.seconds(), last.id, status=False),
                id="last-reading")


def range_links(key: str, current: str) -> Tag:
    links = []
    for name, label, _ in RANGES:
        extra = {"aria-current": "true", "class": "button small primary"} if name == current else {
            "class": "button small secondary"}
        links.append(tags.a(label, href=f"/readouts/{key}?range={name}", **extra))
    return tags.nav(*links, class_="ranges", **{"aria-label": "Range"})


def history_card(admin: Admin, key: str, current: str, seconds: float | None, readings: list[Any]) -> Tag:
    now = admin.clock.seconds()
    good = [r for r in readings if r.ok]
    start = now - seconds if seconds is not None else (readings[0].time if readings else now - DAY)
    series = register_series(good)
    failed = len(readings) - len(good)
    summary = (f"{len(good)} good readings" + (f", {failed} failed" if failed else "") +
               (f" (the newest {HISTORY_LIMIT})" if len(readings) >= HISTORY_LIMIT else ""))
    charts: Any = tags.div(*[chart_figure(s, start, now) for s in series], class_="charts") if series else tags.p(
        "No reading with a numeric register in this range.", class_="muted")
    query = f"?range={current}"
    return card("History", range_links(key, current), tags.p(summary, class_="muted"), charts,
                tags.p("Download this range: ", tags.a("CSV", href=f"/readouts/{key}/readings.csv{query}"), " · ",
                       tags.a("JSON", href=f"/readouts/{key}/readings.json{query}"), class_="muted"),
                id="history", wide=True)


def settings_card(admin: Admin, request: IRequest, key: str, state: FormState | None) -> Tag:
    if key not in admin.gateway.store.config.meters:
        return card("Settings", tags.p("This meter is no longer in the list; its readings stay in the store.",
                                       class_="muted"), id="settings")
    fields = meter_fields(key)
    return card("Settings",
                settings_form(admin, request, f"/readouts/{key}/settings", key, fields,
                              state or settings_state(admin, fields), applies=applies_text(fields)),
                tags.div(post_form(admin, request, f"/readouts/{key}/read", hidden("back", f"/readouts/{key}"),
                                   button("Read now", "secondary"), class_="inline"),
                         post_form(admin, request, f"/readouts/{key}/remove",
                                   button("Remove from the list", "link danger"), class_="inline"),
                         class_="actions"),
                id="settings")


def meter_content(admin: Admin, request: IRequest, key: str, state: FormState | None = None,
                  live_seconds: int = LIVE_SECONDS) -> defer.Deferred:
    """
    The meter's page; fires once its readings of the range are read from the
    store.  Its status and last reading update by themselves every `live_seconds`.
    """
    readout = admin.gateway.state.readout
    status = readout.meters.get(key) if readout is not None else None
    current, seconds = chosen_range(request)

    def build(readings: list[Any], problem: str = "") -> Tag:
        if readout is not None and not problem:
            history = history_card(admin, key, current, seconds, readings)
        else:
            history = card("History", tags.p(problem or "The readouts are not running: the reading store is closed.",
                                             class_="muted"), id="history", wide=True)
        return tags.div(live(identity_card(admin, key, status), live_seconds),
                        live(last_reading_card(admin, status), live_seconds), history,
                        settings_card(admin, request, key, state), class_="cards")

    if readout is None:
        return defer.succeed(build([]))
    since = admin.clock.seconds() - seconds if seconds is not None else None
    d = defer.maybeDeferred(readout.readings, key, since, None, HISTORY_LIMIT)
    return d.addCallbacks(build, lambda failure: build([], "The reading store could not be read: "
                                                         + failure.getErrorMessage()))
