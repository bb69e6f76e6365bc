"""
A bus line that keeps wire time on a `task.Clock`, for the arbiter's and the
master's timing tests (`tests.test_mbus_arbiter`, `tests.test_mbus_master`).
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet import task

from cmegw.config.model import LineConfig
from cmegw.mbus import frames
from cmegw.mbus.meterbus import MeterBus, SimulatedMeter
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus.records import scaled
from cmegw.mbus.timing import BITS_PER_CHARACTER, INTER_TELEGRAM_BITS
from cmegw.testing import BusLine


@attrs.frozen
class Transmission:
    """Characters on the wire from `start` to `end`, sent by the master or a slave."""

    start: float
    end: float
    data: bytes
    by: str


class WireLine(BusLine):
    """
    A `BusLine` whose characters take 11 bit times each at the line's baud
    rate: a request occupies the wire from its write (or the end of the
    previous one), a slave answers `turnaround(request)` seconds after the
    request's last character (default 11 bit times, the floor's), and the
    answer is delivered `chunk` characters at a time, each chunk when its
    last character has arrived plus `delivery` seconds (an adapter's
    latency).  `wire` logs every transmission.
    """

    def __init__(self, bus: MeterBus, clock: task.Clock, config: LineConfig | None = None,
                 turnaround: Callable[[bytes], float] | None = None, delivery: float = 0.0,
                 chunk: int = 1) -> None:
        super().__init__(bus, clock, 0.0, config)
        self.turnaround = turnaround
        self.delivery = delivery
        self.chunk = chunk
        self.wire: list[Transmission] = []
        self._sending_until = 0.0

    def write(self, data: bytes) -> bool:
        if self.open:
            start = max(self.clock.seconds(), self._sending_until)
            self._sending_until = start + len(data) * self._character()
            self.wire.append(Transmission(start, self._sending_until, bytes(data), "master"))
        return super().write(data)

    def _answer(self, request: bytes, reply: bytes) -> None:
        character = self._character()
        turnaround = character if self.turnaround is None else self.turnaround(request)
        answer = Transmission(self._sending_until + turnaround,
                              self._sending_until + turnaround + len(reply) * character, reply, "slave")
        self.wire.append(answer)
        now = self.clock.seconds()
        for offset in range(0, len(reply), self.chunk):
            piece = reply[offset:offset + self.chunk]
            arrived = answer.start + (offset + len(piece)) * character
            self.clock.callLater(arrived + self.delivery - now, self.feed, piece)

    def _character(self) -> float:
        return BITS_PER_CHARACTER / self.config.baud_rate

    def request_gaps(self) -> list[float]:
        """Seconds of silence on the wire before each request after the first, beyond the 33-bit idle."""
        idle = INTER_TELEGRAM_BITS / self.config.baud_rate
        ordered = sorted(self.wire, key=lambda t: t.start)
        return [later.start - earlier.end - idle for earlier, later in zip(ordered, ordered[1:])
                if later.by == "master"]

    def busy(self) -> float:
        """Seconds the bus was busy: each request, the slave's turnaround, its answer, the 33-bit idle."""
        idle = INTER_TELEGRAM_BITS / self.config.baud_rate
        ordered = sorted(self.wire, key=lambda t: t.start)
        return sum(t.end - t.start for t in ordered) + sum(
            later.start - earlier.end for earlier, later in zip(ordered, ordered[1:])
            if earlier.by == "master" and later.by == "slave") + idle * sum(t.by == "slave" for t in ordered)


def spread_meters(count: int) -> list[SimulatedMeter]:
    """`count` meters at primary addresses spread over 0..250, each with its own identification number."""
    addresses = sorted({round(i * frames.MAX_PRIMARY / max(count - 1, 1)) for i in range(count)})
    return [SimulatedMeter(a, SecondaryAddress(f"{70000000 + a:08d}", "ELV", 0x01, 0x07),
                           [[scaled("energy", 1000 * a, 3)]]) for a in addresses]


def wire_line(meters: list[SimulatedMeter], clock: task.Clock, baud: int = 2400, **kw: Any) -> WireLine:
    return WireLine(MeterBus(meters), clock, LineConfig(baud_rate=baud), **kw)
