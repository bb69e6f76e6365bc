# -*- test-case-name: tests.test_web_pages_layout -*-
"""
The web administration as one Klein application: the device's pages
(Status, Network, M-Bus TCP/IP, M-Bus Serial, HTTP, System), their static
files and the JSON API under ``/api``.

`admin_resource(gateway)` is what the web service serves; it wraps it in the
authentication of the HTTP page's directives.  Each page group lives in its
own module of `cmegw.web.pages`, which also holds what they share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from cmegw.web import api, api_readout
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.forms import CsrfGuard
from cmegw.web.pages import backup as pages_backup
from cmegw.web.pages import http as pages_http
from cmegw.web.pages import meters as pages_meters
from cmegw.web.pages import network as pages_network
from cmegw.web.pages import readouts as pages_readouts
from cmegw.web.pages import ops as pages_ops
from cmegw.web.pages import serial as pages_serial
from cmegw.web.pages import status as pages_status
from cmegw.web.pages import system as pages_system
from cmegw.web.pages import tcpip as pages_tcpip
from cmegw.web.pages import tunnel_tls as pages_tunnel_tls

#: The content types of the static files by suffix (a table rather than `mimetypes`, whose database takes
#: 350 KB once read); a file of another kind is served as ``application/octet-stream``: add its type here.
STATIC_TYPES = {
    ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/vnd.microsoft.icon", ".json": "application/json", ".html": "text/html", ".txt": "text/plain",
    ".woff2": "font/woff2",
}

#: Browsers may keep the static files this long (seconds).
STATIC_MAX_AGE = 3600

_CSRF = CsrfGuard()


def static_files(root: Path) -> dict[str, tuple[bytes, bytes]]:
    """The files of web/static by name, with their content types (read once, nothing else served)."""
    files = {}
    folder = root / "static"
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            kind = STATIC_TYPES.get(path.suffix.lower(), "application/octet-stream")
            if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
                kind += "; charset=utf-8"
            files[path.name] = (path.read_bytes(), kind.encode("ascii"))
    return files


def page_of_form(app: Klein, path: str) -> str:
    """The nearest page above a form's address (``/meters/scan`` -> ``/meters``), "" when none."""
    from werkzeug.exceptions import HTTPException

    urls = app.url_map.bind("gateway")
    parts = path.rstrip("/").split("/")
    while len(parts) > 1:
        parts.pop()
        candidate = "/".join(parts) or "/"
        try:
            urls.match(candidate, method="GET")
        except HTTPException:
            continue
        return candidate
    return ""


def build_app(admin: Admin) -> Klein:
    app = Klein()
    files = static_files(admin.root)

    @app.route("/static/<string:name>", methods=["GET"])
    def static(request: IRequest, name: str) -> Any:
        found = files.get(name)
        if found is None:
            request.setResponseCode(404)
            return b"not found"
        request.setHeader(b"content-type", found[1])
        request.setHeader(b"cache-control", f"private, max-age={STATIC_MAX_AGE}".encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        return found[0]

    @app.handle_errors(Exception)
    def failed(request: IRequest, failure: Any) -> Any:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if failure.check(MethodNotAllowed) and request.method in (b"GET", b"HEAD") \
                and not request.path.startswith(b"/api"):
            form_page = page_of_form(app, request.path.decode("utf-8", "replace"))
            if form_page:  # an old bookmark of a form's address: its page
                return admin.see_other(request, form_page)
        if failure.check(NotFound, MethodNotAllowed):
            code = 404 if failure.check(NotFound) else 405
            if request.path.startswith(b"/api"):
                return api.json_error(request, code, "no such endpoint" if code == 404 else
                                      "method not allowed here")
            request.setResponseCode(code)
            return admin.page(request, section="", title="Not found" if code == 404 else "Not allowed",
                              code=code, content="There is no such page here.")
        return failure

    for module in (pages_status, pages_network, pages_tcpip, pages_tunnel_tls, pages_serial, pages_meters,
                   pages_readouts, pages_http, pages_system, pages_backup, api, api_readout, pages_ops):
        module.routes(app, admin)
    return app


def admin_resource(gateway: Any, *, clock: Any = None, root: Path | None = None,
                   host_network: Callable[[], Any] | None = None, web: Callable[[], Any] | None = None,
                   updater: Callable[[Admin], Any] | None = None) -> IResource:
    """
    The admin pages and API of `gateway` as one resource (to be wrapped in authentication).

    The keyword arguments replace collaborators in tests: the clock for the
    delayed restart, the web files' folder, the host network reader, the web
    part's state and the software updater (built from the `Admin` when an
    update is first asked for).
    """
    admin = Admin(gateway, clock=clock, root=root, csrf=_CSRF, host_network=host_network, web=web,
                  updater=updater or pages_system.software_updater)
    return build_app(admin).resource()
