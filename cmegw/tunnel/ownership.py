# -*- test-case-name: tests.test_tunnel_connect -*-
"""
One peer on a line at a time: the accept-mode client or the connect-mode peer.
"""

from __future__ import annotations

from typing import Any, Callable


class LineOwnership:
    """
    Who holds a line whose tunnel both listens (accept mode) and dials
    (connect mode): at most one peer at a time.

    The holder's receiver is attached to the line itself, so the byte path
    has no extra step; with nobody holding the line its bytes go to the idle
    receiver: the connect tunnel's on-data buffer, or else the accept
    factory's (which counts them as discarded).
    """

    def __init__(self, line: Any) -> None:
        self.line = line
        self.holder: Any = None
        self.holder_name = ""
        #: The accept-mode factory's receiver (used when no on-data receiver is set).
        self.fallback: Callable[[bytes], None] | None = None
        #: The connect tunnel's on-data receiver, while it waits for data.
        self.idle: Callable[[bytes], None] | None = None
        self._waiters: list[Callable[[], None]] = []

    @property
    def idle_receiver(self) -> Callable[[bytes], None] | None:
        return self.idle or self.fallback

    def free_for(self, who: Any) -> bool:
        return self.holder is None or self.holder is who

    def claim(self, who: Any, receiver: Callable[[bytes], None], name: str) -> bool:
        """Hold the line for `who` (its bytes go to `receiver`); False when another peer holds it."""
        if not self.free_for(who):
            return False
        self.holder, self.holder_name = who, name
        self.line.attach(receiver)
        return True

    def release(self, who: Any) -> None:
        if self.holder is not who:
            return
        self.holder, self.holder_name = None, ""
        self.line.attach(self.idle_receiver)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter()

    def link(self, factory: Any) -> None:
        """
        Share the line with an accept-mode `factory` (transparent mode with
        connect mode on): its receiver is the fallback, its client (if any)
        the holder, and it asks this ownership before it admits a client.
        """
        self.fallback = factory.line_data
        if factory.client is not None and self.holder is None:
            self.holder, self.holder_name = factory, f"accept-mode client {factory.client.peer}"
        factory.ownership = self

    def unlink(self, factory: Any) -> None:
        """
        Leave the accept-mode `factory` (None: none was linked) alone again.
        Its receiver stays the fallback, so a connection still closing gives
        the line back to it.
        """
        self.idle = None
        if factory is None:
            return
        if factory.ownership is self:
            factory.ownership = None
        if self.holder is factory:
            self.holder, self.holder_name = None, ""
        if self.holder is None:
            self.line.attach(factory.line_data)

    def set_idle(self, receiver: Callable[[bytes], None] | None) -> None:
        self.idle = receiver
        if self.holder is None:
            self.line.attach(self.idle_receiver)

    def when_free(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, the next time the line is released."""
        if callback not in self._waiters:
            self._waiters.append(callback)
