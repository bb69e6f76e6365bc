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

`install` checks an upload (`check_upload`: PEM, every certificate valid now,
the key matching its certificate, through `cmegw.certificates` and
`cmegw.web.tls.validate_pair`),
writes the files beside the configuration file (owner-only, mode 0600; named
by content, so a new file never half-replaces one in use), and sets the paths
through the store, so the tunnel takes them as if they had been typed: at once.
Uploaded files no setting names any more are deleted.  All or nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from cryptography import x509
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.certificates import (
    CertificateError,
    UnreadableFileError,
    check_bundle_in_time,
    parse_certificates,
    read_certificates,
    validity_summary,
)
from cmegw.config.model import Config, ConfigError
from cmegw.config.settings import apply_settings
from cmegw.config.store import ConfigFileError, atomic_write
from cmegw.web import api
from cmegw.web.pages import (
    Admin,
    Field,
    FormState,
    Notice,
    button,
    card,
    hidden,
    kv_table,
    post_form,
    posted_number,
    render_field,
    uploads,
)
from cmegw.web.tls import validate_pair

log = Logger(namespace="cmegw.web")

PAGE_PATH = "/tcpip/tls"
API_PATH = "/api/tunnels/tls"
#: Uploaded files are named cmegw-tunnel-N-SETTING-DIGEST.pem (.key for the key).
FILE_PREFIX = "cmegw-tunnel-"

#: The tunnel settings that take an uploaded file: (label, help).
UPLOADABLE = {
    "connect_tls_ca": ("Trusted CA bundle (connect mode)",
                       "PEM certificates; a tls: head-end's certificate must chain to one of them."),
    "connect_tls_certificate": ("Client certificate (connect mode)",
                                "PEM, for head-ends that ask for one; upload it with its key."),
    "connect_tls_key": ("Client key (connect mode)", "Unencrypted PEM private key of the client certificate."),
    "tls_client_ca": ("Client CA (TLS accept mode)",
                      "PEM certificates; with TLS on, a client must show a certificate one of them issued."),
}
CLIENT_PAIR = ("connect_tls_certificate", "connect_tls_key")


class UploadError(ValueError):
    """An uploaded file that cannot serve its setting; the message says why."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def check_bundle(setting: str, data: bytes, now: datetime.datetime) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, every one valid now."""
    try:
        certificates = parse_certificates(data, "file")
        check_bundle_in_time(certificates, now)
    except CertificateError as e:
        raise UploadError(setting, str(e)) from None
    return certificates


def _tunnel_field(config: Config, setting: str) -> tuple[int, str]:
    parts = setting.split(".")
    if len(parts) != 3 or parts[0] != "tunnel" or not parts[1].isdigit() or parts[2] not in UPLOADABLE:
        raise UploadError(setting, "upload to tunnel.N." + ", tunnel.N.".join(UPLOADABLE))
    if int(parts[1]) not in config.tunnels:
        raise UploadError(setting, "use the number of a configured tunnel: "
                          + ", ".join(str(n) for n in config.tunnels))
    return int(parts[1]), parts[2]


def check_upload(config: Config, files: Mapping[str, bytes], now: datetime.datetime) -> None:
    """Refuse (`UploadError`, naming the setting) a file that could not serve; `files` by setting name."""
    if not files:
        raise UploadError("tunnel", "choose at least one file")
    located = {setting: _tunnel_field(config, setting) for setting in files}
    for setting, data in files.items():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(setting, "the file is not PEM (it is not text)") from None
        if located[setting][1] not in CLIENT_PAIR:
            check_bundle(setting, data, now)
    for n in sorted({n for n, field in located.values() if field in CLIENT_PAIR}):
        certificate, key = (f"tunnel.{n}.{field}" for field in CLIENT_PAIR)
        if certificate not in files or key not in files:
            raise UploadError(key if certificate in files else certificate,
                              "upload the client certificate and its key together")
        try:
            validate_pair(files[certificate], files[key], now)
        except CertificateError as e:
            raise UploadError(key if "private key" in str(e) else certificate, str(e)) from None


def uploaded_paths(config: Config) -> set[Path]:
    """The uploaded files the configuration names."""
    out = set()
    for tunnel in config.tunnels.values():
        for field in UPLOADABLE:
            value = getattr(tunnel, field)
            if value and Path(value).name.startswith(FILE_PREFIX):
                out.add(Path(value))
    return out


def install(admin: Admin, files: Mapping[str, bytes], now: datetime.datetime | None = None) -> dict[str, str]:
    """
    Check, write and configure uploaded files (see the module docstring); the
    settings set, by name.  Raises `UploadError`, `ConfigError` (the model
    refused), or `ConfigFileError`/`OSError` (the file could not be saved).
    """
    store = admin.gateway.store
    check_upload(store.config, files, now or _utcnow())
    directory = store.path.parent.resolve()  # the settings take absolute paths
    in_use = uploaded_paths(store.config) | uploaded_paths(admin.gateway.running_config)
    changes: dict[str, str] = {}
    written: list[Path] = []
    try:
        for setting, data in files.items():
            n, field = _tunnel_field(store.config, setting)
            digest = hashlib.sha256(data).hexdigest()[:16]
            path = directory / f"{FILE_PREFIX}{n}-{field}-{digest}{'.key' if field == 'connect_tls_key' else '.pem'}"
            atomic_write(path, data.decode("utf-8"))
            os.chmod(path, 0o600)
            written.append(path)
            changes[setting] = str(path)
        store.change(apply_settings(store.config, changes))
    except BaseException:
        for path in written:
            if path not in in_use:
                path.unlink(missing_ok=True)
        raise
    remove_unused(admin, directory)
    log.info("Tunnel TLS files uploaded: {settings}", settings=", ".join(sorted(changes)))
    return changes


def remove_unused(admin: Admin, directory: Path) -> None:
    """Delete uploaded files that neither the saved nor the running configuration names."""
    keep = uploaded_paths(admin.gateway.store.config) | uploaded_paths(admin.gateway.running_config)
    for path in directory.glob(FILE_PREFIX + "*"):
        if path not in keep and path.suffix in (".pem", ".key"):
            path.unlink(missing_ok=True)


def summary(path: str, field: str) -> str:
    """What the file a setting names holds, in a few words."""
    if not path:
        return "none" if field != "connect_tls_ca" else "none (the system's trust store)"
    if field == "connect_tls_key":
        return "a private key" if Path(path).exists() else "the file is missing"
    try:
        certificates = read_certificates(path, "certificates")
    except UnreadableFileError as e:
        return f"cannot be read ({e.reason})"
    except CertificateError:
        return "not a PEM file of certificates"
    return validity_summary(certificates)


def files_view(config: Config) -> dict[int, dict[str, dict[str, str]]]:
    return {n: {field: {"path": getattr(tunnel, field), "holds": summary(getattr(tunnel, field), field)}
                for field in UPLOADABLE} for n, tunnel in config.tunnels.items()}


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
        cards.append(card(f"Tunnel {n} (line {n})", current, form, id=f"tunnel-{n}"))
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
        return page(request, content(admin, request),
                    notice=Notice("ok", f"Tunnel {n}: {names} stored and in use."))

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
