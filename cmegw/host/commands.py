# -*- test-case-name: tests.test_host_apply -*-
"""
Running the host's network commands (``networkctl``, ``nmcli``, ``ethtool``)
as child processes of the reactor, never blocking it, each with a time limit;
a failure told in an installer's words (`explain`, `Refused`).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Sequence

import attrs
from twisted.internet import defer, error, protocol

#: Seconds a command may run before it is killed (networkctl waits on D-Bus and polkit).
COMMAND_TIMEOUT = 30.0
#: Bytes of a command's output kept (stdout and stderr together).
OUTPUT_LIMIT = 16 * 1024

_DENIED = ("access denied", "permission denied", "operation not permitted", "not authorized",
           "insufficient privileges", "interactive authentication required")


class Refused(Exception):
    """The settings cannot be applied this way; the message says why in an installer's words."""


@attrs.frozen
class CommandRun:
    """One command that was run (or could not be): its arguments, exit status and output."""

    argv: tuple[str, ...]
    #: The exit status; None when it did not run or ended by a signal.
    status: int | None
    output: str = ""
    #: Why it did not end normally ("not installed", "killed after 30 s"), else "".
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        return " ".join(self.argv)

    def outcome(self) -> str:
        if self.problem:
            return self.problem
        return f"exit status {self.status}"


class ProcessOutput(protocol.ProcessProtocol):
    """
    A child process's output (stdout and stderr together, at most `limit`
    bytes) and how it ended: `done` fires with (the end's reason, output).
    Its standard input is closed at once.
    """

    def __init__(self, done: defer.Deferred, limit: int | None = None) -> None:
        self.done = done
        self.limit = limit
        self.output = bytearray()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        room = len(data) if self.limit is None else self.limit - len(self.output)
        if room > 0:
            self.output += data[:room]

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.done.callback((reason.value, bytes(self.output)))


class CommandRunner:
    """Runs a command found on PATH as a child process of the reactor, with a time limit."""

    def __init__(self, reactor: Any, timeout: float = COMMAND_TIMEOUT) -> None:
        self.reactor = reactor
        self.timeout = timeout

    @defer.inlineCallbacks
    def run(self, argv: Sequence[str]) -> Any:
        argv = tuple(argv)
        env = dict(os.environ, LC_ALL="C")
        path = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if path is None:
            return CommandRun(argv, None, problem=f"{argv[0]} is not installed on this host (not found on PATH)")
        done: defer.Deferred = defer.Deferred()
        collect = ProcessOutput(done, OUTPUT_LIMIT)
        try:
            process = self.reactor.spawnProcess(collect, path, list(argv), env=env)
        except OSError as e:
            return CommandRun(argv, None, problem=f"{argv[0]} could not be started: {e.strerror or e}")
        timer = self.reactor.callLater(self.timeout, _kill, process)
        ended, raw = yield done
        output = raw.decode("utf-8", "replace")
        if timer.active():
            timer.cancel()
            problem = ""
        else:
            problem = f"killed after {self.timeout:g} seconds without finishing"
        status = getattr(ended, "exitCode", None)
        if status is None and not problem:
            problem = f"ended by signal {getattr(ended, 'signal', '?')}"
        return CommandRun(argv, status, output.strip(), problem)


def _kill(process: Any) -> None:
    """SIGKILL, and close our ends of its pipes: a child it left behind must not keep the run waiting."""
    try:
        process.signalProcess("KILL")
    except error.ProcessExitedAlready:
        pass
    process.loseConnection()


def explain(run: CommandRun, purpose: str) -> str:
    """Why a command failed, for an installer: missing, refused for lack of permission, or its own words."""
    if run.status is None:
        return f"{purpose} did not happen: {run.problem}"
    low = run.output.lower()
    first = run.output.splitlines()[0] if run.output else "no message"
    if any(word in low for word in _DENIED):
        return (f"{purpose} was refused: the gateway lacks the permission ({run.text}: {first}); run it as "
                "root, or give its user CAP_NET_ADMIN and a polkit rule for the network service")
    return f"{purpose} failed: {run.text} ended with exit status {run.status} ({first})"


class Steps:
    """The commands of one apply or renew, run one after another; the first failure is the answer."""

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner
        self.runs: list[CommandRun] = []

    @defer.inlineCallbacks
    def run(self, argv: Sequence[str], purpose: str) -> Any:
        result = yield self.runner.run(argv)
        self.runs.append(result)
        if not result.ok:
            raise Refused(explain(result, purpose))
        return result
