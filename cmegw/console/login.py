# -*- test-case-name: tests.test_console_protocol -*-
"""
Logging in to a console session, and the session's time limits.

`LoginMixin` is the login part of `cmegw.console.protocol.ConsoleProtocol`:
it asks the name and the password, answers a wrong one late and closes after
`MAX_LOGIN_FAILURES`; failures are logged and counted per source address by
the console's login limiter (`cmegw.login.LoginLimiter`, shared with SSH and
the web), and a source that has to wait is told so and closed, at the
connection and at the password; and runs the login timer (from the connection on) and
then the idle timer (restarted by every input).  The session's states are
named here, as the login moves the session through them first.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.logger import Logger

from cmegw.console.framework import Session
from cmegw.login import CONSOLE

log = Logger(namespace="cmegw.console")

#: Seconds a wrong password is answered late.
LOGIN_FAILURE_DELAY = 1.0
#: Wrong passwords in a row after which the connection is closed.
MAX_LOGIN_FAILURES = 3
#: Seconds allowed to log in, whatever the idle timeout.
LOGIN_TIMEOUT = 60.0

# Session states
LOGIN_NAME = "login name"
LOGIN_PASSWORD = "password"
LOGIN_WAIT = "wrong password delay"
COMMAND = "command"
QUESTION = "question"
BUSY = "busy"
CLOSED = "closed"


class LoginMixin:
    """The login steps and the timers of a console session (mixed into `ConsoleProtocol`)."""

    console: Any
    state: str
    session: Session | None
    _login_name: str
    _failures: int
    _idle_timer: Any
    _delay: Any

    # -- idle and login timers -----------------------------------------------------------

    def touch(self) -> None:
        """Input arrived: restart the idle timer (the login timer runs from the connection on)."""
        if self.state == CLOSED or (self.session is None and self._idle_timer is not None):
            return
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None
        if self.session is None:
            timeout: float = LOGIN_TIMEOUT
        else:
            timeout = self.console.gateway.state.config.console.idle_timeout
        if timeout:
            self._idle_timer = self.console.clock.callLater(timeout, self._idle, timeout)

    def _idle(self, timeout: float) -> None:
        self._idle_timer = None
        if self.session is None:
            self.close(f"\nNo login within {timeout:g} seconds; closing.")
        else:
            self.close(f"\nIdle for {timeout:g} seconds; closing.")

    def _stop_timers(self) -> None:
        for timer in (self._idle_timer, self._delay):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._delay = None

    # -- login -------------------------------------------------------------------------------

    def _ask_login(self) -> None:
        self.state = LOGIN_NAME
        self.drawInputLine()

    def _got_name(self, line: str) -> None:
        name = line.strip()
        if not name:
            self.drawInputLine()
            return
        self._login_name = name
        self.state = LOGIN_PASSWORD
        self.drawInputLine()

    def refused_login(self) -> bool:
        """Whether this connection's source has to wait after failed logins (then it is told and closed)."""
        host = self._peer_host()
        wait = self.console.logins.wait(host)
        if wait <= 0:
            return False
        self.console.logins.refused(host, CONSOLE, wait)
        self.close(f"Too many failed logins from your address; try again in {math.ceil(wait)} seconds.")
        return True

    def _got_password(self, password: str) -> None:
        name, self._login_name = self._login_name, ""
        if self.refused_login():
            return
        if self.console.check_login(name, password):
            self._failures = 0
            self.console.logins.succeeded(self._peer_host())
            self._logged_in(name)
            return
        self._failures += 1
        self.console.logins.failed(self._peer_host(), CONSOLE, name, self.console.realm)
        self.state = LOGIN_WAIT
        self._delay = self.console.clock.callLater(LOGIN_FAILURE_DELAY, self._login_failed)

    def _login_failed(self) -> None:
        self._delay = None
        self.lineBuffer = []
        self.lineBufferIndex = 0
        if self._failures >= MAX_LOGIN_FAILURES:
            self.close(f"Login incorrect. {MAX_LOGIN_FAILURES} failures; closing.")
            return
        self.say("Login incorrect.")
        self.state = LOGIN_NAME
        self._ask_login()

    def _logged_in(self, name: str) -> None:
        self.session = Session(self.console.gateway, user=name, emit=self._emit)
        self.state = COMMAND
        log.info("Console: {user} logged in from {peer}", user=name, peer=self._peer())
        self._stop_timers()
        self.touch()
        self.say(f"Logged in as {name}. 'help' lists the commands; Tab completes.")
        self.drawInputLine()

    def _peer_host(self) -> str:
        try:
            return str(getattr(self.terminal.transport.getPeer(), "host", "?"))
        except Exception:
            return "?"

    def _peer(self) -> str:
        try:
            peer = self.terminal.transport.getPeer()
        except Exception:
            return "?"
        return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
