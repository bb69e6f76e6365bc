# -*- test-case-name: tests.test_mbus_meterbus -*-
"""
The simulated meters and their bus, pure: C{MeterBus.handle(request) -> reply}.

L{SimulatedMeter} answers like a real slave (primary and secondary
addressing, multi-telegram readouts, FCB repeats); L{MeterBus} holds the
meters on one bus and lets several answers collide as on the wire;
L{default_meters} are the four meters of the simulated bus.  The pty that
puts a L{MeterBus} where the gateway opens a serial line is
L{cmegw.mbus.simulator}.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

import attrs

from cmegw.mbus import frames
from cmegw.mbus.address import SecondaryAddress, decode_bcd_ident
from cmegw.mbus.frames import FrameError
from cmegw.mbus.records import (
    Coding,
    Function,
    Header,
    RecordSpec,
    date_point,
    datetime_point,
    duration,
    error_flags,
    fabrication_number,
    firmware_version,
    rsp_ud,
    scaled,
)

BITS_PER_CHARACTER = 11
DEFAULT_BAUD = 2400
_COLLISION_SKEW_BITS = 3  # each further slave starts this many bit times later


@attrs.define(eq=False)
class SimulatedMeter:
    """
    One slave: a primary address, a secondary address and its telegrams.

    C{telegrams} holds one list of records per telegram; with more than one
    the meter answers a multi-telegram readout (DIF 0x1F on all but the
    last), the master toggling FCB to ask for the next.
    """

    primary: int
    address: SecondaryAddress
    telegrams: list[list[RecordSpec]]
    status: int = 0
    signature: int = 0
    access_number: int = 0
    baud: int = DEFAULT_BAUD
    selected: bool = False
    _next: int = attrs.field(default=0, init=False)
    _last_fcb: bool | None = attrs.field(default=None, init=False)
    _last_reply: bytes | None = attrs.field(default=None, init=False)

    def reset_link(self) -> None:
        """
        SND_NKE: start the next readout with the first telegram.
        """
        self._next = 0
        self._last_fcb = None
        self._last_reply = None

    def read(self, c: int) -> bytes:
        """
        The RSP_UD for a REQ_UD2 with C field C{c}.

        A repeated FCB (with FCV set) means the master lost our answer: send
        it again.  Otherwise send the next telegram.
        """
        fcv = bool(c & frames.FCV)
        fcb = bool(c & frames.FCB)
        if fcv and self._last_reply is not None and fcb == self._last_fcb:
            return self._last_reply
        if not fcv:
            self._next = 0
        index = self._next % len(self.telegrams)
        more = index + 1 < len(self.telegrams)
        self._next = index + 1 if more else 0
        self.access_number = (self.access_number + 1) & 0xFF
        header = Header(self.address, self.access_number, self.status, self.signature)
        reply = rsp_ud(self.primary, header, self.telegrams[index], more_follows=more)
        self._last_fcb = fcb if fcv else None
        self._last_reply = reply if fcv else None
        return reply

    @property
    def records(self) -> list[RecordSpec]:
        return [record for telegram in self.telegrams for record in telegram]


def _uart_bits(data: bytes, offset: int, total: int) -> list[int]:
    """
    The line level (1 = mark/idle) for C{data} sent as 8E1 from bit C{offset}.
    """
    line = [1] * total
    pos = offset
    for byte in data:
        bits = [(byte >> i) & 1 for i in range(8)]
        parity = sum(bits) & 1
        for bit in (0, *bits, parity, 1):
            line[pos] = bit
            pos += 1
    return line


def _uart_bytes(line: Sequence[int]) -> bytes:
    """
    What a UART reads from a line level sequence (framing errors kept as data).
    """
    out = bytearray()
    pos = 0
    end = len(line) - BITS_PER_CHARACTER + 1
    while pos < end:
        if line[pos]:
            pos += 1
            continue
        out.append(sum(line[pos + 1 + i] << i for i in range(8)))
        pos += BITS_PER_CHARACTER
    return bytes(out)


def _holds_a_telegram(heard: bytes) -> bool:
    """
    Whether a master could find any valid telegram in C{heard}.
    """
    for start in range(len(heard)):
        try:
            size = frames.frame_length(heard[start : start + 4])
            if size is not None:
                frames.parse_frame(heard[start : start + size])
                return True
        except FrameError:
            continue
    return False


_START_BYTES = (frames.ACK_BYTE, frames.START_SHORT, frames.START_LONG)


def collide(replies: Sequence[bytes]) -> bytes:
    """
    What the master hears when several slaves answer at once.

    Slaves pull the line to space (0): the levels AND together.  Each slave
    starts a few bit times after the previous one, as response delays
    differ, so the characters overlap out of step.  The result is never a
    clean telegram.
    """
    longest = max(len(reply) for reply in replies)
    total = (longest + len(replies)) * BITS_PER_CHARACTER + len(replies) * _COLLISION_SKEW_BITS
    line = [1] * total
    for index, reply in enumerate(replies):
        own = _uart_bits(reply, index * _COLLISION_SKEW_BITS, total)
        line = [a & b for a, b in zip(line, own)]
    heard = _uart_bytes(line)
    if not heard:
        return b"\x00"
    if _holds_a_telegram(heard):
        # Rare alignments survive the AND; spoil every start byte.
        heard = bytes(b ^ 0x01 if b in _START_BYTES else b for b in heard)
    return heard


_BROADCASTS = (frames.BROADCAST_REPLY, frames.BROADCAST_NOREPLY)


@attrs.define(eq=False)
class MeterBus:
    """
    The slaves on one bus, answering the master's telegrams.
    """

    meters: list[SimulatedMeter]
    on_baud_change: Callable[[int], None] | None = None

    def handle(self, request: bytes, baud: int | None = None) -> bytes | None:
        """
        The bytes the bus answers to one request telegram, or C{None}.

        An invalid telegram (bad start, length, checksum or stop byte) is
        ignored, as a real slave does.  With the line's C{baud} given, only
        the meters set to that rate hear the request (a meter at 2400 baud
        reads a 9600 baud telegram as noise and stays silent).
        """
        try:
            frame = frames.parse_frame(request)
        except FrameError:
            return None
        if baud is not None and any(meter.baud != baud for meter in self.meters):
            hearing = [meter for meter in self.meters if meter.baud == baud]
            if not hearing:
                return None
            return MeterBus(hearing, self.on_baud_change).handle(request)
        if frame.kind == "ack":
            return None
        assert frame.c is not None and frame.a is not None
        c = frame.c
        function = frame.function
        if function == frames.SND_NKE and frame.kind == "short":
            return self._answer(self._link_reset(frame.a), lambda meter: frames.ACK)
        if function == frames.function_of(frames.REQ_UD2) and frame.kind == "short":
            return self._answer(self._addressed(frame.a), lambda meter: meter.read(c))
        if function == frames.function_of(frames.REQ_UD1) and frame.kind == "short":
            return self._answer(self._addressed(frame.a), lambda meter: frames.ACK)
        if function == frames.function_of(frames.SND_UD) and frame.kind != "short":
            return self._answer(self._send_user_data(frame), lambda meter: frames.ACK)
        return None

    def _answer(
        self, meters: list[SimulatedMeter] | None, reply: Callable[[SimulatedMeter], bytes]
    ) -> bytes | None:
        if not meters:
            return None
        replies = [reply(meter) for meter in meters]
        if len(replies) == 1:
            return replies[0]
        return collide(replies)

    def _addressed(self, a: int) -> list[SimulatedMeter] | None:
        """
        The meters that answer a request to C{a} (None for broadcasts).
        """
        if a == frames.BROADCAST_NOREPLY:
            return None
        if a == frames.BROADCAST_REPLY:
            return list(self.meters)
        if a == frames.SELECTED:
            return [meter for meter in self.meters if meter.selected]
        return [meter for meter in self.meters if meter.primary == a]

    def _link_reset(self, a: int) -> list[SimulatedMeter] | None:
        if a == frames.BROADCAST_NOREPLY:
            for meter in self.meters:
                meter.reset_link()
            return None
        meters = self._addressed(a) or []
        for meter in meters:
            meter.reset_link()
            if a == frames.SELECTED:
                meter.selected = False
        return meters

    def _send_user_data(self, frame: frames.Frame) -> list[SimulatedMeter] | None:
        assert frame.a is not None and frame.ci is not None
        if frame.ci == frames.CI_SELECTION:
            return self._select(frame.a, frame.data)
        if frame.ci == frames.CI_DESELECTION:
            targets = self._addressed(frame.a) or []
            for meter in self.meters if frame.a in _BROADCASTS else targets:
                meter.selected = False
            return targets
        targets = self._addressed(frame.a)
        if frame.ci in frames.BAUD_RATES:
            for meter in targets if targets is not None else self.meters:
                meter.baud = frames.BAUD_RATES[frame.ci]
            if self.on_baud_change is not None:
                self.on_baud_change(frames.BAUD_RATES[frame.ci])
        return targets

    def _select(self, a: int, data: bytes) -> list[SimulatedMeter] | None:
        """
        Secondary selection: matching meters are selected, others deselected.
        """
        if a not in (frames.SELECTED, frames.BROADCAST_NOREPLY) or len(data) != 8:
            return None
        pattern = decode_bcd_ident(data[0:4])
        manufacturer = int.from_bytes(data[4:6], "little")
        for meter in self.meters:
            meter.selected = meter.address.matches(pattern, manufacturer, data[6], data[7])
        if a == frames.BROADCAST_NOREPLY:
            return None
        return [meter for meter in self.meters if meter.selected]


def default_meters(now: datetime.datetime | None = None) -> list[SimulatedMeter]:
    """
    Four meters as found on a building's bus.

    - 1: heat meter (KAM 12345678)
    - 2: cold water meter (SEN 22110033)
    - 5: electricity meter (ABB 30405060)
    - 10: gas meter (ELS 41520063) answering in two telegrams
    """
    if now is None:
        now = datetime.datetime(2024, 3, 12, 14, 23)
    now = now.replace(second=0, microsecond=0)
    due_day = datetime.date(now.year - 1, 12, 31)
    heat = SimulatedMeter(
        1,
        SecondaryAddress("12345678", "KAM", 0x19, 0x04),
        [
            [
                fabrication_number(71234567),
                scaled("energy", 48_213_000, 3),  # 48213 kWh
                scaled("volume", 1234.56, -2),
                duration("on_time", 18_210, "h", Coding.INT24),
                scaled("flow_temperature", 68.43, -2, Coding.INT16),
                scaled("return_temperature", 41.12, -2, Coding.INT16),
                scaled("temperature_difference", 27.31, -2, Coding.INT16),
                scaled("power", 12_300, 1, Coding.INT24),
                scaled("volume_flow", 0.387, -3, Coding.INT24),
                scaled("power", 25_400, 1, Coding.INT24, function=Function.MAXIMUM),
                datetime_point(now),
                scaled("energy", 41_007_000, 3, storage=1),
                date_point(due_day, storage=1),
                error_flags(0),
            ]
        ],
        status=0x00,
        access_number=0x41,
    )
    water = SimulatedMeter(
        2,
        SecondaryAddress("22110033", "SEN", 0x66, 0x16),
        [
            [
                scaled("volume", 815.327, -3, Coding.BCD8),
                scaled("volume", 702.001, -3, Coding.BCD8, storage=1),
                date_point(due_day, storage=1),
                datetime_point(now),
                scaled("volume_flow", 0.0, -3, Coding.INT16),
                scaled("volume_flow", 1.250, -3, Coding.INT16, function=Function.MAXIMUM),
                scaled("flow_temperature", 11.0, 0, Coding.INT8),
                duration("operating_time", 2304, "d", Coding.INT16),
                firmware_version(0x14),
                error_flags(0x00),
            ]
        ],
        access_number=0x07,
    )
    electricity = SimulatedMeter(
        5,
        SecondaryAddress("30405060", "ABB", 0x20, 0x02),
        [
            [
                scaled("energy", 5_432_100, 1, Coding.INT32),
                scaled("energy", 4_000_000, 1, Coding.INT32, tariff=1),
                scaled("energy", 1_432_100, 1, Coding.INT32, tariff=2),
                scaled("power", 1845.0, 0, Coding.INT32),
                scaled("voltage", 231.4, -1, Coding.INT16, subunit=1),
                scaled("voltage", 229.8, -1, Coding.INT16, subunit=2),
                scaled("voltage", 232.0, -1, Coding.INT16, subunit=3),
                scaled("current", 2.67, -2, Coding.INT16, subunit=1),
                scaled("current", 2.79, -2, Coding.INT16, subunit=2),
                scaled("current", 2.71, -2, Coding.INT16, subunit=3),
                datetime_point(now),
                firmware_version(0x23),
            ]
        ],
        access_number=0xC2,
    )
    gas = SimulatedMeter(
        10,
        SecondaryAddress("41520063", "ELS", 0x08, 0x03),
        [
            [
                fabrication_number(9876543),
                scaled("volume", 3214.56, -2, Coding.BCD8),
                datetime_point(now),
                scaled("volume_flow", 0.562, -3, Coding.INT24),
                scaled("external_temperature", 12.5, -1, Coding.INT16),
                scaled("pressure", 1.013, -3, Coding.INT16),
                duration("operating_time", 1630, "d", Coding.INT16),
                firmware_version(0x03),
                error_flags(0x00),
            ],
            [
                scaled("volume", 3100.02, -2, Coding.BCD8, storage=1),
                date_point(datetime.date(now.year, now.month, 1), storage=1),
                scaled("volume", 2987.40, -2, Coding.BCD8, storage=2),
                date_point(due_day, storage=2),
                scaled("volume_flow", 4.020, -3, Coding.INT24, function=Function.MAXIMUM),
                RecordSpec(b"\x6d", now.replace(hour=7, minute=30), Coding.INT32, function=Function.MAXIMUM),
            ],
        ],
        access_number=0x10,
    )
    return [heat, water, electricity, gas]
