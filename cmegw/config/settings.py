# -*- test-case-name: tests.test_config_settings -*-
"""
Settings by name: ``line.1.baud_rate``, ``tunnel.1.keepalive``, ``http.max_bytes``...

The console's ``set``, the web forms and the JSON API all change the
configuration through `apply_setting`, so a value is parsed and validated in
one place and every front end shows the same message.
"""

from __future__ import annotations

import copy
import functools
import typing
from typing import Any, Iterator

import attrs

from cmegw.config.files import check_files
from cmegw.config.model import (
    Config,
    ConfigError,
    ConsoleConfig,
    HttpConfig,
    LineConfig,
    NetworkConfig,
    TunnelConfig,
    parse_address_and_mask,
)
from cmegw.config.readout import MeterConfig, MqttConfig, PushConfig, ReadoutConfig

_SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "http": HttpConfig,
    "console": ConsoleConfig,
    "line": LineConfig,
    "tunnel": TunnelConfig,
    "readout": ReadoutConfig,
    "mqtt": MqttConfig,
    "meter": MeterConfig,
    "push": PushConfig,
}
#: Sections of one table each, and tables of numbered or named ones (their attribute on Config).
_SINGLE = ("network", "http", "console", "readout", "mqtt")
_TABLES = {"line": "lines", "tunnel": "tunnels", "push": "push", "meter": "meters"}
#: The sections in page order (as `setting_names` lists them).
_PAGE_ORDER = ("network", "http", "console", "line", "tunnel", "readout", "mqtt", "meter", "push")

_TRUE = {"1", "on", "yes", "true", "enabled", "enable"}
_FALSE = {"0", "off", "no", "false", "disabled", "disable"}


class UnknownSetting(ConfigError):
    """A setting name that does not exist."""

    @property
    def message(self) -> str:
        return f"{self.setting!r} is not a setting here; {self.allowed}"


#: Labels of the names that are not settings of a section (the authentication directives, whole tables).
_OTHER_LABELS = {
    "auth": "Authentication", "auth.uri": "URI", "auth.realm": "Realm", "auth.auth_type": "AuthType",
    "auth.users": "Users", "auth.user": "Users of /", "auth.user.name": "User name",
    "auth.user.password": "Password", "auth.user.ha1_md5": "Password digest (MD5)",
    "auth.user.ha1_sha256": "Password digest (SHA-256)", "line": "Lines", "tunnel": "Tunnels",
    "identity.product_type": "Product type", "identity.serial_number": "Serial number",
}
#: What one of a table is called in words.
_TABLE_WORDS = {"line": "line", "tunnel": "tunnel", "push": "HTTP target", "meter": "meter"}


def label_of(name: str) -> str:
    """
    A dotted name as the pages label it (`ConfigError` messages): "Baud rate
    of line 1", "HTTP port", "Tunnel 1"; the name itself where it has no label.
    """
    if name in _OTHER_LABELS:
        return _OTHER_LABELS[name]
    parts = name.split(".")
    if parts[0] in _TABLES and len(parts) == 2:
        return f"{_TABLE_WORDS[parts[0]].capitalize()} {parts[1]}"
    try:
        field = _field(name)
    except UnknownSetting:
        return name
    label = field.metadata.get("label") or field.name.replace("_", " ").capitalize()
    if parts[0] in _TABLES and len(parts) == 3:
        return f"{label} of {_TABLE_WORDS[parts[0]]} {parts[1]}"
    return label


def labelled(error: ConfigError) -> ConfigError:
    """The same error, its setting named as the pages label it (what every face shows)."""
    if error.label != error.setting:
        return error
    named = copy.copy(error)
    named.label = label_of(error.setting)
    return named


P = typing.ParamSpec("P")
R = typing.TypeVar("R")


def labelled_errors(function: typing.Callable[P, R]) -> typing.Callable[P, R]:
    """A public function of the config package whose `ConfigError` names its setting in words."""
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except ConfigError as e:
            raise labelled(e) from None
    return wrapper


@attrs.frozen
class SettingInfo:
    """What the faces show of a setting: its label, unit, whether it waits for a restart."""

    name: str
    label: str
    unit: str
    restart: bool
    secret: bool = False


def _field(name: str) -> attrs.Attribute:
    """The model's field of a setting name (numbers in names do not matter)."""
    parts = name.split(".")
    if parts[0] in _TABLES and len(parts) == 3:
        parts = [parts[0], parts[2]]
    cls = _SECTIONS.get(parts[0]) if len(parts) == 2 else None
    field = attrs.fields_dict(cls).get(parts[1]) if cls is not None else None
    if field is None:
        raise UnknownSetting(name, name, "use a name such as line.1.baud_rate; 'help set' lists them")
    return field


def describe(name: str) -> SettingInfo:
    """A setting's metadata, as its field in the model declares it."""
    field = _field(name)
    return SettingInfo(name, field.metadata.get("label") or field.name, field.metadata.get("unit", ""),
                       bool(field.metadata.get("restart")), bool(field.metadata.get("secret")))


def is_secret(name: str) -> bool:
    """Whether a setting holds a password or token: the faces show whether it is set, never its value."""
    try:
        return describe(name).secret
    except UnknownSetting:
        return False


def needs_restart(name: str) -> bool:
    """Whether a changed setting waits for a restart (the device's "after reboot" column)."""
    try:
        return describe(name).restart
    except UnknownSetting:
        return False


T = typing.TypeVar("T")


def live_update(running: T, wanted: T) -> T:
    """
    `running` with every setting of `wanted` that applies live: a section's
    restart-only settings keep the value it was started with.
    """
    if running == wanted:
        return running
    live = {f.name: getattr(wanted, f.name) for f in attrs.fields(type(running)) if not f.metadata.get("restart")}
    return attrs.evolve(running, **live)


def _field_type(cls: type, field: str) -> Any:
    return typing.get_type_hints(cls)[field]


@labelled_errors
def parse_text(name: str, kind: Any, text: str) -> Any:
    """Turn what a person typed into the value of a setting's type."""
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(name, text, "use on or off")
    if kind is int:
        try:
            return int(text, 10)
        except ValueError:
            raise ConfigError(name, text, "use a whole number") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, text, "use a number such as 10 or 2.5") from None
    if typing.get_origin(kind) is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return text


def setting_names(config: Config) -> Iterator[str]:
    """Every settable name of this configuration, in page order."""
    for section in _PAGE_ORDER:
        fields = attrs.fields(_SECTIONS[section])
        for key in getattr(config, _TABLES[section]) if section in _TABLES else (None,):
            prefix = section if key is None else f"{section}.{key}"
            for f in fields:
                yield f"{prefix}.{f.name}"


def _locate(config: Config, name: str) -> tuple[str, int | str | None, str, Any]:
    parts = name.split(".")
    section = parts[0]
    if section in _TABLES and len(parts) == 3 and (parts[1].isdigit() or section == "meter"):
        number: int | str | None = parts[1] if section == "meter" else int(parts[1])
        table = getattr(config, _TABLES[section])
        if number not in table:
            what = {"meter": "meter", "push": "HTTP target"}.get(section, section)
            raise UnknownSetting(name, name, f"there is no {what} {number}; {what}s: "
                                 + (", ".join(str(n) for n in table) or "none yet"))
        current = table[number]
        field = parts[2]
    elif section in _SINGLE and len(parts) == 2:
        number = None
        current = getattr(config, section)
        field = parts[1]
    else:
        raise UnknownSetting(name, name, "use a name such as line.1.baud_rate; 'help set' lists them")
    if field not in attrs.fields_dict(type(current)):
        raise UnknownSetting(name, name, "use one of " + ", ".join(
            f.name for f in attrs.fields(type(current))))
    return section, number, field, current


def get_setting(config: Config, name: str) -> Any:
    section, number, field, current = _locate(config, name)
    return getattr(current, field)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


#: What the faces show instead of a secret that is set.
SECRET_SHOWN = "(set)"


def shown_value(name: str, value: Any) -> Any:
    """A setting's value as a face may show it: a password or token only as set or not."""
    if is_secret(name):
        return SECRET_SHOWN if value else ""
    return value


def redacted(config: Config) -> dict[str, Any]:
    """The file's structure (`Config.to_dict`) with every secret shown as `SECRET_SHOWN`."""
    data = config.to_dict()
    for name in setting_names(config):
        if is_secret(name):
            *path, field = name.split(".")
            table = data
            for part in path:
                table = table[part]
            table[field] = shown_value(name, table[field])
    return data


@labelled_errors
def apply_setting(config: Config, name: str, value: Any) -> Config:
    """
    A new configuration with one setting changed; text is parsed as the
    setting's type.  Raises `ConfigError` naming the setting, the value and
    what is allowed; the old configuration is untouched.
    """
    return apply_settings(config, {name: value})


@labelled_errors
def apply_settings(config: Config, changes: dict[str, Any]) -> Config:
    """Several settings at once (a web form): all are applied or none."""
    new = config
    for name, value in changes.items():
        section, number, field, current = _locate(new, name)
        if isinstance(value, str):
            value = parse_text(name, _field_type(type(current), field), value)
        extra: dict[str, Any] = {}
        if section == "network" and field == "ip_address" and isinstance(value, str):
            value, mask = parse_address_and_mask(name, value, "" if "network.netmask" in changes
                                                 else current.netmask)
            extra["netmask"] = mask
        try:
            updated = attrs.evolve(current, **{field: value, **extra})
        except ConfigError as e:
            raise ConfigError(name, e.value, e.allowed) from None
        except TypeError:
            raise ConfigError(name, value, "use a value of the right type") from None
        if section in _TABLES:
            attribute = _TABLES[section]
            new = attrs.evolve(new, **{attribute: {**getattr(new, attribute), number: updated}})
        else:
            new = attrs.evolve(new, **{section: updated})
    check_files(new, config)
    return new
