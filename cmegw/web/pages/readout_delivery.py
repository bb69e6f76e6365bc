# -*- test-case-name: tests.test_web_pages_readouts -*-
"""
Where readings go: the Delivery card (each target's state, error, last
delivery, delivered count, backlog and the age of its oldest reading; the
reading store's file, size and problem) and the Delivery tab of the Meters
section (``/delivery``): the MQTT broker's settings and the HTTP POST
targets (``push.N``: add, change, remove).

Passwords and tokens are write-only: the forms never show them; an empty
field keeps the saved one, "Forget" clears it.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import Config, ConfigError
from cmegw.config.readout import MAX_PUSH_TARGETS, MQTT_PROTOCOLS, PUSH_AUTH, PUSH_FORMATS, MqttConfig, PushConfig
from cmegw.config.readout import push_table
from cmegw.config.settings import describe, get_setting, is_secret
from cmegw.config.store import ConfigFileError
from cmegw.readout.formats import age_text, group_digits, local_time
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.forms import (
    Field,
    FormState,
    applies_text,
    error_message,
    form_value,
    post_form,
    posted_number,
    save_form,
    settings_form,
    settings_state,
)
from cmegw.web.pages.readout_views import METER_TABS, store_view, target_views
from cmegw.web.pages.widgets import Notice, button, card, grid_table, hidden, kv_table

#: Choices of the select fields, by the setting's last name part.
_CHOICES = {"protocol": MQTT_PROTOCOLS, "format": PUSH_FORMATS, "auth": PUSH_AUTH}
_HELP = {
    "url": "mqtt://broker.example:1883 or mqtts://broker.example:8883 (TLS); empty: no MQTT.",
    "base_topic": "Readings go to <base topic>/<gateway serial number>/<meter id>.",
    "discovery_prefix": "Home Assistant's MQTT discovery; empty: no discovery messages.",
    "ca": "Absolute path of a PEM bundle; empty: the system's trust store.",
    "client_id": "Empty: cmegw-<serial number>.",
}
_PUSH_HELP = {
    "url": "http:// or https:// URL of the receiver; each reading is POSTed to it.",
    "auth": "basic needs a user name and password, bearer a token.",
}
#: The suffix of the checkbox that clears a saved password or token.
FORGET = ".forget"


def secret_fields(prefix: str, cls: type, config: Config, help_texts: dict[str, str]) -> list[Field]:
    """The fields of a section (labels from the model); a secret as a write-only password field."""
    fields = []
    for f in attrs.fields(cls):
        name = f"{prefix}.{f.name}"
        info = describe(name)
        if info.secret:
            saved = bool(get_setting(config, name))
            fields.append(Field(name, info.label, "password",
                                help="Saved; type a new one to replace it." if saved else "Not set."))
            if saved:
                fields.append(Field(name + FORGET, f"Forget the saved {info.label.lower()}", "checkbox"))
        elif f.type in (bool, "bool"):
            fields.append(Field(name, info.label, "checkbox", help=help_texts.get(f.name, "")))
        elif f.name in _CHOICES:
            fields.append(Field(name, info.label, "select", tuple((str(c), str(c)) for c in _CHOICES[f.name]),
                                help=help_texts.get(f.name, "")))
        else:
            fields.append(Field(name, info.label, unit=info.unit, help=help_texts.get(f.name, "")))
    return fields


def mqtt_fields(config: Config) -> list[Field]:
    return secret_fields("mqtt", MqttConfig, config, _HELP)


def push_fields(config: Config, n: int) -> list[Field]:
    return secret_fields(f"push.{n}", PushConfig, config, _PUSH_HELP)


def secrets_prepare(request: IRequest, fields: Sequence[Field]) -> Any:
    """The form's changes: a typed password or token replaces the saved one, Forget clears it, empty keeps it."""

    def prepare(typed: dict[str, str]) -> dict[str, Any]:
        changes: dict[str, Any] = {k: v for k, v in typed.items() if not k.endswith(FORGET)}
        for f in fields:
            if f.kind != "password":
                continue
            value = form_value(request, f.name)
            if typed.get(f.name + FORGET) == "on":
                changes[f.name] = ""
            elif value:
                changes[f.name] = value
        return changes

    return prepare


def secret_free_state(admin: Admin, fields: Sequence[Field]) -> FormState:
    """`settings_state` without a password or token in it (not even the one in force)."""
    state = settings_state(admin, [f for f in fields if not f.name.endswith(FORGET)])
    for f in fields:
        if is_secret(f.name):
            state.values.pop(f.name, None)
            state.running.pop(f.name, None)
    return state


# -- the Delivery card --------------------------------------------------------------------------------


def store_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("File", tags.code(str(summary.get("path") or "—")))]
    size = summary.get("bytes", summary.get("file_bytes"))
    if size is not None:
        rows.append(("Size", f"{group_digits(size / 1024 / 1024, 1)} MB ({group_digits(size)} bytes)"))
    if summary.get("readings") is not None:
        rows.append(("Readings kept", group_digits(summary["readings"])))
    if summary.get("held_in_memory"):
        rows.append(("Held in memory", f"{group_digits(summary['held_in_memory'])} readings wait for disk space"))
    problem = summary.get("problem") or ""
    rows.append(("Problem", tags.strong(problem, class_="text-error") if problem else "none"))
    return rows


def store_banner(readout: Any) -> Any:
    """The store's problem (a full disk) at the top of the page."""
    problem = store_view(readout).get("problem") if readout is not None else ""
    if not problem:
        return ""
    return tags.div(tags.strong("Reading store: "), problem, class_="banner banner-error", role="alert")


def delivery_card(admin: Admin) -> Tag:
    readout = admin.gateway.state.readout
    if readout is None:
        return card("Delivery", tags.p("The readouts are not running: nothing is delivered.", class_="muted"),
                    id="delivery", wide=True)
    now = admin.clock.seconds()
    targets = target_views(readout, now)
    if targets:
        rows = []
        for name, t in targets.items():
            waiting = (f"{t['backlog']}, oldest {age_text(t['oldest_waiting_age_seconds'])}"
                       if t["backlog"] and t["oldest_waiting_age_seconds"] is not None else str(t["backlog"]))
            last = t["last_delivery"]
            rows.append([name, tags.span(t["state"], class_=f"pill pill-{t['state']}"),
                         tags.span(t["error"], class_="text-error") if t["error"] else "—",
                         local_time(last) + (f" ({age_text(now - last)})" if last is not None else ""),
                         group_digits(t["delivered"]), waiting])
        table: Any = grid_table(("Target", "State", "Error", "Last delivery", "Delivered", "Backlog"), rows,
                                numeric=False)
    else:
        table = tags.p("No target: readings are kept in the store only. Set an MQTT broker or add an HTTP "
                       "target on the ", tags.a("Delivery", href="/delivery"), " tab.", class_="muted")
    return card("Delivery", table, tags.h3("Reading store"), kv_table(store_rows(store_view(readout))),
                id="delivery", wide=True)


# -- the Delivery tab ---------------------------------------------------------------------------------


def delivery_content(admin: Admin, request: IRequest, states: dict[str, FormState] | None = None) -> Tag:
    states = states or {}
    config = admin.gateway.store.config
    fields = mqtt_fields(config)
    mqtt = card("MQTT broker", settings_form(admin, request, "/delivery/mqtt", "mqtt", fields,
                                             states.get("mqtt") or secret_free_state(admin, fields),
                                             applies=applies_text(fields)), id="mqtt", wide=True)
    pushes = []
    for n in config.push:
        fields = push_fields(config, n)
        pushes.append(card(f"HTTP target {n}", settings_form(
            admin, request, "/delivery/push", str(n), fields,
            states.get(f"push.{n}") or secret_free_state(admin, fields), applies=applies_text(fields)),
            post_form(admin, request, "/delivery/push/remove", hidden("_group", str(n)),
                      button(f"Remove HTTP target {n}", "link danger"), class_="inline"),
            id=f"push-{n}", wide=True))
    add = states.get("push.new") or FormState()
    adding = card("Add an HTTP target", settings_form(
        admin, request, "/delivery/push/add", "new", [Field("push.new.url", describe("push.1.url").label,
                                                            placeholder="https://head-end.example/readings",
                                                            help=_PUSH_HELP["url"])],
        add, submit="Add"), id="push-add") if len(config.push) < MAX_PUSH_TARGETS else ""
    return tags.div(store_banner(admin.gateway.state.readout), delivery_card(admin), mqtt, *pushes, adding,
                    class_="cards")


def free_number(config: Config) -> int | None:
    return next((n for n in range(1, MAX_PUSH_TARGETS + 1) if n not in config.push), None)


def save_config(admin: Admin, new: Config) -> str:
    """Save `new`; "" or why it could not be saved."""
    try:
        admin.gateway.store.change(new)
    except (ConfigFileError, ConfigError, OSError) as e:
        return f"Nothing was saved: {e}"
    return ""


def routes(route: PageRoutes) -> None:
    admin = route.admin

    def page(request: IRequest, content: Any, code: int = 200, notice: Notice | None = None) -> Any:
        return admin.page(request, section="meters", title="Delivery", tabs=METER_TABS, active="/delivery",
                          content=content, code=code, notice=notice)

    @route.get("/delivery")
    def delivery_page(request: IRequest) -> Any:
        return page(request, delivery_content(admin, request))

    @route.post("/delivery/mqtt")
    def delivery_mqtt(request: IRequest) -> Any:
        fields = mqtt_fields(admin.gateway.store.config)
        return save_form(admin, request, page, fields, lambda state: delivery_content(admin, request, {"mqtt": state}),
                         target="/delivery#mqtt", prepare=secrets_prepare(request, fields),
                         saved_state=lambda: secret_free_state(admin, mqtt_fields(admin.gateway.store.config)))

    @route.post("/delivery/push")
    def delivery_push(request: IRequest) -> Any:
        config = admin.gateway.store.config
        n = posted_number(request, config.push)
        if n is None:
            return page(request, delivery_content(admin, request), code=404,
                        notice=Notice("error", "There is no such HTTP target."))
        fields = push_fields(config, n)
        return save_form(admin, request, page, fields,
                         lambda state: delivery_content(admin, request, {f"push.{n}": state}), target="/delivery",
                         prepare=secrets_prepare(request, fields),
                         saved_state=lambda: secret_free_state(admin, push_fields(admin.gateway.store.config, n)))

    @route.post("/delivery/push/add")
    def delivery_push_add(request: IRequest) -> Any:
        config = admin.gateway.store.config
        url = form_value(request, "push.new.url").strip()
        n = free_number(config)
        state = FormState(values={"push.new.url": url})
        if n is None:
            return page(request, delivery_content(admin, request), code=409,
                        notice=Notice("error", f"There are {MAX_PUSH_TARGETS} HTTP targets already."))
        try:
            new = config.evolve(push={**config.push, **push_table({str(n): {"url": url}})})
        except ConfigError as e:
            state.errors["push.new.url"] = error_message(e)
            return page(request, delivery_content(admin, request, {"push.new": state}), code=400,
                        notice=Notice("error", "Nothing was saved: correct the field marked below."))
        problem = save_config(admin, new)
        if problem:
            return page(request, delivery_content(admin, request, {"push.new": state}), code=500,
                        notice=Notice("error", problem))
        return admin.see_other(request, "/delivery",
                               Notice("ok", f"HTTP target {n} added: readings are POSTed to {url}."))

    @route.post("/delivery/push/remove")
    def delivery_push_remove(request: IRequest) -> Any:
        config = admin.gateway.store.config
        n = posted_number(request, config.push)
        if n is None:
            return page(request, delivery_content(admin, request), code=404,
                        notice=Notice("error", "There is no such HTTP target."))
        problem = save_config(admin, config.evolve(push={k: v for k, v in config.push.items() if k != n}))
        if problem:
            return page(request, delivery_content(admin, request), code=500, notice=Notice("error", problem))
        return admin.see_other(request, "/delivery", Notice(
            "ok", f"HTTP target {n} removed; its queue of undelivered readings goes with it."))
