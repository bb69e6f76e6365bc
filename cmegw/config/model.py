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

from cmegw.config.checks import (  # noqa: F401 (the model is where the others import them from)
    MAX_ALLOW_LIST,
    ClientEndpoint,
    HIDDEN,
    MISSING,
    ConfigError,
    allow_list_network,
    check,
    check_bool,
    check_choice,
    check_endpoint,
    check_int,
    check_number,
    check_str,
    client_endpoint,
    named_check,
    ipv4,
    parse_address_and_mask,
    pem_path,
    read_section,
    setting,
)
from cmegw.config.readout import MeterConfig, MqttConfig, PushConfig, ReadoutConfig, meters_table, push_table

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
#: The most a setting may add to a line's timeouts, and the most tries again a scan probe may get.
MAX_EXTRA_SLACK = 5.0
MAX_SCAN_RETRIES = 3

_HOSTNAME = re.compile(r"^[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
#: A Linux interface name (IFNAMSIZ: at most 15 characters); it becomes part of a file name.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_USER_NAME = re.compile(r"^[^\s:\"\\]{1,32}$")
_REALM = re.compile(r"^[^\"\\\x00-\x1f]{1,64}$")


@attrs.frozen
class Identity:
    _section = "identity"
    product_type: str = setting("cmegw", check_str, 64, label='Product type')
    serial_number: str = setting("", check_str, 64, label='Serial number')


@attrs.frozen
class NetworkConfig:
    """The network settings of the device's Network pages (stored; the host owns its network)."""

    _section = "network"
    bootp: bool = setting(False, check_bool, label='BOOTP client', restart=True)
    dhcp: bool = setting(True, check_bool, label='DHCP client', restart=True)
    ip_address: str = setting("", ipv4, label='IP address', restart=True)
    netmask: str = setting("", ipv4, label='Netmask', restart=True)
    gateway: str = setting("", ipv4, label='Default gateway', restart=True)
    hostname: str = setting("", label='Host name', restart=True)
    domain: str = setting("", label='Domain', restart=True)
    dhcp_client_id: str = setting("", check_str, 64, label='DHCP client ID', restart=True)
    primary_dns: str = setting("", ipv4, label='Primary DNS', restart=True)
    secondary_dns: str = setting("", ipv4, label='Secondary DNS', restart=True)
    link_speed: str = setting("auto", check_choice, LINK_SPEEDS, label='Speed', restart=True)
    link_duplex: str = setting("auto", check_choice, LINK_DUPLEXES, label='Duplex', restart=True)
    apply_to_host: bool = setting(False, check_bool, label='Apply to this host', restart=True)
    #: The host interface these settings are for ("" = the one with the default route).
    interface: str = setting("", label='Host interface', restart=True)
    backend: str = setting("networkd", check_choice, NETWORK_BACKENDS, label='Backend', restart=True)

    @interface.validator
    def _interface(self, attribute: attrs.Attribute, value: object) -> None:
        text = check_str("network.interface", value, 15)
        check("network.interface", value, text == "" or bool(_IFNAME.match(text)),
               "use an interface name such as eth0 or enp1s0 (letters, digits, _ . -; at most 15), "
               "or leave it empty for the interface of the default route")

    @hostname.validator
    def _hostname(self, attribute: attrs.Attribute, value: object) -> None:
        text = check_str("network.hostname", value, 63)
        check("network.hostname", value, text == "" or bool(_HOSTNAME.match(text)),
               "start with a letter, continue with letters, digits or hyphens, end with a letter or digit")

    @domain.validator
    def _domain(self, attribute: attrs.Attribute, value: object) -> None:
        text = check_str("network.domain", value, 253)
        check("network.domain", value, text == "" or bool(_DOMAIN.match(text)),
               "use a domain name such as example.com")

    @property
    def static(self) -> bool:
        """With BOOTP or DHCP on, the static address, mask, gateway, hostname and domain are ignored."""
        return not (self.dhcp or self.bootp)


@attrs.frozen
class LineConfig:
    """One M-Bus serial line (8 data bits, even parity, 1 stop bit)."""

    _section = "line"
    device: str = setting("/dev/ttyUSB0", check_str, 255, label='Serial device')
    baud_rate: int = setting(2400, check_choice, BAUD_RATES, label='Baud rate', unit='baud')
    simulate: bool = setting(False, check_bool, label='Simulated bus')
    reopen_interval: int = setting(3, check_int, 1, 3600, " seconds", label='Reopen interval', unit='s')
    #: Seconds added to the adapter's own delivery slack in every M-Bus timeout (radio links, repeaters).
    extra_slack: float = setting(0.0, check_number, 0, MAX_EXTRA_SLACK, " seconds",
                                 label='Extra timeout slack', unit='s')
    #: Further tries of a scan probe that heard nothing (a garbled answer is always tried again).
    scan_silent_retries: int = setting(1, check_int, 0, MAX_SCAN_RETRIES, label='Scan: tries again after silence')

    @property
    def settings_text(self) -> str:
        """The device's line summary, e.g. ``RS232, 2400, Even, 8, 1, None``."""
        return f"RS232, {self.baud_rate}, Even, 8, 1, None"


#: Connect mode (dial-out to a head-end): when the tunnel connects, and in which order it tries its hosts.
CONNECT_MODES = ("disabled", "always", "on-data")
HOST_LIST_MODES = ("sequential", "round-robin")
MAX_CONNECT_HOSTS = 12



def _connect_hosts(setting: str, value: tuple[str, ...]) -> None:
    check(setting, f"({len(value)} hosts)", len(value) <= MAX_CONNECT_HOSTS,
           f"use at most {MAX_CONNECT_HOSTS} hosts (the device's Connect 1..12)")
    for host in value:
        client_endpoint(setting, host)



def _allow_list(setting: str, value: tuple[str, ...]) -> None:
    check(setting, f"({len(value)} entries)", len(value) <= MAX_ALLOW_LIST,
           f"use at most {MAX_ALLOW_LIST} addresses or ranges")
    for entry in value:
        allow_list_network(setting, entry)



@attrs.frozen
class TunnelConfig:
    """The transparent TCP tunnel of one line: accept mode, connect mode, TLS, allow-list, RFC 2217."""

    _section = "tunnel"
    enabled: bool = setting(True, check_bool, label='Server enabled')
    listen: str = setting("tcp:10001", check_endpoint, label='Listening endpoint')
    keepalive: int = setting(45, check_int, 0, 7200, " seconds (0 = off)", label='TCP keep-alive', unit='s')
    disconnect_timeout: int = setting(10, check_int, 0, 86400, " seconds (0 = never)", label='Disconnect timeout', unit='s')
    on_busy: str = setting("refuse", check_choice, ACCEPT_POLICIES, label='When a client is connected')
    #: Several clients share the line, one M-Bus transaction at a time (off: the device's transparent tunnel).
    sharing: bool = setting(False, check_bool, label='Shared bus')
    #: Connect mode: dial the head-end "always" (at start, and again when lost), "on-data" (when the line
    #: has bytes for the network; they are kept, bounded, and sent once connected) or never ("disabled").
    connect_mode: str = setting("disabled", check_choice, CONNECT_MODES, label='Connect')
    connect_hosts: tuple[str, ...] = setting((), _connect_hosts, converter=tuple, label='Remote hosts')
    connect_host_list: str = setting("sequential", check_choice, HOST_LIST_MODES, label='Host list')
    #: Reconnect back-off: the first wait, doubled after each failed round up to the longest, with jitter.
    connect_backoff_min: int = setting(1, check_int, 1, 3600, " seconds", label='First retry after', unit='s')
    connect_backoff_max: int = setting(60, check_int, 1, 3600, " seconds", label='Longest retry wait', unit='s')
    #: tls: hosts are verified against this CA bundle ("" = the system's trust store); optional client certificate.
    connect_tls_ca: str = setting("", pem_path, "certificates", label='Trusted CA bundle (tls: hosts)')
    connect_tls_certificate: str = setting("", pem_path, "certificates", label='Client certificate (mutual TLS)')
    connect_tls_key: str = setting("", pem_path, "key", label='Client key')
    #: Accept mode over TLS (1.2/1.3, the HTTPS certificate); clients must show a certificate from tls_client_ca if set.
    tls: bool = setting(False, check_bool, label='Accept over TLS')
    tls_client_ca: str = setting("", pem_path, "certificates", label='Require client certificates from CA')
    #: Addresses and CIDR ranges that may use the tunnel (empty: anyone).
    allow_list: tuple[str, ...] = setting((), _allow_list, converter=tuple, label='Allowed clients')
    #: Speak Telnet COM-PORT-OPTION (RFC 2217) to accept-mode clients: they set the baud rate remotely.
    rfc2217: bool = setting(False, check_bool, label='RFC 2217 (remote baud rate)')


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
        check("auth.user.name", value, isinstance(value, str) and bool(_USER_NAME.match(value)),
               "use 1 to 32 characters without spaces, colons, quotes or backslashes")

    @ha1_md5.validator
    def _md5(self, attribute: attrs.Attribute, value: object) -> None:
        check("auth.user.ha1_md5", value, isinstance(value, str) and bool(re.fullmatch(r"[0-9a-f]{32}", value)),
               "use 32 lowercase hex digits (set the password instead)")

    @ha1_sha256.validator
    def _sha(self, attribute: attrs.Attribute, value: object) -> None:
        check("auth.user.ha1_sha256", value, isinstance(value, str) and bool(re.fullmatch(r"[0-9a-f]{64}", value)),
               "use 64 lowercase hex digits (set the password instead)")

    @classmethod
    def with_password(cls, name: str, realm: str, password: str) -> "User":
        check("auth.user.password", HIDDEN, isinstance(password, str) and 1 <= len(password) <= 128,
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
    auth_type: str = attrs.field(default="Digest", validator=named_check(check_choice, AUTH_TYPES))
    users: tuple[User, ...] = attrs.field(default=(), converter=tuple)

    @uri.validator
    def _uri(self, attribute: attrs.Attribute, value: object) -> None:
        check("auth.uri", value, isinstance(value, str) and value.startswith("/") and len(value) <= 255
               and not any(c in value for c in " \t\r\n?#"),
               "use a path that begins with / (no spaces, ? or #)")

    @realm.validator
    def _realm(self, attribute: attrs.Attribute, value: object) -> None:
        check("auth.realm", value, isinstance(value, str) and bool(_REALM.match(value)),
               "use 1 to 64 characters without quotes or backslashes")

    @users.validator
    def _users(self, attribute: attrs.Attribute, value: tuple[User, ...]) -> None:
        names = [u.name for u in value]
        check("auth.users", names, len(set(names)) == len(names), "each user name once per directive")

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
    enabled: bool = setting(True, check_bool, label='HTTP server', restart=True)
    http_port: int = setting(80, check_int, 1, 65535, label='HTTP port', restart=True)
    https_port: int = setting(443, check_int, 1, 65535, label='HTTPS port', restart=True)
    interface: str = setting("", check_str, 64, label='Listen address', restart=True)
    tls_versions: tuple[str, ...] = setting(TLS_VERSIONS, converter=tuple, label='HTTPS protocols')
    certificate: str = setting("", check_str, 255, label='Certificate')
    private_key: str = setting("", check_str, 255, label='Private key')
    max_timeout: int = setting(10, check_int, 1, 3600, " seconds", label='Max timeout', unit='s')
    max_bytes: int = setting(40960, check_int, 1024, 64 * 1024 * 1024, " bytes", label='Max bytes', unit='bytes')
    hsts: bool = setting(True, check_bool, label='HSTS')
    logging: bool = setting(True, check_bool, label='Logging')
    max_log_entries: int = setting(2000, check_int, 1, 10000, label='Max log entries')
    log_format: str = setting('%h %t "%r" %s %B "%{Referer}i" "%{User-Agent}i"', check_str, 255,
                              label='Log format')

    @tls_versions.validator
    def _tls(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        for v in value:
            check("http.tls_versions", v, v in TLS_VERSIONS,
                   "use TLSv1.2 and/or TLSv1.3 (SSL 3, TLS 1.0 and 1.1 are broken and refused)")

    @property
    def https_enabled(self) -> bool:
        """HTTPS listens only when a certificate is configured and a version is enabled."""
        return bool(self.enabled and self.tls_versions)


@attrs.frozen
class ConsoleConfig:
    _section = "console"
    enabled: bool = setting(True, check_bool, label='Console', restart=True)
    listen: str = setting("tcp:2323", check_endpoint, label='Telnet listening endpoint', restart=True)
    idle_timeout: int = setting(300, check_int, 0, 86400, " seconds (0 = never)", label='Idle timeout', unit='s')
    ssh_enabled: bool = setting(False, check_bool, label='SSH', restart=True)
    ssh_listen: str = setting("tcp:2222", check_endpoint, label='SSH listening endpoint', restart=True)


def _table(cls: type[T], setting: str) -> Callable[[Any], T]:
    def convert(value: Any) -> T:
        return value if isinstance(value, cls) else read_section(cls, setting, value)

    return convert


def _numbered(cls: type[T], setting: str) -> Callable[[Any], dict[int, T]]:
    """Lines and tunnels are numbered like the device: ``[line.1]``, ``[line.2]``..."""

    def convert(value: Any) -> dict[int, T]:
        check(setting, value, isinstance(value, Mapping), f"use tables [{setting}.1], [{setting}.2], ...")
        out: dict[int, T] = {}
        for key, item in value.items():
            ok = str(key).isdigit() and 1 <= int(key) <= MAX_LINES
            check(f"{setting}.{key}", key, ok, f"number {setting}s from 1 to {MAX_LINES}")
            try:
                out[int(key)] = item if isinstance(item, cls) else read_section(cls, f"{setting}.{key}", item)
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
    #: The meter list (``[meter.<id>]``), read on the schedule of ``[readout]``.
    meters: dict[str, MeterConfig] = attrs.field(factory=dict, converter=meters_table)
    readout: ReadoutConfig = attrs.field(factory=ReadoutConfig, converter=_table(ReadoutConfig, "readout"))
    mqtt: MqttConfig = attrs.field(factory=MqttConfig, converter=_table(MqttConfig, "mqtt"))
    #: HTTP receivers each reading is POSTed to (``[push.N]``).
    push: dict[int, PushConfig] = attrs.field(factory=dict, converter=push_table)

    def __attrs_post_init__(self) -> None:
        check("line", "(none)", len(self.lines) >= 1, "configure at least one line: [line.1]")
        for n in self.tunnels:
            check(f"tunnel.{n}", n, n in self.lines, f"a tunnel needs its line: add [line.{n}]")
        uris = [d.uri for d in self.auth]
        for uri in uris:
            check("auth.uri", uri, uris.count(uri) == 1, "each URI once; edit the existing directive")
        devices = [(l.device, l.simulate) for l in self.lines.values() if not l.simulate]
        check("line.device", devices, len(set(devices)) == len(devices), "each serial device on one line only")
        for key, meter in self.meters.items():
            check(f"meter.{key}.line", meter.line, meter.line in self.lines,
                  "use a configured line: " + ", ".join(str(n) for n in self.lines))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Build and validate a configuration from the TOML file's structure."""
        check("(file)", "(top level)", isinstance(data, Mapping), "the file must hold tables")
        known = {"identity", "network", "line", "tunnel", "http", "auth", "console", "meter", "readout", "mqtt", "push"}
        for key in data:
            check(key, data[key], key in known, "unknown section; known: " + ", ".join(sorted(known)))
        directives = []
        auth = data.get("auth", [])
        check("auth", auth, isinstance(auth, list), "use [[auth]] tables")
        for i, d in enumerate(auth):
            check(f"auth[{i}]", d, isinstance(d, Mapping), "use [[auth]] tables")
            d = dict(d)
            users = [read_section(User, "auth.user", u) for u in d.pop("user", [])]
            directive = read_section(AuthDirective, "auth", d)
            directives.append(attrs.evolve(directive, users=tuple(users)))
        return cls(identity=data.get("identity", {}), network=data.get("network", {}),
                   lines=data.get("line", {"1": {}}), tunnels=data.get("tunnel", {}),
                   http=data.get("http", {}), auth=tuple(directives), console=data.get("console", {}),
                   meters=data.get("meter", {}), readout=data.get("readout", {}), mqtt=data.get("mqtt", {}),
                   push=data.get("push", {}))

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
            "readout": plain(self.readout),
            "mqtt": plain(self.mqtt),
            "meter": {key: plain(m) for key, m in self.meters.items()},
            "push": {str(n): plain(p) for n, p in self.push.items()},
            "auth": [{**{k: v for k, v in plain(d).items() if k != "users"}, "user": [plain(u) for u in d.users]}
                     for d in self.auth],
        }

    def evolve(self, **changes: Any) -> "Config":
        return attrs.evolve(self, **changes)

    def with_line(self, number: int, line: LineConfig) -> "Config":
        return attrs.evolve(self, lines={**self.lines, number: line})

    def with_tunnel(self, number: int, tunnel: TunnelConfig) -> "Config":
        return attrs.evolve(self, tunnels={**self.tunnels, number: tunnel})
