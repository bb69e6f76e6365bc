"""Tests for cmegw.mbus.transparent: the transparent tunnel's path through the arbiter, and the master breaking in."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import TestCase

from cmegw.mbus import frames
from cmegw.mbus.arbiter import REPLY_OK, REPLY_SILENT, BusArbiter
from cmegw.mbus.timing import character_time, first_byte_timeout
from cmegw.mbus.transparent import HOLD_LIMIT
from cmegw.testing import FakeLine
from tests.test_mbus_arbiter import EPS, IDLE, RSP, SLACK, Producer, outcome, pump


class TransparentTests(TestCase):
    """The transparent tunnel's path through the arbiter, and the master breaking in."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.line = FakeLine()
        self.arbiter = BusArbiter(1, self.line, self.clock, slack=lambda: SLACK)
        self.port = self.arbiter.port
        self.to_client = bytearray()
        self.port.attach(self.to_client.extend)
        self.client = Producer()
        self.port.registerProducer(self.client, True)
        self.gap = first_byte_timeout(2400, SLACK)

    def test_bytes_pass_straight_through(self) -> None:
        self.assertIs(self.line.receiver.__self__, self.to_client, "the line calls the tunnel's receiver directly")
        self.port.write(b"\x10\x40\x01\x41\x16")
        self.line.feed(frames.ACK)
        self.assertEqual(bytes(self.line.written), b"\x10\x40\x01\x41\x16")
        self.assertEqual(bytes(self.to_client), frames.ACK)
        self.assertIs(self.port.config, self.line.config)

    def test_quiet_line_taken_at_once(self) -> None:
        box = outcome(self.arbiter.transact(frames.snd_nke(3)))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3))
        self.line.feed(frames.ACK)
        self.assertEqual(box[0].outcome, REPLY_OK)
        self.assertEqual(bytes(self.to_client), b"", "the master's reply is not the client's")
        self.assertEqual(self.arbiter.stats.takeovers, 1)
        self.line.feed(b"\xe5")
        self.assertEqual(bytes(self.to_client), b"\xe5", "after the transaction the client gets the line back")

    def test_a_client_write_in_the_idle_after_a_transaction_waits_for_it(self) -> None:
        """33 bit times of idle after the master's last character, before the client's request too."""
        self.arbiter.transact(frames.snd_nke(3))
        self.clock.advance(0.03)
        self.line.feed(frames.ACK)
        self.clock.advance(IDLE / 2)
        self.port.write(frames.req_ud2(1))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3))
        self.clock.advance(IDLE / 2)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3) + frames.req_ud2(1))
        self.port.write(b"\x10")
        self.assertEqual(bytes(self.line.written)[-1:], b"\x10", "then straight through again")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waits_for_a_quiet_gap_after_client_traffic(self) -> None:
        request = frames.req_ud2(1)
        self.port.write(request)
        box = outcome(self.arbiter.transact(frames.snd_nke(3)))
        self.assertEqual(bytes(self.line.written), request, "the client's exchange runs")
        pump(self.clock, 0.1)
        self.line.feed(RSP)  # the client's reply arrives
        self.assertEqual(bytes(self.to_client), RSP)
        pump(self.clock, self.gap - 0.05)
        self.assertEqual(bytes(self.line.written), request, "not quiet for long enough yet")
        pump(self.clock, self.gap)
        self.assertEqual(bytes(self.line.written), request + frames.snd_nke(3))
        self.line.feed(frames.ACK)
        self.assertEqual(box[0].outcome, REPLY_OK)
        self.assertEqual(bytes(self.to_client), RSP)

    def test_the_clients_next_request_lets_the_master_in(self) -> None:
        """A client polling back to back leaves no quiet gap: its next request marks the bus free."""
        self.port.write(frames.snd_nke(1))
        box = outcome(self.arbiter.transact(frames.snd_nke(3)))
        pump(self.clock, 0.05)
        self.line.feed(frames.ACK)
        self.assertEqual(bytes(self.to_client), frames.ACK)
        pump(self.clock, 0.05)
        self.port.write(frames.req_ud2(1))  # the client's next request: held, the master goes first
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.snd_nke(3))
        self.line.feed(frames.ACK)
        self.assertEqual(box[0].outcome, REPLY_OK)
        self.assertEqual(bytes(self.to_client), frames.ACK, "the master's E5 is not the client's")
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.snd_nke(3), "the line idles first")
        self.clock.advance(IDLE)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.snd_nke(3) + frames.req_ud2(1))
        self.line.feed(RSP)
        self.assertEqual(bytes(self.to_client), frames.ACK + RSP)
        self.assertLess(self.clock.seconds(), self.gap, "no quiet gap was needed")

    def test_claim_ends_when_the_waiting_transaction_is_cancelled(self) -> None:
        self.port.write(frames.snd_nke(1))
        waiting = self.arbiter.transact(frames.snd_nke(3))
        self.assertTrue(self.port.holding, "claiming while it waits")
        outcome(waiting)
        waiting.cancel()
        self.assertFalse(self.port.holding)
        self.port.write(frames.req_ud2(1))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.req_ud2(1))
        box = outcome(self.arbiter.transact(frames.snd_nke(3)))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.req_ud2(1), "still not quiet")
        self.assertEqual(box, [])

    def test_client_bytes_held_during_a_transaction_then_sent(self) -> None:
        box = outcome(self.arbiter.transact(frames.snd_nke(3)))
        self.assertTrue(self.port.write(frames.req_ud2(1)))
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3), "held, not on the bus")
        self.line.feed(frames.ACK)
        self.assertEqual(box[0].outcome, REPLY_OK)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3), "33 bit times of idle after the E5 first")
        self.clock.advance(IDLE - 2 * EPS)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3))
        self.clock.advance(2 * EPS)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3) + frames.req_ud2(1))
        self.line.feed(RSP)
        self.assertEqual(bytes(self.to_client), RSP)
        self.assertEqual(self.arbiter.stats.held_bytes, 5)

    def test_scan_interleaves_with_the_client(self) -> None:
        """A client's request waits one master transaction at most; then the master waits for quiet."""
        master = [outcome(self.arbiter.transact(frames.snd_nke(a))) for a in (1, 2, 3)]
        self.port.write(frames.req_ud2(9))  # held behind SND_NKE 1
        pump(self.clock, first_byte_timeout(2400, SLACK) + 0.1)  # address 1 is silent
        self.assertEqual(master[0][0].outcome, REPLY_SILENT)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.req_ud2(9))
        pump(self.clock, 0.05)
        self.line.feed(RSP)
        self.assertEqual(bytes(self.to_client), RSP)
        pump(self.clock, self.gap + 0.1)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1) + frames.req_ud2(9) + frames.snd_nke(2))
        self.line.feed(frames.ACK)
        self.clock.advance(IDLE)
        self.assertEqual(bytes(self.line.written)[-5:], frames.snd_nke(3), "no client bytes: the master goes on")
        self.line.feed(frames.ACK)
        self.assertTrue(self.port.holding, "the line idles before the client may write")
        self.clock.advance(IDLE)
        self.assertEqual([m[0].outcome for m in master], [REPLY_SILENT, REPLY_OK, REPLY_OK])
        self.port.write(frames.req_ud2(9))
        self.assertEqual(bytes(self.line.written)[-5:], frames.req_ud2(9), "the scan is over: straight through")
        self.assertFalse(self.port.holding)

    def test_hold_is_bounded_and_pauses_the_client(self) -> None:
        self.arbiter.transact(frames.req_ud2(3))
        self.port.write(b"x" * (HOLD_LIMIT - 1))
        self.assertFalse(self.client.paused)
        self.port.write(b"yy")
        self.assertTrue(self.client.paused)
        self.assertEqual(self.arbiter.stats.held_dropped, 1)
        self.line.feed(RSP)
        self.clock.advance(IDLE)
        self.assertFalse(self.client.paused, "resumed when the bus goes back")
        self.assertEqual(len(self.line.written), 5 + HOLD_LIMIT)

    def test_client_pausing_the_line_does_not_stop_a_transaction(self) -> None:
        self.port.pauseProducing()
        self.assertTrue(self.line.paused)
        box = outcome(self.arbiter.transact(frames.snd_nke(3)))
        self.assertFalse(self.line.paused, "the master must hear its reply")
        self.line.feed(frames.ACK)
        self.assertEqual(box[0].outcome, REPLY_OK)
        self.clock.advance(IDLE)
        self.assertTrue(self.line.paused, "paused again for the client")
        self.port.resumeProducing()
        self.assertFalse(self.line.paused)

    def test_line_pauses_reach_the_client_through_the_gate(self) -> None:
        self.line._producer.pauseProducing()
        self.assertTrue(self.client.paused)
        self.line._producer.resumeProducing()
        self.assertFalse(self.client.paused)

    def test_held_bytes_of_a_client_that_left_are_dropped(self) -> None:
        self.arbiter.transact(frames.snd_nke(3))
        self.port.write(b"abc")
        self.port.unregisterProducer()
        self.line.feed(frames.ACK)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(3))
        self.assertEqual(self.arbiter.stats.held_dropped, 3)

    def test_reattach_while_owning_takes_effect_on_release(self) -> None:
        self.arbiter.transact(frames.snd_nke(3))
        other = bytearray()
        self.port.attach(other.extend)
        self.line.feed(frames.ACK)
        self.clock.advance(IDLE)
        self.line.feed(b"z")
        self.assertEqual((bytes(other), bytes(self.to_client)), (b"z", b""))


class ScanAndTunnelClientTests(TestCase):
    """A transparent tunnel client polling while the gateway's master scans: it waits one transaction at most."""

    def test_client_waits_at_most_one_transaction(self) -> None:
        from cmegw.mbus.master import Master
        from cmegw.mbus.meterbus import MeterBus, default_meters
        from cmegw.testing import BusLine

        clock = task.Clock()
        sent: list[tuple[float, bytes]] = []

        class TimedLine(BusLine):
            def write(self, data: bytes) -> bool:
                sent.append((clock.seconds(), bytes(data)))
                return super().write(data)

        line = TimedLine(MeterBus(default_meters()), clock)
        arbiter = BusArbiter(1, line, clock, slack=lambda: SLACK)
        scan = Master(1, arbiter, clock).scan_primary()
        pump(clock, 0.5)
        request = frames.req_ud2(1)
        asked: list[float] = []
        answers: list[bytes] = []

        def ask() -> None:
            asked.append(clock.seconds())
            arbiter.port.write(request)

        def answered(data: bytes) -> None:
            answers.append(data)
            if len(asked) < 15:
                clock.callLater(0.03, ask)  # the head-end's next request, a little after its answer

        arbiter.port.attach(answered)
        ask()
        for _ in range(20000):
            if len(answers) == 15:
                break
            clock.advance(0.001)
        self.assertTrue(scan.running)
        self.assertEqual(len(answers), 15)
        self.assertTrue(all(a.startswith(b"\x68") for a in answers), "every answer is the client's RSP_UD")
        on_line = [t for t, data in sent if data == request]
        waits = [out - asked_at for asked_at, out in zip(asked, on_line)]
        longest_probe = 5 * character_time(2400) + first_byte_timeout(2400, SLACK)
        self.assertLessEqual(max(waits), longest_probe + IDLE + 0.002, waits)
        self.assertGreater(max(waits), 0.1, "some requests did wait behind a probe")
        probes = [t for t, data in sent if data[1:2] == bytes([frames.SND_NKE]) and asked[0] < t < on_line[-1]]
        self.assertGreaterEqual(len(probes), len(asked) - 1, "a probe between each two of the client's exchanges")
