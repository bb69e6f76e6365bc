# -*- test-case-name: tests.test_mbus_simprocess -*-
"""
The gateway's built-in simulated M-Bus in a process of its own, as a real
bus runs beside the box: a loaded gateway hears its meters late, as it
would a real bus, but the meters still answer on time.

L{SimulatorProcess} starts C{python -m cmegw.mbus.simulator --paced} with
the reactor it is given, learns the pty's path from the first line of the
child's output, and stops the child with SIGTERM (SIGKILL after a grace
period).  The child's standard input is a pipe from the gateway: when the
gateway dies, even by SIGKILL, the pipe ends and the child stops.  The child
has a process group of its own, so a signal to the gateway's group (Ctrl-C,
a test's kill of the group) reaches the gateway only, which closes its line
before it stops the bus.  Where it may, the child runs at a lower niceness
than the gateway (`cmegw.mbus.simulator.BUS_NICENESS`): a loaded box must
not make its meters late.

The child holds the pty's master and a descriptor of its slave; the gateway
opens the slave by its path.  Terminal settings belong to the pty, not to a
process: the baud rate the gateway sets is the one the child reads, so a
baud change still changes the meters' pace (and silences meters set to
another rate).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="cmegw.simulator")

#: The longest the child may take to report its pty (seconds): a loaded box starts Python slowly.
START_TIMEOUT = 20.0
#: How long the child has to end after SIGTERM before it gets SIGKILL (seconds).
STOP_GRACE = 5.0
#: How long to wait for the end of a child sent SIGKILL (seconds): then it is given up on, in the log.
KILL_WAIT = 5.0
#: How much of the child's standard error is kept for the error message (bytes).
STDERR_KEPT = 2000


class SimulatorFailed(Exception):
    """The simulated bus's process did not start (or ended before it reported its pty)."""


def simulator_command(line: int) -> list[str]:
    """The child's argument list: the paced bus, its default meters' clocks fixed, seeded by the line's number."""
    return [sys.executable, "-m", "cmegw.mbus.simulator", "--paced", "--seed", str(line), "--fixed-clock",
            "--gateway-child"]


def _child_environment() -> dict[str, str]:
    """The gateway's environment, with the directory this cmegw is imported from first on the path."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))


class SimulatorProcess(protocol.ProcessProtocol):
    """
    One line's simulated bus as a child process; `start` and `stop` as the
    in-process L{cmegw.mbus.simulator.SimulatedBus} has them, but both
    return Deferreds.
    """

    def __init__(self, reactor: Any, line: int, command: list[str] | None = None,
                 start_timeout: float = START_TIMEOUT, stop_grace: float = STOP_GRACE) -> None:
        self.reactor = reactor
        self.line = line
        self.command = command if command is not None else simulator_command(line)
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        #: The pty's slave path once the child reported it.
        self.path: str | None = None
        #: The child's process id while it runs.
        self.pid: int | None = None
        self._stdout = b""
        self._stderr = b""
        self._started: defer.Deferred[str] | None = None
        self._waiting: list[defer.Deferred[None]] = []
        self._running = False
        self._stopping = False
        self._start_timer: Any = None
        self._stop_timer: Any = None

    # -- life cycle -----------------------------------------------------------

    def start(self) -> defer.Deferred[str]:
        """Start the child: fires with the pty's path once it answers, or fails with `SimulatorFailed`."""
        started = self._started = defer.Deferred()
        try:
            self.reactor.spawnProcess(self, self.command[0], self.command, env=_child_environment(),
                                      childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as e:
            self._fail(f"cannot run {self.command[0]}: {e}")
            return started
        self._start_timer = self.reactor.callLater(self.start_timeout, self._start_timed_out)
        return started

    def stop(self) -> defer.Deferred[None]:
        """
        End the child: its standard input closes and it gets SIGTERM, then
        SIGKILL after `stop_grace` seconds; fires once it has ended (a killed
        child that still does not end is given up on after `KILL_WAIT`
        seconds, with an error in the log).
        """
        if self._running and not self._stopping:
            self._stopping = True
            self._signal("TERM")
            self.transport.closeStdin()
            self._stop_timer = self.reactor.callLater(self.stop_grace, self._kill)
        return self.when_ended()

    def when_ended(self) -> defer.Deferred[None]:
        """Fires once the child has ended (at once if it does not run)."""
        if not self._running:
            return defer.succeed(None)
        ended: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(ended)
        return ended

    def _kill(self) -> None:
        log.warn("Line {n}: the simulated bus did not end in {s:g} s: killing it", n=self.line, s=self.stop_grace)
        self._signal("KILL")
        self._stop_timer = self.reactor.callLater(KILL_WAIT, self._give_up)

    def _give_up(self) -> None:
        self._stop_timer = None
        log.error("Line {n}: the simulated bus (process {pid}) did not end after SIGKILL", n=self.line, pid=self.pid)
        self._finish()

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass

    def _start_timed_out(self) -> None:
        self._start_timer = None
        self._fail(f"it did not report its pty within {self.start_timeout:g} s")
        self.stop()

    def _fail(self, why: str) -> None:
        started, self._started = self._started, None
        if started is not None:
            started.errback(SimulatorFailed(f"the simulated bus did not start: {why}"))

    # -- process protocol -------------------------------------------------------

    def connectionMade(self) -> None:
        self._running = True
        self.pid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        if self._started is None:
            return
        self._stdout += data
        first, newline, _ = self._stdout.partition(b"\n")
        if not newline:
            return
        self.path = first.decode(errors="replace").strip()
        self._stdout = b""
        started, self._started = self._started, None
        _cancel(self._start_timer)
        started.callback(self.path)

    def errReceived(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-STDERR_KEPT:]

    def processEnded(self, reason: Failure) -> None:
        why = _ending(reason)
        if self._started is not None:
            last = self._stderr.decode(errors="replace").strip().splitlines()
            self._fail(why + (f": {last[-1]}" if last else ""))
        elif not self._stopping:
            log.error("Line {n}: the simulated bus ended ({why}); the line has no bus now", n=self.line, why=why)
        self._finish()

    def _finish(self) -> None:
        if not self._running:
            return
        self._running = False
        self.pid = None
        _cancel(self._start_timer)
        _cancel(self._stop_timer)
        self._start_timer = self._stop_timer = None
        waiting, self._waiting = self._waiting, []
        for ended in waiting:
            ended.callback(None)


def _cancel(timer: Any) -> None:
    if timer is not None and timer.active():
        timer.cancel()


def _ending(reason: Failure) -> str:
    """How the child ended, in words."""
    value = reason.value
    signal = getattr(value, "signal", None)
    if signal is not None:
        return f"it was ended by signal {signal}"
    code = getattr(value, "exitCode", None)
    return f"it exited with code {code}" if code else "it exited"
