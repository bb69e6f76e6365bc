# -*- test-case-name: tests.test_mbus_simprocess -*-
"""
The gateway's built-in simulated M-Bus in a process of its own, as a real
bus runs beside the box: a loaded gateway hears its meters late, as it
would a real bus, but the meters still answer on time.

L{SimulatorProcess} is one child: it starts C{python -m cmegw.mbus.simulator
--paced --gateway-child} with the reactor it is given, learns the pty's path
from the first line of the child's output, and stops the child by closing its
standard input (and SIGTERM, SIGKILL after a grace period).  The child's
standard input is a pipe from the gateway: when the gateway dies, even by
SIGKILL, the pipe ends and the child stops.  The child ignores SIGTERM,
SIGINT and SIGHUP and has a process group of its own: a signal to the
gateway's group (Ctrl-C) or to the whole unit (systemd's stop) reaches the
gateway, which closes its line before it stops the bus; only SIGKILL ends
the child behind the gateway's back.  Where it may, the child runs at a lower
niceness than the gateway (`cmegw.mbus.simulator.BUS_NICENESS`): a loaded
box must not make its meters late.

L{SupervisedSimulator} is the bus the gateway runs: a child that ends while
it should run (killed, crashed, or never started) is logged and started again
after a delay that doubles from `RESTART_DELAY` up to `RESTART_DELAY_MAX`
(back to the first once a child has run `RESTART_RESET` seconds); its
listeners hear when the bus is gone and when it is back on a new pty.

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
from typing import Any, Callable

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
#: The first delay before a simulated bus that ended is started again (seconds); it doubles at each
#: failure in a row up to RESTART_DELAY_MAX, and is the first again once a child has run RESTART_RESET.
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
RESTART_RESET = 60.0


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
        #: When the child reported its pty (the reactor's seconds).
        self.reported_at: float | None = None
        #: How the child ended, in words (with its last line of standard error, if any), once it has.
        self.ending: str | None = None
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
        End the child: its standard input closes (the gateway's child ends
        on that) and it gets SIGTERM (another command may need it), then
        SIGKILL after `stop_grace` seconds; fires once it has ended (a killed
        child that still does not end is given up on after `KILL_WAIT`
        seconds, with an error in the log).
        """
        if self._running and not self._stopping:
            self._stopping = True
            self.transport.closeStdin()
            self._signal("TERM")
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
        self.reported_at = self.reactor.seconds()
        self._stdout = b""
        started, self._started = self._started, None
        _cancel(self._start_timer)
        started.callback(self.path)

    def errReceived(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-STDERR_KEPT:]

    def processEnded(self, reason: Failure) -> None:
        last = self._stderr.decode(errors="replace").strip().splitlines()
        self.ending = _ending(reason) + (f": {last[-1]}" if last else "")
        self._fail(self.ending)
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


class SupervisedSimulator:
    """
    One line's simulated bus, kept running: a L{SimulatorProcess} started
    again whenever it ends while it should run.  `start` fires with the first
    child's pty (or fails with `SimulatorFailed` when that child does not
    start: a restart is due all the same); later children are announced to
    the listeners of `on_restart`.  `stop` ends it for good: a pending
    restart is cancelled, a child (running or starting) is stopped.
    """

    def __init__(self, reactor: Any, line: int,
                 child_factory: Callable[[Any, int], SimulatorProcess] = SimulatorProcess,
                 restart_delay: float = RESTART_DELAY, restart_delay_max: float = RESTART_DELAY_MAX,
                 restart_reset: float = RESTART_RESET) -> None:
        self.reactor = reactor
        self.line = line
        self.child_factory = child_factory
        self.restart_delay = restart_delay
        self.restart_delay_max = restart_delay_max
        self.restart_reset = restart_reset
        #: How many children have been started.
        self.starts = 0
        #: The current child (None before the start and between one child's end and the next's start).
        self.child: SimulatorProcess | None = None
        self._delay = restart_delay
        self._first: defer.Deferred[str] | None = None
        self._failure = ""
        self._restart: Any = None
        self._stopping = False
        self._gone: list[Callable[[str], None]] = []
        self._back: list[Callable[[str], None]] = []

    @property
    def path(self) -> str | None:
        """The pty of the child that runs, or None (starting, restarting, stopped)."""
        child = self.child
        return child.path if child is not None and child.pid is not None else None

    @property
    def pid(self) -> int | None:
        """The process id of the child that runs, or None."""
        return self.child.pid if self.child is not None else None

    def on_restart(self, gone: Callable[[str], None], back: Callable[[str], None]) -> None:
        """
        Call `gone(why)` when the bus is gone after its start and is to start
        again (`why`, in words, says so), and `back(path)` when a new child
        reports its pty.
        """
        self._gone.append(gone)
        self._back.append(back)

    def start(self) -> defer.Deferred[str]:
        """Start the first child: fires with its pty, or fails with `SimulatorFailed` (then it is started again)."""
        first = self._first = defer.Deferred()
        self._spawn()
        return first

    def stop(self) -> defer.Deferred[None]:
        """End the bus: no restart from now on; fires once the child (if any) has ended."""
        self._stopping = True
        _cancel(self._restart)
        self._restart = None
        first, self._first = self._first, None
        if first is not None:
            first.errback(SimulatorFailed("the simulated bus did not start: it was stopped"))
        child, self.child = self.child, None
        return child.stop() if child is not None else defer.succeed(None)

    def _spawn(self) -> None:
        self._restart = None
        child = self.child = self.child_factory(self.reactor, self.line)
        self.starts += 1
        self._failure = ""
        child.start().addCallbacks(self._started, self._not_started, callbackArgs=(child,), errbackArgs=(child,))
        child.when_ended().addCallback(self._ended, child)

    def _started(self, path: str, child: SimulatorProcess) -> None:
        if child is not self.child:
            return
        first, self._first = self._first, None
        if first is not None:
            first.callback(path)
            return
        for back in list(self._back):
            back(path)

    def _not_started(self, reason: Failure, child: SimulatorProcess) -> None:
        if child is self.child:
            self._failure = reason.getErrorMessage()

    def _ended(self, _: None, child: SimulatorProcess) -> None:
        if child is not self.child or self._stopping:
            return
        self.child = None
        ran = child.reported_at is not None and self.reactor.seconds() - child.reported_at >= self.restart_reset
        if ran:
            self._delay = self.restart_delay
        delay, self._delay = self._delay, min(self._delay * 2, self.restart_delay_max)
        what = self._failure or f"the simulated bus ended ({child.ending or 'it exited'})"
        why = f"{what}; restarting it in {delay:g} s"
        self._restart = self.reactor.callLater(delay, self._spawn)
        first, self._first = self._first, None
        if first is not None:
            first.errback(SimulatorFailed(why))  # the start's failure, said by whoever waits for it
            return
        log.error("Line {n}: {why}", n=self.line, why=why)
        for gone in list(self._gone):
            gone(why)


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
