# -*- test-case-name: tests.test_web_pages -*-
"""
What every admin page shares: where the templates and static files are, the
layout (navigation, tabs, banners), forms bound to settings by name, and the
CSRF token.

Klein names a route after its function: every route function here has a name
unique across the page modules (``serial_statistics``, ``tcpip_statistics``).

A settings form names its inputs after the settings themselves
(``line.1.baud_rate``), so one handler serves every form: it reads the typed
text, changes the configuration through `apply_settings` (the one validation),
saves it through the store and says what applied at once and what waits for a
restart.  An error is shown next to its field with the model's message, and the
form keeps what the user typed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import sys
import sysconfig
from email import message_from_bytes
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Sequence
from urllib.parse import urlsplit

import attrs
from twisted.python.filepath import FilePath
from twisted.web.iweb import IRequest
from twisted.web.template import Element, Tag, XMLFile, renderer, tags

import cmegw
from cmegw.config.model import Config, ConfigError
from cmegw.config.settings import apply_settings, format_value, get_setting, needs_restart
from cmegw.config.store import ConfigFileError
from cmegw.web.auth import authenticated_user as _authenticated_user
from cmegw.web.auth import factory_password_in_use
from cmegw.web.service import running_web

#: Where `pip install .` puts the files of the repository's web/ folder (setup.cfg data_files).
DATA_SUBDIR = Path("share") / "cmegw" / "web"


def _web_root_candidates() -> Iterable[Path]:
    override = os.environ.get("CMEGW_WEB_ROOT")
    if override:
        yield Path(override)
    yield Path(cmegw.__file__).resolve().parents[1] / "web"  # a checkout
    for prefix in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        if prefix:
            yield Path(prefix) / DATA_SUBDIR
    user = sysconfig.get_config_var("userbase") or os.path.expanduser("~/.local")
    yield Path(user) / DATA_SUBDIR


def web_root() -> Path:
    """The folder with ``templates/`` and ``static/``: a checkout's web/ or the installed copy."""
    for path in _web_root_candidates():
        if (path / "templates" / "layout.xml").is_file():
            return path
    raise FileNotFoundError("the web files (templates/layout.xml) are not installed; "
                            "set CMEGW_WEB_ROOT to the folder that holds them")


# -- the other web modules ------------------------------------------------------------------


def authenticated_user(request: IRequest) -> str:
    """The user the authentication wrapper let in ("" when none is known)."""
    return _authenticated_user(request) or ""


# -- CSRF ---------------------------------------------------------------------------------

SESSION_COOKIE = b"cmegw_session"
CSRF_FIELD = "_csrf"


class CsrfGuard:
    """
    A token tied to the browser's session cookie and the logged-in user:
    ``HMAC(secret, session | user)``.  A cross-site form has neither the cookie
    (SameSite=Strict) nor the token; the secret lives as long as the process.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def session_id(self, request: IRequest) -> str:
        sid = getattr(request, "_cmegw_session", None)
        if sid:
            return sid
        raw = request.getCookie(SESSION_COOKIE) or b""
        sid = raw.decode("ascii", "replace")
        if len(sid) != 43 or not all(c.isalnum() or c in "-_" for c in sid):
            sid = secrets.token_urlsafe(32)
            request.addCookie(SESSION_COOKIE, sid.encode("ascii"), path=b"/", httpOnly=True,
                              sameSite="strict", secure=bool(request.isSecure()))
        request._cmegw_session = sid  # type: ignore[attr-defined]
        return sid

    def token(self, request: IRequest) -> str:
        message = f"{self.session_id(request)}|{authenticated_user(request)}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def check(self, request: IRequest, offered: str) -> bool:
        if not same_origin(request):
            return False
        if not (request.getCookie(SESSION_COOKIE) or b""):
            return False
        return hmac.compare_digest(self.token(request), offered or "")


def same_origin(request: IRequest) -> bool:
    """False when the browser says the request comes from another site (Origin header)."""
    origin = request.getHeader(b"origin")
    if origin is None:
        return True
    host = request.getHeader(b"host") or b""
    try:
        return urlsplit(origin.decode("ascii")).netloc.lower() == host.decode("ascii").lower()
    except UnicodeDecodeError:
        return False


# -- request bodies -----------------------------------------------------------------------


def form_value(request: IRequest, name: str, default: str = "") -> str:
    values = (request.args or {}).get(name.encode("utf-8"))
    if not values:
        return default
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def form_has(request: IRequest, name: str) -> bool:
    return name.encode("utf-8") in (request.args or {})


@attrs.frozen
class Upload:
    filename: str
    data: bytes


def uploads(request: IRequest) -> dict[str, Upload]:
    """The files of a multipart form, with their file names (which request.args drops)."""
    ctype = request.getHeader(b"content-type") or b""
    if not ctype.lower().startswith(b"multipart/form-data"):
        return {}
    request.content.seek(0)
    body = request.content.read()
    request.content.seek(0)
    message = message_from_bytes(b"MIME-Version: 1.0\r\nContent-Type: " + ctype + b"\r\n\r\n" + body)
    found: dict[str, Upload] = {}
    if not message.is_multipart():
        return found
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        if name and filename is not None:
            data = part.get_payload(decode=True) or b""
            found[str(name)] = Upload(os.path.basename(str(filename)), data)
    return found


# -- layout -------------------------------------------------------------------------------

#: The device's navigation: (key, label, URL).
SECTIONS = (
    ("status", "Status", "/status"),
    ("network", "Network", "/network"),
    ("tcpip", "M-Bus TCP/IP", "/tcpip"),
    ("serial", "M-Bus Serial", "/serial"),
    ("meters", "Meters", "/meters"),
    ("http", "HTTP", "/http"),
    ("system", "System", "/system"),
)


@attrs.frozen
class Notice:
    """A message at the top of a page: kind is ok, info, warn or error."""

    kind: str
    text: Any


class Layout(Element):
    """The page frame of web/templates/layout.xml around a page's content."""

    def __init__(self, admin: "Admin", request: IRequest, *, section: str, title: str, content: Any,
                 tabs: Sequence[tuple[str, str]] = (), active: str = "", notice: Notice | None = None,
                 head: Any = "") -> None:
        super().__init__(loader=admin.template("layout.xml"))
        self.admin = admin
        self.section = section
        self.title = title
        self.content = content
        self.tabs = tabs
        self.active = active
        self.notice = notice
        self.head = head
        self.user = authenticated_user(request)

    @renderer
    def page(self, request: IRequest, tag: Tag) -> Tag:
        gateway = self.admin.gateway
        identity = gateway.running_config.identity
        nav = tags.ul(*[
            tags.li(tags.a(label, href=url, **({"aria-current": "page", "class": "active"}
                                               if key == self.section else {})))
            for key, label, url in SECTIONS])
        tabs: Any = ""
        if self.tabs:
            tabs = tags.ul(*[
                tags.li(tags.a(label, href=url, **({"aria-current": "page", "class": "active"}
                                                   if url == self.active else {})))
                for label, url in self.tabs], class_="tabs")
        return tag.fillSlots(
            title=self.title,
            product=identity.product_type,
            identity=f"S/N {identity.serial_number or '—'}",
            version=f"{cmegw.__version__}",
            user=f" · signed in as {self.user}" if self.user else "",
            nav=nav,
            tabs=tabs,
            banners=self.admin.banners(),
            notice=notice_tag(self.notice) if self.notice else "",
            content=self.content,
            head=self.head,
        )


def notice_tag(notice: Notice) -> Tag:
    return tags.div(notice.text, class_=f"notice notice-{notice.kind}", role="status")


# -- building blocks ----------------------------------------------------------------------


def card(title: str, *children: Any, id: str | None = None, wide: bool = False) -> Tag:
    attributes: dict[str, str] = {"class": "card wide" if wide else "card"}
    if id:
        attributes["id"] = id
    return tags.section(tags.h2(title), *children, **attributes)


def cell(value: Any) -> Any:
    """Numbers as text (the flattener takes strings and tags only)."""
    return str(value) if isinstance(value, (int, float)) else value


def kv_table(rows: Iterable[tuple[str, Any]]) -> Tag:
    return tags.table(tags.tbody(*[tags.tr(tags.th(k, scope="row"), tags.td(cell(v))) for k, v in rows]),
                      class_="kv")


def grid_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: bool = True) -> Tag:
    return tags.div(tags.table(
        tags.thead(tags.tr(*[tags.th(h, scope="col") for h in header])),
        tags.tbody(*[tags.tr(tags.th(r[0], scope="row"), *[tags.td(cell(v)) for v in r[1:]]) for r in rows]),
        class_="grid numeric" if numeric else "grid"), class_="scroll")


def unavailable(value: Any) -> Any:
    """A kernel counter the driver does not keep is shown as such, never as 0."""
    return tags.span("unavailable", class_="muted") if value is None else value


def hidden(name: str, value: str) -> Tag:
    return tags.input(type="hidden", name=name, value=value)


def button(label: str, kind: str = "primary", **attributes: str) -> Tag:
    return tags.button(label, type="submit", class_=f"button {kind}", **attributes)


def post_form(admin: "Admin", request: IRequest, action: str, *children: Any, multipart: bool = False,
              **attributes: str) -> Tag:
    """A POST form carrying the CSRF token."""
    extra = {"enctype": "multipart/form-data"} if multipart else {}
    return tags.form(hidden(CSRF_FIELD, admin.csrf.token(request)), *children, method="post",
                     action=action, **extra, **attributes)


# -- settings forms -----------------------------------------------------------------------


@attrs.frozen
class Field:
    """One input of a form; `name` is the setting's name (``line.1.baud_rate``) or a plain name."""

    name: str
    label: str
    kind: str = "text"  # text, number, select, checkbox, checkboxes, password, textarea, file
    choices: tuple[tuple[str, str], ...] = ()
    help: str = ""
    unit: str = ""
    placeholder: str = ""


@attrs.define
class FormState:
    """What a form shows: the values (as typed), errors by field name, and a message."""

    values: dict[str, str] = attrs.Factory(dict)
    errors: dict[str, str] = attrs.Factory(dict)
    notice: Notice | None = None
    #: The setting values in force (shown beside a field whose saved value differs).
    running: dict[str, str] = attrs.Factory(dict)


def field_id(name: str) -> str:
    return "f-" + "".join(c if c.isalnum() else "-" for c in name)


def render_field(field: Field, state: FormState) -> Tag:
    fid = field_id(field.name)
    value = state.values.get(field.name, "")
    error = state.errors.get(field.name)
    described = []
    attributes: dict[str, str] = {"id": fid, "name": field.name}
    if error:
        attributes["aria-invalid"] = "true"
        described.append(fid + "-error")
    if field.help:
        described.append(fid + "-help")
    if described:
        attributes["aria-describedby"] = " ".join(described)
    if field.placeholder:
        attributes["placeholder"] = field.placeholder
    if field.kind == "checkbox":
        if value == "on":
            attributes["checked"] = "checked"
        control: Tag = tags.input(type="checkbox", value="on", **attributes)
        label = tags.label(control, tags.span(field.label), class_="check", for_=fid)
        head: Any = label
        body: Any = ""
    elif field.kind == "checkboxes":
        chosen = {v.strip() for v in value.split(",")}
        boxes = []
        for i, (choice, text) in enumerate(field.choices):
            extra = {"checked": "checked"} if choice in chosen else {}
            box_attributes = dict(attributes, id=f"{fid}-{i}")
            boxes.append(tags.label(tags.input(type="checkbox", value=choice, **extra, **box_attributes),
                                    tags.span(text), class_="check", for_=f"{fid}-{i}"))
        head = tags.span(field.label, class_="label")
        body = tags.span(*boxes, class_="control checks")
    else:
        if field.kind == "select":
            options = []
            for choice, text in field.choices:
                extra = {"selected": "selected"} if choice == value else {}
                options.append(tags.option(text, value=choice, **extra))
            control = tags.select(*options, **attributes)
        elif field.kind == "textarea":
            control = tags.textarea(value, rows="6", spellcheck="false", **attributes)
        elif field.kind == "file":
            control = tags.input(type="file", **attributes)
        elif field.kind == "password":
            control = tags.input(type="password", autocomplete="new-password", **attributes)
        else:
            kind = "number" if field.kind == "number" else "text"
            extra = {"inputmode": "numeric"} if kind == "number" else {}
            control = tags.input(type="text", value=value, spellcheck="false", **extra, **attributes)
        head = tags.label(field.label, for_=fid)
        body = tags.span(control, tags.span(field.unit, class_="unit") if field.unit else "", class_="control")
    running = state.running.get(field.name)
    hints: list[Any] = []
    if field.help:
        hints.append(tags.small(field.help, id=fid + "-help", class_="help"))
    if running is not None:
        hints.append(tags.small("in force now: ", tags.code(running or "(empty)"), class_="help pending"))
    if error:
        hints.append(tags.p(error, id=fid + "-error", class_="field-error", role="alert"))
    return tags.div(head, body, *hints, class_="field has-error" if error else "field")


def settings_state(admin: "Admin", fields: Sequence[Field]) -> FormState:
    """A form showing the saved values, and what is in force where it differs."""
    saved: Config = admin.gateway.store.config
    running_config: Config = admin.gateway.running_config
    state = FormState()
    for f in fields:
        try:
            value = get_setting(saved, f.name)
        except ConfigError:
            continue
        state.values[f.name] = display_value(f, value)
        try:
            now = get_setting(running_config, f.name)
        except ConfigError:
            continue
        if now != value:
            state.running[f.name] = format_value(now)
    return state


def display_value(field: Field, value: Any) -> str:
    if field.kind == "checkbox":
        return "on" if value else "off"
    return format_value(value)


def typed_values(request: IRequest, fields: Sequence[Field]) -> dict[str, str]:
    """The text the user typed, by field; an unticked checkbox is "off"."""
    values = {}
    for f in fields:
        if f.kind == "checkbox":
            values[f.name] = "on" if form_value(request, f.name) == "on" else "off"
        elif f.kind == "checkboxes":
            raw = (request.args or {}).get(f.name.encode("utf-8"), [])
            values[f.name] = ", ".join(v.decode("utf-8", "replace") for v in raw)
        elif f.kind not in ("file", "password"):
            values[f.name] = form_value(request, f.name)
    return values


def changed_settings(old: Config, new: Config, names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        try:
            if get_setting(old, name) != get_setting(new, name):
                out.append(name)
        except ConfigError:
            out.append(name)
    return out


def change_message(labels: dict[str, str], changed: Sequence[str]) -> Notice:
    """Say which changes are in force at once and which wait for a restart."""
    if not changed:
        return Notice("info", "Nothing changed.")
    now = list(dict.fromkeys(labels.get(n, n) for n in changed if not needs_restart(n)))
    later = list(dict.fromkeys(labels.get(n, n) for n in changed if needs_restart(n)))
    parts: list[Any] = ["Saved. "]
    if now:
        parts.append(tags.span("Applied at once: ", tags.strong(", ".join(now)), ". "))
    if later:
        parts.append(tags.span("After a restart: ", tags.strong(", ".join(later)), " (restart on the ",
                               tags.a("System", href="/system"), " page)."))
    return Notice("ok" if not later else "warn", parts)


def error_field(error: ConfigError, fields: Sequence[Field], aliases: dict[str, str] | None = None) -> str | None:
    """The form field an error belongs to (by name, alias or last name part), if any."""
    names = [f.name for f in fields]
    if error.setting in names:
        return error.setting
    if aliases and error.setting in aliases:
        return aliases[error.setting]
    tail = error.setting.rsplit(".", 1)[-1]
    matches = [n for n in names if n.rsplit(".", 1)[-1] == tail]
    return matches[0] if len(matches) == 1 else None


def error_message(error: ConfigError) -> str:
    """The model's own message (the console and the API show the same)."""
    return str(error)


def apply_form(admin: "Admin", request: IRequest, fields: Sequence[Field],
               prepare: Callable[[dict[str, str]], dict[str, Any]] | None = None,
               aliases: dict[str, str] | None = None,
               saved_state: Callable[[], FormState] | None = None) -> tuple[FormState, bool]:
    """
    Change the settings of a submitted form, all or nothing.  Returns the
    state to show and whether it was saved; once saved, the form shows
    `saved_state()` (by default `settings_state` of its fields).
    """
    typed = typed_values(request, fields)
    state = FormState(values=dict(typed))
    changes: dict[str, Any] = prepare(dict(typed)) if prepare else dict(typed)
    store = admin.gateway.store
    old: Config = store.config
    try:
        new = apply_settings(old, changes)
    except ConfigError as e:
        where = error_field(e, fields, aliases)
        for name, value in changes.items():  # every wrong field at once, not only the first
            try:
                apply_settings(old, {name: value})
            except ConfigError as other:
                field = error_field(other, fields, aliases)
                if field and field not in state.errors:
                    state.errors[field] = error_message(other)
        if where:
            state.errors.setdefault(where, error_message(e))
            state.notice = Notice("error", "Nothing was saved: correct the field marked below.")
        else:
            state.notice = Notice("error", f"Nothing was saved: {e}")
        return state, False
    changed = changed_settings(old, new, changes)
    if changed:
        try:
            store.change(new)
        except (ConfigFileError, ConfigError, OSError) as e:
            state.notice = Notice("error", f"Nothing was saved: {e}")
            return state, False
    labels = {f.name: f.label for f in fields}
    labels.update({alias: labels[target] for alias, target in (aliases or {}).items() if target in labels})
    fresh = saved_state() if saved_state else settings_state(admin, fields)
    fresh.notice = change_message(labels, changed)
    return fresh, True


def save_form(admin: "Admin", request: IRequest, page: Callable[..., "Layout"], fields: Sequence[Field],
              show: Callable[[FormState], Any], **options: Any) -> "Layout":
    """Apply a settings form (`apply_form` with `options`) and answer with `show(state)`: 200 saved, 400 not."""
    state, ok = apply_form(admin, request, fields, **options)
    return page(request, show(state), code=200 if ok else 400, notice=state.notice)


def posted_number(request: IRequest, numbers: Container[int]) -> int | None:
    """The line or tunnel a form's ``_group`` names, if it is one of `numbers`."""
    group = form_value(request, "_group")
    return int(group) if group.isdigit() and int(group) in numbers else None


def save_numbered_form(admin: "Admin", request: IRequest, page: Callable[..., "Layout"], numbers: Container[int],
                       fields_of: Callable[[int], Sequence[Field]],
                       show: Callable[[dict[int, FormState]], Any]) -> "Layout":
    """`save_form` for the form of one of several lines or tunnels; 400 for a number not in `numbers`."""
    n = posted_number(request, numbers)
    if n is None:
        return page(request, show({}), code=400)
    return save_form(admin, request, page, fields_of(n), lambda state: show({n: state}))


def settings_form(admin: "Admin", request: IRequest, action: str, group: str, fields: Sequence[Field],
                  state: FormState, *, submit: str = "Save", intro: Any = "", applies: str = "") -> Tag:
    """A form of settings; `group` says which part of the page posted it."""
    return post_form(
        admin, request, action,
        hidden("_group", group),
        tags.p(intro, class_="intro") if intro else "",
        tags.div(*[render_field(f, state) for f in fields], class_="fields"),
        tags.div(button(submit), tags.span(applies, class_="applies") if applies else "", class_="actions"),
        class_="settings", novalidate="novalidate")


def applies_text(fields: Sequence[Field]) -> str:
    later = [f for f in fields if needs_restart(f.name)]
    if not later:
        return "Changes apply at once."
    if len(later) == len(fields):
        return "Changes apply after a restart."
    return "Fields marked ⟳ apply after a restart; the others at once."


def mark_restart(fields: Sequence[Field]) -> list[Field]:
    """Label the fields whose change waits for a restart."""
    return [attrs.evolve(f, label=f.label + " ⟳") if needs_restart(f.name) and "⟳" not in f.label else f
            for f in fields]


# -- the admin context ----------------------------------------------------------------------


class Admin:
    """What the pages share: the gateway, the clock, the CSRF guard, the templates."""

    def __init__(self, gateway: Any, *, clock: Any = None, root: Path | None = None,
                 csrf: CsrfGuard | None = None, host_network: Callable[[], Any] | None = None,
                 web: Callable[[], Any] | None = None) -> None:
        from cmegw.web.hostnet import read_host_network

        self.gateway = gateway
        self.clock = clock if clock is not None else gateway.reactor
        self.root = root or web_root()
        self.csrf = csrf or CsrfGuard()
        self.host_network = host_network or read_host_network
        self._web = web or (lambda: running_web(gateway))
        self._templates: dict[str, XMLFile] = {}
        #: The software updater of the System page (set by `admin_resource`).
        self.updater: Any = None

    def web(self) -> Any:
        return self._web()

    def template(self, name: str) -> XMLFile:
        if name not in self._templates:
            self._templates[name] = XMLFile(FilePath(str(self.root / "templates" / name)))
        return self._templates[name]

    def banners(self) -> Tag:
        gateway = self.gateway
        out: list[Any] = []
        problem = gateway.status.config_problem
        if problem:
            out.append(tags.div(tags.strong("Configuration problem: "), problem,
                                " The gateway runs on the last good configuration; fix the file, "
                                "or save any page to write a valid one.",
                                class_="banner banner-error", role="alert"))
        if factory_password_in_use(gateway.store.config):
            out.append(tags.div(tags.strong("The factory password is in use. "),
                                "Anyone who knows the manual can change this gateway: ",
                                tags.a("change the password", href="/http/authentication#users"), ".",
                                class_="banner banner-warn", role="alert"))
        pending = gateway.pending_restart()
        if pending:
            out.append(tags.div("Saved changes wait for a restart: ", tags.code(", ".join(pending)), ". ",
                                tags.a("Restart", href="/system#restart"),
                                class_="banner banner-info"))
        return tags.div(*out, class_="banners") if out else tags.transparent()

    def page(self, request: IRequest, *, section: str, title: str, content: Any,
             tabs: Sequence[tuple[str, str]] = (), active: str = "", notice: Notice | None = None,
             code: int = 200, head: Any = "") -> Layout:
        security_headers(request)
        self.csrf.session_id(request)  # the cookie must go out with the headers, before any form renders
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return Layout(self, request, section=section, title=title, content=content, tabs=tabs,
                      active=active or request.path.decode("utf-8", "replace"), notice=notice, head=head)

    def section_page(self, section: str, title: str, tabs: Sequence[tuple[str, str]] = ()) -> Callable[..., Layout]:
        """The page function of one navigation section: its section, title and tabs filled in."""

        def page(request: IRequest, content: Any, code: int = 200, notice: Any = None, head: Any = "",
                 active: str = "") -> Layout:
            return self.page(request, section=section, title=title, tabs=tabs, content=content, code=code,
                             notice=notice, head=head, active=active)

        return page

    def forbidden(self, request: IRequest) -> Layout:
        return self.page(request, section="", title="Form expired", code=403, content=card(
            "The form could not be accepted",
            tags.p("It was sent without this browser's session, from another site, or the gateway "
                   "restarted since the page was loaded. Nothing was changed."),
            tags.p(tags.a("Go back", href=request.path.decode("utf-8", "replace")),
                   " and send the form again.")))

    def checked(self, request: IRequest) -> bool:
        return self.csrf.check(request, form_value(request, CSRF_FIELD))

    def csrf_checked(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """A form's POST handler that runs only with this browser's CSRF token (the 403 page otherwise)."""

        @functools.wraps(handler)
        def checked_handler(request: IRequest, *args: Any, **kwargs: Any) -> Any:
            if not self.checked(request):
                return self.forbidden(request)
            return handler(request, *args, **kwargs)

        return checked_handler


def security_headers(request: IRequest) -> None:
    request.setHeader(b"content-security-policy",
                      b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                      b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-store")
