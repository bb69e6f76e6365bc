# -*- test-case-name: tests.test_mbus_master -*-
"""
The gateway's own M-Bus master: scan a line by primary and by secondary
address, read a meter and decode its records.

Every exchange goes through the line's `BusArbiter`, one transaction at a
time, so the master shares the bus with the tunnel and never corrupts a
client's frames; the arbiter's timeouts follow the line's baud rate.

- `Master.scan_primary`: SND_NKE to each address 0..250; a clean E5 with
  nothing after it (`timing.collision_settle`: one character and the slack,
  within the idle the next request waits anyway) means a meter, silence
  none (tried ``1 + silent_retries`` times: by default once more, as
  libmbus's ``max_search_retry`` = 1; 0 halves the scan of an empty bus),
  a garbled answer is tried ``1 + retries`` times and after every
  try is reported as a collision (two meters on one address) naming the address.
- `Master.scan_secondary`: the wildcard search.  Select with the
  identification number's digits wild (F), fix them one at a time, 0..9 at
  the current position: silence, nobody; a garbled answer, several meters
  (go one digit deeper); a clean E5, one meter, confirmed by reading it
  (REQ_UD2 to 253), whose answer gives its whole secondary address (two
  meters acknowledging in step read as one clean E5, but their RSP_UDs
  always collide: a garbled read also sends the search deeper).  At most 8
  levels, `MAX_METERS` meters and `MAX_SECONDARY_PROBES` selections.
- `Master.read`: SND_NKE (primary) or selection (secondary), then REQ_UD2 with
  FCB set and toggled for each further telegram while the meter ends its
  records with DIF 0x1F; a repeated request keeps its FCB so the meter sends
  the same telegram again.  Decoded with `cmegw.mbus.records`.

A silent meter, a bad checksum, a truncated or garbled answer are retried,
then fail with a `MeterError` that names the address and says what was
heard.  A scan is a `Scan` that reports progress, can be cancelled and always
ends; it adds up the wire floor of its transactions (``Scan.floor``) so its
time can be shown against it.  The Deferreds of `read` always fire within
the retries' timeouts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.mbus.arbiter import (
    REPLY_GARBLED,
    REPLY_INVALID,
    REPLY_SILENT,
    REPLY_TRUNCATED,
    BusArbiter,
    BusBusy,
    Reply,
)
from cmegw.mbus import frames, records
from cmegw.mbus.address import SecondaryAddress
from cmegw.mbus.results import (
    SCAN_CANCELLED,
    SCAN_DONE,
    SCAN_FAILED,
    MasterStatistics,
    MeterInfo,
    Reading,
    Scan,
)
from cmegw.mbus.timing import collision_settle
from cmegw.serial.line import LineUnavailable

log = Logger(namespace="cmegw.master")

PRIMARY_ADDRESSES = range(0, frames.MAX_PRIMARY + 1)
#: Further tries of a probe that got no clean answer (libmbus: max_search_retry = 1), and at least
#: of one that got a garbled answer (a collision may be noise).
SCAN_RETRIES = 1
MIN_GARBLED_RETRIES = 1
#: Further tries of a read request (libmbus: max_data_retry = 3).
READ_RETRIES = 3
#: Telegrams one multi-telegram read may take.
MAX_TELEGRAMS = 32
#: Meters a secondary scan finds at most (the device's integrated master: 256).
MAX_METERS = 256
#: Selections a secondary scan sends at most: 10 per level for every meter's 8 levels.
MAX_SECONDARY_PROBES = 10 * 8 * MAX_METERS

_HEARD = {
    REPLY_SILENT: "no answer",
    REPLY_GARBLED: "a garbled answer (collision or noise)",
    REPLY_INVALID: "an invalid answer",
    REPLY_TRUNCATED: "a truncated answer",
}


class MeterError(Exception):
    """A meter could not be reached or read; the message names its address."""


class ScanRunning(Exception):
    """The line's master runs a scan already."""


def describe_address(address: int | SecondaryAddress | str) -> str:
    if isinstance(address, int):
        return f"primary address {address}"
    return f"secondary address {address}"


def the_meter(address: int | SecondaryAddress | str) -> str:
    """The meter an error is about, in words: "the meter at address 5"."""
    if isinstance(address, int):
        return f"the meter at address {address}"
    return f"the meter at secondary address {address}"


def _failed(what: str, reply: Reply, tries: int, asked: str = "") -> str:
    """Why `what` gave no usable answer, in words: "the meter at address 5 did not answer (4 tries)"."""
    count = f"{tries} {'try' if tries == 1 else 'tries'}"
    if reply.silent:
        return f"{what} did not answer{asked} ({count})"
    return f"{what} sent {_heard(reply)}{asked} ({count})"


def parse_meter_address(text: str | int) -> int | SecondaryAddress | str:
    """
    What a user typed: a primary address (0..250, 254), a secondary address
    (``12345678-KAM-19-04`` or libmbus' 16 hex digits) or an identification
    number alone (8 digits, selected with manufacturer, version and medium wild).
    """
    if isinstance(text, int):
        value = text
    else:
        text = text.strip()
        if text.isdigit() and len(text) <= 3:
            value = int(text)
        elif len(text) == 8 and text.isdigit():
            return text
        else:
            return SecondaryAddress.parse(text)
    if not (0 <= value <= frames.MAX_PRIMARY or value == frames.BROADCAST_REPLY):
        raise ValueError(f"primary address {value} is outside 0..250 (or 254)")
    return value


def _heard(reply: Reply) -> str:
    text = _HEARD.get(reply.outcome, reply.outcome)
    if reply.error:
        text += f" ({reply.error})"
    return text


class Master(service.Service):
    """The M-Bus master of line `number`, over its arbiter."""

    def __init__(self, number: int, arbiter: BusArbiter, clock: Any) -> None:
        self.number = number
        self.arbiter = arbiter
        self.clock = clock
        #: The running or last scan.
        self.scan: Scan | None = None
        #: The meters the last finished scan of each kind ("primary", "secondary") found.
        self.results: dict[str, list[MeterInfo]] = {}
        self.stats = MasterStatistics()
        self._reads: set[defer.Deferred] = set()

    def stopService(self) -> Any:
        super().stopService()
        if self.scan is not None:
            self.scan.cancel()
        for d in list(self._reads):
            d.cancel()
        return None

    # -- scans -----------------------------------------------------------------

    def scan_primary(self, addresses: Iterable[int] = PRIMARY_ADDRESSES, retries: int = SCAN_RETRIES,
                     identify: bool = False, silent_retries: int | None = None) -> Scan:
        """
        Start a primary scan; with `identify`, each meter found is read once
        (REQ_UD2) to learn its secondary address.  A probe is tried again
        `retries` times after a garbled answer and `silent_retries` times
        (default: `retries`) after silence.
        """
        wanted = list(addresses)
        for address in wanted:
            if not 0 <= address <= frames.MAX_PRIMARY:
                raise ValueError(f"primary address {address} is outside 0..{frames.MAX_PRIMARY}")
        scan = self._new_scan("primary", len(wanted), retries, silent_retries)
        self._run(scan, self._primary(scan, wanted, identify))
        return scan

    def scan_secondary(self, retries: int = SCAN_RETRIES, limit: int = MAX_METERS,
                       silent_retries: int | None = None) -> Scan:
        """Start a secondary (wildcard) scan; tries again as `scan_primary` does."""
        scan = self._new_scan("secondary", 0, retries, silent_retries)
        self._run(scan, self._secondary(scan, min(limit, MAX_METERS)))
        return scan

    def _new_scan(self, kind: str, total: int, retries: int, silent_retries: int | None) -> Scan:
        if self.scan is not None and self.scan.running:
            raise ScanRunning(f"line {self.number}: a {self.scan.kind} scan is running")
        line_config = getattr(getattr(self.arbiter, "line", None), "config", None)
        scan = self.scan = Scan(kind, self.number, self.clock.seconds(), total,
                                baud=getattr(line_config, "baud_rate", None), retries=retries,
                                silent_retries=retries if silent_retries is None else silent_retries)
        self.stats.scans += 1
        log.info("Line {n}: {kind} scan started", n=self.number, kind=kind)
        return scan

    def _run(self, scan: Scan, run: defer.Deferred) -> None:
        scan._run = run

        def ended(result: Any) -> None:
            if isinstance(result, Failure):
                if result.check(defer.CancelledError):
                    scan.state = SCAN_CANCELLED
                    self.stats.scans_cancelled += 1
                else:
                    scan.state = SCAN_FAILED
                    self.stats.scans_failed += 1
                    if result.check(MeterError, LineUnavailable, BusBusy):
                        scan.errors.append(result.getErrorMessage())
                    else:
                        scan.errors.append(repr(result.value))
                        log.failure("Line {n}: scan failed", result, n=self.number)
            else:
                scan.state = SCAN_DONE
                scan.covered = 1.0
            scan.finished_at = self.clock.seconds()
            scan.current = ""
            if scan.state == SCAN_DONE:
                self.results[scan.kind] = list(scan.found)
            log.info("Line {n}: {kind} scan {state}: {count} meters in {s:.1f} s", n=self.number,
                     kind=scan.kind, state=scan.state, count=len(scan.found), s=scan.finished_at - scan.started_at)
            scan._changed()
            scan.deferred.callback(scan)

        run.addBoth(ended)

    def _settle(self) -> float:
        """After a clean E5: the time in which a second slave's answer would show (`timing.collision_settle`)."""
        return collision_settle(self.arbiter.line.config.baud_rate, self.arbiter.slack())

    @defer.inlineCallbacks
    def _exchange(self, request: bytes, retries: int, accept: Callable[[frames.Frame], bool],
                  settle: float = 0.0, silent_retries: int | None = None, scan: Scan | None = None) -> Any:
        """
        Send `request` until `accept` takes the answer (one clean telegram:
        length, stop byte and checksum right): at most 1 + `retries` times,
        and after silence at most 1 + `silent_retries` (default `retries`).
        Fires with the last `Reply` and whether `accept` took it; the floor of
        each transaction is added to `scan`.
        """
        quiet = retries if silent_retries is None else silent_retries
        for tries in range(1, 2 + max(retries, quiet)):
            reply = yield self._transact(scan, request, settle=settle)
            if reply.ok and reply.frame is not None and accept(reply.frame):
                return reply, True
            if tries > (quiet if reply.silent else retries):
                break
        return reply, False

    @defer.inlineCallbacks
    def _transact(self, scan: Scan | None, request: bytes, **kw: Any) -> Any:
        reply = yield self.arbiter.transact(request, **kw)
        if scan is not None:
            scan.floor += reply.floor
        return reply

    @staticmethod
    def _scan_retries(scan: Scan, probe: bool = True) -> dict[str, Any]:
        """
        The tries again of a scan's probe: after silence as the scan says, after
        a garbled answer at least one.  A meter that acknowledged is read with
        those tries again after silence too (`probe` False).
        """
        retries = max(scan.retries, MIN_GARBLED_RETRIES)
        return {"retries": retries, "silent_retries": scan.silent_retries if probe else retries, "scan": scan}

    @defer.inlineCallbacks
    def _primary(self, scan: Scan, addresses: list[int], identify: bool) -> Any:
        settle = self._settle()
        tries = self._scan_retries(scan)
        for address in addresses:
            scan.current = str(address)
            reply, acknowledged = yield self._exchange(frames.snd_nke(address), accept=_is_ack, settle=settle,
                                                       **tries)
            if acknowledged:
                meter = MeterInfo(address)
                if identify:
                    meter = yield self._identify(address, scan)
                scan.found.append(meter)
            elif reply.ok:
                scan.errors.append(f"address {address}: a {reply.frame.kind} frame instead of an acknowledgement")
            elif not reply.silent:
                scan.errors.append(f"address {address}: {_heard(reply)} ({1 + tries['retries']} tries); "
                                   "two meters on one address?")
            scan.done += 1
            scan._changed()

    @defer.inlineCallbacks
    def _identify(self, address: int, scan: Scan) -> Any:
        reply, answered = yield self._exchange(frames.req_ud2(address, fcb=True), accept=_is_rsp_ud,
                                               **self._scan_retries(scan, probe=False))
        if not answered:
            scan.errors.append(f"address {address}: acknowledged, but "
                               + ("sent no data" if reply.silent else f"sent {_heard(reply)} for its data"))
            return MeterInfo(address)
        return MeterInfo(address, _header_address(reply.frame))

    @defer.inlineCallbacks
    def _secondary(self, scan: Scan, limit: int) -> Any:
        settle = self._settle()
        tries = self._scan_retries(scan)
        yield self._deselect_all(scan)
        pending = [str(digit) for digit in range(9, -1, -1)]
        try:
            while pending:
                if scan.done >= MAX_SECONDARY_PROBES:
                    scan.errors.append(f"stopped after {MAX_SECONDARY_PROBES} selections")
                    break
                prefix = pending.pop()
                pattern = prefix.ljust(8, "F")
                scan.current = pattern
                share = 10.0 ** -len(prefix)
                reply, acknowledged = yield self._exchange(frames.select_secondary(pattern), accept=_is_ack,
                                                           settle=settle, **tries)
                scan.done += 1
                several = False
                if acknowledged:
                    answer, answered = yield self._exchange(frames.req_ud2(frames.SELECTED, fcb=True),
                                                            accept=_is_rsp_ud, **self._scan_retries(scan, False))
                    if answered:
                        address = _header_address(answer.frame)
                        if address is not None:
                            scan.found.append(MeterInfo(answer.frame.a, address))
                        elif len(prefix) == 8:
                            scan.found.append(MeterInfo(answer.frame.a, None, prefix))
                        else:
                            several = True  # no long header: narrow down to the whole number
                    elif answer.silent:
                        scan.errors.append(f"{pattern}: acknowledged the selection, but no answer to REQ_UD2")
                    else:
                        several = True
                elif reply.ok:
                    scan.errors.append(f"{pattern}: answered the selection with a {reply.frame.kind} frame")
                elif not reply.silent:
                    several = True
                if several and len(prefix) < 8:
                    pending.extend(prefix + str(digit) for digit in range(9, -1, -1))
                else:
                    if several:
                        scan.errors.append(f"{pattern}: several meters share this identification number")
                    scan.covered += share
                scan._changed()
                if len(scan.found) >= limit:
                    if pending:
                        scan.errors.append(f"stopped at {limit} meters")
                    break
        except BaseException:
            self._deselect_quietly()
            raise
        yield self._transact(scan, frames.snd_nke(frames.SELECTED))

    @defer.inlineCallbacks
    def _deselect_all(self, scan: Scan | None = None) -> Any:
        """SND_NKE to 253 (deselects) and to 255 (resets every meter's link layer, no answer), as libmbus."""
        yield self._transact(scan, frames.snd_nke(frames.SELECTED))
        yield self._transact(scan, frames.snd_nke(frames.BROADCAST_NOREPLY), expect_reply=False)

    def _deselect_quietly(self) -> None:
        d = self.arbiter.transact(frames.snd_nke(frames.SELECTED))
        d.addErrback(lambda failure: None)

    # -- reading ---------------------------------------------------------------

    def read(self, address: int | SecondaryAddress | str, retries: int = READ_RETRIES) -> defer.Deferred:
        """
        Read a meter by primary address (int), secondary address or
        identification number; fires with a `Reading` or fails with `MeterError`.
        """
        if isinstance(address, str):
            address = parse_meter_address(address)
        d = self._read(address, retries)
        self._reads.add(d)

        def done(result: Any) -> Any:
            self._reads.discard(d)
            self.stats.reads += 1
            if isinstance(result, Failure):
                self.stats.read_failures += 1
                if result.check(LineUnavailable, BusBusy):
                    raise MeterError(f"{the_meter(address)} cannot be read: {result.getErrorMessage()}")
            else:
                self.stats.telegrams += len(result.telegrams)
            return result

        d.addBoth(done)
        return d

    @defer.inlineCallbacks
    def _read(self, address: int | SecondaryAddress | str, retries: int) -> Any:
        what = the_meter(address)
        if isinstance(address, int):
            target = address
            reply, acknowledged = yield self._exchange(frames.snd_nke(address), retries, _is_ack)
            if not acknowledged:
                raise MeterError(_failed(what, reply, 1 + retries))
        else:
            target = frames.SELECTED
            yield self._deselect_all()
            if isinstance(address, SecondaryAddress):
                select = frames.select_secondary(address.ident, address.manufacturer_code, address.version,
                                                 address.medium)
            else:
                select = frames.select_secondary(address)
            reply, acknowledged = yield self._exchange(select, retries, _is_ack, self._settle())
            if not acknowledged:
                if reply.outcome == REPLY_GARBLED:
                    raise MeterError(f"several meters answer to {describe_address(address)} (a collision)")
                raise MeterError(_failed(what, reply, 1 + retries, " when selected"))
        telegrams: list[records.Telegram] = []
        raw: list[bytes] = []
        fcb = True
        primary = None
        while True:
            if len(telegrams) == MAX_TELEGRAMS:
                raise MeterError(f"{what} sent more than {MAX_TELEGRAMS} telegrams; the reading was stopped")
            reply, answered = yield self._exchange(frames.req_ud2(target, fcb), retries,
                                                   lambda frame: _is_rsp_ud(frame) and _from(frame, target))
            if not answered:
                part = f" when asked for telegram {len(telegrams) + 1}" if telegrams else " when asked for its data"
                if reply.ok:
                    raise MeterError(f"{what} sent a {reply.frame.kind} frame instead of its data "
                                     f"(C 0x{reply.frame.c or 0:02X}, A {reply.frame.a}; {1 + retries} tries)")
                raise MeterError(_failed(what, reply, 1 + retries, part))
            try:
                telegram = records.decode_frame(reply.frame)
            except records.DecodeError as e:
                raise MeterError(f"{what} sent data that cannot be decoded: {e}") from None
            telegrams.append(telegram)
            raw.append(reply.data)
            primary = reply.frame.a
            if not telegram.more_follows:
                break
            fcb = not fcb
        return Reading(describe_address(address), tuple(telegrams), tuple(raw), primary, self.clock.seconds())


def _is_ack(frame: frames.Frame) -> bool:
    return frame.kind == "ack"


def _is_rsp_ud(frame: frames.Frame) -> bool:
    return frame.kind in ("long", "control") and frame.function == frames.RSP_UD


def _from(frame: frames.Frame, target: int) -> bool:
    """A reply to a primary address comes from that address (a late answer of another meter does not)."""
    return target > frames.MAX_PRIMARY or frame.a == target


def _header_address(frame: frames.Frame) -> SecondaryAddress | None:
    if frame.ci == frames.CI_VARIABLE and len(frame.data) >= 8:
        try:
            return SecondaryAddress.from_bytes(frame.data[:8])
        except ValueError:
            return None
    return None
