"""Tests for cmegw.serial.line over real pty pairs."""

import os
import termios
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from cmegw.config.model import LineConfig
from cmegw.serial.adapter import KIND_PTY, KIND_UART, SCHEDULING_MARGIN, AdapterInfo
from cmegw.serial.line import SerialLine, read_icount
from cmegw.serial import line as line_module
from cmegw.stats import LINE_ERROR, LINE_OPEN
from tests.support import open_pty


class LineTestCase(TestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.link = self.dir / "ttyMBUS0"
        self.fds = []
        self.plug()

    def plug(self):
        master, slave, path = open_pty()
        self.fds += [master, slave]
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(path)
        self.master, self.slave = master, slave

    def unplug(self):
        os.close(self.master)
        os.close(self.slave)
        self.fds = [fd for fd in self.fds if fd not in (self.master, self.slave)]
        self.link.unlink()

    def tearDown(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def start(self, **kw):
        line = SerialLine(1, LineConfig(device=str(self.link), **kw), reactor)
        line.startService()
        self.addCleanup(line.stopService)
        return line

    @defer.inlineCallbacks
    def wait(self, condition, timeout=10.0):
        for _ in range(int(timeout / 0.02)):
            if condition():
                return
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.fail("condition not met in time")


class SerialLineTests(LineTestCase):
    def test_opens_8e1_at_configured_baud(self):
        line = self.start(baud_rate=2400)
        self.assertEqual(line.stats.state, LINE_OPEN)
        attrs = termios.tcgetattr(self.slave)
        cflag = attrs[2]
        self.assertEqual(attrs[4], termios.B2400)
        self.assertEqual(cflag & termios.CSIZE, termios.CS8)
        self.assertFalse(cflag & termios.CSTOPB)
        # Linux ptys drop PARENB; what was asked of the device is pyserial's:
        self.assertEqual(line.transport.framing, (8, "E", 1))

    def test_adapter_prepared_and_published(self):
        """At open the adapter is prepared and described; a pty has no low-latency setting and opens anyway."""
        line = self.start(baud_rate=2400)
        self.assertEqual(line.stats.state, LINE_OPEN)
        self.assertEqual(line.adapter.kind, KIND_PTY)
        self.assertEqual(line.stats.adapter, "pseudo-terminal (simulated bus)")
        self.assertEqual(line.stats.low_latency, "not supported by the driver")
        self.assertEqual(line.stats.latency_timer, "none")
        self.assertAlmostEqual(line.delivery_slack(), SCHEDULING_MARGIN)
        self.assertEqual((line.stats.slack, line.stats.adapter_slack), (line.delivery_slack(), SCHEDULING_MARGIN))

    def test_extra_slack_applies_live(self):
        line = self.start()
        line.apply(LineConfig(device=str(self.link), extra_slack=0.5))
        self.assertAlmostEqual(line.delivery_slack(), SCHEDULING_MARGIN + 0.5)
        self.assertAlmostEqual(line.stats.slack, SCHEDULING_MARGIN + 0.5)
        self.assertEqual(line.stats.extra_slack, 0.5)

    def test_adapter_probed_at_every_open(self):
        seen = []

        def probe(fd, device):
            seen.append(device)
            return AdapterInfo(KIND_UART, "serial port ttyS0", "on", fifo_characters=4)

        line = SerialLine(1, LineConfig(device=str(self.link), baud_rate=300), reactor, probe=probe)
        line.startService()
        self.addCleanup(line.stopService)
        self.assertAlmostEqual(line.delivery_slack(), SCHEDULING_MARGIN + 4 * 11 / 300, msg="a FIFO's 4 characters")
        line.stopService()
        line.startService()
        self.assertEqual(seen, [str(self.link)] * 2)

    def test_reopen_pty(self):
        """A pty refuses a parity-only tcsetattr; reopening it must still work."""
        line = self.start()
        line.stopService()
        line.startService()
        self.assertEqual(line.stats.state, LINE_OPEN, line.stats.error)

    def test_baud_changed_live(self):
        line = self.start()
        transport = line.transport
        line.apply(LineConfig(device=str(self.link), baud_rate=300))
        self.assertIs(line.transport, transport, "the line stays open")
        self.assertEqual(termios.tcgetattr(self.slave)[4], termios.B300)
        self.assertEqual(line.stats.baud_rate, 300)

    @defer.inlineCallbacks
    def test_bytes_and_counters(self):
        line = self.start()
        got = []
        line.attach(got.append)
        self.assertTrue(line.write(b"\x10\x40\x01\x41\x16"))
        self.assertEqual(os.read(self.master, 100), b"\x10\x40\x01\x41\x16")
        os.write(self.master, b"\xe5")
        yield self.wait(lambda: got)
        self.assertEqual(b"".join(got), b"\xe5")
        self.assertEqual((line.stats.rx_bytes, line.stats.tx_bytes), (1, 5))

    def test_error_counters_unavailable_on_pty(self):
        """A pty keeps no error counters: they are shown as unavailable, not as zero."""
        line = self.start()
        self.assertIsNone(read_icount(self.slave))
        line._refresh()
        self.assertIsNone(line.stats.parity_errors)
        self.assertIsNone(line.stats.framing_errors)
        self.assertEqual(line.stats.queued_rx, 0)

    def test_counters_not_asked_again_of_a_driver_without(self):
        """A driver that had no counters at the open is not asked every second (the refresh runs between bytes)."""
        line = self.start()
        self.patch(line_module, "read_icount", lambda fd: self.fail("TIOCGICOUNT asked again"))
        line._refresh()
        self.assertIsNone(line.stats.overrun_errors)
        self.assertEqual(line.stats.queued_tx, 0)

    def test_exclusive(self):
        self.start()
        other = SerialLine(2, LineConfig(device=str(self.link)), reactor)
        other.startService()
        self.addCleanup(other.stopService)
        self.assertEqual(other.stats.state, LINE_ERROR)
        self.assertIn("in use by another program", other.stats.error)

    def test_missing_device(self):
        line = SerialLine(1, LineConfig(device=str(self.dir / "nothing")), reactor)
        line.startService()
        self.addCleanup(line.stopService)
        self.assertEqual(line.stats.state, LINE_ERROR)
        self.assertIn("no such device", line.stats.error)
        self.assertFalse(line.write(b"x"))

    @defer.inlineCallbacks
    def test_unplugged_and_back(self):
        line = self.start(reopen_interval=1)
        states = []
        line.on_state_change(states.append)
        self.unplug()
        yield self.wait(lambda: line.stats.state == LINE_ERROR)
        self.assertIn("went away", line.stats.error)
        self.assertFalse(line.write(b"lost"))
        yield task.deferLater(reactor, 1.2, lambda: None)
        self.assertEqual(line.stats.state, LINE_ERROR, "still away: retried, not crashed")
        self.plug()
        yield self.wait(lambda: line.stats.state == LINE_OPEN, timeout=5)
        self.assertEqual(states, [False, True])
        self.assertTrue(line.write(b"\xe5"))
        self.assertEqual(os.read(self.master, 10), b"\xe5")


class ReopenTimingTests(TestCase):
    def test_retry_interval(self):
        clock = task.Clock()
        clock.running = True
        line = SerialLine(1, LineConfig(device="/nonexistent/tty", reopen_interval=3), clock)
        line.running = True
        line._open()
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [3.0])
        clock.advance(3)
        self.assertEqual(line.stats.reopen_attempts, 2)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [6.0])
        line.running = False
        for call in clock.getDelayedCalls():
            call.cancel()


class DeviceToComeTests(LineTestCase):
    """A line whose device's path comes later (`device_ready`: the simulated bus's process starting)."""

    def line(self, ready):
        line = SerialLine(1, LineConfig(device="/dev/ttyUSB0"), reactor, device_ready=ready)
        line.startService()
        self.addCleanup(line.stopService)
        return line

    def test_opens_once_the_path_comes(self):
        ready = defer.Deferred()
        line = self.line(ready)
        known = line.when_device_known()
        self.assertFalse(line.is_open, "the configured device is not tried")
        self.assertEqual(line.device, "")
        self.assertNoResult(known)
        ready.callback(str(self.link))
        self.assertEqual((line.stats.state, line.device, line.stats.device), (LINE_OPEN, str(self.link),
                                                                               str(self.link)))
        self.successResultOf(known)
        self.successResultOf(line.when_device_known())

    def test_a_path_known_before_the_start_opens_at_the_start(self):
        line = self.line(defer.succeed(str(self.link)))
        self.assertEqual(line.stats.state, LINE_OPEN)

    def test_a_device_that_never_comes_is_the_line_error(self):
        ready = defer.Deferred()
        line = self.line(ready)
        known = line.when_device_known()
        clock = task.Clock()
        line.clock = clock
        ready.errback(RuntimeError("the simulated bus did not start: it exited with code 1"))
        self.successResultOf(known)
        self.assertEqual((line.stats.state, line.stats.error),
                         (LINE_ERROR, "the simulated bus did not start: it exited with code 1"))
        self.assertEqual(clock.getDelayedCalls(), [], "nothing to reopen")
        self.assertFalse(line.is_open)

    def test_stopped_while_it_comes(self):
        ready = defer.Deferred()
        line = self.line(ready)
        known = line.when_device_known()
        line.stopService()
        self.successResultOf(known)
        ready.errback(RuntimeError("the simulated bus did not start: it was ended by signal 15"))
        self.assertNotEqual(line.stats.state, LINE_ERROR, "a stop's end of the bus is no error")


class DeviceGoneTests(LineTestCase):
    """`device_gone` and `apply(device=...)`: the line waits for a device's new path (a simulated bus restarting)."""

    def test_gone_closes_without_reopening_and_apply_opens_the_new_path(self):
        line = self.start()
        clock = line.clock = task.Clock()
        states = []
        line.on_state_change(states.append)
        line.device_gone("the simulated bus ended (it was ended by signal 9); restarting it in 1 s")
        self.assertEqual((line.is_open, line.stats.state, line.stats.error, line.device, line.stats.device),
                         (False, LINE_ERROR, "the simulated bus ended (it was ended by signal 9); restarting it in 1 s",
                          "", ""))
        self.assertEqual(states, [False])
        self.assertEqual(clock.getDelayedCalls(), [], "the old path is not tried again")
        self.unplug()
        self.plug()
        line.apply(line.config, device=str(self.link))
        self.assertEqual((line.is_open, line.stats.state, line.stats.error, line.stats.device),
                         (True, LINE_OPEN, "", str(self.link)))
        self.assertEqual(states, [False, True])
        self.assertTrue(line.write(b"\xe5"))
        self.assertEqual(os.read(self.master, 10), b"\xe5")

    @defer.inlineCallbacks
    def test_gone_cancels_a_pending_reopen(self):
        line = self.start(reopen_interval=3)
        clock = line.clock = task.Clock()
        self.unplug()
        yield self.wait(lambda: line.stats.state == LINE_ERROR)
        self.assertIn("went away", line.stats.error)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        line.device_gone("restarting")
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(line.stats.error, "restarting")

    def test_a_new_device_cancels_the_reopen_of_the_old(self):
        """Without it the old reopen would open the device a second time, which its lock refuses: a lost line."""
        line = SerialLine(1, LineConfig(device=str(self.dir / "nothing"), reopen_interval=3), reactor)
        clock = line.clock = task.Clock()
        line.startService()
        self.addCleanup(line.stopService)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        line.apply(line.config, device=str(self.link))
        self.assertEqual(line.stats.state, LINE_OPEN)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_path_after_a_device_that_never_came(self):
        ready = defer.Deferred()
        line = SerialLine(1, LineConfig(device="/dev/ttyUSB0"), reactor, device_ready=ready)
        line.startService()
        self.addCleanup(line.stopService)
        ready.errback(RuntimeError("the simulated bus did not start: it exited with code 1; restarting it in 1 s"))
        self.assertEqual(line.stats.state, LINE_ERROR)
        line.apply(line.config, device=str(self.link))
        self.assertEqual((line.stats.state, line.device_missing), (LINE_OPEN, None))
