# -*- test-case-name: tests.test_mbus_simulator -*-
"""
A simulated M-Bus: meters that answer like real slaves, on a real pty.

L{MeterBus} is pure: C{handle(request) -> reply}.  L{SimulatedBus} puts it
behind a pseudo-terminal so the gateway opens it like a USB level converter.

Run C{python -m cmegw.mbus.simulator} to get a bus on a pty from a shell.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import sys
import tempfile
import termios
import tty
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet import abstract, fdesc
from twisted.internet.interfaces import IDelayedCall

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
RESYNC_TIMEOUT = 0.2  # seconds of silence after which a partial telegram is dropped
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

    def handle(self, request: bytes) -> bytes | None:
        """
        The bytes the bus answers to one request telegram, or C{None}.

        An invalid telegram (bad start, length, checksum or stop byte) is
        ignored, as a real slave does.
        """
        try:
            frame = frames.parse_frame(request)
        except FrameError:
            return None
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


# Twisted part -------------------------------------------------------------


_BAUD_BY_SPEED = {
    getattr(termios, f"B{rate}"): rate
    for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
    if hasattr(termios, f"B{rate}")
}


class _PtyMaster(abstract.FileDescriptor):
    """
    The master side of the pty, read and written through the reactor.
    """

    def __init__(self, reactor: Any, fd: int, received: Callable[[bytes], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._received = received
        self.connected = 1

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> object:
        return fdesc.readFromFD(self._fd, self._received)

    def writeSomeData(self, data: bytes) -> object:
        return fdesc.writeToFD(self._fd, data)

    def logPrefix(self) -> str:
        return "SimulatedBus"


class SimulatedBus:
    """
    A L{MeterBus} behind a pseudo-terminal.

    The gateway opens the path L{start} returns as its serial line.  The
    master side splits what it reads into telegrams and writes each answer
    after C{reply_delay} seconds; with C{bit_timing} at the pace of the baud
    rate the gateway set (11 bits per character).

    L{unplug} and L{replug} make the device vanish and come back.  A new pty
    gets the first free number, which need not be the old one; give
    C{start} a C{link} path to get a stable name, as udev's
    C{/dev/serial/by-id} links give real adapters: the link is removed on
    unplug and made again, to the new pty, on replug.
    """

    def __init__(
        self,
        reactor: Any,
        bus: MeterBus,
        reply_delay: float = 0.0,
        bit_timing: bool = False,
    ) -> None:
        self._reactor = reactor
        self.bus = bus
        self.reply_delay = reply_delay
        self.bit_timing = bit_timing
        self.link: str | None = None
        self.path: str | None = None
        self.requests = 0
        self.replies = 0
        self.ignored_bytes = 0
        self._master: _PtyMaster | None = None
        self._slave_fd: int | None = None
        self._buffer = b""
        self._outbox: collections.deque[tuple[float, bytes]] = collections.deque()
        self._line_free_at = 0.0
        self._pump_call: IDelayedCall | None = None
        self._resync: IDelayedCall | None = None

    # Life cycle

    def start(self, link: str | None = None) -> str:
        """
        Make the pty and start answering.

        @param link: if given, a symlink made at this path to the pty.
        @return: C{link} if given, else the pty's slave path.
        """
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        fdesc.setNonBlocking(master_fd)
        self._slave_fd = slave_fd
        self.path = os.ttyname(slave_fd)
        self._buffer = b""
        self._master = _PtyMaster(self._reactor, master_fd, self._data_received)
        self._master.startReading()
        if link is not None:
            self.link = link
        if self.link is not None:
            _point_link(self.link, self.path)
            return self.link
        return self.path

    def stop(self) -> None:
        """
        Close the pty: the gateway's next read fails as on a pulled adapter.
        """
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        self._outbox.clear()
        self._line_free_at = 0.0
        if self._resync is not None and self._resync.active():
            self._resync.cancel()
        self._resync = None
        if self._master is not None:
            master, self._master = self._master, None
            master.stopReading()
            master.stopWriting()
            os.close(master.fileno())
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None
        if self.link is not None:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass

    def unplug(self) -> None:
        """
        The adapter goes away (same as L{stop}; the link, if any, is kept
        in mind for L{replug}).
        """
        self.stop()

    def replug(self) -> str:
        """
        The adapter comes back: a new pty (and the link made again).
        """
        if self._master is not None:
            self.stop()
        return self.start()

    @property
    def baud(self) -> int | None:
        """
        The baud rate the gateway set on the line (None if unknown).
        """
        if self._slave_fd is None:
            return None
        attributes = termios.tcgetattr(self._slave_fd)
        return _BAUD_BY_SPEED.get(attributes[5])

    # Byte path

    def _data_received(self, data: bytes) -> None:
        self._buffer += data
        telegrams, self._buffer, skipped = frames.split_telegrams(self._buffer)
        self.ignored_bytes += skipped
        for telegram in telegrams:
            self.requests += 1
            reply = self.bus.handle(telegram)
            if reply is not None:
                self._schedule(reply)
        if self._resync is not None and self._resync.active():
            self._resync.cancel()
        self._resync = None
        if self._buffer:
            self._resync = self._reactor.callLater(RESYNC_TIMEOUT, self._drop_partial)

    def _drop_partial(self) -> None:
        self._resync = None
        self.ignored_bytes += len(self._buffer)
        self._buffer = b""

    def _schedule(self, reply: bytes) -> None:
        """
        Queue C{reply} to go out C{reply_delay} after now, once the line is
        free (an answer never overlaps the one before).
        """
        self.replies += 1
        now = self._reactor.seconds()
        start = max(now + self.reply_delay, self._line_free_at)
        if self.bit_timing:
            character = BITS_PER_CHARACTER / (self.baud or DEFAULT_BAUD)
            for index in range(len(reply)):
                self._outbox.append((start + index * character, reply[index : index + 1]))
            self._line_free_at = start + len(reply) * character
        else:
            self._outbox.append((start, reply))
            self._line_free_at = start
        if self._pump_call is None:
            self._pump()

    def _pump(self) -> None:
        """
        Write every queued chunk that is due, then wait for the next.
        """
        self._pump_call = None
        now = self._reactor.seconds()
        while self._outbox and self._outbox[0][0] <= now:
            _, data = self._outbox.popleft()
            if self._master is not None:
                self._master.write(data)
        if self._outbox:
            self._pump_call = self._reactor.callLater(self._outbox[0][0] - now, self._pump)


def _point_link(link: str, target: str) -> None:
    """
    Make C{link} a symlink to C{target}, replacing any old one atomically.
    """
    directory = os.path.dirname(os.path.abspath(link))
    temporary = tempfile.mktemp(prefix=".pty-", dir=directory)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmegw.mbus.simulator",
        description="A simulated M-Bus with four meters on a pseudo-terminal.",
    )
    parser.add_argument("--delay", type=float, default=0.0, metavar="S",
                        help="seconds before each answer (default 0)")
    parser.add_argument("--bit-timing", action="store_true",
                        help="send answers at the baud rate set on the line")
    parser.add_argument("--link", metavar="PATH",
                        help="also make a symlink at PATH to the pty")
    options = parser.parse_args(argv)

    from twisted.internet import reactor

    meters = default_meters(datetime.datetime.now())
    bus = SimulatedBus(reactor, MeterBus(meters), options.delay, options.bit_timing)
    path = bus.start(options.link)
    print(path, flush=True)
    for meter in bus.bus.meters:
        print(f"  primary {meter.primary:3d}  secondary {meter.address}", flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", bus.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
