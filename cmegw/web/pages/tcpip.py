# -*- test-case-name: tests.test_web_pages_tcpip -*-
"""
The M-Bus TCP/IP pages: statistics, accept mode (with TLS, the allow-list and
RFC 2217), connect mode and disconnect mode of each tunnel.
"""

from __future__ import annotations

from typing import Any, Callable

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import ACCEPT_POLICIES, CONNECT_MODES, HOST_LIST_MODES, MAX_CONNECT_HOSTS
from cmegw.stats import TunnelStatistics, tunnel_rows
from cmegw.ops.graphs import graphs_panel
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.layout import live
from cmegw.web.pages.forms import (
    Field,
    FormState,
    applies_text,
    mark_restart,
    settings_form,
    settings_state,
    setting_field,
)
from cmegw.web.pages.ops import STYLE as GRAPHS_STYLE
from cmegw.web.pages.widgets import card, grid_table

TABS = (("Statistics", "/tcpip"), ("Accept mode", "/tcpip/accept"), ("Connect mode", "/tcpip/connect"),
        ("Disconnect mode", "/tcpip/disconnect"), ("TLS files", "/tcpip/tls"))


def accept_fields(n: int) -> list[Field]:
    return mark_restart([
        setting_field(f"tunnel.{n}.enabled", "checkbox"),
        setting_field(f"tunnel.{n}.listen",
                      help="tcp:10001 listens on every address, tcp:10001:interface=127.0.0.1 on one."),
        setting_field(f"tunnel.{n}.keepalive", "number",
                      help="A silent dead client is dropped after about this time; 0 turns keep-alive off."),
        setting_field(f"tunnel.{n}.on_busy", "select",
                      tuple((p, {"refuse": "refuse a second client (device)", "replace": "replace the first client"}
                             .get(p, p)) for p in ACCEPT_POLICIES)),
        setting_field(f"tunnel.{n}.allow_list", placeholder="anyone",
                      help="IPv4/IPv6 addresses and CIDR ranges, comma-separated (192.168.1.0/24, 2001:db8::/32); "
                           "empty = anyone. Others are closed at once and counted."),
        setting_field(f"tunnel.{n}.tls", "checkbox",
                      help="TLS 1.2/1.3 with the HTTPS certificate (HTTP page). Clients must speak TLS."),
        setting_field(f"tunnel.{n}.tls_client_ca", placeholder="no client certificate",
                      help="Absolute path of a PEM CA bundle (or upload one on the TLS files tab); with TLS on, "
                           "a client must show a certificate it issued."),
        setting_field(f"tunnel.{n}.rfc2217", "checkbox",
                      help="The tunnel speaks Telnet COM-PORT-OPTION: a client such as pyserial's rfc2217:// sets the "
                           "baud rate (saved as on M-Bus Serial). Off: bytes pass unchanged."),
    ])


def connect_fields(n: int) -> list[Field]:
    return mark_restart([
        setting_field(f"tunnel.{n}.connect_mode", "select",
                      tuple((m, {"disabled": "disabled", "always": "always (at start, and again when lost)",
                                 "on-data": "on data from the line"}.get(m, m)) for m in CONNECT_MODES)),
        setting_field(f"tunnel.{n}.connect_hosts", placeholder="tcp:host=headend.example:port=10001",
                      help=f"Up to {MAX_CONNECT_HOSTS}, comma-separated: tcp:host=NAME:port=N or tls:host=NAME:port=N "
                           "(optionally :timeout=SECONDS). They are Connect 1, 2, ... on the statistics."),
        setting_field(f"tunnel.{n}.connect_host_list", "select",
                      tuple((m, {"sequential": "sequential (the first that answers)",
                                 "round-robin": "round robin (the next each time)"}.get(m, m))
                            for m in HOST_LIST_MODES)),
        setting_field(f"tunnel.{n}.connect_backoff_min", "number",
                      help="When no host answered; doubled after each failed round, with jitter."),
        setting_field(f"tunnel.{n}.connect_backoff_max", "number"),
        setting_field(f"tunnel.{n}.connect_tls_ca", placeholder="the system's trust store",
                      help="Absolute path of a PEM file (or upload one on the TLS files tab); the head-end's "
                           "certificate must chain to it and name the host."),
        setting_field(f"tunnel.{n}.connect_tls_certificate", placeholder="none",
                      help="Absolute path of a PEM certificate for head-ends that ask for one; its key below. Or "
                           "upload both on the TLS files tab."),
        setting_field(f"tunnel.{n}.connect_tls_key", placeholder="none"),
    ])


def disconnect_fields(n: int) -> list[Field]:
    return [setting_field(f"tunnel.{n}.disconnect_timeout", "number",
                          help="The connection is closed after this many seconds without data either way; 0 = never.")]


def connect_hosts_shown(config: Any, stats: dict[int, TunnelStatistics]) -> int:
    """
    How many "Connect N connection time" rows to show: as many as the tunnels in
    connect mode have head-ends (and any that kept a time), none while connect mode is off.
    """
    shown = 0
    for n, tunnel in config.tunnels.items():
        if tunnel.connect_mode == "disabled":
            continue
        hosts = [h for h in tunnel.connect_hosts if h.strip()]
        times = stats[n].connect_times if n in stats else []
        used = max((i for i, t in enumerate(times, 1) if t), default=0)
        shown = max(shown, len(hosts), used, 1)
    return shown


def statistics_content(admin: Admin) -> Tag:
    stats = admin.gateway.state.tunnel_stats
    numbers = list(admin.gateway.state.config.tunnels)
    now = admin.clock.seconds()
    header = ["Counter"] + [f"Tunnel {n}" for n in numbers]
    rows: list[list[Any]] = []
    per_tunnel = {n: dict(tunnel_rows(stats[n], now)) for n in numbers if n in stats}
    hosts = connect_hosts_shown(admin.gateway.state.config, stats)
    labels = [label for label, _ in tunnel_rows(TunnelStatistics(), now)]
    connect_labels = [label for label in labels if label.startswith("Connect ")]
    for label in [label for label in labels if not label.startswith("Connect ")] + connect_labels[:hosts]:
        rows.append([label] + [per_tunnel[n].get(label, "—") if n in per_tunnel else "—" for n in numbers])
    rows.append(["State"] + [(stats[n].state + (f" ({stats[n].peer})" if stats[n].peer else ""))
                             if n in stats else "stopped" for n in numbers])
    rows.append(["Listening on"] + [stats[n].listening or "—" if n in stats else "—" for n in numbers])
    connect = admin.gateway.state.connect_stats
    rows.append(["Connect mode"] + [connect[n].text(now) if n in connect else "—" for n in numbers])
    rows.append(["Last connect failure"] + [connect[n].last_error or "—" if n in connect else "—"
                                            for n in numbers])
    published = admin.gateway.state.access_stats
    access = {n: published.get(n) for n in numbers}
    rows.append(["Refused by the allow-list"] + [access[n].refused_by_allow_list if access[n] else "—"
                                                 for n in numbers])
    rows.append(["Refused TLS clients (accept mode)"] + [access[n].tls_refused if access[n] else "—"
                                                         for n in numbers])
    rows.append(["Failed TLS handshakes (connect mode)"] + [connect[n].tls_failures if n in connect else "—"
                                                            for n in numbers])
    rows.append(["Last refused client"] + [access[n].last_refused or "—" if access[n] else "—" for n in numbers])
    return card("Statistics", grid_table(header, rows), wide=True, id="tcpip-statistics")


def forms_content(admin: Admin, request: IRequest, action: str, fields_of: Callable[[int], list[Field]],
                  states: dict[int, FormState], intro: str) -> Tag:
    forms = []
    for n in admin.gateway.store.config.tunnels:
        fields = fields_of(n)
        state = states.get(n) or settings_state(admin, fields)
        forms.append(card(f"Tunnel {n} (line {n})", settings_form(
            admin, request, action, str(n), fields, state, intro=intro, applies=applies_text(fields)),
            id=f"tunnel-{n}"))
    if not forms:
        forms.append(card("No tunnels", tags.p("No tunnel is configured.")))
    return tags.div(*forms, class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin, "tcpip", "M-Bus TCP/IP", TABS)
    page = route.page

    @route.get("/tcpip")
    def tcpip_statistics(request: IRequest) -> Any:
        last_hour = live(card("Last hour", graphs_panel(admin.gateway.state, lines=False), wide=True,
                              id="tcpip-graphs"))
        return page(request, tags.div(live(statistics_content(admin)), last_hour, class_="cards"), head=GRAPHS_STYLE)

    kinds = {
        "accept": (accept_fields, "Accept mode: the gateway listens and one client at a time gets the line."),
        "connect": (connect_fields, "Connect mode: the gateway dials a head-end. One peer holds the line at a "
                                    "time: an accept-mode client and the connect-mode peer refuse each other."),
        "disconnect": (disconnect_fields, "Disconnect mode: an idle connection is closed."),
    }
    for kind, (fields_of, intro) in kinds.items():
        action = f"/tcpip/{kind}"

        def content(admin: Admin, request: IRequest, states: Any, fields_of: Any = fields_of, intro: str = intro,
                    action: str = action) -> Any:
            return forms_content(admin, request, action, fields_of, states, intro)

        route.numbered_settings(action, f"tcpip_{kind}", lambda: admin.gateway.store.config.tunnels, fields_of,
                                content, anchor="tunnel-")
