# -*- test-case-name: tests.test_web_pages_http -*-
"""
The HTTP pages: statistics and the access log, configuration, authentication
directives and users, and the HTTPS certificate.

The changes to directives and users are plain functions on `Config` (shared
with the JSON API); they raise `ConfigError` with the model's message.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import attrs

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import AUTH_TYPES, TLS_VERSIONS, Config, ConfigError, directive_for
from cmegw.config.auth import (
    add_directive,
    add_user,
    delete_directive,
    delete_user,
    set_auth_type,
)
from cmegw.config.store import ConfigFileError
from cmegw.config.settings import describe
from cmegw.web.accesslog import AccessLog, LogQuery
from cmegw.web.auth import authenticated_user
from cmegw.web.http import security_headers
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.layout import live
from cmegw.web.pages.forms import (
    Field,
    FormState,
    applies_text,
    error_message,
    form_value,
    mark_restart,
    post_form,
    render_field,
    settings_form,
    settings_state,
    setting_field,
    uploads,
)
from cmegw.stats import HTTP_BYTE_COUNTERS, HTTP_COUNTERS, byte_size_text
from cmegw.web.pages.widgets import Notice, button, byte_size, card, hidden, kv_table
from cmegw.web.signout import SIGN_OUT_PATH

#: The Log tab's own style (wrapped lines, the filter row).
LOG_STYLE = tags.link(rel="stylesheet", href="/static/log.css")

TABS = (("Statistics", "/http"), ("Configuration", "/http/configuration"),
        ("Authentication", "/http/authentication"), ("Certificate", "/http/certificate"))

CONFIG_FIELDS = mark_restart([
    setting_field("http.enabled", "checkbox"),
    setting_field("http.http_port", "number"),
    setting_field("http.https_port", "number"),
    setting_field("http.interface", help="Empty: every address of the host."),
    setting_field("http.tls_versions", "checkboxes", tuple((v, v.replace("v", " ")) for v in TLS_VERSIONS),
                  help="HTTPS listens only with a certificate and at least one protocol. "
                       "SSL 3, TLS 1.0 and 1.1 are broken and not offered."),
    setting_field("http.max_timeout", "number",
                  help="A client that has not sent its whole request by then gets 408."),
    setting_field("http.max_bytes", "number",
                  help="A larger request gets 413."),
    setting_field("http.logging", "checkbox"),
    setting_field("http.max_log_entries", "number", help="The log keeps the last entries (and at most 4 MiB of them)."),
    setting_field("http.log_format",
                  help="%a %b %B %h %{Header}i %m %p %q %t %u %U %r %s"),
])

DIRECTIVE_FIELDS = [
    Field("uri", "URI", help="Begins with /; the longest matching URI decides."),
    Field("realm", "Realm", placeholder="config"),
    Field("auth_type", "AuthType", "select", tuple((t, t) for t in AUTH_TYPES)),
]

USER_FIELDS = [
    Field("name", "User name"),
    Field("password", "Password", "password"),
    Field("confirm", "Password again", "password"),
]

def password_problems(name: str, password: str, confirm: str) -> dict[str, str]:
    """What is wrong with the typed name and passwords, by field, in words (empty: nothing)."""
    problems = {}
    if not name.strip():
        problems["name"] = "Type the user name."
    if not password:
        problems["password"] = "Type the new password."
    elif password != confirm:
        problems["confirm"] = "The two passwords differ: type the same password twice."
    return problems


def directive_uri(admin: Admin, request: IRequest) -> str:
    """The URI of the directive that protects the page of this request (whose password the browser sent)."""
    found = directive_for(admin.gateway.state.config.auth, request.path.decode("utf-8", "replace"))
    return found.uri if found is not None else ""


def directives_view(config: Config) -> list[dict[str, Any]]:
    """The directives as shown to people and the API: user names, never hashes."""
    return [{"uri": d.uri, "realm": d.realm, "auth_type": d.auth_type, "users": [u.name for u in d.users]}
            for d in config.auth]


def counter_cell(stats: Any, name: str) -> Any:
    """One of `cmegw.stats.HTTP_COUNTERS`: bytes as people read them, other answers with each status said."""
    value = getattr(stats, name, None)
    if value is None:
        return "—"
    if name in HTTP_BYTE_COUNTERS:
        return byte_size(value)
    others = stats.other_answers() if name == "status_unknown" else ""
    return tags.span(str(value), " ", tags.small(f"({others})", class_="muted")) if others else str(value)


def change_password_link(name: str, uri: str = "/") -> str:
    """The Authentication page with the form of `name` of directive `uri` open and the name filled in."""
    anchor = "users" if uri == "/" else f"directive-{uri}"
    return "/http/authentication?" + urlencode({"user": name, "uri": uri}) + "#" + quote(anchor)


def asked_user(request: IRequest, uri: str) -> str | None:
    """The user name a change-password link asks the form of directive `uri` for (None: not asked)."""
    args = getattr(request, "args", None) or {}
    names, uris = args.get(b"user") or [], args.get(b"uri") or [b"/"]
    if not names or uris[0].decode("utf-8", "replace") != uri:
        return None
    return names[0].decode("utf-8", "replace")


def save(admin: Admin, new: Config) -> None:
    admin.gateway.store.change(new)


# -- pages ---------------------------------------------------------------------------------


def statistics_content(admin: Admin, request: IRequest) -> Tag:
    web = admin.web()
    if web is None:
        return card("Statistics", tags.p("The web server part is not running in this process."))
    stats = web.stats
    counters = card("Statistics", kv_table([(label, counter_cell(stats, name)) for label, name in HTTP_COUNTERS]),
                    id="http-statistics")
    live(counters)
    log = web.access_log
    running = admin.gateway.state.config.http
    log_card = card("Log", kv_table([
        (describe("http.logging").label, "on" if running.logging else "off"),
        ("Entries", f"{len(log.entries)} of at most {running.max_log_entries}"),
        ("Size", byte_size(log.bytes)),
    ]), tags.div(
        tags.a("View the log", href="/http/log", class_="button secondary"),
        post_form(admin, request, "/http/log/clear", button("Clear the log", "danger"), class_="inline"),
        class_="actions"))
    listening = getattr(web, "listening", {}) or {}
    servers = card("Servers", kv_table([(k.upper(), v) for k, v in listening.items()]))
    return tags.div(counters, log_card, servers, class_="cards")


def log_query(request: IRequest) -> LogQuery:
    """The Log tab's filter from its address: static files, 401s and live updates hidden unless asked."""
    page = form_value(request, "page")
    shown = {name: form_value(request, name) == "on" for name in ("static", "unauthorized", "live")}
    return LogQuery(**shown, search=form_value(request, "q").strip()[:200],
                    page=int(page) if page.isdigit() else 1)


def log_address(path: str, query: LogQuery, page: int | None = None) -> str:
    """The address of the Log tab (or its download) showing `query`, at `page`."""
    args = [(name, "on") for name in ("static", "unauthorized", "live") if getattr(query, name)]
    args += [("q", query.search)] if query.search else []
    args += [("page", str(page))] if page and page > 1 else []
    return path + ("?" + urlencode(args) if args else "")


def log_content(admin: Admin, request: IRequest) -> Tag:
    web = admin.web()
    query = log_query(request)
    log = web.access_log if web is not None else AccessLog()
    shown = log.select(query)
    choices = [("static", "static files"), ("unauthorized", "401 answers (logins)"), ("live", "live updates")]
    filters = tags.form(
        tags.label("Search ", tags.input(type="search", name="q", value=query.search, id="log-search"),
                   **{"for": "log-search"}),
        tags.span("Show also: ", *[tags.label(tags.input(type="checkbox", name=name, value="on",
                                                         **({"checked": "checked"} if getattr(query, name) else {})),
                                              " " + text, class_="check") for name, text in choices]),
        button("Show", "secondary small"), method="get", action="/http/log", class_="log-filter")
    first = (shown.page - 1) * query.size + 1 if shown.entries else 0
    summary = tags.p(f"Lines {first}–{first + len(shown.entries) - 1 if shown.entries else 0} of {shown.matched}, "
                     f"newest first", f"; {shown.hidden} hidden by the filter" if shown.hidden else "",
                     f" (the log keeps {len(log.records)} lines, {byte_size_text(log.bytes)}).", class_="muted")
    lines = tags.ol(*[tags.li(entry.text, class_=f"log-{entry.status // 100}xx" if entry.status else "")
                      for entry in shown.entries], class_="log-lines", start=str(first or 1)) \
        if shown.entries else tags.p("(no line)", class_="muted")
    paging = tags.nav(
        tags.a("« Newer", href=log_address("/http/log", query, shown.page - 1)) if shown.page > 1 else "",
        tags.span(f" Page {shown.page} of {shown.pages} "),
        tags.a("Older »", href=log_address("/http/log", query, shown.page + 1)) if shown.page < shown.pages else "",
        class_="log-paging", **{"aria-label": "Pages of the log"})
    return card("Access log", filters, summary, lines, paging, tags.div(
        tags.a("Download as text", href=log_address("/http/log.txt", attrs.evolve(query, page=1)),
               class_="button secondary"),
        tags.a("Back", href="/http", class_="button secondary"),
        post_form(admin, request, "/http/log/clear", hidden("back", "/http/log"), button("Clear the log", "danger"),
                  class_="inline"),
        class_="actions"), wide=True, id="access-log")


def log_text(admin: Admin, request: IRequest) -> bytes:
    """The lines the Log tab's filter keeps, oldest first, as a text file."""
    web = admin.web()
    log = web.access_log if web is not None else AccessLog()
    query = attrs.evolve(log_query(request), page=1, size=max(1, len(log.records)))
    return "".join(entry.text + "\n" for entry in reversed(log.select(query).entries)).encode("utf-8")


def configuration_content(admin: Admin, request: IRequest, state: FormState | None = None) -> Tag:
    state = state or settings_state(admin, CONFIG_FIELDS)
    return tags.div(card("Configuration", settings_form(
        admin, request, "/http/configuration", "http", CONFIG_FIELDS, state,
        applies=applies_text(CONFIG_FIELDS)), wide=True), class_="cards")


def authentication_content(admin: Admin, request: IRequest, states: dict[str, FormState] | None = None) -> Tag:
    states = states or {}
    config: Config = admin.gateway.store.config
    rows = []
    for number, d in enumerate(config.auth):
        users = []
        for u in d.users:
            users.append(tags.li(tags.span(u.name, class_="user"), " ", tags.a(
                "change password", href=change_password_link(u.name, d.uri), class_="button link"), post_form(
                admin, request, "/http/authentication/user/delete", hidden("uri", d.uri), hidden("name", u.name),
                button("Delete", "link danger", title=f"Delete user {u.name} of {d.uri}"), class_="inline")))
        type_form = post_form(
            admin, request, "/http/authentication/directive/type", hidden("uri", d.uri),
            tags.select(*[tags.option(t, value=t, **({"selected": "selected"} if t == d.auth_type else {}))
                          for t in AUTH_TYPES], name="auth_type", **{"aria-label": f"AuthType of {d.uri}"}),
            button("Set", "secondary small"), class_="inline")
        delete = "" if d.uri == "/" else post_form(
            admin, request, "/http/authentication/directive/delete", hidden("uri", d.uri),
            button("Delete directive", "link danger"), class_="inline")
        key = f"user:{d.uri}"
        asked = asked_user(request, d.uri)
        user_state = states.get(key) or FormState(values={"name": asked or ""})
        add_user_form = post_form(
            admin, request, "/http/authentication/user", hidden("uri", d.uri),
            tags.div(*[render_field(f, user_state, f"directive{number}-" if number else "") for f in USER_FIELDS],
                     class_="fields compact"),
            tags.div(button("Add user / set password", "secondary"), class_="actions"),
            class_="settings", novalidate="novalidate")
        rows.append(card(f"Directive {d.uri}", kv_table([
            ("URI", tags.code(d.uri)), ("Realm", d.realm), ("AuthType", type_form),
            ("Users", tags.ul(*users, class_="users") if users else tags.span("none", class_="muted")),
        ]), tags.details(tags.summary("Add a user or change a password"), add_user_form,
                         **({"open": "open"} if key in states or asked is not None else {})),
            tags.div(delete, class_="actions"), id="users" if d.uri == "/" else f"directive-{d.uri}"))
    state = states.get("directive") or FormState(values={"realm": "config", "auth_type": "Digest"})
    add = card("Add a directive", post_form(
        admin, request, "/http/authentication/directive",
        tags.div(*[render_field(f, state) for f in DIRECTIVE_FIELDS], class_="fields"),
        tags.div(button("Add directive"), tags.span("Applies at once.", class_="applies"), class_="actions"),
        class_="settings", novalidate="novalidate"), tags.p(
        "AuthTypes from least to most secure: None (no login; overrides a parent), Basic, Digest, SSL "
        "(HTTPS only, no password), SSL/Basic, SSL/Digest. Passwords are stored as Digest hashes "
        "and never shown.", class_="muted"))
    return tags.div(*rows, add, class_="cards")


def certificate_content(admin: Admin, request: IRequest, errors: dict[str, str] | None = None) -> Tag:
    web = admin.web()
    info = getattr(web, "tls", None) if web is not None else None
    if info is None:
        current = tags.p("No certificate is in use in this process.", class_="muted")
    else:
        current = kv_table([
            ("Subject", info.subject), ("Issuer", info.issuer),
            ("Valid from", str(info.not_before)), ("Valid until", str(info.not_after)),
            ("Self-signed", "yes" if info.self_signed else "no"),
            ("SHA-256 fingerprint", tags.code(info.fingerprint, class_="wrap")),
            ("File", getattr(info, "path", "") or "—"),
        ] + ([("Problem", tags.strong(info.problem, class_="text-error"))] if info.problem else []))
    fields = [Field("certificate", "Certificate (PEM)", "file", help="The certificate first, then its chain."),
              Field("private_key", "Private key (PEM)", "file", help="Unencrypted, matching the certificate.")]
    state = FormState(errors=errors or {})
    upload = post_form(admin, request, "/http/certificate",
                       tags.div(*[render_field(f, state) for f in fields], class_="fields"),
                       tags.div(button("Upload and use"), tags.span("Applies at once, no restart.", class_="applies"),
                                class_="actions"), multipart=True, class_="settings", novalidate="novalidate")
    return tags.div(card("Certificate in use", current), card("Upload a certificate", upload), class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin, "http", "HTTP", TABS)
    page = route.page

    @route.get("/http")
    def http_statistics(request: IRequest) -> Any:
        return page(request, statistics_content(admin, request))

    @route.get("/http/log")
    def http_log(request: IRequest) -> Any:
        return page(request, log_content(admin, request), active="/http", head=LOG_STYLE)

    @route.get("/http/log.txt")
    def http_log_text(request: IRequest) -> Any:
        security_headers(request)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="cmegw-access-log.txt"')
        return log_text(admin, request)

    @route.post("/http/log/clear")
    def http_log_clear(request: IRequest) -> Any:
        web = admin.web()
        if web is not None:
            web.access_log.clear()
        back = "/http/log" if form_value(request, "back") == "/http/log" else "/http"
        return admin.see_other(request, back, Notice("ok", "The log was cleared."))

    route.settings("/http/configuration", "http_configuration", CONFIG_FIELDS, configuration_content)

    def auth_page(request: IRequest, states: dict[str, FormState] | None = None, notice: Notice | None = None,
                  code: int = 200) -> Any:
        return page(request, authentication_content(admin, request, states), code=code, notice=notice,
                    active="/http/authentication")

    def change(request: IRequest, make: Any, done: str, key: str, fields: list[Field],
               keep: dict[str, str], redirect: bool = True) -> Any:
        """
        Apply one directive/user change; on error show it at its field and keep
        what was typed.  Done, it redirects to the page (post/redirect/get),
        unless `redirect` is false: the signed-in user's own new password, whose
        result a GET with the old credentials could no longer fetch.
        """
        old = admin.gateway.store.config
        try:
            new = make(old)
            if new is not old:
                save(admin, new)
        except (ConfigError, ConfigFileError, OSError) as e:
            state = FormState(values=keep)
            message = error_message(e) if isinstance(e, ConfigError) else str(e)
            setting = getattr(e, "setting", "")
            tail = setting.rsplit(".", 1)[-1]
            target = {"uri": "uri", "realm": "realm", "auth_type": "auth_type", "name": "name",
                      "password": "password"}.get(tail)
            if target and any(f.name == target for f in fields):
                state.errors[target] = message
                state.notice = Notice("error", "Nothing was changed: correct the field marked below.")
            else:
                state.notice = Notice("error", f"Nothing was changed: {message}")
            return auth_page(request, {key: state}, state.notice, code=400)
        notice = Notice("ok", [*(done if isinstance(done, list) else [done]), " Applies at once."]) \
            if new is not old else Notice("info", done)
        if not redirect:
            return auth_page(request, notice=notice)
        return admin.see_other(request, "/http/authentication", notice)

    @route.get("/http/authentication")
    def http_authentication(request: IRequest) -> Any:
        return auth_page(request)

    @route.post("/http/authentication/directive")
    def http_directive_add(request: IRequest) -> Any:
        uri, realm, kind = (form_value(request, n) for n in ("uri", "realm", "auth_type"))
        return change(request, lambda c: add_directive(c, uri, realm, kind), f"Directive {uri} added.",
                      "directive", DIRECTIVE_FIELDS, {"uri": uri, "realm": realm, "auth_type": kind})

    @route.post("/http/authentication/directive/delete")
    def http_directive_delete(request: IRequest) -> Any:
        uri = form_value(request, "uri")
        return change(request, lambda c: delete_directive(c, uri), f"Directive {uri} deleted.", "delete", [], {})

    @route.post("/http/authentication/directive/type")
    def http_directive_type(request: IRequest) -> Any:
        uri, kind = form_value(request, "uri"), form_value(request, "auth_type")
        same = any(d.uri == uri and d.auth_type == kind for d in admin.gateway.store.config.auth)
        done = f"Directive {uri} uses {kind} already: nothing changed." if same else f"Directive {uri} now uses {kind}."
        return change(request, lambda c: set_auth_type(c, uri, kind), done, "type", [], {})

    @route.post("/http/authentication/user")
    def http_user_add(request: IRequest) -> Any:
        uri, name = form_value(request, "uri"), form_value(request, "name")
        password, confirm = form_value(request, "password"), form_value(request, "confirm")
        typed = password_problems(name, password, confirm)
        if typed:
            state = FormState(values={"name": name}, errors=typed,
                              notice=Notice("error", "Nothing was changed: correct the fields marked below."))
            return auth_page(request, {f"user:{uri}": state}, state.notice, code=400)
        own = name == authenticated_user(request) and uri == directive_uri(admin, request)
        done: Any = f"User {name} of {uri} saved."
        if own:
            done = ["Your password was changed. Your browser still sends the old one, so it will ask for "
                    "the new one: ", tags.a("sign in with the new password", href=SIGN_OUT_PATH), "."]
        return change(request, lambda c: add_user(c, uri, name, password), done, f"user:{uri}", USER_FIELDS,
                      {"name": name}, redirect=not own)

    @route.post("/http/authentication/user/delete")
    def http_user_delete(request: IRequest) -> Any:
        uri, name = form_value(request, "uri"), form_value(request, "name")
        return change(request, lambda c: delete_user(c, uri, name), f"User {name} of {uri} deleted.",
                      "delete", [], {})

    @route.get("/http/certificate")
    def http_certificate(request: IRequest) -> Any:
        return page(request, certificate_content(admin, request))

    @route.post("/http/certificate")
    def http_certificate_upload(request: IRequest) -> Any:
        files = uploads(request)
        errors = {}
        for name in ("certificate", "private_key"):
            if name not in files or not files[name].data.strip():
                errors[name] = "Choose a PEM file."
        web = admin.web()
        if web is None:
            return page(request, certificate_content(admin, request), code=503,
                        notice=Notice("error", "The web server part is not running; nothing was changed."))
        if not errors:
            try:
                web.install_certificate(files["certificate"].data, files["private_key"].data)
            except ValueError as e:
                errors["certificate"] = str(e)
        if errors:
            return page(request, certificate_content(admin, request, errors), code=400,
                        notice=Notice("error", "The certificate was not installed: see below."))
        return admin.see_other(request, "/http/certificate",
                               Notice("ok", "The new certificate is in use for new HTTPS connections."))
