"""
Operations end to end, with a real ``twistd cmegw`` process on loopback:
sd_notify to a test NOTIFY_SOCKET (READY once every listener accepts,
WATCHDOG, STATUS, RELOADING/READY around SIGHUP with a good and a bad file,
STOPPING at SIGTERM); ``systemd-socket-activate --fdname`` handing the
tunnel's socket to twistd, read by pyMeterBus; ``systemd-analyze verify`` on
the unit files; /metrics through the web part under its authentication
directive, checked by promtool, moving when a meter is read; the trace's
live view in headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from cmegw.mbus.meterbus import default_meters
from tests.test_ops_systemd import NotifySocket
from tests.support import REPO, START_TIMEOUT, GatewayProcess, Output, free_port, require_program, twistd_command

try:
    import meterbus
    import serial
except ImportError:  # pragma: no cover
    meterbus = None

UNITS = REPO / "etc" / "systemd"
LOOPBACK = ":interface=127.0.0.1"


def require_meterbus() -> None:
    if meterbus is None:
        raise SkipTest("pyMeterBus is not installed (the test command installs it)")


#: pyMeterBus reads a long frame by asking for more bytes than it has: the read ends at this timeout.
DATA_TIMEOUT = 2.0


def read_meter(port: int, address: int = 1, timeout: float = 5.0):
    """SND_NKE (its E5 awaited up to `timeout`), then REQ_UD2; the decoded answer or None."""
    ser = serial.serial_for_url(f"socket://127.0.0.1:{port}", baudrate=2400, parity=serial.PARITY_EVEN,
                                timeout=timeout)
    try:
        meterbus.send_ping_frame(ser, address)
        if not meterbus.recv_frame(ser, 1):
            return None
        ser.timeout = DATA_TIMEOUT
        meterbus.send_request_frame(ser, address)
        frame = meterbus.recv_frame(ser, meterbus.FRAME_DATA_LENGTH)
        return meterbus.load(frame) if frame else None
    finally:
        ser.close()


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


class GatewayWithPorts:
    """Free loopback ports for every listener and the arguments that use them."""

    def __init__(self) -> None:
        self.tunnel, self.http, self.https, self.console = (free_port() for _ in range(4))

    def args(self, *extra: str) -> list[str]:
        return ["--config", "cmegw.toml", "--simulate", "--tunnel", f"tcp:{self.tunnel}{LOOPBACK}",
                "--http", f"tcp:{self.http}{LOOPBACK}", "--https", f"tcp:{self.https}{LOOPBACK}",
                "--console", f"tcp:{self.console}{LOOPBACK}", *extra]


class NotifyTests(TestCase):
    def setUp(self):
        self.notify = NotifySocket(self)
        self.ports = GatewayWithPorts()
        self.gw = GatewayProcess(self.mktemp(), self.ports.args(),
                                 env={"NOTIFY_SOCKET": self.notify.address, "WATCHDOG_USEC": "400000"})
        self.addCleanup(self.gw.stop)
        self.gw.start()
        self.notify.wait(lambda: self.notify.fields("READY"), "READY=1", log=self.gw.log)

    def test_ready_watchdog_status_stopping(self):
        for port in (self.ports.tunnel, self.ports.http, self.ports.https, self.ports.console):
            self.assertTrue(accepts(port), f"port {port} accepts once READY=1 was sent")
        status = self.notify.fields("STATUS")[-1]
        self.assertTrue(status.startswith("line 1 ok 2400 baud, tunnel 1 "), status)
        # WATCHDOG=1 every 0.2 s (half of WATCHDOG_USEC): 3 to 7 a second, as a second's count allowed.
        before = len(self.notify.fields("WATCHDOG"))
        self.notify.wait(lambda: len(self.notify.fields("WATCHDOG")) > before, "a WATCHDOG=1", 5.0)
        first = time.monotonic()
        self.notify.wait(lambda: len(self.notify.fields("WATCHDOG")) > before + 4, "four more WATCHDOG=1", 5.0)
        four = time.monotonic() - first
        self.assertGreaterEqual(four, 4 / 7, "WATCHDOG=1 every 0.2 s")
        self.assertLessEqual(four, 4 / 3)
        self.gw.stop()
        self.assertIn("STOPPING=1", "\n".join(self.notify.messages()))

    def test_sighup_good_and_bad_file(self):
        path = self.gw.directory / "cmegw.toml"
        text = path.read_text()
        path.write_text(text.replace("keepalive = 45", "keepalive = 7", 1))
        self.gw.signal(signal.SIGHUP)
        self.gw.wait_log(lambda log: "Configuration reloaded" in log, "the reload")

        def ready_again(messages: list[str]) -> bool:
            reloads = [i for i, m in enumerate(messages) if "RELOADING=1" in m]
            return bool(reloads) and any("READY=1" in m for m in messages[reloads[0] + 1:])

        messages = self.notify.wait(lambda: ready_again(self.notify.messages()) and self.notify.messages(),
                                    "READY=1 after the reload")
        reloading = [i for i, m in enumerate(messages) if "RELOADING=1" in m]
        self.assertEqual(len(reloading), 1)
        self.assertTrue(any("READY=1" in m for m in messages[reloading[0] + 1:]))

        bad = text.replace("keepalive = 45", "keepalive = 'later'", 1)
        path.write_text(bad)
        self.gw.signal(signal.SIGHUP)
        self.gw.wait_log(lambda log: "reload refused" in log, "the refusal")
        self.notify.wait(lambda: self.notify.fields("STATUS")[-1].startswith("configuration reload refused"),
                         "the refusal in STATUS", log=self.gw.log)
        self.assertEqual(path.read_text(), bad, "the bad file is left as it is")
        self.assertIsNone(self.gw.process.poll(), "still running")
        self.assertTrue(accepts(self.ports.http))


class SocketActivationTests(TestCase):
    """
    systemd-socket-activate opens the four ports of cmegw.socket and hands them
    to twistd started with the options of cmegw-socket-activation.conf: a
    pyMeterBus client reads a meter through the adopted tunnel socket, and the
    web and console answer on theirs.
    """

    def drop_in_options(self) -> list[str]:
        """The cmegw options of the drop-in's ExecStart (after ``cmegw``)."""
        lines = [line for line in (UNITS / "cmegw-socket-activation.conf").read_text().splitlines()
                 if line.startswith("ExecStart=/")]
        self.assertEqual(len(lines), 1)
        words = lines[0].split()
        return words[words.index("cmegw") + 1:]

    def test_read_through_adopted_sockets(self):
        require_meterbus()
        activate = require_program("systemd-socket-activate")
        folder = Path(self.mktemp()).resolve()
        folder.mkdir(parents=True)
        tunnel, http, https, console = (free_port() for _ in range(4))
        env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        command = [activate, *[f"--listen=127.0.0.1:{p}" for p in (tunnel, http, https, console)],
                   "--fdname=tunnel:http:https:console", *[f"--setenv={k}={v}" for k, v in env.items()], "--",
                   *twistd_command(), "-n", "--pidfile=", "--logfile", "-", "cmegw",
                   *self.drop_in_options(), "--config", str(folder / "cmegw.toml"), "--simulate"]
        process = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        assert process.stdout is not None
        output = Output(process.stdout, folder / "activate.log")  # systemd-socket-activate's, then twistd's
        self.addCleanup(output.close)
        self.addCleanup(_end, process)

        def log() -> str:
            return output.text

        output.wait(lambda text: text.count("Listening on") == 4, "systemd-socket-activate listening")
        # The first connection makes systemd-socket-activate exec twistd with the sockets; the simulated
        # bus runs in a process of its own, which the gateway starts then: read once line 1 is open on it.
        socket.create_connection(("127.0.0.1", tunnel), timeout=5).close()
        output.wait(lambda text: "Line 1: opened" in text and " disconnected" in text,
                    "line 1 open on the simulated bus, the first client gone")
        telegram = read_meter(tunnel, 1, timeout=START_TIMEOUT)
        self.assertIsNotNone(telegram, log())
        meter = next(m for m in default_meters() if m.primary == 1)
        self.assertEqual(telegram.body.bodyHeader.manufacturer_field.decodeManufacturer, meter.address.manufacturer)
        text = log()
        self.assertIn(f"Tunnel 1: listening on 127.0.0.1:{tunnel}", text)
        self.assertIn("Every listener is up", text)
        self.assertEqual(http_get(f"http://127.0.0.1:{http}/status")[0], 401, "the web part on its adopted socket")
        import ssl

        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", https), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
        with socket.create_connection(("127.0.0.1", console), timeout=5) as raw:
            raw.settimeout(5)
            self.assertTrue(raw.recv(100), "the console greets")


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


class UnitFileTests(TestCase):
    """systemd-analyze verify accepts the unit files (ExecStart pointed at this machine's twistd)."""

    def test_verify(self):
        analyze = require_program("systemd-analyze")
        twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) or shutil.which("twistd")
        if twistd is None:
            raise SkipTest("no twistd executable to point ExecStart at")
        folder = Path(self.mktemp()).resolve()
        (folder / "cmegw.service.d").mkdir(parents=True)
        for name in ("cmegw.service", "cmegw.socket"):
            (folder / name).write_text((UNITS / name).read_text().replace("/opt/cmegw/bin/twistd", twistd))
        drop_in = (UNITS / "cmegw-socket-activation.conf").read_text().replace("/opt/cmegw/bin/twistd", twistd)
        (folder / "cmegw.service.d" / "socket-activation.conf").write_text(drop_in)
        result = subprocess.run([analyze, "verify", "--man=no", "cmegw.service", "cmegw.socket"],
                                env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{folder}:"), capture_output=True,
                                text=True, timeout=60)
        output = result.stdout + result.stderr
        if result.returncode != 0 and ("Failed to" in output and "manager" in output.lower()):
            raise SkipTest(f"systemd-analyze cannot run here: {output}")
        self.assertEqual(result.returncode, 0, output)
        self.assertEqual(output, "", "no warning either (an unknown key is only a warning)")

    def test_units_say_what_the_issue_asks(self):
        unit = (UNITS / "cmegw.service").read_text()
        for line in ("Type=notify", "Restart=on-failure", "User=cmegw", "SupplementaryGroups=dialout",
                     "AmbientCapabilities=CAP_NET_BIND_SERVICE", "StateDirectory=cmegw",
                     "ConfigurationDirectory=cmegw", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID"):
            self.assertIn(f"\n{line}\n", unit)
        self.assertRegex(unit, r"\nWatchdogSec=\d+\n")
        socket_unit = (UNITS / "cmegw.socket").read_text()
        self.assertEqual(socket_unit.count("\nListenStream="), 4)
        drop_in = (UNITS / "cmegw-socket-activation.conf").read_text()
        for n, option in enumerate(("--tunnel", "--http", "--https", "--console")):
            self.assertIn(f"{option} systemd:domain=INET:index={n}", drop_in)


METRICS_OPEN = """
[[auth]]
uri = "/metrics"
realm = "metrics"
auth_type = "None"
"""


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def sample(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{label}}} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{label}}} is not in the metrics")


class MetricsTests(TestCase):
    def start(self, config: str = "") -> None:
        self.ports = GatewayWithPorts()
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        if config:
            defaults = (REPO / "etc" / "factory-defaults.toml").read_text()
            (folder / "cmegw.toml").write_text(defaults + config)
        self.gw = GatewayProcess(folder, self.ports.args())
        self.addCleanup(self.gw.stop)
        self.gw.start([self.ports.tunnel, self.ports.http])

    def test_protected_by_default(self):
        self.start()
        status, _ = http_get(f"http://127.0.0.1:{self.ports.http}/metrics")
        self.assertEqual(status, 401, "the / directive (Digest) covers /metrics")

    def test_scraped_with_a_none_directive(self):
        require_meterbus()
        self.start(METRICS_OPEN)
        url = f"http://127.0.0.1:{self.ports.http}/metrics"
        status, before = http_get(url)
        self.assertEqual(status, 200, before)
        self.assertIsNotNone(read_meter(self.ports.tunnel, 1))
        status, after = http_get(url)
        for name, label in (("cmegw_line_received_bytes_total", 'line="1"'),
                            ("cmegw_tunnel_network_to_line_bytes_total", 'tunnel="1"'),
                            ("cmegw_tunnel_accepts_total", 'tunnel="1"')):
            self.assertGreater(sample(after, name, label), sample(before, name, label), name)
        self.assertGreater(sample(after, "cmegw_http_responses_total", 'code="200"'), 0)
        self.assertIn('cmegw_info{', after)
        promtool = shutil.which("promtool")
        if promtool is None:
            raise SkipTest("promtool is not installed (Debian: apt-get install prometheus)")
        result = subprocess.run([promtool, "check", "metrics"], input=after, capture_output=True, text=True,
                                timeout=30)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


class LiveViewTests(TestCase):
    """The trace page follows a meter read without a reload, in headless Chromium."""

    def test_live_view(self):
        require_meterbus()
        from tests.test_web_browser import CHROMIUM_ARGS, CHROMIUM, STEP_TIMEOUT, _playwright

        sync_playwright = _playwright()
        ports = GatewayWithPorts()
        folder = Path(self.mktemp()).resolve()
        gw = GatewayProcess(folder, ports.args())
        self.addCleanup(gw.stop)
        gw.start([ports.tunnel, ports.http])
        playwright = sync_playwright().start()
        self.addCleanup(playwright.stop)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.addCleanup(browser.close)
        context = browser.new_context(http_credentials={"username": "admin", "password": "admin"})
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{ports.http}/trace/1")
        page.click("button[value=on]")
        page.wait_for_url(f"http://127.0.0.1:{ports.http}/trace/1")
        self.assertIn("on,", page.inner_text("#trace-state"))
        loaded_at = page.evaluate("performance.timeOrigin")
        self.assertIsNotNone(read_meter(ports.tunnel, 1))
        page.wait_for_function("document.getElementById('trace-live').textContent.indexOf('RSP_UD') >= 0")
        text = page.inner_text("#trace-live")
        self.assertIn("short SND_NKE C=40 A=01", text)
        self.assertIn("ACK (E5)", text)
        self.assertIn("REQ_UD2", text)
        self.assertIn("long RSP_UD C=08 A=01 CI=72", text)
        self.assertEqual(page.evaluate("performance.timeOrigin"), loaded_at, "no reload")
        self.assertEqual(errors, [], "no script error, nothing refused by the content security policy")
        page.screenshot(path=str(folder / "trace-live.png"), full_page=True)
