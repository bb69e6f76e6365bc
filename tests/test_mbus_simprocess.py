"""
Tests for cmegw.mbus.simprocess: the built-in simulated bus in a process of
its own.  The life cycle is driven on a fake process reactor and a clock
(instant); then a real child is started, read through a gateway's line at
two baud rates, stopped with the service and with its parent's SIGKILL.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.mbus.master import MeterError
from cmegw.mbus.meterbus import default_meters
from cmegw.mbus.simulator import BUS_NICENESS
from cmegw.mbus.simprocess import KILL_WAIT, SimulatorFailed, SimulatorProcess
from cmegw.serial.adapter import is_pty
from cmegw.service import GatewayService, Overrides
from cmegw.stats import LINE_ERROR
from tests.support import START_TIMEOUT, GatewayProcess, free_port

LOOPBACK = ":interface=127.0.0.1"


class FakeProcess:
    """What `spawnProcess` returns: the signals sent and whether stdin was closed."""

    pid = 4242

    def __init__(self) -> None:
        self.signals: list[str] = []
        self.stdin_closed = False

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def closeStdin(self) -> None:
        self.stdin_closed = True


class ProcessClock(Clock):
    """A clock that also spawns fake processes (and can refuse to)."""

    def __init__(self, refuse: OSError | None = None) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[Any, Any]]] = []
        self.refuse = refuse

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str],
                     childFDs: dict[Any, Any]) -> FakeProcess:
        if self.refuse is not None:
            raise self.refuse
        self.spawned.append((protocol, args, env))
        process = FakeProcess()
        protocol.makeConnection(process)
        return process


def ended(code: int | None = 0, by: int | None = None) -> Failure:
    if code == 0 and by is None:
        return Failure(error.ProcessDone(0))
    return Failure(error.ProcessTerminated(code, by))


class LifeCycleTests(TestCase):
    def setUp(self) -> None:
        self.clock = ProcessClock()
        self.bus = SimulatorProcess(self.clock, 2, stop_grace=5.0, start_timeout=20.0)

    def started(self) -> defer.Deferred:
        d = self.bus.start()
        self.process = self.bus.transport
        return d

    def test_command_and_environment(self) -> None:
        self.started()
        _, args, env = self.clock.spawned[0]
        self.assertEqual(args, [sys.executable, "-m", "cmegw.mbus.simulator", "--paced", "--seed", "2",
                                "--fixed-clock", "--gateway-child"])
        here = str(Path(__file__).resolve().parents[1])
        self.assertEqual(env["PYTHONPATH"].split(os.pathsep)[0], here, "the child imports this cmegw")

    def test_first_line_is_the_path(self) -> None:
        d = self.started()
        self.bus.outReceived(b"/dev/pt")
        self.assertNoResult(d)
        self.bus.outReceived(b"s/7\n  primary   1  secondary ...\n")
        self.assertEqual(self.successResultOf(d), "/dev/pts/7")
        self.assertEqual((self.bus.path, self.bus.pid), ("/dev/pts/7", 4242))
        self.assertEqual(self.clock.getDelayedCalls(), [], "the start timer is cancelled")

    def test_child_that_exits_gives_its_last_error_line(self) -> None:
        d = self.started()
        self.bus.errReceived(b"Traceback (most recent call last):\n  ...\n")
        self.bus.errReceived(b"ModuleNotFoundError: No module named 'cmegw'\n")
        self.bus.processEnded(ended(1))
        failure = self.failureResultOf(d, SimulatorFailed)
        self.assertEqual(failure.getErrorMessage(), "the simulated bus did not start: it exited with code 1: "
                                                    "ModuleNotFoundError: No module named 'cmegw'")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cannot_run(self) -> None:
        bus = SimulatorProcess(ProcessClock(refuse=OSError(2, "No such file or directory")), 1,
                               command=["/nonexistent/python"])
        failure = self.failureResultOf(bus.start(), SimulatorFailed)
        self.assertIn("the simulated bus did not start: cannot run /nonexistent/python", failure.getErrorMessage())
        self.successResultOf(bus.stop())

    def test_start_timeout_stops_the_child(self) -> None:
        d = self.started()
        self.clock.advance(20.0)
        failure = self.failureResultOf(d, SimulatorFailed)
        self.assertEqual(failure.getErrorMessage(),
                         "the simulated bus did not start: it did not report its pty within 20 s")
        self.assertEqual(self.process.signals, ["TERM"])
        self.assertTrue(self.process.stdin_closed)
        self.bus.processEnded(ended(by=signal.SIGTERM))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_terms_then_ends(self) -> None:
        self.started()
        self.bus.outReceived(b"/dev/pts/7\n")
        stopped = self.bus.stop()
        again = self.bus.stop()
        self.assertEqual(self.process.signals, ["TERM"], "asked once")
        self.assertTrue(self.process.stdin_closed)
        self.assertNoResult(stopped)
        self.bus.processEnded(ended(by=signal.SIGTERM))
        self.successResultOf(stopped)
        self.successResultOf(again)
        self.assertIsNone(self.bus.pid)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.bus.stop())

    def test_stop_kills_after_the_grace(self) -> None:
        self.started()
        self.bus.outReceived(b"/dev/pts/7\n")
        stopped = self.bus.stop()
        self.clock.advance(4.9)
        self.assertEqual(self.process.signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(self.process.signals, ["TERM", "KILL"])
        self.assertNoResult(stopped)
        self.bus.processEnded(ended(by=signal.SIGKILL))
        self.successResultOf(stopped)

    def test_a_child_that_never_ends_is_given_up(self) -> None:
        self.started()
        self.bus.outReceived(b"/dev/pts/7\n")
        stopped = self.bus.stop()
        self.clock.advance(5.0)
        self.assertEqual(self.process.signals, ["TERM", "KILL"])
        self.clock.advance(KILL_WAIT)
        self.successResultOf(stopped)
        self.assertIsNone(self.bus.pid)

    def test_stop_while_starting_fails_the_start(self) -> None:
        d = self.started()
        stopped = self.bus.stop()
        self.bus.processEnded(ended(by=signal.SIGTERM))
        failure = self.failureResultOf(d, SimulatorFailed)
        self.assertEqual(failure.getErrorMessage(), "the simulated bus did not start: it was ended by signal 15")
        self.successResultOf(stopped)


def pidfd_ended(pid: int, timeout: float = START_TIMEOUT) -> bool:
    """Whether process `pid` ends (or has ended) within `timeout` seconds (a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def when_open(line: Any, timeout: float = START_TIMEOUT) -> defer.Deferred:
    """Fires once `line` is open (at once if it is)."""
    if line.is_open:
        return defer.succeed(None)
    d: defer.Deferred = defer.Deferred()
    line.on_state_change(lambda is_open: d.callback(None) if is_open and not d.called else None)
    return d.addTimeout(timeout, reactor)


class ChildProcessTests(TestCase):
    """A real child, under a gateway service on the real reactor."""

    def gateway(self, **options: Any) -> GatewayService:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.store = ConfigStore(directory / "cmegw.toml")
        self.store.load()
        gateway = GatewayService(self.store, reactor, Overrides(simulate=True, tunnel="tcp:0" + LOOPBACK),
                                 **options)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        return gateway

    @defer.inlineCallbacks
    def test_line_reads_through_the_child_and_the_child_ends_with_the_service(self) -> None:
        gateway = self.gateway()
        simulator = gateway.simulators[1]
        self.assertIsInstance(simulator, SimulatorProcess)
        line = gateway.lines[1]
        self.assertTrue(line.waiting_for_device)
        yield when_open(line)
        self.assertTrue(is_pty(line.device))
        self.assertEqual(line.device, simulator.path)
        self.assertEqual(line.stats.adapter, "pseudo-terminal (simulated bus)")
        pid = simulator.pid
        self.assertTrue(alive(pid))
        self.assertNotEqual(os.getpgid(pid), os.getpgrp(), "the bus has a process group of its own")
        ours, its = os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, pid)
        if os.geteuid() == 0:
            self.assertEqual(its, max(ours + BUS_NICENESS, -20), "the bus runs ahead of the gateway")
        else:
            self.assertLessEqual(its, ours)
        meter = default_meters()[0]
        reading = yield gateway.read_meter(1, meter.primary)
        self.assertEqual(reading.secondary, meter.address)
        maps = Path(f"/proc/{pid}/maps").read_text()
        self.assertNotIn("cryptography", maps, "the bus's process loads no TLS (pyOpenSSL, cryptography)")
        yield gateway.stopService()
        self.assertFalse(alive(pid))
        self.assertEqual(gateway.simulators, {})

    @defer.inlineCallbacks
    def test_baud_set_by_the_gateway_reaches_the_child(self) -> None:
        """The meters answer at 2400 baud only: at 9600 (set on the gateway's side of the pty) they are silent."""
        gateway = self.gateway()
        yield when_open(gateway.lines[1])
        self.store.change(apply_setting(self.store.config, "line.1.baud_rate", "9600"))
        with self.assertRaises(MeterError):
            yield gateway.read_meter(1, 1)
        self.store.change(apply_setting(self.store.config, "line.1.baud_rate", "2400"))
        reading = yield gateway.read_meter(1, 1)
        self.assertEqual(reading.primary, 1)

    @defer.inlineCallbacks
    def test_a_held_up_gateway_still_hears_its_meter(self) -> None:
        """
        The gateway's reactor is held up (a loaded box) longer than a reply
        window while its request is on the bus: the meter, in its own
        process, answers on time, and the reply waits in the pty until the
        gateway reads it (in the gateway's own process the meter would have
        heard the request late, and the read would be counted silent).
        """
        gateway = self.gateway()
        yield when_open(gateway.lines[1])
        reading = gateway.read_meter(1, 5)
        reactor.callLater(0.02, time.sleep, 0.6)  # the held-up reactor itself, not a wait of the test
        reading = yield reading
        self.assertEqual(reading.primary, 5)
        self.assertEqual(gateway.arbiters[1].stats.silent, 0, "no silence counted")

    @defer.inlineCallbacks
    def test_restart_leaves_no_child(self) -> None:
        gateway = self.gateway()
        yield when_open(gateway.lines[1])
        first = gateway.simulators[1].pid
        yield gateway.restart()
        self.assertFalse(alive(first))
        yield when_open(gateway.lines[1])
        second = gateway.simulators[1].pid
        self.assertNotEqual(first, second)
        self.assertTrue(alive(second))

    @defer.inlineCallbacks
    def test_a_child_that_fails_leaves_the_line_closed_with_the_reason(self) -> None:
        command = [sys.executable, "-c", "import sys; sys.exit('no bus here')"]
        gateway = self.gateway(simulator_factory=lambda clock, n: SimulatorProcess(clock, n, command=command))
        line = gateway.lines[1]
        yield gateway.simulators[1].when_ended().addTimeout(START_TIMEOUT, reactor)
        self.assertEqual(line.stats.state, LINE_ERROR)
        self.assertEqual(line.stats.error, "the simulated bus did not start: it exited with code 1: no bus here")
        self.assertFalse(line.is_open)
        self.assertFalse(line.waiting_for_device)


class GatewayChildTests(TestCase):
    """``twistd cmegw --simulate``: the bus's process ends with the gateway, however the gateway ends."""

    def start(self) -> tuple[GatewayProcess, int]:
        gateway = GatewayProcess(self.mktemp(), ["--config", "cmegw.toml", "--simulate",
                                                 "--tunnel", f"tcp:{free_port()}{LOOPBACK}",
                                                 "--http", f"tcp:{free_port()}{LOOPBACK}",
                                                 "--https", f"tcp:{free_port()}{LOOPBACK}",
                                                 "--console", f"tcp:{free_port()}{LOOPBACK}"])
        self.addCleanup(gateway.stop)
        gateway.start()
        found = re.search(r"Line 1: simulated M-Bus on \S+ \(process (\d+)\)", gateway.log())
        self.assertIsNotNone(found, gateway.log())
        pid = int(found.group(1))
        self.addCleanup(self.end, pid)
        return gateway, pid

    def end(self, pid: int) -> None:
        """The bus's process, if a failed test left it running (it is ours: this test started it)."""
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    def test_ends_when_the_gateway_stops(self) -> None:
        gateway, pid = self.start()
        self.assertTrue(alive(pid))
        gateway.stop()
        self.assertTrue(pidfd_ended(pid))
        self.assertNotIn("went away", gateway.log(), "the line is closed before its bus ends")

    def test_ends_when_the_gateway_is_killed(self) -> None:
        gateway, pid = self.start()
        assert gateway.process is not None
        os.kill(gateway.process.pid, signal.SIGKILL)
        gateway.process.wait(timeout=START_TIMEOUT)
        self.assertTrue(pidfd_ended(pid), "the bus's standard input ended with its parent")
