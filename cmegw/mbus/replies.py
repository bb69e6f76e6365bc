# -*- test-case-name: tests.test_mbus_arbiter -*-
"""
How one bus transaction ended: the `Reply` the arbiter hands its caller, and
`classify`, which reads the bytes heard in the reply window (pure, no Twisted).
"""

from __future__ import annotations

import attrs

from cmegw.mbus import frames
from cmegw.mbus.frames import (
    ChecksumError,
    FrameError,
    StopByteError,
    TruncatedFrame,
)

REPLY_OK = "ok"
REPLY_SILENT = "silent"
REPLY_GARBLED = "garbled"
REPLY_INVALID = "invalid"
REPLY_TRUNCATED = "truncated"
REPLY_NOT_EXPECTED = "not expected"


@attrs.frozen
class Reply:
    """
    How one transaction ended.

    @ivar data: every byte heard in the reply window, as it came.
    @ivar frame: the parsed telegram when `outcome` is `REPLY_OK`.
    @ivar error: why the bytes are not one clean telegram (empty when they are).
    @ivar duration: seconds from the request's write to the end of the transaction.
    @ivar floor: the shortest the same exchange can take on the wire (`cmegw.mbus.timing.exchange_floor`).
    """

    request: bytes
    outcome: str
    data: bytes = b""
    frame: frames.Frame | None = None
    error: str = ""
    duration: float = 0.0
    floor: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == REPLY_OK

    @property
    def silent(self) -> bool:
        return self.outcome == REPLY_SILENT


def reply_shape(buf: bytes) -> str:
    """Whether `buf` is an incomplete, a complete or a broken telegram (extra bytes count as broken)."""
    try:
        needed = frames.frame_length(buf[:4])
    except FrameError:
        return REPLY_GARBLED
    if needed is None or len(buf) < needed:
        return REPLY_TRUNCATED
    return REPLY_OK if len(buf) == needed else REPLY_GARBLED


def classify(request: bytes, data: bytes, expect_reply: bool = True, duration: float = 0.0) -> Reply:
    """The `Reply` for the bytes heard after `request`."""
    if not expect_reply:
        return Reply(request, REPLY_NOT_EXPECTED, data, duration=duration)
    if not data:
        return Reply(request, REPLY_SILENT, duration=duration)
    try:
        frame = frames.parse_frame(data)
    except TruncatedFrame as e:
        return Reply(request, REPLY_TRUNCATED, data, error=str(e), duration=duration)
    except (ChecksumError, StopByteError) as e:
        return Reply(request, REPLY_INVALID, data, error=str(e), duration=duration)
    except FrameError as e:
        return Reply(request, REPLY_GARBLED, data, error=str(e), duration=duration)
    return Reply(request, REPLY_OK, data, frame, duration=duration)
