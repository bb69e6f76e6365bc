# -*- test-case-name: tests.test_serial_line -*-
"""
One M-Bus serial line: the device opened with Twisted's SerialPort (8E1),
reopened by itself when it goes away, its baud rate changed live, its
statistics kept.  At each open the adapter is prepared and described
(`cmegw.serial.adapter`: low latency, latency timer); `SerialLine.delivery_slack`
is what the M-Bus timeouts add for it, plus the line's ``extra_slack`` setting.

The line hands the bytes it reads to one receiver (the tunnel, or later the
bus arbiter) and takes bytes to write.  It is a push producer for whoever
sends its bytes on (so a client that does not read pauses the line) and a
consumer that pauses whoever writes to it faster than the device drains.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
from typing import Any, Callable

import serial
from twisted.application import service
from twisted.internet import defer, main, task
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.serialport import SerialPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cmegw.config.model import LineConfig
from cmegw.fastpath import Writer, fast_writer
from cmegw.serial.adapter import SCHEDULING_MARGIN, UNKNOWN_USB_LATENCY_MS, AdapterInfo, is_pty, prepare
from cmegw.stats import LINE_CLOSED, LINE_ERROR, LINE_OPEN, LineStatistics

log = Logger(namespace="cmegw.line")

#: How often the kernel's error counters and queue sizes are read.
STATISTICS_INTERVAL = 1.0
READ_SIZE = 65536
#: A read at least this large suggests a stream: read on before passing it on.
COALESCE_FROM = 1024

# linux/serial.h: struct serial_icounter_struct (cts dsr rng dcd rx tx frame overrun parity brk buf_overrun reserved[9])
TIOCGICOUNT = getattr(termios, "TIOCGICOUNT", 0x545D)
_ICOUNT = struct.Struct("20i")
TIOCINQ = getattr(termios, "FIONREAD", 0x541B)
TIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)

Receiver = Callable[[bytes], None]


class LineUnavailable(Exception):
    """The serial line cannot be used: its device cannot be opened, or the line is not open (or stopping)."""


def read_icount(fd: int) -> dict[str, int] | None:
    """The kernel's counters of a serial device, or None where its driver keeps none (ptys, some USB)."""
    try:
        raw = fcntl.ioctl(fd, TIOCGICOUNT, bytes(_ICOUNT.size))
    except OSError:
        return None
    v = _ICOUNT.unpack(raw)
    return {"rx": v[4], "tx": v[5], "frame": v[6], "overrun": v[7], "parity": v[8], "brk": v[9],
            "buf_overrun": v[10]}


def _queued(fd: int, request: int) -> int | None:
    try:
        return struct.unpack("i", fcntl.ioctl(fd, request, bytes(4)))[0]
    except OSError:
        return None


#: The slack assumed while no adapter has been seen (the line is not open): a USB adapter's.
UNSEEN_ADAPTER_SLACK = UNKNOWN_USB_LATENCY_MS / 1000 + SCHEDULING_MARGIN

AdapterProbe = Callable[[int, str], AdapterInfo]


def open_serial(port: str, **settings: Any) -> serial.Serial:
    """
    pyserial's Serial, opened exclusively.  A Linux pty has no parity: once its
    other settings match, the kernel refuses a tcsetattr that only asks for
    parity (EINVAL), so a pty (the simulator, socat) is opened without it.
    """
    try:
        return serial.Serial(port, exclusive=True, **settings)
    except termios.error as e:
        if e.args[0] != errno.EINVAL or not is_pty(port) or settings.get("parity") == serial.PARITY_NONE:
            raise
    return serial.Serial(port, exclusive=True, **dict(settings, parity=serial.PARITY_NONE))


class M_BusSerialPort(SerialPort):
    """SerialPort opened exclusively, reading up to 64 KiB at a time."""

    _serialFactory = staticmethod(open_serial)

    def set_baud_rate(self, baud: int) -> None:
        """Change the speed live (Twisted's setBaudRate calls a pyserial 2 method)."""
        self._serial.baudrate = baud

    @property
    def framing(self) -> tuple[int, str, float]:
        """What pyserial set on the device: data bits, parity, stop bits."""
        return self._serial.bytesize, self._serial.parity, self._serial.stopbits

    def doRead(self) -> Any:
        """
        Read what the device has.  A tty hands over at most one buffer (about
        4 KiB) per read: while reads come back large, more is read at once and
        passed on as one chunk, up to READ_SIZE, so a stream costs one trip
        through the reactor per 64 KiB instead of per 4 KiB.  A short read
        (an M-Bus telegram) is passed on at once.
        """
        fd = self.fileno()
        try:
            data = os.read(fd, READ_SIZE)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        if len(data) >= COALESCE_FROM:
            chunks = [data]
            size = len(data)
            while size < READ_SIZE:
                try:
                    more = os.read(fd, READ_SIZE - size)
                except OSError:
                    break  # EAGAIN, or an error the next doRead reports
                if not more:
                    break
                chunks.append(more)
                size += len(more)
                if len(more) < COALESCE_FROM:
                    break
            data = b"".join(chunks)
        self.protocol.dataReceived(data)
        return None


class _LineProtocol(Protocol):
    def __init__(self, line: "SerialLine") -> None:
        self.line = line

    def dataReceived(self, data: bytes) -> None:
        self.line._received(data)

    def connectionLost(self, reason: Failure = main.CONNECTION_DONE) -> None:
        self.line._lost(self, reason)


@implementer(IPushProducer)
class SerialLine(service.Service):
    """An M-Bus serial line, from its `LineConfig`."""

    def __init__(self, number: int, config: LineConfig, reactor: Any, stats: LineStatistics | None = None,
                 device: str | None = None, probe: AdapterProbe = prepare,
                 device_ready: defer.Deferred[str] | None = None) -> None:
        self.number = number
        self.config = config
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.stats = stats if stats is not None else LineStatistics()
        #: Device path used instead of the configured one (command line, simulator).
        self.device_override = device
        self.receiver: Receiver | None = None
        self.transport: M_BusSerialPort | None = None
        self._write: Writer = _dropped
        self._protocol: _LineProtocol | None = None
        self._reopen: Any = None
        self._paused = False
        self._producer: Any = None
        self._upstream_paused = False
        self._icount_base: dict[str, int] | None = None
        self._poll = task.LoopingCall(self._refresh)
        self._poll.clock = reactor
        self._listeners: list[Callable[[bool], None]] = []
        self._probe = probe
        #: The adapter found at the last open, or None before the first.
        self.adapter: AdapterInfo | None = None
        #: True while the device's path is still to come (`device_ready`, e.g. a simulated bus's process starting).
        self.waiting_for_device = device_ready is not None
        #: Why the device never came (`device_ready` failed): the line then stays closed.
        self.device_missing: str | None = None
        self._awaiting_device: list[defer.Deferred[None]] = []
        if device_ready is not None:
            self.device_override = ""
        self.stats.device = self.device
        self.stats.baud_rate = config.baud_rate
        self._publish_slack()
        if device_ready is not None:
            device_ready.addCallbacks(self._device_arrived, self._device_failed)

    @property
    def device(self) -> str:
        return self.device_override if self.device_override is not None else self.config.device

    @property
    def is_open(self) -> bool:
        return self.transport is not None

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self.waiting_for_device and self.device_missing is None:
            self._open()
        self._poll.start(STATISTICS_INTERVAL, now=False)

    def stopService(self) -> Any:
        super().stopService()
        self._device_known()
        if self._poll.running:
            self._poll.stop()
        self._cancel_reopen()
        self._close()
        return None

    # -- public API ----------------------------------------------------------

    def attach(self, receiver: Receiver | None) -> None:
        """Send the bytes read from the line to `receiver` (None: discard)."""
        self.receiver = receiver

    def on_state_change(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(is_open)` when the line opens or is lost."""
        self._listeners.append(listener)

    def delivery_slack(self) -> float:
        """Seconds the adapter may add to a byte's arrival at the current baud rate, plus ``extra_slack``."""
        adapter = self.adapter
        own = adapter.slack(self.config.baud_rate) if adapter is not None else UNSEEN_ADAPTER_SLACK
        return own + self.config.extra_slack

    def write(self, data: bytes) -> bool:
        """Write bytes to the device; False when the line is not open (the bytes are dropped)."""
        if self.transport is None:
            return False
        self.stats.tx_bytes += len(data)
        self._write(data)
        return True

    def apply(self, config: LineConfig, device: str | None = None) -> None:
        """Apply a changed configuration: baud rate live, a new device (`device`: an override) by reopening."""
        old_device = self.device
        self.config = config
        if device is not None:
            self.device_override, self.device_missing = device, None
        self.stats.baud_rate = config.baud_rate
        self._publish_slack()
        if self.device != old_device:
            self.stats.device = self.device
            log.info("Line {n}: device changed to {device}, reopening", n=self.number, device=self.device)
            self._close()
            self._cancel_reopen()
            if self.running:
                self._open()
        elif self.transport is not None:
            try:
                self.transport.set_baud_rate(config.baud_rate)
                log.info("Line {n}: baud rate {baud}", n=self.number, baud=config.baud_rate)
            except (OSError, ValueError, termios.error, serial.SerialException) as e:
                self._fail(f"cannot set {config.baud_rate} baud: {e}")

    def device_gone(self, why: str) -> None:
        """The device is gone until `apply` gives its new path (a simulated bus restarting): the line
        closes, does not reopen the old path (another device's by then, maybe) and shows `why`."""
        if self.transport is not None:
            self._close()
            for listener in list(self._listeners):
                listener(False)
        self._cancel_reopen()
        self.device_override = self.stats.device = ""
        self.device_missing = self.stats.error = why
        self.stats.state = LINE_ERROR

    def when_device_known(self) -> defer.Deferred[None]:
        """
        Fires once the device's path is known (at once when it was given):
        the line has tried to open it, or knows it never comes.
        """
        if not self.waiting_for_device:
            return defer.succeed(None)
        known: defer.Deferred[None] = defer.Deferred()
        self._awaiting_device.append(known)
        return known

    def _device_known(self) -> None:
        self.waiting_for_device = False
        awaiting, self._awaiting_device = self._awaiting_device, []
        for known in awaiting:
            known.callback(None)

    def _device_arrived(self, device: str) -> None:
        """The device now exists at `device`: open it if the line runs."""
        self.device_override = self.stats.device = device
        if self.running and self.transport is None and self._reopen is None:
            self._open()
        self._device_known()

    def _device_failed(self, reason: Failure) -> None:
        """The device never came (its error says why): the line stays closed, with that error."""
        if not self.waiting_for_device:
            return  # stopped while it was coming: nothing to say
        self.device_missing = self.stats.error = reason.getErrorMessage()
        self.stats.state = LINE_ERROR
        log.error("Line {n}: {why}", n=self.number, why=self.device_missing)
        self._device_known()

    # -- producer / consumer plumbing ----------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.resumeProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """The line pauses `producer` while the device's write buffer is full."""
        self._producer = producer
        if self._upstream_paused:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None

    # -- internals -----------------------------------------------------------

    def _set_upstream_paused(self, paused: bool) -> None:
        self._upstream_paused = paused
        producer = self._producer
        if producer is not None:
            producer.pauseProducing() if paused else producer.resumeProducing()

    def _received(self, data: bytes) -> None:
        self.stats.rx_bytes += len(data)
        receiver = self.receiver
        if receiver is not None:
            receiver(data)

    def _open(self) -> None:
        self._reopen = None
        protocol = _LineProtocol(self)
        try:
            transport = M_BusSerialPort(protocol, self.device, self.reactor, baudrate=self.config.baud_rate,
                                        bytesize=serial.EIGHTBITS, parity=serial.PARITY_EVEN,
                                        stopbits=serial.STOPBITS_ONE)
        except (OSError, ValueError, termios.error, serial.SerialException) as e:
            self._fail(f"cannot open {self.device}: {_reason(e)}")
            return
        self.transport = transport
        self.adapter = adapter = self._probe(transport.fileno(), self.device)
        self._publish_slack()
        about = (f"{adapter.description}; low latency: {adapter.low_latency}; "
                 f"delivery slack {self.delivery_slack() * 1000:.1f} ms")
        self._write = fast_writer(transport)
        self._protocol = protocol
        self._icount_base = read_icount(transport.fileno())
        self.stats.state = LINE_OPEN
        self.stats.error = ""
        self.stats.opened_at = self.clock.seconds()
        self.stats.tx_breaks = 0
        self._refresh()
        transport.registerProducer(_UpstreamProxy(self), True)
        if self._paused:
            transport.pauseProducing()
        if self.stats.reopen_attempts:
            log.info("Line {n}: {device} is back at {baud} baud: {about}", n=self.number, device=self.device,
                     baud=self.config.baud_rate, about=about)
        else:
            log.info("Line {n}: opened {device} at {baud} baud, 8E1: {about}", n=self.number,
                     device=self.device, baud=self.config.baud_rate, about=about)
        self.stats.reopen_attempts = 0
        for listener in list(self._listeners):
            listener(True)

    def _publish_slack(self) -> None:
        s, adapter = self.stats, self.adapter
        if adapter is not None:
            s.adapter, s.low_latency = adapter.description, adapter.low_latency
            timer = f"{adapter.latency_timer} ms" if adapter.latency_timer is not None else "none"
            s.latency_timer = f"{timer} ({adapter.latency_timer_note})" if adapter.latency_timer_note else timer
        s.extra_slack = self.config.extra_slack
        s.slack = self.delivery_slack()
        s.adapter_slack = s.slack - s.extra_slack

    def _cancel_reopen(self) -> None:
        if self._reopen is not None and self._reopen.active():
            self._reopen.cancel()
        self._reopen = None

    def _close(self) -> None:
        transport, self.transport, self._protocol = self.transport, None, None
        self._write = _dropped
        if transport is not None and transport.connected:
            transport.connectionLost(Failure(main.CONNECTION_DONE))
        self._set_upstream_paused(False)
        if self.stats.state == LINE_OPEN:
            self.stats.state = LINE_CLOSED

    def _lost(self, protocol: _LineProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return  # a transport we closed ourselves
        self.transport = None
        self._protocol = None
        self._set_upstream_paused(False)
        self._fail(f"{self.device} went away ({reason.getErrorMessage()})")

    def _fail(self, why: str) -> None:
        was_open = self.transport is not None or self.stats.state == LINE_OPEN
        if self.transport is not None:
            self._close()
        first = self.stats.state != LINE_ERROR or self.stats.error != why
        self.stats.state = LINE_ERROR
        self.stats.error = why
        self.stats.queued_rx = self.stats.queued_tx = None
        if first:
            log.error("Line {n}: {why}; retrying every {s} s", n=self.number, why=why,
                      s=self.config.reopen_interval)
        if was_open:
            for listener in list(self._listeners):
                listener(False)
        if self.running and self._reopen is None:
            self.stats.reopen_attempts += 1
            self._reopen = self.clock.callLater(self.config.reopen_interval, self._open)

    def _refresh(self) -> None:
        transport = self.transport
        if transport is None:
            return
        fd = transport.fileno()
        base = self._icount_base
        # A driver without counters at the open (a pty, some USB adapters) has none later either:
        # not asked again every second (the refresh runs between the tunnel's bytes).
        counts = read_icount(fd) if base is not None else None
        if counts is None or base is None:
            s = self.stats
            s.rx_breaks = s.parity_errors = s.framing_errors = s.overrun_errors = s.buffer_errors = None
        else:
            s = self.stats
            s.rx_breaks = counts["brk"] - base["brk"]
            s.parity_errors = counts["parity"] - base["parity"]
            s.framing_errors = counts["frame"] - base["frame"]
            s.overrun_errors = counts["overrun"] - base["overrun"]
            s.buffer_errors = counts["buf_overrun"] - base["buf_overrun"]
        self.stats.queued_rx = _queued(fd, TIOCINQ)
        kernel_out = _queued(fd, TIOCOUTQ)
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.stats.queued_tx = None if kernel_out is None else kernel_out + buffered


def _dropped(data: bytes) -> None:
    """The writer of a closed line."""


@implementer(IPushProducer)
class _UpstreamProxy:
    """
    What the serial transport pauses when its write buffer is full: the
    line's current upstream producer.  A transport that closes stops its
    producer; this proxy keeps that from closing the tunnel's client.
    """

    def __init__(self, line: SerialLine) -> None:
        self.line = line

    def pauseProducing(self) -> None:
        self.line._set_upstream_paused(True)

    def resumeProducing(self) -> None:
        self.line._set_upstream_paused(False)

    def stopProducing(self) -> None:
        self.line._set_upstream_paused(False)


def _reason(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, serial.SerialException) and "Could not exclusively lock" in text:
        return "it is in use by another program"
    if isinstance(e, (serial.SerialException, OSError)) and ("No such file" in text or "ENOENT" in text):
        return "no such device (adapter unplugged?)"
    if "Permission denied" in text:
        return "permission denied (is the user in the dialout group?)"
    return text
