# -*- test-case-name: tests.test_console -*-
"""
The console's commands: pure functions over the gateway.

A command reads the gateway (statistics, the running and the saved
configuration) and changes it only through the store and the service, and
answers with a `Reply`: text, optionally a `Question` to ask next (a
confirmation, a password), whether to close the session, and something to do
once the text is out (a restart).  The protocol (telnet or SSH) prompts, reads
lines and prints; it knows no command.

Other parts add their commands to `COMMANDS` (or to a group such as ``show``)
from their own module, named in `EXTENSIONS`::

    from cmegw.console.commands import COMMANDS, Reply

    mbus = COMMANDS.group("mbus", "the integrated M-Bus master: scan and read meters")

    @mbus.command("scan", "search the bus by primary address", usage="[LINE]")
    def scan(session, args):
        ...  # return a Reply (or a Deferred firing with one); session.emit() prints progress
"""

from __future__ import annotations

import importlib
import socket
import textwrap
import time
from typing import Any, Callable, Iterable, Iterator, Union

import attrs
from twisted.internet import defer
from twisted.logger import Logger

import cmegw
from cmegw.config import auth as config_auth
from cmegw.config.model import AUTH_TYPES, BAUD_RATES, AuthDirective, Config, ConfigError, User, directive_for
from cmegw.config.settings import apply_setting, format_value, get_setting, needs_restart, setting_names
from cmegw.stats import LINE_COUNTERS, TUNNEL_COUNTERS, format_duration
from cmegw.web.service import running_web

log = Logger(namespace="cmegw.console")

#: Modules that add their commands to `COMMANDS` when imported; one that does not exist is skipped.
EXTENSIONS: tuple[str, ...] = ("cmegw.console.mbus", "cmegw.console.trace_commands")

#: The URI whose directive holds the console's users.
CONSOLE_URI = "/"

YES = ("y", "yes")


class CommandError(Exception):
    """A command was given an argument it cannot take: names the command, the argument and what is allowed."""

    def __init__(self, command: str, argument: str, problem: str, allowed: str) -> None:
        self.command = command
        self.argument = argument
        self.problem = problem
        self.allowed = allowed
        shown = f"{argument!r} {problem}" if argument else problem
        super().__init__(f"{command}: {shown}; {allowed}")


@attrs.frozen
class Question:
    """Something the session asks next; `answer` gets the line typed and returns the next `Reply`."""

    prompt: str
    answer: Callable[[str], "Result"]
    #: The answer is a password: not echoed, not kept in the history.
    secret: bool = False
    #: The command that asks, named in errors about the answer.
    command: str = ""


@attrs.frozen
class Reply:
    text: str = ""
    ask: Question | None = None
    close: bool = False
    #: Called once the text has been written (a restart, which closes the session).
    after: Callable[[], Any] | None = None
    #: The text says why the command failed (``ssh gw COMMAND`` then exits with status 1).
    error: bool = False


Result = Union[Reply, str, defer.Deferred]


@attrs.define
class Session:
    """What a command sees of the session that runs it."""

    gateway: Any
    user: str = ""
    #: Prints progress while a long command runs (the reply comes at the end).
    emit: Callable[[str], None] = lambda text: None


@attrs.frozen
class Arguments:
    """The arguments of one command: `text` as typed after the command's name, and its words."""

    command: str
    text: str

    @property
    def words(self) -> list[str]:
        return self.text.split()

    def error(self, argument: str, problem: str, allowed: str) -> CommandError:
        return CommandError(self.command, argument, problem, allowed)

    def expect(self, low: int, high: int, usage: str) -> list[str]:
        """The words, checked to be between `low` and `high` in number."""
        words = self.words
        if len(words) < low:
            raise self.error(self.text, "is missing an argument", f"use {self.command} {usage}")
        if len(words) > high:
            extra = " ".join(words[high:])
            raise self.error(extra, "is one argument too many", f"use {self.command} {usage}".rstrip())
        return words


Handler = Callable[[Session, Arguments], Result]
Completer = Callable[[Session, list[str]], Iterable[str]]


@attrs.frozen
class Command:
    """
    One command: its handler, its help, and how to complete its arguments.

    A group (`subcommands` set) reads its next word as the name of one of its
    commands; `run`, when set, answers the group's name alone.
    """

    name: str
    summary: str
    usage: str = ""
    details: str | Callable[[Session], str] = ""
    run: Handler | None = None
    #: Candidates for the word being typed, given the complete words before it (after the name).
    complete: Completer | None = None
    aliases: tuple[str, ...] = ()
    subcommands: "CommandTable | None" = None

    def help(self, session: Session, path: str) -> str:
        lines = [f"{path} {self.usage}".rstrip() + f": {self.summary}"]
        details = self.details(session) if callable(self.details) else self.details
        if details:
            lines += ["", details.rstrip()]
        if self.subcommands is not None:
            lines += ["", *self.subcommands.summaries(path)]
        if self.aliases:
            lines += ["", "Also: " + ", ".join(self.aliases)]
        return "\n".join(lines)


class CommandTable:
    """Commands by name; a word may be shortened while it stays unambiguous (``sh st``)."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._aliases: dict[str, str] = {}

    def add(self, command: Command) -> Command:
        for name in (command.name, *command.aliases):
            if name in self._commands or name in self._aliases:
                raise ValueError(f"the console command {name!r} exists already")
        self._commands[command.name] = command
        for alias in command.aliases:
            self._aliases[alias] = command.name
        return command

    def command(self, name: str, summary: str, usage: str = "", *, aliases: tuple[str, ...] = (),
                complete: Completer | None = None,
                details: str | Callable[[Session], str] | None = None) -> Callable[[Handler], Handler]:
        """Register the decorated handler; its docstring is the help text unless `details` is given."""

        def register(handler: Handler) -> Handler:
            text = details if details is not None else textwrap.dedent(handler.__doc__ or "").strip()
            self.add(Command(name, summary, usage, text, handler, complete, aliases))
            return handler

        return register

    def group(self, name: str, summary: str, usage: str = "", *, run: Handler | None = None,
              details: str = "") -> "CommandTable":
        """Add a group of commands (``show status``, ``mbus scan``) and return its table to add to."""
        table = CommandTable()
        self.add(Command(name, summary, usage, details, run, None, (), table))
        return table

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def names(self) -> list[str]:
        return list(self._commands) + list(self._aliases)

    def find(self, word: str) -> Command | None:
        """The command a word names, exactly, as an alias, or as an unambiguous beginning."""
        name = self._aliases.get(word, word)
        if name in self._commands:
            return self._commands[name]
        found = {self._commands[self._aliases.get(n, n)].name for n in self.names() if n.startswith(word)}
        return self._commands[found.pop()] if len(found) == 1 else None

    def summaries(self, prefix: str = "") -> list[str]:
        rows = [((f"{prefix} " if prefix else "") + f"{c.name} {c.usage}".rstrip(), c.summary) for c in self]
        return table_lines(rows, indent=2)

    def resolve(self, path: str, words: list[str]) -> tuple[Command, str, list[str]]:
        """The command named by the first words, its full name, and the words left for it."""
        if not words:
            raise CommandError(path or "(command)", "", "is empty", "use one of " + ", ".join(self._commands))
        word, rest = words[0], words[1:]
        command = self.find(word)
        if command is None:
            candidates = [n for n in self.names() if n.startswith(word)]
            where = f"{path}: " if path else ""
            if len(candidates) > 1:
                raise CommandError(path or word, word, "is ambiguous",
                                   f"{where}use one of {', '.join(sorted(candidates))}")
            if path:
                raise CommandError(path, word, "is unknown", "use one of " + ", ".join(self._commands))
            raise CommandError(word, word, "is not a command",
                               "use one of " + ", ".join(self._commands) + " ('help' explains each)")
        full = f"{path} {command.name}".strip()
        if command.subcommands is not None and rest:
            return command.subcommands.resolve(full, rest)
        return command, full, rest

    def run(self, session: Session, line: str) -> Result:
        """Run one command line; errors come back as the reply's text."""
        words = line.split()
        if not words:
            return Reply()
        full = words[0]
        try:
            command, full, rest = self.resolve("", words)
            text = _after_words(line, len(words) - len(rest))
            if command.run is None:
                assert command.subcommands is not None
                raise CommandError(full, "", "needs one more word",
                                   "use one of " + ", ".join(c.name for c in command.subcommands))
            return command.run(session, Arguments(full, text))
        except CommandError as e:
            return Reply(str(e), error=True)
        except ConfigError as e:  # the configuration model's own message, as the web page shows it
            return Reply(f"{full}: {e}", error=True)

    def complete(self, session: Session, text: str) -> list[str]:
        """The candidates for the last word of `text` (the line up to the cursor)."""
        words = text.split()
        partial = "" if (not words or text[-1:].isspace()) else words.pop()
        table: CommandTable | None = self
        command: Command | None = None
        args: list[str] = []
        for i, word in enumerate(words):
            if table is None:
                args = words[i:]
                break
            command = table.find(word)
            if command is None:
                return []
            table = command.subcommands
        if table is not None and not args:
            candidates: Iterable[str] = [c.name for c in table]
            if command is not None and command.complete is not None:
                candidates = [*candidates, *command.complete(session, [])]
        elif command is not None and command.complete is not None:
            candidates = command.complete(session, args)
        else:
            return []
        return sorted({c for c in candidates if c.startswith(partial)})


def _after_words(line: str, count: int) -> str:
    """The text of `line` after its first `count` words, spacing kept."""
    rest = line.lstrip()
    for _ in range(count):
        word = rest.split(None, 1)[0]
        rest = rest[len(word):].lstrip()
    return rest


def table_lines(rows: Iterable[tuple[str, str]], indent: int = 2) -> list[str]:
    """Two aligned columns."""
    rows = list(rows)
    width = max((len(label) for label, _ in rows), default=0)
    return [(" " * indent + f"{label:<{width}}  {value}").rstrip() for label, value in rows]


def columns(header: tuple[str, ...], rows: Iterable[tuple[str, ...]], indent: int = 2) -> list[str]:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return [(" " * indent + "  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[-1]).rstrip()
            for r in rows]


def _count(value: int | None) -> str:
    return "unavailable" if value is None else str(value)


def _on(value: bool) -> str:
    return "on" if value else "off"


def number_argument(args: Arguments, word: str, table: dict[int, Any], what: str) -> int:
    """The number `word` names in `table` (a line, a tunnel); else an error listing the numbers there are."""
    available = ", ".join(str(n) for n in table) or "none"
    if not word.isdigit() or int(word) not in table:
        raise args.error(word, f"is not a {what}", f"{what}s: {available}")
    return int(word)


# -- the commands --------------------------------------------------------------------

COMMANDS = CommandTable()


def _command_names(session: Session, words: list[str]) -> list[str]:
    table: CommandTable | None = COMMANDS
    for word in words:
        command = table.find(word) if table is not None else None
        if command is None:
            return []
        table = command.subcommands
    return [c.name for c in table] if table is not None else []


@COMMANDS.command("help", "explain the commands, or one of them", "[COMMAND]", aliases=("?",),
                  complete=_command_names)
def help_command(session: Session, args: Arguments) -> Result:
    words = args.words
    if not words:
        return "\n".join(["Commands:", *COMMANDS.summaries(),
                          "", "'help COMMAND' explains one; Tab completes commands and setting names,",
                          "the arrow keys recall earlier lines."])
    try:
        command, full, rest = COMMANDS.resolve("", words)
    except CommandError as e:
        raise args.error(" ".join(words), "is not a command", e.allowed) from None
    return command.help(session, full)


# show ------------------------------------------------------------------------

SHOW = COMMANDS.group("show", "show a page of the web administration", "PAGE",
                      details="Each page shows what the web page of the same name shows.")


def _identity_rows(gateway: Any) -> list[tuple[str, str]]:
    config: Config = gateway.running_config
    return [
        ("Product type", config.identity.product_type),
        ("Software version", cmegw.__version__),
        ("Serial number", config.identity.serial_number or "(none)"),
        ("Uptime", format_duration(gateway.uptime())),
    ]


def _tunnel_state(gateway: Any, n: int) -> str:
    stats = gateway.tunnel_stats.get(n)
    if stats is None:
        return "not running"
    text = stats.state
    if stats.peer:
        text += f" ({stats.peer})"
    if stats.listening:
        text += f", listening on {stats.listening}"
    if stats.error:
        text += f": {stats.error}"
    return text


def _connect_state(gateway: Any, n: int) -> str:
    """Tunnel `n`'s connect mode: disabled / connecting to X / connected to X / waiting N s before retry."""
    connect = getattr(gateway, "connect_stats", {}).get(n)
    return connect.text(gateway.reactor.seconds()) if connect is not None else "disabled"


def _line_state(gateway: Any, n: int) -> str:
    stats = gateway.line_stats.get(n)
    if stats is None:
        return "not running"
    text = f"{stats.state} {stats.device}".rstrip()
    if stats.error:
        text += f": {stats.error}"
    return text


@SHOW.command("status", "identity, uptime, saved flag, lines, tunnels, indications")
def show_status(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    gateway = session.gateway
    config: Config = gateway.running_config
    store = gateway.store
    saved = "no: 'save' keeps the changes" if store.unsaved else "yes"
    rows = _identity_rows(gateway) + [("Configuration saved", saved)]
    pending = gateway.pending_restart()
    if pending:
        rows.append(("Waiting for a restart", ", ".join(pending)))
    problem = gateway.status.config_problem or store.problem
    lines = ["Status", *table_lines(rows)]
    if problem:
        lines += ["", f"  CONFIGURATION PROBLEM: {problem}"]
    network = config.network
    source = "DHCP" if network.dhcp else "BOOTP" if network.bootp else "static"
    address = "from " + source if not network.static else f"{network.ip_address or '(none)'} {network.netmask}"
    lines += ["", "Network", *table_lines([("Host name", network.hostname or socket.gethostname()),
                                           ("IP address", address.strip())])]
    lines += ["", "Lines", *table_lines(
        (f"Line {n}", f"{line.settings_text}; {_line_state(gateway, n)}") for n, line in config.lines.items())]
    tunnel_rows = []
    for n, tunnel in config.tunnels.items():
        accept = _tunnel_state(gateway, n) if tunnel.enabled else "disabled"
        tunnel_rows.append((f"Tunnel {n}", f"connect mode: {_connect_state(gateway, n)}; accept mode: {accept}"))
    lines += ["", "Tunnels", *table_lines(tunnel_rows)]
    indications = gateway.indications()
    lines += ["", "Indications", "  " + "  ".join(f"{name} {_on(state)}" for name, state in indications.items())]
    return "\n".join(lines)


def _two_columns(current: Any, after: Any, fields: Iterable[str]) -> list[str]:
    rows = []
    for name in fields:
        now, later = format_value(getattr(current, name)), format_value(getattr(after, name))
        rows.append((name, now or '""', later or '""'))
    return columns(("setting", "current", "after restart"), rows)


def _after_restart(gateway: Any) -> Config:
    """What the gateway runs after a restart: the saved settings with this run's command-line values."""
    return gateway.overrides.apply(gateway.store.config)


@SHOW.command("network", "the network settings, current and after restart")
def show_network(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    gateway = session.gateway
    current, after = gateway.running_config.network, _after_restart(gateway).network
    fields = [f.name for f in attrs.fields(type(current))]
    lines = ["Network interface", *_two_columns(current, after, fields), ""]
    if not after.static:
        lines.append("  With DHCP or BOOTP on, the static address, mask, gateway, host name and domain are ignored.")
    lines.append(f"  The host ({socket.gethostname()}) owns its network; "
                 + (f"these settings are applied to it at every restart (backend {current.backend}, interface "
                    f"{current.interface or 'of the default route'})." if current.apply_to_host
                    else "these settings are stored, not applied to it (network.apply_to_host)."))
    last = getattr(getattr(gateway, "netapply", None), "last", None)
    if last is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.at))
        lines.append(f"  Last {last.action} ({when}): {last.message}")
        lines.extend("    " + line for line in last.details())
    elif current.apply_to_host:
        lines.append("  Not applied yet.")
    return "\n".join(lines)


def _tunnels(session: Session, words: list[str]) -> list[str]:
    return [str(n) for n in session.gateway.running_config.tunnels] if not words else []


def line_numbers(session: Session, words: list[str]) -> list[str]:
    """Completes a line's number (the first argument)."""
    return [str(n) for n in session.gateway.running_config.lines] if not words else []


def _pages(args: Arguments, table: dict[int, Any], what: str, page: Callable[[int], list[str]]) -> str:
    """The page of the numbered part named (``show tunnel 2``), or of every one, a blank line between."""
    words = args.expect(0, 1, "[N]")
    numbers = [number_argument(args, words[0], table, what)] if words else list(table)
    return "\n\n".join("\n".join(page(n)) for n in numbers)


def _tunnel_page(gateway: Any, n: int) -> list[str]:
    tunnel = gateway.running_config.tunnels[n]
    stats = gateway.tunnel_stats.get(n)
    lines = [f"Tunnel {n} (line {n})"]
    if stats is None:
        lines.append("  not running")
    else:
        now = gateway.reactor.seconds()
        rows = [(label, str(getattr(stats, name))) for label, name in TUNNEL_COUNTERS]
        rows.append(("Accept connection time", format_duration(stats.accept_connection_time(now))))
        rows += [(f"Connect {i} connection time", format_duration(t))
                 for i, t in enumerate(stats.connect_times, 1)]
        lines += ["  Statistics", *table_lines(rows, 4)]
    lines += ["  Accept mode", *table_lines([
        ("State", _tunnel_state(gateway, n) if tunnel.enabled else "disabled"),
        ("Listening endpoint", gateway.overrides.tunnel if n == 1 and gateway.overrides.tunnel
         else tunnel.listen),
        ("TCP keep-alive", f"{tunnel.keepalive} s" if tunnel.keepalive else "off"),
        ("Second client", tunnel.on_busy),
        ("Allowed clients", ", ".join(tunnel.allow_list) or "anyone"),
        ("TLS", ("on, client certificates from " + tunnel.tls_client_ca if tunnel.tls_client_ca else "on")
         if tunnel.tls else "off"),
        ("RFC 2217", "on" if tunnel.rfc2217 else "off"),
    ], 4)]
    access = getattr(getattr(gateway, "tunnels", {}).get(n), "access", None)
    if access is not None and (access.refused_by_allow_list or access.tls_refused):
        lines += table_lines([
            ("Refused by the allow-list", str(access.refused_by_allow_list)),
            ("Refused TLS clients", str(access.tls_refused)),
            ("Last refused", access.last_refused),
        ], 4)
    connect = getattr(gateway, "connect_stats", {}).get(n)
    rows = [("State", _connect_state(gateway, n)), ("Connect", tunnel.connect_mode)]
    rows += [(f"Host {i}", host) for i, host in enumerate(tunnel.connect_hosts, 1)]
    if tunnel.connect_hosts:
        rows += [
            ("Host list", tunnel.connect_host_list),
            ("Retry wait", f"{tunnel.connect_backoff_min} s doubling up to {tunnel.connect_backoff_max} s"),
            ("Trusted CA (tls:)", tunnel.connect_tls_ca or "the system's trust store"),
            ("Client certificate", tunnel.connect_tls_certificate or "none"),
        ]
    if connect is not None and connect.last_error:
        rows.append(("Last failure", connect.last_error))
    if connect is not None and connect.tls_failures:
        rows.append(("Failed TLS handshakes", str(connect.tls_failures)))
    lines += ["  Connect mode", *table_lines(rows, 4)]
    lines += ["  Disconnect mode", *table_lines([
        ("Disconnect timeout", f"{tunnel.disconnect_timeout} s" if tunnel.disconnect_timeout else "never"),
    ], 4)]
    return lines


@SHOW.command("tunnel", "the M-Bus TCP/IP page: statistics, accept and disconnect mode", "[N]",
              complete=_tunnels)
def show_tunnel(session: Session, args: Arguments) -> Result:
    gateway = session.gateway
    return _pages(args, gateway.running_config.tunnels, "tunnel", lambda n: _tunnel_page(gateway, n))


def _line_page(gateway: Any, n: int) -> list[str]:
    line = gateway.running_config.lines[n]
    stats = gateway.line_stats.get(n)
    lines = [f"Line {n}: {line.settings_text}"]
    if stats is None:
        lines.append("  not running")
    else:
        lines += ["  Statistics", *table_lines([
            ("State", _line_state(gateway, n)),
            *[(label, _count(getattr(stats, name))) for label, name in LINE_COUNTERS],
            ("Reopen attempts", str(stats.reopen_attempts)),
        ], 4)]
    lines += ["  Configuration", *table_lines([
        ("Device", "simulated M-Bus" if line.simulate else line.device),
        ("Baud rate", f"{line.baud_rate} (set line.{n}.baud_rate; applies at once)"),
    ], 4)]
    return lines


@SHOW.command("line", "the M-Bus Serial page: statistics and baud rate", "[N]", complete=line_numbers)
def show_line(session: Session, args: Arguments) -> Result:
    gateway = session.gateway
    return _pages(args, gateway.running_config.lines, "line", lambda n: _line_page(gateway, n))


@SHOW.command("http", "the HTTP page: configuration and statistics")
def show_http(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    gateway = session.gateway
    current, after = gateway.running_config.http, _after_restart(gateway).http
    fields = [f.name for f in attrs.fields(type(current))]
    lines = ["HTTP configuration", *_two_columns(current, after, fields)]
    if gateway.overrides.http or gateway.overrides.https:
        lines.append("  The command line sets the listeners for this run: "
                     + ", ".join(x for x in (gateway.overrides.http, gateway.overrides.https) if x))
    state = running_web(gateway)
    lines += ["", "HTTP statistics"]
    if state is None:
        lines.append("  not available: the web administration is not running in this gateway")
        return "\n".join(lines)
    counters = {k: v for k, v in state.stats.as_dict().items() if isinstance(v, int)}
    lines += table_lines((_HTTP_LABELS.get(k, k.replace("status_", "responses ").replace("_", " ")), str(v))
                         for k, v in counters.items())
    log_ = state.access_log
    lines += ["", "HTTP log", *table_lines([("Entries", str(len(log_.entries))), ("Bytes", str(log_.bytes))])]
    listening = getattr(state, "listening", None)
    if listening:
        lines += ["", "Listening", *table_lines((k.upper(), str(v)) for k, v in listening.items())]
    return "\n".join(lines)


_HTTP_LABELS = {"rx_bytes": "Rx bytes", "tx_bytes": "Tx bytes", "status_unknown": "Status unknown"}


@SHOW.command("auth", "the authentication directives and their users (never a password)")
def show_auth(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    config: Config = session.gateway.store.config
    rows = [(d.uri, d.realm, d.auth_type, ", ".join(u.name for u in d.users) or "(none)") for d in config.auth]
    if not rows:
        return "Authentication: no directive; every page is open."
    return "\n".join(["Authentication directives (the longest matching URI decides)",
                      *columns(("URI", "realm", "AuthType", "users"), rows),
                      "", f"The console logs in with the users of {CONSOLE_URI}."])


@SHOW.command("log", "the HTTP access log", "[COUNT]")
def show_log(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 1, "[COUNT]")
    count = None
    if words:
        if not words[0].isdigit() or int(words[0]) < 1:
            raise args.error(words[0], "is not a count", "use a whole number of entries, 1 or more")
        count = int(words[0])
    state = running_web(session.gateway)
    if state is None:
        return "The HTTP access log is not available: the web administration is not running in this gateway."
    entries = [str(e) for e in state.access_log.entries]
    if count is not None:
        entries = entries[-count:]
    return "\n".join(entries) if entries else "The HTTP access log is empty."


def _setting_candidates(session: Session, words: list[str]) -> list[str]:
    return list(setting_names(session.gateway.store.config)) if not words else []


@SHOW.command("settings", "every setting: current value and value after restart", "[PREFIX]",
              complete=_setting_candidates)
def show_settings(session: Session, args: Arguments) -> Result:
    words = args.expect(0, 1, "[PREFIX]")
    prefix = words[0] if words else ""
    gateway = session.gateway
    current, after, saved = gateway.running_config, _after_restart(gateway), gateway.store.config
    rows = []
    notes = []
    for name in setting_names(after):
        if not name.startswith(prefix):
            continue
        now = format_value(get_setting(current, name)) if _has(current, name) else "(not running)"
        later = format_value(get_setting(after, name))
        rows.append((name, now or '""', later or '""'))
        if get_setting(saved, name) != get_setting(after, name):
            notes.append(f"  {name}: the command line sets it for this run; the file holds "
                         f"{format_value(get_setting(saved, name))!r}")
    if not rows:
        raise args.error(prefix, "matches no setting", "use the beginning of a name, such as line.1 or http")
    lines = columns(("setting", "current", "after restart"), rows)
    if notes:
        lines += ["", *notes]
    if gateway.store.unsaved:
        lines += ["", "  Not saved yet: 'save' keeps the changes; a restart without saving drops them."]
    return "\n".join(lines)


def _has(config: Config, name: str) -> bool:
    try:
        get_setting(config, name)
        return True
    except ConfigError:
        return False


# set, save, restart, factory defaults ------------------------------------------------

def _set_candidates(session: Session, words: list[str]) -> list[str]:
    config = session.gateway.store.config
    if not words:
        return list(setting_names(config))
    if len(words) == 1 and _has(config, words[0]):
        value = get_setting(config, words[0])
        if isinstance(value, bool):
            return ["on", "off"]
        if words[0].endswith(".baud_rate"):
            return [str(b) for b in BAUD_RATES]
    return []


def _set_details(session: Session) -> str:
    config = session.gateway.store.config
    rows = [(name, format_value(get_setting(config, name)) + ("  (after restart)" if needs_restart(name) else ""))
            for name in setting_names(config)]
    return "\n".join([
        "Changes one setting of the web pages, checked as the web page checks it.",
        "The value is the rest of the line as typed; \"\" sets an empty value.",
        "Booleans take on/off; lists (http.tls_versions) take commas.",
        "The change is not saved: 'save' keeps it, a restart without saving drops it.",
        "", "Settings (value; those marked apply after a restart):", *table_lines(rows)])


def change(session: Session, new: Config) -> None:
    """Make `new` the configuration, applied at once where it can be, not saved."""
    session.gateway.store.change(new, save=False)


@COMMANDS.command("set", "change a setting (not saved until 'save')", "NAME VALUE", complete=_set_candidates,
                  details=_set_details)
def set_command(session: Session, args: Arguments) -> Result:
    words = args.words
    if len(words) < 2:
        raise args.error(args.text, "is missing " + ("the value" if words else "the setting's name"),
                         "use set NAME VALUE ('help set' lists the names)")
    name = words[0]
    value = _after_words(args.text, 1).strip()
    if value in ('""', "''"):
        value = ""
    new = apply_setting(session.gateway.store.config, name, value)
    change(session, new)
    shown = format_value(get_setting(new, name)) or '""'
    when = "takes effect after a restart" if needs_restart(name) else "applied at once"
    return f"{name} = {shown}: {when}; not saved ('save' keeps it)."


@COMMANDS.command("save", "save the configuration to the file")
def save_command(session: Session, args: Arguments) -> Result:
    """Writes the configuration (comments in the file are kept); it is what a restart loads."""
    args.expect(0, 0, "")
    gateway = session.gateway
    gateway.store.save()
    text = f"Saved to {gateway.store.path}."
    pending = gateway.pending_restart()
    if pending:
        text += "\nThese take effect after a restart ('restart'): " + ", ".join(pending)
    return text


@COMMANDS.command("restart", "restart the gateway (asks first)")
def restart_command(session: Session, args: Arguments) -> Result:
    """Stops every part, loads the saved configuration and starts again; this session closes."""
    args.expect(0, 0, "")
    gateway = session.gateway
    warning = "Unsaved changes are lost ('save' first keeps them). " if gateway.store.unsaved else ""

    def answer(text: str) -> Result:
        if text.strip().lower() not in YES:
            return "Not restarted."
        return Reply("Restarting; this session closes. Log in again in a few seconds.", close=True,
                     after=gateway.restart)

    return Reply(ask=Question(f"{warning}Restart the gateway now? [y/N] ", answer, command="restart"))


@COMMANDS.command("factory-defaults", "reset every setting to the factory defaults and restart (asks first)")
def factory_defaults_command(session: Session, args: Arguments) -> Result:
    """
    Writes the factory defaults (the serial number is kept; users go back to
    admin/admin) and restarts; this session closes.
    """
    args.expect(0, 0, "")
    gateway = session.gateway

    def answer(text: str) -> Result:
        if text.strip().lower() not in YES:
            return "Nothing changed."
        return Reply("Restoring the factory defaults and restarting; this session closes.", close=True,
                     after=gateway.factory_reset)

    return Reply(ask=Question("Reset EVERY setting to the factory defaults (users: admin/admin) and restart? "
                              "[y/N] ", answer, command="factory-defaults"))


# authentication ------------------------------------------------------------------------

def _directive(args: Arguments, config: Config, uri: str) -> AuthDirective:
    for d in config.auth:
        if d.uri == uri:
            return d
    raise args.error(uri, "has no directive", "directives: " + (", ".join(d.uri for d in config.auth) or "none"))


def _ask_password(command: str, prompt_name: str, done: Callable[[str], Result]) -> Reply:
    def first(password: str) -> Result:
        def second(again: str) -> Result:
            if again != password:
                return f"{command}: the passwords differ; nothing changed."
            return done(password)

        return Reply(ask=Question("Retype the password: ", second, secret=True, command=command))

    return Reply(ask=Question(f"New password for {prompt_name}: ", first, secret=True, command=command))


def _set_password(session: Session, command: str, uri: str, name: str, password: str, add: bool) -> Result:
    change(session, config_auth.add_user(session.gateway.store.config, uri, name, password))
    verb = "added to" if add else "has a new password for"
    return f"{name} {verb} {uri}: applied at once; not saved ('save' keeps it)."


def _console_users(session: Session, words: list[str]) -> list[str]:
    directive = directive_for(session.gateway.store.config.auth, CONSOLE_URI)
    return [u.name for u in directive.users] if directive is not None and not words else []


@COMMANDS.command("passwd", "change the password of a user of /", "USER", complete=_console_users)
def passwd_command(session: Session, args: Arguments) -> Result:
    """Asks for the new password twice; the web and the console use it at once."""
    (name,) = args.expect(1, 1, "USER")
    config: Config = session.gateway.store.config
    directive = directive_for(config.auth, CONSOLE_URI)
    names = [u.name for u in directive.users] if directive is not None else []
    if name not in names:
        raise args.error(name, f"is not a user of {CONSOLE_URI}", "users: " + (", ".join(names) or "none"))
    assert directive is not None
    return _ask_password("passwd", name, lambda pw: _set_password(session, "passwd", directive.uri, name, pw, False))


AUTH = COMMANDS.group("auth", "add and remove authentication directives and their users", "ACTION",
                      details="The HTTP > Authentication page: 'show auth' lists the directives.")


def _uris(session: Session, words: list[str]) -> list[str]:
    return [d.uri for d in session.gateway.store.config.auth] if not words else []


def _uri_then_user(session: Session, words: list[str]) -> list[str]:
    if not words:
        return _uris(session, words)
    if len(words) == 1:
        directive = next((d for d in session.gateway.store.config.auth if d.uri == words[0]), None)
        return [u.name for u in directive.users] if directive is not None else []
    return []


def _uri_then_type(session: Session, words: list[str]) -> list[str]:
    return _uris(session, words) if not words else list(AUTH_TYPES) if len(words) == 1 else []


@AUTH.command("add", "add a directive", "URI AUTHTYPE [REALM]",
              complete=lambda s, w: list(AUTH_TYPES) if len(w) == 1 else [])
def auth_add(session: Session, args: Arguments) -> Result:
    """AUTHTYPE: None, Basic, Digest, SSL, SSL/Basic, SSL/Digest; REALM defaults to config."""
    words = args.expect(2, 3, "URI AUTHTYPE [REALM]")
    config: Config = session.gateway.store.config
    if any(d.uri == words[0] for d in config.auth):
        raise args.error(words[0], "has a directive already", "change it with 'auth type', or remove it first")
    realm = words[2] if len(words) > 2 else "config"
    change(session, config_auth.add_directive(config, words[0], realm, words[1]))
    return f"Directive {words[0]} added ({words[1]}, realm {realm}); not saved."


@AUTH.command("remove", "remove a directive and its users", "URI", complete=_uris)
def auth_remove(session: Session, args: Arguments) -> Result:
    (uri,) = args.expect(1, 1, "URI")
    config: Config = session.gateway.store.config
    _directive(args, config, uri)
    change(session, config_auth.delete_directive(config, uri))
    return f"Directive {uri} removed; not saved."


@AUTH.command("type", "change the AuthType of a directive", "URI AUTHTYPE", complete=_uri_then_type)
def auth_type(session: Session, args: Arguments) -> Result:
    uri, kind = args.expect(2, 2, "URI AUTHTYPE")
    config: Config = session.gateway.store.config
    _directive(args, config, uri)
    change(session, config_auth.set_auth_type(config, uri, kind))
    return f"Directive {uri}: AuthType {kind}, applied at once; not saved."


@AUTH.command("user-add", "add a user to a directive (asks for the password)", "URI NAME", complete=_uris)
def auth_user_add(session: Session, args: Arguments) -> Result:
    uri, name = args.expect(2, 2, "URI NAME")
    directive = _directive(args, session.gateway.store.config, uri)
    if any(u.name == name for u in directive.users):
        raise args.error(name, f"is a user of {uri} already", "use passwd or auth user-password to change it")
    User(name=name, ha1_md5="0" * 32, ha1_sha256="0" * 64)  # checks the name before asking the password
    return _ask_password(args.command, name, lambda pw: _set_password(session, args.command, uri, name, pw, True))


@AUTH.command("user-password", "change the password of a user of a directive", "URI NAME",
              complete=_uri_then_user)
def auth_user_password(session: Session, args: Arguments) -> Result:
    uri, name = args.expect(2, 2, "URI NAME")
    directive = _directive(args, session.gateway.store.config, uri)
    if not any(u.name == name for u in directive.users):
        raise args.error(name, f"is not a user of {uri}", "users: " + (", ".join(u.name for u in directive.users)
                                                                     or "none"))
    return _ask_password(args.command, name, lambda pw: _set_password(session, args.command, uri, name, pw, False))


@AUTH.command("user-remove", "remove a user from a directive", "URI NAME", complete=_uri_then_user)
def auth_user_remove(session: Session, args: Arguments) -> Result:
    uri, name = args.expect(2, 2, "URI NAME")
    config: Config = session.gateway.store.config
    directive = _directive(args, config, uri)
    names = [u.name for u in directive.users]
    if name not in names:
        raise args.error(name, f"is not a user of {uri}", "users: " + (", ".join(names) or "none"))
    change(session, config_auth.delete_user(config, uri, name))
    return f"{name} removed from {uri}; not saved."


CLEAR = COMMANDS.group("clear", "clear a log", "WHAT")


@CLEAR.command("log", "clear the HTTP access log (as its page's Clear button)")
def clear_log(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    state = running_web(session.gateway)
    if state is None:
        return "There is no HTTP access log: the web administration is not running in this gateway."
    state.access_log.clear()
    return "The HTTP access log is cleared."


@COMMANDS.command("exit", "end this session", aliases=("quit", "logout"))
def exit_command(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    return Reply("Bye.", close=True)


# -- extensions ------------------------------------------------------------------------------

_loaded = False


def commands() -> CommandTable:
    """The command table, with the commands of `EXTENSIONS` added on first use."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in EXTENSIONS:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name:
                    raise
    return COMMANDS
