# -*- test-case-name: tests.test_config_model -*-
"""
The configuration model: one immutable value holding every setting of the gateway.

Every value is a frozen attrs class, validated when it is built, so a
`Config` that exists is a valid one.  `Config.from_dict` reads the plain
structure of the TOML file and `Config.to_dict` writes it back.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any, Callable, Mapping, TypeVar

import attrs

from cmegw import certificates

#: Baud rates an M-Bus line accepts (EN 13757-2 and the CI 0xB8..0xBF set).
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)
AUTH_TYPES = ("None", "Basic", "Digest", "SSL", "SSL/Basic", "SSL/Digest")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
ACCEPT_POLICIES = ("refuse", "replace")
LINK_SPEEDS = ("auto", "10", "100")
LINK_DUPLEXES = ("auto", "half", "full")
#: How `network.apply_to_host` applies the Network settings: systemd-networkd files or nmcli.
NETWORK_BACKENDS = ("networkd", "networkmanager")
MAX_LINES = 32

_HOSTNAME = re.compile(r"^[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
#: A Linux interface name (IFNAMSIZ: at most 15 characters); it becomes part of a file name.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_USER_NAME = re.compile(r"^[^\s:\"\\]{1,32}$")
_REALM = re.compile(r"^[^\"\\\x00-\x1f]{1,64}$")


class ConfigError(ValueError):
    """A setting was given a value it cannot take."""

    def __init__(self, setting: str, value: object, allowed: str) -> None:
        self.setting = setting
        self.value = value
        self.allowed = allowed
        super().__init__(f"{setting}: {value!r} is not allowed; {allowed}")


def _check(setting: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(setting, value, allowed)


def _bool(setting: str, value: object) -> bool:
    _check(setting, value, isinstance(value, bool), "use true or false")
    return bool(value)


def _int(setting: str, value: object, low: int, high: int, unit: str = "") -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    _check(setting, value, ok, f"use a whole number from {low} to {high}{unit}")
    return int(value)  # type: ignore[call-overload]


def _str(setting: str, value: object, limit: int = 255) -> str:
    _check(setting, value, isinstance(value, str) and len(value) <= limit and "\x00" not in value,
           f"use text of at most {limit} characters")
    return str(value)


def _choice(setting: str, value: object, choices: tuple[Any, ...]) -> Any:
    _check(setting, value, value in choices, "use one of " + ", ".join(str(c) for c in choices))
    return value


def _endpoint(setting: str, value: object) -> str:
    """A Twisted server endpoint string; parsed for syntax, not opened."""
    from twisted.internet.endpoints import _parseServer  # syntax only, no reactor

    text = _str(setting, value, 512)
    try:
        _parseServer(text, None)
    except Exception as e:
        raise ConfigError(setting, value, f"use an endpoint such as tcp:10001 ({e})") from None
    return text


def ipv4(setting: str, value: object, allow_empty: bool = True) -> str:
    text = _str(setting, value, 64).strip()
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
            _check(setting, value, cls is not None, allowed + " (class D/E addresses need a mask)")
            iface = ipaddress.IPv4Interface(f"{text}/{cls}")
    except (ValueError, IndexError):
        raise ConfigError(setting, value, allowed) from None
    return str(iface.ip), str(iface.netmask)


T = TypeVar("T")


def _section(cls: type[T], setting: str, data: object) -> T:
    _check(setting, data, isinstance(data, Mapping), "use a table of settings")
    assert isinstance(data, Mapping)
    known = {a.name for a in attrs.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        _check(f"{setting}.{key}", data[key], key in known,
               f"unknown setting; known: {', '.join(sorted(known))}")
    return cls(**data)


def _v(check: Callable[..., Any], *args: Any) -> Callable[[Any, attrs.Attribute, Any], None]:
    """An attrs validator that runs one of the checks above with the setting's name."""

    def validate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        check(f"{instance._section}.{attribute.name}", value, *args)

    return validate


@attrs.frozen
class Identity:
    _section = "identity"
    product_type: str = attrs.field(default="cmegw", validator=_v(_str, 64))
    serial_number: str = attrs.field(default="", validator=_v(_str, 64))


@attrs.frozen
class NetworkConfig:
    """The network settings of the device's Network pages (stored; the host owns its network)."""

    _section = "network"
    bootp: bool = attrs.field(default=False, validator=_v(_bool))
    dhcp: bool = attrs.field(default=True, validator=_v(_bool))
    ip_address: str = attrs.field(default="", validator=_v(ipv4))
    netmask: str = attrs.field(default="", validator=_v(ipv4))
    gateway: str = attrs.field(default="", validator=_v(ipv4))
    hostname: str = attrs.field(default="")
    domain: str = attrs.field(default="")
    dhcp_client_id: str = attrs.field(default="", validator=_v(_str, 64))
    primary_dns: str = attrs.field(default="", validator=_v(ipv4))
    secondary_dns: str = attrs.field(default="", validator=_v(ipv4))
    link_speed: str = attrs.field(default="auto", validator=_v(_choice, LINK_SPEEDS))
    link_duplex: str = attrs.field(default="auto", validator=_v(_choice, LINK_DUPLEXES))
    apply_to_host: bool = attrs.field(default=False, validator=_v(_bool))
    #: The host interface these settings are for ("" = the one with the default route).
    interface: str = attrs.field(default="")
    backend: str = attrs.field(default="networkd", validator=_v(_choice, NETWORK_BACKENDS))

    @interface.validator
    def _interface(self, attribute: attrs.Attribute, value: object) -> None:
        text = _str("network.interface", value, 15)
        _check("network.interface", value, text == "" or bool(_IFNAME.match(text)),
               "use an interface name such as eth0 or enp1s0 (letters, digits, _ . -; at most 15), "
               "or leave it empty for the interface of the default route")

    @hostname.validator
    def _hostname(self, attribute: attrs.Attribute, value: object) -> None:
        text = _str("network.hostname", value, 63)
        _check("network.hostname", value, text == "" or bool(_HOSTNAME.match(text)),
               "start with a letter, continue with letters, digits or hyphens, end with a letter or digit")

    @domain.validator
    def _domain(self, attribute: attrs.Attribute, value: object) -> None:
        text = _str("network.domain", value, 253)
        _check("network.domain", value, text == "" or bool(_DOMAIN.match(text)),
               "use a domain name such as example.com")

    @property
    def static(self) -> bool:
        """With BOOTP or DHCP on, the static address, mask, gateway, hostname and domain are ignored."""
        return not (self.dhcp or self.bootp)


@attrs.frozen
class LineConfig:
    """One M-Bus serial line (8 data bits, even parity, 1 stop bit)."""

    _section = "line"
    device: str = attrs.field(default="/dev/ttyUSB0", validator=_v(_str, 255))
    baud_rate: int = attrs.field(default=2400, validator=_v(_choice, BAUD_RATES))
    simulate: bool = attrs.field(default=False, validator=_v(_bool))
    reopen_interval: int = attrs.field(default=3, validator=_v(_int, 1, 3600, " seconds"))

    @property
    def settings_text(self) -> str:
        """The device's line summary, e.g. ``RS232, 2400, Even, 8, 1, None``."""
        return f"RS232, {self.baud_rate}, Even, 8, 1, None"


#: Connect mode (dial-out to a head-end): when the tunnel connects, and in which order it tries its hosts.
CONNECT_MODES = ("disabled", "always", "on-data")
HOST_LIST_MODES = ("sequential", "round-robin")
MAX_CONNECT_HOSTS = 12
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

    text = _str(setting, value, 512)
    allowed = "use tcp:host=NAME:port=N or tls:host=NAME:port=N (optionally :timeout=SECONDS)"
    try:
        args, options = _parse(text)
    except Exception as e:
        raise ConfigError(setting, value, f"{allowed} ({e})") from None
    kind = args[0].lower() if args else ""
    _check(setting, value, kind in CONNECT_ENDPOINT_KINDS, allowed)
    positional = dict(zip(("host", "port", "timeout"), args[1:]))
    options = {**positional, **options}
    unknown = sorted(set(options) - {"host", "port", "timeout"})
    _check(setting, value, not unknown, f"{allowed}; {', '.join(unknown)} is not used here (the TLS trust "
           "and client certificate are the tunnel's connect_tls_* settings)")
    _check(setting, value, bool(options.get("host")) and "port" in options, allowed)
    try:
        port = int(options["port"])
        timeout = float(options.get("timeout", 10))
        # The TCP part as Twisted reads it (its own tls: parser cannot take an IPv6 literal; TLS is ours).
        clientFromString(None, "tcp:" + text.split(":", 1)[1])
    except Exception as e:
        raise ConfigError(setting, value, f"{allowed} ({e})") from None
    _check(setting, value, 1 <= port <= 65535, f"{allowed}; the port is 1 to 65535")
    _check(setting, value, 0 < timeout <= 300, f"{allowed}; the timeout is 1 to 300 seconds")
    return ClientEndpoint(kind, options["host"], port, timeout)


def _connect_hosts(setting: str, value: tuple[str, ...]) -> None:
    _check(setting, f"({len(value)} hosts)", len(value) <= MAX_CONNECT_HOSTS,
           f"use at most {MAX_CONNECT_HOSTS} hosts (the device's Connect 1..12)")
    for host in value:
        client_endpoint(setting, host)


def allow_list_network(setting: str, value: object) -> "ipaddress.IPv4Network | ipaddress.IPv6Network":
    """One allow-list entry: an IPv4 or IPv6 address, or a CIDR range (host bits are ignored)."""
    text = _str(setting, value, 64).strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(setting, value, "use IPv4 or IPv6 addresses or CIDR ranges such as 192.168.1.10, "
                                          "10.0.0.0/8 or 2001:db8::/32 (empty: anyone)") from None


def _allow_list(setting: str, value: tuple[str, ...]) -> None:
    _check(setting, f"({len(value)} entries)", len(value) <= MAX_ALLOW_LIST,
           f"use at most {MAX_ALLOW_LIST} addresses or ranges")
    for entry in value:
        allow_list_network(setting, entry)


def _pem_file(setting: str, value: object, kind: str) -> None:
    """
    The absolute path of a PEM file of certificates or of a private key (""
    for none).  A file that exists must hold what it should; one that does not
    exist (yet) is reported by the tunnel when it is used, so that a missing
    file never stops the gateway from loading its configuration.
    """
    import os

    text = _str(setting, value, 1024)
    if text == "":
        return
    what = "certificates" if kind == "certificates" else "a private key"
    _check(setting, value, os.path.isabs(text), f"use the absolute path of a PEM file of {what}, or leave it empty")
    try:
        if kind == "certificates":
            certificates.read_certificates(text, "certificates")
        else:
            certificates.read_private_key(text, "private key")
    except certificates.MissingFileError:
        return
    except certificates.UnreadableFileError as e:
        raise ConfigError(setting, value, f"the file cannot be read ({e.reason})") from None
    except certificates.NotPemError:
        advice = ("use a PEM file of certificates (text starting -----BEGIN CERTIFICATE-----)" if kind == "certificates"
                  else "use a PEM private key (text starting -----BEGIN PRIVATE KEY-----)")
        raise ConfigError(setting, value, advice) from None
    except certificates.KeyPassphraseError:
        raise ConfigError(setting, value, "use a private key without a passphrase") from None
    except certificates.MalformedPemError as e:
        advice = "use a PEM file of certificates" if kind == "certificates" else "use a PEM private key"
        raise ConfigError(setting, value, f"{advice}; this one cannot be read ({e.detail})") from None


@attrs.frozen
class TunnelConfig:
    """The transparent TCP tunnel of one line: accept mode, connect mode, TLS, allow-list, RFC 2217."""

    _section = "tunnel"
    enabled: bool = attrs.field(default=True, validator=_v(_bool))
    listen: str = attrs.field(default="tcp:10001", validator=_v(_endpoint))
    keepalive: int = attrs.field(default=45, validator=_v(_int, 0, 7200, " seconds (0 = off)"))
    disconnect_timeout: int = attrs.field(default=10, validator=_v(_int, 0, 86400, " seconds (0 = never)"))
    on_busy: str = attrs.field(default="refuse", validator=_v(_choice, ACCEPT_POLICIES))
    #: Several clients share the line, one M-Bus transaction at a time (off: the device's transparent tunnel).
    sharing: bool = attrs.field(default=False, validator=_v(_bool))
    #: Connect mode: dial the head-end "always" (at start, and again when lost), "on-data" (when the line
    #: has bytes for the network; they are kept, bounded, and sent once connected) or never ("disabled").
    connect_mode: str = attrs.field(default="disabled", validator=_v(_choice, CONNECT_MODES))
    connect_hosts: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_v(_connect_hosts))
    connect_host_list: str = attrs.field(default="sequential", validator=_v(_choice, HOST_LIST_MODES))
    #: Reconnect back-off: the first wait, doubled after each failed round up to the longest, with jitter.
    connect_backoff_min: int = attrs.field(default=1, validator=_v(_int, 1, 3600, " seconds"))
    connect_backoff_max: int = attrs.field(default=60, validator=_v(_int, 1, 3600, " seconds"))
    #: tls: hosts are verified against this CA bundle ("" = the system's trust store); optional client certificate.
    connect_tls_ca: str = attrs.field(default="", validator=_v(_pem_file, "certificates"))
    connect_tls_certificate: str = attrs.field(default="", validator=_v(_pem_file, "certificates"))
    connect_tls_key: str = attrs.field(default="", validator=_v(_pem_file, "key"))
    #: Accept mode over TLS (1.2/1.3, the HTTPS certificate); clients must show a certificate from tls_client_ca if set.
    tls: bool = attrs.field(default=False, validator=_v(_bool))
    tls_client_ca: str = attrs.field(default="", validator=_v(_pem_file, "certificates"))
    #: Addresses and CIDR ranges that may use the tunnel (empty: anyone).
    allow_list: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_v(_allow_list))
    #: Speak Telnet COM-PORT-OPTION (RFC 2217) to accept-mode clients: they set the baud rate remotely.
    rfc2217: bool = attrs.field(default=False, validator=_v(_bool))


def ha1(name: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """The Digest HA1 of a user, as htdigest stores it (MD5 or SHA-256)."""
    h = hashlib.sha256 if algorithm.upper().startswith("SHA-256") else hashlib.md5
    return h(f"{name}:{realm}:{password}".encode("utf-8")).hexdigest()


@attrs.frozen
class User:
    """A user of one directive: the HA1 digests that Digest needs, never the password."""

    _section = "auth.user"
    name: str = attrs.field()
    ha1_md5: str = attrs.field()
    ha1_sha256: str = attrs.field()

    @name.validator
    def _name(self, attribute: attrs.Attribute, value: object) -> None:
        _check("auth.user.name", value, isinstance(value, str) and bool(_USER_NAME.match(value)),
               "use 1 to 32 characters without spaces, colons, quotes or backslashes")

    @ha1_md5.validator
    def _md5(self, attribute: attrs.Attribute, value: object) -> None:
        _check("auth.user.ha1_md5", value, isinstance(value, str) and bool(re.fullmatch(r"[0-9a-f]{32}", value)),
               "use 32 lowercase hex digits (set the password instead)")

    @ha1_sha256.validator
    def _sha(self, attribute: attrs.Attribute, value: object) -> None:
        _check("auth.user.ha1_sha256", value, isinstance(value, str) and bool(re.fullmatch(r"[0-9a-f]{64}", value)),
               "use 64 lowercase hex digits (set the password instead)")

    @classmethod
    def with_password(cls, name: str, realm: str, password: str) -> "User":
        _check("auth.user.password", "(hidden)", isinstance(password, str) and 1 <= len(password) <= 128,
               "use a password of 1 to 128 characters")
        return cls(name=name, ha1_md5=ha1(name, realm, password, "MD5"),
                   ha1_sha256=ha1(name, realm, password, "SHA-256"))

    def check_password(self, realm: str, password: str) -> bool:
        import hmac

        return hmac.compare_digest(self.ha1_sha256, ha1(self.name, realm, password, "SHA-256"))


@attrs.frozen
class AuthDirective:
    """Who may see a URI and its children: the longest matching URI prefix decides."""

    _section = "auth"
    uri: str = attrs.field()
    realm: str = attrs.field(default="config")
    auth_type: str = attrs.field(default="Digest", validator=_v(_choice, AUTH_TYPES))
    users: tuple[User, ...] = attrs.field(default=(), converter=tuple)

    @uri.validator
    def _uri(self, attribute: attrs.Attribute, value: object) -> None:
        _check("auth.uri", value, isinstance(value, str) and value.startswith("/") and len(value) <= 255
               and not any(c in value for c in " \t\r\n?#"),
               "use a path that begins with / (no spaces, ? or #)")

    @realm.validator
    def _realm(self, attribute: attrs.Attribute, value: object) -> None:
        _check("auth.realm", value, isinstance(value, str) and bool(_REALM.match(value)),
               "use 1 to 64 characters without quotes or backslashes")

    @users.validator
    def _users(self, attribute: attrs.Attribute, value: tuple[User, ...]) -> None:
        names = [u.name for u in value]
        _check("auth.users", names, len(set(names)) == len(names), "each user name once per directive")

    def matches(self, path: str) -> bool:
        base = self.uri.rstrip("/")
        return path == self.uri or path == base or path.startswith(base + "/")


def directive_for(directives: tuple[AuthDirective, ...], path: str) -> AuthDirective | None:
    """The directive that decides for a request path: the longest matching URI."""
    found = [d for d in directives if d.matches(path)]
    return max(found, key=lambda d: len(d.uri.rstrip("/")), default=None)


@attrs.frozen
class HttpConfig:
    _section = "http"
    enabled: bool = attrs.field(default=True, validator=_v(_bool))
    http_port: int = attrs.field(default=80, validator=_v(_int, 1, 65535))
    https_port: int = attrs.field(default=443, validator=_v(_int, 1, 65535))
    interface: str = attrs.field(default="", validator=_v(_str, 64))
    tls_versions: tuple[str, ...] = attrs.field(default=TLS_VERSIONS, converter=tuple)
    certificate: str = attrs.field(default="", validator=_v(_str, 255))
    private_key: str = attrs.field(default="", validator=_v(_str, 255))
    max_timeout: int = attrs.field(default=10, validator=_v(_int, 1, 3600, " seconds"))
    max_bytes: int = attrs.field(default=40960, validator=_v(_int, 1024, 64 * 1024 * 1024, " bytes"))
    logging: bool = attrs.field(default=True, validator=_v(_bool))
    max_log_entries: int = attrs.field(default=50, validator=_v(_int, 1, 10000))
    log_format: str = attrs.field(default='%h %t "%r" %s %B "%{Referer}i" "%{User-Agent}i"',
                                  validator=_v(_str, 255))

    @tls_versions.validator
    def _tls(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        for v in value:
            _check("http.tls_versions", v, v in TLS_VERSIONS,
                   "use TLSv1.2 and/or TLSv1.3 (SSL 3, TLS 1.0 and 1.1 are broken and refused)")

    @property
    def https_enabled(self) -> bool:
        """HTTPS listens only when a certificate is configured and a version is enabled."""
        return bool(self.enabled and self.tls_versions)


@attrs.frozen
class ConsoleConfig:
    _section = "console"
    enabled: bool = attrs.field(default=True, validator=_v(_bool))
    listen: str = attrs.field(default="tcp:2323", validator=_v(_endpoint))
    idle_timeout: int = attrs.field(default=300, validator=_v(_int, 0, 86400, " seconds (0 = never)"))
    ssh_enabled: bool = attrs.field(default=False, validator=_v(_bool))
    ssh_listen: str = attrs.field(default="tcp:2222", validator=_v(_endpoint))


def _table(cls: type[T], setting: str) -> Callable[[Any], T]:
    def convert(value: Any) -> T:
        return value if isinstance(value, cls) else _section(cls, setting, value)

    return convert


def _numbered(cls: type[T], setting: str) -> Callable[[Any], dict[int, T]]:
    """Lines and tunnels are numbered like the device: ``[line.1]``, ``[line.2]``..."""

    def convert(value: Any) -> dict[int, T]:
        _check(setting, value, isinstance(value, Mapping), f"use tables [{setting}.1], [{setting}.2], ...")
        out: dict[int, T] = {}
        for key, item in value.items():
            ok = str(key).isdigit() and 1 <= int(key) <= MAX_LINES
            _check(f"{setting}.{key}", key, ok, f"number {setting}s from 1 to {MAX_LINES}")
            try:
                out[int(key)] = item if isinstance(item, cls) else _section(cls, f"{setting}.{key}", item)
            except ConfigError as e:
                name = e.setting
                if name.startswith(setting + ".") and not name.startswith(f"{setting}.{key}."):
                    name = f"{setting}.{key}." + name[len(setting) + 1:]
                raise ConfigError(name, e.value, e.allowed) from None
        return dict(sorted(out.items()))

    return convert


@attrs.frozen
class Config:
    """Every setting of the gateway."""

    identity: Identity = attrs.field(factory=Identity, converter=_table(Identity, "identity"))
    network: NetworkConfig = attrs.field(factory=NetworkConfig, converter=_table(NetworkConfig, "network"))
    lines: dict[int, LineConfig] = attrs.field(factory=lambda: {1: LineConfig()},
                                               converter=_numbered(LineConfig, "line"))
    tunnels: dict[int, TunnelConfig] = attrs.field(factory=lambda: {1: TunnelConfig()},
                                                   converter=_numbered(TunnelConfig, "tunnel"))
    http: HttpConfig = attrs.field(factory=HttpConfig, converter=_table(HttpConfig, "http"))
    auth: tuple[AuthDirective, ...] = attrs.field(factory=tuple, converter=tuple)
    console: ConsoleConfig = attrs.field(factory=ConsoleConfig, converter=_table(ConsoleConfig, "console"))

    def __attrs_post_init__(self) -> None:
        _check("line", "(none)", len(self.lines) >= 1, "configure at least one line: [line.1]")
        for n in self.tunnels:
            _check(f"tunnel.{n}", n, n in self.lines, f"a tunnel needs its line: add [line.{n}]")
        uris = [d.uri for d in self.auth]
        for uri in uris:
            _check("auth.uri", uri, uris.count(uri) == 1, "each URI once; edit the existing directive")
        devices = [(l.device, l.simulate) for l in self.lines.values() if not l.simulate]
        _check("line.device", devices, len(set(devices)) == len(devices), "each serial device on one line only")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Build and validate a configuration from the TOML file's structure."""
        _check("(file)", "(top level)", isinstance(data, Mapping), "the file must hold tables")
        known = {"identity", "network", "line", "tunnel", "http", "auth", "console"}
        for key in data:
            _check(key, data[key], key in known, "unknown section; known: " + ", ".join(sorted(known)))
        directives = []
        auth = data.get("auth", [])
        _check("auth", auth, isinstance(auth, list), "use [[auth]] tables")
        for i, d in enumerate(auth):
            _check(f"auth[{i}]", d, isinstance(d, Mapping), "use [[auth]] tables")
            d = dict(d)
            users = [_section(User, "auth.user", u) for u in d.pop("user", [])]
            directive = _section(AuthDirective, "auth", d)
            directives.append(attrs.evolve(directive, users=tuple(users)))
        return cls(identity=data.get("identity", {}), network=data.get("network", {}),
                   lines=data.get("line", {"1": {}}), tunnels=data.get("tunnel", {}),
                   http=data.get("http", {}), auth=tuple(directives), console=data.get("console", {}))

    def to_dict(self) -> dict[str, Any]:
        """The plain structure written to the TOML file."""

        def plain(v: Any) -> dict[str, Any]:
            return {k: (list(x) if isinstance(x, tuple) else x) for k, x in attrs.asdict(v, recurse=False).items()}

        return {
            "identity": plain(self.identity),
            "network": plain(self.network),
            "line": {str(n): plain(l) for n, l in self.lines.items()},
            "tunnel": {str(n): plain(t) for n, t in self.tunnels.items()},
            "http": plain(self.http),
            "console": plain(self.console),
            "auth": [{**{k: v for k, v in plain(d).items() if k != "users"}, "user": [plain(u) for u in d.users]}
                     for d in self.auth],
        }

    def evolve(self, **changes: Any) -> "Config":
        return attrs.evolve(self, **changes)

    def with_line(self, number: int, line: LineConfig) -> "Config":
        return attrs.evolve(self, lines={**self.lines, number: line})

    def with_tunnel(self, number: int, tunnel: TunnelConfig) -> "Config":
        return attrs.evolve(self, tunnels={**self.tunnels, number: tunnel})
