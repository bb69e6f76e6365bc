"""
Connect mode, TLS, RFC 2217 and the allow-list in a real ``twistd cmegw``
process, with loopback sockets only: a head-end in this process (plain and
TLS, certificates from tests.test_tunnel_tls's test CA) that the gateway
dials and that reads a meter on the simulated bus through it; pyserial's
``rfc2217://`` client setting 300 baud on a pty line; a client outside the
allow-list.
"""

import json
import socket
import subprocess
import time
from pathlib import Path

from twisted.internet import defer, protocol, reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase

from cmegw.config.settings import apply_settings
from cmegw.config.store import ConfigStore
from cmegw.mbus import frames
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.mbus.simulator import SimulatedBus
from cmegw.tls.protocol import TunnelTlsFactory
from tests.support import GatewayProcess, free_port, require_program
from tests.test_tunnel_tls import Authority, pem, server_options, write

try:
    import meterbus
    import serial
except ImportError:  # pragma: no cover
    meterbus = None

#: The first simulated meter: primary address 1, KAM 12345678.
METER = default_meters()[0]


def require_meterbus():
    if meterbus is None:
        raise SkipTest("pyMeterBus is not installed (the test command installs it)")


@defer.inlineCallbacks
def wait_for(condition, timeout=15.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        yield task.deferLater(reactor, step, lambda: None)
    raise AssertionError(f"not met within {timeout} s")


class HeadEndProtocol(protocol.Protocol):
    """The head-end's side of the gateway's connection: asks meters, collects whole telegrams."""

    def connectionMade(self):
        self.buffer = b""
        self.waiting = None
        self.factory.connected(self)

    def dataReceived(self, data):
        self.buffer += data
        self._check()

    def _check(self):
        if self.waiting is None or not self.buffer:
            return
        needed = frames.frame_length(self.buffer[:4])
        if needed is not None and len(self.buffer) >= needed:
            reply, self.buffer = self.buffer[:needed], self.buffer[needed:]
            d, self.waiting = self.waiting, None
            d.callback(reply)

    def ask(self, request, timeout=5.0):
        d = self.waiting = defer.Deferred()
        self.transport.write(request)
        timer = reactor.callLater(timeout, lambda: d.called or d.errback(TimeoutError(f"no reply to {request.hex()}")))
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return d

    def connectionLost(self, reason):
        self.factory.lost(self)


class HeadEnd(protocol.Factory):
    """A head-end on 127.0.0.1 that the gateway dials (TLS with `options`), stopped and started at will."""

    protocol = HeadEndProtocol

    def __init__(self, options=None):
        self.options = options
        self.connections = []
        self.port = None
        self.number = 0
        self._waiting = []

    @defer.inlineCallbacks
    def listen(self, number=0):
        factory = TunnelTlsFactory(self.options, False, self) if self.options is not None else self
        self.port = yield TCP4ServerEndpoint(reactor, number, interface="127.0.0.1").listen(factory)
        self.number = self.port.getHost().port
        return self.number

    def connected(self, p):
        self.connections.append(p)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(p)

    def lost(self, p):
        if p in self.connections:
            self.connections.remove(p)

    def next_connection(self, timeout=15.0):
        if self.connections:
            return defer.succeed(self.connections[-1])
        d = defer.Deferred()
        self._waiting.append(d)
        timer = reactor.callLater(timeout, lambda: d.called or d.errback(TimeoutError("the gateway did not dial")))
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return d

    @defer.inlineCallbacks
    def stop(self):
        for p in list(self.connections):
            p.transport.loseConnection()
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
        yield wait_for(lambda: not self.connections, timeout=5)


@defer.inlineCallbacks
def read_meter(head_end, address=METER.primary):
    """SND_NKE, then REQ_UD2, as a head-end reads a meter; the decoded RSP_UD."""
    connection = yield head_end.next_connection()
    ack = yield connection.ask(frames.snd_nke(address))
    assert ack == b"\xe5", ack
    reply = yield connection.ask(frames.req_ud2(address))
    return meterbus.load(reply)


class GatewayBase(TestCase):
    """A real ``twistd cmegw`` in a temporary folder: its config file, the web port for the API."""

    def start_gateway(self, tunnel, *args):
        """Start twistd on a configuration made from the factory defaults with `tunnel`'s settings of tunnel 1."""
        require_meterbus()
        self.curl = require_program("curl")
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        store = ConfigStore(self.dir / "cmegw.toml")
        store.load()
        settings = {"line.1.reopen_interval": 1, "tunnel.1.disconnect_timeout": 0}
        settings.update({f"tunnel.1.{name}": value for name, value in tunnel.items()})
        store.change(apply_settings(store.config, settings))
        self.tunnel_port, self.http_port = free_port(), free_port()
        self.gw = GatewayProcess(self.dir, [
            "--config", "cmegw.toml", *args, "--tunnel", f"tcp:{self.tunnel_port}:interface=127.0.0.1",
            "--http", f"tcp:{self.http_port}:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1",
            "--console", "tcp:0:interface=127.0.0.1"])
        self.addCleanup(self.gw.stop)
        # Started once the tunnel and the web part listen (the log says so): the API answers from then on.
        return threads.deferToThread(self.gw.start, [self.tunnel_port, self.http_port])

    def _api(self, method, path, body=None):
        command = [self.curl, "-s", "--max-time", "10", "--digest", "-u", "admin:admin", "-X", method,
                   f"http://127.0.0.1:{self.http_port}{path}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
        start = done.stdout.find("{")  # after the body of the 401 that starts Digest
        if done.returncode == 0 and start >= 0:
            return json.loads(done.stdout[start:])
        raise AssertionError(f"no answer from the API: {done.returncode} {done.stderr}\n{self.gw.log()}")

    def api(self, method, path, body=None):
        return threads.deferToThread(self._api, method, path, body)

    @defer.inlineCallbacks
    def api_until(self, path, condition, timeout=15.0, pace=0.2):
        """Ask `path` until `condition(answer)`: asked again `pace` s later on the reactor, for `timeout` s."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / pace) + 1):
            answer = yield self.api("GET", path)
            if condition(answer):
                return answer
            if time.monotonic() > deadline:
                break
            yield task.deferLater(reactor, pace, lambda: None)
        raise AssertionError(f"{path} never satisfied the condition: {json.dumps(answer)[:2000]}")


class ConnectModeRealTests(GatewayBase):
    """The gateway behind NAT: it dials the head-end, which reads a meter through it."""

    @defer.inlineCallbacks
    def test_dials_reads_refuses_accept_and_reconnects_after_a_restart(self):
        head_end = HeadEnd()
        port = yield head_end.listen()
        self.addCleanup(head_end.stop)
        yield self.start_gateway({
            "connect_mode": "always", "connect_hosts": [f"tcp:host=127.0.0.1:port={port}"],
            "connect_backoff_min": 1, "connect_backoff_max": 4}, "--simulate")
        frame = yield read_meter(head_end)
        header = frame.body.bodyHeader
        self.assertEqual(header.manufacturer_field.decodeManufacturer, METER.address.manufacturer)
        self.assertEqual("".join(f"{b:02X}" for b in header.id_nr), METER.address.ident)
        status = yield self.api("GET", "/api/status")
        self.assertEqual(status["tunnels"]["1"]["connect_mode"], f"connected to 127.0.0.1:{port}")
        self.assertTrue(status["indications"]["LINK"])

        # An accept-mode client is refused while the head-end holds the line.
        refused = yield threads.deferToThread(self.refused_at_once, self.tunnel_port)
        self.assertTrue(refused)
        yield self.api_until("/api/stats", lambda s: s["tunnels"]["1"]["dropped_accepts"] == 1)

        # The head-end restarts; the gateway comes back within its back-off (at most 4 s here).
        yield head_end.stop()
        yield task.deferLater(reactor, 0.5, lambda: None)
        yield head_end.listen(port)
        listening_again = time.monotonic()
        yield head_end.next_connection(timeout=10)
        self.assertLess(time.monotonic() - listening_again, 4 + 1.5, "reconnected within the back-off")
        frame = yield read_meter(head_end)
        self.assertEqual(frame.body.bodyHeader.manufacturer_field.decodeManufacturer, "KAM")
        stats = yield self.api_until("/api/stats", lambda s: s["tunnels"]["1"]["completed_connects"] == 2)
        tunnel = stats["tunnels"]["1"]
        self.assertGreaterEqual(tunnel["disconnects"], 1)
        self.assertGreater(tunnel["connect_times"][0], 0)
        self.assertIn("Tunnel 1: connected to 127.0.0.1", self.gw.log())

    @staticmethod
    def refused_at_once(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.settimeout(5)
            try:
                return client.recv(10) == b""
            except ConnectionResetError:
                return True


class TlsRealTests(GatewayBase):
    """Verified TLS to the head-end: the right one is read; another name or another CA is refused, with reasons."""

    @defer.inlineCallbacks
    def test_tls_head_ends(self):
        ca, other_ca = Authority("cmegw test CA"), Authority("Other CA")
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        ca_file = write(folder, "ca.pem", pem(ca.certificate))
        good, wrong_name, wrong_ca = HeadEnd(server_options(*ca.issue(["localhost", "127.0.0.1"]))), \
            HeadEnd(server_options(*ca.issue(["other.example"]))), \
            HeadEnd(server_options(*other_ca.issue(["localhost", "127.0.0.1"])))
        ports = {}
        for name, head_end in (("good", good), ("name", wrong_name), ("ca", wrong_ca)):
            ports[name] = yield head_end.listen()
            self.addCleanup(head_end.stop)
        yield self.start_gateway({
            "connect_mode": "always", "connect_hosts": [f"tls:host=localhost:port={ports['name']}"],
            "connect_backoff_min": 1, "connect_backoff_max": 2, "connect_tls_ca": ca_file}, "--simulate")
        status = yield self.api_until("/api/stats", lambda s: "other.example" in s["tunnels"]["1"]["connect"]
                                      ["last_error"])
        connect = status["tunnels"]["1"]["connect"]
        self.assertIn("the head-end's certificate is for other.example, not localhost", connect["last_error"])
        self.assertGreaterEqual(connect["tls_failures"], 1)
        self.assertEqual(status["tunnels"]["1"]["completed_connects"], 0)
        page = yield threads.deferToThread(self.page, "/status")
        self.assertIn("the head-end&#x27;s certificate is for other.example, not localhost", page.replace("'", "&#x27;"))

        yield self.api("PUT", "/api/settings", {"tunnel.1.connect_hosts": f"tls:host=localhost:port={ports['ca']}"})
        status = yield self.api_until("/api/stats", lambda s: "Other CA" in s["tunnels"]["1"]["connect"]["last_error"])
        self.assertIn(f"certificate not trusted: issued by Other CA which is not in the CA bundle {ca_file}",
                      status["tunnels"]["1"]["connect"]["last_error"])
        self.assertEqual(wrong_name.connections + wrong_ca.connections, [], "refused peers are closed")

        yield self.api("PUT", "/api/settings", {"tunnel.1.connect_hosts": f"tls:host=localhost:port={ports['good']}"})
        frame = yield read_meter(good)
        self.assertEqual(frame.body.bodyHeader.manufacturer_field.decodeManufacturer, "KAM")
        status = yield self.api("GET", "/api/status")
        self.assertEqual(status["tunnels"]["1"]["connect_mode"], f"connected to localhost:{ports['good']} (TLS)")
        log = self.gw.log()
        self.assertIn("the head-end's certificate is for other.example, not localhost", log)
        self.assertIn("certificate not trusted: issued by Other CA", log)

    def page(self, path):
        done = subprocess.run([self.curl, "-s", "--max-time", "10", "--digest", "-u", "admin:admin",
                               f"http://127.0.0.1:{self.http_port}{path}"], capture_output=True, text=True, timeout=20)
        return done.stdout


class Rfc2217RealTests(GatewayBase):
    """pyserial's rfc2217:// sets 300 baud on a pty line; the pty follows; a meter is read at 300 baud."""

    @defer.inlineCallbacks
    def test_pyserial_sets_300_baud_and_reads_a_meter(self):
        require_meterbus()
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        bus = SimulatedBus(reactor, MeterBus(default_meters()), reply_delay=0.01)
        for meter in bus.bus.meters:
            meter.baud = 300  # meters set to 300 baud: silent at the line's 2400 until the head-end follows
        link = bus.start(link=str(folder / "ttyMBUS0"))
        self.addCleanup(bus.stop)
        yield self.start_gateway({"rfc2217": True}, "--device", link)
        yield wait_for(lambda: bus.baud == 2400)
        client = yield threads.deferToThread(
            serial.serial_for_url, f"rfc2217://127.0.0.1:{self.tunnel_port}", baudrate=300, bytesize=8,
            parity=serial.PARITY_EVEN, stopbits=1, timeout=3)
        self.addCleanup(client.close)
        yield wait_for(lambda: bus.baud == 300)
        self.assertEqual(bus.baud, 300, "the pty's termios follows the head-end at once")

        def read():
            meterbus.send_ping_frame(client, METER.primary)
            ack = meterbus.recv_frame(client, 1)
            meterbus.send_request_frame(client, METER.primary)
            return ack, meterbus.recv_frame(client, meterbus.FRAME_DATA_LENGTH)

        ack, data = yield threads.deferToThread(read)
        self.assertEqual(ack, b"\xe5")
        frame = meterbus.load(data)
        self.assertEqual(frame.body.bodyHeader.manufacturer_field.decodeManufacturer, "KAM")
        self.assertIn("baud_rate = 300", (self.dir / "cmegw.toml").read_text(), "saved like the M-Bus Serial page")
        settings = yield self.api("GET", "/api/settings/line.1.baud_rate")
        self.assertEqual((settings["value"], settings["running"]), (300, 300))

        def refused_rate():
            try:
                client.baudrate = 115200
            except ValueError as e:
                return str(e)
            return "accepted"

        answer = yield threads.deferToThread(refused_rate)
        self.assertIn("remote rejected value", answer)
        self.assertEqual(bus.baud, 300)


class AllowListRealTests(GatewayBase):
    @defer.inlineCallbacks
    def test_client_outside_refused_inside_reads(self):
        yield self.start_gateway({"allow_list": ["10.0.0.0/8", "2001:db8::/32"]}, "--simulate")

        def refused():
            with socket.create_connection(("127.0.0.1", self.tunnel_port), timeout=5) as client:
                client.settimeout(5)
                try:
                    client.sendall(frames.snd_nke(1))
                    return client.recv(10)
                except (ConnectionResetError, BrokenPipeError):
                    return b""

        self.assertEqual((yield threads.deferToThread(refused)), b"", "closed at once, no answer from the bus")
        stats = yield self.api_until("/api/stats", lambda s: s["tunnels"]["1"]["access"]["refused_by_allow_list"])
        self.assertEqual(stats["tunnels"]["1"]["dropped_accepts"], 1)
        self.assertEqual(stats["tunnels"]["1"]["octets_from_network"], 0, "it never touched the line")
        self.assertIn("not in the allow-list", self.gw.log())
        yield self.api("PUT", "/api/settings", {"tunnel.1.allow_list": "10.0.0.0/8, 127.0.0.1"})

        def read():
            ser = serial.serial_for_url(f"socket://127.0.0.1:{self.tunnel_port}", timeout=3)
            try:
                meterbus.send_ping_frame(ser, 1)
                ack = meterbus.recv_frame(ser, 1)
                meterbus.send_request_frame(ser, 1)
                return ack, meterbus.load(meterbus.recv_frame(ser, meterbus.FRAME_DATA_LENGTH))
            finally:
                ser.close()

        ack, frame = yield threads.deferToThread(read)
        self.assertEqual(ack, b"\xe5")
        self.assertEqual(frame.body.bodyHeader.manufacturer_field.decodeManufacturer, "KAM")

