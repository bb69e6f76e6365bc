"""
Tests for cmegw.ops.trace, its web pages (cmegw.ops.pages) and the console's
``trace`` commands: every frame of ../shared/mbus-frames labelled right
(against an oracle computed here from the bytes and libmbus' decodings),
the ring buffer bounded under a flood, nothing on the line's byte path while
off, the text and JSON downloads, live followers.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, TestCase

from cmegw.config.store import ConfigStore
from cmegw.console.commands import Reply, Session, commands
from cmegw.console.trace_commands import FLUSH_LINES
from cmegw.mbus import frames, records
from cmegw.ops import trace as T
from cmegw.ops.trace import RX, TX, LineTrace
from cmegw.serial.line import SerialLine
from cmegw.service import GatewayService, Overrides
from tests.support import FRAMES, open_pty, read_fd

FOLDERS = ("test-frames", "error-frames", "unsupported-frames")
BASE = "http://127.0.0.1:8080"


def shared_frames() -> list[tuple[Path, bytes | None]]:
    """Every .hex file of ../shared/mbus-frames with its bytes (None where the file is not hex)."""
    if not FRAMES.is_dir():
        raise SkipTest(f"{FRAMES} is absent: the real frames come with ../shared")
    out = []
    for folder in FOLDERS:
        for path in sorted((FRAMES / folder).glob("*.hex")):
            try:
                out.append((path, bytes.fromhex(path.read_text().replace("\n", " "))))
            except ValueError:
                out.append((path, None))
    return out


def oracle(raw: bytes) -> dict | None:
    """What a telegram's label must say, read straight from EN 13757-2's layout; None: no telegram."""
    if raw == b"\xe5":
        return {"kind": "ack", "length": 1}
    if len(raw) == 5 and raw[0] == 0x10 and raw[4] == 0x16:
        return {"kind": "short", "c": raw[1], "a": raw[2], "ci": None, "l_field": None, "length": 5,
                "checksum_ok": (raw[1] + raw[2]) % 256 == raw[3]}
    if (len(raw) >= 9 and raw[0] == raw[3] == 0x68 and raw[1] == raw[2] and len(raw) == raw[1] + 6
            and raw[-1] == 0x16):
        return {"kind": "control" if raw[1] == 3 else "long", "c": raw[4], "a": raw[5], "ci": raw[6],
                "l_field": raw[1], "length": len(raw), "checksum_ok": sum(raw[4:-2]) % 256 == raw[-2]}
    return None


def libmbus_expectation(path: Path) -> tuple[int, str | None] | None:
    """libmbus' number of data records and identification, from NAME.xml."""
    xml = path.with_suffix(".xml")
    if not xml.exists():
        return None
    text = xml.read_text(errors="replace")
    ident = re.search(r"<Id>(\w+)</Id>", text)
    return len(re.findall(r"<DataRecord ", text)), ident.group(1) if ident else None


def chunks_of(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 24)
        out.append(data[pos:pos + size])
        pos += size
    return out


class SharedFramesTests(TestCase):
    """Each real frame, sent in random pieces as a meter's answer, is labelled as its bytes say."""

    def test_every_frame(self):
        files = shared_frames()
        clock = task.Clock()
        clock.advance(1_700_000_000)
        trace = LineTrace(1, clock, max_frames=10_000)
        rng = random.Random(8)
        spans = []
        for path, raw in files:
            if raw is None:
                continue
            first = trace.last_frame
            for piece in chunks_of(raw, rng):
                trace.record(RX, piece)
                clock.advance(0.01)
            clock.advance(1.0)  # silence: the next file is the next answer
            trace.frames()
            spans.append((path, raw, [f for f in trace.frames(first)]))
        checked = unreadable = 0
        for path, raw, labels in spans:
            self.assertEqual(sum(f.length for f in labels), len(raw), f"{path.name}: every byte in one label")
            expected = oracle(raw)
            if expected is None:
                self.assertFalse([f for f in labels if f.is_frame and f.length == len(raw)],
                                 f"{path.name} is no telegram and is not labelled as one")
                continue
            self.assertEqual(len(labels), 1, f"{path.name}: {[f.summary() for f in labels]}")
            label = labels[0]
            for key, value in expected.items():
                self.assertEqual(getattr(label, key), value, f"{path.name}: {key}")
            self.assertEqual(label.direction, RX)
            self.assertEqual(label.raw, raw)
            if label.kind in ("long", "control") and label.checksum_ok and label.c & 0x4F == 0x08:
                self.check_records(path, raw, label)
            checked += 1
        unreadable = sum(1 for _, raw in files if raw is None)
        self.assertGreater(checked, 80, f"{checked} frames checked, {unreadable} files not hex")

    def check_records(self, path, raw, label):
        try:
            telegram = records.decode_frame(frames.parse_frame(raw))
        except records.DecodeError as e:
            self.assertIsNone(label.records)
            self.assertEqual(label.problem, f"records not decoded: {e}", path.name)
            return
        self.assertEqual(len(label.records), len(telegram.records), path.name)
        self.assertEqual([r["quantity"] for r in label.records], [r.quantity for r in telegram.records])
        expected = libmbus_expectation(path)
        if expected is not None:
            count, ident = expected
            self.assertEqual(len(label.records) + (label.manufacturer_data is not None), count,
                             f"{path.name}: libmbus counts the manufacturer data as a record")
            if ident is not None and label.address:
                self.assertEqual(label.address.split("-")[0].lstrip("0"), ident.lstrip("0"), path.name)


class LabellingTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.trace = LineTrace(1, self.clock, peer=lambda: "127.0.0.1:5555")

    def test_a_read_in_both_directions(self):
        self.trace.record(TX, frames.snd_nke(5))
        self.trace.record(RX, frames.ACK)
        self.trace.record(TX, frames.req_ud2(5, fcb=True))
        self.trace.record(RX, frames.long_frame(0x08, 5, 0x72, bytes(12)))
        labels = self.trace.frames()
        self.assertEqual([(f.direction, f.name) for f in labels],
                         [(TX, "SND_NKE"), (RX, "ACK"), (TX, "REQ_UD2"), (RX, "RSP_UD")])
        self.assertEqual(labels[2].c, 0x7B)
        self.assertEqual(labels[3].a, 5)
        self.assertEqual(labels[0].peer, "127.0.0.1:5555")

    def test_records_are_decoded_when_read_not_kept(self):
        """Labelling decodes no records; a label decodes them from its bytes each time they are read."""
        telegram = records.rsp_ud(5, records.Header(None, 3, 0, 0), [records.scaled("energy", 1234000, 3)])
        decodes = []
        real = records.decode_frame
        self.patch(records, "decode_frame", lambda frame: decodes.append(frame) or real(frame))
        for _ in range(3):
            self.trace.record(TX, frames.req_ud2(5))
            self.trace.record(RX, telegram)
        labels = self.trace.frames()
        self.assertEqual(len(labels), 6)
        self.assertEqual(decodes, [], "labelling decoded records")
        self.assertNotIn("records", T.FrameLabel.__slots__)
        self.assertEqual(labels[1].as_dict()["records"][0]["quantity"], labels[1].records[0]["quantity"])
        self.assertEqual(len(decodes), 2, "one decode per read")
        self.assertIn("1 records", labels[1].summary())

    def test_reserved_bit_7(self):
        """The C field's reserved bit 7 is not part of the function (frames.Frame.function)."""
        self.trace.record(TX, frames.short_frame(0xDB, 5))
        self.trace.record(RX, frames.long_frame(0x88, 5, 0x72, bytes(12)))
        labels = self.trace.frames()
        self.assertEqual([f.name for f in labels], ["REQ_UD2", "RSP_UD"])
        self.assertEqual(labels[1].records, (), "decoded as the RSP_UD it is")

    def test_names_are_those_of_frames(self):
        """Every C value is named as cmegw.mbus.frames names it, and as it parses."""
        trace = LineTrace(1, task.Clock(), max_frames=1000)
        for c in range(256):
            trace.record(TX, frames.short_frame(c, 1))
            trace.record(RX, frames.long_frame(c, 1, 0x72, bytes(12)))
        labels = trace.frames()
        self.assertEqual(len(labels), 512)
        for label in labels:
            self.assertEqual(label.name, frames.function_name(label.c))
            function = frames.parse_frame(label.raw).function
            self.assertEqual(label.name, frames.FUNCTION_NAMES.get(function, f"C 0x{label.c:02X}"))

    def test_split_anywhere(self):
        stream = frames.snd_nke(1) + frames.req_ud2(1) + frames.long_frame(0x53, 0xFD, 0x52, bytes(8)) + b"\xe5"
        expected = [(f.kind, f.c, f.length) for f in self._labels([stream])]
        self.assertEqual(len(expected), 4)
        for cut in range(1, len(stream)):
            self.assertEqual([(f.kind, f.c, f.length) for f in self._labels([stream[:cut], stream[cut:]])],
                             expected, f"cut at {cut}")

    def _labels(self, pieces):
        trace = LineTrace(1, task.Clock())
        for piece in pieces:
            trace.record(TX, piece)
        return trace.frames()

    def test_bad_checksum(self):
        frame = bytearray(frames.req_ud2(1))
        frame[3] ^= 0xFF
        (label,) = self._labels([bytes(frame)])
        self.assertEqual((label.kind, label.checksum_ok), ("short", False))
        self.assertIn("checksum BAD", label.summary())

    def test_garbage_then_frame(self):
        labels = self._labels([b"\x00\x01\x02" + frames.snd_nke(3)])
        self.assertEqual([(f.kind, f.length) for f in labels], [("garbage", 3), ("short", 5)])

    def test_incomplete_after_silence(self):
        self.trace.record(RX, frames.long_frame(0x08, 1, 0x72, bytes(20))[:10])
        self.assertEqual(self.trace.frames(), [], "still coming")
        self.clock.advance(T.FRAME_GAP + 0.1)
        (label,) = self.trace.frames()
        self.assertEqual(label.kind, "incomplete")
        self.assertIn("10 of 29 bytes", label.problem)

    def test_garbage_flood_is_fast(self):
        rng = random.Random(1)
        noise = bytes(rng.choice([0x00, 0x10, 0x68, 0x16, 0xE5, 0x42]) for _ in range(200_000))
        trace = LineTrace(1, task.Clock(), max_bytes=1 << 20)
        for i in range(0, len(noise), 4096):
            trace.record(RX, noise[i:i + 4096])
        started = time.process_time()
        labels = trace.frames()
        self.assertLess(time.process_time() - started, 10.0)
        self.assertTrue(labels)


class BoundsTests(TestCase):
    def test_flood_stays_within_bounds(self):
        trace = LineTrace(1, task.Clock(), max_chunks=100, max_bytes=4096, max_frames=50)
        rng = random.Random(2)
        for i in range(20_000):
            trace.record(RX if i % 2 else TX, bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
            chunks, size = trace.size
            self.assertLessEqual(chunks, 100)
            self.assertLessEqual(size, 4096)
            if i % 997 == 0:
                self.assertLessEqual(len(trace.frames()), 50)
        self.assertEqual(trace.last_seq, 20_000)
        self.assertEqual(trace.dropped + trace.size[0], 20_000)
        self.assertLessEqual(len(trace.frames()), 50)

    def test_huge_chunk_is_cut(self):
        trace = LineTrace(1, task.Clock(), max_bytes=1000)
        chunk = trace.record(RX, bytes(5000))
        self.assertEqual(len(chunk.data), 1000)
        self.assertIn("5000 bytes, the first 1000 kept", chunk.note)
        self.assertEqual(trace.size, (1, 1000))

    def test_gap_in_labelling(self):
        trace = LineTrace(1, task.Clock(), max_chunks=4)
        trace.record(RX, frames.long_frame(0x08, 1, 0x72, bytes(20))[:10])
        self.assertEqual(trace.frames(), [], "half a telegram: waiting for the rest")
        for _ in range(10):
            trace.record(TX, frames.snd_nke(1))
        labels = trace.frames()
        self.assertIn("chunks left the trace before they were read", labels[0].problem)
        self.assertEqual([f.name for f in labels[1:]], ["SND_NKE"] * 4)


class OutputTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000.25)
        self.trace = LineTrace(2, self.clock, peer=lambda: "127.0.0.1:4000")
        self.trace.record(TX, frames.req_ud2(1))
        self.clock.advance(0.1)
        self.trace.record(RX, bytes(range(0x20, 0x40)))

    def test_text(self):
        text = self.trace.as_text()
        lines = text.splitlines()
        self.assertEqual(lines[0], "# cmegw trace of line 2: rx = line to network, tx = network to line")
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(1_700_000_000))
        self.assertEqual(lines[1], f"{stamp}.250000 tx from 127.0.0.1:4000, 5 bytes")
        self.assertEqual(lines[2], f"{stamp}.250000 tx 0000  10 5b 01 5c 16{' ' * 33}  |.[.\\.|")
        self.assertEqual(lines[3], f"{stamp}.250000 tx # short REQ_UD2 C=5B A=01, 5 bytes, checksum ok")
        self.assertEqual(lines[4], f"{stamp}.350000 rx to 127.0.0.1:4000, 32 bytes")
        self.assertTrue(lines[5].endswith("| !\"#$%&'()*+,-./|"), lines[5])
        self.assertTrue(lines[6].startswith(f"{stamp}.350000 rx 0010  30 31"), lines[6])

    def test_json(self):
        data = json.loads("".join(self.trace.json_pieces()))
        self.assertEqual(data["line"], 2)
        self.assertEqual([c["hex"] for c in data["chunks_list"]][0], "10 5b 01 5c 16")
        self.assertEqual(data["frames"][0]["name"], "REQ_UD2")
        self.assertEqual(data["last_seq"], 2)
        newer = json.loads("".join(self.trace.json_pieces(since=1, frames_after=data["last_frame"])))
        self.assertEqual([c["seq"] for c in newer["chunks_list"]], [2])
        self.assertEqual(newer["frames"], [])

    def test_listeners(self):
        seen = []
        self.trace.subscribe(seen.append)

        def broken(chunk):
            raise RuntimeError("listener bug")

        self.trace.subscribe(broken)
        self.trace.record(TX, b"\xe5")
        self.assertEqual([c.data for c in seen], [b"\xe5"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.trace.record(TX, b"\xe5")
        self.assertEqual(len(seen), 2, "the broken listener is gone, the others stay")
        self.trace.unsubscribe(seen.append)
        self.trace.record(TX, b"\xe5")
        self.assertEqual(len(seen), 2)

    def test_clear_keeps_numbers(self):
        self.trace.frames()
        last = self.trace.last_frame
        self.trace.clear()
        self.assertEqual(self.trace.size, (0, 0))
        self.trace.record(TX, frames.snd_nke(1))
        self.assertEqual([f.number for f in self.trace.frames()], [last + 1])


class OnTheLineTests(TestCase):
    """Off: the line's own methods are its byte path; on: a wrapper records; off again: gone."""

    def setUp(self):
        self.master, self.slave, path = open_pty()
        self.addCleanup(os.close, self.master)
        self.addCleanup(os.close, self.slave)
        from cmegw.config.model import LineConfig

        self.line = SerialLine(1, LineConfig(device=path), reactor)
        self.line.startService()
        self.addCleanup(self.line.stopService)
        self.got = []
        self.line.attach(self.got.append)

    def assertPlain(self):
        self.assertNotIn("_received", vars(self.line))
        self.assertNotIn("write", vars(self.line))
        self.assertEqual(self.line.write.__func__, SerialLine.write)
        self.assertEqual(self.line._received.__func__, SerialLine._received)

    @defer.inlineCallbacks
    def test_attach_and_detach(self):
        self.assertPlain()
        trace = LineTrace(1, reactor)
        trace.attach(self.line)
        self.assertIn("write", vars(self.line))
        self.assertTrue(self.line.write(frames.snd_nke(1)))
        self.assertEqual(read_fd(self.master, 5), frames.snd_nke(1))
        os.write(self.master, b"\xe5")
        for _ in range(100):
            if self.got:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.got, [b"\xe5"], "the receiver still gets the bytes")
        self.assertEqual([(c.direction, c.data) for c in trace.snapshot()], [(TX, frames.snd_nke(1)), (RX, b"\xe5")])
        self.assertEqual(self.line.stats.tx_bytes, 5)
        trace.detach()
        self.assertPlain()
        self.line.write(b"\x10")
        self.assertEqual(trace.size[0], 2)

    def test_dropped_write_is_noted(self):
        trace = LineTrace(1, reactor)
        trace.attach(self.line)
        self.line._close()
        self.assertFalse(self.line.write(b"\x10"))
        self.assertEqual(trace.snapshot()[-1].note, "dropped: the line is not open")


def start_gateway(test: TestCase) -> tuple[int, GatewayService]:
    """A running gateway whose line 1 is a pty (its master end returned) and whose tunnel is on port 0."""
    directory = Path(test.mktemp())
    directory.mkdir()
    master, slave, path = open_pty()
    test.addCleanup(os.close, master)
    test.addCleanup(os.close, slave)
    store = ConfigStore(directory / "cmegw.toml")
    store.load()
    gateway = GatewayService(store, reactor, Overrides(device=path, tunnel="tcp:0:interface=127.0.0.1"))
    gateway.startService()
    test.addCleanup(gateway.stopService)
    return master, gateway


class GatewayTraceTests(TestCase):
    def setUp(self):
        self.master, self.gateway = start_gateway(self)

    @defer.inlineCallbacks
    def test_peer_and_restart(self):
        self.assertEqual(self.gateway.traces, {}, "off by default")
        trace = self.gateway.set_trace(1, True)
        port = self.gateway.tunnels[1].port.getHost().port
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        for _ in range(100):
            if self.gateway.tunnels[1].stats.peer:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        client.sendall(frames.snd_nke(1))
        self.assertEqual((yield self._read_master(5)), frames.snd_nke(1))
        chunk = trace.snapshot()[-1]
        self.assertEqual((chunk.direction, chunk.peer), (TX, self.gateway.tunnels[1].stats.peer))
        client.close()
        yield self.gateway.restart()
        self.assertIs(self.gateway.traces[1], trace, "kept across the restart")
        self.assertIn("write", vars(self.gateway.lines[1]), "and on the new line")
        self.gateway.set_trace(1, False)
        self.assertNotIn("write", vars(self.gateway.lines[1]))
        self.assertNotIn("_received", vars(self.gateway.lines[1]))
        self.assertRaises(KeyError, self.gateway.set_trace, 9, True)

    @defer.inlineCallbacks
    def _read_master(self, n):
        got = b""
        for _ in range(200):
            got += os.read(self.master, 64) if _readable(self.master) else b""
            if len(got) >= n:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        return got


def _readable(fd):
    import select

    return bool(select.select([fd], [], [], 0)[0])


class ConsoleTests(TestCase):
    def setUp(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        store = ConfigStore(directory / "cmegw.toml")
        store.load()
        self.clock = MemoryReactorClock()
        self.gateway = GatewayService(store, self.clock)
        self.emitted = []
        self.session = Session(self.gateway, user="admin", emit=self.emitted.append)
        self.table = commands()

    def run_command(self, line):
        result = self.table.run(self.session, line)
        return result.text if isinstance(result, Reply) else result

    def test_on_off_status(self):
        self.assertIn("line 1: off, nothing recorded", self.run_command("trace"))
        self.assertIn("Trace of line 1 on.", self.run_command("trace on"))
        self.assertTrue(self.gateway.traces[1].enabled)
        self.gateway.traces[1].record(TX, frames.snd_nke(1))
        self.assertIn("line 1: on, 1 chunks, 5 bytes held", self.run_command("trace"))
        self.assertIn("short SND_NKE C=40 A=01", self.run_command("trace show 1"))
        self.assertIn("Trace of line 1 off", self.run_command("trace off 1"))
        self.assertIn("'7' is not a line", self.run_command("trace on 7"))
        self.assertIn("cleared", self.run_command("trace clear"))
        self.assertIn("No telegrams recorded on line 1", self.run_command("trace show"))

    def test_follow(self):
        d = self.table.run(self.session, "trace follow 1 5")
        self.assertIsInstance(d, defer.Deferred)
        trace = self.gateway.traces[1]
        self.assertTrue(trace.enabled)
        self.assertIn("turned on for this", self.emitted[0])
        trace.record(TX, frames.req_ud2(1))
        trace.record(RX, b"\xe5")
        self.clock.advance(0.2)
        self.assertIn("tx, 5 bytes: 10 5b 01 5c 16", self.emitted[1])
        self.assertIn("# short REQ_UD2", self.emitted[1])
        self.assertIn("rx # ACK (E5)", self.emitted[1])
        results = []
        d.addCallback(results.append)
        self.clock.advance(5)
        self.assertEqual(results[0].text, "trace follow: stopped after 5 s.")
        self.assertFalse(trace.enabled, "turned off again: it was off before")
        self.assertEqual(trace._listeners, [])

    def test_follow_cancelled(self):
        self.run_command("trace on")
        d = self.table.run(self.session, "trace follow")
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        d.cancel()
        trace = self.gateway.traces[1]
        self.assertEqual(trace._listeners, [])
        self.assertTrue(trace.enabled, "it was on before: it stays on")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_follow_flood_is_bounded(self):
        d = self.table.run(self.session, "trace follow 1 60")
        trace = self.gateway.traces[1]
        for _ in range(1000):
            trace.record(RX, b"\x00" * 10)
        self.clock.advance(0.2)
        self.assertIn(f"... {1000 - FLUSH_LINES} more chunks not shown", self.emitted[-1])
        self.assertIn("more telegrams not shown", self.emitted[-1])
        self.assertLessEqual(self.emitted[-1].count("\n"), 2 * FLUSH_LINES + 2)
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        d.cancel()


def csrf_token(body: str) -> str:
    found = re.search(r'name="_csrf" value="([0-9a-f]+)"', body)
    assert found, "no CSRF token in the page"
    return found.group(1)


class PagesTests(TestCase):
    """The trace pages in the admin application (authentication is the web part's, tested there)."""

    def setUp(self):
        try:
            from cmegw.web.app import admin_resource
        except ImportError as e:
            raise SkipTest(f"the web application is not there: {e}")
        self.master, self.gateway = start_gateway(self)
        self.http = StubTreq(admin_resource(self.gateway, clock=task.Clock(), host_network=lambda: None))

    @defer.inlineCallbacks
    def settle(self, d):
        """`d`'s result once StubTreq has carried it, the reactor turning between flushes (a trace streams)."""
        box = []
        d.addBoth(box.append)
        for _ in range(400):
            self.http.flush()
            if box:
                break
            yield task.deferLater(reactor, 0.005, lambda: None)
        self.assertTrue(box, "no response: a hang")
        return box[0]

    @defer.inlineCallbacks
    def get(self, path):
        response = yield self.settle(self.http.get(BASE + path))
        return response, (yield self.settle(response.text()))

    @defer.inlineCallbacks
    def post(self, path, fields):
        response = yield self.http.post(BASE + path, data=urlencode(fields).encode(), allow_redirects=False,
                                        headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        return response, (yield response.text())

    @defer.inlineCallbacks
    def test_turn_on_and_download(self):
        response, body = yield self.get("/trace/1")
        self.assertEqual(response.code, 200)
        self.assertIn("off, nothing recorded", body)
        self.assertIn('src="/static/trace-live.js"', body)
        self.assertIn('data-source="/trace/1.json"', body)
        response, _ = yield self.post("/trace/1", {"action": "on", "_csrf": csrf_token(body)})
        self.assertEqual(response.code, 303)
        self.assertTrue(self.gateway.traces[1].enabled)
        self.gateway.lines[1].write(frames.snd_nke(1))
        response, body = yield self.get("/trace/1")
        self.assertIn("short SND_NKE C=40 A=01", body)
        response, text = yield self.get("/trace/1.txt")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertIn("tx 0000  10 40 01 41 16", text)
        response, text = yield self.get("/trace/1.json?since=0")
        data = json.loads(text)
        self.assertEqual(data["frames"][0]["name"], "SND_NKE")
        response, text = yield self.get(f"/trace/1.json?since={data['last_seq']}&frames_after={data['last_frame']}")
        self.assertEqual(json.loads(text)["chunks_list"], [])

    @defer.inlineCallbacks
    def test_post_needs_the_token(self):
        response, _ = yield self.post("/trace/1", {"action": "on"})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.gateway.traces, {})

    @defer.inlineCallbacks
    def test_script_and_other_pages(self):
        response, text = yield self.get("/static/trace-live.js")
        self.assertEqual(response.code, 200)
        self.assertIn("frames_after", text)
        response, _ = yield self.get("/static/ops.css")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/css; charset=utf-8"])
        for gone in ("/ops/ops.css", "/ops/trace-live.js"):  # web/static is the one home of static files
            response, _ = yield self.get(gone)
            self.assertEqual(response.code, 404, gone)
        response, body = yield self.get("/trace")
        self.assertIn("Line 1", body)
        response, body = yield self.get("/trace/9")
        self.assertEqual(response.code, 404)
        response, body = yield self.get("/graphs")
        self.assertEqual(response.code, 200)
        self.assertIn("Tunnel 1: line to network", body)
        response, body = yield self.get("/graphs/tunnel1.to_line.svg")
        self.assertEqual(response.code, 200)
        self.assertTrue(body.startswith("<svg"))
        response, body = yield self.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertIn('cmegw_line_up{line="1"} 1.0', body)
