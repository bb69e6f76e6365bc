"""
Test doubles shared by cmegw's tests and its users: a memory serial line and
a configuration store in a temporary folder.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from cmegw.config.model import LineConfig
from cmegw.stats import LINE_OPEN, LineStatistics


@implementer(IPushProducer)
class FakeLine:
    """A serial line in memory: what is written is kept in `written`; `feed` plays the device's bytes."""

    def __init__(self, config: LineConfig | None = None) -> None:
        self.config = config or LineConfig()
        self.stats = LineStatistics(state=LINE_OPEN, baud_rate=self.config.baud_rate)
        self.written = bytearray()
        self.receiver: Any = None
        self._producer: Any = None
        self.paused = False
        self.open = True

    def attach(self, receiver: Any) -> None:
        self.receiver = receiver

    def write(self, data: bytes) -> bool:
        if not self.open:
            return False
        self.stats.tx_bytes += len(data)
        self.written += data
        return True

    def feed(self, data: bytes) -> None:
        """Bytes arriving from the device."""
        self.stats.rx_bytes += len(data)
        if self.receiver is not None:
            self.receiver(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = False

    def apply(self, config: LineConfig) -> None:
        self.config = config
        self.stats.baud_rate = config.baud_rate
