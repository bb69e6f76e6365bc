# -*- test-case-name: tests.test_tunnel_connect -*-
"""
One peer on a line at a time: the accept-mode client or the connect-mode peer.
"""

from __future__ import annotations

from typing import Any, Callable

Receiver = Callable[[bytes], None]


class LineOwnership:
    """
    Who holds a tunnel's line: at most one peer at a time, the accept-mode
    client or the connect-mode peer.

    The service makes one per tunnel and hands it at construction to the
    accept-mode factory and to the connect mode.  The holder's receiver is
    attached to the line itself, so the byte path has no extra step; with
    nobody holding the line its bytes go to the idle receiver: the connect
    mode's on-data buffer while it waits for data, or else the accept-mode
    factory's own (which counts them as discarded).  With connect mode off
    nobody but the accept-mode client ever claims the line, so accept mode
    works exactly as without it.
    """

    def __init__(self, line: Any) -> None:
        self.line = line
        self.holder: Any = None
        self.holder_name = ""
        #: The accept-mode factory's receiver (`share`), used when no on-data receiver is set.
        self.fallback: Receiver | None = None
        #: The connect tunnel's on-data receiver, while it waits for data.
        self.idle: Receiver | None = None
        self._waiters: list[Callable[[], None]] = []

    @property
    def idle_receiver(self) -> Receiver | None:
        return self.idle or self.fallback

    def free_for(self, who: Any) -> bool:
        return self.holder is None or self.holder is who

    def share(self, receiver: Receiver) -> None:
        """
        An accept-mode factory takes its place on the line (when it is built):
        its receiver gets the line's bytes while nobody holds the line.
        """
        self.fallback = receiver
        self._attach_idle()

    def claim(self, who: Any, receiver: Receiver, name: str) -> bool:
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
        self._attach_idle()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter()

    def set_idle(self, receiver: Receiver | None) -> None:
        """The connect mode's on-data receiver (None: none, the accept-mode factory's again)."""
        self.idle = receiver
        self._attach_idle()

    def _attach_idle(self) -> None:
        receiver = self.idle_receiver
        if self.holder is None and receiver is not None:
            self.line.attach(receiver)

    def when_free(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, the next time the line is released."""
        if callback not in self._waiters:
            self._waiters.append(callback)
