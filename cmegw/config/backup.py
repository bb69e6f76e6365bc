# -*- test-case-name: tests.test_config_backup -*-
"""
A backup of the configuration file and its restore.

The backup is the file as saved, with every secret left out: the settings the
model marks secret (``mqtt.password``, ``push.N.password``, ``push.N.token``)
and the users' password hashes (``ha1_md5``, ``ha1_sha256``, which let anyone
who holds them log in with Digest).  A header comment says so.

A restore reads such a file like the file at start (valid TOML, every
section, every setting valid, a user on ``/``).  Whatever secret it leaves out
keeps the gateway's current value: a setting of a section the gateway has, a
user's hashes when the gateway has that user on the same directive and realm.
The serial number stays the gateway's.  The caller saves the result through
the store (atomically) as any other change.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Sequence

import attrs

from cmegw.config.model import Config, ConfigError
from cmegw.config.settings import get_setting, is_secret, needs_restart, setting_names
from cmegw.config.store import ConfigFileError, config_from_data, read_toml

#: The largest configuration file a restore reads (bytes).
MAX_FILE_BYTES = 1024 * 1024
#: How many settings a summary names before it counts the rest.
NAMED_CHANGES = 12
#: The fields of a user that a backup leaves out.
USER_SECRETS = ("ha1_md5", "ha1_sha256")

HEADER = """\
cmegw configuration backup: {product} {serial}, saved {when}, software {version}.
Secrets are left out: passwords and tokens ({names}) and the users' password hashes.
Restoring this file (System > Configuration backup) keeps the gateway's current value of each secret it leaves
out; a user the gateway does not have needs ha1_md5 and ha1_sha256 (or is added after the restore)."""


def secret_names(config: Config) -> list[str]:
    """The settings of `config` that hold a password or token."""
    return [name for name in setting_names(config) if is_secret(name)]


def _table(data: Any, path: list[str]) -> Any:
    """The table at `path` (``["push", "1"]``) of a parsed file, or None."""
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data if isinstance(data, dict) else None


def backup_text(config: Config, saved_text: str, *, version: str, when: str) -> str:
    """`saved_text` (the file holding `config`) without its secrets, under a header that says so."""
    import tomlkit  # imported by the first backup, as by the store's first save

    doc = tomlkit.parse(saved_text)
    for name in secret_names(config):
        *path, field = name.split(".")
        table = _table(doc, path)
        if table is not None and field in table:
            del table[field]
    for directive in doc.get("auth", []):
        for user in directive.get("user", []):
            for field in USER_SECRETS:
                if field in user:
                    del user[field]
    header = HEADER.format(product=config.identity.product_type, serial=config.identity.serial_number or "",
                           when=when, version=version, names=", ".join(secret_names(config)) or "none set")
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + "\n" + tomlkit.dumps(doc).lstrip("\n")


@attrs.frozen
class Restore:
    """What a restore would make the configuration, and what it kept of the gateway's own."""

    config: Config
    kept: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def applied_now(self) -> list[str]:
        return [n for n in self.changed if not needs_restart(n)]

    @property
    def after_restart(self) -> list[str]:
        return [n for n in self.changed if needs_restart(n)]

    def summary(self, filename: str) -> str:
        """What the restore of `filename` did, in words."""
        kept = f" Kept this gateway's: {_names(self.kept)}." if self.kept else ""
        if not self.changed:
            return f"{filename} holds the configuration in force: nothing changed.{kept}"
        parts = [f"Restored from {filename} and saved: {len(self.changed)} settings changed."]
        if self.applied_now:
            parts.append(f"In force now: {_names(self.applied_now)}.")
        if self.after_restart:
            parts.append(f"After a restart: {_names(self.after_restart)}.")
        return " ".join(parts) + kept


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMED_CHANGES])
    return shown + (f" and {len(names) - NAMED_CHANGES} more" if len(names) > NAMED_CHANGES else "")


def line_of(text: str, setting: str) -> int | None:
    """The line of `text` that sets `setting` (``line.1.baud_rate``), if there is one."""
    *path, key = setting.split(".")
    table: list[str] = []
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assignment = re.compile(r"^\s*\"?([A-Za-z0-9_-]+)\"?\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        found = header.match(line)
        if found:
            table = [p.strip().strip("\"'") for p in found.group(1).split(".")]
            continue
        found = assignment.match(line)
        if found and found.group(1) == key and table == path:
            return number
    return None


def _keep_secrets(data: dict[str, Any], current: Config) -> list[str]:
    """Fill in the secret settings `data` leaves out from `current`: the names kept."""
    kept = []
    for name in secret_names(current):
        *path, field = name.split(".")
        table = _table(data, path)
        value = get_setting(current, name)
        if table is not None and field not in table and value:
            table[field] = value
            kept.append(name)
    return kept


def _keep_user_hashes(data: dict[str, Any], current: Config) -> list[str]:
    """Give the users `data` lists without hashes the hashes `current` holds for them (same URI and realm)."""
    kept = []
    directives = data.get("auth", [])
    for directive in directives if isinstance(directives, list) else ():
        if not isinstance(directive, dict):
            continue
        uri, realm = directive.get("uri"), directive.get("realm", "config")
        users = directive.get("user", [])
        for user in users if isinstance(users, list) else ():
            if not isinstance(user, dict) or all(field in user for field in USER_SECRETS):
                continue
            name = user.get("name")
            known = next((u for d in current.auth if d.uri == uri and d.realm == realm
                          for u in d.users if u.name == name), None)
            if known is None:
                raise ConfigFileError(
                    f"user {name!r} of the directive {uri} has no password hashes in the file, and this gateway "
                    f"has no such user on {uri} (realm {realm}) to keep them from: add the user's ha1_md5 and "
                    "ha1_sha256, or leave the user out and add it on HTTP > Authentication after the restore")
            for field in USER_SECRETS:
                user.setdefault(field, getattr(known, field))
            kept.append(f"the password of {name} on {uri}")
    return kept


def changed_names(old: Config, new: Config) -> list[str]:
    """The settings whose value differs between `old` and `new` (added and removed ones too)."""
    names = dict.fromkeys([*setting_names(old), *setting_names(new)])
    out = []
    for name in names:
        try:
            differs = get_setting(old, name) != get_setting(new, name)
        except ConfigError:
            differs = True
        if differs:
            out.append(name)
    if old.auth != new.auth:
        out.append("auth")
    return out


def restore(current: Config, text: str, where: str = "the uploaded file") -> Restore:
    """
    Read `text` as the new configuration, keeping `current`'s secrets and
    serial number.  Raises `ConfigFileError` saying what is wrong and, where
    it can, on which line; nothing is changed.
    """
    data = read_toml(text, where)
    kept = _keep_secrets(data, current) + _keep_user_hashes(data, current)
    identity = data.get("identity")
    if isinstance(identity, dict):
        identity["serial_number"] = current.identity.serial_number
    try:
        new = config_from_data(data, where)
    except ConfigFileError as e:
        line = line_of(text, e.setting) if e.setting else None
        if line is None:
            raise
        detail = str(e).removeprefix(f"{where}, ")
        raise ConfigFileError(f"{where}, line {line}: {detail}", e.setting) from None
    return Restore(new, tuple(kept), tuple(changed_names(current, new)))


class RestoreError(Exception):
    """A file was not restored; the message says why (nothing was changed)."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def backup_of(store: Any, now: float, version: str) -> tuple[str, str]:
    """A backup of what `store` (a `ConfigStore`) saved: a file name (serial number and time) and the text."""
    config = store.config
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    text = backup_text(config, store.render(config), version=version, when=when.strftime("%Y-%m-%d %H:%M UTC"))
    serial = "".join(c for c in config.identity.serial_number if c.isalnum() or c in "-_") or "gateway"
    return f"cmegw-{serial}-{when:%Y%m%d-%H%M}.toml", text


def restore_file(store: Any, data: bytes, where: str = "the uploaded file") -> Restore:
    """
    Check a configuration file (`restore`) and make it `store`'s
    configuration, saved in one step; `RestoreError` saying why otherwise.
    """
    if not data.strip():
        raise RestoreError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise RestoreError(f"the file is larger than {MAX_FILE_BYTES // 1024} KiB; a configuration is far smaller")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RestoreError(f"the file is not UTF-8 text (byte {e.start}); use a cmegw.toml") from None
    try:
        result = restore(store.config, text, where)
        if result.changed:
            store.change(result.config)
    except (ConfigFileError, ConfigError) as e:
        raise RestoreError(str(e), e.setting) from None
    except OSError as e:
        raise RestoreError(f"the configuration could not be saved ({e})") from None
    return result
