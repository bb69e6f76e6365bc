# -*- test-case-name: tests.test_console_config_commands -*-
"""
The console's configuration commands: ``show settings`` and ``show NAME``
(in force now, after a restart, and the file's value where it differs),
``set`` (one setting, checked and saved as the web page does; ``set
--no-save`` for this run only) and ``save`` (keeps the changes made for this
run only).  `change` is how every command changes the configuration.
"""

from __future__ import annotations

from typing import Any

import attrs

from cmegw.config.model import BAUD_RATES, Config, ConfigError
from cmegw.config.settings import (
    apply_setting,
    describe,
    format_value,
    get_setting,
    needs_restart,
    setting_names,
    shown_value,
)
from cmegw.console.framework import COMMANDS, Arguments, Result, Session, _after_words, columns, table_lines
from cmegw.console.status_commands import SHOW, _after_restart


def _setting_candidates(session: Session, words: list[str]) -> list[str]:
    return list(setting_names(session.gateway.store.config)) if not words else []


@attrs.frozen
class SettingValues:
    """One setting as the console shows it: in force now, after a restart, and what the file holds."""

    name: str
    now: str
    after_restart: str
    file: str
    #: Why the values differ, in words (the command line, a running-only change, a restart to come).
    notes: tuple[str, ...] = ()


#: Settings whose listener a command-line option replaces (the Overrides attribute, the option).
_LISTENER_OPTIONS = {"http.http_port": ("http", "--http"), "http.interface": ("http", "--http"),
                     "http.https_port": ("https", "--https"), "console.listen": ("console", "--console")}


def _shown(name: str, config: Config) -> str:
    return format_value(shown_value(name, get_setting(config, name))) or '""'


def setting_values(gateway: Any, name: str) -> SettingValues:
    """What is in force of `name` now, after a restart and in the file, and why they differ."""
    store, overrides = gateway.store, gateway.overrides
    running, wanted, saved = gateway.state.config, overrides.apply(store.config), store.saved

    def value(config: Config) -> str:
        return _shown(name, config) if _has(config, name) else "(none)"

    now, later, file = value(running), value(overrides.apply(saved)), value(saved)
    notes = []
    if later != file:
        notes.append(f"the command line sets it for this run; the file holds {file}")
    option = _LISTENER_OPTIONS.get(name)
    if option and getattr(overrides, option[0], None):
        notes.append(f"the command line ({option[1]} {getattr(overrides, option[0])}) "
                     "replaces this listener in this run")
    if value(store.config) != file:
        notes.append(f"changed for this run only (set --no-save); the file holds {file}")
    if value(wanted) != now and needs_restart(name):
        notes.append(f"{value(wanted)} takes effect after a restart")
    return SettingValues(name, now if _has(running, name) else "(not running)", later, file, tuple(notes))


def _matching(config: Config, prefix: str) -> list[str]:
    """The setting names `prefix` selects: a whole name, a section (``tunnel.1``), or a name's beginning."""
    names = list(setting_names(config))
    whole = [n for n in names if not prefix or n == prefix or n.startswith(prefix.rstrip(".") + ".")]
    return whole or [n for n in names if n.startswith(prefix)]


def settings_text(session: Session, args: Arguments, prefix: str, pages: str = "") -> str:
    """
    The table of the settings `prefix` selects: now and after a restart, with
    notes where they differ.  With `pages`, an unknown prefix is said to be
    neither one of those pages nor a setting.
    """
    gateway = session.gateway
    names = _matching(_after_restart(gateway), prefix)
    for name in _matching(gateway.store.config, prefix):
        if name not in names:
            names.append(name)
    if not names and pages:
        raise args.error(prefix, "is unknown", f"use one of {pages}, or a setting such as line.1 or "
                         "tunnel.1.keepalive ('help set' lists them)")
    if not names:
        raise args.error(prefix, "matches no setting",
                         "use a name or its beginning, such as line.1, tunnel.1 or http ('help set' lists them)")
    values = [setting_values(gateway, name) for name in names]
    lines = columns(("setting", "in force now", "after restart"), [(v.name, v.now, v.after_restart) for v in values])
    notes = [f"  {v.name}: {note}" for v in values for note in v.notes]
    if notes:
        lines += ["", *notes]
    if gateway.store.unsaved:
        lines += ["", "  Changed for this run only: 'save' keeps the changes; a restart drops them."]
    return "\n".join(lines)


@SHOW.command("settings", "every setting: in force now and after a restart", "[PREFIX]",
              complete=_setting_candidates)
def show_settings(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 1, "[PREFIX]")
    return settings_text(session, args, words[0] if words else "")


@SHOW.otherwise("SETTING", "one setting, or a section of them (show tunnel.1, show line.1.baud_rate)")
def show_setting(session: Session, args: Arguments) -> Result:
    words = args.expect(1, 1, "SETTING")
    return settings_text(session, args, words[0], pages=", ".join(c.name for c in SHOW))


def _has(config: Config, name: str) -> bool:
    try:
        get_setting(config, name)
        return True
    except ConfigError:
        return False


# set, save ------------------------------------------------------------------------------

def _set_candidates(session: Session, words: list[str]) -> list[str]:
    config = session.gateway.store.config
    if not words:
        return list(setting_names(config))
    if len(words) == 1 and _has(config, words[0]):
        value = get_setting(config, words[0])
        if isinstance(value, bool):
            return ["on", "off"]
        if words[0].endswith(".baud_rate"):
            return [str(b) for b in BAUD_RATES]
    return []


def _set_details(session: Session) -> str:
    config = session.gateway.store.config
    rows = [(name, format_value(shown_value(name, get_setting(config, name)))
             + ("  (after restart)" if needs_restart(name) else ""))
            for name in setting_names(config)]
    return "\n".join([
        "Changes one setting of the web pages, checked and saved as the web page does:",
        "the change is in the file at once, so a restart keeps it.",
        "set --no-save NAME VALUE changes it for this run only ('save' keeps it later).",
        "The value is the rest of the line as typed; \"\" sets an empty value.",
        "Booleans take on/off; lists (http.tls_versions) take commas.",
        "'help set NAME' tells one setting's value in force now and in the file.",
        "", "Settings (value; those marked apply after a restart):", *table_lines(rows)])


def _set_topic(session: Session, words: list[str]) -> str:
    """``help set NAME``: what the setting is, and its values in force now, after a restart, in the file."""
    name = words[0]
    info = describe(name)
    get_setting(session.gateway.store.config, name)  # the setting of a line that does not exist: its error
    values = setting_values(session.gateway, name)
    rows = [("In force now", values.now), ("After a restart", values.after_restart)]
    if values.file != values.after_restart:
        rows.append(("The file holds", values.file))
    when = "takes effect after a restart" if info.restart else "applies at once"
    unit = f" ({info.unit})" if info.unit else ""
    return "\n".join([f"{name}: {info.label}{unit}; a change {when}.", *table_lines(rows),
                      *[f"  Note: {note}." for note in values.notes]])


def change(session: Session, new: Config, save: bool = True) -> None:
    """Make `new` the configuration, applied at once where it can be, and saved unless asked not to."""
    session.gateway.store.change(new, save=save)


NO_SAVE = "--no-save"


@COMMANDS.command("set", "change a setting and save it", f"[{NO_SAVE}] NAME VALUE", complete=_set_candidates,
                  details=_set_details, topic=_set_topic)
def set_command(session: Session, args: Arguments) -> Result:
    text = args.text.strip()
    save = not (text == NO_SAVE or text.startswith(NO_SAVE + " "))
    if not save:
        text = text[len(NO_SAVE):].strip()
    words = text.split()
    if len(words) < 2:
        raise args.error(text, "is missing " + ("the value" if words else "the setting's name"),
                         f"use set [{NO_SAVE}] NAME VALUE ('help set' lists the names)")
    name = words[0]
    value = _after_words(text, 1).strip()
    if value in ('""', "''"):
        value = ""
    store = session.gateway.store
    if not save and needs_restart(name):
        raise args.error(name, "takes effect only after a restart, and a restart loads the file",
                         f"use set without {NO_SAVE}")
    new = apply_setting(store.config, name, value)
    earlier = store.unsaved
    change(session, new, save=save)
    shown = format_value(shown_value(name, get_setting(new, name))) or '""'
    when = "takes effect after a restart" if needs_restart(name) else "applied at once"
    if not save:
        return f"{name} = {shown}: applied at once, for this run only; not saved ('save' keeps it)."
    reply = f"{name} = {shown}: {when}; saved."
    if earlier:
        reply += " The earlier changes for this run only were saved with it."
    note = [n for n in setting_values(session.gateway, name).notes if n.startswith("the command line")]
    if note:
        reply += f" Note: {note[0]}."
    return reply


@COMMANDS.command("save", "save the changes made for this run only (set --no-save)")
def save_command(session: Session, args: Arguments) -> Result:
    """Writes the configuration (comments in the file are kept); it is what a restart loads."""
    args.expect(0, 0, "")
    gateway = session.gateway
    gateway.store.save()
    text = f"Saved to {gateway.store.path}."
    pending = gateway.state.pending_restart()
    if pending:
        text += "\nThese take effect after a restart ('restart'): " + ", ".join(pending)
    return text
