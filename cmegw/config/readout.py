# -*- test-case-name: tests.test_config_readout -*-
"""
The readout sections of the configuration: the meter list (``[meter.<id>]``),
the schedule's defaults (``[readout]``), the MQTT target (``[mqtt]``) and the
HTTP POST targets (``[push.N]``).

Like the rest of the model these are frozen values checked when built; the
checks here read no file and open no connection.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Any, Mapping

import attrs

from cmegw.config.checks import (
    ConfigError,
    check,
    check_bool,
    check_choice,
    check_int,
    check_str,
    pem_path,
    read_section,
    setting,
)

#: The shortest and the longest read interval (the issue: "30s" (minimum 10 s) ... "1d").
MIN_INTERVAL = 10
MAX_INTERVAL = 86400
MAX_METERS = 1000
MAX_PUSH_TARGETS = 8
MQTT_PROTOCOLS = ("3.1.1", "5")
PUSH_FORMATS = ("json", "csv")
PUSH_AUTH = ("none", "basic", "bearer")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"(\d+)\s*([smhd])")
#: A meter's id: it becomes part of MQTT topics, URLs and file names.
_METER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SECONDARY = re.compile(r"^([0-9A-Fa-f]{8}-[A-Za-z@]{3}-[0-9A-Fa-f]{2}-[0-9A-Fa-f]{2}|[0-9A-Fa-f]{16}|\d{8})$")
#: A topic level of ours: no MQTT wildcards, no empty levels, no leading or trailing slash.
_TOPIC = re.compile(r"^[^\s+#/\x00]+(/[^\s+#/\x00]+)*$")


def parse_interval(text: str) -> int:
    """
    Seconds of an interval written as ``30s``, ``15m``, ``1h``, ``1d`` or
    ``1h30m``; a bare number is seconds.  Raises ValueError.
    """
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    pos, total = 0, 0
    for match in _INTERVAL.finditer(text):
        if text[pos:match.start()].strip():
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"{text!r} is not an interval")
    return total


def format_interval(seconds: int) -> str:
    """The shortest text `parse_interval` reads back: 900 -> ``15m``, 5400 -> ``1h30m``."""
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"


def check_interval(setting_name: str, value: object, allow_empty: bool = False) -> None:
    allowed = (f"use an interval such as 30s, 15m, 1h or 1d (from {MIN_INTERVAL} s to 1 day)"
               + ("; leave it empty for the readout default" if allow_empty else ""))
    text = check_str(setting_name, value, 32)
    if text == "" and allow_empty:
        return
    try:
        seconds = parse_interval(text)
    except ValueError:
        raise ConfigError(setting_name, value, allowed) from None
    check(setting_name, value, MIN_INTERVAL <= seconds <= MAX_INTERVAL, allowed)


def check_meter_address(setting_name: str, value: object) -> None:
    """A primary address (0..250) or a secondary one (12345678-KAM-19-04, 16 hex digits, or 8 digits)."""
    text = check_str(setting_name, value, 32).strip()
    ok = (text.isdigit() and len(text) <= 3 and int(text) <= 250) or bool(_SECONDARY.match(text))
    check(setting_name, value, ok, "use a secondary address such as 12345678-KAM-19-04 (preferred) "
          "or a primary address from 0 to 250")


def check_topic(setting_name: str, value: object, allow_empty: bool = False) -> None:
    text = check_str(setting_name, value, 128)
    if text == "" and allow_empty:
        return
    check(setting_name, value, bool(_TOPIC.match(text)),
          "use topic levels separated by / without spaces, + or # (for example cmegw or site/cmegw)"
          + ("; leave it empty to switch it off" if allow_empty else ""))


def _host_port(setting_name: str, value: object, netloc: str, default_port: int, example: str) -> None:
    try:
        parts = urllib.parse.urlsplit("//" + netloc)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(setting_name, value, f"use a host and a port from 1 to 65535, such as {example}") from None
    check(setting_name, value, bool(host) and "@" not in netloc, f"name the host, such as {example} "
          "(user names and passwords have settings of their own)")
    if host and ":" in host:
        try:
            ipaddress.IPv6Address(host)  # urlsplit accepted the brackets; a bad literal is refused here
        except ValueError:
            raise ConfigError(setting_name, value, f"use an IPv6 address in brackets, such as [::1], "
                                                   f"or a host name such as {example}") from None
    check(setting_name, value, port is None or 1 <= port <= 65535, "use a port from 1 to 65535")


def _split(setting_name: str, value: object, text: str, example: str) -> urllib.parse.SplitResult:
    try:
        return urllib.parse.urlsplit(text)
    except ValueError:
        raise ConfigError(setting_name, value, f"use a URL such as {example}") from None


def check_mqtt_url(setting_name: str, value: object) -> None:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; "" switches MQTT off."""
    text = check_str(setting_name, value, 255)
    if text == "":
        return
    example = "mqtt://broker.example:1883 or mqtts://broker.example:8883"
    parts = _split(setting_name, value, text, example)
    check(setting_name, value, parts.scheme in ("mqtt", "mqtts"), f"use {example}, or leave it empty for no MQTT")
    check(setting_name, value, parts.path in ("", "/") and not parts.query and not parts.fragment,
          f"use {example} (no path: the topic has settings of its own)")
    _host_port(setting_name, value, parts.netloc, 1883, example)


@attrs.frozen
class PushUrl:
    """A receiver's URL, parsed: where to connect and what to name in messages."""

    scheme: str
    host: str
    port: int
    #: The path and query as sent ("/" at least).
    target: str

    @property
    def netloc(self) -> str:
        """``host:port`` (brackets around an IPv6 address)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def __str__(self) -> str:
        """The URL as requested (the port left out when it is the scheme's own)."""
        default = self.port == (443 if self.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host if default else self.netloc}{self.target}"


def parse_push_url(text: str) -> PushUrl:
    """Check a receiver's URL (http:// or https://, a host, a port 1..65535); ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError("write the URL as text, such as https://receiver.example/readings")
    example = "such as https://receiver.example/readings or http://192.168.1.10:8080/in"
    if not text.strip():
        raise ValueError(f"the URL is empty; give the receiver's URL, {example}")
    if text != text.strip() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("the URL contains spaces or control characters; write spaces in a path as %20")
    if not text.isascii():
        raise ValueError("the URL contains non-ASCII characters; percent-encode them (and write an "
                         "international host name in its xn-- form)")
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        given = f"{parts.scheme}://" if parts.scheme and "://" in text else "no scheme"
        raise ValueError(f"the URL must start with http:// or https:// ({given} given), {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put no user name or password in the URL; use the auth, username and password settings")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"the URL names no host, {example}")
    if parts.fragment or text.endswith("#"):
        raise ValueError("remove the #fragment from the URL: it is never sent to the receiver")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port of the URL must be a number from 1 to 65535 ({parts.netloc} given)") from None
    if port is None and parts.netloc.endswith(":"):
        raise ValueError(f"the URL has a colon but no port after it ({parts.netloc} given)")
    if port == 0:
        raise ValueError("the port of the URL must be a number from 1 to 65535 (0 given)")
    if "[" in parts.netloc and ":" not in host:
        raise ValueError("only an IPv6 address goes in brackets, such as http://[2001:db8::1]:8080/")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return PushUrl(scheme, host.lower(), port or (443 if scheme == "https" else 80), target)


def check_push_url(setting_name: str, value: object) -> None:
    check_str(setting_name, value, 2048)
    try:
        parse_push_url(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(setting_name, value, str(e)) from None


def _check_header_text(setting_name: str, value: object, limit: int, colon: bool = True) -> None:
    check_str(setting_name, value, limit)
    text = str(value)
    check(setting_name, "(hidden)" if "user" not in setting_name else value,
          text.isascii() and text.isprintable(), "use printable ASCII characters only (it goes into a header)")
    if not colon:
        check(setting_name, value, ":" not in text, "a user name for Basic authentication cannot contain ':'")


#: The longest an HTTP receiver may take to answer.
MAX_PUSH_TIMEOUT = 300.0


def _check_seconds(setting_name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.1 <= value <= MAX_PUSH_TIMEOUT
    check(setting_name, value, ok, f"use a number of seconds from 0.1 to {MAX_PUSH_TIMEOUT:g}")


def mqtt_url_parts(url: str) -> tuple[bool, str, int]:
    """(TLS, host, port) of a checked MQTT URL."""
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "mqtts"
    return tls, parts.hostname or "", parts.port or (8883 if tls else 1883)


@attrs.frozen
class MeterConfig:
    """One meter of the list; its id (the table's key) names it in topics, URLs and files."""

    _section = "meter"
    line: int = setting(1, check_int, 1, 32, label="Line")
    address: str = setting("0", check_meter_address, label="Address")
    name: str = setting("", check_str, 64, label="Name")
    #: "" = the readout default.
    interval: str = setting("", check_interval, True, label="Read interval")
    enabled: bool = setting(True, check_bool, label="Read on schedule")


@attrs.frozen
class ReadoutConfig:
    """The schedule's defaults, the reading store's limits and the alarm rule."""

    _section = "readout"
    interval: str = setting("1h", check_interval, label="Read interval")
    alarm_after: int = setting(3, check_int, 1, 1000, " failed reads", label="Alarm after", unit="failed reads")
    retention_days: int = setting(400, check_int, 1, 36500, " days", label="Keep readings for", unit="days")
    retention_mb: int = setting(200, check_int, 1, 100000, " MB", label="Store size limit", unit="MB")

    @property
    def interval_seconds(self) -> int:
        return parse_interval(self.interval)


@attrs.frozen
class MqttConfig:
    """The MQTT broker readings are published to ("" url = off)."""

    _section = "mqtt"
    url: str = setting("", check_mqtt_url, label="Broker URL")
    base_topic: str = setting("cmegw", check_topic, label="Base topic")
    discovery_prefix: str = setting("homeassistant", check_topic, True, label="Home Assistant discovery prefix")
    username: str = setting("", check_str, 128, label="User name")
    password: str = setting("", check_str, 128, label="Password", secret=True, repr=False)
    #: mqtts: the broker is verified against this CA bundle ("" = the system's trust store).
    ca: str = setting("", pem_path, "certificates", label="Trusted CA bundle")
    certificate: str = setting("", pem_path, "certificates", label="Client certificate")
    key: str = setting("", pem_path, "key", label="Client key")
    client_id: str = setting("", check_str, 64, label="Client ID")
    keepalive: int = setting(60, check_int, 5, 3600, " seconds", label="Keep-alive", unit="s")
    protocol: str = setting("3.1.1", check_choice, MQTT_PROTOCOLS, label="MQTT version")

    def __attrs_post_init__(self) -> None:
        check("mqtt.key", self.key, bool(self.certificate) == bool(self.key),
              "give the client certificate and its key together, or neither")

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@attrs.frozen
class PushConfig:
    """One HTTP receiver each reading is POSTed to."""

    _section = "push"
    url: str = setting("https://head-end.example/readings", check_push_url, label="URL")
    enabled: bool = setting(True, check_bool, label="Enabled")
    format: str = setting("json", check_choice, PUSH_FORMATS, label="Format")
    auth: str = setting("none", check_choice, PUSH_AUTH, label="Authentication")
    username: str = setting("", _check_header_text, 64, False, label="User name")
    password: str = setting("", _check_header_text, 255, label="Password", secret=True, repr=False)
    token: str = setting("", _check_header_text, 4096, label="Bearer token", secret=True, repr=False)
    #: HTTPS receivers are verified against this CA bundle ("" = the system's trust store).
    ca: str = setting("", pem_path, "certificates", label="Trusted CA bundle")
    timeout: float = setting(10.0, _check_seconds, label="Timeout", unit="s")

    def __attrs_post_init__(self) -> None:
        check("push.username", self.username, self.auth != "basic" or bool(self.username),
              "Basic authentication needs a user name (and its password)")
        check("push.token", "", self.auth != "bearer" or bool(self.token),
              "bearer authentication needs the token the receiver issued")

    @property
    def parsed_url(self) -> PushUrl:
        return parse_push_url(self.url)


def meters_table(value: Any) -> dict[str, MeterConfig]:
    """``[meter.<id>]`` tables: ids of lower-case letters, digits, - and _."""
    check("meter", value, isinstance(value, Mapping), "use tables [meter.<id>] such as [meter.heat-1]")
    check("meter", f"({len(value)} meters)", len(value) <= MAX_METERS, f"list at most {MAX_METERS} meters")
    out: dict[str, MeterConfig] = {}
    for key, item in value.items():
        check(f"meter.{key}", key, isinstance(key, str) and bool(_METER_ID.match(key)),
              "name a meter with 1 to 64 lower-case letters, digits, - or _, starting with a letter or digit")
        out[key] = item if isinstance(item, MeterConfig) else _section_of(MeterConfig, f"meter.{key}", item)
    return out


def push_table(value: Any) -> dict[int, PushConfig]:
    check("push", value, isinstance(value, Mapping), "use tables [push.1], [push.2], ...")
    out: dict[int, PushConfig] = {}
    for key, item in value.items():
        check(f"push.{key}", key, str(key).isdigit() and 1 <= int(key) <= MAX_PUSH_TARGETS,
              f"number HTTP targets from 1 to {MAX_PUSH_TARGETS}")
        out[int(key)] = item if isinstance(item, PushConfig) else _section_of(PushConfig, f"push.{key}", item)
    return dict(sorted(out.items()))


def _section_of(cls: type, name: str, data: Any) -> Any:
    """Read one table, naming its settings ``<name>.<field>`` in a refusal."""
    try:
        return read_section(cls, name, data)
    except ConfigError as e:
        setting_name = e.setting
        prefix = cls._section + "."  # type: ignore[attr-defined]
        if setting_name.startswith(prefix) and not setting_name.startswith(name + "."):
            setting_name = name + "." + setting_name[len(prefix):]
        raise ConfigError(setting_name, e.value, e.allowed) from None
