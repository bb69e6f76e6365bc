"""
Tests for cmegw.console: the command table over a gateway, and the telnet
session (login, line editing, history, completion, timers) on StringTransport.
"""

from __future__ import annotations

import os
import random
import re
import stat
import sys
from unittest import mock
from pathlib import Path
from types import SimpleNamespace

from twisted.conch import telnet
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase

from cmegw.config.model import directive_for
from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.console import commands as C
from cmegw.console.commands import COMMANDS, CommandTable, Reply, Session
from cmegw.console.protocol import (
    LOGIN_FAILURE_DELAY,
    LOGIN_TIMEOUT,
    MAX_LINE,
    Console,
    ConsoleProtocol,
    TelnetConsoleFactory,
)
from cmegw.console.service import make_console
from cmegw.service import GatewayService, Overrides
from cmegw.stats import TUNNEL_CONNECTED, LineStatistics, TunnelStatistics

IAC_WILL_ECHO = telnet.IAC + telnet.WILL + telnet.ECHO
IAC_DO_ECHO = telnet.IAC + telnet.DO + telnet.ECHO
IAC_DONT_ECHO = telnet.IAC + telnet.DONT + telnet.ECHO
UP, DOWN, LEFT, RIGHT = b"\x1b[A", b"\x1b[B", b"\x1b[D", b"\x1b[C"


def make_gateway(testcase: TestCase, overrides: Overrides = Overrides()) -> GatewayService:
    """A gateway on a memory reactor, not started: its parts' statistics are set by the tests."""
    directory = Path(testcase.mktemp())
    directory.mkdir()
    store = ConfigStore(directory / "cmegw.toml")
    store.load()
    return GatewayService(store, MemoryReactorClock(), overrides)


class CommandTests(TestCase):
    """The commands, called through the table as the protocol calls them."""

    def setUp(self):
        self.gateway = make_gateway(self)
        self.session = Session(self.gateway, user="admin")

    def run_line(self, line: str):
        result = COMMANDS.run(self.session, line)
        return Reply(result) if isinstance(result, str) else result

    def text(self, line: str) -> str:
        return self.run_line(line).text

    def answer(self, reply: Reply, *answers: str) -> Reply:
        for text in answers:
            self.assertIsNotNone(reply.ask, reply.text)
            result = reply.ask.answer(text)
            reply = Reply(result) if isinstance(result, str) else result
        return reply

    # help

    def test_help_lists_every_command(self):
        text = self.text("help")
        for name in ("help", "show", "set", "save", "restart", "factory-defaults", "passwd", "auth", "exit"):
            self.assertIn(f"  {name}", text)

    def test_help_command(self):
        self.assertIn("set NAME VALUE", self.text("help set"))
        self.assertIn("line.1.baud_rate", self.text("help set"))
        self.assertIn("http.http_port", self.text("help set"))
        self.assertIn("show tunnel [N]", self.text("help show"))
        self.assertIn("the M-Bus TCP/IP page", self.text("help show tunnel"))
        self.assertIn("Also: quit, logout", self.text("help exit"))

    def test_help_unknown(self):
        text = self.text("help frobnicate")
        self.assertIn("help: 'frobnicate' is not a command", text)
        self.assertIn("show", text)

    # errors name the command, the argument and what is allowed

    def test_unknown_command(self):
        """The message lists every command of the table (extensions such as mbus included once loaded)."""
        from cmegw.console.commands import COMMANDS

        self.assertEqual(self.text("frobnicate now"),
                         "frobnicate: 'frobnicate' is not a command; use one of "
                         + ", ".join(c.name for c in COMMANDS) + " ('help' explains each)")
        for name in ("help", "show", "set", "save", "restart", "factory-defaults", "passwd", "auth", "exit"):
            self.assertIn(name, COMMANDS.names())

    def test_ambiguous_prefix(self):
        text = self.text("s")
        self.assertIn("'s' is ambiguous", text)
        self.assertIn("save, set, show", text)

    def test_unambiguous_prefixes(self):
        self.assertTrue(self.text("sh st").startswith("Status"))

    def test_unknown_page(self):
        self.assertEqual(self.text("show frobs"),
                         "show: 'frobs' is unknown; use one of status, network, tunnel, line, http, auth, log, settings")

    def test_group_alone(self):
        self.assertIn("show: needs one more word; use one of status", self.text("show"))

    def test_extra_argument(self):
        self.assertEqual(self.text("show status now"),
                         "show status: 'now' is one argument too many; use show status")

    def test_empty_line(self):
        self.assertEqual(self.text("   "), "")

    # show

    def test_show_status(self):
        self.gateway.status.started_at = 0
        self.gateway.reactor.advance(77)
        self.gateway.lines = {1: SimpleNamespace(stats=LineStatistics(state="open", device="/dev/ttyUSB0"))}
        self.gateway.tunnels = {1: SimpleNamespace(stats=TunnelStatistics(state=TUNNEL_CONNECTED,
                                                                          peer="127.0.0.1:5000"))}
        text = self.text("show status")
        self.assertIn("Product type         cmegw", text)
        self.assertIn("Software version     0.1.0", text)
        self.assertIn("Uptime               0 days 00:01:17", text)
        self.assertIn("Configuration saved  yes", text)
        self.assertIn("Line 1  RS232, 2400, Even, 8, 1, None; open /dev/ttyUSB0", text)
        self.assertIn("accept mode: connected (127.0.0.1:5000)", text)
        self.assertIn("PWR off  ERR off  LINK on  ACT off", text)
        self.assertNotIn("CONFIGURATION PROBLEM", text)

    def test_show_status_unsaved_pending_problem(self):
        self.text("set network.dhcp off")
        self.gateway.status.config_problem = "cmegw.toml is not valid TOML"
        text = self.text("show status")
        self.assertIn("Configuration saved    no: 'save' keeps the changes", text)
        self.assertIn("Waiting for a restart  network.dhcp", text)
        self.assertIn("CONFIGURATION PROBLEM: cmegw.toml is not valid TOML", text)
        self.assertIn("Tunnel 1  connect mode: disabled; accept mode: not running", text)

    def test_show_network(self):
        self.text("set network.dhcp off")
        self.text("set network.ip_address 192.168.1.5/24")
        text = self.text("show network")
        self.assertRegex(text, r"dhcp\s+on\s+off")
        self.assertRegex(text, r"ip_address\s+\"\"\s+192.168.1.5")
        self.assertRegex(text, r"netmask\s+\"\"\s+255.255.255.0")
        self.assertIn("not applied to it", text)

    def test_show_tunnel(self):
        stats = TunnelStatistics(completed_accepts=3, disconnects=2, octets_from_serial=120,
                                 octets_from_network=40, accept_time_closed=3723.0)
        self.gateway.tunnels = {1: SimpleNamespace(stats=stats)}
        text = self.text("show tunnel 1")
        self.assertIn("Completed accepts              3", text)
        self.assertIn("Disconnects                    2", text)
        self.assertIn("Octets forwarded from serial   120", text)
        self.assertIn("Octets forwarded from network  40", text)
        self.assertIn("Accept connection time         0 days 01:02:03", text)
        self.assertIn("Connect 12 connection time     0 days 00:00:00", text)
        self.assertIn("TCP keep-alive      45 s", text)
        self.assertIn("Disconnect timeout  10 s", text)
        self.assertEqual(self.text("show tunnel"), text, "the only tunnel")

    def test_show_tunnel_not_running(self):
        self.assertIn("not running", self.text("show tunnel 1"))

    def test_show_tunnel_bad_number(self):
        self.assertEqual(self.text("show tunnel 7"), "show tunnel: '7' is not a tunnel; tunnels: 1")
        self.assertEqual(self.text("show tunnel x"), "show tunnel: 'x' is not a tunnel; tunnels: 1")

    def test_show_line(self):
        stats = LineStatistics(rx_bytes=10, tx_bytes=20, parity_errors=None, framing_errors=2, queued_rx=0,
                               state="open", device="/dev/pts/9")
        self.gateway.lines = {1: SimpleNamespace(stats=stats)}
        text = self.text("show line 1")
        self.assertIn("Line 1: RS232, 2400, Even, 8, 1, None", text)
        self.assertIn("Receiver bytes         10", text)
        self.assertIn("Transmitter bytes      20", text)
        self.assertIn("Parity errors          unavailable", text)
        self.assertIn("Framing errors         2", text)
        self.assertIn("Queued receive bytes   0", text)
        self.assertIn("Baud rate  2400", text)
        self.assertEqual(self.text("show line 2"), "show line: '2' is not a line; lines: 1")

    def test_show_line_every_line(self):
        """Without a number, every line's page, a blank line between them."""
        from cmegw.config.model import LineConfig

        config = self.gateway.running_config
        self.gateway.running_config = config.with_line(2, LineConfig(device="/dev/ttyUSB9", baud_rate=300))
        pages = self.text("show line").split("\n\n")
        self.assertEqual([page.splitlines()[0] for page in pages],
                         ["Line 1: RS232, 2400, Even, 8, 1, None", "Line 2: RS232, 300, Even, 8, 1, None"])
        self.assertEqual(pages[1], self.text("show line 2"))

    def test_show_http(self):
        text = self.text("show http")
        self.assertRegex(text, r"http_port\s+80\s+80")
        self.assertRegex(text, r"max_bytes\s+40960\s+40960")
        self.assertIn("HTTP statistics", text)

    def test_show_http_and_log_from_the_web_part(self):
        from cmegw.web.http import AccessLog, HttpStatistics

        access_log = AccessLog(max_entries=5)
        for i in range(7):
            access_log.add(f'127.0.0.1 12:00:0{i} "GET /{i} HTTP/1.1" 200 10')
        stats = HttpStatistics(rx_bytes=100, tx_bytes=2000, status_200=7)
        state = SimpleNamespace(stats=stats, access_log=access_log, listening={"http": "127.0.0.1:8080"})
        self.patch(C, "running_web", lambda gateway: state)
        text = self.text("show http")
        self.assertRegex(text, r"Rx bytes\s+100")
        self.assertRegex(text, r"responses 200\s+7")
        self.assertRegex(text, r"Entries\s+5")
        self.assertRegex(text, r"HTTP\s+127.0.0.1:8080")
        log_text = self.text("show log")
        self.assertEqual(log_text.splitlines()[0], '127.0.0.1 12:00:02 "GET /2 HTTP/1.1" 200 10')
        self.assertEqual(len(log_text.splitlines()), 5)
        self.assertEqual(self.text("show log 2").splitlines()[0], '127.0.0.1 12:00:05 "GET /5 HTTP/1.1" 200 10')
        self.assertEqual(self.text("show log 0"),
                         "show log: '0' is not a count; use a whole number of entries, 1 or more")
        self.assertEqual(self.text("clear log"), "The HTTP access log is cleared.")
        self.assertEqual(self.text("show log"), "The HTTP access log is empty.")

    def test_show_log_without_web(self):
        self.patch(C, "running_web", lambda gateway: None)
        self.assertIn("not available", self.text("show log"))

    def test_web_state_not_running(self):
        """The web part raises LookupError while it is not running: no log for the console."""
        self.assertIsNone(C.running_web(self.gateway))

    def test_show_auth_never_shows_hashes(self):
        text = self.text("show auth")
        self.assertRegex(text, r"/\s+config\s+Digest\s+admin")
        for user in directive_for(self.gateway.store.config.auth, "/").users:
            self.assertNotIn(user.ha1_md5, text)
            self.assertNotIn(user.ha1_sha256, text)

    def test_show_settings(self):
        text = self.text("show settings")
        self.assertRegex(text, r"line\.1\.baud_rate\s+2400\s+2400")
        self.assertRegex(text, r"console\.idle_timeout\s+300\s+300")
        self.text("set http.http_port 8080")
        text = self.text("show settings http")
        self.assertRegex(text, r"http\.http_port\s+80\s+8080")
        self.assertNotIn("line.1", text)
        self.assertIn("Not saved yet", text)

    def test_show_settings_command_line(self):
        gateway = make_gateway(self, Overrides(tunnel="tcp:0:interface=127.0.0.1"))
        gateway.running_config = gateway.overrides.apply(gateway.store.config)
        text = COMMANDS.run(Session(gateway), "show settings tunnel.1.listen")
        self.assertRegex(text, r"tunnel\.1\.listen\s+tcp:0:interface=127.0.0.1\s+tcp:0:interface=127.0.0.1")
        self.assertIn("the command line sets it for this run; the file holds 'tcp:10001'", text)

    def test_show_settings_no_match(self):
        self.assertEqual(self.text("show settings xyz"),
                         "show settings: 'xyz' matches no setting; use the beginning of a name, such as line.1 or http")

    # set

    def test_set_live(self):
        self.assertEqual(self.text("set line.1.baud_rate 300"),
                         "line.1.baud_rate = 300: applied at once; not saved ('save' keeps it).")
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.store.config.lines[1].baud_rate, 300)
        self.assertTrue(self.gateway.store.unsaved)
        self.assertNotIn("baud_rate = 300", self.gateway.store.path.read_text())

    def test_set_after_restart(self):
        self.assertEqual(self.text("set http.http_port 8080"),
                         "http.http_port = 8080: takes effect after a restart; not saved ('save' keeps it).")
        self.assertEqual(self.gateway.running_config.http.http_port, 80)
        self.assertEqual(self.gateway.pending_restart(), ["http.http_port"])

    def test_set_text_with_spaces_and_empty(self):
        self.text('set http.log_format %h %t "%r" %s')
        self.assertEqual(self.gateway.store.config.http.log_format, '%h %t "%r" %s')
        self.text("set network.ip_address 192.168.1.1 255.255.0.0")
        self.assertEqual(self.gateway.store.config.network.netmask, "255.255.0.0")
        self.text('set network.hostname ""')
        self.assertEqual(self.gateway.store.config.network.hostname, "")

    def test_set_message_is_the_model_message(self):
        """The same validation and message as the web page: apply_setting's ConfigError."""
        try:
            apply_setting(self.gateway.store.config, "line.1.baud_rate", "1234")
        except ValueError as e:
            expected = f"set: {e}"
        self.assertEqual(self.text("set line.1.baud_rate 1234"), expected)
        self.assertIn("line.1.baud_rate", expected)
        self.assertIn("1234", expected)
        self.assertIn("300", expected)
        self.assertFalse(self.gateway.store.unsaved)

    def test_set_errors(self):
        self.assertIn("set: 'network.hostname' is missing the value", self.text("set network.hostname"))
        self.assertIn("set: is missing the setting's name; use set NAME VALUE", self.text("set"))
        self.assertEqual(self.text("passwd"), "passwd: is missing an argument; use passwd USER")
        self.assertIn("'help set' lists them", self.text("set nothing.here 1"))
        self.assertIn("start with a letter", self.text("set network.hostname 9abc"))
        self.assertIn("use on or off", self.text("set network.dhcp maybe"))
        self.assertIn("there is no line 3", self.text("set line.3.baud_rate 300"))

    def test_save(self):
        self.text("set line.1.baud_rate 300")
        self.text("set http.http_port 8080")
        text = self.text("save")
        self.assertIn(f"Saved to {self.gateway.store.path}.", text)
        self.assertIn("after a restart ('restart'): http.http_port", text)
        self.assertFalse(self.gateway.store.unsaved)
        fresh = ConfigStore(self.gateway.store.path)
        fresh.load()
        self.assertEqual(fresh.config.lines[1].baud_rate, 300)

    def test_restart_asks(self):
        calls = []
        self.gateway.restart = lambda: calls.append("restart")
        reply = self.run_line("restart")
        self.assertEqual(reply.ask.prompt, "Restart the gateway now? [y/N] ")
        self.assertEqual(self.answer(reply, "n").text, "Not restarted.")
        self.assertEqual(calls, [])
        done = self.answer(self.run_line("restart"), "y")
        self.assertTrue(done.close)
        done.after()
        self.assertEqual(calls, ["restart"])

    def test_restart_warns_of_unsaved_changes(self):
        self.text("set line.1.baud_rate 300")
        self.assertIn("Unsaved changes are lost", self.run_line("restart").ask.prompt)

    def test_factory_defaults_asks(self):
        calls = []
        self.gateway.factory_reset = lambda: calls.append("reset")
        reply = self.run_line("factory-defaults")
        self.assertIn("factory defaults", reply.ask.prompt)
        self.assertEqual(self.answer(reply, "").text, "Nothing changed.")
        done = self.answer(self.run_line("factory-defaults"), "yes")
        done.after()
        self.assertEqual(calls, ["reset"])

    def test_passwd(self):
        reply = self.answer(self.run_line("passwd admin"), "s3cret", "s3cret")
        self.assertIn("admin has a new password for /", reply.text)
        directive = directive_for(self.gateway.store.config.auth, "/")
        self.assertTrue(directive.users[0].check_password("config", "s3cret"))
        self.assertFalse(directive.users[0].check_password("config", "admin"))
        self.assertTrue(self.run_line("passwd admin").ask.secret)

    def test_passwd_mismatch_and_errors(self):
        reply = self.answer(self.run_line("passwd admin"), "one", "two")
        self.assertEqual(reply.text, "passwd: the passwords differ; nothing changed.")
        self.assertTrue(directive_for(self.gateway.store.config.auth, "/").users[0].check_password("config", "admin"))
        self.assertEqual(self.text("passwd nobody"), "passwd: 'nobody' is not a user of /; users: admin")
        self.assertIn("passwd: 'a b' is one argument too many", self.text("passwd admin a b"))

    def test_auth_commands(self):
        self.assertIn("Directive /private added (None, realm config)", self.text("auth add /private None"))
        self.assertIn("add a user to this directive before asking for passwords",
                      self.text("auth type /private Basic"), "the web page's rule and message")
        self.assertIn("is not allowed", self.text("auth add /x Kerberos"))
        self.assertIn("has a directive already", self.text("auth add /private Digest"))
        self.answer(self.run_line("auth user-add /private bob"), "pw", "pw")
        directive = next(d for d in self.gateway.store.config.auth if d.uri == "/private")
        self.assertEqual([u.name for u in directive.users], ["bob"])
        self.assertIn("AuthType Digest", self.text("auth type /private Digest"))
        self.assertIn("the last user of a directive that asks for a password stays",
                      self.text("auth user-remove /private bob"), "the web page's rule and message")
        self.assertIn("AuthType None", self.text("auth type /private None"))
        self.assertIn("bob removed", self.text("auth user-remove /private bob"))
        self.assertIn("removed", self.text("auth remove /private"))
        self.assertEqual([d.uri for d in self.gateway.store.config.auth], ["/"])

    def test_auth_keeps_a_console_user(self):
        self.assertIn("holds the console's users", self.text("auth remove /"))
        self.assertIn("so does the last user of /", self.text("auth user-remove / admin"))
        self.assertIn("auth user-add: 'space' is one argument too many; use auth user-add URI NAME",
                      self.text("auth user-add / has space"))

    def test_exit(self):
        for word in ("exit", "quit", "logout"):
            reply = self.run_line(word)
            self.assertTrue(reply.close)
            self.assertEqual(reply.text, "Bye.")

    # completion

    def test_complete_commands(self):
        self.assertEqual(COMMANDS.complete(self.session, "s"), ["save", "set", "show"])
        self.assertEqual(COMMANDS.complete(self.session, "show st"), ["status"])
        self.assertEqual(COMMANDS.complete(self.session, "show tunnel "), ["1"])
        self.assertEqual(COMMANDS.complete(self.session, "help sh"), ["show"])
        self.assertEqual(COMMANDS.complete(self.session, "frob "), [])

    def test_complete_settings(self):
        self.assertEqual(COMMANDS.complete(self.session, "set line.1.ba"), ["line.1.baud_rate"])
        self.assertIn("http.max_bytes", COMMANDS.complete(self.session, "set http."))
        self.assertEqual(COMMANDS.complete(self.session, "set network.dhcp "), ["off", "on"])
        self.assertIn("300", COMMANDS.complete(self.session, "set line.1.baud_rate "))
        self.assertEqual(COMMANDS.complete(self.session, "show settings tunnel.1.k"), ["tunnel.1.keepalive"])

    # the registry other parts add to

    def test_extension_commands(self):
        table = CommandTable()
        mbus = table.group("mbus", "the integrated M-Bus master")

        @mbus.command("scan", "search the bus", "[LINE]")
        def scan(session, args):
            session.emit("scanning...")
            return defer.succeed(f"found 0 meters on line {args.words[0] if args.words else 1}")

        seen = []
        session = Session(self.gateway, emit=seen.append)
        result = table.run(session, "mbus scan 2")
        self.assertEqual(self.successResultOf(result), "found 0 meters on line 2")
        self.assertEqual(seen, ["scanning..."])
        self.assertEqual(table.complete(session, "mbus s"), ["scan"])
        self.assertRaises(ValueError, table.group, "mbus", "again")

    def test_extensions_are_loaded_once(self):
        """A missing extension is skipped, and the extensions are imported on the first call only."""
        imported = []
        import_module = C.importlib.import_module
        self.patch(C.importlib, "import_module", lambda name: imported.append(name) or import_module(name))
        self.patch(C, "EXTENSIONS", ("cmegw.console.does_not_exist",))
        self.patch(C, "_loaded", False)
        self.assertIs(C.commands(), COMMANDS)
        self.assertIs(C.commands(), COMMANDS)
        self.assertEqual(imported, ["cmegw.console.does_not_exist"])


class FakeClient:
    """The client end of one telnet console connection on a StringTransport."""

    def __init__(self, console: Console, echo: bool = True) -> None:
        self.transport = StringTransport()
        self.protocol = TelnetConsoleFactory(console).buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        if echo:
            self.send(IAC_DO_ECHO)

    @property
    def console(self) -> ConsoleProtocol:
        return self.protocol.protocol.terminal.terminalProtocol

    def send(self, data: bytes | str) -> None:
        """Send as a telnet client does: a CR is followed by LF (or NUL)."""
        raw = data.encode() if isinstance(data, str) else data
        self.protocol.dataReceived(re.sub(rb"\r(?![\n\x00])", b"\r\n", raw))

    def read(self) -> bytes:
        """What the server wrote since the last read, with the telnet negotiation left out."""
        out = self.transport.value()
        self.transport.clear()
        for command in (telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT):
            for option in (telnet.ECHO, telnet.SGA, telnet.NAWS):
                out = out.replace(telnet.IAC + command + option, b"")
        return out

    def text(self) -> str:
        return self.read().decode("utf-8", "replace")

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    @property
    def line(self) -> bytes:
        return b"".join(self.console.lineBuffer)


class SessionTests(TestCase):
    """The telnet session: login, echo, editing, history, completion, timers."""

    def setUp(self):
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        self.console = Console(self.gateway, self.clock)

    def connect(self, echo: bool = True) -> FakeClient:
        return FakeClient(self.console, echo)

    def login(self, echo: bool = True) -> FakeClient:
        client = self.connect(echo)
        client.send("admin\r\nadmin\r\n")
        self.assertIn("Logged in as admin", client.text())
        return client

    def test_negotiation_and_banner(self):
        transport = StringTransport()
        TelnetConsoleFactory(self.console).buildProtocol(None).makeConnection(transport)
        out = transport.value()
        self.assertIn(IAC_WILL_ECHO, out)
        self.assertIn(telnet.IAC + telnet.WILL + telnet.SGA, out)
        self.assertIn(telnet.IAC + telnet.DO + telnet.NAWS, out)
        self.assertTrue(out.endswith(b"cmegw console\r\nlogin: "))

    def test_login(self):
        client = self.connect()
        client.read()
        client.send("admin\r")
        self.assertEqual(client.text(), "admin\r\nPassword: ")
        client.send("admin\r")
        out = client.text()
        self.assertNotIn("admin", out.split("Logged in")[0], "the password is not echoed")
        self.assertTrue(out.endswith("cmegw> "))
        self.assertEqual(self.console.sessions, {client.console})

    def test_password_not_echoed_while_typed(self):
        client = self.connect()
        client.send("admin\r")
        client.read()
        client.send("adm")
        self.assertEqual(client.read(), b"")
        client.send("in\r")
        self.assertIn("Logged in", client.text())

    def test_wrong_password_is_delayed(self):
        client = self.connect()
        client.send("admin\rwrong\r")
        client.read()
        client.send("admin\radmin\r")  # typed during the delay: dropped
        self.assertEqual(client.read(), b"")
        self.clock.advance(LOGIN_FAILURE_DELAY)
        self.assertEqual(client.text(), "Login incorrect.\r\nlogin: ")
        client.send("admin\radmin\r")
        self.assertIn("Logged in as admin", client.text())

    def test_unknown_user_is_a_failure_too(self):
        client = self.connect()
        client.send("root\rroot\r")
        self.clock.advance(LOGIN_FAILURE_DELAY)
        self.assertIn("Login incorrect.", client.text())

    def test_three_failures_close(self):
        client = self.connect()
        for attempt in range(3):
            self.assertFalse(client.closed)
            client.send("admin\rwrong\r")
            self.clock.advance(LOGIN_FAILURE_DELAY)
        self.assertIn("3 failures; closing", client.text())
        self.assertTrue(client.closed)

    def test_login_timeout(self):
        """Typing does not extend the time allowed to log in."""
        client = self.connect()
        for _ in range(int(LOGIN_TIMEOUT) - 1):
            self.clock.advance(1)
            client.send("x")
        self.assertFalse(client.closed)
        self.clock.advance(1)
        self.assertTrue(client.closed)
        self.assertIn("No login within 60 seconds", client.text())

    def test_idle_timeout(self):
        client = self.login()
        timeout = self.gateway.running_config.console.idle_timeout
        self.clock.advance(timeout - 1)
        client.send("h")  # any input restarts the timer
        self.clock.advance(timeout - 1)
        self.assertFalse(client.closed)
        self.clock.advance(1)
        self.assertTrue(client.closed)
        self.assertIn(f"Idle for {timeout} seconds; closing.", client.text())

    def test_idle_timeout_follows_the_setting(self):
        client = self.login()
        client.send("set console.idle_timeout 5\r")
        self.assertIn("applied at once", client.text())
        self.clock.advance(5)
        self.assertTrue(client.closed)

    def test_idle_timeout_zero_is_never(self):
        self.gateway.store.change(apply_setting(self.gateway.store.config, "console.idle_timeout", "0"), save=False)
        client = self.login()
        self.clock.advance(7 * 86400)
        self.assertFalse(client.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_command_echo_and_reply(self):
        client = self.login()
        client.send("show auth\r")
        out = client.text()
        self.assertTrue(out.startswith("show auth\r\nAuthentication directives"), out)
        self.assertTrue(out.endswith("\r\ncmegw> "))

    def test_dumb_client(self):
        """A client that never agrees to the server's echo (nc) sends lines: no echo, no escapes."""
        client = self.connect(echo=False)
        client.read()
        client.send("admin\nadmin\nshow auth\n")
        out = client.read()
        self.assertNotIn(b"\x1b", out)
        self.assertTrue(out.startswith(b"Password: Logged in as admin"), out)
        self.assertIn(b"cmegw> Authentication directives", out)

    def test_echo_refused(self):
        client = self.connect(echo=False)
        client.send(IAC_DONT_ECHO)
        self.assertFalse(client.console.interactive)

    def test_crlf_and_cr_nul(self):
        client = self.login()
        client.send("show auth\r\n")
        client.send("show auth\r\x00")
        self.assertEqual(client.text().count("Authentication directives"), 2)

    def test_line_editing(self):
        client = self.login()
        client.send(b"shw" + LEFT + b"o")
        self.assertEqual(client.line, b"show")
        client.send(b"\x01x\x05y")  # Ctrl-A, Ctrl-E
        self.assertEqual(client.line, b"xshowy")
        client.send(b"\x7f\x01" + b"\x1b[3~")  # Backspace, Home, Delete
        self.assertEqual(client.line, b"show")
        client.send(b"\x05 authx\x08")  # Ctrl-E, Ctrl-H
        client.send(b"\r")
        self.assertIn("Authentication directives", client.text())
        client.send(b"garbage\x15")  # Ctrl-U
        self.assertEqual(client.line, b"")

    def test_history(self):
        client = self.login()
        client.send("show auth\rhelp\r")
        client.read()
        client.send(UP)
        self.assertEqual(client.line, b"help")
        client.send(UP)
        self.assertEqual(client.line, b"show auth")
        client.send(DOWN)
        self.assertEqual(client.line, b"help")
        client.send(UP + b"\r")
        self.assertIn("Authentication directives", client.text())

    def test_passwords_stay_out_of_the_history(self):
        client = self.login()
        client.send("passwd admin\rnewpass\rnewpass\r")
        self.assertIn("admin has a new password", client.text())
        self.assertEqual(client.console.historyLines, [b"passwd admin"])

    def test_question_answer_not_echoed_when_secret(self):
        client = self.login()
        client.send("passwd admin\r")
        self.assertTrue(client.text().endswith("New password for admin: "))
        client.send("topsecret")
        self.assertEqual(client.read(), b"")

    def test_tab_completes_a_command(self):
        client = self.login()
        client.send("sh\t")
        self.assertEqual(client.line, b"show ")
        client.send("st\t")
        self.assertEqual(client.line, b"show status ")

    def test_tab_completes_a_setting(self):
        client = self.login()
        client.send("set line.1.ba\t")
        self.assertEqual(client.line, b"set line.1.baud_rate ")
        client.send("30\t")
        self.assertEqual(client.line, b"set line.1.baud_rate 300 ")

    def test_tab_lists_candidates(self):
        client = self.login()
        client.read()
        client.send("s\t")
        out = client.text()
        self.assertIn("save", out)
        self.assertIn("set", out)
        self.assertIn("show", out)
        self.assertTrue(out.endswith("cmegw> s"), out)
        self.assertEqual(client.line, b"s")

    def test_tab_without_candidates_rings(self):
        client = self.login()
        client.send("frob")
        client.read()
        client.send("\t")
        self.assertEqual(client.read(), b"\x07")

    def test_ctrl_c_cancels_a_question(self):
        client = self.login()
        client.send("restart\r")
        client.send(b"\x03")
        self.assertIn("Cancelled.", client.text())
        client.send("show auth\r")
        self.assertIn("Authentication directives", client.text())

    def test_restart_closes_after_saying_so(self):
        calls = []
        self.gateway.restart = lambda: calls.append("restart")
        client = self.login()
        client.send("restart\ry\r")
        self.assertIn("Restarting; this session closes.", client.text())
        self.assertEqual(calls, ["restart"])
        self.assertTrue(client.closed)

    def test_exit_and_ctrl_d(self):
        client = self.login()
        client.send("quit\r")
        self.assertIn("Bye.", client.text())
        self.assertTrue(client.closed)
        client = self.login()
        client.send(b"\x04")
        self.assertTrue(client.closed)

    def test_long_command_and_cancel(self):
        table = CommandTable()
        running = defer.Deferred()

        @table.command("wait", "wait for something")
        def wait(session, args):
            session.emit("waiting...")
            return running

        console = Console(self.gateway, self.clock, table)
        client = FakeClient(console)
        client.send("admin\radmin\r")
        client.read()
        client.send("wait\r")
        self.assertTrue(client.text().endswith("waiting...\r\n"))
        client.send("help\r")  # ignored while the command runs
        client.send(b"\x03")
        self.assertIn("wait: cancelled.", client.text())
        client.send("wait\r")
        self.assertTrue(client.text().endswith("waiting...\r\ncmegw> "), "the session takes commands again")

    def test_command_failure_is_reported_and_logged(self):
        table = CommandTable()

        @table.command("boom", "fails")
        def boom(session, args):
            raise RuntimeError("kaput")

        client = FakeClient(Console(self.gateway, self.clock, table))
        client.send("admin\radmin\rboom\r")
        self.assertIn("boom: failed (kaput); the gateway's log has the details.", client.text())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(client.closed)

    def test_window_size(self):
        client = self.login()
        client.send(telnet.IAC + telnet.WILL + telnet.NAWS)
        client.send(telnet.IAC + telnet.SB + telnet.NAWS + b"\x00\x64\x00\x20" + telnet.IAC + telnet.SE)
        self.assertEqual((client.console.width, client.console.height), (100, 32))

    def test_close_all(self):
        clients = [self.login(), self.login()]
        self.console.close_all("Stopping.")
        for client in clients:
            self.assertTrue(client.closed)
            self.assertIn("Stopping.", client.text())


class SSHCommandTests(TestCase):
    """A single command over SSH (``ssh gateway show status``) answers as the telnet session does."""

    def setUp(self):
        try:
            from cmegw.console.ssh import ConsoleAvatar
        except ImportError as e:
            raise self.skipTest(f"twisted.conch.ssh cannot be imported here: {e}")
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        table = CommandTable()

        @table.command("later", "fails after a while")
        def later(session, args):
            return defer.fail(RuntimeError("kaput"))

        self.avatar = ConsoleAvatar(Console(self.gateway, self.clock, table), "admin")
        self.commands = ConsoleAvatar(Console(self.gateway, self.clock), "admin")

    def run_command(self, line: str, avatar=None) -> tuple[str, list]:
        transport = StringTransport()
        ended = []
        transport.processEnded = ended.append
        (avatar or self.avatar).execCommand(transport, line.encode())
        self.clock.advance(0)
        return transport.value().decode(), ended

    def exit_status(self, line: str) -> int:
        """The exit status ``ssh gw LINE`` reports, the console's commands answering."""
        out, ended = self.run_command(line, self.commands)
        self.assertEqual(len(ended), 1, out)
        return ended[0].value.exitCode

    def test_failure_is_reported_as_in_a_session(self):
        out, ended = self.run_command("later now")
        self.assertEqual(out, "later: failed (kaput); the gateway's log has the details.\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(ended), 1)
        self.assertEqual(ended[0].value.exitCode, 1)

    def test_success_exits_0(self):
        self.assertEqual(self.exit_status("show status"), 0)
        self.assertEqual(self.exit_status("set line.1.baud_rate 9600"), 0)
        self.assertEqual(self.exit_status(""), 0)

    def test_refused_command_exits_1(self):
        self.assertEqual(self.exit_status("frobnicate"), 1)  # not a command
        self.assertEqual(self.exit_status("show"), 1)  # a group needs one more word
        self.assertEqual(self.exit_status("show status extra"), 1)  # one argument too many

    def test_bad_setting_exits_1(self):
        self.assertEqual(self.exit_status("set line.1.baud_rate 12345"), 1)  # the model refuses it
        self.assertEqual(self.exit_status("set no.such.setting 1"), 1)

    def test_question_exits_1(self):
        out, ended = self.run_command("restart", self.commands)
        self.assertIn("asks a question", out)
        self.assertEqual(ended[0].value.exitCode, 1)


class RobustnessTests(TestCase):
    """Garbage and option floods neither raise nor grow without bound."""

    def setUp(self):
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        self.console = Console(self.gateway, self.clock)

    def test_random_garbage(self):
        rng = random.Random(4)
        for _ in range(20):
            client = FakeClient(self.console, echo=rng.random() < 0.5)
            for _ in range(50):
                client.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
            self.assertLessEqual(len(client.console.lineBuffer), MAX_LINE)
            client.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_option_flood(self):
        client = FakeClient(self.console)
        for _ in range(20):
            for command in (telnet.WILL, telnet.WONT, telnet.DO, telnet.DONT):
                client.send(b"".join(telnet.IAC + command + bytes([o]) for o in range(256)))
        client.send(telnet.IAC + telnet.SB + telnet.NAWS + b"\x01" + telnet.IAC + telnet.SE)  # short NAWS
        client.send(telnet.IAC + b"\x01")  # not a telnet command
        client.read()
        client.send("admin\radmin\r")
        self.assertIn("Logged in as admin", client.text())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_endless_subnegotiation_closes(self):
        client = FakeClient(self.console)
        client.send(telnet.IAC + telnet.SB + telnet.NAWS + b"x" * 100000)
        self.assertTrue(client.closed)

    def test_endless_escape_sequence(self):
        client = FakeClient(self.console)
        client.send(b"admin\radmin\r")
        for _ in range(10):
            client.send(b"\x1b[" + b"1" * 10000)
        client.send(b"\x1b[1;5Z\x1b[99~\x1b[;~\x1bOZ")
        client.read()
        client.send(b"show auth\r")
        self.assertIn("Authentication directives", client.text())

    def test_long_line_is_cut(self):
        client = FakeClient(self.console)
        client.send("admin\radmin\r")
        client.send(b"x" * (MAX_LINE * 3))
        self.assertEqual(len(client.line), MAX_LINE)
        client = FakeClient(self.console, echo=False)
        client.send(b"y" * (MAX_LINE * 3))
        self.assertEqual(len(client.line), MAX_LINE)

    def test_non_ascii_is_ignored(self):
        client = FakeClient(self.console)
        client.send("admin\radmin\r")
        client.send("show authé\r".encode())
        self.assertIn("Authentication directives", client.text())


class ServiceTests(TestCase):
    """make_console: where it listens."""

    def gateway(self, overrides: Overrides = Overrides(), **settings: str) -> GatewayService:
        gateway = make_gateway(self, overrides)
        config = gateway.store.config
        for name, value in settings.items():
            config = apply_setting(config, name.replace("__", "."), value)
        gateway.store.change(config)
        gateway.running_config = config
        return gateway

    def ports(self, gateway: GatewayService) -> list[tuple[int, str]]:
        part = make_console(gateway)
        part.startService()
        self.addCleanup(part.stopService)
        return [(port, interface) for port, factory, backlog, interface in gateway.reactor.tcpServers]

    def test_listens_on_the_configured_endpoint(self):
        gateway = self.gateway(console__listen="tcp:2424:interface=127.0.0.1")
        self.assertEqual(self.ports(gateway), [(2424, "127.0.0.1")])

    def test_command_line_wins(self):
        gateway = self.gateway(Overrides(console="tcp:2525:interface=127.0.0.1"), console__enabled="off")
        self.assertEqual(self.ports(gateway), [(2525, "127.0.0.1")])

    def test_disabled(self):
        self.assertEqual(self.ports(self.gateway(console__enabled="off")), [])

    def test_ssh(self):
        try:
            import cmegw.console.ssh  # noqa: F401
        except ImportError as e:
            raise self.skipTest(f"twisted.conch.ssh cannot be imported here: {e}")
        gateway = self.gateway(console__ssh_enabled="on", console__ssh_listen="tcp:2626:interface=127.0.0.1",
                               console__listen="tcp:2424:interface=127.0.0.1")
        self.assertEqual(sorted(self.ports(gateway)), [(2424, "127.0.0.1"), (2626, "127.0.0.1")])
        key = gateway.store.path.with_name("ssh_host_ed25519_key")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        first = key.read_bytes()
        self.ports(gateway)
        self.assertEqual(key.read_bytes(), first, "the host key is made once")

    def test_stop_closes_sessions(self):
        gateway = self.gateway()
        part = make_console(gateway)
        part.startService()
        client = FakeClient(part.console)
        part.stopService()
        self.assertTrue(client.closed)
        self.assertIn("The gateway is stopping", client.text())

    def test_registered_in_the_tap(self):
        from cmegw.tap import part_factories

        self.assertIn(make_console, part_factories())

    def test_ssh_unavailable(self):
        """Without twisted.conch.ssh (no bcrypt), telnet still listens and the log says why."""
        gateway = self.gateway(console__ssh_enabled="on", console__listen="tcp:2424:interface=127.0.0.1")
        with mock.patch.dict(sys.modules, {"cmegw.console.ssh": None}):
            self.assertEqual(self.ports(gateway), [(2424, "127.0.0.1")])
