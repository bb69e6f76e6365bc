# -*- test-case-name: tests.test_mbus_pacing -*-
"""
Wire time of a simulated M-Bus line: when each character is on the wire.

A `Wire` knows, at the line's baud rate (11 bit times a character, both
directions), when the master's request has left the wire (the slaves hear it
only then), when a slave's answer starts (after a `Turnaround` drawn from a
seeded spread, within what EN 13757-2 allows: 11 bit times to 330 bit times
+ 50 ms) and when its bytes reach the host, one by one or, through an
`Adapter` (a USB serial converter such as an FTDI), in the chunks the
adapter's latency timer makes.  It adds up the time the bus was busy.

Pure arithmetic on times read from the clock it is given (nothing is
scheduled here): `cmegw.mbus.simulator.SimulatedBus` schedules what it says.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from cmegw.mbus.timing import (
    ANSWER_DELAY_BITS,
    ANSWER_DELAY_SECONDS,
    BITS_PER_CHARACTER,
    INTER_TELEGRAM_BITS,
    character_time,
)

#: The spread of real meters' answer delays (seconds): a few ms to about 50 ms.
TYPICAL_TURNAROUND = (0.003, 0.050)
#: An FTDI's latency timer: 16 ms by default, 1 ms in low-latency mode (seconds).
LATENCY_TIMER_RANGE = (0.001, 0.016)
#: Bytes of one FTDI USB packet that carry data (64 less 2 status bytes).
FTDI_PACKET = 62


def shortest_turnaround(baud: int) -> float:
    """The earliest a slave may answer after the request's last character (EN 13757-2: 11 bit times)."""
    return BITS_PER_CHARACTER / baud


def longest_turnaround(baud: int) -> float:
    """The latest a slave may start its answer (EN 13757-2: 330 bit times + 50 ms)."""
    return ANSWER_DELAY_BITS / baud + ANSWER_DELAY_SECONDS


def _check_spread(instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"a turnaround of {value} s is negative")
    if attribute.name == "longest" and value < instance.shortest:
        raise ValueError(f"the longest turnaround ({value} s) is shorter than the shortest ({instance.shortest} s)")


@attrs.frozen
class Turnaround:
    """
    How long the slaves take to answer: uniformly from `shortest` to
    `longest` seconds, kept within what the standard allows at the line's rate.
    """

    shortest: float = attrs.field(default=TYPICAL_TURNAROUND[0], validator=_check_spread)
    longest: float = attrs.field(default=TYPICAL_TURNAROUND[1], validator=_check_spread)

    def bounds(self, baud: int) -> tuple[float, float]:
        """The spread at `baud`, clamped to 11 bit times .. 330 bit times + 50 ms."""
        low, high = shortest_turnaround(baud), longest_turnaround(baud)
        return min(max(self.shortest, low), high), min(max(self.longest, low), high)

    def draw(self, rng: random.Random, baud: int) -> float:
        low, high = self.bounds(baud)
        return low if high <= low else rng.uniform(low, high)


def _check_latency(instance: Any, attribute: Any, value: float) -> None:
    low, high = LATENCY_TIMER_RANGE
    if not low <= value <= high:
        raise ValueError(f"a USB latency timer of {value * 1000:g} ms is outside {low * 1000:g}..{high * 1000:g} ms")


@attrs.frozen
class Adapter:
    """
    A USB serial adapter between the bus and the host: what its UART
    received goes to the host when `packet` bytes are gathered or when the
    `latency` timer (started by the first byte of an empty buffer) expires.
    """

    latency: float = attrs.field(default=LATENCY_TIMER_RANGE[1], validator=_check_latency)
    packet: int = attrs.field(default=FTDI_PACKET, validator=attrs.validators.ge(1))

    def chunks(self, first_end: float, character: float, size: int) -> list[tuple[float, int]]:
        """
        (when, how many bytes) the host gets of `size` bytes whose first
        has been received at `first_end`, one every `character` seconds.
        """
        out: list[tuple[float, int]] = []
        index = 0
        while index < size:  # bounded: each round takes at least one byte
            opened = first_end + index * character
            deadline = opened + self.latency
            taken = 1
            while index + taken < size and taken < self.packet and \
                    first_end + (index + taken) * character <= deadline:
                taken += 1
            full = taken == self.packet
            out.append((first_end + (index + taken - 1) * character if full else deadline, taken))
            index += taken
        return out


@attrs.frozen
class Transmission:
    """Characters sent back to back from `start`, each taking `character` seconds."""

    start: float
    character: float
    count: int

    def end_of(self, index: int) -> float:
        """When character `index` (from 0) has left the wire."""
        return self.start + (index + 1) * self.character

    @property
    def end(self) -> float:
        return self.end_of(self.count - 1)


class Wire:
    """
    One simulated M-Bus line's timing; see the module docstring.

    `busy_time` adds up what the standard counts as the bus's work: each
    request's characters, and for each answer the turnaround, its
    characters and the 33 bit times of idle that follow a telegram.  It
    counts them when they are scheduled; `busy_until` leaves out the part
    of the last one still ahead.
    """

    def __init__(self, clock: Any, turnaround: Turnaround = Turnaround(), adapter: Adapter | None = None,
                 seed: int = 0) -> None:
        self.clock = clock
        self.turnaround = turnaround
        self.adapter = adapter
        self._random = random.Random(seed)
        self._master_free_at = 0.0
        self._slaves_free_at = 0.0
        self.busy_time = 0.0
        self.answers = 0
        self._last_busy = (0.0, 0.0)

    def send(self, count: int, baud: int) -> Transmission:
        """The master writes `count` characters now: they follow whatever it is still sending."""
        character = character_time(baud)
        start = max(self.clock.seconds(), self._master_free_at)
        sent = Transmission(start, character, count)
        self._master_free_at = start + count * character
        self._count_busy(start, self._master_free_at)
        return sent

    def answer(self, heard_at: float, size: int, baud: int) -> list[tuple[float, int]]:
        """
        A slave answers `size` characters to a request heard at `heard_at`:
        (when, how many bytes) the host gets them.  Answers never overlap.
        """
        character = character_time(baud)
        delay = self.turnaround.draw(self._random, baud)
        start = max(heard_at + delay, self._slaves_free_at)
        sent = Transmission(start, character, size)
        self._slaves_free_at = sent.end
        self._count_busy(start - delay, sent.end + INTER_TELEGRAM_BITS / baud)
        self.answers += 1
        if self.adapter is not None:
            return self.adapter.chunks(sent.end_of(0), character, size)
        return [(sent.end_of(index), 1) for index in range(size)]

    def _count_busy(self, begin: float, end: float) -> None:
        self.busy_time += end - begin
        self._last_busy = (begin, end)

    def busy_until(self, when: float) -> float:
        """`busy_time` without what of the last counted stretch lies after `when`."""
        begin, end = self._last_busy
        return self.busy_time - max(0.0, end - max(when, begin))
