# -*- test-case-name: tests.test_web_api_readout -*-
"""
The JSON API of the scheduled readouts (``/api/readout/...``), beside the
Meter list page and behind the same authentication; web/API.md, section
"Readouts", documents every route.

Reads: the meter list with its state, the targets with their backlog, the
store (``GET /api/readout``), one meter, its kept readings and exports.
Actions: read now (all or one meter; the answer waits for the read), adopt
a line's last scan, the list as CSV, one meter's settings (``PUT``/``DELETE``
``/api/readout/meters/<id>``, checked by the model: a refusal names the
setting).  503 while the readouts do not run, 404 for an unknown meter.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest

from cmegw.config.model import MISSING, Config, ConfigError
from cmegw.config.readout import MeterConfig, meters_table
from cmegw.config.settings import apply_settings
from cmegw.readout.store import reading_json
from cmegw.web.api import ApiError, config_error, guard, json_error, json_endpoints, json_response, read_json, save
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.meters import download
from cmegw.web.pages.readout_views import (
    METER_FIELDS,
    meter_settings_view,
    meter_view,
    parse_time,
    store_view,
    target_views,
)

#: The most readings one request returns, and how many unless told.
MAX_READINGS = 10000
DEFAULT_READINGS = 1000
#: The largest meter list file taken (bytes).
MAX_CSV_BYTES = 1024 * 1024


def plain_reading(reading: Any) -> dict[str, Any]:
    """A kept reading as the API gives it: the store's JSON with its records at the top as well."""
    return {**reading_json(reading), "records": list(reading.decoded.get("records") or [])}


def _arg(request: IRequest, name: str) -> str:
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace").strip() if values else ""


def time_range(request: IRequest) -> tuple[float | None, float | None]:
    """``?since=&until=`` as epoch seconds (ISO 8601 or epoch given); 400 naming the bad one."""
    out: list[float | None] = []
    for name in ("since", "until"):
        text = _arg(request, name)
        try:
            out.append(parse_time(name, text) if text else None)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
    return out[0], out[1]


def _limit(request: IRequest) -> int:
    text = _arg(request, "limit")
    if not text:
        return DEFAULT_READINGS
    if not text.isdigit() or not 1 <= int(text) <= MAX_READINGS:
        raise ApiError(400, f"limit: {text!r} is not allowed; use a whole number from 1 to {MAX_READINGS}")
    return int(text)


def _failure_message(failure: Any) -> str:
    value = failure.value
    return str(value.args[0]) if isinstance(value, KeyError) and value.args else failure.getErrorMessage()


def routes(app: Klein, admin: Admin) -> None:
    endpoint = json_endpoints(app)

    def readout() -> Any:
        running = admin.gateway.state.readout
        if running is None:
            raise ApiError(503, "the readouts are not running (the gateway is stopped or starting)")
        return running

    def saved() -> Config:
        return admin.gateway.store.config

    def status_of(key: str) -> Any:
        """The meter's schedule state (None until the list change is in force); 404 for an unknown meter."""
        running = readout()
        status = running.meters.get(key)
        if status is None and key not in saved().meters:
            raise ApiError(404, f"there is no meter {key}; meters: {', '.join(saved().meters) or 'none yet'}")
        return status

    def view(key: str, status: Any) -> dict[str, Any]:
        config = saved()
        if key not in config.meters:  # removed, not yet taken out of the schedule
            config = config.evolve(meters={**config.meters, key: status.config})
        return meter_view(config, key, status, admin.clock.seconds())

    @endpoint("/api/readout", ["GET"], "api_readout")
    def overview(request: IRequest) -> Any:
        running = readout()
        return {"running": bool(getattr(running, "running", True)),
                "meters": [view(key, running.meters.get(key)) for key in saved().meters],
                "targets": target_views(running, admin.clock.seconds()), "store": store_view(running)}

    @endpoint("/api/readout/meters/<string:key>", ["GET"], "api_readout_meter")
    def meter(request: IRequest, key: str) -> Any:
        status = status_of(key)
        out = view(key, status)
        last = status.last_reading if status is not None else None
        out["last_reading"] = plain_reading(last) if last is not None else None
        return out

    @endpoint("/api/readout/meters/<string:key>/readings", ["GET"], "api_readout_readings")
    def readings(request: IRequest, key: str) -> Any:
        status_of(key)
        since, until = time_range(request)
        limit = _limit(request)
        d = defer.maybeDeferred(readout().readings, key, since, until, limit)
        d.addCallback(lambda found: json_response(request, {"meter": key, "since": since, "until": until,
                                                            "readings": [plain_reading(r) for r in found]}))
        return d.addErrback(lambda f: json_error(request, 500, f"the reading store could not be read: "
                                                               f"{f.getErrorMessage()}"))

    @endpoint("/api/readout/export.<string:kind>", ["GET"], "api_readout_export")
    def export(request: IRequest, kind: str) -> Any:
        if kind not in ("csv", "json"):
            raise ApiError(404, f"no export as {kind}; use export.csv or export.json")
        running = readout()
        key = _arg(request, "meter") or None
        if key is not None:
            status_of(key)
        since, until = time_range(request)
        d = defer.maybeDeferred(running.export, key, since, until, kind)

        def done(body: Any) -> bytes:
            if not isinstance(body, (str, bytes)):
                body = json.dumps(body, indent=2) + "\n"
            data = body.encode("utf-8") if isinstance(body, str) else body
            ctype = b"text/csv; charset=utf-8" if kind == "csv" else b"application/json; charset=utf-8"
            return download(request, data, ctype, f"readings-{key or 'all'}.{kind}")

        d.addCallback(done)
        return d.addErrback(lambda f: json_error(request, 500, f"the reading store could not be read: "
                                                               f"{f.getErrorMessage()}"))

    def read_now(request: IRequest, keys: list[str] | None) -> defer.Deferred:
        """Read now and answer when done: each meter's reading, or its error."""
        running = readout()
        d = defer.maybeDeferred(admin.gateway.read_meters_now, keys)

        def done(results: Mapping[str, Any]) -> Any:
            out: dict[str, Any] = {}
            for key, stored in results.items():
                status = running.meters.get(key)
                if stored is not None:
                    out[key] = {"ok": True, "reading": plain_reading(stored)}
                elif status is not None and status.last_error:
                    out[key] = {"ok": False, "error": status.last_error}
                else:
                    out[key] = {"ok": False, "error": "the read did not run (the readouts stopped)"}
            return out

        def failed(failure: Any) -> bytes:
            if failure.check(KeyError):
                return json_error(request, 404, _failure_message(failure))
            failure.trap(RuntimeError)
            return json_error(request, 503, failure.getErrorMessage())

        return d.addCallbacks(done, failed)

    @endpoint("/api/readout/read", ["POST"], "api_readout_read")
    def read_all(request: IRequest) -> Any:
        body = read_json(request)
        keys = body.get("meters") if isinstance(body, dict) else None
        if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)):
            raise ApiError(400, 'send {} for every meter, or {"meters": ["heat-1", ...]}')
        for key in keys or ():
            status_of(key)

        def answer(out: Any) -> Any:
            if isinstance(out, bytes):
                return out
            return json_response(request, {"results": out, "good": sum(1 for r in out.values() if r["ok"]),
                                           "failed": sum(1 for r in out.values() if not r["ok"])})

        return read_now(request, keys).addCallback(answer)

    @endpoint("/api/readout/meters/<string:key>/read", ["POST"], "api_readout_meter_read")
    def read_one(request: IRequest, key: str) -> Any:
        read_json(request)
        if status_of(key) is None:
            raise ApiError(409, f"meter {key} is not scheduled yet: the list change is not in force")

        def answer(out: Any) -> Any:
            if isinstance(out, bytes):
                return out
            result = out.get(key) or {"ok": False, "error": "the read did not run"}
            if result["ok"]:
                return json_response(request, {"meter": key, **result})
            stopped = "did not run" in result["error"]
            return json_error(request, 409 if stopped else 502, result["error"], meter=key)

        return read_now(request, [key]).addCallback(answer)

    @endpoint("/api/meters/<int:n>/adopt", ["POST"], "api_meters_adopt")
    def adopt(request: IRequest, n: int) -> Any:
        body = read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("interval", ""), str):
            raise ApiError(400, 'send {} or {"interval": "15m"} (empty: the readout default)')
        if n not in admin.gateway.state.config.lines:
            raise ApiError(404, f"there is no line {n}")
        try:
            added = admin.gateway.adopt_meters(n, None, body.get("interval", ""))
        except KeyError as e:
            raise ApiError(404, str(e.args[0]) if e.args else f"there is no line {n}") from None
        except ConfigError as e:
            raise config_error(e) from None
        except OSError as e:
            raise ApiError(500, f"the configuration could not be saved: {e}") from None
        return (201 if added else 200), {"added": added, "meters": list(saved().meters)}

    @app.route("/api/readout/meters.csv", methods=["GET"], endpoint="api_readout_list_csv")
    def list_csv(request: IRequest) -> Any:
        from cmegw.readout.meterlist import export_csv  # loaded by the first import or export

        return download(request, export_csv(saved()).encode("utf-8"), b"text/csv; charset=utf-8", "meters.csv")

    @endpoint("/api/readout/meters.csv", ["PUT"], "api_readout_list_import")
    def list_import(request: IRequest) -> Any:
        guard(request)
        mode = _arg(request, "mode") or "merge"
        if mode not in ("merge", "replace"):
            raise ApiError(400, f"mode: {mode!r} is not allowed; use merge or replace")
        request.content.seek(0)
        data = request.content.read(MAX_CSV_BYTES + 1)
        old = saved()
        from cmegw.readout.meterlist import MeterListError, import_csv

        try:
            new = import_csv(old, data, replace=mode == "replace")
        except MeterListError as e:
            raise ApiError(400, str(e), errors=e.errors) from None
        if new != old:
            save(admin, new)
        return {"added": [k for k in new.meters if k not in old.meters],
                "changed": [k for k in new.meters if k in old.meters and new.meters[k] != old.meters[k]],
                "removed": [k for k in old.meters if k not in new.meters], "meters": list(new.meters)}

    @endpoint("/api/readout/meters/<string:key>", ["PUT"], "api_readout_meter_put")
    def meter_put(request: IRequest, key: str) -> Any:
        body = read_json(request)
        if not isinstance(body, dict) or not body:
            raise ApiError(400, 'send the meter\'s settings, such as {"line": 1, "address": "12345678-KAM-19-04", '
                                '"name": "Flat 3 heat", "interval": "15m", "enabled": true}')
        old = saved()
        created = key not in old.meters
        base = old
        if created:
            if "address" not in body:
                raise config_error(ConfigError(f"meter.{key}.address", MISSING, "a new meter needs its address; use "
                                               "a secondary address such as 12345678-KAM-19-04 (preferred) or a "
                                               "primary address from 0 to 250"))
            try:
                meters_table({key: MeterConfig()})
                base = old.evolve(meters={**old.meters, key: MeterConfig(line=next(iter(old.lines)))})
            except ConfigError as e:
                raise config_error(e) from None
        unknown = [name for name in body if name not in METER_FIELDS]
        if unknown:
            raise ApiError(400, f"{unknown[0]!r} is not a setting of a meter; use " + ", ".join(METER_FIELDS),
                           setting=f"meter.{key}.{unknown[0]}", value=body[unknown[0]],
                           allowed="one of " + ", ".join(METER_FIELDS))
        try:
            new = apply_settings(base, {f"meter.{key}.{name}": value for name, value in body.items()})
        except ConfigError as e:
            raise config_error(e) from None
        if new != old:
            save(admin, new)
        return (201 if created else 200), meter_settings_view(new, key)

    @endpoint("/api/readout/meters/<string:key>", ["DELETE"], "api_readout_meter_delete")
    def meter_delete(request: IRequest, key: str) -> Any:
        guard(request)
        old = saved()
        if key not in old.meters:
            raise ApiError(404, f"there is no meter {key}; meters: {', '.join(old.meters) or 'none yet'}")
        save(admin, old.evolve(meters={k: m for k, m in old.meters.items() if k != key}))
        return {"removed": key, "meters": [k for k in old.meters if k != key]}
