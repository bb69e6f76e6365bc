# -*- test-case-name: tests.test_config_model -*-
"""
The checks every setting's value goes through, and `setting`, which puts a
setting's metadata (label, unit, applies live or after a restart) on its field.

Each check takes the setting's dotted name, so a refusal names it: a
`ConfigError` says the setting, the value and what is allowed.  Nothing here
reads a file (certificate files are checked by `cmegw.config.files`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable, Mapping, TypeVar

import attrs

#: The value of a `ConfigError` about a secret (a password): its message never shows it.
HIDDEN = "(hidden)"
#: The value of a `ConfigError` about a setting that is missing.
MISSING = "(missing)"


class ConfigError(ValueError):
    """
    A setting was given a value it cannot take.  `setting` is its dotted name
    (``tunnel.1.disconnect_timeout``, kept for the API's JSON and the file),
    `value` what it was given, `allowed` what it takes; the message names the
    setting as the pages label it: "Disconnect timeout of tunnel 1: 5000 is
    not allowed; use a whole number from 0 to 3600 seconds".
    """

    def __init__(self, setting: str, value: object, allowed: str, label: str | None = None) -> None:
        self.setting = setting
        self.value = value
        self.allowed = allowed
        #: The setting as a person reads it; the config package's public functions name it
        #: (`cmegw.config.settings.labelled`), as the labels live on the model's fields.
        self.label = label or setting
        super().__init__(setting, value, allowed)

    @property
    def shown_value(self) -> object:
        """The value as the faces may show it: None for a secret, a missing value or a summary in parentheses."""
        value = self.value
        return None if isinstance(value, str) and value.startswith("(") and value.endswith(")") else value

    @property
    def message(self) -> str:
        """What the faces show: the label, the value (never a secret's) and what is allowed."""
        if self.value in (HIDDEN, MISSING):
            return f"{self.label}: {self.allowed}"
        if self.shown_value is None:  # a summary such as "(13 hosts)"
            return f"{self.label}: {str(self.value)[1:-1]}; {self.allowed}"
        return f"{self.label}: {self.value!r} is not allowed; {self.allowed}"

    def __str__(self) -> str:
        return self.message


def check(setting: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(setting, value, allowed)


def check_bool(setting: str, value: object) -> bool:
    check(setting, value, isinstance(value, bool), "use true or false")
    return bool(value)


def check_int(setting: str, value: object, low: int, high: int, unit: str = "") -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    check(setting, value, ok, f"use a whole number from {low} to {high}{unit}")
    return int(value)  # type: ignore[call-overload]


def check_number(setting: str, value: object, low: float, high: float, unit: str = "") -> float:
    """A number (whole or decimal) from `low` to `high`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    check(setting, value, ok, f"use a number from {low:g} to {high:g}{unit}")
    return float(value)  # type: ignore[arg-type]


def check_str(setting: str, value: object, limit: int = 255) -> str:
    check(setting, value, isinstance(value, str) and len(value) <= limit and "\x00" not in value,
           f"use text of at most {limit} characters")
    return str(value)


def check_choice(setting: str, value: object, choices: tuple[Any, ...]) -> Any:
    check(setting, value, value in choices, "use one of " + ", ".join(str(c) for c in choices))
    return value


_UNKNOWN_KIND = re.compile(r"Unknown endpoint type: '([^']*)'")
_UNKNOWN_OPTION = re.compile(r"unexpected keyword argument '([^']*)'")


def endpoint_problem(error: Exception) -> str:
    """What Twisted's endpoint parser found wrong, in words (its own message names its internals)."""
    text = str(error)
    kind = _UNKNOWN_KIND.search(text)
    if kind:
        return f"{kind.group(1) or 'nothing'}: is not a kind of endpoint"
    option = _UNKNOWN_OPTION.search(text)
    if option:
        return f"{option.group(1)}= is not an option of this kind of endpoint"
    if "invalid literal for int()" in text or "could not convert" in text:
        return "a port or another number in it is not a number"
    return "it cannot be read"


def check_endpoint(setting: str, value: object) -> str:
    """A server endpoint string (tcp:10001:interface=127.0.0.1); parsed for syntax, not opened."""
    from twisted.internet.endpoints import _parseServer  # syntax only, no reactor

    text = check_str(setting, value, 512)
    try:
        _parseServer(text, None)
    except Exception as e:
        raise ConfigError(setting, value, "use an endpoint such as tcp:10001 or tcp:10001:interface=127.0.0.1 "
                          f"({endpoint_problem(e)})") from None
    return text


def ipv4(setting: str, value: object, allow_empty: bool = True) -> str:
    text = check_str(setting, value, 64).strip()
    if text == "" and allow_empty:
        return ""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ConfigError(setting, value, "use an IPv4 address such as 192.168.0.10") from None


_CLASS_MASKS = ((128, "255.0.0.0"), (192, "255.255.0.0"), (224, "255.255.255.0"))


def parse_address_and_mask(setting: str, value: str, mask: str = "") -> tuple[str, str]:
    """
    Read an IP address as the device does: alone (mask of its class), in CIDR
    form (``192.168.1.1/24``) or with an explicit mask (``192.168.1.1 255.255.255.0``).
    """
    text = value.strip()
    allowed = "use an address alone, in CIDR form (192.168.1.1/24) or with a mask (192.168.1.1 255.255.255.0)"
    if text == "":
        return "", ""
    parts = text.split()
    try:
        if len(parts) == 2:
            iface = ipaddress.IPv4Interface(f"{parts[0]}/{parts[1]}")
        elif "/" in text:
            iface = ipaddress.IPv4Interface(text)
        elif mask:
            iface = ipaddress.IPv4Interface(f"{text}/{mask}")
        else:
            first = int(text.split(".")[0])
            cls = next((m for limit, m in _CLASS_MASKS if first < limit), None)
            check(setting, value, cls is not None, allowed + " (class D/E addresses need a mask)")
            iface = ipaddress.IPv4Interface(f"{text}/{cls}")
    except (ValueError, IndexError):
        raise ConfigError(setting, value, allowed) from None
    return str(iface.ip), str(iface.netmask)


T = TypeVar("T")


def read_section(cls: type[T], setting: str, data: object) -> T:
    check(setting, data, isinstance(data, Mapping), "use a table of settings")
    assert isinstance(data, Mapping)
    known = {a.name for a in attrs.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        check(f"{setting}.{key}", data[key], key in known,
               f"unknown setting; known: {', '.join(sorted(known))}")
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        name = field.alias or field.name
        check(f"{setting}.{name}", MISSING, not field.init or name in data or field.default is not attrs.NOTHING,
               "this setting is required here")
    return cls(**data)


def named_check(check: Callable[..., Any], *args: Any) -> Callable[[Any, attrs.Attribute, Any], None]:
    """An attrs validator that runs one of the checks above with the setting's name."""

    def validate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        check(f"{instance._section}.{attribute.name}", value, *args)

    return validate


CONNECT_ENDPOINT_KINDS = ("tcp", "tls")
MAX_ALLOW_LIST = 64

@attrs.frozen
class ClientEndpoint:
    """A connect-mode host, parsed: ``tcp:host=H:port=P`` or ``tls:host=H:port=P`` (``:timeout=S`` optional)."""

    kind: str
    host: str
    port: int
    timeout: float = 10.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"


def client_endpoint(setting: str, value: object) -> ClientEndpoint:
    """
    Check a connect-mode host with Twisted's `clientFromString` syntax (no
    reactor is needed to parse) and keep what the tunnel dials: tcp or tls,
    host, port, connect timeout.  TLS trust and client certificates are the
    tunnel's own settings, so the endpoint string does not carry them.
    """
    from twisted.internet.endpoints import _parse, clientFromString

    text = check_str(setting, value, 512)
    allowed = "use tcp:host=NAME:port=N or tls:host=NAME:port=N (optionally :timeout=SECONDS)"
    try:
        args, options = _parse(text)
    except Exception as e:
        raise ConfigError(setting, value, f"{allowed} ({endpoint_problem(e)})") from None
    kind = args[0].lower() if args else ""
    check(setting, value, kind in CONNECT_ENDPOINT_KINDS, allowed)
    positional = dict(zip(("host", "port", "timeout"), args[1:]))
    options = {**positional, **options}
    unknown = sorted(set(options) - {"host", "port", "timeout"})
    check(setting, value, not unknown, f"{allowed}; {', '.join(unknown)} is not used here (the TLS trust "
           "and client certificate are the tunnel's connect_tls_* settings)")
    check(setting, value, bool(options.get("host")) and "port" in options, allowed)
    try:
        port = int(options["port"])
        timeout = float(options.get("timeout", 10))
        # The TCP part as Twisted reads it (its own tls: parser cannot take an IPv6 literal; TLS is ours).
        clientFromString(None, "tcp:" + text.split(":", 1)[1])
    except Exception as e:
        raise ConfigError(setting, value, f"{allowed} ({endpoint_problem(e)})") from None
    check(setting, value, 1 <= port <= 65535, f"{allowed}; the port is 1 to 65535")
    check(setting, value, 0 < timeout <= 300, f"{allowed}; the timeout is 1 to 300 seconds")
    return ClientEndpoint(kind, options["host"], port, timeout)


def allow_list_network(setting: str, value: object) -> "ipaddress.IPv4Network | ipaddress.IPv6Network":
    """One allow-list entry: an IPv4 or IPv6 address, or a CIDR range (host bits are ignored)."""
    text = check_str(setting, value, 64).strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(setting, value, "use IPv4 or IPv6 addresses or CIDR ranges such as 192.168.1.10, "
                                          "10.0.0.0/8 or 2001:db8::/32 (empty: anyone)") from None



def pem_path(setting: str, value: object, kind: str) -> None:
    """
    The absolute path of a PEM file of certificates or of a private key (""
    for none).  Only the path is checked here; what the file holds is checked
    by `cmegw.config.files` when a setting changes or the file is loaded.
    """
    text = check_str(setting, value, 1024)
    if text == "":
        return
    what = "certificates" if kind == "certificates" else "a private key"
    check(setting, value, os.path.isabs(text), f"use the absolute path of a PEM file of {what}, or leave it empty")


def setting(default: Any = attrs.NOTHING, validate: Callable[..., Any] | None = None, *args: Any,
            label: str = "", unit: str = "", restart: bool = False, secret: bool = False, **field: Any) -> Any:
    """
    A setting's field: its default, its check (with the check's arguments),
    and its metadata: the label the pages and the console show, its unit, and
    whether a change waits for a restart (the device's "after reboot"), and
    whether it is a secret (a password: the faces never show its value).
    """
    return attrs.field(default=default, validator=named_check(validate, *args) if validate else None,
                       metadata={"label": label, "unit": unit, "restart": restart, "secret": secret},
                       **field)
