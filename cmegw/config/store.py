# -*- test-case-name: tests.test_config_store -*-
"""
The configuration file: loaded and validated at start, saved atomically.

The file is TOML an administrator edits by hand.  A save rewrites it with
tomlkit so the operator's comments and order survive, through a temporary
file that is fsynced and renamed over the old one; a copy of the last file
that loaded cleanly is kept beside it (``NAME.last-good``).  The file is read
with tomllib; tomlkit is imported by the first save.  A file that does
not load is never overwritten: the gateway starts on the last good copy (or
the factory defaults) and says why.
"""

from __future__ import annotations

import functools
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.logger import Logger

from cmegw.config.auth import check_root_directive
from cmegw.config.files import check_files
from cmegw.config.model import Config, ConfigError
from cmegw.config.settings import labelled, labelled_errors

log = Logger(namespace="cmegw.config")

Listener = Callable[[Config, Config], None]


class ConfigFileError(Exception):
    """The configuration file cannot be read or is not valid (`setting`: the one refused, if one was)."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def factory_defaults_text() -> str:
    """The text of the factory default configuration (``etc/factory-defaults.toml``)."""
    return resources.files("cmegw").joinpath("defaults.toml").read_text("utf-8")


def factory_defaults() -> Config:
    return parse_config(factory_defaults_text(), "factory defaults")


#: How each top-level section is written in the file, for "is incomplete" messages.
_SECTION_NAMES = {"line": "[line.N]", "tunnel": "[tunnel.N]", "auth": "[[auth]]"}


#: Sections a file may lack: the readout's, which files written before them do not have.
OPTIONAL_SECTIONS = ("meter", "readout", "mqtt", "push")


@functools.cache
def _required_sections() -> tuple[str, ...]:
    """The top-level sections the factory defaults have: a file without one of them was cut short."""
    return tuple(s for s in tomllib.loads(factory_defaults_text()) if s not in OPTIONAL_SECTIONS)


def check_complete(data: dict[str, Any], where: str) -> None:
    """Refuse a file that lacks a top-level section of the factory defaults, naming what is missing."""
    missing = [_SECTION_NAMES.get(s, f"[{s}]") for s in _required_sections() if s not in data]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigFileError(f"{where} is incomplete: "
                              f"{', '.join(missing)} {verb} missing (a cut-short or partly copied file?)")


def parse_config(text: str, where: str) -> Config:
    """
    Read a whole configuration file: valid TOML, every section of the
    factory defaults present, every setting valid, a user on ``/``.
    """
    return config_from_data(read_toml(text, where), where)


def read_toml(text: str, where: str) -> dict[str, Any]:
    """The structure of a TOML text; `ConfigFileError` saying where it is not TOML (line and column)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{where} is not valid TOML: {e}") from None


def config_from_data(data: dict[str, Any], where: str) -> Config:
    """The checks of `parse_config` on a file's structure already read from TOML."""
    check_complete(data, where)
    try:
        config = Config.from_dict(data)
        check_files(config)
        check_root_directive(config)
        return config
    except ConfigError as e:
        raise ConfigFileError(f"{where}, setting {e.setting}: {labelled(e)}", e.setting) from None


def _machine_serial() -> str:
    """A stable serial number for this host, from its machine id."""
    try:
        mid = Path("/etc/machine-id").read_text().strip()
    except OSError:
        mid = ""
    return ("CMEGW-" + mid[:8].upper()) if mid else "CMEGW-00000000"


def _merge(table: Any, data: dict[str, Any]) -> None:
    """Update a tomlkit table in place to hold `data`, keeping comments and order."""
    for key in [k for k in table.keys() if k not in data]:
        del table[key]
    for key, value in data.items():
        if isinstance(value, dict) and key in table and isinstance(table[key], dict):
            _merge(table[key], value)
        elif key in table and table[key] == value and type(table[key].unwrap() if hasattr(table[key], "unwrap")
                                                               else table[key]) is type(value):
            continue
        else:
            table[key] = value


def atomic_write(path: Path, text: str) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


@attrs.define
class ConfigStore:
    """
    The saved configuration and the one way to change it.

    `config` is what the file holds (the "after restart" values); a change is
    validated by building the new `Config`, saved, then told to listeners,
    which apply what applies live.
    """

    path: Path = attrs.field(converter=Path)
    config: Config = attrs.field(init=False, default=None)
    problem: str | None = attrs.field(init=False, default=None)
    unsaved: bool = attrs.field(init=False, default=False)
    #: The configuration as the file holds it (what a restart loads): `config` unless `unsaved`.
    saved: Config = attrs.field(init=False, default=None)
    _listeners: list[Listener] = attrs.field(init=False, factory=list)
    _text: str = attrs.field(init=False, default="")

    @property
    def last_good_path(self) -> Path:
        return self.path.with_name(self.path.name + ".last-good")

    def load(self) -> Config:
        """
        Read the file (created from the factory defaults when missing).  A bad
        file is left untouched; the last good copy, or the factory defaults,
        are used instead and `problem` says why.
        """
        self.problem = None
        if not self.path.exists():
            text = factory_defaults_text()
            config = parse_config(text, "factory defaults")
            config = config.evolve(identity=attrs.evolve(config.identity, serial_number=_machine_serial()))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._text = text
            self._write(config)
            log.info("Created {path} from the factory defaults", path=str(self.path))
            self.config = self.saved = config
            return config
        try:
            text = self.path.read_text("utf-8")
            config = parse_config(text, str(self.path))
        except (OSError, UnicodeDecodeError, ConfigFileError) as e:
            self.problem = f"the configuration file was not loaded and is left as it is: {e}"
            config, text = self._fallback()
            log.error("{problem}; running on {source}", problem=self.problem,
                      source="the last good copy" if text else "the factory defaults")
        else:
            self._remember_good(text)
        self._text = text
        self.config = self.saved = config
        self.unsaved = self.problem is not None
        return config

    def _remember_good(self, text: str) -> None:
        """Keep `text`, which loaded cleanly, as the last good copy (written only when it differs)."""
        if not self.last_good_path.exists() or self.last_good_path.read_text("utf-8") != text:
            atomic_write(self.last_good_path, text)

    def _tell(self, old: Config, new: Config) -> None:
        for listener in list(self._listeners):
            listener(old, new)

    def _fallback(self) -> tuple[Config, str]:
        try:
            text = self.last_good_path.read_text("utf-8")
            return parse_config(text, str(self.last_good_path)), text
        except (OSError, UnicodeDecodeError, ConfigFileError):
            return factory_defaults(), ""

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(old, new)` after every change."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @labelled_errors
    def change(self, new: Config, save: bool = True) -> Config:
        """Make `new` the configuration: save it (unless asked not to) and tell the listeners."""
        if not isinstance(new, Config):
            raise TypeError("a Config is needed")
        check_root_directive(new)  # raises ConfigError: nobody could log in any more
        old = self.config
        if save:
            self._write(new)
        else:
            self.unsaved = True
        self.config = new
        self._tell(old, new)
        return new

    def reload(self) -> Config:
        """
        Read the file again and make it the configuration, without rewriting
        it (SIGHUP).  A file that cannot be read or is not valid raises
        `ConfigFileError` and changes nothing.
        """
        try:
            text = self.path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigFileError(f"{self.path} cannot be read: {e}") from None
        new = parse_config(text, str(self.path))
        self._remember_good(text)
        self._text = text
        self.problem = None
        self.unsaved = False
        old, self.config = self.config, new
        self.saved = new
        self._tell(old, new)
        return new

    def save(self) -> None:
        """Write the current configuration to the file (the console's ``save``)."""
        self._write(self.config)

    def render(self, config: Config) -> str:
        """The file's text holding `config`, with the comments and order of the file as last read or saved."""
        import tomlkit  # only a save needs it (1.4 MB): a start that only reads the file never loads it

        try:
            doc = tomlkit.parse(self._text) if self._text else tomlkit.document()
        except Exception:
            doc = tomlkit.document()
        _merge(doc, config.to_dict())
        return tomlkit.dumps(doc)

    def _write(self, config: Config) -> None:
        if self.problem is not None:
            # The operator's broken file is kept for inspection beside the new one.
            broken = self.path.with_name(self.path.name + ".rejected")
            if self.path.exists():
                os.replace(self.path, broken)
                log.warn("The rejected configuration file was moved to {broken}", broken=str(broken))
            self.problem = None
        text = self.render(config)
        parse_config(text, "the configuration about to be saved")  # never write what would not load
        atomic_write(self.path, text)
        atomic_write(self.last_good_path, text)
        self._text = text
        self.saved = config
        self.unsaved = False
        log.info("Configuration saved to {path}", path=str(self.path))

    def factory_reset(self) -> Config:
        """Write the factory defaults (keeping the serial number) and make them the configuration."""
        defaults = factory_defaults()
        defaults = defaults.evolve(identity=self.config.identity)
        self._text = factory_defaults_text()
        return self.change(defaults)
