# -*- test-case-name: tests.test_web_pages_meters -*-
"""
The Meters page and its JSON API: the integrated M-Bus master of each line.

- ``/meters``: per line, a scan (primary or secondary, with progress; the
  scan and meters cards update live every two seconds while one runs, the
  page reloads itself without JavaScript, and the scan can be
  stopped), the table of meters found (address, secondary ID, manufacturer,
  medium, version) with a Read button each, a form to read any address, and
  the last reading's records.  Downloads: ``/meters/N/meters.csv|json`` (the
  last scan's meters) and ``/meters/N/reading.csv|json`` (the last reading).
- ``/api/meters``, ``/api/meters/N``: scans and results as JSON;
  ``POST /api/meters/N/scan`` starts one (``{"kind": "primary"}``,
  ``"secondary"``, optional ``"identify": false`` and ``"silent_retries": 0``
  instead of the line's ``scan_silent_retries``), ``DELETE`` stops it;
  ``POST /api/meters/N/read`` (``{"address": "5"}``) reads a meter and
  answers its records (502 with the error naming the address when the meter
  cannot be read); ``GET /api/meters/N/reading`` the last reading.

The pages only call the master (`cmegw.mbus.master`) and read what it
publishes; every bus exchange goes through the line's arbiter.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.mbus.master import MeterError, ScanRunning, parse_meter_address
from cmegw.mbus.results import MeterInfo, Reading, Scan
from cmegw.readout.formats import local_time, version_text
from cmegw.state import BusView
from cmegw.web.api import ApiError, guard, json_error, json_handler, json_response, read_json
from cmegw.web.http import security_headers
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.layout import LIVE_SECONDS, live, reload_without_script
from cmegw.web.pages.forms import form_value, post_form
from cmegw.web.pages.reading_view import STYLE as READINGS_STYLE, identity_table, reading_parts
from cmegw.web.pages.readout_views import METER_TABS, reading_json
from cmegw.web.pages.widgets import Notice, button, card, grid_table, hidden, kv_table

#: Seconds between reloads of the page while a scan runs.
REFRESH_SECONDS = 2
METER_COLUMNS = ("primary", "secondary", "identification", "manufacturer", "version", "medium", "medium_name")
RECORD_COLUMNS = ("value", "unit", "scale", "description", "storage", "tariff", "subunit", "function", "timestamp")


class MeterPages:
    """The last reading (or error) of each line, for the page and the downloads."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.readings: dict[int, Reading] = {}
        self.errors: dict[int, str] = {}

    @property
    def masters(self) -> dict[int, BusView]:
        """Each line's bus as the gateway publishes it."""
        return self.admin.gateway.state.bus

    def master(self, n: int) -> BusView | None:
        return self.masters.get(n)

    def scanning(self) -> bool:
        return any(m.scan is not None and m.scan.running for m in self.masters.values())

    def meters(self, master: BusView) -> list[MeterInfo]:
        """The meters to show: the running scan's so far, else the last finished scan's."""
        scan = master.scan
        if scan is not None and scan.running:
            return list(scan.found)
        if scan is not None and scan.kind in master.results:
            return master.results[scan.kind]
        return next(iter(master.results.values()), [])

    def start_scan(self, master: BusView, kind: str, identify: bool = True, silent_retries: int | None = None) -> Scan:
        """Start a scan; `silent_retries` None: the line's setting."""
        chosen = {} if silent_retries is None else {"silent_retries": silent_retries}
        return self.admin.gateway.start_scan(master.number, kind, identify=identify, **chosen)

    @defer.inlineCallbacks
    def read(self, master: BusView, text: str) -> Any:
        """Read the meter at `text`; the `Reading`, or raise ValueError / MeterError (kept as the line's error)."""
        address = parse_meter_address(text)
        try:
            reading = yield self.admin.gateway.read_meter(master.number, address)
        except MeterError as e:
            self.errors[master.number] = str(e)
            self.readings.pop(master.number, None)
            raise
        self.readings[master.number] = reading
        self.errors.pop(master.number, None)
        return reading


# -- views ----------------------------------------------------------------------------------------


def line_view(master: BusView) -> dict[str, Any]:
    stats = master.stats
    return {
        "line": master.number,
        "scan": master.scan.as_dict() if master.scan is not None else None,
        "results": {kind: [m.as_dict() for m in found] for kind, found in master.results.items()},
        "bus": stats.as_dict(),
    }


def meters_csv(found: list[MeterInfo]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(METER_COLUMNS)
    for meter in found:
        row = meter.as_dict()
        writer.writerow(["" if row[c] is None else row[c] for c in METER_COLUMNS])
    return out.getvalue().encode("utf-8")


def reading_csv(reading: Reading) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    meter = reading.meter
    writer.writerow(["# meter", reading.address, str(meter.secondary or ""), meter.medium_name])
    writer.writerow(RECORD_COLUMNS)
    for row in reading.rows():
        writer.writerow(["" if row[c] is None else row[c] for c in RECORD_COLUMNS])
    return out.getvalue().encode("utf-8")


def download(request: IRequest, body: bytes, kind: bytes, filename: str) -> bytes:
    security_headers(request)
    request.setHeader(b"content-type", kind)
    request.setHeader(b"content-disposition", f'attachment; filename="{filename}"'.encode())
    return body


# -- page -----------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def scan_card(admin: Admin, request: IRequest, pages: MeterPages, master: BusView) -> Tag:
    n = master.number
    scan = master.scan
    rows: list[tuple[str, Any]] = []
    if scan is None:
        rows.append(("Scan", "none yet"))
    else:
        rows += [("Scan", f"{scan.kind}, {scan.state}"),
                 ("Progress", tags.progress(f"{scan.progress:.0%}", value=f"{scan.progress:.3f}", max="1")),
                 ("Probes", f"{scan.done}" + (f" of {scan.total}" if scan.total else "")),
                 ("Duration", scan.duration_text(admin.clock.seconds())),
                 ("Meters found", len(scan.found))]
        if scan.running and scan.current:
            rows.append(("Now trying", scan.current))
    stats = master.stats
    rows.append(("Bus transactions", f"{stats.transactions} ({stats.answered} answered, {stats.silent} silent, "
                                     f"{stats.garbled + stats.invalid + stats.truncated} garbled)"))
    controls: list[Any] = []
    if scan is not None and scan.running:
        controls.append(post_form(admin, request, "/meters/stop", hidden("line", str(n)),
                                  button("Stop the scan", "secondary")))
    else:
        controls.append(post_form(
            admin, request, "/meters/scan", hidden("line", str(n)),
            tags.label("Search by ", tags.select(tags.option("primary address", value="primary"),
                                                 tags.option("secondary address", value="secondary"),
                                                 name="kind", id=f"kind-{n}"), **{"for": f"kind-{n}"}),
            " ", button("Scan")))
    errors = [tags.li(e) for e in (scan.errors if scan is not None else [])]
    return tags.div(kv_table(rows), *controls, tags.ul(*errors, class_="errors") if errors else "")


def meters_table(admin: Admin, request: IRequest, master: BusView, found: list[MeterInfo]) -> Tag:
    if not found:
        return tags.p("No meters found yet.", class_="muted")
    from cmegw.readout.views import manufacturer_text  # the readings' views load with the first reading shown

    rows = []
    for meter in found:
        target = str(meter.secondary) if meter.secondary is not None else (
            str(meter.primary) if meter.primary is not None else meter.identification)
        read = post_form(admin, request, "/meters/read", hidden("line", str(master.number)),
                         hidden("address", target), button("Read", "secondary"))
        rows.append([_value(meter.primary), _value(str(meter.secondary) if meter.secondary else meter.ident),
                     _value(manufacturer_text(meter.manufacturer)), _value(meter.medium_name),
                     _value(version_text(meter.version)), read])
    n = master.number
    adopt: Any = ""
    if master.scan is None or not master.scan.running:
        adopt = post_form(admin, request, "/readouts/adopt", hidden("line", str(n)),
                          button("Add to meter list"),
                          tags.span(" Read on the schedule of the ", tags.a("meter list", href="/readouts"),
                                    "; meters listed already stay as they are.", class_="muted"),
                          class_="actions")
    return tags.div(grid_table(("Primary", "Secondary ID", "Manufacturer", "Medium", "Version", ""), rows,
                               numeric=False), adopt,
                    tags.p("Download: ", tags.a("CSV", href=f"/meters/{n}/meters.csv"), " · ",
                           tags.a("JSON", href=f"/meters/{n}/meters.json"), class_="muted"))


def reading_content(pages: MeterPages, master: BusView) -> Any:
    n = master.number
    error = pages.errors.get(n)
    if error:
        return tags.p(error, class_="error", role="alert")
    reading = pages.readings.get(n)
    if reading is None:
        return tags.p("No meter read yet.", class_="muted")
    from cmegw.readout.views import reading_view  # the readings' views load with the first reading shown

    view = reading_view(reading.as_dict(), reading.read_at)
    summary = identity_table(view, [("Address", reading.address), ("Telegrams", len(reading.telegrams))])
    return tags.div(summary, *reading_parts(view, reading.read_at, pages.admin.clock.seconds()),
                    tags.p("Download: ", tags.a("CSV", href=f"/meters/{n}/reading.csv"), " · ",
                           tags.a("JSON", href=f"/meters/{n}/reading.json"), class_="muted"))


def meters_content(admin: Admin, request: IRequest, pages: MeterPages) -> Tag:
    cards = []
    for n, master in sorted(pages.masters.items()):
        read_form = post_form(admin, request, "/meters/read", hidden("line", str(n)),
                              tags.label("Address ", tags.input(type="text", name="address", id=f"address-{n}",
                                                                placeholder="5 or 12345678-KAM-19-04",
                                                                required="required"), **{"for": f"address-{n}"}),
                              " ", button("Read"))
        seconds = REFRESH_SECONDS if pages.scanning() else LIVE_SECONDS
        cards.append(live(card(f"Line {n}: scan", scan_card(admin, request, pages, master), id=f"scan-{n}"), seconds))
        cards.append(live(card(f"Line {n}: meters", meters_table(admin, request, master, pages.meters(master)),
                               id=f"meters-{n}", wide=True), seconds))
        cards.append(card(f"Line {n}: read a meter", read_form, reading_content(pages, master),
                          id=f"reading-{n}", wide=True))
    if not cards:
        cards.append(card("Meters", tags.p("No line runs a master (the gateway is stopped).")))
    return tags.div(*cards, class_="cards")


# -- routes ---------------------------------------------------------------------------------------


def address_problem(text: str, problem: str) -> str:
    """Why the Read form's address was refused, in the words of the form (the decoder's echo left out)."""
    if not text.strip():
        return "Type the meter's address: a primary address (0 to 250) or a secondary address (12345678-KAM-19-04)."
    if problem.startswith("primary address"):
        return f"Not read: {problem}."
    return (f"Not read: {text.strip()!r} is not a meter address; type a primary address (0 to 250) or a secondary "
            "address (12345678-KAM-19-04, or its 16 hex digits).")


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin)
    pages = MeterPages(admin)

    def page(request: IRequest, code: int = 200, notice: Notice | None = None) -> Any:
        head = [READINGS_STYLE, reload_without_script(request, REFRESH_SECONDS) if pages.scanning() else ""]
        return admin.page(request, section="meters", title="Meters", content=meters_content(admin, request, pages),
                          code=code, notice=notice, head=head, active="/meters", tabs=METER_TABS)

    def posted_master(request: IRequest) -> BusView | None:
        line = form_value(request, "line")
        return pages.master(int(line)) if line.isdigit() else None

    @route.get("/meters")
    def meters_page(request: IRequest) -> Any:
        return page(request)

    @route.post("/meters/scan")
    def meters_scan(request: IRequest) -> Any:
        master = posted_master(request)
        if master is None:
            return page(request, 400, Notice("error", "There is no such line."))
        try:
            scan = pages.start_scan(master, form_value(request, "kind", "primary"))
        except (ValueError, ScanRunning) as e:
            return page(request, 409 if isinstance(e, ScanRunning) else 400, Notice("error", str(e)))
        return admin.see_other(request, f"/meters#scan-{master.number}",
                               Notice("info", f"The {scan.kind} scan of line {master.number} started at "
                                              f"{local_time(admin.clock.seconds())}; its progress and result "
                                              "show below."))

    @route.post("/meters/stop")
    def meters_stop(request: IRequest) -> Any:
        master = posted_master(request)
        if master is None or master.scan is None or not master.scan.running:
            return admin.see_other(request, "/meters", Notice("info", "No scan runs."))
        master.scan.cancel()
        return admin.see_other(request, f"/meters#scan-{master.number}",
                               Notice("info", f"The scan of line {master.number} was stopped."))

    @route.post("/meters/read")
    def meters_read(request: IRequest) -> Any:
        master = posted_master(request)
        if master is None:
            return page(request, 400, Notice("error", "There is no such line."))
        text = form_value(request, "address")
        d = pages.read(master, text)

        def done(reading: Reading) -> Any:
            return admin.see_other(request, f"/meters#reading-{master.number}",
                                   Notice("ok", f"Read the meter at {reading.address}."))

        def failed(failure: Any) -> Any:
            if failure.check(ValueError):
                return page(request, 400, Notice("error", address_problem(text, failure.getErrorMessage())))
            failure.trap(MeterError)  # the line's error, kept for its page
            return admin.see_other(request, f"/meters#reading-{master.number}",
                                   Notice("error", failure.getErrorMessage()))

        d.addCallbacks(done, failed)
        return d

    def line_master(n: int) -> BusView:
        master = pages.master(n)
        if master is None:
            raise ApiError(404, f"there is no line {n}")
        return master

    @route.get("/meters/<int:n>/meters.<string:kind>")
    def meters_download(request: IRequest, n: int, kind: str) -> Any:
        master = pages.master(n)
        if master is None or kind not in ("csv", "json"):
            return page(request, 404, Notice("error", "There is no such download."))
        found = pages.meters(master)
        if kind == "csv":
            return download(request, meters_csv(found), b"text/csv; charset=utf-8", f"meters-line{n}.csv")
        body = json.dumps([m.as_dict() for m in found], indent=2).encode() + b"\n"
        return download(request, body, b"application/json; charset=utf-8", f"meters-line{n}.json")

    @route.get("/meters/<int:n>/reading.<string:kind>")
    def meters_reading_download(request: IRequest, n: int, kind: str) -> Any:
        reading = pages.readings.get(n)
        if reading is None or kind not in ("csv", "json"):
            return page(request, 404, Notice("error", "No reading to download: read a meter first."))
        if kind == "csv":
            return download(request, reading_csv(reading), b"text/csv; charset=utf-8", f"reading-line{n}.csv")
        body = json.dumps(reading_json(reading.as_dict(), reading.read_at), indent=2).encode() + b"\n"
        return download(request, body, b"application/json; charset=utf-8", f"reading-line{n}.json")

    # -- JSON API

    @route.get("/api/meters")
    @json_handler
    def api_meters(request: IRequest) -> Any:
        return {"lines": {str(n): line_view(m) for n, m in sorted(pages.masters.items())}}

    @route.get("/api/meters/<int:n>")
    @json_handler
    def api_meters_line(request: IRequest, n: int) -> Any:
        return line_view(line_master(n))

    @app.route("/api/meters/<int:n>/scan", methods=["POST"])
    @json_handler
    def api_meters_scan(request: IRequest, n: int) -> Any:
        body = read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, 'send an object such as {"kind": "primary"}')
        master = line_master(n)
        identify = body.get("identify", True)
        if not isinstance(identify, bool):
            raise ApiError(400, "identify must be true or false")
        silent_retries = body.get("silent_retries")
        if silent_retries is not None and (not isinstance(silent_retries, int) or isinstance(silent_retries, bool)):
            raise ApiError(400, "silent_retries: tries again after silence, a whole number from 0 to 3")
        try:
            scan = pages.start_scan(master, str(body.get("kind", "primary")), identify, silent_retries)
        except ScanRunning as e:
            raise ApiError(409, str(e)) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return 202, scan.as_dict()

    @app.route("/api/meters/<int:n>/scan", methods=["DELETE"])
    @json_handler
    def api_meters_stop(request: IRequest, n: int) -> Any:
        guard(request)
        master = line_master(n)
        if master.scan is None or not master.scan.running:
            raise ApiError(409, f"no scan runs on line {n}")
        master.scan.cancel()
        return master.scan.as_dict()

    @app.route("/api/meters/<int:n>/read", methods=["POST"])
    @json_handler
    def api_meters_read(request: IRequest, n: int) -> Any:
        body = read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("address"), (str, int)) \
                or isinstance(body.get("address"), bool):
            raise ApiError(400, 'send {"address": "5"} (a primary or secondary address)')
        master = line_master(n)
        try:
            parse_meter_address(body["address"])
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        d = pages.read(master, str(body["address"]))

        def failed(failure: Any) -> bytes:
            failure.trap(MeterError)
            return json_error(request, 502, failure.getErrorMessage())

        d.addCallbacks(lambda reading: json_response(request, reading_json(reading.as_dict(), reading.read_at)),
                       failed)
        return d

    @route.get("/api/meters/<int:n>/reading")
    @json_handler
    def api_meters_reading(request: IRequest, n: int) -> Any:
        line_master(n)
        reading = pages.readings.get(n)
        if reading is None:
            raise ApiError(404, pages.errors.get(n) or f"no meter of line {n} has been read")
        return reading_json(reading.as_dict(), reading.read_at)
