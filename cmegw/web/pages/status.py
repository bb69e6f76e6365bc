# -*- test-case-name: tests.test_web_pages_status -*-
"""
The Status page: identity, uptime, whether the configuration is saved, the
host's network, the lines, the tunnels and the four indications.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

import cmegw
from cmegw.stats import TUNNEL_CONNECTED, format_duration
from cmegw.ops.graphs import graphs_panel
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.layout import live, reload_without_script
from cmegw.web.pages.ops import STYLE as GRAPHS_STYLE
from cmegw.web.pages.widgets import card, kv_table

#: Without JavaScript the Status page reloads itself this often (seconds); with it, its parts update live.
NO_SCRIPT_REFRESH = 30

#: The device's LEDs and what each means when lit.
INDICATIONS = (
    ("PWR", "green", "running"),
    ("ERR", "red", "M-Bus line error"),
    ("LINK", "yellow", "a tunnel client is connected"),
    ("ACT", "yellow", "traffic on the M-Bus"),
)


@functools.cache
def build_date() -> str:
    """
    When the running software was built: the date of its installed package files,
    read once (a software update replaces those files while this code still runs;
    the running code's date does not change until the restart).
    """
    try:
        stamp = Path(cmegw.__file__).stat().st_mtime
    except OSError:
        return "unknown"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d")


def tunnel_state_text(stats: Any) -> str:
    if stats.state == TUNNEL_CONNECTED:
        return f"connected to {stats.peer}" if stats.peer else "connected"
    if stats.error and stats.state != "waiting":
        return f"{stats.state} ({stats.error})"
    return stats.state


def indication_lights(indications: dict[str, bool]) -> Tag:
    return tags.ul(*[
        tags.li(tags.span("", class_=f"led led-{colour}{' on' if indications.get(name) else ''}",
                          **{"aria-hidden": "true"}),
                tags.strong(name), tags.span("on" if indications.get(name) else "off", class_="led-state"),
                tags.small(meaning), class_="indication",
                title=f"{name}: {'on' if indications.get(name) else 'off'} ({meaning})")
        for name, colour, meaning in INDICATIONS], class_="indications")


def status_content(admin: Admin) -> Tag:
    gateway = admin.gateway
    running = gateway.state.config
    identity = running.identity
    store = gateway.store
    host = admin.host_network()
    saved = "no: the running configuration differs from the file" if store.unsaved else "yes"
    pending = gateway.state.pending_restart()
    device = card("Device", kv_table([
        ("Product type", identity.product_type),
        ("Software version", cmegw.__version__),
        ("Build date", build_date()),
        ("Serial number", identity.serial_number or "—"),
        ("Uptime", tags.span(format_duration(gateway.state.uptime()), id="uptime")),
        ("Configuration saved permanently", saved),
        ("Waiting for a restart", ", ".join(pending) if pending else "nothing"),
    ]))
    lights = card("Indications", indication_lights(gateway.state.indications()))
    address = f"{host.address} / {host.netmask}" if host.address else "none"
    network = card("Network (this host)", kv_table([
        ("Interface", f"{host.interface or '—'}" + (f" ({host.operstate})" if host.operstate else "")),
        ("Link", host.link_text),
        ("MAC address", host.mac or "—"),
        ("Host name", host.hostname or "—"),
        ("IP address / mask", address),
        ("Address source", host.address_source or "—"),
        ("Default gateway", host.gateway or "—"),
        ("Domain", host.domain or "—"),
        ("Primary DNS", host.primary_dns or "—"),
        ("Secondary DNS", host.secondary_dns or "—"),
    ]), tags.p("Live from the host's kernel. ", tags.a("Network settings", href="/network"), class_="muted"))
    line_rows = []
    for n, line in running.lines.items():
        stats = gateway.state.lines.get(n)
        state = stats.state if stats is not None else "stopped"
        device_path = stats.device if stats is not None and stats.device else line.device
        line_rows.append((f"Line {n}", tags.span(
            tags.code(line.settings_text), " ", tags.span(state, class_=f"pill pill-{state}"),
            tags.br(), tags.small(device_path + (" (simulated)" if line.simulate else ""), class_="muted"),
            tags.small(f" {stats.error}", class_="muted") if stats is not None and stats.error else "")))
    lines = card("M-Bus lines", kv_table(line_rows))
    tunnel_rows = []
    for n, tunnel in running.tunnels.items():
        stats = gateway.state.tunnel_stats.get(n)
        if not tunnel.enabled:
            accept = "disabled"
        elif stats is None:
            accept = "stopped"
        else:
            accept = tunnel_state_text(stats)
        where = stats.listening if stats is not None and stats.listening else tunnel.listen
        tunnel_rows.append((f"Tunnel {n} accept mode", tags.span(
            tags.span(accept, class_="pill pill-" + accept.split()[0]), " ", tags.small(where, class_="muted"))))
        connect = gateway.state.connect_stats.get(n)
        connect_text = connect.text(admin.clock.seconds()) if connect is not None else "disabled"
        tunnel_rows.append((f"Tunnel {n} connect mode", tags.span(
            tags.span(connect_text, class_="pill pill-" + connect_text.split()[0]),
            " ", tags.small(connect.last_error, class_="muted") if connect is not None and connect.last_error
            and connect.state != "connected" else "")))
    tunnels = card("M-Bus TCP/IP", kv_table(tunnel_rows))
    return live(tags.div(device, lights, network, lines, tunnels, class_="cards", id="status-live"))


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin)
    @route.get("/")
    def status_root(request: IRequest) -> Any:
        request.redirect(b"/status")
        return b""

    @route.get("/status")
    def status_page(request: IRequest) -> Any:
        refresh = reload_without_script(request, NO_SCRIPT_REFRESH)
        last_hour = live(card("Last hour", graphs_panel(admin.gateway.state),
                              tags.p(tags.a("All graphs", href="/graphs")), wide=True, id="status-graphs"))
        return admin.page(request, section="status", title="Status",
                          content=tags.div(status_content(admin), last_hour, class_="cards"),
                          head=tags.transparent(refresh, GRAPHS_STYLE))
