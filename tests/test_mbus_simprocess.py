"""
Tests for cmegw.mbus.simprocess: the built-in simulated bus in a process of
its own, kept running.  The life cycles of a child and of the supervised bus
are driven on a fake process reactor and a clock (instant); then a real child
is started, read through a gateway's line at two baud rates, killed and
started again, stopped with the service, with its parent's SIGKILL and with
a signal to the whole unit, as systemd stops it.
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
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.mbus.master import MeterError
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.mbus.simulator import BUS_NICENESS, SimulatedBus
from cmegw.mbus.simprocess import KILL_WAIT, SimulatorFailed, SimulatorProcess, SupervisedSimulator
from cmegw.serial.adapter import is_pty
from cmegw.service import GatewayService, Overrides
from cmegw.stats import LINE_ERROR, LINE_OPEN
from tests.support import START_TIMEOUT, GatewayProcess, free_port

LOOPBACK = ":interface=127.0.0.1"


class FakeProcess:
    """What `spawnProcess` returns: the signals sent and whether stdin was closed, in `events` in order."""

    def __init__(self, pid: int = 4242) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.stdin_closed = False
        self.events: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)
        self.events.append(name)

    def closeStdin(self) -> None:
        self.stdin_closed = True
        self.events.append("close stdin")


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
        process = FakeProcess(4242 + len(self.spawned) - 1)
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
        self.assertEqual(self.process.events, ["close stdin", "TERM"], "asked once: the standard input first")
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

    def test_ending_in_words(self) -> None:
        self.started()
        self.bus.outReceived(b"/dev/pts/7\n")
        self.assertEqual(self.bus.reported_at, 0.0)
        self.bus.errReceived(b"Fatal Python error: Segmentation fault\n")
        self.bus.processEnded(ended(by=signal.SIGSEGV))
        self.assertEqual(self.bus.ending, "it was ended by signal 11: Fatal Python error: Segmentation fault")
        self.successResultOf(self.bus.when_ended())


class SupervisedTests(TestCase):
    """SupervisedSimulator on a fake process reactor: children started again with a bounded backoff."""

    def setUp(self) -> None:
        self.clock = ProcessClock()
        self.bus = SupervisedSimulator(self.clock, 2)
        self.gone: list[str] = []
        self.back: list[str] = []
        self.bus.on_restart(self.gone.append, self.back.append)
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def child(self, index: int = -1) -> SimulatorProcess:
        return self.clock.spawned[index][0]

    def report(self, path: str) -> None:
        self.child().outReceived(path.encode() + b"\n")

    def running(self) -> defer.Deferred:
        d = self.bus.start()
        self.report("/dev/pts/7")
        self.assertEqual(self.successResultOf(d), "/dev/pts/7")
        return d

    def errors(self) -> list[str]:
        return [formatEvent(e) for e in self.log if e["log_level"] >= LogLevel.warn]

    def kill(self) -> None:
        self.child().processEnded(ended(by=signal.SIGKILL))

    def test_a_killed_child_is_started_again_and_announced(self) -> None:
        self.running()
        self.assertEqual((self.bus.path, self.bus.pid), ("/dev/pts/7", 4242))
        self.child().errReceived(b"some warning\nMemoryError\n")
        self.kill()
        why = "the simulated bus ended (it was ended by signal 9: MemoryError); restarting it in 1 s"
        self.assertEqual(self.gone, [why])
        self.assertEqual(self.errors(), [f"Line 2: {why}"])
        self.assertEqual((self.bus.path, self.bus.pid), (None, None))
        self.clock.advance(0.9)
        self.assertEqual(len(self.clock.spawned), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.clock.spawned), 2)
        self.assertEqual(self.back, [])
        self.report("/dev/pts/9")
        self.assertEqual(self.back, ["/dev/pts/9"])
        self.assertEqual((self.bus.path, self.bus.pid, self.bus.starts), ("/dev/pts/9", 4243, 2))

    def test_the_delay_doubles_up_to_its_bound_and_resets_after_a_long_run(self) -> None:
        self.running()
        delays = []
        for _ in range(7):
            self.kill()
            delays.append(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
            self.report("/dev/pts/7")
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30])
        self.clock.advance(59.0)
        self.kill()
        self.assertTrue(self.gone[-1].endswith("restarting it in 30 s"), "59 s is not a while")
        self.clock.advance(30.0)
        self.report("/dev/pts/7")
        self.clock.advance(60.0)
        self.kill()
        self.assertTrue(self.gone[-1].endswith("restarting it in 1 s"), "a run of 60 s resets the delay")

    def test_a_restart_that_fails_is_tried_again_later(self) -> None:
        self.running()
        self.kill()
        self.clock.advance(1.0)
        self.child().errReceived(b"OSError: out of ptys\n")
        self.child().processEnded(ended(1))
        self.assertEqual(self.gone[-1], "the simulated bus did not start: it exited with code 1: OSError: out of "
                                        "ptys; restarting it in 2 s")
        self.clock.refuse = OSError(24, "Too many open files")
        self.clock.advance(2.0)
        self.assertIn("cannot run", self.gone[-1])
        self.assertTrue(self.gone[-1].endswith("restarting it in 4 s"))
        self.clock.refuse = None
        self.clock.advance(4.0)
        self.report("/dev/pts/3")
        self.assertEqual(self.back, ["/dev/pts/3"])
        self.assertEqual(self.bus.starts, 4)

    def test_a_first_start_that_fails_fails_the_start_and_is_tried_again(self) -> None:
        d = self.bus.start()
        self.child().errReceived(b"no bus here\n")
        self.child().processEnded(ended(1))
        failure = self.failureResultOf(d, SimulatorFailed)
        self.assertEqual(failure.getErrorMessage(),
                         "the simulated bus did not start: it exited with code 1: no bus here; restarting it in 1 s")
        self.assertEqual((self.gone, self.errors()), ([], []), "told once, by the start's failure")
        self.clock.advance(1.0)
        self.report("/dev/pts/4")
        self.assertEqual(self.back, ["/dev/pts/4"])

    def test_a_child_that_does_not_report_in_time_is_stopped_before_the_next(self) -> None:
        self.running()
        self.kill()
        self.clock.advance(1.0)
        self.clock.advance(20.0)
        self.assertEqual(self.child().transport.events, ["close stdin", "TERM"])
        self.assertEqual(len(self.clock.spawned), 2, "none beside a child still ending")
        self.child().processEnded(ended(by=signal.SIGTERM))
        self.assertEqual(self.gone[-1], "the simulated bus did not start: it did not report its pty within 20 s; "
                                        "restarting it in 2 s")

    def test_stop_ends_the_child_without_a_word(self) -> None:
        self.running()
        process = self.child().transport
        stopped = self.bus.stop()
        self.assertEqual(process.events, ["close stdin", "TERM"])
        self.assertNoResult(stopped)
        self.child().processEnded(ended(0))
        self.successResultOf(stopped)
        self.assertEqual((self.gone, self.errors(), self.clock.getDelayedCalls()), ([], [], []))

    def test_stop_cancels_a_pending_restart(self) -> None:
        self.running()
        self.kill()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(self.bus.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60.0)
        self.assertEqual(len(self.clock.spawned), 1)

    def test_stop_ends_a_child_being_restarted(self) -> None:
        self.running()
        self.kill()
        self.clock.advance(1.0)
        process = self.child().transport
        stopped = self.bus.stop()
        self.assertEqual(process.events, ["close stdin", "TERM"])
        self.child().processEnded(ended(by=signal.SIGTERM))
        self.successResultOf(stopped)
        self.assertEqual(len(self.gone), 1, "the kill only")
        self.assertEqual(self.back, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_the_first_child_starts(self) -> None:
        d = self.bus.start()
        stopped = self.bus.stop()
        self.failureResultOf(d, SimulatorFailed)
        self.child().outReceived(b"/dev/pts/7\n")
        self.child().processEnded(ended(0))
        self.successResultOf(stopped)
        self.assertEqual((self.gone, self.back, self.clock.getDelayedCalls()), ([], [], []))


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
        self.assertIsInstance(simulator, SupervisedSimulator)
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
        gateway = self.gateway(simulator_factory=lambda clock, n: SupervisedSimulator(
            clock, n, child_factory=lambda clock, n: SimulatorProcess(clock, n, command=command)))
        line = gateway.lines[1]
        yield line.when_device_known().addTimeout(START_TIMEOUT, reactor)
        self.assertEqual(line.stats.state, LINE_ERROR)
        self.assertEqual(line.stats.error, "the simulated bus did not start: it exited with code 1: no bus here; "
                                           "restarting it in 1 s")
        self.assertFalse(line.is_open)
        self.assertFalse(line.waiting_for_device)
        # The restart due in 1 s is cancelled by the service's stop (trial fails a test that leaves a timer).

    @defer.inlineCallbacks
    def test_a_killed_child_is_started_again_and_the_line_moves_to_its_pty(self) -> None:
        log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        gateway = self.gateway()
        simulator, line = gateway.simulators[1], gateway.lines[1]
        yield when_open(line)
        first = simulator.pid
        states: list[bool] = []
        back: defer.Deferred = defer.Deferred()
        line.on_state_change(lambda is_open: (states.append(is_open), is_open and back.callback(None)))
        os.kill(first, signal.SIGKILL)
        yield back.addTimeout(START_TIMEOUT, reactor)
        self.assertTrue(pidfd_ended(first, 0))
        self.assertEqual(states, [False, True])
        second = simulator.pid
        self.assertNotIn(second, (None, first))
        self.assertTrue(alive(second))
        self.assertEqual((line.stats.state, line.device), (LINE_OPEN, simulator.path))
        self.assertTrue(is_pty(line.device))
        reading = yield gateway.read_meter(1, 10)
        self.assertEqual(reading.primary, 10)
        said = [formatEvent(e) for e in log]
        self.assertIn("Line 1: the simulated bus ended (it was ended by signal 9); restarting it in 1 s", said)
        self.assertIn(f"Line 1: simulated M-Bus on {line.device} (process {second})", said)
        yield gateway.stopService()
        self.assertTrue(pidfd_ended(second, 0))

    @defer.inlineCallbacks
    def test_the_line_waits_while_its_bus_restarts(self) -> None:
        """The service's part: the line follows a bus's `on_restart` (here in-process, told by the test)."""
        restarting: list[InProcessRestartingBus] = []

        def factory(clock: Any, n: int) -> InProcessRestartingBus:
            restarting.append(InProcessRestartingBus(clock, n))
            return restarting[-1]

        gateway = self.gateway(simulator_factory=factory)
        line, bus = gateway.lines[1], restarting[0]
        yield when_open(line)
        bus.go("the simulated bus ended (test); restarting it in 1 s")
        self.assertEqual((line.is_open, line.stats.state, line.stats.error, line.device),
                         (False, LINE_ERROR, "the simulated bus ended (test); restarting it in 1 s", ""))
        self.assertEqual(line.stats.reopen_attempts, 0, "the old path is not tried again")
        path = bus.come_back()
        self.assertEqual((line.is_open, line.device), (True, path))
        reading = yield gateway.read_meter(1, 2)
        self.assertEqual(reading.primary, 2)


class InProcessRestartingBus:
    """The in-process bus with `on_restart`: the test makes it go (`go`) and come back on a new pty (`come_back`)."""

    def __init__(self, clock: Any, n: int) -> None:
        # Instant, not paced: what is tested is the line following the bus, not wire time (a paced bus in
        # this process can be starved on a loaded machine).
        self.bus = SimulatedBus(clock, MeterBus(default_meters()))
        self.listeners: list[tuple[Any, Any]] = []

    def on_restart(self, gone: Any, back: Any) -> None:
        self.listeners.append((gone, back))

    def start(self) -> str:
        return self.bus.start()

    def stop(self) -> None:
        self.bus.stop()

    def go(self, why: str) -> None:
        self.bus.stop()
        for gone, _ in self.listeners:
            gone(why)

    def come_back(self) -> str:
        path = self.bus.start()
        for _, back in self.listeners:
            back(path)
        return path

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

    def test_a_stop_by_systemd_signals_every_process_and_nothing_is_said(self) -> None:
        """
        systemd's stop (KillMode=control-group) sends SIGTERM to every process
        of the unit at once: the bus ignores it and ends when the gateway,
        having closed its line, closes the bus's standard input.
        """
        gateway, pid = self.start()
        assert gateway.process is not None
        os.kill(pid, signal.SIGTERM)  # the bus first: the worst order
        self.assertFalse(pidfd_ended(pid, 0.5), "the bus outlives a SIGTERM of its own")
        os.killpg(gateway.process.pid, signal.SIGTERM)
        self.assertEqual(gateway.process.wait(timeout=START_TIMEOUT), -signal.SIGTERM, "twistd's end on a SIGTERM")
        self.assertTrue(pidfd_ended(pid))
        log = gateway.log()
        for failure in ("went away", "simulated bus ended", "restarting", "killing it", "Traceback"):
            self.assertNotIn(failure, log)
        self.assertIn("Main loop terminated", log)

    def test_a_bus_killed_by_the_operator_is_started_again(self) -> None:
        gateway, pid = self.start()
        os.kill(pid, signal.SIGKILL)
        found = gateway.wait_log(lambda log: re.search(r"Line 1: simulated M-Bus on (\S+) \(process (?!%d\))(\d+)\)"
                                                       % pid, log), "the bus started again")
        second = int(found.group(2))
        self.addCleanup(self.end, second)
        gateway.wait_log(lambda log: re.search(r"Line 1: (opened|\S+ is back at)", log.split(found.group(0))[-1]),
                         "line 1 open on the new bus")
        self.assertIn("Line 1: the simulated bus ended (it was ended by signal 9); restarting it in 1 s",
                      gateway.log())
        gateway.stop()
        self.assertTrue(pidfd_ended(second))
