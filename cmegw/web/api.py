# -*- test-case-name: tests.test_web_api -*-
"""
The JSON API beside the pages (``/api/...``), behind the same authentication.

Everything the pages show and change: status, configuration (never a
password hash), statistics, settings by name (all or nothing, through
`apply_settings`: the one validation), authentication directives and users,
the access log, the certificate, restart, factory defaults, software update.
web/API.md documents every endpoint.

Requests that change something must say ``Content-Type: application/json``
(``application/octet-stream`` for a software upload) or use PUT/DELETE: a
browser cannot send those from another site without a CORS preflight, which
this API never grants; a request whose Origin is another site is refused.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest

import cmegw
from cmegw.config import auth as config_auth
from cmegw.config.model import Config, ConfigError
from cmegw.config.settings import apply_settings, get_setting, labelled, needs_restart, redacted, setting_names, shown_value
from cmegw.config.store import ConfigFileError
from cmegw.stats import format_duration
from cmegw.web.auth import factory_password_in_use
from cmegw.web.http import security_headers
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.forms import changed_settings, same_origin
from cmegw.web.pages import http as pages_http
from cmegw.web.pages.network import renew_code
from cmegw.web.pages.status import build_date, tunnel_state_text
from cmegw.web.pages.system import UpdateError, boot_id, schedule_factory_reset, schedule_restart, update_state

#: The largest JSON body read (bytes).
MAX_JSON_BYTES = 1024 * 1024


class ApiError(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def json_response(request: IRequest, body: Any, code: int = 200) -> bytes:
    security_headers(request)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return (json.dumps(_plain(body), indent=2, sort_keys=False) + "\n").encode("utf-8")


def json_error(request: IRequest, code: int, message: str, **extra: Any) -> bytes:
    return json_response(request, {"error": message, **extra}, code)


def json_handler(f: Callable[..., Any]) -> Callable[..., Any]:
    """
    An API route: what `f` returns (a body, or ``(code, body)``) answered as
    JSON, an `ApiError` as a JSON error; a Deferred answers for itself.
    """

    @functools.wraps(f)
    def handler(request: IRequest, **kw: Any) -> Any:
        try:
            result = f(request, **kw)
        except ApiError as e:
            return json_error(request, e.code, str(e), **e.extra)
        if isinstance(result, defer.Deferred):
            return result
        code, body = result if isinstance(result, tuple) else (200, result)
        return json_response(request, body, code)

    return handler


def config_error(e: ConfigError) -> ApiError:
    e = labelled(e)
    return ApiError(400, str(e), setting=e.setting, label=e.label, value=_plain(e.shown_value), allowed=e.allowed)


def _content_type(request: IRequest) -> str:
    return (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()


def guard(request: IRequest, *types: str) -> None:
    """Refuse a changing request a browser could send from another site."""
    if not same_origin(request):
        raise ApiError(403, "cross-site request refused")
    if request.method == b"POST" and _content_type(request) not in (types or ("application/json",)):
        raise ApiError(415, "send Content-Type: " + " or ".join(types or ("application/json",)))


def read_json(request: IRequest) -> Any:
    guard(request)
    request.content.seek(0)
    raw = request.content.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(413, f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None


def _object(body: Any, *required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object")
    missing = [k for k in required if k not in body]
    if missing:
        raise ApiError(400, "missing: " + ", ".join(missing))
    for k in required:
        if not isinstance(body[k], str):
            raise ApiError(400, f"{k} must be a string")
    return body


def _query(request: IRequest, name: str) -> str:
    values = (request.args or {}).get(name.encode())
    if not values:
        raise ApiError(400, f"give ?{name}=...")
    return values[0].decode("utf-8", "replace")


# -- views ----------------------------------------------------------------------------------


def config_view(config: Config) -> dict[str, Any]:
    """The configuration as the file holds it, users by name only (never their hashes)."""
    data = redacted(config)
    data["auth"] = pages_http.directives_view(config)
    return data


def status_view(admin: Admin) -> dict[str, Any]:
    gateway = admin.gateway
    running = gateway.state.config
    host = admin.host_network()
    lines = {}
    for n, line in running.lines.items():
        stats = gateway.state.lines.get(n)
        lines[n] = {"settings": line.settings_text, "device": stats.device if stats else line.device,
                    "simulate": line.simulate, "state": stats.state if stats else "stopped",
                    "error": stats.error if stats else ""}
    tunnels = {}
    for n, tunnel in running.tunnels.items():
        stats = gateway.state.tunnel_stats.get(n)
        tunnels[n] = {"enabled": tunnel.enabled, "listen": tunnel.listen,
                      "accept_mode": ("disabled" if not tunnel.enabled else
                                      tunnel_state_text(stats) if stats else "stopped"),
                      "state": stats.state if stats else "stopped", "peer": stats.peer if stats else "",
                      "listening": stats.listening if stats else "",
                      "connect_mode": connect_text(gateway, n, admin.clock.seconds())}
    return {
        "product_type": running.identity.product_type,
        "serial_number": running.identity.serial_number,
        "software_version": cmegw.__version__,
        "build_date": build_date(),
        "uptime_seconds": int(gateway.state.uptime()),
        "uptime": format_duration(gateway.state.uptime()),
        "boot": boot_id(admin),
        "config_saved": not gateway.store.unsaved,
        "config_problem": gateway.state.status.config_problem,
        "pending_restart": gateway.state.pending_restart(),
        "factory_password_in_use": factory_password_in_use(gateway.store.config),
        "indications": {name: bool(on) for name, on in gateway.state.indications().items()},
        "network": {
            "interface": host.interface, "link": host.link_text, "mac": host.mac, "hostname": host.hostname,
            "ip_address": host.address, "netmask": host.netmask, "address_source": host.address_source,
            "gateway": host.gateway, "domain": host.domain, "dns": list(host.dns),
            "apply_to_host": running.network.apply_to_host, "backend": running.network.backend,
            "host_backend_last": _last_host_result(gateway),
        },
        "lines": lines,
        "tunnels": tunnels,
        "update": update_state(admin).as_dict(),
    }


def _last_host_result(gateway: Any) -> dict[str, Any] | None:
    """What the host network backend (`cmegw.host`) last did, or None."""
    last = gateway.state.host_network
    return last.as_dict() if last is not None else None


def connect_text(gateway: Any, n: int, now: float) -> str:
    """Tunnel `n`'s connect mode in the device's words (disabled / connecting to X / ...)."""
    connect = gateway.state.connect_stats.get(n)
    return connect.text(now) if connect is not None else "disabled"


def stats_view(admin: Admin) -> dict[str, Any]:
    gateway = admin.gateway
    now = admin.clock.seconds()
    tunnels = {}
    for n, stats in gateway.state.tunnel_stats.items():
        d = stats.as_dict(now)
        d["accept_connection_time_text"] = format_duration(d["accept_connection_time"])
        d["connect_times_text"] = [format_duration(t) for t in stats.connect_times]
        connect = gateway.state.connect_stats.get(n)
        d["connect"] = connect.as_dict(now) if connect is not None else None
        access = gateway.state.access_stats.get(n)
        d["access"] = access.as_dict() if access is not None else None
        tunnels[n] = d
    web = admin.web()
    http = None
    if web is not None:
        http = web.stats.as_dict()
        http["log_entries"] = len(web.access_log.entries)
        http["log_bytes"] = web.access_log.bytes
    return {"lines": {n: s.as_dict() for n, s in gateway.state.lines.items()}, "tunnels": tunnels, "http": http}


def settings_view(admin: Admin) -> dict[str, Any]:
    saved = admin.gateway.store.config
    running = admin.gateway.state.config
    out = {}
    for name in setting_names(saved):
        value = get_setting(saved, name)
        try:
            now = get_setting(running, name)
        except ConfigError:
            now = None
        out[name] = {"value": shown_value(name, value), "running": shown_value(name, now),
                     "after_restart": needs_restart(name)}
    return out


def change_settings(admin: Admin, changes: dict[str, Any]) -> dict[str, Any]:
    store = admin.gateway.store
    old = store.config
    try:
        new = apply_settings(old, changes)
    except ConfigError as e:
        raise config_error(e) from None
    changed = changed_settings(old, new, changes)
    if changed:
        save(admin, new)
    return {"changed": changed, "applied_now": [n for n in changed if not needs_restart(n)],
            "after_restart": [n for n in changed if needs_restart(n)]}


def save(admin: Admin, new: Config) -> None:
    try:
        admin.gateway.store.change(new)
    except ConfigError as e:
        raise config_error(e) from None
    except (ConfigFileError, OSError) as e:
        raise ApiError(500, f"the configuration could not be saved: {e}") from None


# -- routes ---------------------------------------------------------------------------------

ENDPOINTS = [
    "GET /api/status", "GET /api/config", "GET|PUT /api/config/file", "GET /api/stats", "GET /api/settings",
    "GET /api/settings/NAME", "PUT|POST /api/settings", "PUT /api/settings/NAME",
    "GET /api/auth", "POST /api/auth/directives", "PUT /api/auth/directives",
    "DELETE /api/auth/directives?uri=URI", "POST /api/auth/users", "DELETE /api/auth/users?uri=URI&name=NAME",
    "GET /api/http/log", "DELETE /api/http/log", "GET /api/http/certificate", "PUT /api/http/certificate",
    "GET /api/tunnels/tls", "PUT|POST /api/tunnels/tls", "GET /api/meters", "GET /api/meters/N",
    "POST /api/meters/N/scan", "DELETE /api/meters/N/scan", "POST /api/meters/N/read", "GET /api/meters/N/reading",
    "POST /api/network/renew", "POST /api/restart", "POST /api/factory-reset", "GET /api/update", "POST /api/update",
    "POST /api/meters/N/adopt", "GET /api/readout", "GET /api/readout/meters/ID", "PUT /api/readout/meters/ID",
    "DELETE /api/readout/meters/ID", "GET /api/readout/meters/ID/readings", "POST /api/readout/meters/ID/read",
    "POST /api/readout/read", "GET /api/readout/export.csv|json", "GET|PUT /api/readout/meters.csv",
]


def json_endpoints(app: Klein) -> Callable[[str, list[str], str], Callable[[Any], Any]]:
    """``@endpoint(url, methods, name)``: a JSON route of `app` (errors answered as JSON by `json_handler`)."""

    def endpoint(url: str, methods: list[str], name: str) -> Callable[[Any], Any]:
        def deco(f: Any) -> Any:
            app.route(url, methods=methods, endpoint=name)(json_handler(f))
            return f

        return deco

    return endpoint


def routes(app: Klein, admin: Admin) -> None:
    endpoint = json_endpoints(app)

    @endpoint("/api", ["GET"], "api_index")
    def index(request: IRequest) -> Any:
        return {"endpoints": ENDPOINTS, "documentation": "web/API.md"}

    @endpoint("/api/status", ["GET"], "api_status")
    def status(request: IRequest) -> Any:
        return status_view(admin)

    @endpoint("/api/config", ["GET"], "api_config")
    def config(request: IRequest) -> Any:
        return {"saved": config_view(admin.gateway.store.config),
                "running": config_view(admin.gateway.state.config)}

    @endpoint("/api/stats", ["GET"], "api_stats")
    def stats(request: IRequest) -> Any:
        return stats_view(admin)

    @endpoint("/api/settings", ["GET"], "api_settings")
    def settings(request: IRequest) -> Any:
        return settings_view(admin)

    @endpoint("/api/settings", ["PUT", "POST"], "api_settings_change")
    def settings_change(request: IRequest) -> Any:
        body = read_json(request)
        if not isinstance(body, dict) or not body:
            raise ApiError(400, 'send an object of settings by name, e.g. {"line.1.baud_rate": 300}')
        return change_settings(admin, body)

    @endpoint("/api/settings/<string:name>", ["GET"], "api_setting")
    def setting(request: IRequest, name: str) -> Any:
        views = settings_view(admin)
        if name not in views:
            try:
                get_setting(admin.gateway.store.config, name)
            except ConfigError as e:
                raise ApiError(404, str(e), setting=e.setting, value=_plain(e.value), allowed=e.allowed) from None
        return {"name": name, **views[name]}

    @endpoint("/api/settings/<string:name>", ["PUT", "POST"], "api_setting_change")
    def setting_change(request: IRequest, name: str) -> Any:
        body = read_json(request)
        value = body["value"] if isinstance(body, dict) and "value" in body else body
        return change_settings(admin, {name: value})

    @endpoint("/api/auth", ["GET"], "api_auth")
    def auth(request: IRequest) -> Any:
        return {"directives": pages_http.directives_view(admin.gateway.store.config),
                "factory_password_in_use": factory_password_in_use(admin.gateway.store.config)}

    def auth_change(make: Any) -> Any:
        try:
            new = make(admin.gateway.store.config)
        except ConfigError as e:
            raise config_error(e) from None
        save(admin, new)
        return {"directives": pages_http.directives_view(admin.gateway.store.config)}

    @endpoint("/api/auth/directives", ["POST"], "api_directive_add")
    def directive_add(request: IRequest) -> Any:
        body = _object(read_json(request), "uri")
        realm, kind = body.get("realm", "config"), body.get("auth_type", "Digest")
        return 201, auth_change(lambda c: config_auth.add_directive(c, body["uri"], realm, kind))

    @endpoint("/api/auth/directives", ["PUT"], "api_directive_type")
    def directive_type(request: IRequest) -> Any:
        body = _object(read_json(request), "uri", "auth_type")
        return auth_change(lambda c: config_auth.set_auth_type(c, body["uri"], body["auth_type"]))

    @endpoint("/api/auth/directives", ["DELETE"], "api_directive_delete")
    def directive_delete(request: IRequest) -> Any:
        guard(request)
        uri = _query(request, "uri")
        return auth_change(lambda c: config_auth.delete_directive(c, uri))

    @endpoint("/api/auth/users", ["POST", "PUT"], "api_user_add")
    def user_add(request: IRequest) -> Any:
        body = _object(read_json(request), "uri", "name", "password")
        return auth_change(lambda c: config_auth.add_user(c, body["uri"], body["name"], body["password"]))

    @endpoint("/api/auth/users", ["DELETE"], "api_user_delete")
    def user_delete(request: IRequest) -> Any:
        guard(request)
        uri, name = _query(request, "uri"), _query(request, "name")
        return auth_change(lambda c: config_auth.delete_user(c, uri, name))

    def web() -> Any:
        state = admin.web()
        if state is None:
            raise ApiError(503, "the web server part is not running in this process")
        return state

    @endpoint("/api/http/log", ["GET"], "api_log")
    def access_log(request: IRequest) -> Any:
        log = web().access_log
        return {"entries": list(log.entries), "bytes": log.bytes}

    @endpoint("/api/http/log", ["DELETE"], "api_log_clear")
    def access_log_clear(request: IRequest) -> Any:
        guard(request)
        web().access_log.clear()
        return {"entries": [], "bytes": 0}

    def certificate_view(info: Any) -> Any:
        if info is None:
            return None
        return {k: getattr(info, k, None) for k in ("subject", "issuer", "not_before", "not_after",
                                                    "self_signed", "fingerprint", "path", "problem")}

    @endpoint("/api/http/certificate", ["GET"], "api_certificate")
    def certificate(request: IRequest) -> Any:
        return {"certificate": certificate_view(getattr(web(), "tls", None))}

    @endpoint("/api/http/certificate", ["PUT"], "api_certificate_put")
    def certificate_put(request: IRequest) -> Any:
        body = _object(read_json(request), "certificate", "private_key")
        state = web()
        try:
            info = state.install_certificate(body["certificate"].encode(), body["private_key"].encode())
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return {"certificate": certificate_view(info)}

    @endpoint("/api/network/renew", ["POST"], "api_network_renew")
    def network_renew(request: IRequest) -> Any:
        read_json(request)
        net = admin.gateway.state.config.network
        d = admin.gateway.renew_dhcp(net)
        d.addCallback(lambda r: json_response(request, {"renewed": r.ok, "message": r.message,
                                                        "result": r.as_dict()}, renew_code(net, r)))
        return d

    @endpoint("/api/restart", ["POST"], "api_restart")
    def restart(request: IRequest) -> Any:
        read_json(request)
        schedule_restart(admin)
        return 202, {"restarting": True, "boot": boot_id(admin)}

    @endpoint("/api/factory-reset", ["POST"], "api_factory_reset")
    def factory_reset(request: IRequest) -> Any:
        body = read_json(request)
        if not isinstance(body, dict) or body.get("confirm") is not True:
            raise ApiError(400, 'send {"confirm": true}: every setting returns to the factory defaults')
        schedule_factory_reset(admin)
        return 202, {"restarting": True, "boot": boot_id(admin)}

    @endpoint("/api/update", ["GET"], "api_update")
    def update(request: IRequest) -> Any:
        return {"running_version": cmegw.__version__, **update_state(admin).as_dict()}

    @endpoint("/api/update", ["POST"], "api_update_start")
    def update_start(request: IRequest) -> Any:
        guard(request, "application/octet-stream")
        filename = (request.getHeader(b"x-filename") or b"").decode("utf-8", "replace")
        sha = (request.getHeader(b"x-sha256") or b"").decode("ascii", "replace")
        request.content.seek(0)
        data = request.content.read()
        try:
            info = admin.updater.start(data, filename, sha)
        except UpdateError as e:
            raise ApiError(400, f"not installed: {e}; still running {cmegw.__version__}") from None
        return 202, {"installing": info.version, "sha256": info.sha256, "size": info.size}
