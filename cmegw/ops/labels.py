# -*- test-case-name: tests.test_ops_trace -*-
"""
The telegrams of a trace: each direction's recorded bytes cut into M-Bus
telegrams (or runs of bytes that are none) and labelled.

A `FrameLabel` keeps a telegram's bytes and its header (frame type, C field,
address, CI, length, checksum good or bad); its records are decoded by
`cmegw.mbus.records` each time they are read (`FrameLabel.decoded`), so a
full trace of many lines stays small and labelling costs no record decode.
`FrameLabeller` makes the labels from the chunks of `cmegw.ops.trace`, in
order, per direction, keeping the last `MAX_FRAMES`.
"""

from __future__ import annotations

import collections
import datetime
from typing import Any, Callable, NamedTuple

import attrs

from cmegw.mbus import frames
from cmegw.mbus import records as mbus_records

RX = "rx"
TX = "tx"
DIRECTIONS = {RX: "line to network", TX: "network to line"}

#: Labelled telegrams kept.
MAX_FRAMES = 4096
#: Silence (seconds) after which an unfinished telegram is reported as incomplete.
FRAME_GAP = 0.5
#: Bytes of a garbage or incomplete segment kept in its label.
SEGMENT_SAMPLE = 64


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
