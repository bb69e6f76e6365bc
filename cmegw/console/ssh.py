# -*- test-case-name: tests.test_console_ssh -*-
"""
The console over SSH, so the configuration need not cross the network in clear.

The same `ConsoleProtocol` as telnet, behind `twisted.conch.ssh`: password
login with the users of the directive of ``/`` (a wrong password is answered
late, three close the connection), a shell (``ssh -p 2222 admin@gateway``),
and single commands (``ssh -p 2222 admin@gateway show status``), which exit
with status 1 when the command fails or asks a question, else 0.  The host
key is an Ed25519 key made on first start and kept beside the configuration
file, readable by its owner only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import avatar
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.error import IgnoreAuthentication
from twisted.conch.ssh import connection, factory, keys, session, userauth
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.transport import DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE
from twisted.cred import portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cmegw.console.framework import Reply, Session, error_reply, run_after
from cmegw.console.login import LOGIN_FAILURE_DELAY, LOGIN_TIMEOUT, MAX_LOGIN_FAILURES
from cmegw.console.protocol import Console, ConsoleProtocol, ConsoleTerminal, _text
from cmegw.login import CONSOLE

log = Logger(namespace="cmegw.console")

HOST_KEY_NAME = "ssh_host_ed25519_key"


def host_key_path(config_path: str | Path) -> Path:
    """Where the SSH host key of the gateway whose configuration is `config_path` is kept."""
    return Path(config_path).with_name(HOST_KEY_NAME)


def load_host_key(path: Path) -> keys.Key:
    """The host key at `path`, made (Ed25519, mode 0600) when there is none."""
    try:
        return keys.Key.fromFile(str(path))
    except FileNotFoundError:
        pass
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("OPENSSH"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    log.info("Made the console's SSH host key {path} ({fingerprint})", path=str(path),
             fingerprint=key.fingerprint(keys.FingerprintFormats.SHA256_BASE64))
    return key


@implementer(ICredentialsChecker)
class ConsoleUsers:
    """Checks a user name and password against the users of the directive of /."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, console: Console) -> None:
        self.console = console

    def requestAvatarId(self, credentials: IUsernamePassword) -> defer.Deferred:
        name = credentials.username.decode("utf-8", "replace")
        password = credentials.password.decode("utf-8", "replace")
        if self.console.check_login(name, password):
            log.info("Console: {user} logged in over SSH", user=name)
            return defer.succeed(credentials.username)
        return defer.fail(UnauthorizedLogin())


@implementer(ISession)
class ConsoleAvatar(avatar.ConchUser):
    """A logged-in SSH user: each session channel runs one console (a shell) or one command."""

    def __init__(self, console: Console, name: str) -> None:
        super().__init__()
        self.console = console
        self.name = name
        self.channelLookup[b"session"] = session.SSHSession
        self._pty = False
        self._size = (80, 24)
        self._terminal: ConsoleTerminal | None = None

    def getPty(self, term: bytes, windowSize: tuple[int, ...], modes: Any) -> None:
        self._pty = True
        self._size = (windowSize[1], windowSize[0])

    def windowChanged(self, newWindowSize: tuple[int, ...]) -> None:
        if self._terminal is not None and self._terminal.terminalProtocol is not None:
            self._terminal.terminalProtocol.terminalSize(newWindowSize[1], newWindowSize[0])

    def openShell(self, transport: Any) -> None:
        terminal = self._terminal = ConsoleTerminal(ConsoleProtocol, self.console, user=self.name,
                                                    interactive=self._pty)
        terminal.makeConnection(transport)
        transport.makeConnection(session.wrapProtocol(terminal))
        terminal.terminalProtocol.terminalSize(*self._size)

    def execCommand(self, transport: Any, command: bytes) -> None:
        self.console.clock.callLater(0, self._exec, transport, command.decode("utf-8", "replace"))

    def _exec(self, transport: Any, line: str) -> None:
        command = line.split()[0] if line.split() else ""

        def emit(text: str) -> None:
            transport.write(_text(text.rstrip("\n") + "\n"))

        def done(result: Any) -> None:
            reply = Reply(result) if isinstance(result, str) else result
            status = 1 if reply.error else 0
            if reply.ask is not None:
                emit(f"{command}: asks a question; run it in an interactive session (ssh -t)")
                status = 1
            elif reply.text:
                emit(reply.text)
            if reply.after is not None and reply.ask is None:
                run_after(reply)
            ended = ProcessDone(0) if status == 0 else ProcessTerminated(exitCode=status)
            transport.processEnded(Failure(ended))

        session_ = Session(self.console.gateway, user=self.name, emit=emit)
        d = defer.maybeDeferred(self.console.table.run, session_, line)
        d.addErrback(lambda f: error_reply(command, f)).addCallback(done)

    def eofReceived(self) -> None:
        if self._terminal is not None:
            self._terminal.loseConnection()

    def closed(self) -> None:
        self._terminal = None


@implementer(portal.IRealm)
class ConsoleRealm:
    def __init__(self, console: Console) -> None:
        self.console = console

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if IConchUser not in interfaces:
            raise NotImplementedError("the console offers SSH sessions only")
        return IConchUser, ConsoleAvatar(self.console, avatarId.decode("utf-8", "replace")), lambda: None


class ConsoleUserAuth(userauth.SSHUserAuthServer):
    """
    Password login: late answers to wrong passwords, three and the connection
    is closed; failures logged and counted per source address by the console's
    login limiter (shared with telnet and the web), and a source that has to
    wait is disconnected with the reason before its password is checked.
    """

    attemptsBeforeDisconnect = MAX_LOGIN_FAILURES - 1
    passwordDelay = LOGIN_FAILURE_DELAY
    loginTimeout = LOGIN_TIMEOUT
    console: Console

    def _source(self) -> str:
        try:
            return str(getattr(self.transport.transport.getPeer(), "host", "?"))
        except Exception:
            return "?"

    def auth_password(self, packet: bytes) -> defer.Deferred:
        logins, source = self.console.logins, self._source()
        wait = logins.wait(source)
        if wait > 0:
            logins.refused(source, CONSOLE, wait)
            self.transport.sendDisconnect(
                DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                b"too many failed logins from your address; try again in %d seconds" % math.ceil(wait))
            return defer.fail(IgnoreAuthentication())
        user = self.user

        def succeeded(result: Any) -> Any:
            logins.succeeded(source)
            return result

        def failed(reason: Failure) -> Failure:
            if reason.check(UnauthorizedLogin):
                logins.failed(source, CONSOLE, user, self.console.realm)
            return reason

        # Counted at once (not after the failure's delay), so parallel connections cannot outrun the count.
        password = getNS(packet[1:])[0]
        d = self.portal.login(UsernamePassword(user, password), None, IConchUser)
        return d.addCallbacks(succeeded, failed).addErrback(self._ebPassword)


class ConsoleSSHFactory(factory.SSHFactory):
    """The SSH server of the console."""

    def __init__(self, console: Console, host_key: keys.Key) -> None:
        self.console = console
        self.portal = portal.Portal(ConsoleRealm(console), [ConsoleUsers(console)])
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        clock = console.clock

        class UserAuth(ConsoleUserAuth):
            pass

        UserAuth.clock = clock
        UserAuth.console = console
        self.services = {b"ssh-userauth": UserAuth, b"ssh-connection": connection.SSHConnection}
