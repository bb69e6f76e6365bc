# -*- test-case-name: tests.test_web_pages_forms -*-
"""
Forms: the CSRF token, reading request bodies, and forms bound to settings
by name.

A settings form names its inputs after the settings themselves
(``line.1.baud_rate``), so one handler serves every form: it reads the typed
text, changes the configuration through `apply_settings` (the one validation),
saves it through the store and says what applied at once and what waits for a
restart.  An error is shown next to its field with the model's message, and the
form keeps what the user typed (400).

Post/redirect/get: a form that succeeded answers 303 See Other to the page
that shows its result (`see_other`); the result's notice waits in `Flash`,
per browser session, until that page is drawn once.  A reload or a bookmark
of the page never posts again.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import secrets
from email import message_from_bytes
from typing import Any, Callable, Container, Iterable, Sequence
from urllib.parse import urlsplit

import attrs
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import Config, ConfigError
from cmegw.config.settings import apply_settings, labelled, describe, format_value, get_setting, needs_restart
from cmegw.config.store import ConfigFileError
from cmegw.web.accesslog import LIVE_HEADER
from cmegw.web.pages.layout import AdminView, Layout, authenticated_user
from cmegw.web.pages.widgets import Notice, button, hidden


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


# -- post/redirect/get ---------------------------------------------------------------------

@attrs.define
class Flash:
    """
    The notice of a form's result, kept for the page its POST redirected to:
    one per browser session and page, read once; the oldest go first beyond
    `limit` sessions (bounded memory).
    """

    limit: int = 256
    _waiting: collections.OrderedDict[tuple[str, str], Notice] = attrs.field(
        init=False, factory=collections.OrderedDict)

    def put(self, session: str, path: str, notice: Notice) -> None:
        key = (session, path)
        self._waiting.pop(key, None)
        self._waiting[key] = notice
        while len(self._waiting) > self.limit:
            self._waiting.popitem(last=False)

    def take(self, session: str, path: str) -> Notice | None:
        return self._waiting.pop((session, path), None)

    def __len__(self) -> int:
        return len(self._waiting)


def is_live_request(request: IRequest) -> bool:
    """True for the live updates' own fetches of a page."""
    return request.getHeader(LIVE_HEADER) is not None


def see_other(admin: AdminView, request: IRequest, target: str, notice: Notice | None = None) -> bytes:
    """
    Answer a form that succeeded: 303 See Other to `target` (a path, maybe
    with ``?query`` and ``#fragment``), whose page shows `notice` once.
    """
    if notice is not None:
        path = urlsplit(target).path or "/"
        admin.flash.put(admin.csrf.session_id(request), path, notice)
    request.setResponseCode(303)
    request.setHeader(b"location", target.encode("utf-8"))
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"See " + target.encode("utf-8") + b"\n"


def waiting_notice(admin: AdminView, request: IRequest) -> Notice | None:
    """The notice a redirect left for this page (none for a live update's fetch)."""
    if is_live_request(request):
        return None
    return admin.flash.take(admin.csrf.session_id(request), request.path.decode("utf-8", "replace"))


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


def post_form(admin: AdminView, request: IRequest, action: str, *children: Any, multipart: bool = False,
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


def setting_field(name: str, kind: str = "text", choices: tuple[tuple[str, str], ...] = (), *,
                  label: str = "", unit: str | None = None, help: str = "", placeholder: str = "") -> Field:
    """
    The input of a setting, labelled as the model declares it
    (`cmegw.config.settings.describe`: label and unit); a page passes `label`
    or `unit` only where it needs another word than the model's.
    """
    info = describe(name)
    return Field(name, label or info.label, kind, choices, help=help, unit=info.unit if unit is None else unit,
                 placeholder=placeholder)


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


def render_field(field: Field, state: FormState, id_prefix: str = "") -> Tag:
    """One field of a form; `id_prefix` keeps the ids apart when a page has the same form twice."""
    fid = field_id(id_prefix + field.name)
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


def settings_state(admin: AdminView, fields: Sequence[Field]) -> FormState:
    """A form showing the saved values, and what is in force where it differs."""
    saved: Config = admin.gateway.store.config
    running_config: Config = admin.gateway.state.config
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
    """The text the user typed, by field; an unticked checkbox is "off"; a text field not sent is left out."""
    values = {}
    for f in fields:
        if f.kind == "checkbox":
            values[f.name] = "on" if form_value(request, f.name) == "on" else "off"
        elif f.kind == "checkboxes":
            raw = (request.args or {}).get(f.name.encode("utf-8"), [])
            values[f.name] = ", ".join(v.decode("utf-8", "replace") for v in raw)
        elif f.kind not in ("file", "password") and form_has(request, f.name):
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
    """The model's own message, its setting named in words (the console and the API show the same)."""
    return str(labelled(error))


def apply_form(admin: AdminView, request: IRequest, fields: Sequence[Field],
               prepare: Callable[[dict[str, str]], dict[str, Any]] | None = None,
               aliases: dict[str, str] | None = None,
               saved_state: Callable[[], FormState] | None = None) -> tuple[FormState, bool]:
    """
    Change the settings of a submitted form, all or nothing.  Returns the
    state to show and whether it was saved; once saved, the form shows
    `saved_state()` (by default `settings_state` of its fields).
    """
    typed = typed_values(request, fields)
    state = FormState(values={**settings_state(admin, fields).values, **typed})
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
            state.notice = Notice("error", f"Nothing was saved: correct {marked_fields(state)}.")
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


def marked_fields(state: FormState) -> str:
    """What a refused form's notice points at: "the field marked below", or "the 2 fields marked below"."""
    count = len(state.errors)
    return "the field marked below" if count <= 1 else f"the {count} fields marked below"


def save_form(admin: AdminView, request: IRequest, page: Callable[..., "Layout"], fields: Sequence[Field],
              show: Callable[[FormState], Any], target: str | None = None, **options: Any) -> Any:
    """
    Apply a settings form (`apply_form` with `options`): saved, 303 to
    `target` (the form's own page by default) with the notice; not saved,
    400 with ``show(state)`` (the errors at their fields, the typed text kept).
    """
    state, ok = apply_form(admin, request, fields, **options)
    if ok:
        return see_other(admin, request, target or request.path.decode("utf-8", "replace"), state.notice)
    return page(request, show(state), code=400, notice=state.notice)


def posted_number(request: IRequest, numbers: Container[int]) -> int | None:
    """The line or tunnel a form's ``_group`` names, if it is one of `numbers`."""
    group = form_value(request, "_group")
    return int(group) if group.isdigit() and int(group) in numbers else None


def save_numbered_form(admin: AdminView, request: IRequest, page: Callable[..., "Layout"], numbers: Container[int],
                       fields_of: Callable[[int], Sequence[Field]],
                       show: Callable[[dict[int, FormState]], Any], anchor: str = "") -> Any:
    """
    `save_form` for the form of one of several lines or tunnels (its redirect
    goes to ``#{anchor}{n}`` when `anchor` is given); 400 for a number not in `numbers`.
    """
    n = posted_number(request, numbers)
    if n is None:
        return page(request, show({}), code=400)
    target = request.path.decode("utf-8", "replace") + (f"#{anchor}{n}" if anchor else "")
    return save_form(admin, request, page, fields_of(n), lambda state: show({n: state}), target=target)


def settings_form(admin: AdminView, request: IRequest, action: str, group: str, fields: Sequence[Field],
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
