# -*- test-case-name: tests.test_web_pages_network -*-
"""
The Network pages: interface status (current and after restart), interface
configuration and link.

The host's operating system owns its network: "current" is what the kernel
says now, "after restart" the configured values, which are stored and never
applied to the host unless an operator enables a backend for it.
"""

from __future__ import annotations

import time
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

from cmegw.config.model import LINK_DUPLEXES, LINK_SPEEDS, NETWORK_BACKENDS
from cmegw.config.settings import describe
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.forms import (
    FormState,
    applies_text,
    mark_restart,
    post_form,
    settings_form,
    settings_state,
    setting_field,
)
from cmegw.web.pages.widgets import Notice, button, card, grid_table, kv_table

TABS = (("Interface status", "/network"), ("Interface configuration", "/network/interface"),
        ("Link", "/network/link"))

INTERFACE_FIELDS = mark_restart([
    setting_field("network.bootp", "checkbox"),
    setting_field("network.dhcp", "checkbox",
                  help="With BOOTP or DHCP on, the address, gateway, host name and domain below are ignored; "
                       "with both on, DHCP runs."),
    setting_field("network.ip_address",
                  help="Alone (mask of its class), in CIDR form 192.168.1.1/24, or with a mask: "
                       "192.168.1.1 255.255.255.0."),
    setting_field("network.gateway"),
    setting_field("network.hostname",
                  help="Starts with a letter; letters, digits and hyphens; ends with a letter or digit."),
    setting_field("network.domain"),
    setting_field("network.dhcp_client_id", help="Text, or binary written as hex digits."),
    setting_field("network.primary_dns"),
    setting_field("network.secondary_dns"),
    setting_field("network.apply_to_host", "checkbox",
                  help="Off (the default): the host's own network configuration is never touched. On: at every "
                       "start the settings are written for the backend below and the interface is reconfigured."),
    setting_field("network.interface", placeholder="the interface of the default route"),
    setting_field("network.backend", "select", tuple((b, b) for b in NETWORK_BACKENDS),
                  help="systemd-networkd or NetworkManager, whichever manages this host's network."),
])

LINK_FIELDS = mark_restart([
    setting_field("network.link_speed", "select",
                  tuple((s, "auto-negotiate" if s == "auto" else f"{s} Mbit/s") for s in LINK_SPEEDS)),
    setting_field("network.link_duplex", "select",
                  tuple((d, "auto-negotiate" if d == "auto" else f"{d} duplex") for d in LINK_DUPLEXES)),
])

#: The mask is part of the IP address field, as on the device.
ALIASES = {"network.netmask": "network.ip_address"}


def on_off(value: bool) -> str:
    return "on" if value else "off"


def interface_state(admin: Admin) -> FormState:
    state = settings_state(admin, INTERFACE_FIELDS)
    net = admin.gateway.store.config.network
    if net.ip_address and net.netmask:
        state.values["network.ip_address"] = f"{net.ip_address} {net.netmask}"
    running = admin.gateway.state.config.network
    if "network.ip_address" in state.running or running.netmask != net.netmask:
        state.running["network.ip_address"] = f"{running.ip_address} {running.netmask}".strip()
    return state


def prepare_interface(typed: dict[str, str]) -> dict[str, Any]:
    """The mask comes from the address field: clear it first so the field alone decides."""
    return {"network.netmask": "", **typed}


def host_result(result: Any) -> Tag:
    """What the host network backend last did (`cmegw.host.apply.HostNetworkResult`), with its commands."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.at))
    details = result.details()
    return tags.div(tags.p(tags.strong(f"Last {result.action} ({when}): "), result.message),
                    tags.pre("\n".join(details), class_="log") if details else "")


def host_note(admin: Admin) -> Tag:
    net = admin.gateway.state.config.network
    if net.apply_to_host:
        last = admin.gateway.state.host_network
        return tags.div(tags.p(f"Applying these values to the host is switched on (network.apply_to_host): "
                               f"backend {net.backend}, interface {net.interface or 'of the default route'}; "
                               "they are applied at every restart.", class_="muted"),
                        host_result(last) if last is not None else tags.p("Not applied yet.", class_="muted"))
    else:
        text = ("This host's operating system owns its network: the values below are stored with the "
                "gateway's configuration and are not applied to the host.")
    return tags.p(text, class_="muted")


def renew_code(net: Any, result: Any) -> int:
    """200 renewed; 409 nothing to renew (backend or DHCP off); 502 the host's network service failed."""
    if result.ok:
        return 200
    return 409 if not (net.apply_to_host and net.dhcp) else 502


def status_content(admin: Admin, request: IRequest | None = None) -> Tag:
    host = admin.host_network()
    saved = admin.gateway.store.config.network
    running = admin.gateway.state.config.network

    def configured(value: str) -> Any:
        if not saved.static:
            return tags.span(value or "—", " ", tags.small("(ignored: DHCP/BOOTP on)", class_="muted"))
        return value or "—"

    dhcp_now = on_off(running.dhcp)
    if host.address_source == "DHCP":
        dhcp_now += " (the host's address has a lease)"
    def label(field: str) -> str:
        return describe(f"network.{field}").label

    rows = [
        (label("bootp"), on_off(running.bootp), on_off(saved.bootp)),
        (label("dhcp"), dhcp_now, on_off(saved.dhcp)),
        (label("ip_address"), host.address or "—", configured(saved.ip_address)),
        # The device's Interface status says "Network mask" (the model's label is "Netmask").
        ("Network mask", host.netmask or "—", configured(saved.netmask)),
        (label("gateway"), host.gateway or "—", configured(saved.gateway)),
        (label("hostname"), host.hostname or "—", configured(saved.hostname)),
        (label("domain"), host.domain or "—", configured(saved.domain)),
        ("DNS suffix search list", " ".join(host.search) or "—", saved.domain or "—"),
        (label("primary_dns"), host.primary_dns or "—", saved.primary_dns or ("from DHCP" if saved.dhcp else "—")),
        (label("secondary_dns"), host.secondary_dns or "—",
         saved.secondary_dns or ("from DHCP" if saved.dhcp else "—")),
        (label("dhcp_client_id"), running.dhcp_client_id or "—", saved.dhcp_client_id or "—"),
    ]
    table = grid_table(["Setting", "Current", "After restart"], rows, numeric=False)
    if running.apply_to_host and running.dhcp and request is not None:
        renew: Tag = post_form(admin, request, "/network/renew", button("Renew DHCP lease", "secondary"))
    else:
        renew = tags.p("DHCP renew: the host's DHCP client renews its own lease (",
                       tags.code(host.interface or "the interface"), ").", class_="muted")
    return tags.div(card(f"Interface {host.interface or ''}".strip(), table, host_note(admin), renew, wide=True),
                    class_="cards")


def interface_content(admin: Admin, request: IRequest, state: FormState | None = None) -> Tag:
    state = state or interface_state(admin)
    return tags.div(card("Interface configuration", host_note(admin), settings_form(
        admin, request, "/network/interface", "interface", INTERFACE_FIELDS, state,
        applies=applies_text(INTERFACE_FIELDS)), wide=True), class_="cards")


def link_content(admin: Admin, request: IRequest, state: FormState | None = None) -> Tag:
    host = admin.host_network()
    status = card("Link status", kv_table([
        ("Interface", host.interface or "—"),
        ("State", host.operstate or "unknown"),
        ("Speed", f"{host.speed} Mbit/s" if host.speed else "unknown"),
        ("Duplex", host.duplex or "unknown"),
        ("MAC address", host.mac or "—"),
    ]))
    state = state or settings_state(admin, LINK_FIELDS)
    config = card("Link configuration", host_note(admin), settings_form(
        admin, request, "/network/link", "link", LINK_FIELDS, state, applies=applies_text(LINK_FIELDS)))
    return tags.div(status, config, class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin, "network", "Network", TABS)
    page = route.page

    @route.get("/network")
    def network_status(request: IRequest) -> Any:
        return page(request, status_content(admin, request))

    @route.post("/network/renew")
    def network_renew(request: IRequest) -> Any:
        net = admin.gateway.state.config.network
        d = admin.gateway.renew_dhcp(net)

        def done(result: Any) -> Any:
            if result.ok:
                return admin.see_other(request, "/network", Notice("ok", result.message))
            return page(request, status_content(admin, request), code=renew_code(net, result),
                        notice=Notice("error", result.message))

        return d.addCallback(done)

    route.settings("/network/interface", "network_interface", INTERFACE_FIELDS, interface_content,
                   prepare=prepare_interface, aliases=ALIASES, saved_state=lambda: interface_state(admin))
    route.settings("/network/link", "network_link", LINK_FIELDS, link_content)
