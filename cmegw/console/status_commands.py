# -*- test-case-name: tests.test_console_status_commands -*-
"""
The console's ``show`` pages of the gateway's state: status, network,
tunnel and line statistics, HTTP (configuration, counters, access log) and
the authentication directives.  ``show settings`` is with ``set`` in
`cmegw.console.config_commands`.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterable

import attrs

import cmegw
from cmegw.config.model import Config
from cmegw.config.settings import format_value
from cmegw.console.framework import (
    COMMANDS,
    CONSOLE_URI,
    Arguments,
    Result,
    Session,
    columns,
    line_numbers,
    number_argument,
    table_lines,
)
from cmegw.stats import (HTTP_BYTE_COUNTERS, HTTP_COUNTERS, byte_size_text, format_duration, line_rows,
                         tunnel_rows)


def web_state(gateway: Any) -> Any:
    """What the running web part publishes (counters, access log, listeners), or None while none runs."""
    return gateway.state.web


def _count(value: int | None) -> str:
    return "unavailable" if value is None else str(value)


def _on(value: bool) -> str:
    return "on" if value else "off"


# show ------------------------------------------------------------------------

SHOW = COMMANDS.group("show", "show a page of the web administration", "PAGE",
                      details="Each page shows what the web page of the same name shows.")


def _identity_rows(gateway: Any) -> list[tuple[str, str]]:
    config: Config = gateway.state.config
    return [
        ("Product type", config.identity.product_type),
        ("Software version", cmegw.__version__),
        ("Serial number", config.identity.serial_number or "(none)"),
        ("Uptime", format_duration(gateway.state.uptime())),
    ]


def _tunnel_state(gateway: Any, n: int) -> str:
    stats = gateway.state.tunnel_stats.get(n)
    if stats is None:
        return "not running"
    text = stats.state
    if stats.peer:
        text += f" ({stats.peer})"
    if stats.listening:
        text += f", listening on {stats.listening}"
    if stats.error:
        text += f": {stats.error}"
    return text


def _connect_state(gateway: Any, n: int) -> str:
    """Tunnel `n`'s connect mode: disabled / connecting to X / connected to X / waiting N s before retry."""
    connect = gateway.state.connect_stats.get(n)
    return connect.text(gateway.reactor.seconds()) if connect is not None else "disabled"


def _line_state(gateway: Any, n: int) -> str:
    stats = gateway.state.lines.get(n)
    if stats is None:
        return "not running"
    text = f"{stats.state} {stats.device}".rstrip()
    if stats.error:
        text += f": {stats.error}"
    return text


@SHOW.command("status", "identity, uptime, saved flag, lines, tunnels, indications")
def show_status(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    gateway = session.gateway
    config: Config = gateway.state.config
    store = gateway.store
    saved = "no: 'save' keeps the changes" if store.unsaved else "yes"
    rows = _identity_rows(gateway) + [("Configuration saved", saved)]
    pending = gateway.state.pending_restart()
    if pending:
        rows.append(("Waiting for a restart", ", ".join(pending)))
    problem = gateway.state.status.config_problem or store.problem
    lines = ["Status", *table_lines(rows)]
    if problem:
        lines += ["", f"  CONFIGURATION PROBLEM: {problem}"]
    network = config.network
    source = "DHCP" if network.dhcp else "BOOTP" if network.bootp else "static"
    address = "from " + source if not network.static else f"{network.ip_address or '(none)'} {network.netmask}"
    lines += ["", "Network", *table_lines([("Host name", network.hostname or socket.gethostname()),
                                           ("IP address", address.strip())])]
    lines += ["", "Lines", *table_lines(
        (f"Line {n}", f"{line.settings_text}; {_line_state(gateway, n)}") for n, line in config.lines.items())]
    tunnel_rows = []
    for n, tunnel in config.tunnels.items():
        accept = _tunnel_state(gateway, n) if tunnel.enabled else "disabled"
        tunnel_rows.append((f"Tunnel {n}", f"connect mode: {_connect_state(gateway, n)}; accept mode: {accept}"))
    lines += ["", "Tunnels", *table_lines(tunnel_rows)]
    indications = gateway.state.indications()
    lines += ["", "Indications", "  " + "  ".join(f"{name} {_on(state)}" for name, state in indications.items())]
    return "\n".join(lines)


def _two_columns(current: Any, after: Any, fields: Iterable[str]) -> list[str]:
    rows = []
    for name in fields:
        now, later = format_value(getattr(current, name)), format_value(getattr(after, name))
        rows.append((name, now or '""', later or '""'))
    return columns(("setting", "current", "after restart"), rows)


def _after_restart(gateway: Any) -> Config:
    """What the gateway runs after a restart: the saved settings with this run's command-line values."""
    return gateway.overrides.apply(gateway.store.saved)


@SHOW.command("network", "the network settings, current and after restart")
def show_network(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    gateway = session.gateway
    current, after = gateway.state.config.network, _after_restart(gateway).network
    fields = [f.name for f in attrs.fields(type(current))]
    lines = ["Network interface", *_two_columns(current, after, fields), ""]
    if not after.static:
        lines.append("  With DHCP or BOOTP on, the static address, mask, gateway, host name and domain are ignored.")
    lines.append(f"  The host ({socket.gethostname()}) owns its network; "
                 + (f"these settings are applied to it at every restart (backend {current.backend}, interface "
                    f"{current.interface or 'of the default route'})." if current.apply_to_host
                    else "these settings are stored, not applied to it (network.apply_to_host)."))
    last = gateway.state.host_network
    if last is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.at))
        lines.append(f"  Last {last.action} ({when}): {last.message}")
        lines.extend("    " + line for line in last.details())
    elif current.apply_to_host:
        lines.append("  Not applied yet.")
    return "\n".join(lines)


def _tunnels(session: Session, words: list[str]) -> list[str]:
    return [str(n) for n in session.gateway.state.config.tunnels] if not words else []


def _pages(args: Arguments, table: dict[int, Any], what: str, page: Callable[[int], list[str]]) -> str:
    """The page of the numbered part named (``show tunnel 2``), or of every one, a blank line between."""
    words = args.expect(0, 1, "[N]")
    numbers = [number_argument(args, words[0], table, what)] if words else list(table)
    return "\n\n".join("\n".join(page(n)) for n in numbers)


# The console's rendering of a tunnel: the view rows of `cmegw.stats` the web page renders too.
def _tunnel_page(gateway: Any, n: int) -> list[str]:
    tunnel = gateway.state.config.tunnels[n]
    stats = gateway.state.tunnel_stats.get(n)
    lines = [f"Tunnel {n} (line {n})"]
    if stats is None:
        lines.append("  not running")
    else:
        lines += ["  Statistics", *table_lines(tunnel_rows(stats, gateway.reactor.seconds()), 4)]
    lines += ["  Accept mode", *table_lines([
        ("State", _tunnel_state(gateway, n) if tunnel.enabled else "disabled"),
        ("Listening endpoint", gateway.overrides.tunnel if n == 1 and gateway.overrides.tunnel
         else tunnel.listen),
        ("TCP keep-alive", f"{tunnel.keepalive} s" if tunnel.keepalive else "off"),
        ("Second client", tunnel.on_busy),
        ("Allowed clients", ", ".join(tunnel.allow_list) or "anyone"),
        ("TLS", ("on, client certificates from " + tunnel.tls_client_ca if tunnel.tls_client_ca else "on")
         if tunnel.tls else "off"),
        ("RFC 2217", "on" if tunnel.rfc2217 else "off"),
    ], 4)]
    access = gateway.state.access_stats.get(n)
    if access is not None and (access.refused_by_allow_list or access.tls_refused):
        lines += table_lines([
            ("Refused by the allow-list", str(access.refused_by_allow_list)),
            ("Refused TLS clients", str(access.tls_refused)),
            ("Last refused", access.last_refused),
        ], 4)
    connect = gateway.state.connect_stats.get(n)
    rows = [("State", _connect_state(gateway, n)), ("Connect", tunnel.connect_mode)]
    rows += [(f"Host {i}", host) for i, host in enumerate(tunnel.connect_hosts, 1)]
    if tunnel.connect_hosts:
        rows += [
            ("Host list", tunnel.connect_host_list),
            ("Retry wait", f"{tunnel.connect_backoff_min} s doubling up to {tunnel.connect_backoff_max} s"),
            ("Trusted CA (tls:)", tunnel.connect_tls_ca or "the system's trust store"),
            ("Client certificate", tunnel.connect_tls_certificate or "none"),
        ]
    if connect is not None and connect.last_error:
        rows.append(("Last failure", connect.last_error))
    if connect is not None and connect.tls_failures:
        rows.append(("Failed TLS handshakes", str(connect.tls_failures)))
    lines += ["  Connect mode", *table_lines(rows, 4)]
    lines += ["  Disconnect mode", *table_lines([
        ("Disconnect timeout", f"{tunnel.disconnect_timeout} s" if tunnel.disconnect_timeout else "never"),
    ], 4)]
    return lines


@SHOW.command("tunnel", "the M-Bus TCP/IP page: statistics, accept and disconnect mode", "[N]",
              complete=_tunnels)
def show_tunnel(session: Session, args: Arguments) -> Result:
    gateway = session.gateway
    return _pages(args, gateway.state.config.tunnels, "tunnel", lambda n: _tunnel_page(gateway, n))


# The console's rendering of a line: the view rows of `cmegw.stats` the web page renders too.
def _line_page(gateway: Any, n: int) -> list[str]:
    line = gateway.state.config.lines[n]
    stats = gateway.state.lines.get(n)
    lines = [f"Line {n}: {line.settings_text}"]
    if stats is None:
        lines.append("  not running")
    else:
        lines += ["  Statistics", *table_lines([
            ("State", _line_state(gateway, n)),
            *[(label, _count(value)) for label, value in line_rows(stats)],
            ("Reopen attempts", str(stats.reopen_attempts)),
        ], 4)]
        lines += ["  Adapter and timeouts", *table_lines(gateway.state.line_timing(n), 4)]
    lines += ["  Configuration", *table_lines([
        ("Device", "simulated M-Bus" if line.simulate else line.device),
        ("Baud rate", f"{line.baud_rate} (set line.{n}.baud_rate; applies at once)"),
        ("Extra timeout slack", f"{line.extra_slack:g} s (set line.{n}.extra_slack)"),
        ("Scan: tries again after silence", f"{line.scan_silent_retries} (set line.{n}.scan_silent_retries)"),
    ], 4)]
    return lines


@SHOW.command("line", "the M-Bus Serial page: statistics and baud rate", "[N]", complete=line_numbers)
def show_line(session: Session, args: Arguments) -> Result:
    gateway = session.gateway
    return _pages(args, gateway.state.config.lines, "line", lambda n: _line_page(gateway, n))


@SHOW.command("http", "the HTTP page: configuration and statistics")
def show_http(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    gateway = session.gateway
    current, after = gateway.state.config.http, _after_restart(gateway).http
    fields = [f.name for f in attrs.fields(type(current))]
    lines = ["HTTP configuration", *_two_columns(current, after, fields)]
    if gateway.overrides.http or gateway.overrides.https:
        lines.append("  The command line sets the listeners for this run: "
                     + ", ".join(x for x in (gateway.overrides.http, gateway.overrides.https) if x))
    state = web_state(gateway)
    lines += ["", "HTTP statistics"]
    if state is None:
        lines.append("  not available: the web administration is not running in this gateway")
        return "\n".join(lines)
    lines += table_lines((label, _http_counter(state.stats, name)) for label, name in HTTP_COUNTERS)
    log_ = state.access_log
    lines += ["", "HTTP log", *table_lines([("Entries", str(len(log_.entries))), ("Bytes", str(log_.bytes))])]
    listening = getattr(state, "listening", None)
    if listening:
        lines += ["", "Listening", *table_lines((k.upper(), str(v)) for k, v in listening.items())]
    return "\n".join(lines)


def _http_counter(stats: Any, name: str) -> str:
    """One of `HTTP_COUNTERS` in the words of the web's HTTP statistics."""
    value = getattr(stats, name)
    if name in HTTP_BYTE_COUNTERS:
        return byte_size_text(value) + (f" ({value} bytes)" if value >= 1000 else "")
    others = stats.other_answers() if name == "status_unknown" else ""
    return f"{value} ({others})" if others else str(value)


@SHOW.command("auth", "the authentication directives and their users (never a password)")
def show_auth(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    config: Config = session.gateway.store.config
    rows = [(d.uri, d.realm, d.auth_type, ", ".join(u.name for u in d.users) or "(none)") for d in config.auth]
    if not rows:
        return "Authentication: no directive; every page is open."
    return "\n".join(["Authentication directives (the longest matching URI decides)",
                      *columns(("URI", "realm", "AuthType", "users"), rows),
                      "", f"The console logs in with the users of {CONSOLE_URI}."])


@SHOW.command("log", "the HTTP access log", "[COUNT]")
def show_log(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 1, "[COUNT]")
    count = None
    if words:
        if not words[0].isdigit() or int(words[0]) < 1:
            raise args.error(words[0], "is not a count", "use a whole number of entries, 1 or more")
        count = int(words[0])
    state = web_state(session.gateway)
    if state is None:
        return "The HTTP access log is not available: the web administration is not running in this gateway."
    entries = [str(e) for e in state.access_log.entries]
    if count is not None:
        entries = entries[-count:]
    return "\n".join(entries) if entries else "The HTTP access log is empty."
