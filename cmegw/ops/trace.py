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
`as_text` (a timestamped hexdump like ser2net's trace files) and `as_json`.
"""

from __future__ import annotations

import collections
import datetime
import json
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import attrs
from twisted.logger import Logger

from cmegw.mbus import frames
from cmegw.mbus import records as mbus_records

log = Logger(namespace="cmegw.trace")

RX = "rx"
TX = "tx"
DIRECTIONS = {RX: "line to network", TX: "network to line"}

#: The ring buffer's bounds: whichever is reached first drops the oldest chunks.
MAX_CHUNKS = 10_000
MAX_BYTES = 1 << 20
#: Labelled telegrams kept.
MAX_FRAMES = 4096
#: Silence (seconds) after which an unfinished telegram is reported as incomplete.
FRAME_GAP = 0.5
#: Bytes of a garbage or incomplete segment kept in its label.
SEGMENT_SAMPLE = 64
HEXDUMP_WIDTH = 16

Listener = Callable[["Chunk"], None]


class Chunk(NamedTuple):
    """One read from or write to the line."""

    seq: int
    time: float
    direction: str
    peer: str
    data: bytes
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "at": iso_time(self.time), "direction": self.direction,
                "peer": self.peer, "length": len(self.data), "hex": self.data.hex(" "), "note": self.note}


@attrs.frozen
class Decoded:
    """What a label's telegram says beyond its header: its records, decoded when asked for."""

    #: The records as `describe_records` gives them; None when the telegram has none or they did not decode.
    records: tuple[dict[str, Any], ...] | None = None
    address: str = ""
    #: Bytes of manufacturer-specific data after the records (DIF 0F or 1F), None when there is none.
    manufacturer_data: int | None = None
    #: The meter has more telegrams (DIF 1F): the master asks again.
    more_follows: bool = False
    #: Why the records did not decode ("" when they did, or when there are none to decode).
    problem: str = ""


NOTHING_DECODED = Decoded()


@attrs.frozen
class FrameLabel:
    """
    One telegram (or a run of bytes that is none) found in a direction's stream.

    `kind` is ``ack``, ``short``, ``control``, ``long``, ``garbage`` (bytes no
    telegram starts with) or ``incomplete`` (a telegram cut short by silence
    or by a gap in the trace).  `number` counts the labels of a trace; `seq`
    is the chunk the segment ends in.

    A label keeps the telegram's bytes and its header, not its records (2 to
    4 kB each as dicts): `decoded` reads them from `raw` each time it is
    called, so a full trace stays small and labelling costs no record decode.
    `records`, `address`, `manufacturer_data`, `more_follows` and `problem`
    call it; code that reads several of them calls `decoded` once.
    """

    number: int
    seq: int
    first_seq: int
    time: float
    direction: str
    peer: str
    kind: str
    raw: bytes
    length: int
    c: int | None = None
    a: int | None = None
    ci: int | None = None
    l_field: int | None = None
    checksum_ok: bool | None = None
    name: str = ""
    #: What is wrong with the segment itself (its checksum, an incomplete or garbage run).
    _fault: str = ""

    @property
    def is_frame(self) -> bool:
        return self.kind in ("ack", "short", "control", "long")

    @property
    def has_records(self) -> bool:
        """An RSP_UD long frame whose checksum is right: its records are decoded when read."""
        return bool(self.checksum_ok and self.ci is not None and frames.function_of(self.c or 0) == frames.RSP_UD)

    def decoded(self) -> Decoded:
        """The records and what else the telegram says, decoded from `raw` now."""
        if not self.has_records:
            return NOTHING_DECODED
        try:
            telegram = mbus_records.decode_frame(frames.parse_frame(self.raw))
        except mbus_records.DecodeError as e:
            return Decoded(problem=f"records not decoded: {e}")
        return Decoded(records=describe_records(telegram),
                       address="" if telegram.address is None else str(telegram.address),
                       manufacturer_data=None if telegram.manufacturer_data is None else len(telegram.manufacturer_data),
                       more_follows=telegram.more_follows)

    @property
    def records(self) -> tuple[dict[str, Any], ...] | None:
        return self.decoded().records

    @property
    def address(self) -> str:
        return self.decoded().address

    @property
    def manufacturer_data(self) -> int | None:
        return self.decoded().manufacturer_data

    @property
    def more_follows(self) -> bool:
        return self.decoded().more_follows

    @property
    def problem(self) -> str:
        return self._fault or self.decoded().problem

    def summary(self, decoded: Decoded | None = None) -> str:
        """One line on the segment (`decoded`: what `decoded` gave, when the caller has it already)."""
        if self.kind == "ack":
            return "ACK (E5)"
        if not self.is_frame:
            return f"{self.kind}, {self.length} bytes" + (f": {self._fault}" if self._fault else "")
        d = self.decoded() if decoded is None else decoded
        text = f"{self.kind} {self.name} C={self.c:02X} A={self.a:02X}"
        if self.ci is not None:
            text += f" CI={self.ci:02X} L={self.l_field}"
        text += f", {self.length} bytes, checksum {'ok' if self.checksum_ok else 'BAD'}"
        if d.address:
            text += f", meter {d.address}"
        if d.records is not None:
            text += f", {len(d.records)} records"
        if d.manufacturer_data is not None:
            text += f", {d.manufacturer_data} bytes manufacturer data"
        if d.more_follows:
            text += ", more follows"
        problem = self._fault or d.problem
        if problem:
            text += f"; {problem}"
        return text

    def as_dict(self) -> dict[str, Any]:
        d = self.decoded()
        return {"number": self.number, "seq": self.seq, "first_seq": self.first_seq, "time": self.time, "at": iso_time(self.time),
                "direction": self.direction, "peer": self.peer, "kind": self.kind, "name": self.name,
                "c": self.c, "a": self.a, "ci": self.ci, "l_field": self.l_field, "length": self.length,
                "checksum_ok": self.checksum_ok, "address": d.address, "problem": self._fault or d.problem,
                "records": list(d.records) if d.records is not None else None,
                "manufacturer_data": d.manufacturer_data, "more_follows": d.more_follows,
                "hex": self.raw.hex(" "), "summary": self.summary(d)}


def iso_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds")


def trace_time(t: float) -> str:
    """ser2net's timestamp form, local time, with microseconds: ``2024/05/12 10:40:35.123456``."""
    seconds, micro = divmod(round(t * 1_000_000), 1_000_000)
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds)) + f".{micro:06d}"


def describe_records(telegram: mbus_records.Telegram) -> tuple[dict[str, Any], ...]:
    out = []
    for record in telegram.records:
        value = record.value
        if isinstance(value, float):
            value = round(value, max(0, -record.exponent) + 3)  # 27.31, not 27.310000000000002
        elif not isinstance(value, (int, str)) or isinstance(value, bool):
            value = None if value is None else str(value)
        out.append({"function": record.function_name, "storage": record.storage, "tariff": record.tariff,
                    "subunit": record.subunit, "quantity": record.quantity, "value": value,
                    "unit": record.plain_text_unit or record.unit})
    return tuple(out)


def label_telegram(raw: bytes, **where: Any) -> FrameLabel:
    """Label one telegram cut out by `frames.split_stream` (its length and stop byte are right): its header only."""
    size = len(raw)
    if size == 1:
        return FrameLabel(kind="ack", raw=raw, length=1, name="ACK", checksum_ok=True, **where)
    if raw[0] == frames.START_SHORT:
        c, a, ci, l_field, body = raw[1], raw[2], None, None, raw[1:3]
        kind = "short"
    else:
        c, a, ci, l_field, body = raw[4], raw[5], raw[6], raw[1], raw[4:-2]
        kind = "control" if l_field == 3 else "long"
    checksum_ok = frames.checksum(body) == raw[-2]
    fault = "" if checksum_ok else f"checksum 0x{raw[-2]:02X}, computed 0x{frames.checksum(body):02X}"
    return FrameLabel(kind=kind, raw=raw, length=size, c=c, a=a, ci=ci, l_field=l_field, checksum_ok=checksum_ok,
                      name=frames.function_name(c), fault=fault, **where)


@attrs.define
class _Stream:
    """The unfinished end of one direction's byte stream."""

    buf: bytes = b""
    first_seq: int = 0
    time: float = 0.0
    last_time: float = 0.0
    peer: str = ""


class FrameLabeller:
    """Labels the telegrams of the chunks it is fed, in order, per direction; keeps the last `max_frames`."""

    def __init__(self, max_frames: int = MAX_FRAMES) -> None:
        self.labels: collections.deque[FrameLabel] = collections.deque(maxlen=max_frames)
        self._streams = {RX: _Stream(), TX: _Stream()}
        self.next_seq = 1
        #: Labels made so far (the last one's number).
        self.count = 0

    def _add(self, make: Callable[..., FrameLabel], *args: Any, **fields: Any) -> None:
        self.count += 1
        self.labels.append(make(*args, number=self.count, **fields))

    def feed(self, chunk: Chunk) -> None:
        if chunk.seq != self.next_seq:
            self.flush(f"{chunk.seq - self.next_seq} chunks left the trace before they were read")
        self.next_seq = chunk.seq + 1
        stream = self._streams[chunk.direction]
        if stream.buf and chunk.time - stream.last_time > FRAME_GAP:
            self._flush_stream(chunk.direction, f"no more bytes for {chunk.time - stream.last_time:.3f} s")
        if not stream.buf:
            stream.first_seq, stream.time, stream.peer = chunk.seq, chunk.time, chunk.peer
        stream.buf += chunk.data
        stream.last_time = chunk.time
        segments, waiting = frames.split_stream(stream.buf)
        first_seq, first_time = stream.first_seq, stream.time
        for kind, raw, problem in segments:
            where = dict(seq=chunk.seq, first_seq=first_seq, time=first_time, direction=chunk.direction,
                         peer=stream.peer or chunk.peer)
            if kind == frames.TELEGRAM:
                self._add(label_telegram, raw, **where)
            else:
                self._add(FrameLabel, kind="garbage", raw=raw[:SEGMENT_SAMPLE], length=len(raw), fault=problem,
                          **where)
            first_seq, first_time = chunk.seq, chunk.time
        if segments:
            stream.first_seq, stream.time, stream.peer = chunk.seq, chunk.time, chunk.peer
        stream.buf = stream.buf[len(stream.buf) - waiting:] if waiting else b""

    def flush_stale(self, now: float) -> None:
        """Report telegrams that stopped coming more than `FRAME_GAP` ago as incomplete."""
        for direction, stream in self._streams.items():
            if stream.buf and now - stream.last_time > FRAME_GAP:
                self._flush_stream(direction, f"no more bytes for {now - stream.last_time:.3f} s")

    def flush(self, why: str) -> None:
        for direction in self._streams:
            self._flush_stream(direction, why)

    def _flush_stream(self, direction: str, why: str) -> None:
        stream = self._streams[direction]
        if not stream.buf:
            return
        buf = stream.buf
        try:
            expected = frames.frame_length(buf[:4])
        except frames.FrameError:
            expected = None
        what = f"{len(buf)} of {expected} bytes; {why}" if expected else why
        self._add(FrameLabel, seq=self.next_seq - 1, first_seq=stream.first_seq, time=stream.time,
                  direction=direction, peer=stream.peer, kind="incomplete", raw=buf[:SEGMENT_SAMPLE],
                  length=len(buf), fault=what)
        self._streams[direction] = _Stream()


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

    def as_json(self, since: int = 0, frames_after: int = 0) -> dict[str, Any]:
        """Chunks recorded after `since` and labels numbered after `frames_after` (0, 0: everything held)."""
        labels = self.frames(frames_after)
        return dict(self.status(), since=since, last_frame=self.last_frame,
                    chunks_list=[c.as_dict() for c in self.snapshot(since)], frames=[f.as_dict() for f in labels])

    def json_pieces(self, since: int = 0, frames_after: int = 0) -> Iterator[str]:
        """`as_json` as JSON text, a piece a chunk or a label, each made as it is taken."""
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
