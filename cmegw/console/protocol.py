# -*- test-case-name: tests.test_console_protocol -*-
"""
The console session: line editing, history, completion, running commands.

`ConsoleProtocol` is an insults terminal protocol (`HistoricRecvLine`): the
same class runs behind telnet (`TelnetConsoleFactory`) and behind SSH
(`cmegw.console.ssh`).  It reads lines and hands them to the command table;
it knows no command.  The login and the timers are in `cmegw.console.login`,
the telnet layer in `cmegw.console.telnet`.

Two kinds of client are served:

- a terminal (telnet that agrees to let the server echo, SSH with a pty):
  the server echoes, so it edits the line (arrows, Home/End, Ctrl-A/E/U),
  recalls history (Up/Down) and completes with Tab;
- a dumb client (``nc``, a script) that sends whole lines and echoes locally:
  nothing is echoed and no terminal control sequence is sent.
"""

from __future__ import annotations

from typing import Any

from twisted.conch import recvline
from twisted.conch.insults import insults
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from cmegw.config.model import directive_for
from cmegw.console.commands import commands
from cmegw.console.framework import CONSOLE_URI, CommandTable, Question, Reply, Result, Session, error_reply, run_after
from cmegw.console.login import BUSY, CLOSED, COMMAND, LOGIN_NAME, LOGIN_PASSWORD, LOGIN_WAIT, QUESTION, LoginMixin

log = Logger(namespace="cmegw.console")

#: Longest line kept; what is typed past it is dropped.
MAX_LINE = 1024
#: Longest line (login name or password) before login: a longer one closes the connection.
MAX_LOGIN_LINE = 256
#: Lines of history kept per session.
MAX_HISTORY = 200
#: Longest escape sequence read from a client.
MAX_ESCAPE_SEQUENCE = 32

CTRL_A, CTRL_C, CTRL_D, CTRL_E, CTRL_H, CTRL_U = b"\x01", b"\x03", b"\x04", b"\x05", b"\x08", b"\x15"
BELL = b"\x07"


class Console:
    """What every session of one console shares: the gateway, the clock, the commands, the open sessions."""

    def __init__(self, gateway: Any, clock: Any = None, table: CommandTable | None = None,
                 logins: Any = None) -> None:
        self.gateway = gateway
        self.clock = clock if clock is not None else gateway.reactor
        self._table = table
        self.sessions: set[ConsoleProtocol] = set()
        #: The login limiter shared with the web and SSH (`cmegw.login.LoginLimiter`, ``state.logins``).
        self.logins = logins if logins is not None else gateway.state.logins

    @property
    def table(self) -> CommandTable:
        """The commands (`cmegw.console.commands.commands`: its extension groups load at the first session's use)."""
        if self._table is None:
            self._table = commands()
        return self._table

    @property
    def realm(self) -> str:
        """The realm of the directive of / (whose users log in to the console), for the log."""
        directive = directive_for(self.gateway.state.config.auth, CONSOLE_URI)
        return directive.realm if directive is not None else ""

    def check_login(self, name: str, password: str) -> bool:
        """Whether `name` is a user of the directive of / and `password` is theirs."""
        directive = directive_for(self.gateway.state.config.auth, CONSOLE_URI)
        if directive is None:
            return False
        user = next((u for u in directive.users if u.name == name), None)
        return user is not None and user.check_password(directive.realm, password)

    def close_all(self, why: str) -> None:
        for session in list(self.sessions):
            session.close(why)


def _text(data: str) -> bytes:
    """Text for the terminal, which ends each line with CR LF."""
    return data.replace("\r\n", "\n").encode("utf-8", "replace")


class ConsoleTerminal(insults.ServerProtocol):
    """
    insults' server side, made safe for the network: escape sequences are
    bounded, a bad one is dropped instead of ending the connection, and
    closing does not reset the client's screen.
    """

    def dataReceived(self, data: bytes) -> None:
        if isinstance(self.terminalProtocol, ConsoleProtocol):
            self.terminalProtocol.touch()
        try:
            super().dataReceived(data)
        except Exception:
            log.failure("Console: input dropped")
            self.state = b"data"
        if self.state == b"bracket-escaped" and len(getattr(self, "escBuf", ())) > MAX_ESCAPE_SEQUENCE:
            self.state = b"data"
            del self.escBuf

    def loseConnection(self) -> None:
        self.transport.loseConnection()


class ConsoleProtocol(LoginMixin, recvline.HistoricRecvLine):
    """
    One console session.  `user` is given when the transport has
    authenticated already (SSH); telnet sessions log in first.
    """

    def __init__(self, console: Console, user: str | None = None, interactive: bool = False) -> None:
        self.console = console
        self.user = user
        #: The server echoes and edits (a terminal) rather than reading plain lines.
        self.interactive = interactive
        self.state = LOGIN_NAME
        self.session: Session | None = None
        self._login_name = ""
        self._failures = 0
        self._question: Question | None = None
        self._running: defer.Deferred | None = None
        self._idle_timer: Any = None
        self._delay: Any = None
        self._after_cr = False
        self.mode = "insert"

    # -- connection -----------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.historyLines = []
        self.keyHandlers.update({CTRL_A: self.handle_HOME, CTRL_E: self.handle_END, CTRL_U: self.handle_KILL,
                                 CTRL_H: self.handle_BACKSPACE})
        self.console.sessions.add(self)
        self.touch()

    def initializeScreen(self) -> None:
        config = self.console.gateway.state.config
        self.say(f"{config.identity.product_type} console")
        if self.interactive:
            self.setInsertMode()
        if self.user is not None:
            self._logged_in(self.user)
        elif not self.refused_login():
            self._ask_login()

    def set_interactive(self, interactive: bool) -> None:
        """The client lets the server echo (telnet ECHO agreed) or stops letting it."""
        if interactive and not self.interactive:
            self.setInsertMode()
        self.interactive = interactive

    def terminalSize(self, width: int, height: int) -> None:
        self.width, self.height = width, height

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.state = CLOSED
        self.console.sessions.discard(self)
        self._stop_timers()
        if self._running is not None:
            running, self._running = self._running, None
            running.cancel()
        if self.session is not None:
            log.info("Console: {user} logged out", user=self.session.user)

    def close(self, why: str = "") -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._stop_timers()
        if why:
            self.say(why)
        self.terminal.loseConnection()

    # -- output -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Write text and end the line."""
        self.terminal.write(_text(text.rstrip("\n") + "\n"))

    @property
    def prompt(self) -> str:
        if self.state == QUESTION and self._question is not None:
            return self._question.prompt
        if self.state == LOGIN_NAME:
            return "login: "
        if self.state == LOGIN_PASSWORD:
            return "Password: "
        return f"{self.console.gateway.state.config.identity.product_type}> "

    def drawInputLine(self) -> None:
        shown = b"" if self._secret else b"".join(self.lineBuffer)
        self.terminal.write(_text(self.prompt) + shown)

    @property
    def _secret(self) -> bool:
        return self.state == LOGIN_PASSWORD or (self.state == QUESTION and self._question is not None
                                                and self._question.secret)

    @property
    def _editing(self) -> bool:
        """Whether keystrokes are echoed and edited here (else they are only collected)."""
        return self.interactive and not self._secret and self.state in (COMMAND, QUESTION, LOGIN_NAME)

    # -- input ------------------------------------------------------------------------------

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        if self.state in (CLOSED, LOGIN_WAIT):
            return
        if self.state == BUSY:
            if keyID == CTRL_C and self._running is not None:
                self._running.cancel()
            return
        if keyID in (b"\r", b"\n"):
            if keyID == b"\n" and self._after_cr:
                self._after_cr = False
                return
            self._after_cr = keyID == b"\r"
            self._end_of_line()
            return
        self._after_cr = False
        if keyID == CTRL_C:
            self._interrupt()
        elif keyID == CTRL_D and not self.lineBuffer:
            if self.session is not None:
                self.close("Bye.")
            else:
                self.close()
        elif self._editing:
            handler = self.keyHandlers.get(keyID)
            if handler is not None:
                handler()
            elif _printable(keyID):
                self.characterReceived(keyID, False)
        elif keyID in (self.terminal.BACKSPACE, CTRL_H):
            if self.lineBuffer:
                self.lineBuffer.pop()
                self.lineBufferIndex = len(self.lineBuffer)
        elif keyID == self.terminal.TAB:
            self._collect(b" ")
        elif _printable(keyID):
            self._collect(keyID)

    def _too_long_before_login(self) -> bool:
        """Whether a login name or password being typed is past `MAX_LOGIN_LINE` (then the session closes)."""
        if self.session is not None or len(self.lineBuffer) < MAX_LOGIN_LINE:
            return False
        log.warn("Console: a login line longer than {limit} bytes from {peer}; closed", limit=MAX_LOGIN_LINE,
                 peer=self._peer())
        self.lineBuffer = []
        self.lineBufferIndex = 0
        self.close(f"\nLonger than {MAX_LOGIN_LINE} characters; closing.")
        return True

    def _collect(self, ch: bytes) -> None:
        if self._too_long_before_login():
            return
        if len(self.lineBuffer) < MAX_LINE:
            self.lineBuffer.append(ch)
            self.lineBufferIndex = len(self.lineBuffer)

    def characterReceived(self, ch: bytes, moreCharactersComing: bool) -> None:
        if self._too_long_before_login():
            return
        if len(self.lineBuffer) >= MAX_LINE:
            self.terminal.write(BELL)
            return
        super().characterReceived(ch, moreCharactersComing)

    def handle_KILL(self) -> None:
        self.handle_HOME()
        self.terminal.eraseToLineEnd()
        self.lineBuffer = []
        self.lineBufferIndex = 0

    def handle_UP(self) -> None:
        if self.state == COMMAND:
            super().handle_UP()

    def handle_DOWN(self) -> None:
        if self.state == COMMAND:
            super().handle_DOWN()

    def handle_TAB(self) -> None:
        if self.state != COMMAND or self.session is None:
            return
        before = b"".join(self.lineBuffer[:self.lineBufferIndex]).decode("ascii", "replace")
        words = before.split()
        partial = "" if (not words or before[-1:].isspace()) else words[-1]
        candidates = self.console.table.complete(self.session, before)
        if not candidates:
            self.terminal.write(BELL)
            return
        common = candidates[0]
        for c in candidates[1:]:
            while not c.startswith(common):
                common = common[:-1]
        addition = common[len(partial):]
        if len(candidates) == 1:
            addition += " "
        if addition:
            for ch in addition.encode("ascii", "replace"):
                self.characterReceived(bytes([ch]), True)
            return
        self.terminal.nextLine()
        width = max(len(c) for c in candidates) + 2
        per_line = max(1, (self.width or 80) // width)
        rows = [candidates[i:i + per_line] for i in range(0, len(candidates), per_line)]
        self.say("\n".join("".join(f"{c:<{width}}" for c in row).rstrip() for row in rows))
        self.drawInputLine()
        back = len(self.lineBuffer) - self.lineBufferIndex
        if back:
            self.terminal.cursorBackward(back)

    def _interrupt(self) -> None:
        self.lineBuffer = []
        self.lineBufferIndex = 0
        if self.interactive:
            self.terminal.write(b"^C")
            self.terminal.nextLine()
        if self.state == QUESTION:
            self._question = None
            self.state = COMMAND
            self.say("Cancelled.")
        elif self.state == LOGIN_PASSWORD:
            self.state = LOGIN_NAME
        self.drawInputLine()

    def _end_of_line(self) -> None:
        line = b"".join(self.lineBuffer).decode("ascii", "replace")
        self.lineBuffer = []
        self.lineBufferIndex = 0
        if self.interactive:
            self.terminal.nextLine()
        if self.state == COMMAND and line.strip():
            self.historyLines.append(line.encode("ascii", "replace"))
            del self.historyLines[:-MAX_HISTORY]
        self.historyPosition = len(self.historyLines)
        self.lineReceived(line)

    def lineReceived(self, line: str) -> None:  # type: ignore[override]
        if self.state == LOGIN_NAME:
            self._got_name(line)
        elif self.state == LOGIN_PASSWORD:
            self._got_password(line)
        elif self.state == QUESTION:
            question, self._question = self._question, None
            assert question is not None
            self.state = COMMAND
            self._run(question.command, lambda: question.answer(line))
        elif self.state == COMMAND:
            assert self.session is not None
            command = line.split()[0] if line.split() else ""
            self._run(command, lambda: self.console.table.run(self.session, line))

    # -- running commands --------------------------------------------------------------------

    def _run(self, command: str, call: Any) -> None:
        try:
            result = call()
        except Exception as e:
            result = error_reply(command, Failure(e))
        self._show(result, command)

    def _show(self, result: Result, command: str) -> None:
        if self.state == CLOSED:
            return
        if isinstance(result, defer.Deferred):
            self.state = BUSY
            self._running = result
            result.addErrback(lambda f: error_reply(command, f))
            result.addCallback(self._finished, command)
            return
        reply = Reply(result or "") if result is None or isinstance(result, str) else result
        if reply.text:
            self.say(reply.text)
        if reply.close:
            self.close()
        if reply.after is not None:
            run_after(reply)
        if reply.close:
            return
        if reply.ask is not None:
            self._question = reply.ask
            self.state = QUESTION
        else:
            self.state = COMMAND
        self.touch()  # the command may have changed the idle timeout
        self.drawInputLine()

    def _finished(self, result: Result, command: str) -> None:
        self._running = None
        if self.state == BUSY:
            self.state = COMMAND
            self._show(result, command)

    def _emit(self, text: str) -> None:
        if self.state != CLOSED:
            self.say(text)


def _printable(keyID: Any) -> bool:
    return isinstance(keyID, bytes) and len(keyID) == 1 and 0x20 <= keyID[0] < 0x7F
