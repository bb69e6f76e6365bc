# -*- test-case-name: tests.test_ops_trace -*-
"""
The traffic trace of one serial line: what went over the bus, when, and for whom.

A `LineTrace` is off by default and then costs the byte path nothing: it is
not in it.  Turned on (``gateway.set_trace(n, True)``), it puts two thin
wrappers on the line object (its ``_received`` and ``write``), which record
each chunk (time, direction, the peer it came from or went to, the bytes)
in a ring buffer bounded in chunks and in bytes; turned off, it takes them
away again.  ``rx`` is what the line read (from the meters), ``tx`` what was
written to it (from the network).

M-Bus telegrams are found in each direction's byte stream and labelled
(frame type, C field, address, CI, length, checksum good or bad) when
someone reads the trace, never while the bytes pass; a label keeps the
telegram, and its records are decoded by `cmegw.mbus.records` each time
they are read (the live view asks only for what is new).

Readers: `snapshot` and `frames` (with ``since``: what is new after a
sequence number), `subscribe` for live followers (the console's ``trace``),
`as_text` (a timestamped hexdump like ser2net's trace files) and `json_pieces`.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any, Callable, Iterable, Iterator

from twisted.logger import Logger

from cmegw.ops.labels import FRAME_GAP, MAX_FRAMES, RX, TX, Chunk, FrameLabel, FrameLabeller, iso_time

#: Names of cmegw.ops.labels a trace's readers take from here.
__all__ = ["FRAME_GAP", "RX", "TX", "Chunk", "FrameLabel", "LineTrace", "chunk_heading", "format_text", "iso_time",
           "state_text", "trace_time"]

log = Logger(namespace="cmegw.trace")

#: The ring buffer's bounds: whichever is reached first drops the oldest chunks.
MAX_CHUNKS = 10_000
MAX_BYTES = 1 << 20
HEXDUMP_WIDTH = 16

Listener = Callable[["Chunk"], None]


def trace_time(t: float) -> str:
    """ser2net's timestamp form, local time, with microseconds: ``2024/05/12 10:40:35.123456``."""
    seconds, micro = divmod(round(t * 1_000_000), 1_000_000)
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds)) + f".{micro:06d}"

# -- the trace of a line -------------------------------------------------------------------


class LineTrace:
    """The traffic trace of line `number`: a bounded ring of chunks, labelled on reading."""

    def __init__(self, number: int, clock: Any, peer: Callable[[], str] = lambda: "",
                 max_chunks: int = MAX_CHUNKS, max_bytes: int = MAX_BYTES, max_frames: int = MAX_FRAMES) -> None:
        self.number = number
        self.clock = clock
        self.peer = peer
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self.enabled = False
        #: Chunks dropped from the start of the ring to keep it within its bounds.
        self.dropped = 0
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._bytes = 0
        self._seq = 0
        self._listeners: list[Listener] = []
        self._labeller = FrameLabeller(max_frames)
        self._line: Any = None

    # -- on the line ---------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self._line is not None

    def attach(self, line: Any) -> None:
        """Record what `line` reads and writes, by wrapping its ``_received`` and ``write``."""
        if self._line is line:
            return
        self.detach()
        received, write, record = line._received, line.write, self.record

        def traced_received(data: bytes) -> None:
            record(RX, data)
            received(data)

        def traced_write(data: bytes) -> bool:
            written = write(data)
            record(TX, data, "" if written else "dropped: the line is not open")
            return written

        line._received = traced_received
        line.write = traced_write
        self._line = line

    def detach(self) -> None:
        """Take the wrappers away: the line's own methods are its byte path again."""
        line, self._line = self._line, None
        if line is not None:
            vars(line).pop("_received", None)
            vars(line).pop("write", None)

    # -- recording -----------------------------------------------------------------------

    def record(self, direction: str, data: bytes, note: str = "") -> Chunk:
        self._seq += 1
        if len(data) > self.max_bytes:
            note = f"{len(data)} bytes, the first {self.max_bytes} kept" + (f"; {note}" if note else "")
            data = data[:self.max_bytes]
        chunk = Chunk(self._seq, self.clock.seconds(), direction, self.peer(), bytes(data), note)
        chunks = self._chunks
        chunks.append(chunk)
        self._bytes += len(data)
        while self._bytes > self.max_bytes or len(chunks) > self.max_chunks:
            self._bytes -= len(chunks.popleft().data)
            self.dropped += 1
        if self._listeners:
            for listener in tuple(self._listeners):
                try:
                    listener(chunk)
                except Exception:
                    log.failure("A trace listener failed and is removed")
                    self.unsubscribe(listener)
        return chunk

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(chunk)` for every chunk recorded from now on."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def clear(self) -> None:
        """Empty the buffer (sequence and label numbers go on, so followers see nothing twice)."""
        self._chunks.clear()
        self._bytes = 0
        old = self._labeller
        self._labeller = FrameLabeller(old.labels.maxlen or MAX_FRAMES)
        self._labeller.next_seq = self._seq + 1
        self._labeller.count = old.count

    # -- reading -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def size(self) -> tuple[int, int]:
        """Chunks and bytes held."""
        return len(self._chunks), self._bytes

    def snapshot(self, since: int = 0) -> list[Chunk]:
        """The chunks held, oldest first; with `since`, only those recorded after that sequence number."""
        if since <= 0:
            return list(self._chunks)
        return [c for c in self._chunks if c.seq > since]

    def frames(self, after: int = 0) -> list[FrameLabel]:
        """The telegrams labelled so far, oldest first; with `after`, those numbered after it."""
        labeller = self._labeller
        for chunk in self._chunks:
            if chunk.seq >= labeller.next_seq:
                labeller.feed(chunk)
        labeller.flush_stale(self.clock.seconds())
        return [f for f in labeller.labels if f.number > after]

    @property
    def last_frame(self) -> int:
        """The number of the last label made (call `frames` first to label what is new)."""
        return self._labeller.count

    def status(self) -> dict[str, Any]:
        chunks, size = self.size
        return {"line": self.number, "enabled": self.enabled, "chunks": chunks, "bytes": size,
                "max_chunks": self.max_chunks, "max_bytes": self.max_bytes, "dropped": self.dropped,
                "last_seq": self._seq}

    def json_pieces(self, since: int = 0, frames_after: int = 0) -> Iterator[str]:
        """
        The trace as JSON text: its status, the chunks recorded after `since`
        and the labels numbered after `frames_after` (0, 0: everything held),
        a piece a chunk or a label, each made as it is taken.
        """
        labels = self.frames(frames_after)
        chunks = self.snapshot(since)
        head = json.dumps(dict(self.status(), since=since, last_frame=self.last_frame))
        yield head[:-1] + ', "chunks_list": ['
        for i, chunk in enumerate(chunks):
            yield ", " * bool(i) + json.dumps(chunk.as_dict())
        yield '], "frames": ['
        for i, label in enumerate(labels):
            yield ", " * bool(i) + json.dumps(label.as_dict())
        yield "]}"

    def text_pieces(self) -> Iterator[str]:
        """`as_text` a piece a chunk or a label, each made as it is taken."""
        return format_text(self.number, self.snapshot(), self.frames(), self.dropped)

    def as_text(self) -> str:
        return "".join(self.text_pieces())


def state_text(line_trace: LineTrace | None) -> str:
    """``on, 12 chunks, 480 bytes held`` (what the pages and the console say of a line's trace)."""
    if line_trace is None:
        return "off, nothing recorded"
    s = line_trace.status()
    text = f"{'on' if s['enabled'] else 'off'}, {s['chunks']} chunks, {s['bytes']} bytes held"
    return text + (f", {s['dropped']} older chunks dropped" if s["dropped"] else "")


def hexdump_lines(data: bytes, prefix: str) -> Iterable[str]:
    for offset in range(0, len(data), HEXDUMP_WIDTH):
        row = data[offset:offset + HEXDUMP_WIDTH]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        yield f"{prefix} {offset:04x}  {row.hex(' '):<{HEXDUMP_WIDTH * 3 - 1}}  |{text}|\n"


def chunk_heading(chunk: Chunk) -> str:
    way = "to" if chunk.direction == RX else "from"
    peer = f" {way} {chunk.peer}" if chunk.peer else (" (no client)" if chunk.direction == RX else "")
    note = f" [{chunk.note}]" if chunk.note else ""
    return f"{chunk.direction}{peer}, {len(chunk.data)} bytes{note}"


def format_chunk(chunk: Chunk) -> list[str]:
    stamp = trace_time(chunk.time)
    return [f"{stamp} {chunk_heading(chunk)}\n", *hexdump_lines(chunk.data, f"{stamp} {chunk.direction}")]


def format_frame(label: FrameLabel) -> list[str]:
    decoded = label.decoded()
    lines = [f"{trace_time(label.time)} {label.direction} # {label.summary(decoded)}\n"]
    for record in decoded.records or ():
        where = "".join(f" {k} {record[k]}" for k in ("storage", "tariff", "subunit") if record[k])
        value = "invalid" if record["value"] is None else record["value"]
        lines.append(f"{trace_time(label.time)} {label.direction} #   {record['quantity']} = {value} "
                     f"{record['unit']} ({record['function']}{where})\n")
    return lines


def format_text(number: int, chunks: list[Chunk], labels: list[FrameLabel], dropped: int = 0) -> Iterator[str]:
    """
    The hexdump: each chunk with its timestamp, each telegram's label after
    the chunk it ends in; a piece a chunk or a label, made as it is taken
    (a full trace is megabytes: `cmegw.web` writes it a batch at a time).
    """
    yield f"# cmegw trace of line {number}: rx = line to network, tx = network to line\n"
    if dropped:
        yield f"# {dropped} older chunks were dropped to keep the trace within its bounds\n"
    by_seq: dict[int, list[FrameLabel]] = collections.defaultdict(list)
    for label in labels:
        by_seq[label.seq].append(label)
    for chunk in chunks:
        yield "".join(format_chunk(chunk))
        for label in by_seq.pop(chunk.seq, ()):
            yield "".join(format_frame(label))
    for rest in by_seq.values():
        for label in rest:
            yield "".join(format_frame(label))
