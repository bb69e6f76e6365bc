# -*- test-case-name: tests.test_console_system_commands -*-
"""
The console's commands on the gateway as a whole and on its users:
``restart``, ``factory-defaults``, ``passwd``, the ``auth`` directives and
their users, ``clear log`` and ``exit``.
"""

from __future__ import annotations

from typing import Callable

from cmegw.config import auth as config_auth
from cmegw.config.model import AUTH_TYPES, AuthDirective, Config, User, directive_for
from cmegw.console.config_commands import change
from cmegw.console.framework import COMMANDS, CONSOLE_URI, Arguments, Question, Reply, Result, Session
from cmegw.console.status_commands import web_state

YES = ("y", "yes")


# restart, factory defaults ------------------------------------------------------------

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
    state = web_state(session.gateway)
    if state is None:
        return "There is no HTTP access log: the web administration is not running in this gateway."
    state.access_log.clear()
    return "The HTTP access log is cleared."


@COMMANDS.command("exit", "end this session", aliases=("quit", "logout"))
def exit_command(session: Session, args: Arguments) -> Result:
    args.expect(0, 0, "")
    return Reply("Bye.", close=True)
