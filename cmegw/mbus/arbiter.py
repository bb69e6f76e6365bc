# -*- test-case-name: tests.test_mbus_arbiter,tests.test_mbus_transparent -*-
"""
One owner of an M-Bus line per transaction.

M-Bus is half duplex with one master: a request frame goes out, then the bus
belongs to the addressed slave until its reply is complete or the time the
standard allows it has passed.  Two masters talking at once corrupt each
other's replies.  `BusArbiter` sits between a `SerialLine` and everything that
talks on it (the tunnel, the gateway's own master, tunnel sharing) and lets
one transaction run at a time.

Transactions
    `BusArbiter.transact(request)` queues a request (a bounded FIFO; a full
    queue refuses at once with `BusBusy`) and returns a Deferred that fires
    with a `Reply` when the transaction ends:

    - a clean telegram was heard (its length is read from its header with
      `frames.frame_length`, so a reply split over several reads is
      reassembled), optionally followed by `settle` seconds in which nothing
      more may arrive (more bytes mean several slaves answered: a collision);
    - nothing arrived within the first-byte timeout: 330 bit times + 50 ms
      (EN 13757-2) + 11 bit times for the character itself + the line's
      delivery slack, counted from the moment the request's last character
      has left the UART (its length in characters at the line's baud rate);
    - bytes arrived but the line then stayed silent for the
      defragmentation timeout (the slack + 3 characters) before a whole
      telegram was heard, or after bytes no telegram can start with;
    - the whole reply window ran out: the first-byte timeout plus the
      longest telegram (261 characters).

    The outcome says which (`REPLY_OK`, `REPLY_SILENT`, `REPLY_GARBLED`,
    `REPLY_INVALID`, `REPLY_TRUNCATED`); the bytes heard are always kept in
    `Reply.data`, exactly as they came, so a sharing client gets the bus's
    own garbage when several slaves answer.  A request that expects no reply
    (a broadcast to 255) ends when it has been transmitted.  Between two
    transactions the line idles for 33 bit times, as EN 60870-5-1 asks,
    counted from the last character on the line (after a silent probe the
    line has been idle for the whole answer window: the next goes at once).

    The slack is the line's (`cmegw.serial.line.SerialLine.delivery_slack`:
    the adapter's latency timer or FIFO plus the ``extra_slack`` setting),
    given as a function read at each transaction.  Each `Reply` carries the
    floor of its exchange (`cmegw.mbus.timing.exchange_floor`), so a scan can
    report its time against the wire's; ``reply_gap_peak`` keeps the largest
    delay between two deliveries of one reply beyond their characters' wire
    time: the adapter's delivery slack as measured.

    Each caller keeps at most one transaction queued at a time (the master
    sends its next request when the last one is answered; a sharing client
    likewise), so the FIFO interleaves them: a running scan and the tunnel
    clients take turns and nobody is starved.  A transaction cancelled while
    it waits leaves the queue; one cancelled on the wire keeps the bus until
    its reply window ends, so its late reply cannot corrupt the next one.

Transparent mode (the default: sharing off)
    The transparent tunnel talks to `BusArbiter.port`, a `TransparentPort`
    that looks like the line (``attach``, ``write``, producer and consumer).
    While nobody else wants the bus, the line hands its bytes straight to the
    tunnel's receiver (the arbiter is not in that path at all) and the port's
    ``write`` is one flag check in front of ``SerialLine.write``.  That is
    the device's exact behaviour and its lean byte path.

    When a transaction is queued (the gateway's master, a scan), the arbiter
    must not break into an exchange the tunnel's client has running.  It
    cannot parse the client's traffic (transparent means unparsed), so it
    takes the bus at the first of two moments that mark the end of the
    client's exchange:

    - a *quiet gap*: no byte either way for the first-byte timeout plus the
      transmission time of the last bytes written, the longest a reply to
      them could take to start.  The arbiter sees traffic without touching
      the byte path by reading the line's byte counters (``stats.rx_bytes``
      and ``tx_bytes``) each time it looks, every quarter of the gap while it
      waits.  Counters unchanged since it last gave the bus back mean nothing
      is pending: it takes the bus at once.
    - the client's *next request*: while a transaction waits, the port
      *claims* the client's writes (holds them, below).  A head-end writes
      when its previous exchange is over (answered or timed out), so its
      first byte says the bus is free: the arbiter takes it at once and the
      held request goes out after the transaction.  Without this a head-end
      polling back to back would never leave a quiet gap.

    Taking the bus swaps the line's receiver for the arbiter's collector and
    sets the port to *hold*: what the client writes is kept (bounded; past
    `HOLD_LIMIT` its reading is paused) instead of reaching the line.  After
    each transaction the arbiter looks at the held bytes: if the client has
    written something, the bus goes back when the line has idled 33 bit
    times after its last character (receiver restored, held bytes written to
    the line, the client resumed) and the next queued transaction waits again
    (for a quiet gap or the client's next request); if not, the next queued
    transaction runs.  So a client's request waits at most one master
    transaction (longest: 1.5 s at 2400 baud) and a scan never starves it.
    When the queue is empty the bus goes back at once, but the port keeps
    claiming while the line idles: a client write in those 33 bit times is
    held until they have passed.  A client that disconnects with held bytes
    loses them (counted).

Sharing mode
    `cmegw.tunnel.sharing` parses each client's frames and calls `transact`;
    nothing uses the transparent path, so no quiet gaps are needed: the bus
    is taken and given back around each transaction, and stray bytes between
    transactions go to the port's receiver (the sharing factory counts them).
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from cmegw.mbus import frames
from cmegw.mbus.replies import REPLY_GARBLED, REPLY_INVALID, REPLY_NOT_EXPECTED, REPLY_OK  # noqa: F401
from cmegw.mbus.replies import REPLY_SILENT, REPLY_TRUNCATED, Reply, classify, reply_shape  # noqa: F401
from cmegw.mbus.timing import (
    INTER_TELEGRAM_BITS,
    character_time,
    defragmentation_timeout,
    exchange_floor,
    first_byte_timeout,
    reply_timeout,
)
from cmegw.mbus.transparent import TransparentPort
from cmegw.serial.line import UNSEEN_ADAPTER_SLACK, LineUnavailable
from cmegw.stats import Counters

#: Transactions that may wait for the bus (mbusd serves 32 clients).
QUEUE_LIMIT = 32


class BusBusy(Exception):
    """Too many transactions wait for the bus already."""


@attrs.define
class ArbiterStatistics(Counters):
    """Counters of one line's arbiter (read by the web pages and the console)."""

    transactions: int = 0
    answered: int = 0
    silent: int = 0
    garbled: int = 0
    invalid: int = 0
    truncated: int = 0
    refused: int = 0
    cancelled: int = 0
    #: Bytes from the line while the arbiter owned the bus but no transaction ran.
    stray_bytes: int = 0
    #: Times the bus was taken from the transparent path, and the client bytes held meanwhile.
    takeovers: int = 0
    held_bytes: int = 0
    held_dropped: int = 0
    queue_length: int = 0
    queue_peak: int = 0
    #: Seconds the bus was owned by transactions.
    busy_time: float = 0.0
    #: Largest delay between two deliveries inside one reply, beyond their characters' wire time (seconds).
    reply_gap_peak: float = 0.0


@attrs.define(eq=False)
class _Transaction:
    request: bytes
    expect_reply: bool
    settle: float
    deferred: defer.Deferred = attrs.field(init=False)
    buffer: bytearray = attrs.field(factory=bytearray)
    started: float = 0.0
    baud: int = 2400
    slack: float = 0.0
    #: When the request's last character left, and when the last bytes of the reply arrived.
    sent_at: float = 0.0
    heard_at: float | None = None
    timer: IDelayedCall | None = None
    deadline: IDelayedCall | None = None


def _unseen_slack() -> float:
    return UNSEEN_ADAPTER_SLACK


class BusArbiter(service.Service):
    """One transaction at a time on line `number`; see the module docstring."""

    def __init__(self, number: int, line: Any, clock: Any, queue_limit: int = QUEUE_LIMIT,
                 stats: ArbiterStatistics | None = None, slack: Callable[[], float] = _unseen_slack) -> None:
        self.number = number
        self.line = line
        self.clock = clock
        #: The line's delivery slack now, in seconds (it changes when the line reopens or the setting changes).
        self.slack = slack
        self.queue_limit = queue_limit
        self.stats = stats if stats is not None else ArbiterStatistics()
        self.port = TransparentPort(self)
        self._queue: collections.deque[_Transaction] = collections.deque()
        self._current: _Transaction | None = None
        self._owning = False
        self._owned_since = 0.0
        self._start_call: IDelayedCall | None = None
        self._quiet_call: IDelayedCall | None = None
        self._bus_free_at = 0.0
        self._seen_total, self._seen_tx = self._counters()
        self._seen_at = float("-inf")
        self._quiet_needed = 0.0
        line.attach(self.port.receiver)

    # -- public API ----------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a transaction runs or waits."""
        return self._current is not None or bool(self._queue)

    def transact(self, request: bytes, expect_reply: bool = True, settle: float = 0.0) -> defer.Deferred:
        """
        Queue `request`; the Deferred fires with its `Reply` (or fails with
        `BusBusy` when the queue is full, `LineUnavailable` when the line is
        not open).  Cancelling it takes a waiting request off the queue.
        """
        if len(self._queue) >= self.queue_limit:
            self.stats.refused += 1
            return defer.fail(BusBusy(f"line {self.number}: {len(self._queue)} transactions wait already"))
        transaction = _Transaction(bytes(request), expect_reply, settle)
        transaction.deferred = defer.Deferred(lambda d: self._cancelled(transaction))
        self._queue.append(transaction)
        self._queue_changed()
        self._advance()
        return transaction.deferred

    def stopService(self) -> Any:
        super().stopService()
        self._cancel_waits()
        waiting, self._queue = list(self._queue), collections.deque()
        self._queue_changed()
        current = self._current
        if current is not None:
            self._stop_timers(current)
            self._current = None
            waiting.insert(0, current)
        for transaction in waiting:
            if not transaction.deferred.called:
                transaction.deferred.errback(LineUnavailable(f"line {self.number} is stopping"))
        if self._owning:
            self._give_back(self.clock.seconds())
        self._bus_free_at = 0.0
        self._unclaim(self.clock.seconds())
        return None

    # -- scheduling ----------------------------------------------------------

    def _advance(self) -> None:
        """Start the next transaction when the bus is ours and idle; give it back when not needed."""
        if self._current is not None or self._start_call is not None or self._quiet_call is not None:
            return
        now = self.clock.seconds()
        if self._owning and (not self._queue or self.port.held):
            if self.port.held and self._wait_for_idle(now):
                return  # the client's bytes go out when the line has idled
            self._give_back(now)
        if not self._queue:
            self._unclaim(now)
            return
        if not self._owning:
            if not self.port.held:
                wait = self._quiet_remaining(now)
                if wait > 0:
                    self.port.holding = True  # claim the client's next request
                    self._quiet_call = self.clock.callLater(min(wait, self._quiet_needed / 4), self._quiet_due)
                    return
            self._take()
        if self._wait_for_idle(now):
            return
        self._start(self._queue.popleft())

    def _wait_for_idle(self, now: float) -> bool:
        """Whether the line must still idle after the last transaction (then `_advance` runs again when it has)."""
        wait = self._bus_free_at - now
        if wait <= 0:
            return False
        self._start_call = self.clock.callLater(wait, self._start_due)
        return True

    def _cancel_waits(self) -> None:
        """Stop waiting for the bus (for the idle time, or for a quiet gap)."""
        for call in (self._start_call, self._quiet_call):
            if call is not None and call.active():
                call.cancel()
        self._start_call = self._quiet_call = None

    def _quiet_due(self) -> None:
        self._quiet_call = None
        self._advance()

    def _claimed(self) -> None:
        """The client began a request while a transaction waited: its last exchange is over."""
        if self._owning:
            return
        if self._quiet_call is not None and self._quiet_call.active():
            self._quiet_call.cancel()
        self._quiet_call = None
        self._advance()

    def _start_due(self) -> None:
        self._start_call = None
        self._advance()

    def _counters(self) -> tuple[int, int]:
        stats = self.line.stats
        return stats.rx_bytes + stats.tx_bytes, stats.tx_bytes

    def _quiet_remaining(self, now: float) -> float:
        """Seconds until the transparent path has been quiet long enough to take the bus."""
        total, tx = self._counters()
        if total != self._seen_total:
            self._quiet_needed = self._reply_may_start_within(tx - self._seen_tx)
            self._seen_total, self._seen_tx, self._seen_at = total, tx, now
        return self._seen_at + self._quiet_needed - now

    def _take(self) -> None:
        self._owning = True
        self._owned_since = self.clock.seconds()
        self.port.holding = True
        if self.port.client_connected:
            self.stats.takeovers += 1
        self.line.attach(self._collect)
        if self.port.line_paused:
            self.line.resumeProducing()

    def _give_back(self, now: float) -> None:
        self._owning = False
        self.stats.busy_time += now - self._owned_since
        self.line.attach(self.port.receiver)
        if self.port.line_paused:
            self.line.pauseProducing()
        if not self._release_port(now):
            self._seen_total, self._seen_tx = self._counters()
            self._seen_at = float("-inf")  # every byte since the takeover was ours: nothing is pending

    def _unclaim(self, now: float) -> None:
        """Nothing waits any more: stop claiming the client's writes (and send what was claimed)."""
        if not self._owning and self.port.holding and not (self.port.held and self._wait_for_idle(now)):
            self._release_port(now)

    def _release_port(self, now: float) -> int:
        """
        Let the client write again, its held bytes first; how many there were
        (their reply is pending).  While the line still idles after the last
        transaction the port keeps claiming: a write then is held until the
        idle has passed (no timer runs unless the client writes).
        """
        if not self.port.held and now < self._bus_free_at:
            return 0
        self.port.holding = False
        held = self.port.release()
        if held:
            self._seen_total, self._seen_tx = self._counters()
            self._seen_at = now
            self._quiet_needed = self._reply_may_start_within(held)
        return held

    def _reply_may_start_within(self, written: int) -> float:
        """Seconds after `written` bytes went to the line within which a reply to them may still start."""
        baud = self.line.config.baud_rate
        return first_byte_timeout(baud, self.slack()) + min(written, frames.MAX_TELEGRAM_LENGTH) * character_time(baud)

    def _queue_changed(self) -> None:
        self.stats.queue_length = len(self._queue)
        self.stats.queue_peak = max(self.stats.queue_peak, len(self._queue))

    # -- one transaction -----------------------------------------------------

    def _start(self, transaction: _Transaction) -> None:
        self._queue_changed()
        self._current = transaction
        now = self.clock.seconds()
        baud = self.line.config.baud_rate
        transaction.started = now
        transaction.baud = baud
        transaction.slack = slack = self.slack()
        self.stats.transactions += 1
        if not self.line.write(transaction.request):
            self._current = None
            self._bus_free_at = now
            transaction.deferred.errback(LineUnavailable(f"line {self.number} is not open"))
            self._advance()
            return
        sending = len(transaction.request) * character_time(baud)
        transaction.sent_at = now + sending
        if not transaction.expect_reply:
            transaction.timer = self.clock.callLater(sending + INTER_TELEGRAM_BITS / baud, self._finish)
            return
        transaction.timer = self.clock.callLater(sending + first_byte_timeout(baud, slack), self._expired)
        transaction.deadline = self.clock.callLater(sending + reply_timeout(baud, slack), self._finish)

    def _collect(self, data: bytes) -> None:
        transaction = self._current
        if transaction is None:
            self.stats.stray_bytes += len(data)
            self._heard_unasked()
            return
        now = self.clock.seconds()
        if transaction.heard_at is not None:
            gap = now - transaction.heard_at - len(data) * character_time(transaction.baud)
            self.stats.reply_gap_peak = max(self.stats.reply_gap_peak, gap)
        transaction.heard_at = now
        transaction.buffer += data
        if not transaction.expect_reply:
            return
        shape = reply_shape(transaction.buffer)
        if shape == REPLY_OK and not transaction.settle:
            self._finish()
            return
        delay = transaction.settle if shape == REPLY_OK else defragmentation_timeout(transaction.baud,
                                                                                     transaction.slack)
        timer = transaction.timer
        if timer is not None and timer.active():
            timer.reset(delay)
        else:
            transaction.timer = self.clock.callLater(delay, self._expired)

    def _heard_unasked(self) -> None:
        """
        Bytes no transaction asked for (the tail of a reply that came too
        late): the next request waits until the line has been quiet for a
        defragmentation timeout and the idle, or it would meet that tail.
        """
        now = self.clock.seconds()
        baud = self.line.config.baud_rate
        quiet = now + defragmentation_timeout(baud, self.slack()) + INTER_TELEGRAM_BITS / baud
        if quiet <= self._bus_free_at:
            return
        self._bus_free_at = quiet
        if self._start_call is not None and self._start_call.active():
            self._start_call.reset(quiet - now)

    def _expired(self) -> None:
        """
        The wait for a reply's first or next byte ran out: finish after one
        more reactor turn.  A reactor that was held up (a loaded box) runs
        its due timers before it reads; the turn lets bytes the kernel
        already holds arrive in time, instead of a reply heard as silence
        and then taken for the next transaction's.
        """
        transaction = self._current
        if transaction is not None:
            transaction.timer = self.clock.callLater(0, self._finish)

    def _finish(self) -> None:
        transaction = self._current
        if transaction is None:
            return
        self._current = None
        self._stop_timers(transaction)
        now = self.clock.seconds()
        data, baud = bytes(transaction.buffer), transaction.baud
        reply = attrs.evolve(classify(transaction.request, data, transaction.expect_reply, now - transaction.started),
                             floor=exchange_floor(len(transaction.request), len(data), baud, transaction.expect_reply))
        self._count(reply)
        last_on_line = transaction.heard_at if transaction.heard_at is not None else transaction.sent_at
        self._bus_free_at = max(now, last_on_line + INTER_TELEGRAM_BITS / baud)
        if reply.outcome in (REPLY_TRUNCATED, REPLY_GARBLED):
            self._heard_unasked()  # the rest of a reply cut short may still come: let it pass first
        if not transaction.deferred.called:
            transaction.deferred.callback(reply)
        self._advance()

    def _count(self, reply: Reply) -> None:
        stats = self.stats
        if reply.outcome == REPLY_OK:
            stats.answered += 1
        elif reply.outcome == REPLY_SILENT:
            stats.silent += 1
        elif reply.outcome == REPLY_GARBLED:
            stats.garbled += 1
        elif reply.outcome == REPLY_INVALID:
            stats.invalid += 1
        elif reply.outcome == REPLY_TRUNCATED:
            stats.truncated += 1

    @staticmethod
    def _stop_timers(transaction: _Transaction) -> None:
        for call in (transaction.timer, transaction.deadline):
            if call is not None and call.active():
                call.cancel()
        transaction.timer = transaction.deadline = None

    def _cancelled(self, transaction: _Transaction) -> None:
        self.stats.cancelled += 1
        if transaction in self._queue:
            self._queue.remove(transaction)
            self._queue_changed()
            if not self._queue:
                self._cancel_waits()
            self._advance()
        # On the wire: the Deferred fails now, the bus stays ours until the reply window ends.
