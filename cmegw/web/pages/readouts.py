# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
The meter list of the scheduled readouts, in the Meters section.

- ``/readouts``: every meter of the list with its last reading (local time
  and how long ago), its main values in display units, its alarm (a red
  badge: ``no answer for 3 reads: <last error>``) and the meter's own status
  flags, and its next read; Read all now, Read now and Remove; a form to add a
  meter; the list as CSV (download, and upload: merge or replace, every
  refused cell named by row and column); the Delivery card.
- ``/readouts/<id>``: one meter (`cmegw.web.pages.readout_meter`): identity,
  last reading, charts of its registers, downloads of a range, its settings.
- ``/delivery``: the delivery targets' settings (`cmegw.web.pages.readout_delivery`).
- ``POST /readouts/adopt`` (from the Meters page): adds what the last scan of a
  line found.

Changes go through the configuration store (the one validation of the
model); reads through the gateway's ``read_meters_now`` action.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import Config, ConfigError
from cmegw.config.readout import MeterConfig, meters_table
from cmegw.config.settings import apply_settings, describe
from cmegw.config.store import ConfigFileError
from cmegw.readout.formats import age_text, local_time
from cmegw.web.pages import readout_delivery
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.forms import (Field, FormState, error_message, form_value, marked_fields, post_form,
                                   render_field, save_form, uploads)
from cmegw.web.pages.layout import LIVE_SECONDS, live, reload_without_script
from cmegw.web.pages.meters import REFRESH_SECONDS, download
from cmegw.web.pages.reading_view import STYLE as READINGS_STYLE
from cmegw.web.pages.readout_meter import chosen_range, meter_content
from cmegw.web.pages.readout_views import METER_TABS, alarm_text, interval_text, meter_fields, next_read_text
from cmegw.web.pages.widgets import Notice, button, card, grid_table, hidden

#: The add form's fields: the id, then the meter's settings (labels from the model).
ADD_FIELDS = [Field("add.id", "Meter ID", placeholder="heat-1",
                    help="Names the meter in MQTT topics, URLs and files: lower-case letters, digits, - and _.")] + [
    Field("add." + f.name.rsplit(".", 1)[1], f.label, placeholder=f.placeholder, help=f.help)
    for f in meter_fields("new") if not f.name.endswith(".enabled")]


#: The list page's forms, whose addresses (``/readouts/add``) a meter's page address would otherwise take.
LIST_FORMS = ("add", "import", "read", "adopt")


def readout_of(admin: Admin) -> Any:
    return admin.gateway.state.readout


def busy(admin: Admin) -> bool:
    readout = readout_of(admin)
    return readout is not None and any(s.queued or s.reading for s in readout.meters.values())


def live_seconds(admin: Admin) -> int:
    """How often the pages' status parts update: faster while reads are busy."""
    return REFRESH_SECONDS if busy(admin) else LIVE_SECONDS


def refresh(admin: Admin, request: IRequest) -> Any:
    """Without script, a page reloads itself while reads are busy (`reload_without_script`)."""
    return reload_without_script(request, REFRESH_SECONDS) if busy(admin) else ""


# -- the list -----------------------------------------------------------------------------------------


def last_cell(status: Any, now: float) -> Any:
    last = status.last_reading if status is not None else None
    if last is None:
        return tags.span("not read yet", class_="muted")
    return tags.span(when(last.time), tags.br(), tags.small(age_text(now - last.time), class_="muted"))


def when(moment: float | None) -> Any:
    """A local time as date and time on two lines (a narrow column)."""
    day, _, clock = local_time(moment).partition(" ")
    return tags.span(tags.span(day, class_="nowrap"), tags.br(), clock) if clock else day


def values_cell(status: Any) -> Any:
    last = status.last_reading if status is not None else None
    if last is None:
        return "—"
    from cmegw.readout.views import main_registers  # the readings' views load with the first reading shown

    shown = main_registers(last.decoded)
    if not shown:
        return "—"
    out: list[Any] = []
    for r in shown:
        out += [tags.span(r.text, class_="value", title=r.label), tags.br()]
    return tags.span(*out[:-1])


def alarm_cell(status: Any) -> Any:
    if status is None:
        return "—"
    badges: list[Any] = []
    alarm = alarm_text(status)
    if alarm:
        badges.append(tags.span(alarm, class_="badge badge-alarm", role="alert"))
    elif status.failures_in_row:
        badges.append(tags.span(f"{status.failures_in_row} failed: {status.last_error}", class_="badge badge-warn"))
    last = status.last_reading
    if last is not None:
        from cmegw.readout.views import status_flags  # the readings' views load with the first reading shown

        badges += [tags.span(flag, class_="badge badge-warn") for flag in status_flags(last.decoded.get("status"))]
    return tags.span(*badges, class_="badges") if badges else tags.span("ok", class_="muted")


def list_table(admin: Admin, request: IRequest) -> Tag:
    config = admin.gateway.store.config
    readout = readout_of(admin)
    statuses = readout.meters if readout is not None else {}
    now = admin.clock.seconds()
    if not config.meters:
        return tags.p("No meter in the list yet. Scan a line on the ", tags.a("M-Bus master", href="/meters"),
                      " tab and add what it found, add one below, or upload a list.", class_="muted")
    rows = []
    for key, meter in config.meters.items():
        status = statuses.get(key)
        actions = tags.span(
            post_form(admin, request, f"/readouts/{key}/read", hidden("back", "/readouts"),
                      button("Read now", "secondary small", title=f"Read {key} now"), class_="inline"),
            post_form(admin, request, f"/readouts/{key}/remove",
                      button("Remove", "link danger", title=f"Remove {key} from the list"), class_="inline"),
            class_="row-actions")
        rows.append([tags.span(tags.a(key, href=f"/readouts/{key}", class_="nowrap"), tags.br(),
                               tags.small(meter.name, class_="muted") if meter.name else ""),
                     str(meter.line), tags.code(meter.address), interval_text(config, key, status),
                     "on" if meter.enabled else "off", last_cell(status, now), values_cell(status),
                     alarm_cell(status), next_cell(status, meter.enabled), actions])
    header = ("Meter", describe("meter.x.line").label, describe("meter.x.address").label,
              describe("meter.x.interval").label, describe("meter.x.enabled").label, "Last reading", "Values",
              "Alarm", "Next read", "")
    return tags.div(grid_table(header, rows, numeric=False), class_="meter-list")


def next_cell(status: Any, enabled: bool) -> Any:
    text = next_read_text(status, enabled)
    return when(status.next_due) if status is not None and text == local_time(status.next_due) else text


def list_content(admin: Admin, request: IRequest, add: FormState | None = None,
                 import_errors: list[str] | None = None) -> Tag:
    readout = readout_of(admin)
    config = admin.gateway.store.config
    alarms = [key for key, s in (readout.meters.items() if readout is not None else ()) if s.alarm]
    head: list[Any] = [readout_delivery.store_banner(readout)]
    if readout is None:
        head.append(tags.div("The readouts are not running (the gateway is stopped or starting): the list can be "
                             "changed, nothing is read.", class_="banner banner-warn", role="status"))
    summary = f"{len(config.meters)} meter{'' if len(config.meters) == 1 else 's'}" + (f", {len(alarms)} in alarm" if alarms else "")
    listing = card(
        f"Meter list ({summary})", list_table(admin, request),
        tags.div(post_form(admin, request, "/readouts/read", button("Read all now"), class_="inline")
                 if config.meters else "",
                 tags.a("Download the list (CSV)", href="/readouts/meters.csv"), class_="actions"),
        id="meter-list", wide=True)
    live(listing, live_seconds(admin))
    add = add or FormState(values={"add.line": str(next(iter(config.lines)))})
    adding = card("Add a meter", post_form(
        admin, request, "/readouts/add", tags.div(*[render_field(f, add) for f in ADD_FIELDS], class_="fields"),
        tags.div(button("Add"), class_="actions"), class_="settings", novalidate="novalidate"), id="add")
    errors = tags.ul(*[tags.li(e) for e in import_errors], class_="errors text-error", role="alert") \
        if import_errors else ""
    upload = card("Upload a meter list (CSV)", tags.p(
        "Columns id, line, address, name, interval, enabled (the downloaded file's); comma or semicolon.",
        class_="muted"), errors, post_form(
        admin, request, "/readouts/import",
        tags.div(tags.div(tags.label("CSV file", for_="f-file"), tags.input(type="file", name="file", id="f-file",
                                                                            accept=".csv,text/csv"), class_="field"),
                 tags.div(tags.label("Mode", for_="f-mode"), tags.select(
                     tags.option("merge: add and update the file's meters", value="merge"),
                     tags.option("replace: the list becomes the file's meters", value="replace"),
                     name="mode", id="f-mode"), class_="field"), class_="fields"),
        tags.div(button("Upload"), class_="actions"), multipart=True, class_="settings"), id="import")
    return tags.div(*head, listing, readout_delivery.delivery_card(admin), adding, upload, class_="cards")


# -- changing the list --------------------------------------------------------------------------------


def save(admin: Admin, new: Config) -> str:
    """Save `new`: "" or why not."""
    return readout_delivery.save_config(admin, new)


def add_meter(admin: Admin, request: IRequest) -> tuple[FormState, str]:
    """Check the add form (every field at once, by the model) and save the new meter: (state, its id or "")."""
    typed = {f.name: form_value(request, f.name).strip() for f in ADD_FIELDS}
    state = FormState(values=dict(typed))
    config = admin.gateway.store.config
    key = typed["add.id"]
    if not key:
        state.errors["add.id"] = "Give the meter an id, such as heat-1."
    elif key in config.meters:
        state.errors["add.id"] = f"{key} is in the list already; change it on its own page."
    else:
        try:
            meters_table({key: MeterConfig()})
        except ConfigError as e:
            state.errors["add.id"] = error_message(e)
    probe = key if "add.id" not in state.errors else next(
        f"new-{i}" for i in range(len(config.meters) + 1) if f"new-{i}" not in config.meters)
    base = config.evolve(meters={**config.meters, probe: MeterConfig(line=next(iter(config.lines)))})
    changes = {f"meter.{probe}.{f.name[4:]}": typed[f.name] for f in ADD_FIELDS
               if f.name != "add.id" and (typed[f.name] or f.name != "add.line")}  # no line: the first
    for name, value in changes.items():
        try:
            apply_settings(base, {name: value})
        except ConfigError as e:  # the id stood in for while it is wrong is no name of the user's
            message = error_message(e)
            if probe != key:
                message = message.replace(f"meter {probe}", "the new meter")
            state.errors["add." + name.rsplit(".", 1)[1]] = message
    if state.errors:
        state.notice = Notice("error", f"Nothing was added: correct {marked_fields(state)}.")
        return state, ""
    problem = save(admin, apply_settings(base, changes))
    if problem:
        state.notice = Notice("error", problem)
        return state, ""
    return FormState(notice=Notice("ok", [f"Meter {key} added; ", tags.a("its page", href=f"/readouts/{key}"),
                                          " shows its readings."])), key


def import_list(admin: Admin, request: IRequest) -> tuple[Notice, list[str]]:
    """The uploaded CSV file merged into (or replacing) the list: the notice and the file's errors."""
    upload = uploads(request).get("file")
    if upload is None or not upload.data.strip():
        return Notice("error", "Choose a CSV file to upload."), []
    replace = form_value(request, "mode") == "replace"
    config = admin.gateway.store.config
    from cmegw.readout.meterlist import MeterListError, import_csv  # loaded by the first import or export

    try:
        new = import_csv(config, upload.data, replace=replace)
    except MeterListError as e:
        return Notice("error", f"Nothing was changed: {upload.filename} has {len(e.errors)} problem(s)."), e.errors
    added = [k for k in new.meters if k not in config.meters]
    removed = [k for k in config.meters if k not in new.meters]
    changed = [k for k in new.meters if k in config.meters and new.meters[k] != config.meters[k]]
    if new != config:
        problem = save(admin, new)
        if problem:
            return Notice("error", problem), []
    parts = [f"{label}: {', '.join(keys)}" for label, keys in (("added", added), ("changed", changed),
                                                              ("removed", removed)) if keys]
    return Notice("ok", f"{upload.filename}: " + ("; ".join(parts) + "." if parts else "nothing changed.")), []


def queue_reads(admin: Admin, keys: list[str] | None) -> tuple[int, Notice]:
    """Ask the gateway to read meters now (not waiting for them): the page's code and notice."""
    if readout_of(admin) is None:
        return 503, Notice("error", "The readouts are not running: nothing can be read now.")
    failures: list[Any] = []
    d = defer.maybeDeferred(admin.gateway.read_meters_now, keys)
    d.addErrback(failures.append)
    if failures:
        error = failures[0]
        code = 404 if error.check(KeyError) else 503 if error.check(RuntimeError) else 500
        message = error.value.args[0] if error.value.args else error.getErrorMessage()
        return code, Notice("error", f"Nothing was read: {message}")
    what = f"Reading {keys[0]}" if keys and len(keys) == 1 else "Reading every meter of the list"
    return 200, Notice("info", f"{what} now; this page follows the reads by itself.")


# -- routes -------------------------------------------------------------------------------------------


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin, "meters", "Meters", METER_TABS)
    readout_delivery.routes(route)

    def list_page(request: IRequest, code: int = 200, notice: Notice | None = None, **content: Any) -> Any:
        return admin.page(request, section="meters", title="Meter list", tabs=METER_TABS, active="/readouts",
                          content=list_content(admin, request, **content), code=code, notice=notice,
                          head=refresh(admin, request))

    def meter_page(request: IRequest, key: str, code: int = 200, notice: Notice | None = None,
                   state: FormState | None = None) -> Any:
        return admin.page(request, section="meters", title=f"Meter {key}", tabs=METER_TABS, active="/readouts",
                          content=meter_content(admin, request, key, state, live_seconds(admin)), code=code,
                          notice=notice, head=[READINGS_STYLE, refresh(admin, request)])

    def known(key: str) -> bool:
        readout = readout_of(admin)
        return key in admin.gateway.store.config.meters or (readout is not None and key in readout.meters)

    def unknown(request: IRequest, key: str) -> Any:
        return list_page(request, 404, Notice("error", f"There is no meter {key} in the list."))

    @route.get("/readouts")
    def readouts_list(request: IRequest) -> Any:
        return list_page(request)

    @route.get("/readouts/meters.csv")
    def readouts_list_csv(request: IRequest) -> Any:
        from cmegw.readout.meterlist import export_csv

        return download(request, export_csv(admin.gateway.store.config).encode("utf-8"), b"text/csv; charset=utf-8",
                        "meters.csv")

    @route.post("/readouts/add")
    def readouts_add(request: IRequest) -> Any:
        state, key = add_meter(admin, request)
        if key:
            return admin.see_other(request, "/readouts", state.notice)
        return list_page(request, 400, state.notice, add=state)

    @route.post("/readouts/import")
    def readouts_import(request: IRequest) -> Any:
        notice, errors = import_list(admin, request)
        if notice.kind != "error":
            return admin.see_other(request, "/readouts", notice)
        return list_page(request, 400, notice, import_errors=errors)

    @route.post("/readouts/read")
    def readouts_read_all(request: IRequest) -> Any:
        code, notice = queue_reads(admin, None)
        if code == 200:
            return admin.see_other(request, "/readouts", notice)
        return list_page(request, code, notice)

    @route.post("/readouts/adopt")
    def readouts_adopt(request: IRequest) -> Any:
        line = form_value(request, "line")
        if not line.isdigit():
            return list_page(request, 400, Notice("error", "There is no such line."))
        try:
            added = admin.gateway.adopt_meters(int(line), None, form_value(request, "interval").strip())
        except KeyError:
            return list_page(request, 404, Notice("error", f"There is no line {line}."))
        except ConfigError as e:
            return list_page(request, 400, Notice("error", f"Nothing was added: {error_message(e)}"))
        except (ConfigFileError, OSError) as e:
            return list_page(request, 500, Notice("error", f"Nothing was added: {e}"))
        if not added:
            return admin.see_other(request, "/readouts", Notice(
                "info", f"Nothing added: every meter the last scan of line {line} found is in the list already."))
        return admin.see_other(request, "/readouts", Notice(
            "ok", f"Added {len(added)} meter(s) of line {line} to the list: " + ", ".join(added) + "."))

    @route.get("/readouts/<string:key>")
    def readouts_meter(request: IRequest, key: str) -> Any:
        if not known(key) and key in LIST_FORMS:  # a bookmark or reload of a form's address: its page
            return admin.see_other(request, "/readouts")
        if not known(key):
            return unknown(request, key)
        return meter_page(request, key)

    @route.post("/readouts/<string:key>/read")
    def readouts_read(request: IRequest, key: str) -> Any:
        if not known(key):
            return unknown(request, key)
        code, notice = queue_reads(admin, [key])
        back = form_value(request, "back") == f"/readouts/{key}"
        if code == 200:
            return admin.see_other(request, f"/readouts/{key}" if back else "/readouts", notice)
        if back:
            return meter_page(request, key, code, notice)
        return list_page(request, code, notice)

    @route.post("/readouts/<string:key>/remove")
    def readouts_remove(request: IRequest, key: str) -> Any:
        config = admin.gateway.store.config
        if key not in config.meters:
            return unknown(request, key)
        problem = save(admin, config.evolve(meters={k: m for k, m in config.meters.items() if k != key}))
        if problem:
            return list_page(request, 500, Notice("error", problem))
        return admin.see_other(request, "/readouts", Notice(
            "ok", f"Meter {key} removed from the list; its readings stay in the store."))

    @route.post("/readouts/<string:key>/settings")
    def readouts_settings(request: IRequest, key: str) -> Any:
        if key not in admin.gateway.store.config.meters:
            return unknown(request, key)

        def page(request: IRequest, content: Any, code: int = 200, notice: Any = None) -> Any:
            """The meter's page, its Settings card showing the form's state (`save_form`'s content)."""
            return meter_page(request, key, code, notice, state=content)

        return save_form(admin, request, page, meter_fields(key), lambda state: state, target=f"/readouts/{key}")

    @route.get("/readouts/<string:key>/readings.<string:kind>")
    def readouts_export(request: IRequest, key: str, kind: str) -> Any:
        readout = readout_of(admin)
        if kind not in ("csv", "json") or not known(key):
            return unknown(request, key)
        if readout is None:
            return meter_page(request, key, 503, Notice("error", "The readouts are not running: nothing to "
                                                                 "download."))
        name, seconds = chosen_range(request)
        since = admin.clock.seconds() - seconds if seconds is not None else None
        d = defer.maybeDeferred(readout.export, key, since, None, kind)

        def done(body: Any) -> bytes:
            data = body if isinstance(body, (str, bytes)) else export_json_text(body)
            data = data.encode("utf-8") if isinstance(data, str) else data
            kind_header = b"text/csv; charset=utf-8" if kind == "csv" else b"application/json; charset=utf-8"
            return download(request, data, kind_header, f"readings-{key}-{name}.{kind}")

        return d.addCallback(done)


def export_json_text(body: Any) -> str:
    return json.dumps(body, indent=2) + "\n"
