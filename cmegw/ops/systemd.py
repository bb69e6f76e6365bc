# -*- test-case-name: tests.test_ops_systemd -*-
"""
The gateway as a systemd service (``Type=notify``).

`Notifier` writes the sd_notify protocol: one datagram of ``KEY=value`` lines
to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the
abstract namespace); without the variable it does nothing.

`SystemdNotify`, a part of the gateway, says READY=1 once every listener is
up (``gateway.when_listening()``), keeps STATUS= a line a person reads in
``systemctl status``, sends WATCHDOG=1 from the reactor at half of
``$WATCHDOG_USEC`` (a blocked reactor stops it, and systemd restarts the
service), RELOADING=1 while the gateway restarts in-process and STOPPING=1
when it stops.

`ReloadOnHangup`, another part, reads the configuration file again on SIGHUP
(``systemctl reload``): a bad file is refused and logged, the running
configuration stays.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any, Callable, Mapping

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from cmegw.config.store import ConfigFileError
from cmegw.stats import LINE_ERROR, LINE_OPEN, TUNNEL_CONNECTED, TUNNEL_DISABLED, TUNNEL_LISTEN_FAILED

log = Logger(namespace="cmegw.systemd")

#: WATCHDOG=1 is sent this often, as a fraction of the watchdog time systemd gives.
WATCHDOG_FRACTION = 0.5
#: How often the STATUS= line is looked at (sent only when it changed), in seconds.
STATUS_INTERVAL = 5.0
#: systemd truncates longer STATUS= lines in ``systemctl status``.
STATUS_LIMIT = 400


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket of ``$NOTIFY_SOCKET`` as `socket.sendto` takes it, or None."""
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 messages, or None when systemd watches no watchdog for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None
    return int(usec) / 1_000_000 * WATCHDOG_FRACTION


class Notifier:
    """sd_notify(3) over a datagram socket; a no-op without an address."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        return cls(notify_address(os.environ if environ is None else environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (``send(READY=1, STATUS="...")``); False when not sent."""
        if self.address is None:
            return False
        text = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(text.encode("utf-8"), self.address)
        except OSError as e:
            if not self._failed:  # say it once: systemd may simply not listen any more
                log.warn("Cannot notify systemd at {address}: {e}", address=self.address.replace("\0", "@"),
                         e=e)
            self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, which RELOADING=1 carries (systemd 253's notify-reload wants it)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def line_status(n: int, stats: Any) -> str:
    if stats.state == LINE_OPEN:
        return f"line {n} ok {stats.baud_rate} baud"
    if stats.state == LINE_ERROR:
        return f"line {n} error: {stats.error}"
    return f"line {n} {stats.state}"


def tunnel_status(n: int, stats: Any) -> str:
    if stats.state == TUNNEL_CONNECTED:
        return f"tunnel {n} connected to {stats.peer}"
    if stats.state == TUNNEL_DISABLED:
        return f"tunnel {n} disabled"
    if stats.state == TUNNEL_LISTEN_FAILED or stats.error:
        return f"tunnel {n} {stats.error or stats.state}"
    if stats.listening:
        return f"tunnel {n} listening on {stats.listening}"
    return f"tunnel {n} {stats.state}"


def meter_count(state: Any) -> int | None:
    """Meters the M-Bus masters' scans found; None before any found one."""
    return sum(bus.found_meters for bus in state.bus.values()) or None


def status_text(state: Any) -> str:
    """``line 1 ok 2400 baud, tunnel 1 connected to 10.1.2.3:50412, 3 meters`` (from the published state)."""
    parts = [line_status(n, state.lines[n]) for n in sorted(state.lines)]
    parts += [tunnel_status(n, state.tunnels[n].stats) for n in sorted(state.tunnels)]
    now = state.clock.seconds()
    for n, tunnel in sorted(state.tunnels.items()):
        connect = tunnel.connect
        if connect is not None and getattr(connect, "state", "disabled") != "disabled":
            parts.append(f"tunnel {n} connect mode: {connect.text(now)}")
    meters = meter_count(state)
    if meters is not None:
        parts.append(f"{meters} meter{'' if meters == 1 else 's'}")
    problem = state.status.config_problem
    if problem:
        parts.append(f"configuration problem: {problem}")
    text = ", ".join(parts) or "no lines configured"
    return text if len(text) <= STATUS_LIMIT else text[:STATUS_LIMIT - 1] + "…"


class SystemdNotify(service.Service):
    """READY, STATUS, WATCHDOG, RELOADING and STOPPING for the gateway it is a part of."""

    name = "systemd-notify"

    def __init__(self, gateway: Any, notifier: Notifier, watchdog: float | None = None, clock: Any = None) -> None:
        self.gateway = gateway
        self.notifier = notifier
        self.watchdog = watchdog
        self.clock = clock if clock is not None else gateway.reactor
        self.ready = False
        self._last_status = ""
        self._waiting: defer.Deferred | None = None
        self._watchdog = task.LoopingCall(self.notifier.send, WATCHDOG=1)
        self._watchdog.clock = self.clock
        self._status = task.LoopingCall(self.update_status)
        self._status.clock = self.clock

    def startService(self) -> None:
        super().startService()
        self.ready = False
        if self.watchdog:
            self._watchdog.start(self.watchdog, now=True)
        self._send_status(f"starting: {status_text(self.gateway.state)}")
        self._waiting = self.gateway.when_listening()
        self._waiting.addCallbacks(self._listening, self._not_listening)
        if self.notifier.enabled:  # without systemd nobody reads the STATUS= line: not built every 5 s
            self._status.start(STATUS_INTERVAL, now=False)

    def _listening(self, _: Any) -> None:
        self._waiting = None
        self.ready = True
        self._last_status = status_text(self.gateway.state)
        self.notifier.send(READY=1, STATUS=self._last_status)
        log.info("Every listener is up: ready")

    def _not_listening(self, failure: Any) -> None:
        self._waiting = None
        if not failure.check(defer.CancelledError):
            log.failure("Waiting for the listeners failed", failure)

    def update_status(self) -> None:
        """Send STATUS= when it changed; while not ready it says what is awaited."""
        text = status_text(self.gateway.state)
        self._send_status(text if self.ready else f"starting: {text}")

    def _send_status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notifier.send(STATUS=text)

    def stopService(self) -> Any:
        super().stopService()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        for loop in (self._watchdog, self._status):
            if loop.running:
                loop.stop()
        if self.gateway.restarting:
            self.notifier.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="restarting")
        else:
            self.notifier.send(STOPPING=1, STATUS="stopping")
            self.notifier.close()
        self.ready = False
        return None


SignalInstaller = Callable[[int, Any], Any]


class ReloadOnHangup(service.Service):
    """SIGHUP: ``gateway.reload_config()``, with RELOADING=1 / READY=1 around it for systemd."""

    name = "reload-on-hangup"

    def __init__(self, gateway: Any, notifier: Notifier, install: SignalInstaller = signal.signal) -> None:
        self.gateway = gateway
        self.notifier = notifier
        self._install = install
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = self._install(signal.SIGHUP, self._signalled)

    def stopService(self) -> Any:
        super().stopService()
        self._install(signal.SIGHUP, self._previous if self._previous is not None else signal.SIG_DFL)
        self._previous = None
        return None

    def _signalled(self, signum: int, frame: Any) -> None:
        # A signal handler runs between two bytecodes of whatever the reactor
        # was doing: the work itself is left to the reactor's next turn.
        self.gateway.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Read the configuration file again; False when it was refused."""
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading the configuration")
        try:
            self.gateway.reload_config()
        except ConfigFileError as e:
            self.notifier.send(READY=1, STATUS=f"configuration reload refused: {e}")
            return False
        self.notifier.send(READY=1, STATUS=status_text(self.gateway.state))
        return True


def systemd_part(gateway: Any) -> service.IService:
    """The part registered in `cmegw.tap.part_factories` (built by the gateway service): notify and watchdog from the environment."""
    return SystemdNotify(gateway, Notifier.from_environment(), watchdog_interval(os.environ))


def hangup_part(gateway: Any) -> service.IService:
    """The part registered in `cmegw.tap.part_factories` (built by the gateway service): SIGHUP reloads the configuration file."""
    return ReloadOnHangup(gateway, Notifier.from_environment())
