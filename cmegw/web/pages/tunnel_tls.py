# -*- test-case-name: tests.test_web_pages_tunnel_tls -*-
"""
Uploading a tunnel's TLS files, on the M-Bus TCP/IP page (the "TLS files"
tab, one multipart form per tunnel) and in the JSON API
(``PUT /api/tunnels/tls``, PEM text by setting name).

The files are those the tunnel settings name by path: the CA bundle a
head-end's certificate must chain to (``connect_tls_ca``), the client
certificate and key for head-ends that want mutual TLS
(``connect_tls_certificate``, ``connect_tls_key``), and the CA whose
certificates TLS accept mode requires of its clients (``tls_client_ca``).

Checking, writing and configuring the files is the certificate store's
(`cmegw.tls.store.install_tunnel_files`); this page renders and calls it.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import ConfigError
from cmegw.config.store import ConfigFileError
from cmegw.tls.store import UPLOADABLE, UploadError, files_view, install_tunnel_files
from cmegw.web import api
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.forms import Field, FormState, post_form, posted_number, render_field, uploads
from cmegw.web.pages.widgets import Notice, button, card, hidden, kv_table

PAGE_PATH = "/tcpip/tls"
API_PATH = "/api/tunnels/tls"


def install(admin: Admin, files: Mapping[str, bytes], now: datetime.datetime | None = None) -> dict[str, str]:
    """`install_tunnel_files` into the gateway's store; the settings set, by name."""
    return install_tunnel_files(admin.gateway.store, lambda: admin.gateway.state.config, files, now)


# -- the page -------------------------------------------------------------------------------


def content(admin: Admin, request: IRequest, errors: dict[int, dict[str, str]] | None = None) -> Tag:
    errors = errors or {}
    config = admin.gateway.store.config
    cards = []
    for n, view in files_view(config).items():
        current = kv_table([(UPLOADABLE[field][0], tags.span(tags.code(v["path"]) if v["path"] else "", " ",
                                                             v["holds"])) for field, v in view.items()])
        fields = [Field(f"tunnel.{n}.{field}", label, "file", help=text) for field, (label, text) in UPLOADABLE.items()]
        state = FormState(errors=errors.get(n, {}))
        form = post_form(admin, request, PAGE_PATH, hidden("_group", str(n)),
                         tags.div(*[render_field(f, state) for f in fields], class_="fields"),
                         tags.div(button("Upload and use"),
                                  tags.span("Only the files chosen change. Applies at once.", class_="applies"),
                                  class_="actions"), multipart=True, class_="settings", novalidate="novalidate")
        cards.append(card(f"Tunnel {n} (line {n})", tags.div(
            tags.div(tags.h3("Files in use"), current, class_="tls-current"),
            tags.div(tags.h3("Upload new files"), form, class_="tls-upload"), class_="tls-files"),
            id=f"tunnel-{n}", wide=True))
    if not cards:
        cards.append(card("No tunnels", tags.p("No tunnel is configured.")))
    return tags.div(*cards, class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    from cmegw.web.pages.tcpip import TABS

    page = admin.section_page("tcpip", "M-Bus TCP/IP", TABS)

    @app.route(PAGE_PATH, methods=["GET"], endpoint="tcpip_tls")
    def show(request: IRequest) -> Any:
        return page(request, content(admin, request))

    @app.route(PAGE_PATH, methods=["POST"], endpoint="tcpip_tls_post")
    @admin.csrf_checked
    def upload(request: IRequest) -> Any:
        n = posted_number(request, admin.gateway.store.config.tunnels)
        if n is None:
            return page(request, content(admin, request), code=400,
                        notice=Notice("error", "No such tunnel; nothing was changed."))
        prefix = f"tunnel.{n}."
        files = {name: u.data for name, u in uploads(request).items() if name.startswith(prefix) and u.data.strip()}
        try:
            changed = install(admin, files)
        except (UploadError, ConfigError) as e:
            field = e.setting if e.setting.startswith(prefix) else f"{prefix}connect_tls_ca"
            message = e.message if isinstance(e, UploadError) else str(e)
            return page(request, content(admin, request, {n: {field: message}}), code=400,
                        notice=Notice("error", f"Nothing was changed: {message}."))
        except (ConfigFileError, OSError) as e:
            return page(request, content(admin, request), code=500,
                        notice=Notice("error", f"Nothing was changed: the files could not be saved ({e})."))
        names = ", ".join(UPLOADABLE[name.rsplit(".", 1)[1]][0] for name in changed)
        return admin.see_other(request, f"{PAGE_PATH}#tunnel-{n}",
                               Notice("ok", f"Tunnel {n}: {names} stored and in use."))

    @app.route(API_PATH, methods=["GET"], endpoint="api_tunnels_tls")
    @api.json_handler
    def api_files(request: IRequest) -> Any:
        return {"tunnels": files_view(admin.gateway.store.config)}

    @app.route(API_PATH, methods=["PUT", "POST"], endpoint="api_tunnels_tls_put")
    @api.json_handler
    def api_upload(request: IRequest) -> Any:
        body = api.read_json(request)
        if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
            raise api.ApiError(400, 'send an object of PEM texts by setting name, e.g. '
                                    '{"tunnel.1.connect_tls_ca": "-----BEGIN CERTIFICATE-----..."}')
        try:
            changed = install(admin, {name: text.encode("utf-8") for name, text in body.items()})
        except UploadError as e:
            raise api.ApiError(400, str(e), setting=e.setting) from None
        except ConfigError as e:
            raise api.ApiError(400, str(e), setting=e.setting, allowed=e.allowed) from None
        except (ConfigFileError, OSError) as e:
            raise api.ApiError(500, f"the files could not be saved: {e}") from None
        return {"changed": changed, "tunnels": files_view(admin.gateway.store.config)}
