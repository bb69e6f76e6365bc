# -*- test-case-name: tests.test_host_networkd -*-
"""
systemd-networkd: writes ``/etc/systemd/network/10-cmegw-IFACE.network``
atomically, then runs ``networkctl reload`` and, when the file changed,
``networkctl reconfigure IFACE``.  Link speed and duplex go through
``ethtool -s``: a ``.link`` file would replace the distribution's
``99-default.link`` for that interface (losing its naming and MAC policy) and
is only read when udev sees the device appear, so it would not take effect at
a gateway restart.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cmegw.config.model import NetworkConfig
from cmegw.config.store import atomic_write
from cmegw.host.commands import CommandRunner, Refused, Steps
from cmegw.host.settings import dns_servers, static_address, wants_bootp

log = Logger(namespace="cmegw.netapply")

NETWORKD_DIRECTORY = Path("/etc/systemd/network")
#: The first systemd whose networkd DHCP client speaks BOOTP (``[DHCPv4] BOOTP=``, systemd PR 34888).
NETWORKD_BOOTP_VERSION = 257
#: Most directory entries looked at when removing files of an interface no longer configured.
MAX_STALE_SCAN = 1000


def networkd_network(net: NetworkConfig, interface: str, bootp: bool = False) -> str:
    """
    The ``.network`` file for `interface`.  DHCP (or BOOTP) with an IPv4
    link-local fallback, the device's AutoIP; or the static address,
    gateway, DNS and domain.  `bootp` says the host's networkd can do BOOTP.
    """
    if net.dhcp and net.dhcp_client_id:
        raise Refused(
            f"not applied: systemd-networkd cannot send the DHCP client ID {net.dhcp_client_id!r} (its "
            "ClientIdentifier= takes only mac or duid). Clear network.dhcp_client_id to send the MAC address, "
            "or choose network.backend = \"networkmanager\", which sends it as configured")
    if wants_bootp(net) and not bootp:
        raise Refused(
            "not applied: this host's systemd-networkd cannot do BOOTP (its DHCP client learned BOOTP in "
            f"systemd {NETWORKD_BOOTP_VERSION}); turn DHCP on, or configure a static address")
    lines = ["# Written by cmegw from its Network settings (network.apply_to_host on); rewritten at every",
             "# start of the gateway.  To give this interface back to the host, turn network.apply_to_host",
             "# off and delete this file.",
             "", "[Match]", f"Name={interface}", "", "[Network]"]
    dhcpv4: list[str] = []
    if not net.static:
        # LinkLocalAddressing=yes: 169.254.x.x when no lease comes (AutoIP), and IPv6 link-local as by default.
        lines += ["DHCP=ipv4", "LinkLocalAddressing=yes"]
        dhcpv4.append("ClientIdentifier=mac")
        if wants_bootp(net):
            dhcpv4.append("BOOTP=yes")
        if net.hostname:
            dhcpv4 += ["SendHostname=yes", f"Hostname={net.hostname.lower()}"]
    else:
        address = static_address(net)
        if address:
            lines.append(f"Address={address}")
        else:
            lines.append("LinkLocalAddressing=yes")  # no address configured: AutoIP picks one
        if net.gateway:
            lines.append(f"Gateway={net.gateway}")
        if net.domain:
            lines.append(f"Domains={net.domain}")
    lines += [f"DNS={a}" for a in dns_servers(net)]
    if net.static and net.hostname:
        lines.append(f"# Host name {net.hostname}: networkd does not set host names; the host keeps its own.")
    if dhcpv4:
        lines += ["", "[DHCPv4]", *dhcpv4]
    return "\n".join(lines) + "\n"


def ethtool_arguments(net: NetworkConfig, interface: str) -> list[str] | None:
    """``ethtool -s`` arguments for a forced speed/duplex; None when both auto-negotiate."""
    speed, duplex = net.link_speed, net.link_duplex
    if speed == "auto" and duplex == "auto":
        return None
    args = ["ethtool", "-s", interface]
    if speed != "auto":
        args += ["speed", speed]
    if duplex != "auto":
        args += ["duplex", duplex]
    # Both forced: no negotiation.  One forced: negotiate, advertising only the matching modes.
    args += ["autoneg", "off" if speed != "auto" and duplex != "auto" else "on"]
    return args


class NetworkdBackend:
    """systemd-networkd: a ``.network`` file, ``networkctl``, and ``ethtool`` for the link."""

    name = "networkd"

    def __init__(self, runner: CommandRunner, directory: Path = NETWORKD_DIRECTORY) -> None:
        self.runner = runner
        self.directory = Path(directory)

    def path(self, interface: str) -> Path:
        return self.directory / f"10-cmegw-{interface}.network"

    @defer.inlineCallbacks
    def apply(self, net: NetworkConfig, interface: str, steps: Steps, files: list[str]) -> Any:
        bootp = False
        if wants_bootp(net):
            version = yield self.runner.run(["networkctl", "--version"])
            steps.runs.append(version)
            found = re.search(r"systemd (\d+)", version.output)
            bootp = bool(found) and int(found.group(1)) >= NETWORKD_BOOTP_VERSION
        text = networkd_network(net, interface, bootp)
        path = self.path(interface)
        previous = self._read(path)
        changed = previous != text
        if changed:
            self._write(path, text)
            files.append(str(path))
        try:
            yield steps.run(["networkctl", "reload"], "loading the network file into systemd-networkd")
        except Refused as e:
            if changed:
                self._put_back(path, previous)
            raise Refused(f"not applied: {e}" + (f"; {path} was put back as it was" if changed else "")) from None
        self._remove_stale(path, files)
        if changed:
            yield steps.run(["networkctl", "reconfigure", interface], f"reconfiguring {interface}")
        done = (f"applied to {interface} by systemd-networkd" if changed else
                f"{interface} already had these settings (file unchanged; systemd-networkd reloaded)")
        try:
            yield self._link(net, interface, steps)
        except Refused as e:
            raise Refused(f"{done}, but {e}") from None
        return done

    def _read(self, path: Path) -> str | None:
        try:
            return path.read_text("utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise Refused(f"not applied: {path} cannot be read ({e.strerror})") from None

    def _put_back(self, path: Path, previous: str | None) -> None:
        try:
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, previous)
        except OSError as e:
            log.warn("Cannot put {path} back: {e}", path=str(path), e=e)

    def _write(self, path: Path, text: str) -> None:
        if not self.directory.is_dir():
            raise Refused(f"not applied: {self.directory} does not exist; is systemd-networkd installed? "
                          "(choose network.backend = \"networkmanager\" if the host uses NetworkManager)")
        try:
            atomic_write(path, text)
            os.chmod(path, 0o644)
        except PermissionError:
            raise Refused(f"not applied: no permission to write {path}; the gateway must run as root or be "
                          f"given write access to {self.directory}") from None
        except OSError as e:
            raise Refused(f"not applied: {path} cannot be written ({e.strerror})") from None

    def _remove_stale(self, keep: Path, files: list[str]) -> None:
        """Files this backend wrote for an interface no longer configured would still claim it: remove them."""
        try:
            names = sorted(os.listdir(self.directory))[:MAX_STALE_SCAN]
        except OSError:
            return
        for name in names:
            if name.startswith("10-cmegw-") and name.endswith(".network") and name != keep.name:
                try:
                    (self.directory / name).unlink()
                    files.append(f"{self.directory / name} (removed: another interface is configured now)")
                except OSError as e:
                    log.warn("Cannot remove {name}: {e}", name=name, e=e)

    @defer.inlineCallbacks
    def _link(self, net: NetworkConfig, interface: str, steps: Steps) -> Any:
        args = ethtool_arguments(net, interface)
        if args is not None:
            yield steps.run(args, f"setting the link of {interface} to {net.link_speed}/{net.link_duplex}")
            return
        if shutil.which("ethtool", path=os.environ.get("PATH", os.defpath)) is None:
            return  # auto-negotiation wanted and no ethtool to have forced anything
        query = yield self.runner.run(["ethtool", interface])
        steps.runs.append(query)
        if re.search(r"^\s*Auto-negotiation:\s*off", query.output, re.MULTILINE):
            yield steps.run(["ethtool", "-s", interface, "autoneg", "on"],
                            f"returning the link of {interface} to auto-negotiation")

    @defer.inlineCallbacks
    def renew(self, net: NetworkConfig, interface: str, steps: Steps) -> Any:
        yield steps.run(["networkctl", "renew", interface], f"renewing the DHCP lease of {interface}")
        return f"systemd-networkd renewed the DHCP lease of {interface}"
