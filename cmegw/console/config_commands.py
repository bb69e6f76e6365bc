# -*- test-case-name: tests.test_console_config_commands -*-
"""
The console's configuration commands: ``show settings`` (current and after
restart), ``set`` (one setting, checked as the web page checks it) and
``save``.  `change` is how every command changes the configuration.
"""

from __future__ import annotations

from cmegw.config.model import BAUD_RATES, Config, ConfigError
from cmegw.config.settings import apply_setting, format_value, get_setting, needs_restart, setting_names, shown_value
from cmegw.console.framework import COMMANDS, Arguments, Result, Session, _after_words, columns, table_lines
from cmegw.console.status_commands import SHOW, _after_restart


def _setting_candidates(session: Session, words: list[str]) -> list[str]:
    return list(setting_names(session.gateway.store.config)) if not words else []


@SHOW.command("settings", "every setting: current value and value after restart", "[PREFIX]",
              complete=_setting_candidates)
def show_settings(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 1, "[PREFIX]")
    prefix = words[0] if words else ""
    gateway = session.gateway
    current, after, saved = gateway.state.config, _after_restart(gateway), gateway.store.config
    rows = []
    notes = []
    for name in setting_names(after):
        if not name.startswith(prefix):
            continue
        now = format_value(shown_value(name, get_setting(current, name))) if _has(current, name) else "(not running)"
        later = format_value(shown_value(name, get_setting(after, name)))
        rows.append((name, now or '""', later or '""'))
        if get_setting(saved, name) != get_setting(after, name):
            notes.append(f"  {name}: the command line sets it for this run; the file holds "
                         f"{format_value(get_setting(saved, name))!r}")
    if not rows:
        raise args.error(prefix, "matches no setting", "use the beginning of a name, such as line.1 or http")
    lines = columns(("setting", "current", "after restart"), rows)
    if notes:
        lines += ["", *notes]
    if gateway.store.unsaved:
        lines += ["", "  Not saved yet: 'save' keeps the changes; a restart without saving drops them."]
    return "\n".join(lines)


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
    rows = [(name, format_value(shown_value(name, get_setting(config, name))) + ("  (after restart)" if needs_restart(name) else ""))
            for name in setting_names(config)]
    return "\n".join([
        "Changes one setting of the web pages, checked as the web page checks it.",
        "The value is the rest of the line as typed; \"\" sets an empty value.",
        "Booleans take on/off; lists (http.tls_versions) take commas.",
        "The change is not saved: 'save' keeps it, a restart without saving drops it.",
        "", "Settings (value; those marked apply after a restart):", *table_lines(rows)])


def change(session: Session, new: Config) -> None:
    """Make `new` the configuration, applied at once where it can be, not saved."""
    session.gateway.store.change(new, save=False)


@COMMANDS.command("set", "change a setting (not saved until 'save')", "NAME VALUE", complete=_set_candidates,
                  details=_set_details)
def set_command(session: Session, args: Arguments) -> Result:
    words = args.words
    if len(words) < 2:
        raise args.error(args.text, "is missing " + ("the value" if words else "the setting's name"),
                         "use set NAME VALUE ('help set' lists the names)")
    name = words[0]
    value = _after_words(args.text, 1).strip()
    if value in ('""', "''"):
        value = ""
    new = apply_setting(session.gateway.store.config, name, value)
    change(session, new)
    shown = format_value(shown_value(name, get_setting(new, name))) or '""'
    when = "takes effect after a restart" if needs_restart(name) else "applied at once"
    return f"{name} = {shown}: {when}; not saved ('save' keeps it)."


@COMMANDS.command("save", "save the configuration to the file")
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
