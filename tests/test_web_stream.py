"""cmegw.web.stream: long bodies written a batch a step, the reactor turning between steps."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

from cmegw.web.stream import stream_body


class ProducerRequest(DummyRequest):
    """A DummyRequest that keeps the producer registered on it."""

    producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None


class TurningReactor:
    """Delayed calls run a reactor turn at a time: `turn` runs those due before it began (as a reactor does)."""

    def __init__(self):
        self.calls = []

    def callLater(self, delay, f, *args):
        call = task.DelayedCall(0, f, args, {}, lambda c: self.calls.remove(c), lambda c: None, lambda: 0)
        self.calls.append(call)
        return call

    def getDelayedCalls(self):
        return list(self.calls)

    def turn(self):
        due, self.calls = self.calls, []
        for call in due:
            call.called = True
            call.func(*call.args)

    def advance(self, _):
        self.turn()


class StreamBodyTests(TestCase):
    def setUp(self):
        self.clock = TurningReactor()
        self.request = ProducerRequest([b""])
        self.made = 0

    def pieces(self, count=100, size=1000):
        for i in range(count):
            self.made += 1
            yield f"{i:05d}" + "x" * (size - 6) + "\n"

    def run_steps(self, limit=1000):
        for _ in range(limit):
            if not self.clock.getDelayedCalls():
                return
            self.clock.advance(0)
        self.fail("the body never ended")

    def test_batches_with_the_reactor_between(self):
        done = stream_body(self.request, self.pieces(), self.clock, batch=10_000)
        self.assertEqual(self.request.written, [], "nothing is made before the reactor turns")
        self.assertIsNotNone(self.request.producer)
        self.run_steps()
        self.assertEqual(self.successResultOf(done), b"")
        body = b"".join(self.request.written)
        self.assertEqual(len(body), 100_000)
        self.assertEqual(body.splitlines()[42][:5], b"00042")
        self.assertEqual(len(self.request.written), 10, "batches of about 10 kB")
        self.assertIsNone(self.request.producer, "the producer is taken away at the end")

    def test_a_paused_body_waits_for_the_client(self):
        done = stream_body(self.request, self.pieces(), self.clock, batch=10_000)
        self.clock.advance(0)
        self.request.producer.pauseProducing()
        made = self.made
        for _ in range(20):
            self.clock.advance(0.1)
        self.assertEqual(self.made, made, "pieces made while the client did not read")
        self.assertNoResult(done)
        self.request.producer.resumeProducing()
        self.run_steps()
        self.assertEqual(self.successResultOf(done), b"")
        self.assertEqual(self.made, 100)

    def test_a_client_that_goes_away_stops_the_making(self):
        done = stream_body(self.request, self.pieces(), self.clock, batch=10_000)
        self.clock.advance(0)
        made = self.made
        done.cancel()  # what Klein does when the connection is lost
        self.failureResultOf(done, defer.CancelledError)
        self.run_steps()
        self.assertLess(self.made, 100)
        self.assertLessEqual(self.made, made + 20)

    def test_the_transport_stopping_its_producer_stops_the_making(self):
        done = stream_body(self.request, self.pieces(), self.clock, batch=10_000)
        self.clock.advance(0)
        self.request.producer.stopProducing()
        self.run_steps()
        self.assertLess(self.made, 100)
        self.assertNoResult(done)  # Klein cancels it, the request being gone
        done.cancel()
        self.failureResultOf(done, defer.CancelledError)

    def test_a_failing_maker_fails_the_body(self):
        def pieces():
            yield "a" * 20_000
            raise ValueError("the trace broke")

        done = stream_body(self.request, pieces(), self.clock, batch=10_000)
        self.run_steps()
        self.failureResultOf(done, ValueError)
