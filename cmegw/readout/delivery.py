# -*- test-case-name: tests.test_readout_delivery -*-
"""
Store and forward: a `Forwarder` drains one target's queue in the reading
store, oldest reading first, while the target is ready.

Up to ``target.window`` readings are in flight at a time.  An acknowledged
reading leaves the queue; a failed one stops the sending, and after a
back-off (doubling, jittered, bounded) the forwarder starts again from the
oldest reading still queued: the order holds, and only what was in flight can
arrive twice.
"""

from __future__ import annotations

import random as _random
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.readout.reading import DeliveryTarget, StoredReading
from cmegw.readout.store import ReadingStore

log = Logger(namespace="cmegw.readout.delivery")

#: How often the forwarder looks at its queue without being woken (seconds).
POLL_INTERVAL = 1.0


class Forwarder:
    """
    Sends what the store queued for ``target``, in time order.

    `wake` is called when a reading was added; a poll every `POLL_INTERVAL`
    seconds also looks, so a target that became ready again is drained
    without one.  ``target.status`` gets ``delivered``, ``last_delivery`` and
    ``failures`` (one per breakdown: the failure that starts a back-off).
    """

    def __init__(
        self,
        store: ReadingStore,
        target: DeliveryTarget,
        clock: IReactorTime,
        backoff_min: float = 1.0,
        backoff_max: float = 300.0,
        random: Callable[[], float] = _random.random,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.store = store
        self.target = target
        self.clock = clock
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self._random = random
        self.running = False
        #: Sent in this round and not answered yet, in the order sent.
        self._in_flight: dict[int, StoredReading] = {}
        #: The id of the last reading sent in this round: the next fetch starts after it.
        self._cursor = 0
        #: Acknowledged, not yet taken off the store's queue.
        self._to_remove: set[int] = set()
        self._removing = False
        self._fetching = False
        self._in_drain = False
        self._again = False
        #: Bumped by every breakdown and by stop: late answers of an earlier round steer nothing.
        self._round = 0
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._poll = task.LoopingCall(self._poll_once)
        self._poll.clock = clock

    # -- life cycle

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._poll.start(self.poll_interval, now=True)

    def stop(self) -> None:
        """Stop sending; what is in flight is not waited for (it is sent again after a start)."""
        self.running = False
        self._round += 1
        self._in_flight.clear()
        self._cursor = 0
        if self._poll.running:
            self._poll.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    @property
    def backing_off(self) -> bool:
        """True while the forwarder waits after a failure."""
        return self._retry is not None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def backlog(self) -> defer.Deferred:
        """Fires with (readings queued for the target, time of the oldest or None)."""
        return self.store.backlog(self.target.name)

    def wake(self) -> None:
        """Something was queued (or the target may be ready again): send what the window allows."""
        if not self.running or self._retry is not None:
            return
        self._remove()
        self._drain()

    def _poll_once(self) -> None:
        try:
            self.wake()
        except Exception:
            log.failure("forwarding to {target} failed", target=self.target.name)

    # -- sending

    def _drain(self) -> None:
        """Fetch and send; never two fetches at once (a wake meanwhile drains again after it)."""
        self._again = True
        if self._fetching:
            return
        while self._again and not self._fetching:
            self._again = False
            if not self.running or self._retry is not None or not self.target.ready():
                return
            room = self.target.window - len(self._in_flight)
            if room <= 0:
                return
            after = self._cursor if self._in_flight else 0
            self._fetching = True
            self._in_drain = True
            try:
                d = self.store.pending(self.target.name, room + len(self._to_remove), after)
                d.addCallbacks(self._fetched, self._fetch_failed,
                               callbackArgs=(self._round,), errbackArgs=(self._round,))
            finally:
                self._in_drain = False

    def _fetched(self, readings: list[StoredReading], round_: int) -> None:
        try:
            if round_ != self._round:
                return
            for reading in readings:
                if reading.id in self._to_remove or reading.id in self._in_flight:
                    continue
                if (round_ != self._round or len(self._in_flight) >= self.target.window
                        or not self.target.ready()):
                    break
                self._send(reading)
        finally:
            self._fetching = False
        if self._again and not self._in_drain:
            self._drain()

    def _fetch_failed(self, failure: Failure, round_: int) -> None:
        self._fetching = False
        log.failure("the queue of {target} cannot be read", failure, target=self.target.name)
        if round_ == self._round and self.running:
            self._back_off()

    def _send(self, reading: StoredReading) -> None:
        self._in_flight[reading.id] = reading
        self._cursor = reading.id
        round_ = self._round
        d = defer.maybeDeferred(self.target.deliver, reading)
        d.addCallbacks(self._acked, self._failed, callbackArgs=(reading, round_),
                       errbackArgs=(reading, round_))

    def _acked(self, _: Any, reading: StoredReading, round_: int) -> None:
        if not self.running:
            return
        if round_ == self._round:
            self._in_flight.pop(reading.id, None)
        status = self.target.status
        status.delivered += 1
        status.last_delivery = self.clock.seconds()
        self._attempt = 0
        self._to_remove.add(reading.id)
        self._remove()
        self._drain()

    def _failed(self, failure: Failure, reading: StoredReading, round_: int) -> None:
        if not self.running or round_ != self._round:
            return
        self.target.status.failures += 1
        log.info("{target} did not take reading {id} of {meter}: {why}; trying again from the oldest queued",
                 target=self.target.name, id=reading.id, meter=reading.meter,
                 why=failure.getErrorMessage())
        self._back_off()

    def _back_off(self) -> None:
        self._round += 1
        self._in_flight.clear()
        self._cursor = 0
        self._attempt += 1
        self._retry = self.clock.callLater(self.backoff_delay(self._attempt), self._resume)

    def backoff_delay(self, attempt: int) -> float:
        """Between half and all of ``backoff_min * 2**(attempt-1)``, at most ``backoff_max``."""
        base = min(self.backoff_max, self.backoff_min * 2.0 ** min(attempt - 1, 64))
        return base * (0.5 + 0.5 * self._random())

    def _resume(self) -> None:
        self._retry = None
        self.wake()

    # -- taking delivered readings off the queue

    def _remove(self) -> None:
        """Take the acknowledged readings off the queue: one transaction per batch, one batch at a time."""
        if self._removing or not self._to_remove:
            return
        ids = sorted(self._to_remove)
        self._removing = True

        def removed(_: Any) -> None:
            self._removing = False
            self._to_remove.difference_update(ids)
            self._remove()

        def failed(failure: Failure) -> None:
            self._removing = False
            log.failure("delivered readings of {target} stay queued (taking them off is tried again)", failure,
                        target=self.target.name)

        self.store.delivered(self.target.name, ids).addCallbacks(removed, failed)
