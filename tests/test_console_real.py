"""
The console end to end: a real ``twistd cmegw`` process on a pty, driven by
Debian's ``telnet`` and ``ssh`` clients through pexpect, and by raw sockets
that send garbage.  Loopback only; every wait is bounded.
"""

from __future__ import annotations

import os
import random
import socket
import termios
import time
from pathlib import Path

from twisted.conch import telnet
from twisted.trial.unittest import SkipTest, TestCase

from cmegw.config.store import factory_defaults_text
from tests.support import GatewayProcess, free_port, open_pty, read_socket, require_program

try:
    import pexpect
except ImportError:  # pragma: no cover - the test extra installs it
    pexpect = None

#: The web part on loopback ports nobody else uses (the factory's are 80 and 443 on every address).
LOOPBACK_WEB = ("--http", "tcp:0:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1")
#: Seconds pexpect waits for one answer.
EXPECT_TIMEOUT = 15
PROMPT = "cmegw> "


def spawn(program: str, args: list[str]) -> "pexpect.spawn":
    if pexpect is None:
        raise SkipTest("pexpect is not installed")
    child = pexpect.spawn(program, args, timeout=EXPECT_TIMEOUT, encoding="utf-8", codec_errors="replace",
                          dimensions=(50, 200), env={**os.environ, "TERM": "xterm"})
    return child


def telnet_login(testcase: TestCase, telnet: str, port: int) -> "pexpect.spawn":
    """A telnet client logged in as admin at the prompt, closed at the end of `testcase`."""
    child = spawn(telnet, ["127.0.0.1", str(port)])
    testcase.addCleanup(child.close, force=True)
    child.expect("login: ")
    child.send("admin\r")
    child.expect("Password: ")
    child.send("admin\r")
    child.expect("Logged in as admin")
    child.expect(PROMPT)
    return child


class ConsoleProcessTests(TestCase):
    """telnet against a real gateway on a pty line."""

    def setUp(self):
        self.telnet = require_program("telnet")
        self.master, self.slave, self.device = open_pty()
        self.addCleanup(os.close, self.master)
        self.addCleanup(os.close, self.slave)
        self.console_port, self.tunnel_port = free_port(), free_port()
        self.dir = Path(self.mktemp())
        self.gw = GatewayProcess(self.dir, [
            "--config", "cmegw.toml", "--device", self.device,
            "--tunnel", f"tcp:{self.tunnel_port}:interface=127.0.0.1",
            "--console", f"tcp:{self.console_port}:interface=127.0.0.1", *LOOPBACK_WEB])
        self.addCleanup(self.gw.stop)
        self.gw.start([self.console_port, self.tunnel_port])

    def login(self) -> "pexpect.spawn":
        return telnet_login(self, self.telnet, self.console_port)

    def command(self, child: "pexpect.spawn", line: str) -> str:
        child.send(line + "\r")
        child.expect(PROMPT)
        return child.before

    def speed(self) -> int:
        return termios.tcgetattr(self.slave)[4]

    def test_session(self):
        """Log in, read the tunnel statistics, change the baud rate, save, restart, see it kept."""
        with socket.create_connection(("127.0.0.1", self.tunnel_port), timeout=5) as client:
            client.sendall(b"\x10\x40\x01\x41\x16")
            deadline = time.monotonic() + 5
            received = b""
            while len(received) < 5 and time.monotonic() < deadline:
                received += os.read(self.master, 64)
            self.assertEqual(received, b"\x10\x40\x01\x41\x16")

            child = self.login()
            page = self.command(child, "show tunnel 1")
            self.assertRegex(page, r"Completed accepts\s+1")
            self.assertRegex(page, r"Octets forwarded from network\s+5")
            self.assertRegex(page, r"State\s+connected \(127.0.0.1:")

        self.assertEqual(self.speed(), termios.B2400)
        self.assertIn("applied at once; saved.", self.command(child, "set line.1.baud_rate 300"))
        self.assertEqual(self.speed(), termios.B300, "the pty follows the console at once")
        self.assertRegex(self.command(child, "show status"), r"Configuration saved\s+yes")
        self.assertIn("baud_rate = 300", (self.dir / "cmegw.toml").read_text())
        self.assertIn("for this run only", self.command(child, "set --no-save console.idle_timeout 60"))
        self.assertRegex(self.command(child, "show status"), r"Configuration saved\s+no")
        self.assertIn("Saved to", self.command(child, "save"))
        self.assertIn("idle_timeout = 60", (self.dir / "cmegw.toml").read_text())

        child.send("restart\r")
        child.expect(r"Restart the gateway now\? \[y/N\] ")
        child.send("y\r")
        child.expect("Restarting; this session closes.")
        child.expect(pexpect.EOF)

        self.gw._wait(self.console_port)
        child = self.login()
        self.assertRegex(self.command(child, "show settings line.1.baud_rate"), r"line\.1\.baud_rate\s+300\s+300")
        self.assertRegex(self.command(child, "show status"), r"Configuration saved\s+yes")
        self.assertEqual(self.speed(), termios.B300)
        self.assertIn("for this run only", self.command(child, "set --no-save line.1.baud_rate 1200"))
        shown = self.command(child, "show line.1")
        self.assertRegex(shown, r"line\.1\.baud_rate\s+1200\s+300")
        self.assertIn("the file holds 300", shown)
        self.assertRegex(self.command(child, "show tunnel.1"),
                         rf"tunnel\.1\.listen\s+tcp:{self.tunnel_port}:interface=127.0.0.1")
        self.assertIn("the command line sets it for this run; the file holds tcp:10001",
                      self.command(child, "help set tunnel.1.listen"))
        self.assertRegex(self.command(child, "show http"), r"Received\s+\d[\d\u202f ]*\s*(bytes|kB|MB)")
        self.assertIn("The HTTP access log is empty.", self.command(child, "show log"))
        child.send("exit\r")
        child.expect("Bye.")
        child.expect(pexpect.EOF)

    def test_editing_history_and_completion(self):
        child = self.login()
        child.send("sh\t")
        child.send("st\t")
        child.send("\r")
        child.expect("Indications")
        child.expect(PROMPT)
        child.send("set line.1.ba\t")
        child.send("600\r")
        child.expect("line.1.baud_rate = 600")
        child.expect(PROMPT)
        self.assertEqual(self.speed(), termios.B600)
        child.send("\x1b[A\x1b[D\x1b[D\x7f3\r")  # up, left twice, backspace, 3: 600 becomes 300
        child.expect("line.1.baud_rate = 300")
        child.expect(PROMPT)
        self.assertEqual(self.speed(), termios.B300)

    def test_wrong_passwords(self):
        child = spawn(self.telnet, ["127.0.0.1", str(self.console_port)])
        self.addCleanup(child.close, force=True)
        for attempt in range(3):
            child.expect("login: ")
            child.send("admin\r")
            child.expect("Password: ")
            started = time.monotonic()
            child.send("nope\r")
            child.expect("Login incorrect")
            self.assertGreaterEqual(time.monotonic() - started, 0.9, "a wrong password is answered late")
        child.expect("3 failures; closing")
        child.expect(pexpect.EOF)

    def test_plain_line_client(self):
        """A client without telnet (nc) sends lines and gets answers, without echo."""
        with socket.create_connection(("127.0.0.1", self.console_port), timeout=5) as sock:
            sock.sendall(b"admin\nadmin\nshow line 1\nexit\n")
            out = read_socket(sock, limit=10)
        self.assertIn(b"Logged in as admin", out)
        self.assertIn(b"Receiver bytes", out)
        self.assertIn(b"Bye.", out)
        self.assertNotIn(b"show line 1", out, "a dumb client's lines are not echoed")

    def test_garbage_and_option_floods(self):
        rng = random.Random(2323)
        floods = [
            b"".join(telnet.IAC + c + bytes([o]) for c in (telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT)
                     for o in range(256)) * 20,
            telnet.IAC + telnet.SB + telnet.NAWS + b"x" * 200000,
            b"\x1b[" + b"9" * 100000 + b"\x1b[;~\x1bOZ",
            telnet.IAC + b"\x00" + telnet.IAC + telnet.SE + b"\r\x00\r\r\n" * 1000,
            b"A" * 300000 + b"\n",
        ]
        floods += [bytes(rng.randrange(256) for _ in range(20000)) for _ in range(5)]
        for flood in floods:
            with socket.create_connection(("127.0.0.1", self.console_port), timeout=5) as sock:
                try:
                    sock.sendall(flood)
                except OSError:
                    pass  # the server may close first: that is allowed
                read_socket(sock, limit=0.5)
        self.assertIsNone(self.gw.process.poll(), "the gateway is still running")
        child = self.login()
        self.assertIn("Authentication directives", self.command(child, "show auth"))


class SSHConsoleTests(TestCase):
    """The console over SSH with Debian's ssh client."""

    def setUp(self):
        self.ssh = require_program("ssh")
        try:
            import cmegw.console.ssh  # noqa: F401
        except ImportError as e:
            raise SkipTest(f"twisted.conch.ssh cannot be imported here: {e}")
        self.ssh_port, self.tunnel_port = free_port(), free_port()
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        text = factory_defaults_text().replace("ssh_enabled = false", "ssh_enabled = true").replace(
            'ssh_listen = "tcp:2222"', f'ssh_listen = "tcp:{self.ssh_port}:interface=127.0.0.1"').replace(
            "[console]\nenabled = true", "[console]\nenabled = false").replace(
            "[http]\nenabled = true", "[http]\nenabled = false")
        (self.dir / "cmegw.toml").write_text(text)
        self.gw = GatewayProcess(self.dir, ["--config", "cmegw.toml", "--simulate",
                                            "--tunnel", f"tcp:{self.tunnel_port}:interface=127.0.0.1"])
        self.addCleanup(self.gw.stop)
        self.gw.start([self.ssh_port])

    def client(self, *command: str, tty: bool = True) -> "pexpect.spawn":
        args = ["-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
                "-o", "NumberOfPasswordPrompts=3", "-o", "LogLevel=ERROR", "-F", "/dev/null"]
        args += ["-tt"] if tty else ["-T"]
        child = spawn(self.ssh, args + ["admin@127.0.0.1", *command])
        self.addCleanup(child.close, force=True)
        return child

    def test_host_key(self):
        key = self.dir / "ssh_host_ed25519_key"
        self.assertTrue(key.exists())
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)

    def test_shell(self):
        child = self.client()
        child.expect("password: ")
        child.sendline("admin")
        child.expect("Logged in as admin")
        child.expect(PROMPT)
        child.send("show st\t\r")
        child.expect("Indications")
        child.expect(PROMPT)
        child.send("exit\r")
        child.expect("Bye.")
        child.expect(pexpect.EOF)

    def test_single_command(self):
        child = self.client("show", "settings", "line.1.baud_rate", tty=False)
        child.expect("password: ")
        child.sendline("admin")
        child.expect(r"line\.1\.baud_rate\s+2400\s+2400")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 0)

    def exit_status(self, *command: str) -> int:
        """The exit status of ``ssh gw COMMAND`` (what the shell's ``$?`` shows)."""
        child = self.client(*command, tty=False)
        child.expect("password: ")
        child.sendline("admin")
        child.expect(pexpect.EOF)
        child.close()
        return child.exitstatus

    def test_single_command_exit_status(self):
        self.assertEqual(self.exit_status("show", "status"), 0)
        self.assertEqual(self.exit_status("frobnicate"), 1)
        self.assertEqual(self.exit_status("set", "line.1.baud_rate", "12345"), 1)

    def test_wrong_passwords(self):
        child = self.client()
        for attempt in range(3):
            child.expect("password: ")
            child.sendline("wrong")
        child.expect("Permission denied|Too many|Received disconnect|Connection closed")
        child.expect(pexpect.EOF)
        self.assertIsNone(self.gw.process.poll())
