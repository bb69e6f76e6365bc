# -*- test-case-name: tests.test_ops_trace -*-
"""
The console's ``trace`` commands: turn a line's traffic trace on and off,
show its last telegrams, and follow it live (until Ctrl-C or a time limit).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from cmegw.console.framework import COMMANDS, Arguments, Reply, Result, Session, line_numbers, number_argument
from cmegw.ops.trace import Chunk, LineTrace, chunk_heading, state_text, trace_time

#: Seconds a ``trace follow`` runs unless told otherwise, and at most.
FOLLOW_DEFAULT = 300
FOLLOW_LIMIT = 3600
#: Output of a follow is gathered and printed this often (seconds), at most `FLUSH_LINES` chunks and as
#: many telegrams at a time.
FLUSH_INTERVAL = 0.2
FLUSH_LINES = 100
SHOW_DEFAULT = 20


def _line_number(session: Session, args: Arguments, words: list[str]) -> int:
    """The line the first of `words` names, the first line when there is none."""
    lines = session.gateway.state.config.lines
    return number_argument(args, words[0], lines, "line") if words else min(lines)


def _state(session: Session, n: int) -> str:
    return f"line {n}: {state_text(session.gateway.state.traces.get(n))}"


def trace_status(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    return "\n".join(["Traffic trace (rx: from the line, tx: to the line)",
                      *[f"  {_state(session, n)}" for n in sorted(session.gateway.state.config.lines)]])


TRACE = COMMANDS.group("trace", "the traffic trace of a line: on, off, show, follow live", "[on|off|clear|"
                       "show|follow] [LINE]", run=trace_status,
                       details="Off by default: while off it costs the line nothing. The web page /trace/N "
                               "has the same trace with downloads as text and JSON.")


@TRACE.command("on", "start recording what goes over the line", "[LINE]", complete=line_numbers)
def trace_on(session: Session, args: Arguments) -> Result:
    n = _line_number(session, args, args.expect(0, 1, "[LINE]"))
    session.gateway.set_trace(n, True)
    return f"Trace of line {n} on. 'trace follow {n}' shows it live, 'trace off {n}' stops it."


@TRACE.command("off", "stop recording (what was recorded stays)", "[LINE]", complete=line_numbers)
def trace_off(session: Session, args: Arguments) -> Result:
    n = _line_number(session, args, args.expect(0, 1, "[LINE]"))
    session.gateway.set_trace(n, False)
    return f"Trace of line {n} off; {_state(session, n)}."


@TRACE.command("clear", "forget what was recorded", "[LINE]", complete=line_numbers)
def trace_clear(session: Session, args: Arguments) -> Result:
    n = _line_number(session, args, args.expect(0, 1, "[LINE]"))
    trace = session.gateway.state.traces.get(n)
    if trace is not None:
        trace.clear()
    return f"Trace of line {n} cleared."


@TRACE.command("show", "the last telegrams recorded", "[LINE] [COUNT]", complete=line_numbers)
def trace_show(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 2, "[LINE] [COUNT]")
    n = _line_number(session, args, words)
    count = SHOW_DEFAULT
    if len(words) > 1:
        if not words[1].isdigit() or int(words[1]) < 1:
            raise args.error(words[1], "is not a count", "use a whole number of telegrams, 1 or more")
        count = int(words[1])
    trace = session.gateway.state.traces.get(n)
    labels = trace.frames()[-count:] if trace is not None else []
    if not labels:
        return f"No telegrams recorded on line {n}. ({_state(session, n)})"
    return "\n".join(f"{trace_time(f.time)} {f.direction} {f.peer or '-'}: {f.summary()}" for f in labels)


class Follower:
    """Prints what a trace records, gathered every `FLUSH_INTERVAL` seconds, until cancelled or `seconds` pass."""

    def __init__(self, session: Session, trace: LineTrace, seconds: float, turned_on: bool) -> None:
        self.session = session
        self.trace = trace
        self.clock = session.gateway.reactor
        self.turned_on = turned_on
        self.chunks: list[Chunk] = []
        self.skipped = 0
        trace.frames()  # label what is there: only what comes next is printed
        self.frames_after = trace.last_frame
        self.done: defer.Deferred = defer.Deferred(self._cancelled)
        self._flush: Any = None
        self._end = self.clock.callLater(seconds, self._finish, f"stopped after {seconds:g} s")
        trace.subscribe(self._chunk)

    def _chunk(self, chunk: Chunk) -> None:
        if len(self.chunks) < FLUSH_LINES:
            self.chunks.append(chunk)
        else:
            self.skipped += 1
        if self._flush is None:
            self._flush = self.clock.callLater(FLUSH_INTERVAL, self._print)

    def _print(self) -> None:
        self._flush = None
        chunks, self.chunks = self.chunks, []
        lines = [f"{trace_time(c.time)} {chunk_heading(c)}: {c.data[:64].hex(' ')}"
                 + (" ..." if len(c.data) > 64 else "") for c in chunks]
        if self.skipped:
            lines.append(f"... {self.skipped} more chunks not shown (too many to print)")
            self.skipped = 0
        labels = self.trace.frames(self.frames_after)
        for label in labels[:FLUSH_LINES]:
            lines.append(f"{trace_time(label.time)} {label.direction} # {label.summary()}")
        if len(labels) > FLUSH_LINES:
            lines.append(f"... {len(labels) - FLUSH_LINES} more telegrams not shown (too many to print)")
        self.frames_after = self.trace.last_frame
        if lines:
            self.session.emit("\n".join(lines))

    def _stop(self) -> None:
        self.trace.unsubscribe(self._chunk)
        for call in (self._flush, self._end):
            if call is not None and call.active():
                call.cancel()
        self._flush = self._end = None
        if self.turned_on:
            self.session.gateway.set_trace(self.trace.number, False)

    def _finish(self, why: str) -> None:
        self._end = None
        self._print()
        self._stop()
        self.done.callback(Reply(f"trace follow: {why}."))

    def _cancelled(self, _: defer.Deferred) -> None:
        self._stop()


@TRACE.command("follow", "show what goes over the line as it happens (Ctrl-C stops)", "[LINE] [SECONDS]",
               complete=line_numbers)
def trace_follow(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 2, "[LINE] [SECONDS]")
    n = _line_number(session, args, words)
    seconds = FOLLOW_DEFAULT
    if len(words) > 1:
        if not words[1].isdigit() or not 1 <= int(words[1]) <= FOLLOW_LIMIT:
            raise args.error(words[1], "is not a time", f"use 1 to {FOLLOW_LIMIT} seconds")
        seconds = int(words[1])
    trace = session.gateway.state.traces.get(n)
    turned_on = trace is None or not trace.enabled
    if turned_on:
        trace = session.gateway.set_trace(n, True)
    assert trace is not None
    session.emit(f"Following line {n} for up to {seconds} s; Ctrl-C stops."
                 + (" The trace is turned on for this and off again after." if turned_on else ""))
    return Follower(session, trace, seconds, turned_on).done
