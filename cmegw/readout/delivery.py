# -*- test-case-name: tests.test_readout_delivery -*-
"""
The forwarder: drains one target's queue in the reading store, oldest first.

While the target is ready it sends up to ``target.window`` readings at a
time; each acknowledged one leaves the queue.  After a failure it stops,
waits a back-off (doubled after each failure up to the longest, with jitter,
back to the first after a success) and starts again from the oldest reading
still queued: the order holds, and only what was in flight can arrive twice
(with the same reading id).  A wake (a new reading) or the periodic check
(a target that became ready again) starts a drain; never two at once.
"""

from __future__ import annotations

import random as _random
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.logger import Logger

from cmegw.readout.reading import StoredReading

log = Logger(namespace="cmegw.readout.delivery")

#: How often the forwarder looks whether a target became ready again.
CHECK_INTERVAL = 1.0


class Forwarder:
    """Sends one target's queued readings, oldest first, and marks what the target acknowledged."""

    def __init__(self, store: Any, target: Any, clock: Any, backoff_min: float = 1.0, backoff_max: float = 300.0,
                 random: Callable[[], float] = _random.random) -> None:
        self.store = store
        self.target = target
        self.clock = clock
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._random = random
        self._delay = backoff_min
        self._hold_until = 0.0
        self._draining = False
        self._again = False
        self._loop: task.LoopingCall | None = None
        self.running = False

    def start(self) -> None:
        self.running = True
        self._loop = task.LoopingCall(self.wake)
        self._loop.clock = self.clock
        self._loop.start(CHECK_INTERVAL, now=True)

    def stop(self) -> None:
        self.running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    @property
    def holding(self) -> float:
        """Seconds left of the back-off after a failure (0: not holding)."""
        return max(0.0, self._hold_until - self.clock.seconds())

    def wake(self) -> None:
        """Drain now if the target is ready and no drain runs (a drain running goes round again)."""
        if not self.running:
            return
        if self._draining:
            self._again = True
            return
        if self.holding or not self.target.ready():
            return
        self._draining = True
        self._drain().addBoth(self._drained)

    def _drained(self, result: Any) -> None:
        self._draining = False
        if isinstance(result, Exception) or hasattr(result, "getErrorMessage"):
            log.failure("Delivery to {target}: the forwarder failed", result, target=self.target.name)
        if self._again:
            self._again = False
            self.wake()

    @defer.inlineCallbacks
    def _drain(self) -> Any:
        for _ in range(1000000):
            if not (self.running and self.target.ready()):
                return
            batch = yield self.store.pending(self.target.name, max(1, self.target.window))
            if not batch:
                return
            ok = yield self._send(batch)
            if not ok:
                return
            self._again = False

    @defer.inlineCallbacks
    def _send(self, batch: list[StoredReading]) -> Any:
        """Send a batch in order; mark the acknowledged; False after a failure (the back-off starts)."""
        sent = [defer.maybeDeferred(self.target.deliver, reading) for reading in batch]
        results = yield defer.DeferredList(sent, consumeErrors=True)
        acked = []
        failure = None
        for reading, (success, value) in zip(batch, results):
            if not success:
                failure = failure or value
                break  # later ones are sent again after the back-off, in order
            acked.append(reading.id)
        status = self.target.status
        if acked:
            yield self.store.delivered(self.target.name, acked)
            status.delivered += len(acked)
            status.last_delivery = self.clock.seconds()
        if failure is None:
            self._delay = self.backoff_min
            return True
        status.failures += 1
        if not status.error:
            status.error = failure.getErrorMessage()
        wait = min(self._delay, self.backoff_max)
        wait = wait / 2 + wait / 2 * self._random()
        self._delay = min(self._delay * 2, self.backoff_max)
        self._hold_until = self.clock.seconds() + wait
        log.info("Delivery to {target} failed ({why}); trying again in {wait:.1f} s",
                 target=self.target.name, why=failure.getErrorMessage(), wait=wait)
        return False
