"""Tests for cmegw.mbus.pacing: when each character of a simulated M-Bus line is on the wire."""

from __future__ import annotations

import random

from twisted.internet import task
from twisted.trial.unittest import TestCase

from cmegw.mbus.pacing import (
    Adapter,
    Transmission,
    Turnaround,
    Wire,
    longest_turnaround,
    shortest_turnaround,
)

EPS = 1e-9


class TransmissionTests(TestCase):
    def test_characters_back_to_back(self) -> None:
        sent = Transmission(1.0, 0.01, 3)
        self.assertEqual([sent.end_of(i) for i in range(3)], [1.01, 1.02, 1.03])
        self.assertEqual(sent.end, 1.03)


class TurnaroundTests(TestCase):
    def test_standard_bounds(self) -> None:
        self.assertAlmostEqual(shortest_turnaround(2400), 11 / 2400)
        self.assertAlmostEqual(longest_turnaround(2400), 330 / 2400 + 0.050)
        self.assertAlmostEqual(longest_turnaround(300), 1.1 + 0.050)

    def test_clamped_to_the_standard(self) -> None:
        """At 300 baud 11 bit times are 36.7 ms: a meter cannot answer sooner, whatever the spread says."""
        self.assertEqual(Turnaround(0.0, 10.0).bounds(300), (11 / 300, 330 / 300 + 0.050))
        self.assertEqual(Turnaround().bounds(2400), (11 / 2400, 0.050))
        self.assertEqual(Turnaround().bounds(9600), (0.003, 0.050))

    def test_draws_within_bounds_and_repeat_with_the_seed(self) -> None:
        spread = Turnaround(0.002, 0.040)
        first = [spread.draw(random.Random(7), 2400) for _ in range(1)]
        rng = random.Random(7)
        draws = [spread.draw(rng, 2400) for _ in range(500)]
        self.assertEqual(draws[:1], first)
        low, high = spread.bounds(2400)
        self.assertTrue(all(low <= d <= high for d in draws))
        # A spread, not one value: both ends of it are reached.
        self.assertLess(min(draws), low + 0.005)
        self.assertGreater(max(draws), high - 0.005)

    def test_fixed_turnaround(self) -> None:
        self.assertEqual(Turnaround(0.02, 0.02).draw(random.Random(), 2400), 0.02)

    def test_invalid_spread(self) -> None:
        self.assertRaises(ValueError, Turnaround, 0.05, 0.01)
        self.assertRaises(ValueError, Turnaround, -0.01, 0.01)


class AdapterTests(TestCase):
    def test_latency_timer_range(self) -> None:
        self.assertRaises(ValueError, Adapter, 0.0005)
        self.assertRaises(ValueError, Adapter, 0.017)
        Adapter(0.001)
        Adapter(0.016)

    def test_chunks_by_latency_timer(self) -> None:
        """At 2400 baud (4.58 ms a character) a 16 ms timer passes 4 characters a chunk."""
        character = 11 / 2400
        chunks = Adapter(0.016).chunks(1.0, character, 10)
        self.assertEqual([count for _, count in chunks], [4, 4, 2])
        self.assertEqual([when for when, _ in chunks], [1.016, 1.0 + 4 * character + 0.016,
                                                        1.0 + 8 * character + 0.016])

    def test_full_packet_goes_at_once(self) -> None:
        """At 115200 baud 62 characters fill a packet before a 16 ms timer expires."""
        character = 11 / 115200
        chunks = Adapter(0.016).chunks(0.0, character, 100)
        self.assertEqual(chunks[0], (61 * character, 62))
        self.assertEqual(sum(count for _, count in chunks), 100)
        self.assertAlmostEqual(chunks[1][0], 62 * character + 0.016)


class WireTests(TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(100)

    def test_request_wire_time_2400(self) -> None:
        """A 5-byte SND_NKE at 2400 baud is on the wire for 22.9 ms."""
        wire = Wire(self.clock)
        sent = wire.send(5, 2400)
        self.assertEqual(sent.start, 100)
        self.assertAlmostEqual(sent.end - sent.start, 0.0229, places=4)

    def test_request_wire_time_300(self) -> None:
        wire = Wire(self.clock)
        self.assertAlmostEqual(wire.send(5, 300).end - 100, 5 * 11 / 300)

    def test_writes_follow_what_is_still_sent(self) -> None:
        wire = Wire(self.clock)
        first = wire.send(5, 2400)
        self.clock.advance(0.01)
        second = wire.send(5, 2400)
        self.assertEqual(second.start, first.end)
        self.clock.advance(1)
        self.assertEqual(wire.send(1, 2400).start, self.clock.seconds())

    def test_answer_after_turnaround_one_character_at_a_time(self) -> None:
        wire = Wire(self.clock, Turnaround(0.020, 0.020))
        heard = wire.send(5, 2400).end
        deliveries = wire.answer(heard, 3, 2400)
        character = 11 / 2400
        self.assertEqual([count for _, count in deliveries], [1, 1, 1])
        for index, (when, _) in enumerate(deliveries):
            self.assertAlmostEqual(when, heard + 0.020 + (index + 1) * character)

    def test_answer_wire_time_300(self) -> None:
        """At 300 baud a 97-byte RSP_UD takes 3.56 s after a turnaround of at least 36.7 ms."""
        wire = Wire(self.clock, Turnaround(0.0, 0.0))
        deliveries = wire.answer(100.0, 97, 300)
        self.assertAlmostEqual(deliveries[-1][0] - 100.0, 11 / 300 + 97 * 11 / 300)

    def test_turnaround_within_the_standard(self) -> None:
        wire = Wire(self.clock, seed=3)
        for baud in (300, 2400, 9600):
            for _ in range(50):
                start = self.clock.seconds()
                first = wire.answer(start, 1, baud)[0][0] - 11 / baud
                self.assertGreaterEqual(first - start, max(0.003, shortest_turnaround(baud)) - EPS)
                self.assertLessEqual(first - start, min(0.050, longest_turnaround(baud)) + EPS)
                self.clock.advance(1)

    def test_same_seed_same_answers(self) -> None:
        def run() -> list[float]:
            wire = Wire(task.Clock(), seed=11)
            return [wire.answer(float(i), 1, 2400)[0][0] - i for i in range(20)]

        self.assertEqual(run(), run())
        self.assertGreater(len(set(run())), 10)

    def test_answers_never_overlap(self) -> None:
        wire = Wire(self.clock, Turnaround(0.005, 0.005))
        first = wire.answer(100.0, 10, 2400)
        second = wire.answer(100.0, 10, 2400)
        self.assertAlmostEqual(second[0][0], first[-1][0] + 11 / 2400)

    def test_answer_through_an_adapter(self) -> None:
        wire = Wire(self.clock, Turnaround(0.010, 0.010), Adapter(0.016))
        deliveries = wire.answer(100.0, 10, 2400)
        character = 11 / 2400
        self.assertEqual([count for _, count in deliveries], [4, 4, 2])
        self.assertAlmostEqual(deliveries[0][0], 100.0 + 0.010 + character + 0.016)

    def test_busy_time(self) -> None:
        """Request, turnaround, answer and the 33 bit times of idle."""
        wire = Wire(self.clock, Turnaround(0.010, 0.010))
        heard = wire.send(5, 2400).end
        wire.answer(heard, 60, 2400)
        self.assertAlmostEqual(wire.busy_time, (5 * 11 + 60 * 11 + 33) / 2400 + 0.010)
        self.assertEqual(wire.answers, 1)

    def test_busy_until_leaves_out_what_lies_ahead(self) -> None:
        wire = Wire(self.clock, Turnaround(0.010, 0.010))
        heard = wire.send(5, 2400).end
        self.assertAlmostEqual(wire.busy_until(100.0), 0.0)
        self.assertAlmostEqual(wire.busy_until(heard), 5 * 11 / 2400)
        wire.answer(heard, 60, 2400)
        self.assertAlmostEqual(wire.busy_until(heard + 0.010), 5 * 11 / 2400 + 0.010)
        self.assertAlmostEqual(wire.busy_until(heard + 10), wire.busy_time)

    def test_baud_change_changes_the_pace(self) -> None:
        wire = Wire(self.clock, Turnaround(0.0, 0.0))
        at_2400 = wire.send(10, 2400)
        self.clock.advance(1)
        at_9600 = wire.send(10, 9600)
        self.assertAlmostEqual((at_2400.end - at_2400.start) / (at_9600.end - at_9600.start), 4)
