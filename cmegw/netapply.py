# -*- test-case-name: tests.test_netapply -*-
"""
The opt-in backend that applies the stored Network settings to the host.

The host's operating system owns its network.  Only when the operator turns
``network.apply_to_host`` on does the gateway, at every (re)start, hand the
settings to one of two backends:

- ``networkd``: writes ``/etc/systemd/network/10-cmegw-IFACE.network``
  atomically, then runs ``networkctl reload`` and, when the file changed,
  ``networkctl reconfigure IFACE``.  Link speed and duplex go through
  ``ethtool -s``: a ``.link`` file would replace the distribution's
  ``99-default.link`` for that interface (losing its naming and MAC policy)
  and is only read when udev sees the device appear, so it would not take
  effect at a gateway restart.
- ``networkmanager``: a connection ``cmegw-IFACE`` made with
  ``nmcli connection add`` if missing, set with ``nmcli connection modify``
  and activated with ``nmcli connection up``.

Commands run as child processes through the reactor (never blocking it),
each with a time limit.  What happened last is kept as a `HostNetworkResult`
that the Network pages, the JSON API and the console show.  A failure is
told in words and never raises, and nothing here touches the configuration.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from cmegw.config.model import NetworkConfig
from cmegw.config.store import atomic_write

log = Logger(namespace="cmegw.netapply")

NETWORKD_DIRECTORY = Path("/etc/systemd/network")
#: Seconds a command may run before it is killed (networkctl waits on D-Bus and polkit).
COMMAND_TIMEOUT = 30.0
#: Bytes of a command's output kept (stdout and stderr together).
OUTPUT_LIMIT = 16 * 1024
#: The first systemd whose networkd DHCP client speaks BOOTP (``[DHCPv4] BOOTP=``, systemd PR 34888).
NETWORKD_BOOTP_VERSION = 257
#: Most directory entries looked at when removing files of an interface no longer configured.
MAX_STALE_SCAN = 1000

_DENIED = ("access denied", "permission denied", "operation not permitted", "not authorized",
           "insufficient privileges", "interactive authentication required")


class Refused(Exception):
    """The settings cannot be applied this way; the message says why in an installer's words."""


@attrs.frozen
class CommandRun:
    """One command that was run (or could not be): its arguments, exit status and output."""

    argv: tuple[str, ...]
    #: The exit status; None when it did not run or ended by a signal.
    status: int | None
    output: str = ""
    #: Why it did not end normally ("not installed", "killed after 30 s"), else "".
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        return " ".join(self.argv)

    def outcome(self) -> str:
        if self.problem:
            return self.problem
        return f"exit status {self.status}"


@attrs.frozen
class HostNetworkResult:
    """What the backend last did: one sentence, then the files written and the commands run."""

    action: str
    ok: bool
    message: str
    backend: str = ""
    interface: str = ""
    files: tuple[str, ...] = ()
    commands: tuple[CommandRun, ...] = ()
    #: When it started (the reactor's seconds).
    at: float = 0.0

    def details(self) -> list[str]:
        """The files written and every command with its outcome and output, as lines of text."""
        lines = [f"wrote {path}" for path in self.files]
        for run in self.commands:
            lines.append(f"$ {run.text}: {run.outcome()}")
            lines.extend("    " + line for line in run.output.splitlines()[:20])
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "ok": self.ok, "message": self.message, "backend": self.backend,
                "interface": self.interface, "at": self.at, "files": list(self.files),
                "commands": [{"argv": list(r.argv), "status": r.status, "output": r.output, "problem": r.problem}
                             for r in self.commands]}


# -- running commands ---------------------------------------------------------------------------


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done: defer.Deferred) -> None:
        self.done = done
        self.output = bytearray()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        room = OUTPUT_LIMIT - len(self.output)
        if room > 0:
            self.output += data[:room]

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.done.callback((reason.value, self.output.decode("utf-8", "replace")))


class CommandRunner:
    """Runs a command found on PATH as a child process of the reactor, with a time limit."""

    def __init__(self, reactor: Any, timeout: float = COMMAND_TIMEOUT) -> None:
        self.reactor = reactor
        self.timeout = timeout

    @defer.inlineCallbacks
    def run(self, argv: Sequence[str]) -> Any:
        argv = tuple(argv)
        env = dict(os.environ, LC_ALL="C")
        path = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if path is None:
            return CommandRun(argv, None, problem=f"{argv[0]} is not installed on this host (not found on PATH)")
        done: defer.Deferred = defer.Deferred()
        collect = _Collect(done)
        try:
            process = self.reactor.spawnProcess(collect, path, list(argv), env=env)
        except OSError as e:
            return CommandRun(argv, None, problem=f"{argv[0]} could not be started: {e.strerror or e}")
        timer = self.reactor.callLater(self.timeout, _kill, process)
        ended, output = yield done
        if timer.active():
            timer.cancel()
            problem = ""
        else:
            problem = f"killed after {self.timeout:g} seconds without finishing"
        status = getattr(ended, "exitCode", None)
        if status is None and not problem:
            problem = f"ended by signal {getattr(ended, 'signal', '?')}"
        return CommandRun(argv, status, output.strip(), problem)


def _kill(process: Any) -> None:
    """SIGKILL, and close our ends of its pipes: a child it left behind must not keep the run waiting."""
    try:
        process.signalProcess("KILL")
    except error.ProcessExitedAlready:
        pass
    process.loseConnection()


def explain(run: CommandRun, purpose: str) -> str:
    """Why a command failed, for an installer: missing, refused for lack of permission, or its own words."""
    if run.status is None:
        return f"{purpose} did not happen: {run.problem}"
    low = run.output.lower()
    first = run.output.splitlines()[0] if run.output else "no message"
    if any(word in low for word in _DENIED):
        return (f"{purpose} was refused: the gateway lacks the permission ({run.text}: {first}); run it as "
                "root, or give its user CAP_NET_ADMIN and a polkit rule for the network service")
    return f"{purpose} failed: {run.text} ended with exit status {run.status} ({first})"


# -- what the settings become --------------------------------------------------------------------


def prefix_length(netmask: str) -> int:
    return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen


def _static_address(net: NetworkConfig) -> str:
    """``ip/prefix``; without a mask the device's rule applies (the mask of the address's class)."""
    if not net.ip_address:
        return ""
    if net.netmask:
        return f"{net.ip_address}/{prefix_length(net.netmask)}"
    from cmegw.config.model import parse_address_and_mask

    ip, mask = parse_address_and_mask("network.ip_address", net.ip_address)
    return f"{ip}/{prefix_length(mask)}"


def _dns(net: NetworkConfig) -> list[str]:
    return [a for a in (net.primary_dns, net.secondary_dns) if a]


def wants_bootp(net: NetworkConfig) -> bool:
    """BOOTP runs only when it is on and DHCP is off (with both on, DHCP runs)."""
    return net.bootp and not net.dhcp


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
        address = _static_address(net)
        if address:
            lines.append(f"Address={address}")
        else:
            lines.append("LinkLocalAddressing=yes")  # no address configured: AutoIP picks one
        if net.gateway:
            lines.append(f"Gateway={net.gateway}")
        if net.domain:
            lines.append(f"Domains={net.domain}")
    lines += [f"DNS={a}" for a in _dns(net)]
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


def nm_client_id(value: str) -> str:
    """The device's binary client ID (hex digits) as nmcli's ``aa:bb`` bytes; text as it is."""
    if len(value) >= 2 and len(value) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", value):
        return ":".join(value[i:i + 2].lower() for i in range(0, len(value), 2))
    return value


def nm_connection_name(interface: str) -> str:
    return f"cmegw-{interface}"


def nmcli_properties(net: NetworkConfig) -> list[str]:
    """The ``nmcli connection modify`` properties and values for the settings."""
    if wants_bootp(net):
        raise Refused("not applied: NetworkManager has no BOOTP client; turn DHCP on, or configure a "
                      "static address")
    dns = ",".join(_dns(net))
    props = ["connection.autoconnect", "yes", "connection.autoconnect-priority", "100"]
    if not net.static:
        props += ["ipv4.method", "auto", "ipv4.addresses", "", "ipv4.gateway", "",
                  "ipv4.dhcp-client-id", nm_client_id(net.dhcp_client_id),
                  "ipv4.dhcp-send-hostname", "yes", "ipv4.dhcp-hostname", net.hostname,
                  "ipv4.dns-search", ""]
    else:
        address = _static_address(net)
        props += ["ipv4.method", "manual" if address else "link-local", "ipv4.addresses", address,
                  "ipv4.gateway", net.gateway if address else "", "ipv4.dns-search", net.domain]
    props += ["ipv4.dns", dns]
    speed, duplex = net.link_speed, net.link_duplex
    if (speed == "auto") != (duplex == "auto"):
        raise Refused("not applied: NetworkManager sets link speed and duplex together; choose both, or "
                      "auto-negotiate both")
    if speed == "auto":
        props += ["802-3-ethernet.auto-negotiation", "yes", "802-3-ethernet.speed", "0",
                  "802-3-ethernet.duplex", ""]
    else:
        props += ["802-3-ethernet.auto-negotiation", "no", "802-3-ethernet.speed", speed,
                  "802-3-ethernet.duplex", duplex]
    return props


# -- the backends -------------------------------------------------------------------------------


class _Steps:
    """The commands of one apply or renew, run one after another; the first failure is the answer."""

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner
        self.runs: list[CommandRun] = []

    @defer.inlineCallbacks
    def run(self, argv: Sequence[str], purpose: str) -> Any:
        result = yield self.runner.run(argv)
        self.runs.append(result)
        if not result.ok:
            raise Refused(explain(result, purpose))
        return result


class NetworkdBackend:
    """systemd-networkd: a ``.network`` file, ``networkctl``, and ``ethtool`` for the link."""

    name = "networkd"

    def __init__(self, runner: CommandRunner, directory: Path = NETWORKD_DIRECTORY) -> None:
        self.runner = runner
        self.directory = Path(directory)

    def path(self, interface: str) -> Path:
        return self.directory / f"10-cmegw-{interface}.network"

    @defer.inlineCallbacks
    def apply(self, net: NetworkConfig, interface: str, steps: _Steps, files: list[str]) -> Any:
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
    def _link(self, net: NetworkConfig, interface: str, steps: _Steps) -> Any:
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
    def renew(self, net: NetworkConfig, interface: str, steps: _Steps) -> Any:
        yield steps.run(["networkctl", "renew", interface], f"renewing the DHCP lease of {interface}")
        return f"systemd-networkd renewed the DHCP lease of {interface}"


class NetworkManagerBackend:
    """NetworkManager: a connection ``cmegw-IFACE`` set with ``nmcli``."""

    name = "networkmanager"

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    @defer.inlineCallbacks
    def apply(self, net: NetworkConfig, interface: str, steps: _Steps, files: list[str]) -> Any:
        props = nmcli_properties(net)
        name = nm_connection_name(interface)
        listing = yield steps.run(["nmcli", "-t", "-f", "NAME", "connection", "show"],
                                  "asking NetworkManager for its connections")
        if name not in listing.output.splitlines():
            yield steps.run(["nmcli", "connection", "add", "type", "ethernet", "ifname", interface,
                             "con-name", name], f"creating the connection {name}")
        yield steps.run(["nmcli", "connection", "modify", name, *props], f"setting the connection {name}")
        yield steps.run(["nmcli", "connection", "up", name], f"activating the connection {name}")
        return f"applied to {interface} by NetworkManager (connection {name})"

    @defer.inlineCallbacks
    def renew(self, net: NetworkConfig, interface: str, steps: _Steps) -> Any:
        name = nm_connection_name(interface)
        yield steps.run(["nmcli", "connection", "up", name], f"renewing the DHCP lease of {interface}")
        return f"NetworkManager renewed the DHCP lease of {interface} (connection {name} reactivated)"


def default_interface(root: Path = Path("/")) -> str:
    """The interface of the default route, else the only one there is besides loopback."""
    from cmegw.web.hostnet import default_route  # a pure reader of /proc and /sys

    interface, _ = default_route(root)
    if interface:
        return interface
    try:
        candidates = sorted(p.name for p in (root / "sys/class/net").iterdir() if p.name != "lo")
    except OSError:
        candidates = []
    if len(candidates) == 1:
        return candidates[0]
    raise Refused("no interface chosen: the host has no default route and "
                  + (f"several interfaces ({', '.join(candidates[:8])})" if candidates else "no interface")
                  + "; set network.interface")


class NetworkApplier:
    """
    Applies the Network settings to the host through the chosen backend, one
    operation at a time, and keeps the last result.  Does nothing unless the
    settings it is given have ``apply_to_host`` on.
    """

    def __init__(self, reactor: Any, *, networkd_directory: Path = NETWORKD_DIRECTORY,
                 runner: CommandRunner | None = None,
                 find_interface: Callable[[], str] = default_interface) -> None:
        self.reactor = reactor
        self.runner = runner or CommandRunner(reactor)
        self.backends: dict[str, Any] = {
            "networkd": NetworkdBackend(self.runner, networkd_directory),
            "networkmanager": NetworkManagerBackend(self.runner),
        }
        self.find_interface = find_interface
        self.last: HostNetworkResult | None = None
        self._lock = defer.DeferredLock()

    def apply(self, net: NetworkConfig) -> defer.Deferred:
        """Apply `net` to the host; fires with a `HostNetworkResult`, never fails."""
        return self._start("apply", net)

    def renew(self, net: NetworkConfig) -> defer.Deferred:
        """Ask the host's DHCP client to renew its lease; fires with a `HostNetworkResult`, never fails."""
        return self._start("renew", net)

    def _start(self, action: str, net: NetworkConfig) -> defer.Deferred:
        if not net.apply_to_host:
            return defer.succeed(HostNetworkResult(
                action, False, "nothing done: applying the Network settings to the host is off "
                               "(network.apply_to_host)", at=self.reactor.seconds()))
        if action == "renew" and not net.dhcp:
            return defer.succeed(HostNetworkResult(
                action, False, "nothing to renew: the DHCP client is off", backend=net.backend,
                at=self.reactor.seconds()))
        return self._lock.run(self._run, action, net)

    @defer.inlineCallbacks
    def _run(self, action: str, net: NetworkConfig) -> Any:
        at = self.reactor.seconds()
        backend = self.backends[net.backend]
        steps = _Steps(self.runner)
        files: list[str] = []
        interface = net.interface
        try:
            interface = interface or self.find_interface()
            if action == "apply":
                message = yield backend.apply(net, interface, steps, files)
            else:
                message = yield backend.renew(net, interface, steps)
            ok = True
        except Refused as e:
            message, ok = str(e), False
        except Exception as e:
            log.failure("Host network {action} failed unexpectedly", action=action)
            message, ok = f"not done: unexpected error ({e!r}); see the gateway's log", False
        result = HostNetworkResult(action, ok, message, backend.name, interface, tuple(files),
                                   tuple(steps.runs), at)
        self.last = result
        if ok:
            log.info("Host network ({backend}): {message}", backend=backend.name, message=message)
        else:
            log.warn("Host network ({backend}): {message}", backend=backend.name, message=message)
        return result
