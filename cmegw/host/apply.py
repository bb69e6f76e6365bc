# -*- test-case-name: tests.test_host_apply -*-
"""
The opt-in backend that applies the stored Network settings to the host.

The host's operating system owns its network.  Only when the operator turns
``network.apply_to_host`` on does the gateway, at every (re)start, hand the
settings to one of two backends: ``networkd`` (`cmegw.host.networkd`) or
``networkmanager`` (`cmegw.host.networkmanager`).

Commands run as child processes through the reactor (never blocking it),
each with a time limit (`cmegw.host.commands`).  What happened last is kept
as a `HostNetworkResult` that the Network pages, the JSON API and the console
show.  A failure is told in words and never raises, and nothing here touches
the configuration.  A backend's module is imported when it is first used: a
gateway that leaves the host's network alone never loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from cmegw.config.model import NetworkConfig
from cmegw.host.commands import CommandRun, CommandRunner, Refused, Steps

log = Logger(namespace="cmegw.netapply")


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


def default_interface(root: Path = Path("/")) -> str:
    """The interface of the default route, else the only one there is besides loopback."""
    from cmegw.host.read import default_route  # a pure reader of /proc and /sys

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

    def __init__(self, reactor: Any, *, networkd_directory: Path | None = None,
                 runner: CommandRunner | None = None,
                 find_interface: Callable[[], str] = default_interface) -> None:
        self.reactor = reactor
        self.runner = runner or CommandRunner(reactor)
        #: Where the networkd backend writes (None: `cmegw.host.networkd.NETWORKD_DIRECTORY`).
        self.networkd_directory = networkd_directory
        self._backends: dict[str, Any] = {}
        self.find_interface = find_interface
        self.last: HostNetworkResult | None = None
        self._lock = defer.DeferredLock()

    def backend(self, name: str) -> Any:
        """The backend `name` (``networkd``, ``networkmanager``), made at its first use."""
        found = self._backends.get(name)
        if found is None:
            if name == "networkd":
                from cmegw.host.networkd import NETWORKD_DIRECTORY, NetworkdBackend

                found = NetworkdBackend(self.runner, self.networkd_directory or NETWORKD_DIRECTORY)
            elif name == "networkmanager":
                from cmegw.host.networkmanager import NetworkManagerBackend

                found = NetworkManagerBackend(self.runner)
            else:
                raise KeyError(f"there is no host network backend {name!r}")
            self._backends[name] = found
        return found

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
        backend = self.backend(net.backend)
        steps = Steps(self.runner)
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
