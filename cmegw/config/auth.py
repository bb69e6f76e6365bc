# -*- test-case-name: tests.test_config_auth -*-
"""
Changes to the authentication directives, for every front end.

The HTTP > Authentication page, the JSON API and the console's ``auth`` and
``passwd`` commands all change directives and users through these functions,
so the rules (and their messages) are the same everywhere.  Each takes a
`Config` and returns a new one, or raises `ConfigError`.
"""

from __future__ import annotations

import attrs

from cmegw.config.model import HIDDEN, AuthDirective, Config, ConfigError, User
from cmegw.config.settings import labelled_errors

#: AuthTypes that ask for a user name and password.
PASSWORD_TYPES = ("Basic", "Digest", "SSL/Basic", "SSL/Digest")
#: The directive whose users may also log in to the console.
ROOT_URI = "/"
#: Passwords anyone tries first (the factory password among them): refused as a new password.
GUESSED_PASSWORDS = ("admin", "password", "1234", "12345", "123456", "12345678", "cmegw")


@labelled_errors
def find_directive(config: Config, uri: str) -> AuthDirective:
    for d in config.auth:
        if d.uri == uri:
            return d
    raise ConfigError("auth.uri", uri, "use the URI of an existing directive: "
                      + ", ".join(d.uri for d in config.auth))


def _replace(config: Config, old: AuthDirective, new: AuthDirective | None) -> Config:
    directives = tuple(d for d in (new if d is old else d for d in config.auth) if d is not None)
    return config.evolve(auth=directives)


@labelled_errors
def add_directive(config: Config, uri: str, realm: str, auth_type: str) -> Config:
    directive = AuthDirective(uri=uri, realm=realm or "config", auth_type=auth_type)
    return config.evolve(auth=config.auth + (directive,))


@labelled_errors
def delete_directive(config: Config, uri: str) -> Config:
    directive = find_directive(config, uri)
    if directive.uri == ROOT_URI:
        raise ConfigError("auth.uri", uri, "the directive on / protects every page and holds the console's "
                                           "users; change its AuthType instead of deleting it")
    return _replace(config, directive, None)


@labelled_errors
def set_auth_type(config: Config, uri: str, auth_type: str) -> Config:
    directive = find_directive(config, uri)
    if auth_type == directive.auth_type:
        return config  # the type it has (a directive added with Digest before its first user)
    if auth_type in PASSWORD_TYPES and not directive.users:
        raise ConfigError("auth.auth_type", auth_type, "add a user to this directive before asking for passwords")
    return _replace(config, directive, attrs.evolve(directive, auth_type=auth_type))


@labelled_errors
def add_user(config: Config, uri: str, name: str, password: str) -> Config:
    """Add a user, or set the password of an existing one (digests only are kept)."""
    directive = find_directive(config, uri)
    if isinstance(password, str) and (password == name or password.lower() in GUESSED_PASSWORDS):
        raise ConfigError("auth.user.password", HIDDEN, "this password is the first one anyone tries "
                          "(the user name, the factory password or a similar one): choose another")
    user = User.with_password(name, directive.realm, password)
    users = tuple(u for u in directive.users if u.name != name) + (user,)
    return _replace(config, directive, attrs.evolve(directive, users=users))


@labelled_errors
def delete_user(config: Config, uri: str, name: str) -> Config:
    directive = find_directive(config, uri)
    users = tuple(u for u in directive.users if u.name != name)
    if len(users) == len(directive.users):
        raise ConfigError("auth.user.name", name, "use the name of a user of this directive")
    if not users and (directive.auth_type in PASSWORD_TYPES or directive.uri == ROOT_URI):
        raise ConfigError("auth.user.name", name, "the last user of a directive that asks for a password stays "
                                                  "(so does the last user of /, who logs in to the console); "
                                                  "add another user first")
    return _replace(config, directive, attrs.evolve(directive, users=users))


@labelled_errors
def check_root_directive(config: Config) -> None:
    """
    Refuse a configuration that leaves ``/`` without a directive, or ``/``'s
    directive without a user: every page would answer 403 and nobody could log
    in to the console (the store calls this before loading, reloading or saving).
    """
    root = next((d for d in config.auth if d.uri == ROOT_URI), None)
    if root is None:
        raise ConfigError("auth", "(no directive on /)",
                          "keep an [[auth]] directive with uri = \"/\" and a user: it protects every page and "
                          "holds the console's users; without it everyone is locked out")
    if not root.users:
        raise ConfigError("auth.user", "(no user on /)",
                          "keep at least one [[auth.user]] on the / directive: its users log in to the web "
                          "pages and the console; without one everyone is locked out")
