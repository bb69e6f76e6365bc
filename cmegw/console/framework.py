# -*- test-case-name: tests.test_console_framework -*-
"""
The console's command framework: the command table, replies and questions,
arguments and their errors, help, and the aligned text the commands print.

A command reads the gateway (statistics, the running and the saved
configuration) and changes it only through the store and the service, and
answers with a `Reply`: text, optionally a `Question` to ask next (a
confirmation, a password), whether to close the session, and something to do
once the text is out (a restart).  The protocol (telnet or SSH) prompts, reads
lines and prints; it knows no command.

The built-in commands are in one module per group (`config_commands`,
`status_commands`, `system_commands`), put together by `cmegw.console.commands`.
Other parts add their commands to `COMMANDS` (or to a group such as ``show``)
from their own module, named in `cmegw.console.commands.EXTENSIONS`::

    from cmegw.console.framework import COMMANDS, Reply

    mbus = COMMANDS.group("mbus", "the integrated M-Bus master: scan and read meters")

    @mbus.command("scan", "search the bus by primary address", usage="[LINE]")
    def scan(session, args):
        ...  # return a Reply (or a Deferred firing with one); session.emit() prints progress
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Iterable, Iterator, Union

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.config.model import ConfigError
from cmegw.config.settings import labelled

log = Logger(namespace="cmegw.console")

#: The URI whose directive holds the console's users.
CONSOLE_URI = "/"


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
    #: ``help COMMAND WORDS...``: the help about those words (``help set line.1.baud_rate``).
    topic: Callable[[Session, list[str]], str] | None = None

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
        #: What answers a word that names none of the commands (`otherwise`).
        self._otherwise: Command | None = None

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
                details: str | Callable[[Session], str] | None = None,
                topic: Callable[[Session, list[str]], str] | None = None) -> Callable[[Handler], Handler]:
        """Register the decorated handler; its docstring is the help text unless `details` is given."""

        def register(handler: Handler) -> Handler:
            text = details if details is not None else textwrap.dedent(handler.__doc__ or "").strip()
            self.add(Command(name, summary, usage, text, handler, complete, aliases, topic=topic))
            return handler

        return register

    def otherwise(self, usage: str, summary: str) -> Callable[[Handler], Handler]:
        """Register the handler of a word that is none of this group's commands (``show tunnel.1``)."""

        def register(handler: Handler) -> Handler:
            if self._otherwise is not None:
                raise ValueError(f"the console group has a handler for other words already: {usage}")
            self._otherwise = Command(usage, summary, "", "", handler)
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
        commands = [*self, *([self._otherwise] if self._otherwise is not None else [])]
        rows = [((f"{prefix} " if prefix else "") + f"{c.name} {c.usage}".rstrip(), c.summary) for c in commands]
        return table_lines(rows, indent=2)

    def resolve(self, path: str, words: list[str]) -> tuple[Command, str, list[str]]:
        """The command named by the first words, its full name, and the words left for it."""
        if not words:
            raise CommandError(path or "(command)", "", "is empty", "use one of " + ", ".join(self._commands))
        word, rest = words[0], words[1:]
        command = self.find(word)
        if command is None and path and self._otherwise is not None:
            return self._otherwise, path, words
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
            return Reply(f"{full}: {labelled(e)}", error=True)

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


def number_argument(args: Arguments, word: str, table: dict[int, Any], what: str) -> int:
    """The number `word` names in `table` (a line, a tunnel); else an error listing the numbers there are."""
    available = ", ".join(str(n) for n in table) or "none"
    if not word.isdigit() or int(word) not in table:
        raise args.error(word, f"is not a {what}", f"{what}s: {available}")
    return int(word)


def line_numbers(session: Session, words: list[str]) -> list[str]:
    """Completes a line's number (the first argument)."""
    return [str(n) for n in session.gateway.state.config.lines] if not words else []


def error_reply(command: str, failure: Failure) -> Reply:
    """What a session (telnet, SSH shell or SSH command) answers when `command` fails."""
    if failure.check(CommandError):
        return Reply(str(failure.value), error=True)
    if failure.check(ConfigError):
        return Reply(f"{command}: {failure.value}", error=True)
    if failure.check(defer.CancelledError):
        return Reply(f"{command}: cancelled.", error=True)
    log.failure("Console: {command} failed", failure, command=command)
    return Reply(f"{command}: failed ({failure.getErrorMessage() or failure.type.__name__}); "
                 "the gateway's log has the details.", error=True)


def run_after(reply: Reply) -> None:
    """Start what the reply does once its text is out (a restart); a failure is logged."""
    d = defer.maybeDeferred(reply.after)
    d.addErrback(lambda f: log.failure("Console: the command's action failed", f))


# -- the table, and help -----------------------------------------------------------------

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
    if rest and command.topic is not None:
        return command.topic(session, rest)
    return command.help(session, full)

