"""Tests for cmegw.mbus.arbiter (and its timing): one transaction at a time on a line, a shared bus on the wire."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from cmegw.config.model import LineConfig
from cmegw.mbus import frames
from cmegw.mbus.arbiter import (
    REPLY_GARBLED,
    REPLY_INVALID,
    REPLY_NOT_EXPECTED,
    REPLY_OK,
    REPLY_SILENT,
    REPLY_TRUNCATED,
    BusArbiter,
    BusBusy,
)
from cmegw.mbus.timing import (
    INTER_TELEGRAM_BITS,
    character_time,
    collision_settle,
    defragmentation_timeout,
    exchange_floor,
    first_byte_timeout,
    reply_timeout,
    silent_floor,
    transaction_floor,
)
from cmegw.serial.line import LineUnavailable
from cmegw.testing import FakeLine

RSP = frames.long_frame(0x08, 5, 0x72, bytes(range(60)))
#: A hair more than an exact delay: the clock's sums of floats may fall short by one ulp.
EPS = 1e-9
IDLE = INTER_TELEGRAM_BITS / 2400 + EPS
#: The line's delivery slack in these tests (a pty's would be 4 ms, an FTDI's 16 ms + 4 ms).
SLACK = 0.010


def pump(clock: task.Clock, seconds: float, step: float = 0.005) -> None:
    """Advance in small steps: `Clock.advance` runs every due call at the end time, not at its own."""
    clock.pump([step] * round(seconds / step))


def outcome(d: defer.Deferred) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


class Producer:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class TimingTests(TestCase):
    def test_first_byte_timeout_per_baud(self) -> None:
        # EN 13757-2: 330 bit times + 50 ms, + 11 bits for the character, + the line's slack.
        self.assertAlmostEqual(first_byte_timeout(2400, 0.0), 341 / 2400 + 0.05, places=9)
        self.assertAlmostEqual(first_byte_timeout(2400, 0.1), 0.29208, places=4)  # libmbus' 100 ms
        self.assertAlmostEqual(first_byte_timeout(300, SLACK), 341 / 300 + 0.05 + SLACK, places=9)
        self.assertAlmostEqual(first_byte_timeout(38400, SLACK), 341 / 38400 + 0.05 + SLACK, places=9)

    def test_reply_timeout_covers_the_longest_telegram(self) -> None:
        self.assertAlmostEqual(reply_timeout(2400, SLACK) - first_byte_timeout(2400, SLACK), 261 * 11 / 2400)
        self.assertAlmostEqual(character_time(2400), 0.004583, places=5)
        self.assertAlmostEqual(defragmentation_timeout(2400, SLACK), 3 * character_time(2400) + SLACK)

    def test_floors(self) -> None:
        # A silent SND_NKE: the request, then 330 bit times + 50 ms (the 22.9 + 187.5 ms).
        self.assertAlmostEqual(silent_floor(5, 2400), 0.0229 + 0.1875, places=4)
        self.assertEqual(exchange_floor(5, 0, 2400), silent_floor(5, 2400))
        self.assertEqual(exchange_floor(5, 1, 2400), transaction_floor(5, 1, 2400))
        self.assertAlmostEqual(exchange_floor(5, 0, 2400, expect_reply=False), (55 + 33) / 2400)

    def test_collision_settle(self) -> None:
        """One character and the slack after a clean E5, at least the 33-bit idle the next request waits anyway."""
        self.assertEqual(collision_settle(2400, 0.005), INTER_TELEGRAM_BITS / 2400)
        self.assertAlmostEqual(collision_settle(2400, 0.021), 11 / 2400 + 0.021)
        self.assertEqual(collision_settle(300, 0.005), INTER_TELEGRAM_BITS / 300)

    def test_transaction_floor(self) -> None:
        # SND_NKE and E5: 6 characters, 11 bits turnaround, 33 bits idle.
        self.assertAlmostEqual(transaction_floor(5, 1, 2400), (66 + 11 + 33) / 2400)


class TransactionTests(TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.line = FakeLine()
        self.arbiter = BusArbiter(1, self.line, self.clock, slack=lambda: SLACK)
        self.baud = 2400

    def sending(self, request: bytes) -> float:
        return len(request) * character_time(self.baud)

    def test_clean_reply_reassembled_from_pieces(self) -> None:
        request = frames.req_ud2(5)
        box = outcome(self.arbiter.transact(request))
        self.assertEqual(bytes(self.line.written), request)
        self.clock.advance(0.05)
        self.line.feed(RSP[:1])
        self.line.feed(RSP[1:3])
        self.clock.advance(0.02)
        self.line.feed(RSP[3:40])
        self.assertEqual(box, [])
        self.line.feed(RSP[40:])
        [reply] = box
        self.assertEqual(reply.outcome, REPLY_OK)
        self.assertEqual(reply.data, RSP)
        self.assertEqual((reply.frame.kind, reply.frame.a, reply.frame.ci), ("long", 5, 0x72))
        self.assertAlmostEqual(reply.duration, 0.07)
        self.assertAlmostEqual(reply.floor, transaction_floor(len(request), len(RSP), self.baud))
        self.assertEqual(self.arbiter.stats.answered, 1)

    def test_largest_gap_inside_a_reply_is_kept(self) -> None:
        """The delay between two deliveries beyond their characters' wire time: the adapter's, measured."""
        box = outcome(self.arbiter.transact(frames.req_ud2(5)))
        self.line.feed(RSP[:2])
        self.clock.advance(0.015)
        self.line.feed(RSP[2:4])
        self.clock.advance(0.005)
        self.line.feed(RSP[4:])
        self.assertEqual(box[0].outcome, REPLY_OK)
        self.assertAlmostEqual(self.arbiter.stats.reply_gap_peak, 0.015 - 2 * character_time(self.baud))

    def test_slack_is_read_at_each_transaction(self) -> None:
        """The line's slack changes when it reopens on another adapter or the setting changes."""
        slack = [0.0]
        arbiter = BusArbiter(2, FakeLine(), self.clock, slack=lambda: slack[0])
        for value in (0.0, 0.5):
            slack[0] = value
            request = frames.snd_nke(7)
            box = outcome(arbiter.transact(request))
            self.clock.advance(self.sending(request) + first_byte_timeout(self.baud, value) - 0.001)
            self.assertEqual(box, [], value)
            self.clock.advance(0.001 + EPS)
            self.assertEqual(box[0].outcome, REPLY_SILENT)
            self.assertAlmostEqual(box[0].floor, silent_floor(len(request), self.baud))

    def test_silence_after_the_first_byte_timeout(self) -> None:
        request = frames.snd_nke(7)
        box = outcome(self.arbiter.transact(request))
        wait = self.sending(request) + first_byte_timeout(self.baud, SLACK)
        self.clock.advance(wait - 0.001)
        self.assertEqual(box, [])
        self.clock.advance(0.001 + EPS)
        self.assertEqual(box[0].outcome, REPLY_SILENT)
        self.assertEqual(self.arbiter.stats.silent, 1)
        self.arbiter.transact(frames.snd_nke(8))
        self.assertEqual(bytes(self.line.written), request + frames.snd_nke(8),
                         "the line has been idle for the whole answer window: the next request goes at once")

    def test_a_reply_read_in_the_turn_after_the_timeout_is_taken(self) -> None:
        """A held-up reactor runs the due timeout before it reads: the reply the kernel holds still counts."""
        request = frames.snd_nke(7)
        box = outcome(self.arbiter.transact(request))
        wait = self.sending(request) + first_byte_timeout(self.baud, SLACK)
        self.clock.callLater(wait, self.line.feed, frames.ACK)  # due with the timeout, run after it
        self.clock.advance(wait)
        self.assertEqual(len(box), 1)
        self.assertEqual(box[0].outcome, REPLY_OK, "not silence, then a stray E5 for the next request")
        self.assertEqual(self.arbiter.stats.stray_bytes, 0)

    def test_a_late_replys_tail_delays_the_next_request(self) -> None:
        """Bytes after a reply was taken as cut short: the next request waits for the line to be quiet."""
        first, second = frames.req_ud2(5), frames.req_ud2(6)
        box = outcome(self.arbiter.transact(first))
        outcome(self.arbiter.transact(second))
        self.line.feed(RSP[:20])
        self.clock.advance(defragmentation_timeout(self.baud, SLACK) + EPS)
        self.assertEqual(len(box), 1, "taken as cut short")
        quiet = defragmentation_timeout(self.baud, SLACK) + INTER_TELEGRAM_BITS / self.baud
        self.clock.advance(quiet / 2)
        self.assertEqual(bytes(self.line.written), first, "the rest of a reply cut short may still come")
        self.line.feed(RSP[20:40])  # its tail, late: the next request must not go out into it
        self.clock.advance(quiet - 0.001)
        self.assertEqual(bytes(self.line.written), first, "the second request waits")
        self.assertEqual(self.arbiter.stats.stray_bytes, 20)
        self.clock.advance(0.001 + EPS)
        self.assertEqual(bytes(self.line.written), first + second)

    def test_timeout_follows_a_live_baud_change(self) -> None:
        self.line.apply(LineConfig(baud_rate=300))
        box = outcome(self.arbiter.transact(frames.snd_nke(7)))
        self.clock.advance(5 * 11 / 300 + first_byte_timeout(300, SLACK) - 0.001)
        self.assertEqual(box, [])
        self.clock.advance(0.001 + EPS)
        self.assertEqual(box[0].outcome, REPLY_SILENT)

    def test_truncated_after_the_defragmentation_timeout(self) -> None:
        box = outcome(self.arbiter.transact(frames.req_ud2(5)))
        self.line.feed(RSP[:15])
        self.clock.advance(defragmentation_timeout(self.baud, SLACK) - 0.001)
        self.assertEqual(box, [])
        self.clock.advance(0.001 + EPS)
        self.assertEqual(box[0].outcome, REPLY_TRUNCATED)
        self.assertEqual(box[0].data, RSP[:15])
        self.assertIn("announces", box[0].error)

    def test_garbage_waits_for_silence_and_is_kept(self) -> None:
        box = outcome(self.arbiter.transact(frames.snd_nke(5)))
        self.line.feed(b"\x21\x93")
        self.clock.advance(defragmentation_timeout(self.baud, SLACK) - 0.001)
        self.line.feed(b"\xff")
        self.assertEqual(box, [])
        self.clock.advance(defragmentation_timeout(self.baud, SLACK) + EPS)
        self.assertEqual(box[0].outcome, REPLY_GARBLED)
        self.assertEqual(box[0].data, b"\x21\x93\xff")

    def test_checksum_error_is_invalid(self) -> None:
        bad = RSP[:-2] + bytes([(RSP[-2] + 1) & 0xFF]) + RSP[-1:]
        box = outcome(self.arbiter.transact(frames.req_ud2(5)))
        self.line.feed(bad)
        self.assertEqual(box[0].outcome, REPLY_INVALID)
        self.assertIn("checksum", box[0].error)

    def test_settle_catches_bytes_after_a_clean_ack(self) -> None:
        box = outcome(self.arbiter.transact(frames.snd_nke(5), settle=0.02))
        self.line.feed(frames.ACK)
        self.clock.advance(0.01)
        self.assertEqual(box, [])
        self.line.feed(b"\x33")
        self.clock.advance(defragmentation_timeout(self.baud, SLACK) + EPS)
        self.assertEqual(box[0].outcome, REPLY_GARBLED)
        box = outcome(self.arbiter.transact(frames.snd_nke(5), settle=0.02))
        self.clock.advance(defragmentation_timeout(self.baud, SLACK) + IDLE + EPS)  # after a garbled answer: quiet
        self.line.feed(frames.ACK)
        self.assertEqual(box, [])
        self.clock.advance(0.02 + EPS)
        self.assertEqual(box[0].outcome, REPLY_OK)

    def test_no_reply_expected(self) -> None:
        request = frames.snd_nke(frames.BROADCAST_NOREPLY)
        box = outcome(self.arbiter.transact(request, expect_reply=False))
        self.clock.advance(self.sending(request) + IDLE)
        self.assertEqual(box[0].outcome, REPLY_NOT_EXPECTED)

    def test_one_at_a_time_in_order_with_idle_between(self) -> None:
        first, second = frames.snd_nke(1), frames.snd_nke(2)
        box1 = outcome(self.arbiter.transact(first))
        box2 = outcome(self.arbiter.transact(second))
        self.assertEqual(bytes(self.line.written), first, "the second waits")
        self.assertEqual(self.arbiter.stats.queue_length, 1)
        self.line.feed(frames.ACK)
        self.assertEqual(box1[0].outcome, REPLY_OK)
        self.assertEqual(bytes(self.line.written), first)
        self.clock.advance(IDLE)
        self.assertEqual(bytes(self.line.written), first + second)
        self.line.feed(frames.ACK)
        self.assertEqual(box2[0].outcome, REPLY_OK)

    def test_bounded_queue(self) -> None:
        self.arbiter.queue_limit = 3
        boxes = [outcome(self.arbiter.transact(frames.snd_nke(a))) for a in range(1, 6)]
        self.assertEqual([len(b) for b in boxes], [0, 0, 0, 0, 1])
        boxes[4][0].trap(BusBusy)
        self.assertEqual(self.arbiter.stats.refused, 1)
        self.assertEqual(self.arbiter.stats.queue_peak, 3)

    def test_cancel_while_waiting_leaves_the_queue(self) -> None:
        self.arbiter.transact(frames.snd_nke(1))
        waiting = self.arbiter.transact(frames.snd_nke(2))
        box = outcome(waiting)
        waiting.cancel()
        box[0].trap(defer.CancelledError)
        self.assertEqual(self.arbiter.stats.queue_length, 0)
        self.clock.advance(5)
        self.assertEqual(bytes(self.line.written), frames.snd_nke(1))

    def test_cancel_on_the_wire_keeps_the_bus_until_the_window_ends(self) -> None:
        running = self.arbiter.transact(frames.req_ud2(5))
        box = outcome(running)
        after = outcome(self.arbiter.transact(frames.snd_nke(9)))
        running.cancel()
        box[0].trap(defer.CancelledError)
        self.line.feed(RSP[:10])
        self.assertEqual(bytes(self.line.written), frames.req_ud2(5), "the late reply must not meet the next request")
        self.line.feed(RSP[10:])
        self.clock.advance(IDLE)
        self.assertEqual(bytes(self.line.written), frames.req_ud2(5) + frames.snd_nke(9))
        self.assertEqual(after, [])

    def test_closed_line(self) -> None:
        self.line.open = False
        box = outcome(self.arbiter.transact(frames.snd_nke(1)))
        box[0].trap(LineUnavailable)
        self.assertIn("line 1 is not open", box[0].getErrorMessage())
        self.assertFalse(self.arbiter.busy)

    def test_stop_fails_what_waits(self) -> None:
        self.arbiter.startService()
        boxes = [outcome(self.arbiter.transact(frames.snd_nke(a))) for a in (1, 2)]
        self.arbiter.stopService()
        for box in boxes:
            box[0].trap(LineUnavailable)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stray_bytes_while_owning_are_counted(self) -> None:
        self.arbiter.transact(frames.snd_nke(1))
        self.arbiter.transact(frames.snd_nke(2))
        self.line.feed(frames.ACK)
        self.line.feed(b"\x00\x01")  # between the two, during the idle time
        self.assertEqual(self.arbiter.stats.stray_bytes, 2)


class SharedBusTests(TestCase):
    """Four sharing-tunnel clients, each reading its own meter in a loop, on a line that keeps wire time."""

    def share(self, baud: int, reads: int = 40, network: float = 0.002,
              delivery: float = 0.0) -> tuple[Any, dict[int, int], float]:
        """
        Four head-ends on one sharing tunnel until each has `reads` replies
        (the next request `network` seconds after a reply); the line, the
        replies by meter and the seconds until the last reply plus the idle.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from cmegw.config.model import TunnelConfig
        from cmegw.mbus.meterbus import default_meters
        from cmegw.testing import run_clock
        from cmegw.tunnel.sharing import SharingFactory
        from tests.mbus_wire import wire_line

        clock = task.Clock()
        turnaround = {1: 11 / baud, 2: 0.005, 5: 0.020, 10: 0.045}  # a spread of real meters' answers
        line = wire_line(default_meters(), clock, baud, turnaround=lambda request: turnaround[request[2]],
                         delivery=delivery)
        arbiter = BusArbiter(1, line, clock, slack=lambda: SLACK)
        factory = SharingFactory(1, TunnelConfig(sharing=True), arbiter, clock)
        replies = {address: 0 for address in turnaround}
        done = defer.Deferred()

        class HeadEnd(StringTransport):
            """Reads its meter again `network` seconds after each reply (REQ_UD2, FCB toggled)."""

            def __init__(self, address: int) -> None:
                super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000 + address))
                self.address = address
                self.fcb = True

            def ask(self) -> None:
                self.protocol.dataReceived(frames.req_ud2(self.address, self.fcb))
                self.fcb = not self.fcb

            def write(self, data: bytes) -> None:
                super().write(data)
                replies[self.address] += 1
                if sum(replies.values()) == reads * len(replies) and not done.called:
                    done.callback(clock.seconds())
                clock.callLater(network, self.ask)

        for address in replies:
            client = HeadEnd(address)
            client.protocol = factory.buildProtocol(client.getPeer())
            client.protocol.makeConnection(client)
            client.ask()
        elapsed = run_clock(clock, done) + INTER_TELEGRAM_BITS / baud
        return line, replies, elapsed

    def test_four_clients_keep_the_bus_busy_in_turn(self) -> None:
        """No gap beyond the 33-bit idle before a request, busy >= 90 %, shares within one transaction."""
        for baud in (2400, 300):
            line, replies, elapsed = self.share(baud)
            gaps = line.request_gaps()
            self.assertGreaterEqual(len(gaps), sum(replies.values()) - 1)
            self.assertLessEqual(max(gaps), 1e-9, baud)
            self.assertGreaterEqual(line.busy() / elapsed, 0.9)
            self.assertLessEqual(line.busy(), elapsed + 1e-9, "nothing overlaps on the wire")
            self.assertLessEqual(max(replies.values()) - min(replies.values()), 1, replies)

    def test_an_adapters_delay_is_the_only_gap(self) -> None:
        """The idle counts from the reply's last byte as delivered: an adapter's 1 ms adds 1 ms, no more."""
        line, replies, elapsed = self.share(2400, delivery=0.001)
        self.assertLessEqual(max(line.request_gaps()), 0.001 + 1e-9)
        self.assertGreaterEqual(line.busy() / elapsed, 0.9)
        self.assertLessEqual(max(replies.values()) - min(replies.values()), 1, replies)
