# -*- test-case-name: tests.test_web_stream -*-
"""
Long response bodies written a batch at a time, at the client's pace.

A full traffic trace is megabytes of text made from thousands of chunks and
telegrams: made in one go it would hold the reactor (every line's bytes, the
M-Bus timers) for most of a second.  `stream_body` makes it with a
`twisted.internet.task.Cooperator`: a batch of pieces per reactor turn,
the reactor's other work between batches, and the request's producer pausing the
making while the client reads slowly (the body never waits in memory whole).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest
from zope.interface import implementer

#: Bytes written to the request at each step of the cooperator.
BATCH = 64 * 1024


@implementer(IPushProducer)
class _TaskProducer:
    """The request's producer: the transport pauses and resumes the cooperative task that writes the body."""

    def __init__(self, work: task.CooperativeTask) -> None:
        self.work = work

    def pauseProducing(self) -> None:
        self.work.pause()

    def resumeProducing(self) -> None:
        self.work.resume()

    def stopProducing(self) -> None:
        _stop(self.work)


def _one_batch() -> bool:
    """The cooperator's turn ends after each batch: the reactor's other work comes between any two."""
    return True


def _stop(work: task.CooperativeTask) -> None:
    try:
        work.stop()
    except task.TaskFinished:  # done, failed or stopped already
        pass


def _batches(request: IRequest, pieces: Iterable[str], batch: int) -> Iterator[None]:
    """Write the pieces' UTF-8 in batches of about `batch` bytes, one batch a step."""
    waiting: list[bytes] = []
    size = 0
    for piece in pieces:
        data = piece.encode("utf-8")
        waiting.append(data)
        size += len(data)
        if size >= batch:
            request.write(b"".join(waiting))
            waiting, size = [], 0
            yield None
    if waiting:
        request.write(b"".join(waiting))


def stream_body(request: IRequest, pieces: Iterable[str], reactor: Any, batch: int = BATCH) -> defer.Deferred[bytes]:
    """
    Write `pieces` (text, made as they are taken) to `request`; fires with
    ``b""`` once all are written, for Klein to finish the response.  A client
    that goes away stops the making (Klein cancels the Deferred; the
    transport stops its producer).
    """
    cooperator = task.Cooperator(terminationPredicateFactory=lambda: _one_batch,
                                 scheduler=lambda step: reactor.callLater(0, step))
    work = cooperator.cooperate(_batches(request, pieces, batch))
    request.registerProducer(_TaskProducer(work), True)
    done: defer.Deferred[bytes] = defer.Deferred(lambda _: _stop(work))

    def finished(result: Any) -> None:
        request.unregisterProducer()
        cooperator.stop()
        done.callback(b"")

    def failed(reason: Any) -> None:
        cooperator.stop()
        if reason.check(task.TaskStopped):
            return  # the client went away: Klein cancels `done` (and leaves the request alone)
        request.unregisterProducer()
        done.errback(reason)

    work.whenDone().addCallbacks(finished, failed)
    return done
