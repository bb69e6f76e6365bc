# -*- test-case-name: tests.test_mbus_transparent -*-
"""
The bus arbiter's transparent port: the line as the transparent tunnel sees
it (see "Transparent mode" in `cmegw.mbus.arbiter`).  Bytes pass straight
through to the line unless the arbiter holds the bus; then the client's writes
are held (bounded by `HOLD_LIMIT`) until the arbiter gives the bus back.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


#: Bytes a transparent client may write while the bus is held before it is paused.
HOLD_LIMIT = 4096


@implementer(IPushProducer)
class TransparentPort:
    """
    The line as the transparent tunnel sees it: bytes pass straight through
    unless the arbiter holds the bus for a transaction.
    """

    def __init__(self, arbiter: Any) -> None:
        # `arbiter` is the `cmegw.mbus.arbiter.BusArbiter` that builds this port (it owns the bus).
        self._arbiter = arbiter
        self._line = arbiter.line
        self.receiver: Callable[[bytes], None] | None = None
        #: Set by the arbiter while it owns the bus or waits for it: writes are held, not sent.
        self.holding = False
        #: Whether the client asked the line to stop reading (its TCP buffer is full).
        self.line_paused = False
        self._held = bytearray()
        self._client: IPushProducer | None = None
        self._client_pauses: set[str] = set()
        self._gate = _ClientGate(self)

    @property
    def config(self) -> Any:
        return self._line.config

    @property
    def stats(self) -> Any:
        return self._line.stats

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def client_connected(self) -> bool:
        """Whether a tunnel client has registered itself (it does from connect to disconnect)."""
        return self._client is not None

    def attach(self, receiver: Callable[[bytes], None] | None) -> None:
        self.receiver = receiver
        if not self._arbiter._owning:
            self._line.attach(receiver)

    def write(self, data: bytes) -> bool:
        if self.holding:
            return self._hold(data)
        return self._line.write(data)

    def _hold(self, data: bytes) -> bool:
        stats = self._arbiter.stats
        room = HOLD_LIMIT - len(self._held)
        if room < len(data):
            stats.held_dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self._held += data
        stats.held_bytes += len(data)
        if len(self._held) >= HOLD_LIMIT:
            self._pause_client("hold")
        self._arbiter._claimed()
        return True

    def release(self) -> int:
        """Write the held bytes to the line and let the client write again; how many were held."""
        held, self._held = bytes(self._held), bytearray()
        if held:
            self._line.write(held)
        self._resume_client("hold")
        return len(held)

    # -- the client's producer (paused by the line when its buffer is full, or by the hold)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._client = producer
        self._client_pauses.clear()
        self._line.registerProducer(self._gate, True)

    def unregisterProducer(self) -> None:
        self._client = None
        self._client_pauses.clear()
        self._line.unregisterProducer()
        if self._held:
            self._arbiter.stats.held_dropped += len(self._held)
            self._held = bytearray()

    def _pause_client(self, why: str) -> None:
        if not self._client_pauses and self._client is not None:
            self._client.pauseProducing()
        self._client_pauses.add(why)

    def _resume_client(self, why: str) -> None:
        if why not in self._client_pauses:
            return
        self._client_pauses.discard(why)
        if not self._client_pauses and self._client is not None:
            self._client.resumeProducing()

    # -- the line as the client's producer (the client pauses it when its TCP buffer is full)

    def pauseProducing(self) -> None:
        self.line_paused = True
        if not self._arbiter._owning:
            self._line.pauseProducing()

    def resumeProducing(self) -> None:
        self.line_paused = False
        self._line.resumeProducing()

    def stopProducing(self) -> None:
        self.resumeProducing()


@implementer(IPushProducer)
class _ClientGate:
    """What the line pauses when its write buffer is full: the port's client, through its pause reasons."""

    def __init__(self, port: TransparentPort) -> None:
        self._port = port

    def pauseProducing(self) -> None:
        self._port._pause_client("line")

    def resumeProducing(self) -> None:
        self._port._resume_client("line")

    def stopProducing(self) -> None:
        self._port._resume_client("line")
